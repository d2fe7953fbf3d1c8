"""Shared HTTP plumbing: the services of a request, JSON bodies, API-key auth, an area's Router."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
from typing import Any, Awaitable, Callable, Sequence

from litestar import Request, Router
from litestar.di import NamedDependency, Provide

from .errors import error
from .orgs import Principal, authenticate
from .services import Services
from .validation import is_text

MISSING_KEY = ("API key is required", "Please provide an API key in the Authorization header")
INVALID_KEY = ("Invalid API key", "The provided API key is not valid")


def services_of(request: Request) -> Services:
    return request.app.state.services


# -- JSON in ------------------------------------------------------------------------------------------
# Every JSON body (and socket frame) is decoded by ``decode_json``: no value it returns can crash code
# further on. Deeper nesting than any flowbox document needs would hit Python's recursion limit in
# whatever walks it next; integers beyond 64 bits overflow SQLite (and over 4,300 digits, ``int``);
# infinities and NaN are not JSON; a lone UTF-16 surrogate (``"\\udfff"``, or its three bytes written raw)
# cannot be stored or encoded.

MAX_JSON_DEPTH = 64
_INT64 = 1 << 63
_OFF_LOOP_BYTES = 64 << 10  # bigger bodies are decoded in a thread: a megabyte can take 100 ms
# Number literals as runs of "0": one of 19+ digits or with a 3-digit exponent needs the range checks
# (found with a translate and two substring searches, at C speed; a regex search is 10x slower).
_NUMBER_SHAPES = bytes(ord("0") if c in b"0123456789" else ord("e") if c in b"eE" else ord("+") if c in b"+-"
                       else ord(" ") for c in range(256))


class BadJSON(ValueError):
    """JSON flowbox cannot take. ``syntax``: it is not JSON at all, or nested too deep (else it holds a
    value no field may hold: a number out of range, a lone surrogate)."""

    def __init__(self, message: str, syntax: bool = True):
        super().__init__(message)
        self.syntax = syntax


NUMBER_RANGE = "Numbers must be finite, and integers must fit in 64 bits."
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels is not accepted."
NOT_UTF8 = "The JSON is not UTF-8 text"
_ENCODED_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")  # U+D800..U+DFFF written as UTF-8, which UTF-8 forbids


def _int(text: str) -> int:
    value = int(text) if len(text) <= 20 else _INT64
    if not -_INT64 <= value < _INT64:
        raise BadJSON(NUMBER_RANGE, syntax=False)
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(NUMBER_RANGE, syntax=False)
    return value


def _constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON value")


def decode_json(raw: bytes | str) -> Any:
    """The JSON value of ``raw``, or ``BadJSON`` saying why not (each API answers it in its own shape)."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if b"\xed" in data and _ENCODED_SURROGATE.search(data):  # Python's decoder lets these pass (surrogatepass)
        raise BadJSON(NOT_UTF8)
    shapes = data.translate(_NUMBER_SHAPES)
    long_numbers = b"0" * 19 in shapes or b"0e000" in shapes or b"0e+000" in shapes
    try:
        value = json.loads(data, parse_constant=_constant, **({"parse_int": _int, "parse_float": _float} if long_numbers else {}))
    except BadJSON:
        raise
    except json.JSONDecodeError as exc:
        raise BadJSON(str(exc)) from None
    except UnicodeDecodeError:
        raise BadJSON(NOT_UTF8) from None
    except RecursionError:
        raise BadJSON(TOO_DEEP) from None
    except ValueError:  # Python's own limit on integer digits
        raise BadJSON(NUMBER_RANGE, syntax=False) from None
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH and _too_deep(value):
        raise BadJSON(TOO_DEEP)
    if b"\\ud" in data or b"\\uD" in data:  # a surrogate escape: maybe a lone one
        _check_texts(value)
    return value


async def decode_json_async(raw: bytes) -> Any:
    """``decode_json``, off the event loop for a large body."""
    return await asyncio.to_thread(decode_json, raw) if len(raw) > _OFF_LOOP_BYTES else decode_json(raw)


