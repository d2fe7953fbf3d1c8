"""Plain numbers flowbox keeps about its own work, where the work happens: request timings, waits
for the model, generation speed. They cost an addition or two on the hot path and no locks (all
are updated on the event loop); ``flowbox/metrics.py`` reads them when scraped and names them."""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Upper bounds, in seconds, of the histogram buckets every duration is counted in.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Timings:
    """Durations counted into ``BUCKETS`` (the last count: longer than all), and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1  # a bucket holds durations up to its bound, inclusive
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class HttpStats:
    """What the request middleware counts: each (method, route template, status)'s durations, and the
    WebSockets open now by route template."""
    requests: dict[tuple[str, str, int], Timings] = field(default_factory=dict)
    open_sockets: Counter[str] = field(default_factory=Counter)


@dataclass
class GenerationStats:
    """One chat backend's generations (``models.generate`` records them): how long the first piece of
    text took (queue and prompt included), and the tokens after it and the time they took."""
    first_token: Timings = field(default_factory=Timings)
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    running: int = 0


_GENERATIONS: weakref.WeakKeyDictionary[Any, GenerationStats] = weakref.WeakKeyDictionary()


def generation_stats(backend: Any) -> GenerationStats:
    """The stats of this backend object (each app loads its own backends, so apps never share them)."""
    try:
        stats = _GENERATIONS.get(backend)
    except TypeError:  # an object that cannot be a weak key (unhashable): timed, but not kept
        return GenerationStats()
    if stats is None:
        stats = _GENERATIONS[backend] = GenerationStats()
    return stats
