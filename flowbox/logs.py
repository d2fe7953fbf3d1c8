"""How log lines look (``log_format``: text, or one JSON object per line), and no credential in any of
them. Browsers' WebSockets and EventSource cannot send headers, so keys
and access tokens travel in query strings (``?access_token=``), and a messaging socket's URL is
itself a single-use credential (``/ws/<token>``); uvicorn logs every WebSocket handshake with its
path and query string, and so would anything else that logs a URL. The filter here rewrites such
records before any handler sees them: query strings and socket tokens become ``[redacted]``, and so
does anything shaped like a flowbox key or token."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

from .chats.auth import TOKEN_PREFIX as ACCESS_TOKEN_PREFIX
from .messaging.projects import TOKEN_PREFIX as PROJECT_TOKEN_PREFIX
from .orgs import KEY_PREFIX
from .redact import REDACTED

_PREFIX_LIST = (KEY_PREFIX, ACCESS_TOKEN_PREFIX, PROJECT_TOKEN_PREFIX)
_PREFIXES = "|".join(re.escape(p) for p in _PREFIX_LIST)
_SECRETS = re.compile(
    r"(?P<socket>/ws/)[^\s\"'?/]+(?:\?[^\s\"']*)?"  # a messaging socket URL's token (and its query)
    r"|(?P<path>/[^\s\"'?]*)\?[^\s\"']+"         # a path's query string (access_token=, after=, ...)
    rf"|\b(?:{_PREFIXES})[A-Za-z0-9_-]{{8,}}"      # an API key, an OAuth access token, a project token
)

# The loggers that write URLs: uvicorn's (its WebSocket handshake lines are uvicorn.error's, and the
# websockets library logs through it), and flowbox's own access log.
LOGGERS = ("uvicorn.error", "uvicorn.access", "uvicorn.asgi", "websockets.server", "websockets.protocol", "flowbox.access")


def redact(text: str) -> str:
    # Most texts hold none of what the pattern starts with: three substring tests instead of the
    # regex, for every argument of every access line.
    if "?" not in text and "/ws/" not in text and not any(prefix in text for prefix in _PREFIX_LIST):
        return text
    return _SECRETS.sub(_replacement, text)


def _replacement(match: re.Match) -> str:
    if match.group("socket"):
        return match.group("socket") + REDACTED
    if match.group("path") is not None:
        return match.group("path") + "?" + REDACTED
    return REDACTED


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):  # arguments one by one: formatters that read them (uvicorn's) keep working
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:  # a secret in the format itself, or in an argument that is not a string
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactSecrets()


def redact_logs() -> None:
    """Installs the filter on the loggers that write URLs (idempotent). Filters sit on the loggers, not
    on handlers, so uvicorn's own logging setup, which replaces handlers, keeps them."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


# -- formats ----------------------------------------------------------------------------------------

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# What a record may carry besides its message (``extra=``), in this order: the request log's fields.
FIELDS = ("request_id", "method", "path", "route", "status", "duration_ms", "org_id")
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # one encoder: json.dumps with options makes one per call


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC), ``level``, ``logger``, ``message``, the ``FIELDS`` a
    record carries, and a failure's traceback as ``error``. Every text in it is ``redact``-ed, whichever
    logger wrote it: a record's fields are not its arguments, which the filter above cleans."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = redact(value) if isinstance(value, str) and name != "route" else value  # routes are templates
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return _ENCODE(entry)


class AccessFormatter(logging.Formatter):
    """The access log's lines: JSON for requests to an app whose ``log_format`` is json (their records
    carry the request's fields), text for the others. The access log's handler is one per process;
    this way each app in it keeps its own format."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s ACCESS %(message)s")
        self._json = JsonFormatter()

    def format(self, record: logging.LogRecord) -> str:
        return self._json.format(record) if "request_id" in record.__dict__ else super().format(record)


def app_logging(log_format: str) -> dict:
    """Litestar's arguments for its logging setup, which replaces the root logger's handler with its
    own (a queue, then stderr): in the json format, with ``JsonFormatter``; else Litestar's default."""
    if log_format != "json":
        return {}
    from litestar.logging.config import LoggingConfig

    return {"logging_config": LoggingConfig(formatters={"standard": {"()": JsonFormatter}})}


def setup_process_log(level: str, log_format: str) -> None:
    """The log of a ``flowbox serve`` process: every logger's lines on stderr in ``log_format``
    (as ``logging.basicConfig``: nothing changes where a handler is already set up)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