def _too_deep(value: Any) -> bool:
    """Without recursion, which is the point: only containers are visited."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        for child in (item.values() if isinstance(item, dict) else item):
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _check_texts(value: Any) -> None:
    """Every string and key must be encodable as UTF-8."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not is_text(item):
                raise BadJSON(f"\"{path}\" must be valid Unicode text (it contains a lone surrogate).", syntax=False)
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, dict):
            for key, child in item.items():
                if not is_text(key):
                    raise BadJSON("Field names must be valid Unicode text (one contains a lone surrogate).", syntax=False)
                stack.append((child, f"{path}.{key}" if path else key))


def invalid_json(exc: BadJSON) -> Exception:
    """The documented 400 for a body that is not the JSON asked for (never Litestar's own shape)."""
    return error(400, "Invalid JSON body" if exc.syntax else "Validation failed", str(exc))


async def json_body(request: Request) -> Any:
    """The parsed body, or the documented 400 for an empty body or invalid JSON."""
    if not await request.body():
        raise error(400, "Invalid JSON body", "The request body is empty")
    return await optional_json_body(request)


async def optional_json_body(request: Request, invalid: Callable[[BadJSON], Exception] = invalid_json) -> Any:
    """The parsed body of a request whose body is optional, ``{}`` when it has none: no bytes at all. Anything
    else, whitespace alone included, must be JSON (a blank document is a client's mistake to report, not an
    absent body to guess at); ``invalid`` makes the error for one that is not, in the caller's API's shape."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        return await decode_json_async(raw)
    except BadJSON as exc:
        raise invalid(exc) from None


def whole_number(raw: str | None, minimum: int, maximum: int) -> int | None:
    """A query parameter's whole number from ``minimum`` to ``maximum``, or None when it is not one.
    ASCII digits only: ``str.isdigit`` takes "²", which ``int`` refuses, and ``int`` takes "٣", " 3"
    and "+3"; the bound keeps it within what SQLite can bind."""
    if raw is None or not (raw.isascii() and raw.isdigit()):
        return None
    digits = raw.lstrip("0") or "0"
    if len(digits) > len(str(maximum)):
        return None
    value = int(digits)
    return value if minimum <= value <= maximum else None


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: <key>`` (the Agents API), ``Authorization: Bearer <key>``
    or ``X-API-KEY`` (the Chats API)."""
    value = request.headers.get("authorization", "").strip()
    if value.lower().startswith("bearer "):
        value = value[7:].strip()
    return value or request.headers.get("x-api-key", "").strip() or None


async def require_key(request: Request) -> Principal:
    """Agents API authentication with its documented 401 bodies."""
    key = presented_key(request)
    if not key:
        raise error(401, *MISSING_KEY)
    principal = await authenticate(services_of(request).store, key)
    if principal is None:
        raise error(401, *INVALID_KEY)
    return principal


# What a handler of an ``authenticated`` Router takes: ``principal: Caller``.
Caller = NamedDependency[Principal]


def authenticated(handlers: Sequence[Any], auth: Callable[[Request], Awaitable[Any]] = require_key, *, path: str = "/",
                  provides: str = "principal") -> Router:
    """An area's routes that act for a caller, in one Router: ``auth(request)`` authenticates (or
    answers the API's 401) as a Litestar dependency, resolved before the handler runs and so before
    its body is read, and each handler takes what it returns as ``provides`` (``principal: Caller``).
    Every handler must take it, even one that has no use for it: a route without it would answer
    without authentication."""
    for handler in handlers:
        if provides not in inspect.signature(handler.fn).parameters:
            raise TypeError(f"{handler.handler_name} must take {provides!r}: its router authenticates through it")

    async def caller(request: Request) -> Any:
        who = await auth(request)
        request.scope.setdefault("state", {})["org_id"] = _org_id(who)  # for the request's log line
        return who

    return Router(path, route_handlers=list(handlers), dependencies={provides: Provide(caller)})


def _org_id(who: Any) -> str | None:
    """The org an ``authenticated`` Router's caller acts for: a Principal's, a messaging project's, or the id itself."""
    if isinstance(who, str):
        return who
    if isinstance(who, dict):
        return who.get("org_id")
    return getattr(who, "org_id", None)
