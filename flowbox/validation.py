"""Checking what clients send: one test for text, typed bodies, and a collector of problems by path.

Bodies are decoded by ``http.decode_json`` first (it guards nesting, number range and surrogates);
``typed`` then converts one into a msgspec Struct. msgspec's own messages are not what the specs
document, so each field carries its documented message, and the first problem reported is the one
a reader checking the fields in order would find: the body itself, an unknown field (the first by
name), then the fields in the order the Struct declares them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, TypeVar

import msgspec

from .errors import InvalidRequest

S = TypeVar("S", bound=msgspec.Struct)


def is_number(value: Any, low: float = -math.inf, high: float = math.inf, *, integer: bool = False) -> bool:
    """A JSON number (an integer where ``integer``) from ``low`` to ``high``, and finite: JSON's true and
    false decode to Python's bools, which are ints, and are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    return (isinstance(value, int) or math.isfinite(value)) and low <= value <= high  # an int of 400 digits is no float


def is_text(value: Any, max_len: int | None = None, *, required: bool = False) -> bool:
    """A string that can be stored, tokenized and embedded (JSON can carry lone UTF-16 surrogates,
    ``"\\ud800"``; UTF-8 cannot), of at most ``max_len`` characters, and when ``required`` not blank."""
    if not isinstance(value, str) or (max_len is not None and len(value) > max_len) or (required and not value.strip()):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# A field that must hold something besides whitespace (msgspec searches the pattern; Python's ``\S``
# and ``str.strip`` agree on what whitespace is).
NOT_BLANK = r"\S"
_FIELD = re.compile(r" - at `\$\.([^`.\[]+)")


def invalid(message: str) -> InvalidRequest:
    """A 400 ``Validation failed`` saying what is wrong (the Agents API's title; its siblings share it)."""
    return InvalidRequest("Validation failed", message)


def typed(value: Any, kind: type[S], messages: Mapping[str, str], fail: Callable[[str], Exception] = invalid, *,
          not_object: str = "The request body must be a JSON object.", unknown: str = 'Unknown field "{field}".',
          require: tuple[str, ...] = (), checks: Mapping[str, Callable[[Any], Any]] | None = None) -> S:
    """``value`` as a ``kind``, or ``fail(message)`` for its first problem. ``messages``: each field's
    documented message, also for a string in it that is not text; ``unknown``: a format with
    ``{field}``; ``require``: fields required here beyond the Struct's own; ``checks``: tests msgspec
    cannot make (membership of a configured list, a URL's address), run in field order with the
    types: one returning False fails with the field's message, or it raises its own error."""
    if not isinstance(value, dict):
        raise fail(not_object)
    fields = kind.__struct_encode_fields__
    extra = sorted(set(value) - set(fields))
    if extra:
        raise fail(unknown.format(field=extra[0]))
    # msgspec cannot take a string that is not text (a lone surrogate): it converts the fields before the first one
    stop = next((i for i, name in enumerate(fields)
                 if name in messages and isinstance(value.get(name), str) and not is_text(value[name])), len(fields))
    try:
        result = msgspec.convert({name: value[name] for name in fields[:stop] if name in value}, kind)
        wrong = stop
    except msgspec.ValidationError as exc:
        match = _FIELD.search(str(exc))
        wrong = min(stop, fields.index(match[1]) if match else len(fields))  # no path: a required field is missing
    required = set(fields[: len(fields) - len(kind.__struct_defaults__)]).union(require)
    for name in fields[:wrong]:  # these passed msgspec's checks; a missing or unchecked one may still come first
        if name not in value:
            if name in required:
                raise fail(messages[name])
        elif checks and name in checks and checks[name](value[name]) is False:
            raise fail(messages[name])
    if wrong < len(fields):
        raise fail(messages[fields[wrong]])
    return result


def given(struct: msgspec.Struct) -> dict[str, Any]:
    """The fields a typed body set (the others are ``msgspec.UNSET``)."""
    return {name: v for name in struct.__struct_fields__ if (v := getattr(struct, name)) is not msgspec.UNSET}


class Problems:
    """Every problem of a document with its path (``steps[2].contexts[0]``), so its author can fix it in
    one go; ``summary`` names the first and counts the rest."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append({"path": path, "message": message})

    def under(self, path: str) -> bool:
        return any(p["path"].startswith(path) for p in self.items)

    def summary(self, prefix: str = "") -> tuple[str, list[dict[str, str]]]:
        """The message naming the first problem, and every problem with ``prefix`` on its path."""
        first = self.items[0]
        more = f" (and {len(self.items) - 1} more)" if len(self.items) > 1 else ""
        return f"{prefix}{first['path']}: {first['message']}{more}", [{**p, "path": prefix + p["path"]} for p in self.items]
