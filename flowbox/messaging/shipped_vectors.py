"""The built-in phrasings' vectors (``common_phrasings`` and ``off_topic``), computed with the built-in
embedding model and shipped beside this module (``phrasings.npz``), so that a new data dir does not
embed some 2,600 texts before its first flow is ready (seconds of CPU on a small box, and the common
phrasings are needed before the first message is matched).

They are used with the built-in model only (``Embeddings.builtin``), by text: a phrasing that is not in
the file (a list changed since it was written) is embedded as any other text. After changing a list,
write the file again with ``python -m flowbox.messaging.shipped_vectors``; a test fails while it is
stale, and another compares it with what the model computes.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

FILE = Path(__file__).with_name("phrasings.npz")


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def phrasings() -> list[str]:
    from . import common_phrasings, off_topic

    return list(dict.fromkeys([*common_phrasings.TEXTS, *off_topic.TEXTS]))


@functools.cache
def shipped() -> dict[str, np.ndarray]:
    """Vector (float32, unit length) by text hash; empty when the file is missing."""
    try:
        with np.load(FILE, allow_pickle=False) as data:
            hashes, vectors = data["hashes"].tolist(), data["vectors"].astype(np.float32)
    except FileNotFoundError:
        return {}
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # stored as float16
    for row in vectors:
        row.flags.writeable = False
    return dict(zip(hashes, vectors))


def write(vectors_of) -> int:
    """Writes the file from ``vectors_of(texts)`` (the built-in model's vectors); returns the count."""
    texts = phrasings()
    vectors = np.asarray(vectors_of(texts), dtype=np.float32)
    np.savez_compressed(FILE, hashes=np.array([text_hash(t) for t in texts]), vectors=vectors.astype(np.float16))
    shipped.cache_clear()
    return len(texts)


def main() -> None:
    from ..config import load
    from ..embeddings import intent_model, load_embedder
    from .common_phrasings import MODEL

    config = load()
    if config.embedding_base_url or intent_model(config) != MODEL:
        raise SystemExit(f"the shipped vectors are the built-in model's ({MODEL}); unset the embedding settings")
    embedder = load_embedder(config, progress=True, model=MODEL)
    try:
        print(f"wrote {write(embedder.embed_sync)} vectors to {FILE.name}")
    finally:
        embedder.close()


if __name__ == "__main__":
    main()
