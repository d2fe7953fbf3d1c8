"""``GET /api/public/agent/:agent_id/usage`` (agents-api.txt, Usage): credits per UTC day from the
usage ledger, with the document's date rules and error bodies word for word."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from litestar import Request, get
from litestar.params import FromPath

from ..apidoc import doc, query
from ..errors import error
from ..http import Caller, services_of
from ..ids import now
from ..orgs import Principal
from ..services import Services
from ..usage import daily_credits, number
from . import store as agents_store
from .schemas import Usage

TRACKING_STARTS = dt.date(2025, 5, 28)  # the document: no usage is counted before this day
NOTE = "Endpoint active from 28 May 2025 onwards"
DEFAULT_DAYS = 7
MAX_DAYS = 31
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def today() -> dt.date:
    return now().date()  # UTC


def date_range(start_raw: str | None, end_raw: str | None, today: dt.date) -> tuple[dt.date, dt.date]:
    """The document's rules, in its order of precedence. An empty parameter counts as absent."""
    yesterday = today - dt.timedelta(days=1)
    if end_raw and not start_raw:
        raise error(400, "Invalid date range", "start_date is required when end_date is provided (format: YYYY-MM-DD)")
    if not start_raw:
        return yesterday - dt.timedelta(days=DEFAULT_DAYS - 1), yesterday
    if not all(DATE.fullmatch(raw) for raw in (start_raw, end_raw) if raw):
        raise error(400, "Invalid date format", "Dates must be in YYYY-MM-DD format")
    try:
        start = dt.date.fromisoformat(start_raw)
        end = dt.date.fromisoformat(end_raw) if end_raw else yesterday
    except ValueError:
        raise error(400, "Invalid dates", "Provided dates are not valid") from None
    if start > end:
        raise error(400, "Invalid date range", "start_date must not be after end_date")
    if end >= today:
        raise error(400, "Invalid end date", "end_date cannot be today or in the future. Data is only available up to yesterday.")
    if (end - start).days + 1 > MAX_DAYS:
        raise error(400, "Date range too large", "Date range cannot exceed 31 days")
    return start, end


def require_agent_id(agent_id: str) -> str:
    if not agent_id.strip():
        raise error(400, "agent_id is required and must be a non-empty string")
    return agent_id.strip()


async def owned_agent(services: Services, principal: Principal, agent_id: str) -> dict:
    """The agent, or the documented 403 (also for an id that names no agent: nothing is revealed)."""
    agent = await agents_store.get_agent(services.store, agent_id)
    if agent is None or agent["org_id"] != principal.org_id:
        raise error(403, "Access denied", "This agent does not belong to your organisation")
    return agent


async def usage_report(services: Services, agent_id: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    used = await daily_credits(services.store, agent_id, start, end, since=TRACKING_STARTS)
    days = [end - dt.timedelta(days=i) for i in range((end - start).days + 1)]  # newest first
    breakdown = [{"date": d.isoformat(), "credits_used": number(float(used.get(d.isoformat(), 0)))} for d in days]
    report: dict[str, Any] = {
        "agent_id": agent_id,
        "time_range": {"start": f"{start.isoformat()}T00:00:00.000Z", "end": f"{end.isoformat()}T23:59:59.999Z"},
        "usage": {"total_credits_used": number(float(sum(used.values()))), "daily_breakdown": breakdown},
    }
    if start < TRACKING_STARTS:
        report["note"] = NOTE
    return report


@get("/api/public/agent/{agent_id:str}/usage", summary="Credit usage of an agent per day", responses=doc(200, Usage, 400, 401, 403))
async def agent_usage(request: Request, principal: Caller, agent_id: FromPath[str], start_date: query("YYYY-MM-DD") = None,
                      end_date: query("YYYY-MM-DD, before today; default yesterday (needs start_date)") = None) -> dict[str, Any]:
    agent_id = require_agent_id(agent_id)
    services = services_of(request)
    await owned_agent(services, principal, agent_id)
    start, end = date_range(start_date, end_date, today())
    return await usage_report(services, agent_id, start, end)


@get("/api/public/agent/usage", include_in_schema=False)
async def agent_usage_without_id(principal: Caller) -> dict[str, Any]:
    """``/api/public/agent//usage`` (an empty agent_id) arrives here once the path is normalised."""
    require_agent_id("")
    raise AssertionError("unreachable")


# Routed by area.py, in a Router that authenticates the caller's API key.
HANDLERS = [agent_usage, agent_usage_without_id]
