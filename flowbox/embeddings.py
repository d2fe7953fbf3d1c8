"""Text embeddings: the one place every area gets vectors from.

Local by default: all-MiniLM-L6-v2 (converted to GGUF by ``models/minilm_gguf.py``) run by
llama.cpp in embedding mode on its own thread, so embedding never waits behind the chat model's
generation queue, nor blocks the event loop. A remote OpenAI-compatible ``/embeddings`` endpoint
is used instead when ``embedding_base_url`` is set. Vectors are always L2-normalised, so a dot
product is the cosine similarity.

``Embedder.name`` identifies the model that made a vector; stores keep it beside their vectors
so that a model change is noticed and everything can be re-embedded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .errors import ModelError, StartupError, upstream_refusal
from .services import Services

N_CTX = 512  # MiniLM's trained context; longer texts are embedded in pieces and averaged
REMOTE_BATCH = 64
# WordPiece's max_input_chars_per_word: longer words (runs of letters and digits; CJK characters
# are words of their own) are [UNK] for the original tokenizer. llama.cpp would split them into
# many pieces instead, slowly.
LONG_WORD = re.compile(r"[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]{101,}")


def _normalise(vectors: np.ndarray) -> list[list[float]]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).tolist()


class Embedder:
    """What callers use: ``name``, ``dim``, ``await embed(texts)``, ``embed_sync(texts)``."""

    name: str
    dim: int

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


class EmbedRunner:
    """MiniLM itself, in its worker process (``models/worker.py``): token sequences in, vectors out.
    Tokenizing happens in the server, from the same file's vocabulary."""

    def __init__(self, path: str, n_threads: int):
        from .models.llama_load import load_llama

        # One batch = one context: llama.cpp runs an encoder's whole batch in one ubatch.
        self.llm = load_llama(model_path=path, embedding=True, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX,
                              n_threads=n_threads, n_threads_batch=n_threads)
        self.dim = self.llm.n_embd()
        self.info = {"dim": self.dim}

    def embed(self, pieces: list[tuple[int, list[int]]], n_texts: int, *, cancel, emit) -> list[list[float]]:
        """Mean-pooled vectors of ``n_texts`` texts from their (text index, token sequence) pieces."""
        import llama_cpp

        max_seqs = self.llm.context_params.n_seq_max
        sums = np.zeros((n_texts, self.dim), dtype=np.float64)
        ctx, batch = self.llm._ctx, self.llm._batch
        start = 0
        while start < len(pieces):
            # Pack whole sequences into one batch of at most N_CTX tokens (and sequences).
            end, used = start, 0
            while end < len(pieces) and used + len(pieces[end][1]) <= N_CTX and end - start < max_seqs:
                used += len(pieces[end][1])
                end += 1
            batch.reset()
            for seq_id, (_, tokens) in enumerate(pieces[start:end]):
                batch.add_sequence(tokens, seq_id, True)
            ctx.kv_cache_clear()
            ctx.decode(batch)
            for seq_id, (index, tokens) in enumerate(pieces[start:end]):
                ptr = llama_cpp.llama_get_embeddings_seq(ctx.ctx, seq_id)
                vector = np.ctypeslib.as_array(ptr, shape=(self.dim,))
                # Mean pooling per piece; a long text is the token-weighted mean of its pieces.
                sums[index] += vector * (len(tokens) - 2 or 1)
            start = end
        batch.reset()
        ctx.kv_cache_clear()
        return _normalise(sums)


class LocalEmbedder(Embedder):
    """MiniLM run in a supervised worker process, so native code cannot take the server down;
    ``llm`` here is the file's vocabulary only (for tokenizing and counting)."""

    def __init__(self, path: Path, *, name: str, n_threads: int):
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        from .models.files import check_gguf
        from .models.llama_load import load_llama
        from .models.worker import ModelWorker

        check_gguf(path)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self.llm = load_llama(LlamaModel, path_model=str(path), params=params)
            self.worker = ModelWorker(EmbedRunner, {"path": str(path), "n_threads": n_threads}, name=name)
            self.worker.start()
        except (ValueError, RuntimeError, ModelError) as exc:
            raise StartupError(f"cannot load embedding model {path}: {exc}; delete it and run 'flowbox models pull'") from exc
        self.name = name
        self.dim = self.worker.info["dim"]
        self._cls = self.llm.token_bos()
        self._sep = self.llm.token_sep()

    def close(self) -> None:
        self.worker.close()
        with contextlib.suppress(Exception):
            self.llm.close()

    def _pieces(self, text: str) -> list[list[int]]:
        """Token sequences of at most N_CTX tokens, each wrapped in [CLS] ... [SEP], tokenized
        as the original (Hugging Face) tokenizer does: special tokens written in the text count,
        and a word over 100 characters is one [UNK]."""
        text = LONG_WORD.sub(" [UNK] ", text)
        inner = self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=True)
        width = N_CTX - 2
        windows = [inner[i:i + width] for i in range(0, len(inner), width)] or [[]]
        return [[self._cls, *w, self._sep] for w in windows]

    def _all_pieces(self, texts: list[str]) -> list[tuple[int, list[int]]]:
        return [(index, seq) for index, text in enumerate(texts) for seq in self._pieces(text)]

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.worker.call_sync("embed", self._all_pieces(texts), len(texts))

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        texts = list(texts)
        pieces = await asyncio.to_thread(self._all_pieces, texts)  # long documents: off the event loop
        return await self.worker.call("embed", pieces, len(texts))


