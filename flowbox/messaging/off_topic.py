"""Requests that a customer-service flow usually does not serve: what people ask a business's bot
that belongs to some other business or to a general assistant.

A flow's examples say what it does, not what it does not; a learned model over them gives a
near-topic message ("cancel my car insurance" to a phone company's "cancel my contract") to
the nearest intent, often with confidence. These phrasings stand for the rest of the world.

Per flow version, the phrasings the flow itself serves are dropped (``uncovered``: close to one of
its examples; a bank keeps no "what's my bank balance"). A message whose nearest remaining phrasing
is clearly closer than the flow's nearest example is out of scope (``decides``), however confident
the learned model is: ``matcher.IntentIndex`` asks at the top level, where the alternative is the
UNKNOWN step. Only with the built-in embedding model (``common_phrasings.MODEL``): the bars below are
cosines of its vectors mapped into ``intent_space``, and other models put cosines on other scales.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = Path(__file__).with_name("off_topic.tsv")


def _load() -> dict[str, tuple[str, ...]]:
    """{topic: phrasings} from ``FILE`` (topic<TAB>message lines; ``#`` starts a comment)."""
    out: dict[str, list[str]] = {}
    for line in FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            topic, text = line.split("\t")
            out.setdefault(topic, []).append(text)
    return {topic: tuple(texts) for topic, texts in out.items()}


# About 2,000 phrasings of 144 kinds of business and of a general assistant. The first 485 were
# written with the matcher; the rest (shops, trades, travel, leisure, finance, public services and
# a general assistant's requests, 16 or so for each of 100 kinds) were written apart from it and
# from the evaluation's flows. The last eight, refer-a-friend schemes, were added once the tuned flows' dev misses
# showed such questions matched to the intent that asks for a person ("how do i refer a friend"): tuned dev out of
# scope 0.876 -> 0.880 (two more right, none lost), the unseen flows' dev half unchanged (0.767 / 0.744 / 0.917).
PHRASINGS = _load()
TEXTS = [text for topic in PHRASINGS for text in PHRASINGS[topic]]

# Chosen on the dev half of scripts/eval/intents.py: a phrasing at least COVERED close to one of a
# flow's examples is the flow's own business (0.55-0.80 did the same on the first four tuned flows;
# below, a flow keeps too few); a message is out of scope when its nearest phrasing is at least BAR
# close and MARGIN closer than its nearest example. With the 485 first phrasings 0.2 was chosen (from
# 0.10 down, messages the flow serves are rejected: "app keeps crashing" to a bank); with all of them,
# on the twelve tuned flows, 0.15 and 0.2 are as accurate overall (0.907), 0.15 turning away more
# out-of-scope messages (0.893 vs 0.876) and 0.25 fewer (0.854). Measured again with the judge (acceptance.py) on
# the dev halves of the tuned flows and of the 48 unseen flows (scripts/eval/acceptance_sweep.py, all / out of
# scope, the judge's bar at 0.3): MARGIN 0.15, tuned 0.935 / 0.910 and unseen 0.750 / 0.918; 0.2, 0.935 / 0.901 and
# 0.758 / 0.908; no rule, tuned 0.935 / 0.884 (with the bar at 0.4 and MARGIN 0.2, 0.934 / 0.910 and 0.750 / 0.921:
# the same). Nor does a sure judge outweigh the rule: letting a probability of 0.8 or more stand
# moved neither half by more than 0.004 and lets a bike shop rent out a van ("can I hire a van": the judge 0.97).
# Measured again with the encoder taught by mpnet, the judge sure from 0.55, beside its floor (acceptance.FLOOR; all /
# in scope / out of scope, tuned dev | unseen dev):
#   floor 0.3   margin 0.15  0.942 / 0.948 / 0.914 | 0.771 / 0.749 / 0.912
#               margin 0.2   0.943 / 0.950 / 0.910 | 0.778 / 0.759 / 0.902
#               margin 0.25  0.943 / 0.953 / 0.901 | 0.781 / 0.764 / 0.895
#   floor 0.35  margin 0.15  0.942 / 0.948 / 0.914 | 0.770 / 0.748 / 0.915
#               margin 0.2   0.943 / 0.950 / 0.910 | 0.777 / 0.757 / 0.905
#               margin 0.25  0.943 / 0.953 / 0.901 | 0.780 / 0.762 / 0.898
#   floor 0.4   margin 0.1   -                     | 0.742 / 0.715 / 0.921
#               margin 0.15  0.943 / 0.948 / 0.918 | 0.765 / 0.741 / 0.918
#               margin 0.2   0.943 / 0.950 / 0.914 | 0.770 / 0.749 / 0.908
#               margin 0.25  0.944 / 0.953 / 0.906 | 0.773 / 0.753 / 0.902
#   floor 0.45  margin 0.15  0.939 / 0.942 / 0.923 | 0.746 / 0.718 / 0.931
#               margin 0.2   0.940 / 0.944 / 0.918 | 0.751 / 0.724 / 0.925
# The tuned flows hardly move; the unseen flows gain overall with every step that accepts more, as they lose out of
# scope (0.918 -> 0.895), with no plateau for the bar's rule to stop on. Kept at 0.15 with the floor at 0.4: the
# goal asks 0.90 out of scope on flows never seen, and these dev halves leave 0.018 above it. Nor did
# treating a whole kind of business as the flow's own when it covers a share of that kind's phrasings help: a
# quarter, tuned 0.943 / 0.949 / 0.914, unseen 0.766 / 0.743 / 0.917; a tenth, 0.943 / 0.950 / 0.910 and 0.768 /
# 0.746 / 0.914 (each against 0.943 / 0.948 / 0.918 and 0.765 / 0.741 / 0.918 without).
# Measured again once the judge stopped extrapolating on a flow's size (acceptance.Z_LIMIT; its bar 0.5; all / in scope /
# out of scope, then the share answered wrongly):
#   margin 0.15  tuned dev 0.921 / 0.925 / 0.904, 0.041 | unseen dev 0.760 / 0.734 / 0.931, 0.110
#   margin 0.2   tuned dev 0.922 / 0.926 / 0.901, 0.041 | unseen dev 0.765 / 0.740 / 0.924, 0.113
#   margin 0.25  tuned dev 0.922 / 0.927 / 0.895, 0.043 | unseen dev 0.766 / 0.743 / 0.919, 0.114
# Of the unseen dev messages the rule turns away at 0.15, the judge alone would match 59 in scope to the right intent
# and 10 out of scope: a neighbouring business's phrasing says what the flow serves in other words ("my child is sick
# and won't be in today" to a nursery). Neither the judge's probability, the margin nor the phrasing's cosine told
# those apart. The bar's rule would take 0.2, but at 0.2 a bike shop rents out cars ("can I rent a car": the rule's
# own case, in tests/messaging/test_matcher.py) for 0.005 on the unseen flows and 0.001 on the tuned: kept at 0.15.
COVERED = 0.65
BAR = 0.5
MARGIN = 0.15


def uncovered(phrasing_vectors: np.ndarray, example_vectors: np.ndarray) -> np.ndarray:
    """The phrasings (indexes into ``TEXTS``, whose unit embeddings are ``phrasing_vectors``) that
    no example of the flow (``example_vectors``) comes ``COVERED`` close to."""
    if not len(example_vectors):
        return np.arange(len(phrasing_vectors))
    nearest = np.max(phrasing_vectors @ example_vectors.T, axis=1)
    return np.flatnonzero(nearest < COVERED)


def decides(similarity: np.ndarray, nearest_example: float) -> int | None:
    """Which phrasing (an index into ``similarity``, a message's cosines to a flow's uncovered
    phrasings) makes the message out of scope, if one does: the nearest, when it is at least ``BAR``
    close and ``MARGIN`` closer than the message's nearest example (``nearest_example``)."""
    if not len(similarity):
        return None
    closest = int(np.argmax(similarity))
    value = float(similarity[closest])
    return closest if value >= BAR and value - nearest_example >= MARGIN else None
