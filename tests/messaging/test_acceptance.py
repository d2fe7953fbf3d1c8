"""The judge of top-level matches (``flowbox.messaging.acceptance``): the shipped one, how it is
fitted, and how the trainer measures a flow for it (``scripts/intent_space/train.py``)."""

from __future__ import annotations

import json

import numpy as np

from flowbox.messaging import acceptance, other_flows
from flowbox.messaging.intents import FEATURES, Model, normalised
from tests.messaging.test_intent_space import _trainer


def test_the_shipped_judge_weighs_what_the_matcher_measures():
    judge = acceptance.judge()
    assert judge is not None, "acceptance.json is missing or weighs other measures: run scripts/intent_space/train.py --judge"
    # the measures, then the built-in model's vector (384 numbers)
    assert judge.weights.shape == judge.mean.shape == judge.scale.shape == (len(acceptance.MEASURES) + 384,)
    assert np.all(judge.scale > 0) and np.isfinite(judge.bias)


def test_a_fitted_judge_recovers_the_rule_behind_its_rows():
    """Rows that are right when two measures together clear a bar, with noise in the others: the
    fitted judge tells new rows apart and is surer the further a row lies from the bar."""
    rng = np.random.default_rng(0)
    width = len(acceptance.MEASURES) + 4  # and a vector of 4

    def rows(n):
        x = rng.standard_normal((n, width))
        return x, (x[:, 0] + 0.5 * x[:, 2] > 0.3).astype(float)

    judge = acceptance.Judge.fit(*rows(4000))
    x, y = rows(1000)
    p = np.array([judge.probability(r) for r in x])
    assert np.mean((p >= 0.5) == (y == 1)) > 0.95
    low, high = np.zeros(width), np.zeros(width)
    low[0], high[0] = -1.0, 2.0
    assert judge.probability(low) < 0.1 < 0.9 < judge.probability(high)
    data = json.loads(judge.dumps())  # as shipped
    assert tuple(data["measures"]) == acceptance.MEASURES
    again = acceptance.Judge(np.asarray(data["mean"]), np.asarray(data["scale"]), np.asarray(data["weights"]), data["bias"])
    assert abs(again.probability(x[0]) - judge.probability(x[0])) < 1e-12


def test_the_judge_does_not_extrapolate_on_a_flows_size():
    """Every flow the shipped judge learned from had 13 or 14 intents: one of 30 or 300 intents counts as one
    ``Z_LIMIT`` deviations above their mean (about 16), one of 5 or 2 as one as far below it (about 11)."""
    judge = acceptance.judge()
    size = acceptance.MEASURES.index("intents_log")

    def probability(log_intents: float) -> float:
        measured = judge.mean.copy()  # an average candidate, but for the flow's size
        measured[size] = log_intents
        return judge.probability(measured)

    mean, limit = judge.mean[size], acceptance.Z_LIMIT * judge.scale[size]
    assert np.exp(mean + limit) < 17 and np.exp(mean - limit) > 11  # the sizes it learned from lie well inside
    assert probability(np.log(30)) == probability(np.log(300)) == probability(mean + limit)
    assert probability(np.log(5)) == probability(np.log(2)) == probability(mean - limit)
    small, large = probability(np.log(5)), probability(np.log(30))
    gap = np.log(small / (1 - small)) - np.log(large / (1 - large))  # in logits; 1.9 before the limit
    assert 0 < gap < 0.35, gap


def test_a_candidate_below_the_bar_matches_where_the_candidates_are_likely_together():
    accepts, bar, floor = acceptance.accepts, acceptance.BAR, acceptance.FLOOR
    assert accepts(bar, floor) and not accepts(bar - 0.01, floor) and not accepts(0.99, floor - 0.01)
    # two candidates, each below the bar, that the message asks for one of: the likelier matches
    likelier = (acceptance.SHARED + bar) / 2
    assert accepts(likelier, floor, together=acceptance.TOGETHER) and acceptance.shared(likelier, acceptance.TOGETHER)
    # not where they are not likely enough together, where the likelier is itself unlikely, or below the floor
    assert not accepts(likelier, floor, together=acceptance.TOGETHER - 0.01)
    assert not accepts(acceptance.SHARED - 0.01, floor, together=1.0)
    assert not accepts(likelier, floor - 0.01, together=1.0)


