"""Uncertainty by redrawing groups: an eval's questions come in groups (a flow's messages, a corpus's questions)
that share their examples or entries and their writer, so they are not independent, and the spread between groups
is most of the uncertainty. ``intents.py`` and ``knowledge.py`` redraw their groups with this."""

from __future__ import annotations

import numpy as np

DRAWS = 2000


def redrawn(per_group: list[tuple[float, ...]], draws: int = DRAWS) -> np.ndarray:
    """Each group's counts summed over the groups drawn again with replacement, ``draws`` times (the same
    draws every run): an array of ``draws`` rows of as many sums as a group has counts."""
    counts = np.array(per_group, dtype=float)
    return counts[np.random.default_rng(0).integers(0, len(counts), (draws, len(counts)))].sum(axis=1)


def interval(numerators: np.ndarray, denominators: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentile of the redrawn ratios."""
    low, high = np.percentile(numerators / np.maximum(denominators, 1), [2.5, 97.5])
    return float(low), float(high)
