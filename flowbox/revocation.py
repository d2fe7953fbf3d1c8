"""Open streams (SSE responses, WebSockets) by the credential that opened them, so that revoking a
credential closes its streams too, not only its next request.

Credentials are API keys (an OAuth access token acts for its key and dies with it) and messaging
projects' API tokens (rotating one retires the old). A revocation made in this process closes the
streams at once; one made by another process (``flowbox keys revoke``, ``flowbox messaging
projects rotate-token``) is noticed by a sweep of the database, every ``SWEEP_SECONDS`` while any
stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable, Iterator

from .services import Services

log = logging.getLogger("flowbox")

SWEEP_SECONDS = 0.5
_CHUNK = 500  # ids per query: SQLite's limit on bound parameters is far above it

Credential = tuple[str, str]  # ("key", api key id) | ("project", token hash)
REVOKED_MESSAGE = "The credential this stream was opened with has been revoked"


def api_key(key_id: str | None) -> Credential | None:
    return ("key", key_id) if key_id else None


def project_token(token_hash: str | None) -> Credential | None:
    return ("project", token_hash) if token_hash else None


class OpenStreams:
    def __init__(self) -> None:
        self._open: dict[Credential, set[Callable[[], None]]] = {}

    def __len__(self) -> int:
        return sum(len(closers) for closers in self._open.values())

    @contextlib.contextmanager
    def hold(self, credential: Credential | None, close: Callable[[], None]) -> Iterator[None]:
        """While inside, ``close()`` is called (once, on the event loop) if ``credential`` is revoked.
        ``close`` must not block: it asks the stream to end (puts a marker in its queue, schedules a close)."""
        if credential is None:  # opened without a credential (an anonymous web-SDK socket)
            yield
            return
        closers = self._open.setdefault(credential, set())
        closers.add(close)
        try:
            yield
        finally:
            closers.discard(close)
            if not closers and self._open.get(credential) is closers:
                del self._open[credential]

    def holder(self, credential: Credential | None) -> Callable[[Callable[[], None]], contextlib.AbstractContextManager]:
        """``hold`` with the credential bound (what ``sse.until_revoked`` takes)."""
        return lambda close: self.hold(credential, close)

    def revoke(self, credential: Credential | None) -> int:
        """Closes every stream opened with ``credential``; returns how many."""
        closers = self._open.pop(credential, set()) if credential else set()
        for close in closers:
            try:
                close()
            except Exception:  # one stream failing to close must not keep the others open
                log.exception("closing a stream of a revoked credential failed")
        return len(closers)

    async def sweep(self, store) -> None:
        """Closes the streams whose credential is no longer valid in the database."""
        for kind, sql in (
            ("key", "SELECT id FROM api_keys WHERE revoked_at IS NULL AND id IN ({})"),
            ("project", "SELECT token_hash FROM msg_projects WHERE token_hash IN ({})"),
        ):
            held = [value for k, value in list(self._open) if k == kind]
            for start in range(0, len(held), _CHUNK):
                chunk = held[start:start + _CHUNK]
                rows = await store.fetchall(sql.format(", ".join("?" * len(chunk))), chunk)
                valid = {row[0] for row in rows}
                for value in chunk:
                    if value not in valid:
                        self.revoke((kind, value))


def streams_of(services: Services) -> OpenStreams:
    return services.state(OpenStreams)


async def _sweep_forever(services: Services) -> None:
    streams = streams_of(services)
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        if streams:
            try:
                await streams.sweep(services.store)
            except Exception:  # a busy or closing database: try again at the next sweep
                log.warning("checking open streams' credentials failed", exc_info=True)


async def start_sweeper(services: Services) -> None:
    services.spawn(_sweep_forever(services), name="stream-revocations")
