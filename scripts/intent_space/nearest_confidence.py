"""Fits ``matcher.NEAREST_CONFIDENCE``: the confidence of a match by the nearest example alone, the rule a
flow lives by until its model is ready, and for good when it is too small to learn from (one example per
intent, say). A cosine there is not a probability, and one bar does not suit every flow: the fewer examples
an intent has, the less close its nearest one comes to a message that is about it.

For each flow it was given (``--flows``; by default those the shipped encoder did not learn from, listed
in ``unseen_flows.txt``: a flow it learned from would come out too close), with 1, 2, 3 and 6 of each
intent's examples, every customer's message and every message the flow does not cover (``FRAGMENTS``
among them, as the judge learns) is read as the matcher reads it and matched to its nearest example's
intent. A logistic model over that cosine and the log of the examples per intent is fitted to tell a right
nearest intent from a message the flow does not cover (an in-scope message whose nearest intent is wrong
is wrong either way, so it is left out): at a probability of 0.5 it accepts exactly when accepting is the
likelier to be right, which is what ``intentThreshold``'s default means for the learned model too.

It prints, fitted on half of the flows and measured on the other half, the accuracy of that rule beside a
fixed cosine of 0.5 (the rule before) and the best single cosine for that number of examples (chosen on
the very messages it is measured on: a bound, not a rule), and the coefficients fitted on all of them.

    python scripts/intent_space/nearest_confidence.py [--flows NAME ...] [--cache FOLDER]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from train import FLOWS, FRAGMENTS, UNSEEN, Flow, embed  # beside this script

EXAMPLES = (1, 2, 3, 6)


def rows(flows: list[dict], vector_of: dict[str, np.ndarray], examples: int) -> np.ndarray:
    """Per message: its nearest example's cosine, whether that example's intent is its own, whether it is in scope."""
    out = []
    for data in flows:
        flow = Flow({**data, "intents": [{**i, "examples": i["examples"][:examples]} for i in data["intents"]],
                     "out_of_scope": data["out_of_scope"] + FRAGMENTS}, vector_of)
        similarity = flow.messages @ flow.examples.T
        out.append(np.stack([similarity.max(axis=1), flow.example_intent[similarity.argmax(axis=1)] == flow.label,
                             flow.label < flow.intents], axis=1))
    return np.vstack(out).astype(float)


def features(measured: np.ndarray, examples: int) -> np.ndarray:
    return np.stack([measured[:, 0], np.full(len(measured), np.log(examples))], axis=1)


def fit(measured: dict[int, np.ndarray]) -> tuple[np.ndarray, float]:
    """(weights on cosine and log examples per intent, bias), in raw units."""
    from flowbox.messaging.intents import fit_logistic

    decided = {k: m[(m[:, 1] == 1) | (m[:, 2] == 0)] for k, m in measured.items()}  # right, or out of scope
    x = np.vstack([features(m, k) for k, m in decided.items()])
    y = np.concatenate([m[:, 1] for m in decided.values()])
    weights, bias, mean, scale = fit_logistic(x, y, 1.0)
    return weights / scale, float(bias - np.sum(weights * mean / scale))


def accuracy(measured: np.ndarray, accept: np.ndarray) -> float:
    return float(np.mean(np.where(accept, measured[:, 1], 1 - measured[:, 2])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", nargs="*", help="flow file names in flows/ (default: unseen_flows.txt)")
    parser.add_argument("--cache", type=Path, help="a folder to keep the texts' vectors in between runs")
    args = parser.parse_args()
    from flowbox.config import load
    from flowbox.messaging import intent_space
    from flowbox.messaging.intents import expand

    names = args.flows or UNSEEN.read_text().split()
    flows = [json.loads((FLOWS / name).read_text()) for name in names]
    texts = list(dict.fromkeys(t for f in flows for t in
                               [*(t for i in f["intents"] for t in i["examples"] + i["utterances"]), *f["out_of_scope"], *FRAGMENTS]))
    # read as the matcher reads them: shorthand spelt out (intents.expand)
    vector_of = dict(zip(texts, intent_space.mapped(embed(load(), [expand(t) for t in texts], cache=args.cache))))
    halves = flows[::2], flows[1::2]
    for fitted_on, measured_on in (halves, halves[::-1]):
        weights, bias = fit({k: rows(fitted_on, vector_of, k) for k in EXAMPLES})
        for k in EXAMPLES:
            measured = rows(measured_on, vector_of, k)
            calibrated = features(measured, k) @ weights + bias >= 0
            bound = max(accuracy(measured, measured[:, 0] >= t) for t in np.arange(0.2, 0.8, 0.01))
            print(f"{k} example(s) per intent, {len(measured_on)} flows not fitted on: calibrated {accuracy(measured, calibrated):.3f}, "
                  f"cosine >= 0.5 {accuracy(measured, measured[:, 0] >= 0.5):.3f}, best single cosine {bound:.3f}")
    weights, bias = fit({k: rows(flows, vector_of, k) for k in EXAMPLES})
    print(f"NEAREST_CONFIDENCE = ({weights[0]:.2f}, {weights[1]:.3f}, {bias:.2f})  # cosine, log examples per intent, bias")


if __name__ == "__main__":
    main()
