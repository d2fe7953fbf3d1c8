"""The knowledge base's second reading: a cross-encoder reads the question beside the leading result.

The search (``index.hybrid_search``) compares a question's vector with each entry's, plus its words; whether the
leader answers the question (its ``relevance``) is judged from those measures. The answer encoder
(``models/answer_encoder.py``) reads the question and the leading entry together, word against word, and scores
how well the one answers the other. It learned from help centres that are not evaluation corpora, half of their
questions asked beside the articles nearest them without the one that answers them ("none" then the answer): what a
knowledge base that lacks the answer asks of it. Where the search is unsure (the leader's relevance within
``BAND``), the leader's relevance becomes a logistic of the search's (as log-odds) and that score (``WEIGHTS``),
fitted by ``scripts/knowledge_space/pairs.py measure`` on the dev half of ``scripts/eval/knowledge.py``'s tuned
corpora, whole and in knowledge bases of 5 and 20 entries drawn from them. Its bias keeps the most answerable
questions above ``index.RELEVANCE_THRESHOLD`` while every one of those three puts at least as many of its no-answer
questions below it as the search alone does: on dev 0.860, 0.931 and 0.814 of them (the search alone 0.794, 0.929,
0.813), with 0.841, 0.852 and 0.850 of the answerable ones above it (0.784, 0.773, 0.806). Reading only the leader:
reading the first three or five and ranking them again by their fused score plus a weighted answer score gained
0.015 MRR@10 on dev for three to five times the cost.
"""

from __future__ import annotations

import math

from .index import sigmoid

CHARS = 800  # of an entry's indexed text read beside the question: its name and a chunk as the encoder learned
QUESTION_CHARS = 400  # of the question: the two within MiniLM's 512 tokens
# Outside it the search's word stands. Fitted reading the leaders within (0.05, 0.95); narrowed after to the narrowest
# band that lost nothing on the tuned dev half (reading 52% of the evaluation's searches instead of 68%): below 0.1
# and above 0.9 a reading changed a few answers, as many of them wrongly as rightly.
BAND = (0.1, 0.9)
WEIGHTS = (0.261, 0.665, 0.335)  # bias, the search's relevance (log-odds), the answer score


def pair_text(question: str, indexed: str) -> str:
    """What the answer encoder reads: the question, [SEP], the entry as it is indexed (``index.indexed_text``:
    its name, then its text)."""
    return f"{question[:QUESTION_CHARS]} [SEP] {indexed[:CHARS]}"


def unsure(relevance: float) -> bool:
    """Whether a leader's relevance calls for the second reading."""
    return BAND[0] <= relevance <= BAND[1]


def log_odds(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def relevance(first: float, answer: float, weights: tuple[float, float, float] = WEIGHTS) -> float:
    """The leader's relevance after the second reading, from the search's (``first``) and the answer score."""
    return sigmoid(weights[0] + weights[1] * log_odds(first) + weights[2] * answer)
