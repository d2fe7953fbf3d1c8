"""One incoming message, whatever channel it came by: validated fields, how it is stored in
the history, how it is echoed as ``message.delivered`` and what the engine sees.

``from_rest`` reads the REST v1 body (``{"payload": {...}}``); the socket channel builds an
``Incoming`` from its frames with the same field checks (``originator``, ``params``, ...).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..validation import is_number, is_text
from .common import rest_error
from .engine import Input
from .schemas import MAX_SPEECH, MESSAGE_PAYLOAD

MEDIA_TYPES = ("image", "file", "audio", "video")
ROLES = ("external", "user", "moderator")
MAX_THREAD_ID = 512
_MIME = re.compile(r"^[\w.+-]+/[\w.+-]+$")
_LANG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")


@dataclass
class Incoming:
    kind: str                                  # text, event, location, media, step, flow
    speech: str = ""
    event_name: str = ""
    lat: str = ""
    long: str = ""
    media: dict[str, Any] = field(default_factory=dict)   # mediaType, url, mimetype, name, size
    target: str = ""                           # stepId / flowId for kinds step and flow
    trace_id: Any = None
    originator: dict[str, Any] = field(default_factory=dict)
    lang: str | None = None
    timezone: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    channel: str = "rest"

    @property
    def from_moderator(self) -> bool:
        """A human agent's message: it goes to the user, never to the engine."""
        return self.originator.get("role") == "moderator"

    def content(self) -> tuple[str, list[dict[str, Any]]]:
        """(fallback text, responses) describing what was sent."""
        if self.kind == "event":
            return self.speech or self.event_name, [{"type": "event", "payload": {"name": self.event_name}}]
        if self.kind == "location":
            return self.speech or f"{self.lat},{self.long}", [{"type": "location", "payload": {"lat": self.lat, "long": self.long}}]
        if self.kind == "media":
            return self.speech or f"{self.media['mediaType']} attachment", [{"type": self.media["mediaType"], "payload": dict(self.media)}]
        if self.kind in ("step", "flow"):
            key = "stepId" if self.kind == "step" else "flowId"
            return self.speech or f"{self.kind} attachment", [{"type": self.kind, "payload": {key: self.target}}]
        return self.speech, [{"type": "text", "payload": {"text": self.speech}}]

    def stored(self, contexts: list[str] | None = None, intents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        fallback, responses = self.content()
        return {"fallback": fallback, "replyTo": None, "contexts": contexts or [], "params": self.params,
                "intents": intents or [], "responses": responses}

    def delivered(self, thread_id: str) -> dict[str, Any]:
        """The ``message.delivered`` payload: the message as received, echoed."""
        fallback, responses = self.content()
        payload: dict[str, Any] = {"threadId": thread_id, "speech": fallback, "type": self.kind}
        if self.trace_id is not None:
            payload["traceId"] = self.trace_id
        if self.kind == "event":
            payload["eventName"] = self.event_name
        elif self.kind in ("location", "media"):
            payload.update(responses[0]["payload"])
        payload["originator"] = self.originator
        payload["metadata"] = {"language": self.lang, "timezone": self.timezone, "params": self.params}
        return payload

    def engine_input(self) -> Input:
        fallback, _ = self.content()
        turn: dict[str, Any] = {}
        if self.kind == "event":
            turn["event"] = [{"type": "custom", "value": {"name": self.event_name}}]
        elif self.kind == "location":
            turn["location"] = [{"value": f"{self.lat},{self.long}", "lat": self.lat, "long": self.long}]
        elif self.kind == "media":
            turn[self.media["mediaType"]] = [{"value": self.media.get("url", ""), **self.media}]
        return Input(kind=self.kind, text=self.speech, event=self.event_name, media_type=self.media.get("mediaType", ""),
                     target=self.target, reply_to=fallback, params=dict(self.params), turn_params=turn)


# -- field checks, shared by the channels ------------------------------------------------------

def check_thread_id(thread_id: Any) -> str:
    if not is_text(thread_id, MAX_THREAD_ID, required=True) or any(ord(c) < 32 for c in thread_id):
        raise rest_error(400, f"threadId must be a non-empty string of at most {MAX_THREAD_ID} characters of valid Unicode text")
    return thread_id


def check_speech(speech: Any) -> str:
    if not is_text(speech):  # a lone surrogate is not text the engine can match or store
        raise rest_error(400, "speech must be a string of valid Unicode text")
    if len(speech) > MAX_SPEECH:
        raise rest_error(400, f"The maximum length of a message is {MAX_SPEECH} characters")
    return speech


def check_trace_id(value: Any) -> int | float | None:
    """The document types traceId as a number; a string (even of digits) is refused, not coerced."""
    if value is None:
        return None
    if not is_number(value):
        raise rest_error(400, "traceId must be a number")
    return value


def check_originator(value: Any) -> dict[str, Any]:
    if value is None:
        return {"name": "Anonymous", "role": "external"}
    if not isinstance(value, dict):
        raise rest_error(400, "originator must be an object with name and role")
    if "name" in value and not is_text(value["name"], 200):
        raise rest_error(400, "originator.name must be a string of at most 200 characters")
    role = value.get("role", "external")
    if role not in ROLES:
        raise rest_error(400, "originator.role must be either external or moderator")
    for key in ("profile", "metadata"):
        if value.get(key) is not None and not isinstance(value[key], dict):
            raise rest_error(400, f"originator.{key} must be an object")
    if len(json.dumps(value)) > 16_384:
        raise rest_error(400, "originator is too large (at most 16 KB)")
    return {**value, "role": role}


def check_params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(i, dict) and "value" in i for i in v) for k, v in value.items()
    )
    if not ok:
        raise rest_error(400, "params must be an object of lists of {\"value\": ...} objects")
    if len(json.dumps(value)) > 65_536:
        raise rest_error(400, "params is too large (at most 64 KB)")
    return value


