"""The intent encoder (``flowbox/models/intent_encoder.py``): MiniLM with low-rank changes, prepared from the
built-in model's file, used by the intent matcher only."""

import gguf
import numpy as np
import pytest

from flowbox.embeddings import LocalEmbedder
from flowbox.models import intent_encoder
from flowbox.models.files import MODELS, ensure_model
from tests.helpers import models

pytestmark = pytest.mark.slow


def test_prepared_file_is_minilm_with_the_changes_added(tmp_path):
    """Every changed weight is MiniLM's plus ``b @ a`` (to f16 rounding); every other tensor and all the
    metadata are MiniLM's byte for byte."""
    base = ensure_model(models(), intent_encoder.BASE, progress=False)
    prepared = ensure_model(tmp_path, intent_encoder.MODEL, progress=False)  # derived, from the models dir's base
    assert prepared.name == MODELS[intent_encoder.MODEL].filename and intent_encoder.version() in prepared.name
    mine, theirs = gguf.GGUFReader(prepared), gguf.GGUFReader(base)
    assert [f.name for f in mine.fields.values()] == [f.name for f in theirs.fields.values()]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, 6)
    changed = {names.get_name(n, try_suffixes=(".weight",)): delta for n, delta in intent_encoder.changes().items()}
    assert len(changed) == 6 * len(intent_encoder.TARGETS)
    originals = {t.name: t for t in theirs.tensors}
    for tensor in mine.tensors:
        original = np.asarray(originals[tensor.name].data)
        if tensor.name in changed:
            expected = original.astype(np.float32) + changed[tensor.name]
            assert np.abs(np.asarray(tensor.data, dtype=np.float32) - expected).max() < 2e-3
            assert np.abs(changed[tensor.name]).max() > 1e-3  # it did change
        else:
            assert np.array_equal(np.asarray(tensor.data), original)


def test_it_reads_a_request_nearer_its_intent_than_minilm(tmp_path):
    """What it was learned for: an indirect or misspelt request lands nearer the example of its own intent
    than of a sibling one, by a wider margin than with MiniLM as it is."""
    pairs = [  # (message, its intent's example, a sibling intent's example)
        ("I won't be able to make it on Friday", "cancel my appointment", "book an appointment"),
        ("wher is my ordr", "track my order", "cancel my order"),
        ("the heating packed in again last night", "report a fault", "book a service"),
        ("can i get my money back for the shoes", "I want a refund", "exchange an item"),
        ("how much is it per month", "what are your prices", "cancel my membership"),
    ]
    margins = {}
    for name in (intent_encoder.BASE, intent_encoder.MODEL):
        embedder = LocalEmbedder(ensure_model(models(), name, progress=False), name=name, n_threads=1)
        try:
            vectors = np.asarray(embedder.embed_sync([t for pair in pairs for t in pair])).reshape(len(pairs), 3, -1)
        finally:
            embedder.close()
        margins[name] = np.einsum("nd,nd->n", vectors[:, 0], vectors[:, 1]) - np.einsum("nd,nd->n", vectors[:, 0], vectors[:, 2])
    assert (margins[intent_encoder.MODEL] > 0).all(), margins
    assert margins[intent_encoder.MODEL].mean() > margins[intent_encoder.BASE].mean() + 0.05, margins


def test_only_the_intent_matcher_reads_with_it(server):
    """The intent matcher's embedder is the intent encoder; the knowledge base and the OpenAI-compatible
    endpoint keep MiniLM as it is."""
    from flowbox.embeddings import get_embedder, loaded_embedders

    intents = server.call(get_embedder(server.services, intents=True))
    app = server.call(get_embedder(server.services))
    assert intents.name == intent_encoder.MODEL and app.name == intent_encoder.BASE
    assert server.call(get_embedder(server.services, knowledge=True)) is app
    assert {id(s.embedder) for s in loaded_embedders(server.services)} == {id(intents), id(app)}
