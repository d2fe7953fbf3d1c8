"""Several OpenAI-compatible servers behind one remote model: which one a request goes to, and
which ones are out.

A request goes to the least busy server (fewest requests in flight; on a tie, the one picked
least recently, so an idle pool takes turns). A server that fails to answer is taken out and
probed (``GET <base_url>/models``, the cheapest call every such server has) with a growing delay
until it answers, then it is back in. A server that is out is still tried when no other is left,
so a pool of one behaves as a single server does: each request tries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

log = logging.getLogger("flowbox.models")

# A probe's delay after a failure starts short (a restart is often quick) and doubles to a cap that
# keeps a server that is back from waiting long; a probe is one small GET.
PROBE_FIRST_S = 0.5
PROBE_MAX_S = 2.0


@dataclass
class Backend:
    url: str
    in_flight: int = 0  # requests sent to it that have not ended
    answering: int = 0  # of those, the ones whose answer began (streaming now)
    picked: int = 0  # when it was last picked (the pool's pick counter)
    served: int = 0  # requests it answered (an answer started; its stream may still break later)
    failures: int = 0  # requests it failed
    down_since: float | None = None  # monotonic time it was taken out; None while it is in

    @property
    def up(self) -> bool:
        return self.down_since is None


@dataclass
class Lease:
    """One request on a backend, from the pool's lease() until it ends."""

    backend: Backend
    answered: bool = False


class Pool:
    def __init__(self, name: str, urls: tuple[str, ...] | list[str], probe: Callable[[str], Awaitable[bool]]):
        self.name = name
        self.backends = [Backend(url) for url in urls]
        self._probe = probe  # url -> whether the server answers
        self._picks = 0
        self._probes: dict[str, asyncio.Task] = {}

    def pick(self, tried: set[str] = frozenset()) -> Backend | None:
        """The next backend to send a request to, of those not ``tried`` yet for it: the least busy
        one that is in, else one that is out; None when all were tried."""
        left = [b for b in self.backends if b.url not in tried]
        if not left:
            return None
        chosen = min(left, key=lambda b: (not b.up, b.in_flight, b.picked))
        self._picks += 1
        chosen.picked = self._picks
        return chosen

    @contextlib.contextmanager
    def lease(self, backend: Backend) -> Iterator[Lease]:
        """Counts a request in flight on ``backend`` for as long as it runs."""
        lease = Lease(backend)
        backend.in_flight += 1
        try:
            yield lease
        finally:
            backend.in_flight -= 1
            if lease.answered:
                backend.answering -= 1

    def answered(self, lease: Lease) -> None:
        """The server began its answer (it is alive, whatever happens to the stream later)."""
        backend = lease.backend
        lease.answered = True
        backend.answering += 1
        backend.served += 1
        if not backend.up:  # tried as the last one left, and it answered
            self._back_in(backend)

    def failed(self, backend: Backend, reason: str) -> None:
        """Takes ``backend`` out and starts probing it (called on the event loop)."""
        backend.failures += 1
        if backend.up:
            backend.down_since = time.monotonic()
            log.warning("remote model %s: %s taken out of the pool (%s)", self.name, backend.url, reason)
        if backend.url not in self._probes:
            self._probes[backend.url] = asyncio.get_running_loop().create_task(self._probe_until_up(backend))

    async def _probe_until_up(self, backend: Backend) -> None:
        delay = PROBE_FIRST_S
        try:
            while not backend.up:
                await asyncio.sleep(delay)
                if await self._probe(backend.url):
                    self._back_in(backend)
                delay = min(delay * 2, PROBE_MAX_S)
        finally:
            self._probes.pop(backend.url, None)

    def _back_in(self, backend: Backend) -> None:
        if not backend.up:
            log.info("remote model %s: %s back in the pool after %.1fs", self.name, backend.url,
                     time.monotonic() - backend.down_since)
            backend.down_since = None

    def snapshot(self) -> list[dict[str, Any]]:
        """Each backend's state, for status and tests."""
        return [{"url": b.url, "up": b.up, "in_flight": b.in_flight, "answering": b.answering, "served": b.served,
                 "failures": b.failures}
                for b in self.backends]

    async def aclose(self) -> None:
        tasks = list(self._probes.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def pool_servers(backend: Any) -> list[dict[str, Any]]:
    """A remote model's servers and their state (``Pool.snapshot``); none for a local model."""
    pool = getattr(backend, "pool", None)
    return pool.snapshot() if isinstance(pool, Pool) else []
