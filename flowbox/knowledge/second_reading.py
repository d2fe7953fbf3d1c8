"""The knowledge base's second reading: a cross-encoder reads the question beside the leading result.

The search (``index.hybrid_search``) compares a question's vector with each entry's, plus its words; whether the
leader answers the question (its ``relevance``) is judged from those measures. The answer encoder
(``models/answer_encoder.py``) reads the question and the leading entry together, word against word, and scores
how well the one answers the other. Where the search is unsure (the leader's relevance within ``BAND``), the
leader's relevance becomes a logistic of the search's (as log-odds) and that score (``WEIGHTS``), fitted on the
dev half of ``scripts/eval/knowledge.py``'s tuned corpora by ``scripts/knowledge_space/pairs.py measure``, its
bias placed so that ``index.RELEVANCE_THRESHOLD`` stays the "no answer" line (``NO_ANSWER_SHARE`` of dev's
no-answer questions below it). Reading only the leader: reading the first three or five and ranking them again
by their fused score plus a weighted answer score gained 0.015 MRR@10 on dev for three to five times the cost.
"""

from __future__ import annotations

import math

CHARS = 800  # of an entry's indexed text read beside the question: its name and a chunk as the encoder learned
BAND = (0.05, 0.95)  # outside it the search's word stands: the reading changed few of those on dev
WEIGHTS = (-1.028, 0.233, 0.456)  # bias, the search's relevance (log-odds), the answer score


def pair_text(question: str, indexed: str) -> str:
    """What the answer encoder reads: the question, [SEP], the entry as it is indexed (``index.indexed_text``:
    its name, then its text)."""
    return f"{question} [SEP] {indexed[:CHARS]}"


def unsure(relevance: float) -> bool:
    """Whether a leader's relevance calls for the second reading."""
    return BAND[0] <= relevance <= BAND[1]


def relevance(first: float, answer: float, weights: tuple[float, float, float] = WEIGHTS) -> float:
    """The leader's relevance after the second reading, from the search's (``first``) and the answer score."""
    p = min(max(first, 1e-6), 1 - 1e-6)
    z = weights[0] + weights[1] * math.log(p / (1 - p)) + weights[2] * answer
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