def test_the_measures_compare_a_candidate_with_its_rivals_and_the_flows_scope():
    features = np.array([[0.8, 0.7, 0.6, 0.5, 0.3, 0.2], [0.5, 0.4, 0.3, 0.2, -0.3, -0.2], [0.6, 0.5, 0.1, 0.1, -0.2, -0.5]])
    assert features.shape[1] == len(FEATURES)
    model = Model(np.zeros(len(FEATURES)), 0.0, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), (0.55, 0.4), 0.7)
    kindred = np.arange(15, dtype=float).reshape(3, 5) / 20  # per intent, how near other flows' kin lie (other_flows)
    message = acceptance.Message(features, np.array([0.9, 0.2, 0.6]), np.array([0.1, 0.3, 0.2]), 0.65, 0.72, True,
                                 np.array([0.6, 0.8]), kindred)
    assert acceptance.candidates(message, [0, 1, 2]) == [1, 0]  # the ranker's favourite first, then the surest
    assert acceptance.candidates(message, [0, 2]) == [2, 0]  # among the rows competing only
    row = acceptance.measures(0, [0, 1, 2], message, model)
    assert len(row) == len(acceptance.MEASURES) + 2 and list(row[-2:]) == [0.6, 0.8]  # the message's vector last
    measured = dict(zip(acceptance.MEASURES, row))
    assert measured["confidence"] == 0.9 and abs(measured["confidence_logit"] - np.log(9)) < 1e-9
    assert abs(measured["rank_lead"] - (0.1 - 0.3)) < 1e-9
    assert abs(measured["meaning_over_scope"] - (0.8 - 0.55)) < 1e-9 and abs(measured["spelling_over_scope"] - 0.2) < 1e-9
    assert abs(measured["outside_over_span"] - (0.65 - 0.7)) < 1e-9
    assert abs(measured["off_topic_lead"] - (0.72 - 0.8)) < 1e-9
    assert (measured["favourite"], measured["surest"], measured["agreed"], measured["respelt"]) == (0, 1, 0, 1)
    assert measured["behind_nearest"] == 0 and abs(measured["intents_log"] - np.log(3)) < 1e-9
    assert [measured[name] for name in other_flows.MEASURES] == list(kindred[0])  # the candidate's own kin
    row, probability = max(acceptance.judged([0, 1, 2], message, model, acceptance.Judge.fit(
        np.vstack([acceptance.measures(r, [0, 1, 2], message, model) for r in (0, 1)] * 5), np.array([1.0, 0.0] * 5))),
        key=lambda found: found[1])
    assert row == 0 and probability > 0.5


def test_the_trainer_measures_every_message_of_a_flow_for_its_candidates():
    """A small flow in a made-up space of 16 dimensions: every message gets one entry per spelling,
    each naming the candidates the matcher would judge, with their measures."""
    train = _trainer()
    rng = np.random.default_rng(3)
    data = {"intents": [{"examples": [f"i{n} e{k}" for k in range(8)], "utterances": [f"i{n} u{k}" for k in range(4)]}
                        for n in range(4)], "out_of_scope": ["o1", "o2", "o3"]}
    centres = rng.standard_normal((4, 16))
    vector_of = {f"i{n} {kind}{k}": centres[n] + 0.3 * rng.standard_normal(16) for n in range(4) for kind in "eu" for k in range(8)}
    vector_of.update({t: rng.standard_normal(16) for t in data["out_of_scope"]})
    spellings = {t: [t] for i in data["intents"] for t in i["utterances"]} | {t: [t] for t in data["out_of_scope"]}
    # other flows with an intent near each of these (and one near none), their customers' messages beside it
    kin = [centres[n % 4] + (0.3 if n < 4 else 3.0) * rng.standard_normal(16) for n in range(5)]
    library = other_flows.Library.of([normalised(c + 0.3 * rng.standard_normal((6, 16))) for c in kin],
                                     [normalised(c + 0.3 * rng.standard_normal((10, 16))) for c in kin])
    measured = train.judge_rows(data, vector_of, np.eye(16), spellings, rng.standard_normal((5, 16)), library)
    assert [label for label, _, _ in measured] == [n for n in range(4) for _ in range(4)] + [-1, -1, -1]
    for label, judged, (nearest, cosine) in measured:
        assert 0 <= nearest < 4 and -1 <= cosine <= 1
        assert len(judged) == 1 and 1 <= len(judged[0]) <= 2
        for row, measures in judged[0]:
            assert 0 <= row < 4 and measures.shape == (len(acceptance.MEASURES) + 16,) and np.all(np.isfinite(measures))
    # the right intent is among the candidates of nearly every in-scope message: the clusters are clear
    found = [any(row == label for row, _ in judged[0]) for label, judged, _ in measured if label >= 0]
    assert np.mean(found) >= 0.9
    # fitted on such flows, the judge is printed beside the rules it replaces and the nearest example
    lines: list[str] = []
    judge = train.fit_judge([measured] * train.JUDGE_FOLDS, log=lines.append)
    assert isinstance(judge, acceptance.Judge) and len(judge.weights) == len(acceptance.MEASURES) + 16
    assert [line.split(" on flows")[0] for line in lines] == [f"judge (bar {acceptance.BAR}, floor {acceptance.FLOOR})", "the rules it replaces",
                                                              lines[2].split(" on flows")[0]]
    assert lines[2].startswith("nearest example (bar ") and all("out of scope" in line for line in lines)
