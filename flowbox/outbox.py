"""The durable outbox: HTTP deliveries (callbacks, webhooks) that survive restarts and crashes.

A delivery is a row written by ``enqueue`` inside the caller's own write transaction, so it commits
(or not) with the data that caused it; nothing is sent before it is stored. One worker per server
(``OutboxWorker``, started with the app) POSTs due deliveries, any 2xx acknowledges, anything else is retried
with exponential backoff and jitter until the delivery's age limit, then it is kept as a dead letter.
Delivery is at least once: a crash between the receiver's 2xx and our record of it means one more
attempt, so every request carries ``X-Flowbox-Delivery`` for the receiver to de-duplicate on, and
``X-Flowbox-Signature: sha256=<hex HMAC-SHA256 of the body>`` keyed with the org's outbox secret
(or the delivery's own secret).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass

import httpcore
from sqlite_utils.migrations import Migrations

from . import __version__, netguard
from .config import Config
from .db import Batch, Store, Tx
from .ids import iso, new_id
from .services import Services

log = logging.getLogger("flowbox.outbox")

migrations = Migrations("flowbox.outbox")

JITTER = 0.2  # each retry delay is scaled by a random factor in [1 - JITTER, 1 + JITTER]
PURGE_EVERY_SECONDS = 3600
POOL_SIZE = 8  # connections per HTTP connection pool
RESERVED_HEADERS = {"content-type", "content-length", "host", "user-agent", "x-flowbox-delivery", "x-flowbox-signature"}


@migrations()
def m001_outbox(db):
    db.executescript(
        """
        CREATE TABLE outbox (
            id TEXT PRIMARY KEY,
            org_id TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- what the delivery is, e.g. agent.callback
            url TEXT NOT NULL,
            body TEXT NOT NULL,                 -- the exact JSON text sent and signed
            headers TEXT NOT NULL DEFAULT '{}', -- extra request headers (JSON object)
            secret TEXT,                        -- signs instead of the org's secret when set
            max_age_seconds REAL,               -- NULL: the outbox_max_age_seconds setting
            status TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, dead
            attempts INTEGER NOT NULL DEFAULT 0,     -- attempts since window_start
            window_start REAL NOT NULL,         -- unix time retries are counted from (enqueue or manual retry)
            next_attempt_at REAL NOT NULL,      -- unix time
            last_status INTEGER,                -- the receiver's last HTTP status
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            delivered_at TEXT
        );
        CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = 'pending';
        CREATE INDEX outbox_status ON outbox(status, created_at);
        CREATE TABLE outbox_secrets (
            org_id TEXT PRIMARY KEY,
            secret TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        """
    )


# -- the library --------------------------------------------------------------------------------

def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def enqueue(tx: Tx | Batch, *, org_id: str, url: str, payload: dict, kind: str, secret: str | None = None,
                  headers: dict | None = None, max_age_seconds: float | None = None) -> str:
    """Stores one delivery in the caller's write transaction and returns its id. Call the worker's
    ``wake()`` after the commit for immediate delivery (it also polls). Raises ValueError for a URL
    that can never be delivered to (not http/https, metadata or link-local); private addresses are
    checked at delivery time, against the server's config."""
    netguard.check_url(url, allow_private=True)
    extra = {str(k): str(v) for k, v in (headers or {}).items()}
    if any(k.lower() in RESERVED_HEADERS for k in extra):
        raise ValueError(f"headers may not set any of {sorted(RESERVED_HEADERS)}")
    if max_age_seconds is not None and max_age_seconds <= 0:
        raise ValueError("max_age_seconds must be positive")
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if secret is None:
        await tx.execute("INSERT OR IGNORE INTO outbox_secrets (org_id, secret, created_at) VALUES (?, ?, ?)", [org_id, new_secret(), iso()])
    delivery_id = new_id()
    now, stamp = time.time(), iso()
    await tx.execute(
        "INSERT INTO outbox (id, org_id, kind, url, body, headers, secret, max_age_seconds, window_start, next_attempt_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [delivery_id, org_id, kind, url.strip(), body, json.dumps(extra), secret, max_age_seconds, now, now, stamp, stamp],
    )
    return delivery_id


def wake(services: Services) -> None:
    """Nudges the worker, if this process runs one (the CLI does not; the server polls)."""
    worker = services.state(OutboxWorker).running
    if worker is not None:
        worker.wake()


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempt``-th failed attempt: base, 2*base, 4*base, ... capped,
    each scaled by a random factor so receivers that come back are not hit by every sender at once."""
    delay = min(base * 2 ** (attempt - 1), cap)
    return delay * (rng or random).uniform(1 - JITTER, 1 + JITTER)


async def org_secret(store: Store, org_id: str, rotate: bool = False) -> str:
    """The org's signing secret (created if missing; replaced when ``rotate``)."""
    async with store.write() as tx:
        if rotate:
            await tx.execute("DELETE FROM outbox_secrets WHERE org_id = ?", [org_id])
        await tx.execute("INSERT OR IGNORE INTO outbox_secrets (org_id, secret, created_at) VALUES (?, ?, ?)", [org_id, new_secret(), iso()])
        return (await tx.fetchone("SELECT secret FROM outbox_secrets WHERE org_id = ?", [org_id]))["secret"]


LIST_COLUMNS = "id, org_id, kind, url, status, attempts, last_status, last_error, created_at, updated_at, delivered_at, next_attempt_at"


def _public(row) -> dict:
    record = dict(row)
    if "next_attempt_at" in record:
        at = record.pop("next_attempt_at")
        record["next_attempt_at"] = iso(utc(at)) if record["status"] == "pending" else None
    return record


def utc(unix: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.timezone.utc)


async def list_deliveries(store: Store, status: str | None = None, org_id: str | None = None,
                          kind: str | None = None, limit: int = 100) -> list[dict]:
    where, params = [], []
    for column, value in (("status", status), ("org_id", org_id), ("kind", kind)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    sql = f"SELECT {LIST_COLUMNS} FROM outbox" + (" WHERE " + " AND ".join(where) if where else "")
    rows = await store.fetchall(sql + " ORDER BY created_at DESC, id LIMIT ?", [*params, limit])
    return [_public(r) for r in rows]


async def get_delivery(store: Store, delivery_id: str) -> dict | None:
    row = await store.fetchone(f"SELECT {LIST_COLUMNS}, body, headers FROM outbox WHERE id = ?", [delivery_id])
    return _public(row) if row else None


async def retry(store: Store, ids: list[str] | None = None, all_dead: bool = False) -> list[str]:
    """Puts dead (or still pending) deliveries back to be attempted now, with a fresh age window.
    Returns the ids it changed."""
    now = time.time()
    async with store.write() as tx:
        if all_dead:
            rows = await tx.fetchall("SELECT id FROM outbox WHERE status = 'dead'")
        else:
            rows = await tx.fetchall(
                "SELECT id FROM outbox WHERE status IN ('dead', 'pending') AND id IN (SELECT value FROM json_each(?))", [json.dumps(ids or [])]
            )
        changed = [r["id"] for r in rows]
        await tx.executemany(
            "UPDATE outbox SET status = 'pending', attempts = 0, window_start = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
            [(now, now, iso(), i) for i in changed],
        )
    return changed


async def counts(store: Store) -> dict[str, int]:
    rows = await store.fetchall("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
    return {"pending": 0, "delivered": 0, "dead": 0, **{r["status"]: r["n"] for r in rows}}


# -- the worker -----------------------------------------------------------------------------------

class Outbox:
    """Delivers due rows, at most ``outbox_concurrency`` at once. State lives only in the table:
    in memory are just the ids being attempted right now, so a kill loses nothing."""

    def __init__(self, store: Store, config: Config):
        self.store = store
        self.config = config
        self.allow_private = bool(config.allow_private_outbound)
        self.concurrency = max(1, config.outbox_concurrency)
        self.timeout = config.outbox_timeout_ms / 1000
        self.poll = max(0.01, config.outbox_poll_ms / 1000)
        self.rng = random.Random()
        # httpcore's pool does work per request for every connection it holds, so many small
        # pools (taken in turn) beat one big one at high concurrency
        self._pools = [netguard.client(self.allow_private, POOL_SIZE) for _ in range(-(-self.concurrency // POOL_SIZE))]
        self._turn = 0
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._results: list[tuple] = []
        self._flush_lock = asyncio.Lock()
        self._attempts: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._last_purge = 0.0
        self.outcomes: Counter[str] = Counter()  # attempts by outcome: delivered, retry, dead (the metrics read it)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())
        self._task.set_name("outbox")

    async def stop(self) -> None:
        """Stops attempting; deliveries cut off mid-flight stay pending and go out after restart."""
        tasks = [t for t in (self._task, *self._attempts) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self._flush()
        for pool in self._pools:
            await pool.aclose()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self._dispatch_due()
                await self._maybe_purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox: dispatch failed; retrying")
                delay = self.poll
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def _dispatch_due(self) -> float:
        """Starts attempts for due deliveries; returns how long to sleep before looking again."""
        now = time.time()
        free = self.concurrency - len(self._inflight)
        if free > 0:
            # Both reads walk the partial index of pending rows, skipping at most those in flight: small
            # enough for the loop's own connection (a reader thread's hop costs more than the read, twice a delivery).
            rows = await self.store.lookup(
                "SELECT o.*, COALESCE(o.secret, s.secret) AS signing_secret FROM outbox o "
                "LEFT JOIN outbox_secrets s ON s.org_id = o.org_id "
                "WHERE o.status = 'pending' AND o.next_attempt_at <= ? AND o.id NOT IN (SELECT value FROM json_each(?)) "
                "ORDER BY o.next_attempt_at LIMIT ?",
                [now, json.dumps(sorted(self._inflight)), free],
            )
            for row in rows:
                self._inflight.add(row["id"])
                task = asyncio.ensure_future(self._attempt(dict(row)))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
        if len(self._inflight) >= self.concurrency:
            return self.poll  # a finishing attempt wakes the loop
        found = await self.store.lookup(
            "SELECT MIN(next_attempt_at) AS at FROM outbox WHERE status = 'pending' AND id NOT IN (SELECT value FROM json_each(?))",
            [json.dumps(sorted(self._inflight))],
        )
        row = found[0] if found else None
        if row is None or row["at"] is None:
            return self.poll
        return min(self.poll, max(0.0, row["at"] - time.time()))

    async def _attempt(self, row: dict) -> None:
        body = row["body"].encode()
        headers = {
            **json.loads(row["headers"]),
            "Content-Type": "application/json",
            "User-Agent": f"flowbox/{__version__}",
            "X-Flowbox-Delivery": row["id"],
            "X-Flowbox-Signature": sign(row["signing_secret"] or "", body),
        }
        status, error, refused, retry_after = None, None, False, None
        try:
            self._turn += 1
            pool = self._pools[self._turn % len(self._pools)]
            reply = await netguard.post(pool, row["url"], body, headers, allow_private=self.allow_private, timeout=self.timeout)
            status = reply.status
            if not 200 <= status < 300:
                error = f"receiver answered {status}"
                retry_after = _retry_after(reply.headers.get("retry-after"))
        except netguard.URLRefused as exc:
            error, refused = f"refused: {exc}", True
        except (asyncio.TimeoutError, httpcore.TimeoutException):
            error = f"timed out after {self.timeout:g}s"
        except asyncio.CancelledError:
            self._inflight.discard(row["id"])  # stays pending; attempted again after restart
            raise
        except Exception as exc:  # connection refused, reset, DNS failure, TLS: all worth retrying
            error = f"{type(exc).__name__}: {exc}".strip(": ")
        outcome = self._outcome(row, status, error, refused, retry_after)
        self.outcomes["retry" if outcome[0] == "pending" else outcome[0]] += 1
        self._results.append(outcome)
        await self._flush()

    def _outcome(self, row: dict, status: int | None, error: str | None, refused: bool, retry_after: float | None) -> tuple:
        """The row's next state: (status, attempts, next_attempt_at, last_status, last_error, delivered_at, updated_at, id)."""
        now, stamp = time.time(), iso()
        attempts = row["attempts"] + 1
        if error is None:
            return ("delivered", attempts, now, status, None, stamp, stamp, row["id"])
        deadline = row["window_start"] + (row["max_age_seconds"] or self.config.outbox_max_age_seconds)
        if refused or now >= deadline:
            log.warning("outbox: delivery %s to %s is dead after %d attempts: %s", row["id"], row["url"], attempts, error)
            return ("dead", attempts, now, status, error, None, stamp, row["id"])
        base = max(0.01, self.config.outbox_retry_base_ms / 1000)  # 0 would retry in a tight loop
        delay = retry_delay(attempts, base, max(base, self.config.outbox_retry_max_ms / 1000), self.rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.config.outbox_retry_max_ms / 1000))
        return ("pending", attempts, min(now + delay, deadline), status, error, None, stamp, row["id"])

    async def _flush(self) -> None:
        """Writes every finished attempt's outcome in one transaction (attempts finishing together
        share it), then lets the loop pick those ids again."""
        async with self._flush_lock:
            batch, self._results = self._results, []
            if not batch:
                return
            try:
                async with self.store.batch() as tx:  # a few rows commit on the loop, without three hops to the writer
                    await tx.executemany(
                        "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, last_status = ?, last_error = ?, "
                        "delivered_at = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                        batch,
                    )
            except Exception:
                log.exception("outbox: could not record %d outcomes; they will be attempted again", len(batch))
            finally:
                for outcome in batch:
                    self._inflight.discard(outcome[-1])
                self.wake()

    async def _maybe_purge(self) -> None:
        """Delivered rows are kept ``outbox_keep_days`` for inspection; dead letters until retried."""
        keep_days = self.config.outbox_keep_days
        if not keep_days or time.time() - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = time.time()
        cutoff = iso(utc(time.time() - keep_days * 86400))
        async with self.store.write() as tx:
            await tx.execute("DELETE FROM outbox WHERE status = 'delivered' AND delivered_at < ?", [cutoff])


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff is long enough


@dataclass
class OutboxWorker:
    """The server's worker while it runs (None before startup and after shutdown)."""
    running: Outbox | None = None


async def start_worker(services: Services) -> None:
    worker = services.state(OutboxWorker).running = Outbox(services.store, services.config)
    worker.start()


async def stop_worker(services: Services) -> None:
    state = services.state(OutboxWorker)
    worker, state.running = state.running, None
    if worker is not None:
        await worker.stop()
