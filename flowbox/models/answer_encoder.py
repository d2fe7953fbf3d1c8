"""The built-in MiniLM reading a question beside a knowledge entry: a cross-encoder for the knowledge base.

As ``pair_encoder`` reads a message beside an intent's examples, this one reads a question beside an entry
(``knowledge.second_reading.pair_text``: the question, ``[SEP]``, the entry as it is indexed) and scores how well
the entry answers it. ``answer_encoder.npz`` holds low-rank changes to MiniLM's weights and a head, as
``pair_encoder.npz`` does (``pair_encoder.score`` reads either); learned by ``scripts/knowledge_space/pairs.py``
from the help centres the search encoder learned from, starting from the intent matcher's pair encoder.
``prepare`` writes ``MODEL``: the built-in model's GGUF with the changes added.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import intent_encoder, pair_encoder

BASE = intent_encoder.BASE
MODEL = "all-minilm-l6-v2-answers"
FILE = Path(__file__).with_name("answer_encoder.npz")


def version() -> str:
    return intent_encoder.version(FILE)


def prepare(base: Path, dest: Path, file: Path = FILE) -> None:
    intent_encoder.prepare(base, dest, file)


def score(vectors: np.ndarray, file: Path = FILE) -> np.ndarray:
    """Each pair's score from its text's vector (unit length, as the embedder returns it)."""
    return pair_encoder.score(vectors, file)
