"""Business hours: the documented shape, validated, and whether a moment falls inside them.

A project keeps a list of entries ``{weekdays: [{weekday, content: [{from, to}]}], holidays:
[{holiday, date}], label, timezone}``. ``timezone`` is the documented display form
``"(UTC+03:00) Minsk"`` or an IANA name such as ``"Europe/Amsterdam"``. A display form's places are
looked up as IANA zones, so daylight saving time applies where it does there; when none of them is
one (``"(UTC-05:00) Eastern Time (US & Canada)"``) its fixed offset is used.

Times are the zone's wall-clock times. A range whose ``to`` is not after its ``from`` runs past
midnight. A range belongs to the day it starts on: a holiday (the date part of ``date``, in the
entry's zone) closes the ranges that start on it, including an overnight one's hours after midnight,
and does not cut short the previous day's overnight range. No entries: always open.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from ..validation import is_text
from .common import rest_error

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_OFFSET = re.compile(r"^\(UTC(?:([+-])(\d{1,2}):(\d{2}))?\)")
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
MAX_ENTRIES = 50


def _minutes(value: Any, where: str) -> int:
    match = _TIME.match(value) if isinstance(value, str) else None
    if not match or int(match[2]) > 59 or int(match[1]) > 24 or (int(match[1]) == 24 and int(match[2])):
        raise rest_error(400, f"{where} must be a time \"H:MM\" between 0:00 and 24:00")
    return int(match[1]) * 60 + int(match[2])


@functools.lru_cache(maxsize=256)
def timezone_of(name: str) -> dt.tzinfo | None:
    """The zone a ``timezone`` names, or None when it names none."""
    match = _OFFSET.match(name)
    if not match:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return None
    sign, hours, minutes = match.groups()
    if sign is None:
        return dt.timezone.utc
    if int(hours) > 14 or int(minutes) > 59:  # the furthest zones are UTC-12:00 and UTC+14:00
        return None
    offset = dt.timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if sign == "-" else 1)
    for place in name[match.end():].split(","):
        zone = _zone_of_place(place)
        if zone is not None and offset in _offsets_this_year(zone):
            return zone
    return dt.timezone(offset)


@functools.cache
def _zones_by_place() -> dict[str, str]:
    """"minsk" → "Europe/Minsk": the IANA zones by their last part (the city they are named after)."""
    places: dict[str, str] = {}
    for name in sorted(available_timezones()):
        if "/" in name and not name.startswith(("Etc/", "SystemV/", "US/", "posix/", "right/")):
            places.setdefault(name.rsplit("/", 1)[1].casefold(), name)
    return places


def _zone_of_place(place: str) -> ZoneInfo | None:
    name = _zones_by_place().get(place.strip().replace(" ", "_").casefold())
    return ZoneInfo(name) if name else None


def _offsets_this_year(zone: dt.tzinfo) -> set[dt.timedelta | None]:
    """Its offsets in January and July: a display name's offset is one of them (the standard time)."""
    year = dt.datetime.now(dt.timezone.utc).year
    return {dt.datetime(year, month, 1, 12, tzinfo=zone).utcoffset() for month in (1, 7)}


def validate_business_hours(value: Any) -> list[dict[str, Any]]:
    """The documented list, normalised (weekday names capitalised, holidays and label present)."""
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise rest_error(400, f"\"businessHours\" must be a list of at most {MAX_ENTRIES} business hours objects")
    return [_entry(entry, f"businessHours[{i}]") for i, entry in enumerate(value)]


