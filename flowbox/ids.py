"""Identifiers and timestamps, in one place."""

import datetime as dt
import os
import secrets
import time
import uuid


def new_id() -> str:
    return str(uuid.uuid4())


def sortable_id() -> str:
    """A UUID laid out as version 7 (milliseconds since the epoch, then random bits): ids made later
    sort later, so a table keyed by them grows at the end of its index instead of dirtying a random
    page of it with each row (a stored message: fewer pages written per commit)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC 4122 variant
    return str(uuid.UUID(int=value))


def short_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(18).replace('-', 'x').replace('_', 'y')}"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and Z, as the specs show."""
    moment = moment or now()
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def from_iso(text: str) -> dt.datetime:
    """The moment an ``iso()`` string (or any ISO 8601 one with an offset) names."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
