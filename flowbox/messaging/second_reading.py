"""A second reading of an unsure top-level match: the message read beside each candidate's examples.

The judge (``acceptance``) weighs measures of vectors made apart: the message's, and each example's. Where
its likeliest candidate's probability lies within ``BAND`` (unsure either way), the pair encoder
(``models/pair_encoder.py``) reads the message and each candidate's first ``EXAMPLES`` examples together, as
one text (``pair_text``), so that it can tell "can you track my phone" from a parcel carrier's "track my
parcel", which share words but not a request. Each candidate's probability is then a logistic of the judge's
log-odds, the candidate's pair score and how far that score leads the other candidate's (``probability``;
weights in ``second_reading.json``, fitted by ``scripts/intent_space/pairs.py``), and the match is decided
from it as from the judge's (``acceptance.accepts``, ``acceptance.confidence``).

The weights were fitted on the 48 flows that neither the encoders nor the judge learned from
(``scripts/intent_space/unseen_flows.txt``), with the pair encoder learned from the other 144. Outside the
band the second reading changed nothing there (the judge's decision stands), so a sure message costs no
more than before. Used with the built-in embedding model only, as the judge is.

Nor did a third candidate read again help: the intent with the nearest example, where it is neither of the judge's
two, judged and read beside its examples with them (scripts/eval/acceptance_sweep.py, dev halves, all / in scope /
out of scope): tuned 0.943 / 0.948 / 0.918 -> 0.943 / 0.949 / 0.914, unseen 0.765 / 0.741 / 0.918 -> 0.767 / 0.744 /
0.918. It trades out of scope for in scope as a lower bar does. Nor a bar of its own for a probability read again
(tuned dev, against 0.943 / 0.948 / 0.918 at the judge's 0.3): 0.25, 0.940 / 0.948 / 0.906; 0.35, 0.941 / 0.944 / 0.927.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

FILE = Path(__file__).with_name("second_reading.json")
# The judge's probability (of its likeliest candidate) within which the message is read again. Fitted on half of
# the unseen flows and measured on the other half, reading every message again gave the same decisions as
# reading those within 0.1 to 0.9 (about half of those flows' messages; fewer in flows with more direct ones). On the
# tuned flows' dev half too: up to 0.95 or 1.0 the same (0.943 / 0.948 / 0.918), from 0.0 0.942 / 0.948 / 0.914.
# Later, up to 0.85: of the messages read again between 0.85 and 0.9, reading changed the judge's likeliest candidate
# or which side of its bar it fell for none on the tuned flows' dev half and two of 2,067 on the unseen flows' (all /
# in scope / out of scope: tuned dev 0.928 / 0.935 / 0.893 either way, unseen dev 0.764 / 0.740 / 0.924 -> 0.765 /
# 0.741 / 0.924), with 14% fewer messages read again there and 16% on the unseen flows, where half were: a second
# reading takes some 50-60 ms of a message's time. Up to 0.8, one and eight changed; from 0.15, six and six.
BAND = (0.1, 0.85)
EXAMPLES = 6  # of a candidate's examples, read beside the message: as many as the pair encoder learned with
SEPARATOR = " | "  # between those examples


def pair_text(message: str, examples: list[str]) -> str:
    """What the pair encoder reads: the message, [SEP], the intent's first ``EXAMPLES`` examples."""
    return f"{message} [SEP] {SEPARATOR.join(examples[:EXAMPLES])}"


def unsure(probability: float) -> bool:
    """Whether a judge's probability calls for the second reading."""
    return BAND[0] <= probability <= BAND[1]


@functools.cache
def weights() -> tuple[np.ndarray, float] | None:
    """(the weights of the judge's log-odds, the pair score and its lead; the bias), or None without the file."""
    if not FILE.exists():
        return None
    data = json.loads(FILE.read_text())
    return np.array(data["weights"], dtype=np.float64), float(data["bias"])


def leads(scores: list[float]) -> list[float]:
    """How far each candidate's pair score leads the best other one's (1.0 for a lone candidate)."""
    return [s - max((o for j, o in enumerate(scores) if j != i), default=s - 1.0) for i, s in enumerate(scores)]


def measures(judged: float, score: float, lead: float) -> np.ndarray:
    """What the logistic weighs: the judge's log-odds (``judged`` as sure as the matcher lets it be), the pair
    ``score`` and its ``lead``."""
    sure = float(np.clip(judged, 1e-4, 1 - 1e-4))
    return np.array([np.log(sure / (1 - sure)), score, lead])


def probability(judged: float, score: float, lead: float, fitted: tuple[np.ndarray, float] | None = None) -> float:
    """A candidate's probability of being right from the judge's (``judged``), its pair ``score`` and ``lead``,
    with the shipped ``weights`` (or ``fitted`` ones: the script that fits them)."""
    fitted = fitted or weights()
    if fitted is None:
        return judged
    return float(1 / (1 + np.exp(-float(measures(judged, score, lead) @ fitted[0] + fitted[1]))))