def _entry(entry: Any, where: str) -> dict[str, Any]:
    """One business hours object; its checks run in a fixed order, so the first problem is the one reported."""
    if not isinstance(entry, dict):
        raise rest_error(400, f"{where} must be an object with weekdays, holidays, label and timezone")
    if not isinstance(entry.get("weekdays") or [], list) or not isinstance(entry.get("holidays") or [], list):
        raise rest_error(400, f"{where}.weekdays and {where}.holidays must be lists")
    timezone = entry.get("timezone", "(UTC) UTC")
    if not is_text(timezone, 100, required=True) or timezone_of(timezone) is None:
        raise rest_error(400, f"{where}.timezone must look like \"(UTC+03:00) Minsk\" or be an IANA name like \"Europe/Amsterdam\"")
    label = entry.get("label", "")
    if not is_text(label, 200):
        raise rest_error(400, f"{where}.label must be a string of at most 200 characters")
    seen: set[str] = set()
    weekdays = [_weekday(day, f"{where}.weekdays[{j}]", seen) for j, day in enumerate(entry.get("weekdays") or [])]
    holidays = [_holiday(holiday, f"{where}.holidays[{j}]") for j, holiday in enumerate(entry.get("holidays") or [])]
    return {"weekdays": weekdays, "holidays": holidays, "label": label, "timezone": timezone}


def _weekday(day: Any, where: str, seen: set[str]) -> dict[str, Any]:
    """A weekday's opening hours; ``seen`` holds the weekdays before it (each may come once)."""
    name = day.get("weekday") if isinstance(day, dict) else None
    name = name.capitalize() if isinstance(name, str) else name
    if name not in WEEKDAYS or name in seen:
        raise rest_error(400, f"{where}.weekday must be one of {', '.join(WEEKDAYS)}, each at most once")
    seen.add(name)
    content = day.get("content") or []
    if not isinstance(content, list):
        raise rest_error(400, f"{where}.content must be a list of {{from, to}} ranges")
    ranges = []
    for k, span in enumerate(content):
        if not isinstance(span, dict):
            raise rest_error(400, f"{where}.content[{k}] must be an object with from and to")
        _minutes(span.get("from"), f"{where}.content[{k}].from")
        _minutes(span.get("to"), f"{where}.content[{k}].to")
        ranges.append({"from": span["from"], "to": span["to"]})
    return {"weekday": name, "content": ranges}


def _holiday(holiday: Any, where: str) -> dict[str, Any]:
    if not isinstance(holiday, dict) or not is_text(holiday.get("holiday", ""), 200):
        raise rest_error(400, f"{where} must be an object with a \"holiday\" name and a \"date\"")
    date = holiday.get("date")
    match = _DATE.match(date) if isinstance(date, str) else None
    try:
        dt.date.fromisoformat(match[1]) if match else None
    except ValueError:  # the right shape, but no such day
        match = None
    if not match:
        raise rest_error(400, f"{where}.date must be an ISO date such as \"2019-12-31T00:00:00.000Z\"")
    return {"holiday": holiday.get("holiday", ""), "date": date}


def _range(span: dict[str, str]) -> tuple[int, int]:
    return _minutes(span["from"], "from"), _minutes(span["to"], "to")


def _entry_open(entry: dict[str, Any], now: dt.datetime) -> bool:
    local = now.astimezone(timezone_of(entry["timezone"]) or dt.timezone.utc)
    minute = local.hour * 60 + local.minute
    holidays = {h["date"][:10] for h in entry["holidays"]}
    days = {d["weekday"]: d["content"] for d in entry["weekdays"]}
    today = local.date()
    yesterday = today - dt.timedelta(days=1)
    if today.isoformat() not in holidays:
        for start, end in map(_range, days.get(WEEKDAYS[today.weekday()], [])):
            if start <= minute < end or (end <= start and minute >= start):
                return True
    if yesterday.isoformat() not in holidays:
        for start, end in map(_range, days.get(WEEKDAYS[yesterday.weekday()], [])):
            if end <= start and minute < end:  # yesterday's overnight range, still running
                return True
    return False


def is_open(entries: list[dict[str, Any]], now: dt.datetime | None = None) -> bool:
    """Open when any entry is open at ``now`` (an aware datetime; default: the current time).
    No entries: always open."""
    if not entries:
        return True
    if now is None:
        now = dt.datetime.now(dt.timezone.utc)
    elif now.tzinfo is None:
        raise ValueError("business hours need an aware datetime (with its time zone)")
    return any(_entry_open(entry, now) for entry in entries)
