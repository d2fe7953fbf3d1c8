"""The template send: the request's checks, the Cloud API payload and the call itself."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .. import netguard
from ..config import Config
from ..errors import Problem, error
from ..validation import invalid, is_text

PHONE_SEPARATORS = re.compile(r"[\s().-]")
PHONE = re.compile(r"[1-9][0-9]{6,14}")  # E.164: country code first, at most 15 digits
TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")
LANGUAGE = re.compile(r"[a-z]{2,3}([_-][A-Za-z0-9]{2,4})?")
MAX_PARAMETERS_BYTES = 64_000


@dataclass
class TemplateSend:
    recipient: str
    template_name: str
    language: str
    customer_name: str | None = None
    components: list[dict[str, Any]] | None = None


def parse_send(body: Any) -> TemplateSend:
    """The documented fields; a missing one is the documented 400, a malformed one a 400 naming it."""
    if not isinstance(body, dict):
        raise error(400, "Invalid JSON body", "The request body must be a JSON object.")
    recipient, template, language = body.get("recipient_phone_number"), body.get("template_name"), body.get("language")
    if not is_text(recipient, required=True) or not is_text(template, required=True):
        raise error(400, "Missing required fields", "recipient_phone_number and template_name are required")
    if not is_text(language, required=True):
        raise error(400, "Missing required fields", "language is required")
    number = PHONE_SEPARATORS.sub("", recipient).removeprefix("+")
    if not PHONE.fullmatch(number):
        raise error(400, "Invalid phone number", "recipient_phone_number must be the number with its country code, 7 to 15 digits (e.g. 31612345678)")
    if not TEMPLATE_NAME.fullmatch(template):
        raise error(400, "Invalid template name", "template_name must be lowercase letters, digits and underscores")
    if not LANGUAGE.fullmatch(language):
        raise error(400, "Invalid language", "language must be a language code such as en, en_US or nl_NL")
    customer_name = body.get("customer_name")
    if customer_name is not None and not is_text(customer_name, 256):
        raise invalid("\"customer_name\" must be a string of at most 256 characters.")
    components = body.get("parameters")
    if components is not None:
        if not isinstance(components, list) or not all(isinstance(c, dict) and is_text(c.get("type"), required=True) for c in components):
            raise invalid("\"parameters\" must be an array of template component objects, each with a \"type\".")
        if len(json.dumps(components)) > MAX_PARAMETERS_BYTES:
            raise invalid(f"\"parameters\" must be at most {MAX_PARAMETERS_BYTES} bytes of JSON.")
    return TemplateSend(number, template, language, customer_name or None, components or None)


def payload(send: TemplateSend) -> dict[str, Any]:
    """The Cloud API's template message; the document's ``parameters`` are its ``components``."""
    template: dict[str, Any] = {"name": send.template_name, "language": {"code": send.language}}
    if send.components:
        template["components"] = send.components
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": send.recipient, "type": "template", "template": template}


def messages_url(connection: dict[str, Any], config: Config) -> str:
    base = (connection["api_base_url"] or config.whatsapp_api_base_url).rstrip("/")
    return f"{base}/{connection['api_version'] or config.whatsapp_api_version}/{connection['phone_number_id']}/messages"


def upstream_error(status: int, message: str, detail: Any = None) -> Problem:
    return error(status, "WhatsApp API error", message, **({"whatsapp_error": detail} if detail is not None else {}))


async def send(config: Config, connection: dict[str, Any], message: TemplateSend) -> tuple[int, dict[str, Any]]:
    """POSTs the template; returns (Cloud API status, its JSON reply). Failures raise a Problem:
    the Cloud API's 400/404 (unknown template, bad parameters or recipient) as a 400 with its
    message; anything else it or the network does wrong as a 502."""
    allow_private = bool(config.allow_private_outbound)
    body = json.dumps(payload(message)).encode()
    headers = {"Authorization": f"Bearer {connection['access_token']}", "Content-Type": "application/json"}
    try:
        async with netguard.client(allow_private, max_connections=1) as pool:
            reply = await netguard.post(pool, messages_url(connection, config), body, headers, allow_private=allow_private,
                                        timeout=config.whatsapp_timeout_ms / 1000, max_bytes=1_000_000)
    except netguard.URLRefused as exc:
        raise upstream_error(502, f"The WhatsApp API URL is not allowed: {exc}") from None
    except Exception as exc:  # timeouts, refused connections, DNS, TLS
        raise upstream_error(502, f"The WhatsApp API could not be reached ({type(exc).__name__}: {exc})".replace(": )", ")")) from None
    try:
        data = json.loads(reply.body)
    except ValueError:
        data = None
    if 200 <= reply.status < 300:
        if not isinstance(data, dict):
            raise upstream_error(502, f"The WhatsApp API answered {reply.status} without a JSON object")
        return reply.status, data
    detail = data.get("error") if isinstance(data, dict) else None
    text = detail.get("message") if isinstance(detail, dict) else None
    extra = (detail.get("error_data") or {}).get("details") if isinstance(detail, dict) and isinstance(detail.get("error_data"), dict) else None
    message = f"The WhatsApp API answered {reply.status}" + (f": {text}" if text else "") + (f" ({extra})" if extra else "")
    raise upstream_error(400 if reply.status in (400, 404) else 502, message, detail)
