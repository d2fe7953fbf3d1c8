"""Identifiers and timestamps, in one place."""

import datetime as dt
import secrets
import uuid


def new_id() -> str:
    return str(uuid.uuid4())


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
