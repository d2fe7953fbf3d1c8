"""Socket frames: ``{"type", "payload"}`` both ways.

``incoming_from_send`` reads a ``message.send`` payload (the document's fields, and what the
published JS SDK adds: ``nonce``, ``metadata.contexts`` and ``metadata.domain``, params as plain
values, ``step`` and ``flow`` attachments) into the ``Incoming`` every channel shares, with the
same field checks as REST. Each check raises a ``Problem``; the socket turns its message into
an ``error`` frame.

``parse_frame`` is the one door for what a client sends: JSON that ``decode_json`` takes (as every
REST body: no ``NaN`` or ``Infinity``, no deep nesting, no lone surrogates) and a ``traceId`` that
is a number. Frames out are standard JSON too (``allow_nan=False``).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from ..errors import Problem
from ..http import BadJSON, decode_json
from ..validation import is_text
from .common import rest_error
from .incoming import Incoming, check_lang, check_media, check_originator, check_params, check_speech, check_timezone, check_trace_id

# What each kind of client is sent. The SDK reports any other type as an error, and the document
# names only these; control.* events are for webhooks, user typing for consoles.
DOCUMENT_FRAMES = frozenset({"message.delivered", "message.received"})
SDK_FRAMES = DOCUMENT_FRAMES | {"agent.typing"}
MAX_DOMAIN_BYTES = 4096


def dumps(body: Any) -> str:
    """A frame's text: compact, standard JSON (a non-finite number raises instead of going out)."""
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def frame(type_: str, payload: dict[str, Any] | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"type": type_}
    if payload is not None:
        body["payload"] = payload
    return dumps({**body, **extra})


def error_frame(message: str, **context: Any) -> str:
    """The document's ``{"type": "error", "message": ...}``; the payload repeats the message with
    what identifies the frame it answers (``threadId``, ``traceId``), echoed only when valid."""
    echo = {}
    if isinstance(context.get("threadId"), str) and is_text(context["threadId"]):
        echo["threadId"] = context["threadId"][:512]
    with contextlib.suppress(Problem):
        if check_trace_id(context.get("traceId")) is not None:
            echo["traceId"] = context["traceId"]
    return frame("error", {"message": message, **echo}, message=message)


def parse_frame(text: str) -> dict[str, Any]:
    """A client's frame as ``{"type": str, "payload": ...}``; a ``Problem`` naming what is wrong otherwise."""
    try:
        body = decode_json(text)
    except BadJSON as exc:  # deep nesting, NaN, a huge number, a lone surrogate: each says which
        raise rest_error(400, f"Invalid message format: not JSON ({exc})" if exc.syntax else str(exc)) from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise rest_error(400, "Invalid message format: a frame is a JSON object with type and payload")
    if isinstance(body.get("payload"), dict):  # whatever the frame's type: a string traceId is an error
        check_trace_id(body["payload"].get("traceId"))
    return body


def _params(value: Any) -> Any:
    """The SDK's ``metadata.addParam(key, "value")`` sends plain values; the engine wants the
    document's ``[{"value": ...}]`` lists."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        out[key] = [i if isinstance(i, dict) and "value" in i else {"value": i} for i in items]
    return out


def incoming_from_send(payload: Any, *, moderator_ok: bool = False, upload: dict[str, Any] | None = None) -> Incoming:
    """A ``message.send`` payload (or, with ``upload``, the SDK's ``thread.upload`` message)."""
    if not isinstance(payload, dict):
        raise rest_error(400, "payload must be an object")
    metadata = payload.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise rest_error(400, "metadata must be an object with language, timezone and params")
    contexts, domain = metadata.get("contexts"), metadata.get("domain")
    if contexts is not None and not (isinstance(contexts, list) and all(is_text(c, 255, required=True) for c in contexts)):
        raise rest_error(400, "metadata.contexts must be a list of names")
    if domain is not None and (not isinstance(domain, dict) or len(json.dumps(domain)) > MAX_DOMAIN_BYTES):
        raise rest_error(400, f"metadata.domain must be an object of at most {MAX_DOMAIN_BYTES} bytes")
    originator = check_originator(payload.get("originator"))
    if originator["role"] == "moderator" and not moderator_ok:
        raise rest_error(403, "originator.role moderator is for human agents: open the socket with the project's API token")
    incoming = Incoming(
        kind="text", trace_id=check_trace_id(payload.get("traceId")), originator=originator, channel="socket",
        lang=check_lang(metadata.get("language")), timezone=check_timezone(metadata.get("timezone")),
        params=check_params(_params(metadata.get("params"))),
    )
    speech, attachment = payload.get("speech"), payload.get("attachment")
    if upload is not None:
        incoming.kind, incoming.media = "media", check_media({"mimetype": payload.get("mimetype")}, upload)
    elif attachment is None:
        if speech is None:
            raise rest_error(400, "speech is required: the text of the message")
        incoming.speech = check_speech(speech)
        return incoming
    else:
        _attachment(incoming, attachment)
    incoming.speech = check_speech(speech) if speech is not None else ""
    if incoming.from_moderator and incoming.kind not in ("text", "media"):
        raise rest_error(400, "A moderator sends text or media, not events")
    return incoming


def _attachment(incoming: Incoming, attachment: Any) -> None:
    if not isinstance(attachment, dict) or not isinstance(attachment.get("payload"), dict):
        raise rest_error(400, "attachment must be an object with type and payload")
    kind, body = attachment.get("type"), attachment["payload"]
    if kind == "event":
        if not is_text(body.get("name"), 255, required=True):
            raise rest_error(400, "attachment.payload.name is required: the name of the event to trigger")
        incoming.kind, incoming.event_name = "event", body["name"]
    elif kind in ("step", "flow"):
        key = "stepId" if kind == "step" else "flowImmutableId" if "flowImmutableId" in body else "flowId"
        if not is_text(body.get(key), 255, required=True):
            raise rest_error(400, f"attachment.payload.{key} is required for a {kind} attachment")
        incoming.kind, incoming.target = kind, body[key]
    else:
        raise rest_error(400, "attachment.type must be event (or the SDK's step or flow)")
