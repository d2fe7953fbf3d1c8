"""Webhook events, queued through the durable outbox in the same transaction as the data they
report: ``{"type": ..., "verifyToken": ..., "payload": {...}}``.

``message.reply`` and ``message.delivered`` carry the same payloads as the socket frames
``message.received`` and ``message.delivered``; ``control.pause`` / ``control.resume`` /
``control.handover`` carry ``{threadId, ...}``. A 2xx acknowledges; anything else is retried
with exponential backoff for up to 4 hours, across restarts (the outbox's promise). Requests
are signed (``X-Flowbox-Signature``, HMAC-SHA256) with the verify token when one is set.
"""

from __future__ import annotations

from typing import Any

from .. import outbox
from ..db import Batch, Tx
from ..services import Services

MAX_AGE_SECONDS = 4 * 3600  # documented: "up to 4 hours with an exponential back off"


async def emit(tx: Tx | Batch, project: dict[str, Any], event_type: str, payload: dict[str, Any]) -> bool:
    """Queues one event for the project's webhook (inside ``tx``); False when none is set."""
    url = project.get("webhook_url")
    if not url:
        return False
    token = project.get("webhook_verify_token") or None
    body = {"type": event_type, "verifyToken": token or "", "payload": payload}
    await outbox.enqueue(tx, org_id=project["org_id"], url=url, payload=body, kind=f"messaging.{event_type}",
                         secret=token, max_age_seconds=MAX_AGE_SECONDS)
    return True


def wake(services: Services) -> None:
    """After the commit: deliver now rather than at the next poll."""
    outbox.wake(services)
