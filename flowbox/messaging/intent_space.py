"""A linear map of the intent matcher's vectors, learned for telling customers' requests apart.

The matcher reads messages with the built-in MiniLM as changed for intents (``models/intent_encoder.py``);
``intent_space.npy`` holds a square matrix learned by ``scripts/intent_space/train.py`` from flows of
many kinds of business (their examples, customers' messages written apart from them, and messages
each flow does not cover), so that a message lands nearer its own intent's examples than the other
intents' and one the flow does not cover lands further from all of them: the same objective the
encoder was learned with, on its finished vectors. The intent matcher maps every vector it uses
through it (examples, messages, the common and the off-topic phrasings) and normalises it again; the
map is learned for the built-in model only, so other models' vectors are used as they come.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

FILE = Path(__file__).with_name("intent_space.npy")


@functools.cache
def matrix() -> np.ndarray | None:
    """The map (float32, dim x dim), or None when the file is missing (vectors are used as they come)."""
    try:
        return np.load(FILE, allow_pickle=False).astype(np.float32)
    except FileNotFoundError:
        return None


@functools.cache
def version() -> str:
    """A digest of the map ("" without one): a flow's stored model was learned in one space and is
    learned again when the map changes."""
    m = matrix()
    return hashlib.sha1(m.tobytes()).hexdigest()[:16] if m is not None else ""


def mapped(vectors: np.ndarray) -> np.ndarray:
    """Rows (or one vector) mapped into the intent space, unit length."""
    m = matrix()
    if m is None:
        return vectors
    out = np.asarray(vectors, dtype=np.float32) @ m
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    return out / np.maximum(norms, 1e-12)
