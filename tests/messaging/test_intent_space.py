"""The learned map of MiniLM's vectors for intents (``flowbox.messaging.intent_space``) and the
script that learns it (``scripts/intent_space/train.py``)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np

from flowbox.messaging import intent_space
from flowbox.messaging.matcher import embeddings_of

TRAINER = Path(__file__).parents[2] / "scripts" / "intent_space" / "train.py"


@functools.cache
def _trainer():
    spec = importlib.util.spec_from_file_location("intent_space_train", TRAINER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_built_in_models_vectors_are_compared_in_the_intent_space(org_server):
    """Examples and messages alike go through the shipped map and come out of unit length; it moves
    them (it is not the identity) but keeps what MiniLM knows (each stays close to where it was)."""
    embeddings = embeddings_of(org_server.services)
    assert org_server.call(embeddings.ready()) and embeddings.builtin
    texts = ["where is my parcel", "cancel my appointment", "do you sell gift cards"]
    raw = np.asarray(org_server.call(embeddings.embedder.embed(texts)), dtype=np.float32)
    examples = org_server.call(embeddings.examples(texts))
    message = org_server.call(embeddings.queries(texts[:1]))[0]
    assert intent_space.matrix() is not None and intent_space.matrix().shape == (384, 384)
    assert np.allclose(np.linalg.norm(examples, axis=1), 1, atol=1e-5)
    assert np.allclose(examples, intent_space.mapped(raw), atol=1e-5)
    assert np.allclose(message, examples[0], atol=1e-4)
    moved = np.sum(examples * raw, axis=1)
    assert np.all(moved < 0.999) and np.all(moved > 0.8)


def test_the_trainers_gradient_is_the_losss():
    """The hand-written gradient of the trainer's loss matches finite differences."""
    train = _trainer()
    flows = _flows(np.random.default_rng(1), 2)
    rng = np.random.default_rng(2)
    w, bar = np.eye(24) + 0.05 * rng.standard_normal((24, 24)), 0.4
    _, grad_w, grad_bar = train.loss_and_gradient(w, bar, flows)
    for _ in range(3):
        step = 1e-5 * rng.standard_normal(w.shape)
        up, down = (train.loss_and_gradient(w + s, bar, flows)[0] for s in (step, -step))
        expected = float(np.sum(grad_w * step))
        assert abs((up - down) / 2 - expected) < 1e-4 * abs(expected) + 1e-12
    up, down = (train.loss_and_gradient(w, bar + s, flows)[0] for s in (1e-5, -1e-5))
    assert abs((up - down) / 2e-5 - grad_bar) < 1e-4 * abs(grad_bar) + 1e-9


def test_the_trainer_learns_a_map_that_helps_on_flows_it_never_saw():
    """Flows whose texts carry a strong 'style' besides their intent (noise in directions of its own,
    the same in every flow): nearest-example matching is poor in the raw space (about 0.68), and the
    map learned on twenty flows suppresses the style, so that ten other flows are matched far better
    (about 0.98)."""
    train = _trainer()
    rng = np.random.default_rng(0)
    flows = _flows(rng, 30)
    w, _ = train.fit(flows[:20], 24, log=lambda line: None)
    before, _ = train.nearest_accuracy(flows[20:], np.eye(24))
    after, _ = train.nearest_accuracy(flows[20:], w)
    assert after > before + 0.15, (before, after)


def _flows(rng: np.random.Generator, count: int) -> list:
    """Synthetic flows in 24 dimensions: intents are directions among the first 12, every example and
    message adds noise in the last 12 (the style), and a fifth of the messages are about none of the
    intents."""
    train = _trainer()
    flows = []
    for _ in range(count):
        centres = rng.standard_normal((6, 12))
        texts, vectors = {}, []

        def vector(centre: np.ndarray, style: float) -> str:
            v = np.concatenate([centre + 0.15 * rng.standard_normal(12), style * rng.standard_normal(12)])
            key = f"t{len(vectors)}"
            vectors.append(v / np.linalg.norm(v))
            texts[key] = vectors[-1]
            return key

        data = {"intents": [{"examples": [vector(c, 1.6) for _ in range(5)],
                             "utterances": [vector(c, 1.6) for _ in range(8)]} for c in centres],
                "out_of_scope": [vector(rng.standard_normal(12), 1.6) for _ in range(12)]}
        flows.append(train.Flow(data, texts))
    return flows


