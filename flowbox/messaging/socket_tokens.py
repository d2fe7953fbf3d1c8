"""Single-use socket URLs. ``GET /socket.info`` issues a random token holding what the connection
may do (a ``Grant``); the websocket at ``/ws/<token>`` takes it once, within its lifetime
(``messaging_socket_token_ttl_ms``, documented as 60 seconds). Tokens live in memory only: one
that outlives a restart would be past its minute anyway.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..services import Services

MAX_OUTSTANDING = 100_000  # unused tokens kept at most; past it the oldest go first


@dataclass
class Grant:
    project_id: str
    dialect: str                   # "document" (the published protocol) or "sdk" (the flowai-js client)
    thread_id: str | None = None   # followed from the start (the SDK's threadId, or ?threadId=)
    secret_hash: str | None = None  # the SDK client's secret, proven or just issued (SHA-256)
    agent: bool = False            # opened with the project's API token: any thread, may speak as moderator
    token_hash: str | None = None  # agent sockets: that token's hash (rotating the token closes the socket)
    expires: float = 0.0


class Tokens:
    def __init__(self) -> None:
        self._grants: OrderedDict[str, Grant] = OrderedDict()

    def issue(self, grant: Grant, ttl_ms: int) -> str:
        now = time.monotonic()
        while self._grants:  # drop expired ones from the old end
            token, first = next(iter(self._grants.items()))
            if first.expires > now and len(self._grants) < MAX_OUTSTANDING:
                break
            del self._grants[token]
        token = secrets.token_urlsafe(24)
        grant.expires = now + ttl_ms / 1000
        self._grants[token] = grant
        return token

    def take(self, token: str) -> Grant | None:
        """The grant, once: a second use, an unknown or an expired token gives None."""
        grant = self._grants.pop(token, None)
        if grant is None or grant.expires <= time.monotonic():
            return None
        return grant


def tokens_of(services: Services) -> Tokens:
    return services.state(Tokens)
