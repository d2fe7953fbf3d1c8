"""Other flows' intents and their customers' messages (``flowbox.messaging.other_flows``): which of them a
flow's intents are kin to, what the judge reads from them, and the library flowbox ships."""

from __future__ import annotations

import numpy as np

from flowbox.messaging import other_flows
from flowbox.messaging.intents import normalised


def _library(rng: np.random.Generator, centres: np.ndarray) -> other_flows.Library:
    """One library intent per centre: six examples and ten customers' messages around it."""
    return other_flows.Library.of([normalised(c + 0.08 * rng.standard_normal((6, len(c)))) for c in centres],
                                  [normalised(c + 0.08 * rng.standard_normal((10, len(c)))) for c in centres])


def test_a_message_like_what_a_kin_intents_customers_sent_is_supported_for_that_intent_only():
    rng = np.random.default_rng(1)
    centres = normalised(rng.standard_normal((6, 32)))
    library = _library(rng, centres)
    # a flow of two intents: the first like library intent 2, the second like library intent 5
    kin = library.kin([normalised(centres[2] + 0.08 * rng.standard_normal((6, 32))),
                       normalised(centres[5] + 0.08 * rng.standard_normal((6, 32)))])
    assert kin.neighbours.shape == kin.similarity.shape == (2, other_flows.NEIGHBOURS)
    assert np.all(np.diff(kin.similarity, axis=1) <= 0)  # nearest first
    assert kin.similarity[0, 0] > 0.8 and kin.similarity[1, 0] > 0.8
    measured = kin.measures(normalised(centres[2] + 0.08 * rng.standard_normal(32)))
    assert measured.shape == (2, len(other_flows.MEASURES))
    support = dict(zip(other_flows.MEASURES, measured.T))["kindred_support"]
    assert support[0] > 0.7 > 0.4 > support[1]
    # a message no kin's customer sent gets no support from any
    stranger = normalised(rng.standard_normal(32))
    assert np.all(kin.measures(stranger)[:, 0] < 0.5)


def test_a_library_keeps_its_messages_principal_directions_and_reads_back_within_a_hundredth(tmp_path):
    rng = np.random.default_rng(2)
    centres = normalised(rng.standard_normal((30, 384)))
    library = _library(rng, centres)  # 300 messages
    assert library.basis.shape == (384, other_flows.DIMENSIONS) and library.vectors.shape == (300, other_flows.DIMENSIONS)
    # the directions keep what tells the intents apart: a message is still nearest its own intent's messages
    message = normalised(centres[7] + 0.08 * rng.standard_normal(384))
    owner = np.searchsorted(library.starts, np.argmax(library.vectors @ library.reduce(message)), side="right") - 1
    assert owner == 7
    library.save(tmp_path / "library.npz")
    again = other_flows.Library.load(tmp_path / "library.npz")
    assert np.array_equal(again.starts, library.starts)
    assert np.abs(again.vectors @ again.reduce(message) - library.vectors @ library.reduce(message)).max() < 0.01
    assert np.abs(again.centroids - library.centroids).max() < 0.01


def test_the_shipped_library_is_read_in_the_intent_space():
    library = other_flows.shipped()
    assert library is not None, "other_flows.npz is missing: run scripts/intent_space/train.py --judge"
    assert library.basis.shape == (384, other_flows.DIMENSIONS)  # from the built-in model's 384
    assert library.centroids.shape[1] == library.vectors.shape[1] == other_flows.DIMENSIONS
    assert len(library.starts) == len(library.centroids) + 1 and library.starts[-1] == len(library.vectors)
    assert np.allclose(np.linalg.norm(library.vectors, axis=1), 1, atol=0.01)