def check_lang(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 35 or not _LANG.match(value):
        raise rest_error(400, "lang must be a language code such as \"en\"")
    return value


def check_timezone(value: Any) -> float | None:
    if value is None:
        return None
    if not is_number(value, -14, 14):
        raise rest_error(400, "timezone must be a UTC offset in hours between -14 and 14")
    return value


def check_media(payload: dict[str, Any], upload: dict[str, Any] | None) -> dict[str, Any]:
    media_type = payload.get("mediaType")
    mimetype = payload.get("mimetype", payload.get("mimeType"))
    if upload is not None:
        mimetype = mimetype or upload.get("mimetype")
        if media_type is None and isinstance(mimetype, str):
            major = mimetype.split("/")[0]
            media_type = major if major in MEDIA_TYPES else "file"
    if media_type not in MEDIA_TYPES:
        raise rest_error(400, f"mediaType must be one of {', '.join(MEDIA_TYPES)}")
    if mimetype is not None and (not isinstance(mimetype, str) or len(mimetype) > 255 or not _MIME.match(mimetype.split(";")[0].strip())):
        raise rest_error(400, "mimeType must be a media type such as \"image/png\"")
    media: dict[str, Any] = {"mediaType": media_type}
    if upload is not None:
        media.update({k: v for k, v in upload.items() if k != "mimetype"})
    else:
        url = payload.get("url")
        if not is_text(url, 2048, required=True) or not url.startswith(("http://", "https://")):
            raise rest_error(400, "url must be the http:// or https:// URL of the media, or upload a file (multipart/form-data)")
        media["url"] = url
    if mimetype:
        media["mimetype"] = mimetype.split(";")[0].strip()
    return media


def _check_coordinate_type(value: Any, name: str) -> None:
    """A location's lat or long is a number (not true or false) or a string, in any kind of message."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise rest_error(400, f"{name} must be a number (as a string)")


_COORDINATE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # what float() reads, in ASCII digits only
_DEGREES = {"lat": 90, "long": 180}


def _coordinate(value: Any, name: str) -> str:
    """A location's lat or long as the client wrote it (the document's examples are strings), if it is a
    number of degrees in range: float() would also read "nan", "inf" and other scripts' digits ("٥٢")."""
    _check_coordinate_type(value, name)
    written = value if isinstance(value, str) else str(value)
    text = written.strip()
    if len(text) > 50 or not _COORDINATE.fullmatch(text) or not is_number(float(text), -_DEGREES[name], _DEGREES[name]):
        raise rest_error(400, f"{name} must be a number (as a string) of degrees from -{_DEGREES[name]} to {_DEGREES[name]}")
    return written


