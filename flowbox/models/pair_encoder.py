"""The built-in MiniLM reading a message beside an intent's examples: a cross-encoder for the intent matcher.

The intent encoder (``intent_encoder``) reads a message and an intent's examples apart and compares the two
vectors; this model reads them together, as one text (``messaging.second_reading.pair_text``: the message,
``[SEP]``, the intent's examples), so that it can weigh "track my phone" against "track my parcel" word by word.
``pair_encoder.npz`` holds low-rank changes to MiniLM's weights (as ``intent_encoder``'s: the same weights,
the same rank) and ``head.weight`` and ``head.bias``: the pair's score is the head applied to the text's
unit-length mean-pooled vector, as flowbox's embedder returns it (``score``). Learned by
``scripts/intent_space/pairs.py`` from the 144 flows the intent encoder learned from. ``prepare`` writes
``MODEL``: the built-in model's GGUF with the changes added.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from . import intent_encoder

BASE = intent_encoder.BASE
MODEL = "all-minilm-l6-v2-pairs"
FILE = Path(__file__).with_name("pair_encoder.npz")


def version() -> str:
    return intent_encoder.version(FILE)


def prepare(base: Path, dest: Path, file: Path = FILE) -> None:
    intent_encoder.prepare(base, dest, file)


@functools.cache
def head(file: Path = FILE) -> tuple[np.ndarray, float]:
    """The head's weights and bias (of ``file``)."""
    with np.load(file, allow_pickle=False) as data:
        return data["head.weight"].astype(np.float32).reshape(-1), float(data["head.bias"].reshape(-1)[0])


def score(vectors: np.ndarray, file: Path = FILE) -> np.ndarray:
    """Each pair's score from its text's vector (unit length, as the embedder returns it)."""
    weight, bias = head(file)
    return np.asarray(vectors, dtype=np.float32) @ weight + bias