class RemoteEmbedder(Embedder):
    """An OpenAI-compatible ``POST /embeddings`` endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 60.0):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"remote:{model}"
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._async: httpx.AsyncClient | None = None  # made on first async use, on the app's loop
        self.dim = len(self.embed_sync(["dimension probe"])[0])

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()

    def _parse(self, response: Any, count: int) -> list[list[float]]:
        if response.status_code >= 400:
            raise upstream_refusal("embedding server", response.status_code, response.text, self._api_key)
        try:
            data = sorted(response.json()["data"], key=lambda d: d.get("index", 0))
            vectors = np.array([d["embedding"] for d in data], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"embedding server sent a malformed answer: {exc}") from None
        if len(vectors) != count or vectors.ndim != 2:
            raise ModelError(f"embedding server returned {len(vectors)} vectors for {count} texts")
        return _normalise(vectors)

    def _batches(self, texts: list[str]):
        for i in range(0, len(texts), REMOTE_BATCH):
            chunk = texts[i:i + REMOTE_BATCH]
            yield chunk, {"model": self.model, "input": chunk}

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        import httpx

        out: list[list[float]] = []
        for chunk, payload in self._batches(texts):
            try:
                response = httpx.post(f"{self.base_url}/embeddings", json=payload, headers=self._headers, timeout=self._timeout)
            except httpx.HTTPError as exc:
                raise ModelError(f"embedding server {self.base_url} is unreachable: {type(exc).__name__}") from exc
            out.extend(self._parse(response, len(chunk)))
        return out

    async def embed(self, texts: list[str]) -> list[list[float]]:
        import httpx

        if self._async is None:
            self._async = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout)
        out: list[list[float]] = []
        for chunk, payload in self._batches(texts):
            try:
                response = await self._async.post("/embeddings", json=payload)
            except httpx.HTTPError as exc:
                raise ModelError(f"embedding server {self.base_url} is unreachable: {type(exc).__name__}") from exc
            out.extend(self._parse(response, len(chunk)))
        return out


def load_embedder(config: Config, progress: bool = False) -> Embedder:
    """The configured embedder (blocking: loads a model file or probes a server)."""
    if config.embedding_base_url:
        if not config.embedding_remote_model:
            raise StartupError("setting 'embedding_remote_model' is required when 'embedding_base_url' is set")
        try:
            return RemoteEmbedder(config.embedding_base_url, config.embedding_remote_model, config.embedding_api_key)
        except ModelError as exc:
            raise StartupError(str(exc)) from None
    from .models.files import MODELS, ensure_model

    path = ensure_model(config.models_path, config.embedding_model, progress=progress)
    name = config.embedding_model if config.embedding_model in MODELS else Path(path).stem
    return LocalEmbedder(path, name=name, n_threads=config.threads)


@dataclass
class LoadedEmbedder:
    """The app's embedder once loaded; one load at a time."""
    embedder: Embedder | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def get_embedder(services: Services) -> Embedder:
    """The app's embedder, loaded once (off the event loop) on first use."""
    loaded = services.state(LoadedEmbedder)
    if loaded.embedder is None:
        async with loaded.lock:
            if loaded.embedder is None:
                loaded.embedder = await asyncio.to_thread(load_embedder, services.config)
    return loaded.embedder


async def close_embedder(services: Services) -> None:
    loaded = services.state(LoadedEmbedder)
    embedder, loaded.embedder = loaded.embedder, None
    if embedder is not None:
        await embedder.aclose()