# The payload's fields documented as strings, with their limits: one given must keep them whatever the message's type.
TEXT_FIELDS = {name: rule for name, rule in MESSAGE_PAYLOAD["properties"].items() if rule.get("type") == "string" and "enum" not in rule}


def from_rest(body: Any, upload: dict[str, Any] | None = None) -> Incoming:
    """The REST v1 message body: ``{"payload": {"type": ..., ...}}``; fields documented as
    arguments (traceId, lang, timezone, params) are read from the payload or beside it."""
    if not isinstance(body, dict):
        raise rest_error(400, "The request body must be a JSON object with a \"payload\" object")
    payload = body.get("payload", body)
    if not isinstance(payload, dict):
        raise rest_error(400, "payload must be an object")

    def arg(name: str) -> Any:
        return payload.get(name, body.get(name))

    # A documented field of another kind of message is ignored, but one given must have its documented type:
    # {"type": "text", "speech": "hi", "mediaType": ["image"]} is a malformed request, not a text.
    for name, rule in TEXT_FIELDS.items():
        if name in payload and not isinstance(payload[name], str):
            raise rest_error(400, f"payload.{name} must be a string")
        if name == "speech":  # its limits: check_speech, whose refusal keeps the document's own words
            continue
        if name in payload and not is_text(payload[name], rule.get("maxLength"), required=rule.get("minLength", 0) > 0):
            what = f"{rule['minLength']} to {rule['maxLength']} characters, not only spaces" if "maxLength" in rule else "valid Unicode text"
            raise rest_error(400, f"payload.{name} must be {what}")
    for name in ("lat", "long"):
        if name in payload:
            _check_coordinate_type(payload[name], name)
    kind = payload.get("type")
    if kind not in ("text", "event", "location", "media"):
        what = "is required" if kind is None else "must be"
        raise rest_error(400, f"payload.type {what}: one of text, event, location, media")
    if upload is not None and kind != "media":
        raise rest_error(400, "An uploaded file needs payload.type \"media\"")
    incoming = Incoming(
        kind=kind, trace_id=check_trace_id(arg("traceId")), originator=check_originator(payload.get("originator", body.get("originator"))),
        lang=check_lang(arg("lang")), timezone=check_timezone(arg("timezone")), params=check_params(arg("params")),
    )
    speech = payload.get("speech", payload.get("text"))
    if kind == "text":
        if speech is None:
            raise rest_error(400, "speech is required for a text message")
        incoming.speech = check_speech(speech)
        return incoming
    incoming.speech = check_speech(speech) if speech is not None else ""
    if kind == "event":
        if "eventName" not in payload:  # one given was checked against its documented limits above (TEXT_FIELDS)
            raise rest_error(400, "eventName is required: the name of the event to trigger")
        incoming.event_name = payload["eventName"]
    elif kind == "location":
        incoming.lat, incoming.long = _coordinate(payload.get("lat"), "lat"), _coordinate(payload.get("long"), "long")
    else:
        incoming.media = check_media(payload, upload)
    if incoming.from_moderator and kind == "event":
        raise rest_error(400, "A moderator sends text, location or media, not events")
    return incoming