def test_the_nearest_examples_confidence_is_fitted_where_accepting_and_declining_differ(monkeypatch):
    """``scripts/intent_space/nearest_confidence.py`` fits ``matcher.NEAREST_CONFIDENCE``: on messages whose
    nearest intent is right (accepting is right) or that the flow does not cover (declining is), the
    logistic crosses 0.5 between the two, further up for flows with more examples per intent; a message
    whose nearest intent is wrong is wrong either way and moves nothing."""
    monkeypatch.syspath_prepend(str(TRAINER.parent))  # the script imports train.py from beside it
    spec = importlib.util.spec_from_file_location("nearest_confidence", TRAINER.with_name("nearest_confidence.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(7)

    def measured(right_at: float, outside_at: float, wrong: int) -> np.ndarray:
        right = np.stack([rng.normal(right_at, 0.05, 400), np.ones(400), np.ones(400)], axis=1)
        outside = np.stack([rng.normal(outside_at, 0.05, 400), np.zeros(400), np.zeros(400)], axis=1)
        wrong_rows = np.stack([np.full(wrong, 0.9), np.zeros(wrong), np.ones(wrong)], axis=1)  # in scope, nearest wrong
        return np.vstack([right, outside, wrong_rows])

    def bar(weights, bias, examples):  # the cosine where the confidence crosses 0.5
        return -(bias + weights[1] * np.log(examples)) / weights[0]

    fitted = script.fit({1: measured(0.45, 0.25, 0), 6: measured(0.55, 0.35, 0)})
    assert abs(bar(*fitted, 1) - 0.35) < 0.03 and abs(bar(*fitted, 6) - 0.45) < 0.03
    again = script.fit({1: measured(0.45, 0.25, 300), 6: measured(0.55, 0.35, 300)})
    assert abs(bar(*again, 1) - bar(*fitted, 1)) < 0.02
    # what the matcher ships, at the default threshold: the bars its comments and the README give
    from flowbox.messaging.matcher import NEAREST_CONFIDENCE

    shipped = (np.array(NEAREST_CONFIDENCE[:2]), NEAREST_CONFIDENCE[2])
    assert round(bar(*shipped, 1), 2) == 0.32 and round(bar(*shipped, 6), 2) == 0.42


def test_the_trainers_learn_from_the_flows_the_unseen_measure_keeps_apart():
    """``scripts/eval/intents.py --unseen`` measures flowbox on the flows in ``unseen_flows.txt`` as flows it
    never saw, so the scripts that learn the encoder, the map and the judge leave them out unless told."""
    train = _trainer()
    unseen = set(train.UNSEEN.read_text().split())
    assert unseen and all((train.FLOWS / name).exists() for name in unseen)
    learned = [f["domain"] for f in train.learned_from()]
    every = [f["domain"] for f in train.learned_from(include_unseen=True)]
    held = {json.loads((train.FLOWS / name).read_text())["domain"] for name in unseen}
    assert len(learned) == 144 and not held & set(learned)
    assert sorted(every) == sorted(learned + list(held)) and len(every) == len(learned) + len(unseen)


def test_the_trainer_keeps_common_words_but_not_common_typos():
    """``train.common_words``: words used twice or more, less one the model does not know whole that is one edit
    from a word used three times as often."""
    train = _trainer()
    flow = {"intents": [{"examples": ["cancel my order", "cancel it"], "utterances": ["cancle my order", "cancel pls",
                                                                                    "cancle", "cancel now", "klarna?"]}],
            "out_of_scope": ["do you take klarna", "cancel my zither"]}
    words = train.common_words([flow], known=lambda word: word not in {"cancle", "klarna"})
    assert words["klarna"] == 2 and words["cancel"] >= 5 and "cancle" not in words
    assert "zither" not in train.common_words([flow], known=lambda word: True)  # used once
    assert "cancle" in train.common_words([flow], known=lambda word: True)  # a word the model knows is no typo
