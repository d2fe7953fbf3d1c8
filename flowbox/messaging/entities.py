"""System entities: what a SLOT (or an intent example's entity) can extract from a user's text.

Each extractor returns ``{"value": ..., "match": <the text it matched>}`` or None.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Callable

_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"https?://[^\s]+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_DATES = (
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), ("y", "m", "d")),
    (re.compile(r"\b(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})\b"), ("d", "m", "y")),
)
_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}


def _query(text: str) -> dict[str, Any] | None:
    text = text.strip()
    return {"value": text, "match": text} if text else None


def _number(text: str) -> dict[str, Any] | None:
    match = _NUMBER.search(text)
    if match:
        raw = match[0].replace(",", ".")
        number = float(raw)
        return {"value": str(int(number)) if number.is_integer() else str(number), "match": match[0]}
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _WORDS:
            return {"value": str(_WORDS[word]), "match": word}
    return None


def _pattern(regex: re.Pattern) -> Callable[[str], dict[str, Any] | None]:
    def extract(text: str) -> dict[str, Any] | None:
        match = regex.search(text)
        return {"value": match[0].strip(), "match": match[0]} if match else None

    return extract


def _date(text: str) -> dict[str, Any] | None:
    for regex, order in _DATES:
        match = regex.search(text)
        if match:
            parts = dict(zip(order, map(int, match.groups())))
            try:
                return {"value": dt.date(parts["y"], parts["m"], parts["d"]).isoformat(), "match": match[0]}
            except ValueError:
                return None
    return None


EXTRACTORS: dict[str, Callable[[str], dict[str, Any] | None]] = {
    "system.query": _query,
    "system.number": _number,
    "system.email": _pattern(_EMAIL),
    "system.url": _pattern(_URL),
    "system.phone": _pattern(_PHONE),
    "system.date": _date,
}
ENTITY_IDS = tuple(EXTRACTORS)
FREE_TEXT = frozenset({"system.query"})  # entities that take any text: they cannot tell an answer from a new topic


def extract(entity_id: str, text: str) -> dict[str, Any] | None:
    extractor = EXTRACTORS.get(entity_id)
    return extractor(text) if extractor else None
