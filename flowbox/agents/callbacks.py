"""Async chat results posted to ``callback_url`` through the outbox.

The body is the chat endpoint's own response (``{"statusCode": 200, "body": {...}}``, or its
documented error shape), so a client handles a callback exactly as it would a synchronous reply.
Requests also carry ``X-Flowbox-Run-Id``. ``run_callbacks`` records which runs have their callback
queued: a finished run without one (a crash between the run's last write and the enqueue) is
queued at the next startup, and never twice.
"""

from __future__ import annotations

import json
import logging
import time

from sqlite_utils.migrations import Migrations

from .. import netguard, outbox
from ..config import Config
from ..db import Tx
from ..ids import iso
from ..services import Services
from ..validation import invalid

log = logging.getLogger("flowbox.callbacks")

migrations = Migrations("flowbox.callbacks")
KIND = "agent.callback"


@migrations()
def m001_run_callbacks(db):
    db.executescript(
        """
        CREATE TABLE run_callbacks (
            run_id TEXT PRIMARY KEY,
            delivery_id TEXT,          -- NULL: the URL was refused, nothing was queued
            created_at TEXT NOT NULL
        );
        """
    )


def check_callback_url(config: Config, url: str) -> None:
    """At request time: the static guard (scheme, literal and well-known addresses). Resolved
    addresses are checked again when the callback is delivered."""
    try:
        netguard.check_url(url, allow_private=bool(config.allow_private_outbound))
    except netguard.URLRefused as exc:
        raise invalid(f"\"callback_url\" is not allowed: {exc}.") from None


async def queue_callback(tx: Tx, run: dict, body: dict) -> str | None:
    """Queues the run's callback once; returns the delivery id (None if queued before or refused)."""
    if await tx.fetchone("SELECT 1 FROM run_callbacks WHERE run_id = ?", [run["id"]]):
        return None
    try:
        delivery_id: str | None = await outbox.enqueue(
            tx, org_id=run["org_id"], url=run["callback_url"], payload=body, kind=KIND, headers={"X-Flowbox-Run-Id": run["id"]}
        )
    except ValueError as exc:
        log.warning("callback for run %s not queued: %s", run["id"], exc)
        delivery_id = None
    await tx.execute("INSERT INTO run_callbacks (run_id, delivery_id, created_at) VALUES (?, ?, ?)", [run["id"], delivery_id, iso()])
    return delivery_id


async def on_run_finished(services: Services, run: dict, body: dict) -> None:
    """Once an async run has finished: its callback, if it asked for one."""
    if not run.get("callback_url"):
        return
    async with services.store.write() as tx:
        await queue_callback(tx, run, body)
    outbox.wake(services)


async def queue_missed(services: Services) -> None:
    """At startup: recently finished runs whose callback was never queued."""
    since = iso(outbox.utc(time.time() - services.config.outbox_max_age_seconds))
    rows = await services.store.fetchall(
        "SELECT * FROM runs r WHERE r.callback_url IS NOT NULL AND r.status IN ('completed', 'error') "
        "AND r.response IS NOT NULL AND r.finished_at >= ? AND NOT EXISTS (SELECT 1 FROM run_callbacks c WHERE c.run_id = r.id)",
        [since],
    )
    if not rows:
        return
    async with services.store.write() as tx:
        for row in rows:
            await queue_callback(tx, dict(row), json.loads(row["response"]))
    log.info("queued %d callbacks missed before the last stop", len(rows))
    outbox.wake(services)
