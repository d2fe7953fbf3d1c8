"""Intent matching: exact match on normalised examples, then embedding similarity.

Example embeddings are computed once per text and model and kept in ``msg_embeddings``, so a
flow edit re-embeds only new examples and a restart re-embeds nothing; the matrix of one
project's flow version lives in memory (``IntentIndex``). A message costs one embedding of
its text (an LRU keeps recent ones) and a matrix-vector product. When the embedding model is
unavailable the index keeps working on exact matches alone.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import OrderedDict
from typing import Any, Iterable

import numpy as np

from ..services import Services

log = logging.getLogger("flowbox.messaging")
EMBED_BATCH = 64
QUERY_CACHE = 2048
RETRY_SECONDS = 60.0


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class Embeddings:
    """The embedder, its persistent cache and an LRU of query vectors; one per server."""

    def __init__(self, services: Services):
        self.services = services
        self.embedder: Any = None
        self.model = ""
        self._failed_at = 0.0
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()

    async def ready(self) -> bool:
        if self.embedder is not None:
            return True
        if time.monotonic() - self._failed_at < RETRY_SECONDS:
            return False
        try:
            from ..embeddings import get_embedder

            self.embedder = await get_embedder(self.services)
        except Exception as exc:  # a missing model must not take the dialog engine down
            self._failed_at = time.monotonic()
            log.warning("intent matching falls back to exact matches: embeddings unavailable (%s)", exc)
            return False
        name = getattr(self.embedder, "name", None) or getattr(self.embedder, "model", None) or self.services.config.embedding_model
        self.model = f"{name}:{self.embedder.dim}"
        return True

    async def examples(self, texts: list[str]) -> np.ndarray:
        """Vectors for example texts (rows in order), from the SQLite cache or embedded now."""
        store = self.services.store
        hashes = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            rows = await store.fetchall(
                f"SELECT text_hash, vector FROM msg_embeddings WHERE model = ? AND text_hash IN ({','.join('?' * len(chunk))})",
                [self.model, *chunk],
            )
            found.update((r["text_hash"], np.frombuffer(r["vector"], dtype=np.float32)) for r in rows)
        missing = list(dict.fromkeys(t for t, h in zip(texts, hashes) if h not in found))
        new_rows = []
        for i in range(0, len(missing), EMBED_BATCH):
            batch = missing[i:i + EMBED_BATCH]
            for text, vector in zip(batch, await self.embedder.embed(batch)):
                array = np.asarray(vector, dtype=np.float32)
                digest = hashlib.sha1(text.encode()).hexdigest()
                found[digest] = array
                new_rows.append((self.model, digest, array.tobytes()))
        if new_rows:
            async with store.write() as tx:
                await tx.executemany(
                    "INSERT OR IGNORE INTO msg_embeddings (model, text_hash, vector) VALUES (?, ?, ?)", new_rows
                )
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.stack([found[h] for h in hashes])

    async def query(self, text: str) -> np.ndarray:
        vector = self._queries.get(text)
        if vector is not None:
            self._queries.move_to_end(text)
            return vector
        vector = np.asarray((await self.embedder.embed([text]))[0], dtype=np.float32)
        self._queries[text] = vector
        if len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return vector


def embeddings_of(services: Services) -> Embeddings:
    if "messaging_embeddings" not in services.extras:
        services.extras["messaging_embeddings"] = Embeddings(services)
    return services.extras["messaging_embeddings"]


class IntentIndex:
    """The INTENT examples of one project's flow version."""

    def __init__(self, intents: Iterable[tuple[str, list[str]]]):
        self.exact: dict[str, list[str]] = {}
        self.spans: dict[str, tuple[int, int]] = {}
        self.texts: list[str] = []
        for step_id, queries in intents:
            start = len(self.texts)
            for query in queries:
                self.exact.setdefault(normalize(query), []).append(step_id)
                self.texts.append(query)
            self.spans[step_id] = (start, len(self.texts))
        self.matrix: np.ndarray | None = None
        self.embeddings: Embeddings | None = None

    async def attach(self, embeddings: Embeddings) -> None:
        """Loads or computes the example vectors; without an embedder only exact matches work."""
        if self.texts and await embeddings.ready():
            try:
                self.matrix = await embeddings.examples(self.texts)
            except Exception as exc:  # noqa: BLE001 - the engine keeps answering exact matches
                log.warning("embedding intent examples failed (%r); exact matches only for now", exc)
                return
            self.embeddings = embeddings

    async def best(self, text: str, step_ids: list[str], threshold: float) -> tuple[str, float] | None:
        """The best INTENT among ``step_ids`` for ``text``: an exact example match scores 1.0,
        otherwise the highest cosine similarity to any example, if at least ``threshold``."""
        if not step_ids:
            return None
        exact = self.exact.get(normalize(text), [])
        for step_id in step_ids:
            if step_id in exact:
                return step_id, 1.0
        if self.matrix is None or self.embeddings is None or not normalize(text):
            return None
        try:
            scores = self.matrix @ await self.embeddings.query(text)
        except Exception as exc:  # noqa: BLE001 - as if nothing matched: the UNKNOWN step answers
            log.warning("embedding a message failed: %r", exc)
            return None
        best: tuple[str, float] | None = None
        for step_id in step_ids:
            start, end = self.spans.get(step_id, (0, 0))
            if end > start:
                score = float(scores[start:end].max())
                if best is None or score > best[1]:
                    best = (step_id, score)
        return best if best is not None and best[1] >= threshold else None
