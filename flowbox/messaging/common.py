"""What every messaging module shares: the REST error shape and the bot's originator."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..errors import Problem, error
from ..http import whole_number
from ..ids import from_iso, iso

# The engine speaks as this originator; the id keeps the value widgets written for the
# original service already know.
BOT_ORIGINATOR: dict[str, Any] = {"userId": "flowai|system", "name": "system", "role": "bot", "profile": {}}


def rest_error(status: int, message: str, **extra: Any) -> Problem:
    """A problem said in one sentence, as the messaging APIs say them (details such as a flow's
    ``errors`` go with it)."""
    return error(status, message, **extra)


def render(problem: Problem) -> tuple[int, Any]:
    """This surface's renderer (``flowbox/surfaces.py``): messaging errors mirror the documented
    ``{"status": "ok"}`` answers: ``{"status": "error", "message": ...}`` (plus any details)."""
    return problem.status, {"status": "error", "message": problem.text, **problem.extra}


def int_param(raw: str | None, name: str, default: int | None, minimum: int, maximum: int | None = None) -> int | None:
    """A whole-number query parameter (ASCII digits only), or ``default`` when absent or empty."""
    if raw is None or raw == "":
        return default
    value = whole_number(raw, minimum, maximum if maximum is not None else 1 << 62)
    if value is None:
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise rest_error(400, f"{name} must be a whole number of at least {minimum}{upper}")
    return value


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def iso_param(raw: str, name: str) -> str:
    """A moment given in ISO 8601 ("2026-12-01", "2026-12-01T09:30:00Z"; UTC unless it names an offset), as
    ``iso`` writes it, so that it compares with stored times as text."""
    try:
        moment = from_iso(raw)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
        return iso(max(moment, EPOCH))  # before then, all the same (and ``iso`` writes a year below 1000 short)
    except (ValueError, TypeError, OverflowError):  # OverflowError: an offset that moves it out of years 1 to 9999
        raise rest_error(400, f"{name} must be a date or time in ISO 8601, such as 2026-12-01T09:30:00Z") from None


def public_base(request: Any, config: Any) -> str:
    """How clients reach flowbox: the ``public_url`` setting, else the request's own scheme and host."""
    return config.public_url.rstrip("/") or str(request.base_url).rstrip("/")
