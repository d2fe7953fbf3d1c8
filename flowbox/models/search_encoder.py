"""The built-in MiniLM as the knowledge base reads entries and questions: MiniLM with low-rank changes to
its weights, made as the intent matcher's is (``intent_encoder``).

``search_encoder.npz`` holds the changes (the same weights, the same rank), learned by
``scripts/knowledge_space/encoder.py`` from help centres of 30 kinds of organisation so that a user's
question lands nearer the article that answers it than its neighbours ("my card's gone" near "Lost or
stolen cards"), and a question no article answers further from all of them. ``prepare`` writes ``MODEL``:
the built-in model's GGUF with the changes added. The knowledge base uses it by default
(``embeddings.knowledge_model``); ``/v1/embeddings`` and the intent matcher do not.

Its embedder is named ``MODEL@version`` (``models.files.embedder_name``), so that a knowledge index
embedded with other changes is noticed and embedded again.
"""

from __future__ import annotations

from pathlib import Path

from . import intent_encoder

BASE = intent_encoder.BASE
MODEL = "all-minilm-l6-v2-search"
FILE = Path(__file__).with_name("search_encoder.npz")


def version() -> str:
    return intent_encoder.version(FILE)


def prepare(base: Path, dest: Path) -> None:
    intent_encoder.prepare(base, dest, FILE)
