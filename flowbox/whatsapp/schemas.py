"""The WhatsApp routes' request and response bodies, for the OpenAPI document at `/schema`."""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from typing import Any, NotRequired, TypedDict

from ..apidoc import nullable, obj, string
from . import cloud
from .store import API_VERSION, PHONE_NUMBER_ID


class Contact(TypedDict):
    input: str
    wa_id: str


class SentMessage(TypedDict):
    id: str


class TemplateSent(TypedDict):
    """The WhatsApp Cloud API's answer, as it sent it"""

    messaging_product: NotRequired[str]
    contacts: NotRequired[list[Contact]]
    messages: NotRequired[list[SentMessage]]


class WhatsAppError(TypedDict):
    """The WhatsApp Cloud API could not be reached, or refused the message (its error in `whatsapp_error`)"""

    error: str
    message: str
    whatsapp_error: NotRequired[Any]


class Connection(TypedDict):
    """The connection (its access token masked)"""

    id: str
    org_id: str
    agent_id: str | None  # null: the organisation's, for agents without their own
    phone_number_id: str
    access_token: str
    api_base_url: str | None
    api_version: str | None
    created_at: str
    updated_at: str


class Connections(TypedDict):
    """The organisation's connections"""

    connections: list[Connection]


class Deleted(TypedDict):
    """Deleted"""

    message: str


SEND_BODY = obj(
    ("recipient_phone_number", "template_name", "language"),
    recipient_phone_number=string(description="With its country code, e.g. 31612345678"),
    template_name=string(512, pattern="^[a-z0-9_]+$"),
    language=string(pattern=f"^{cloud.LANGUAGE.pattern}$", description="e.g. en, en_US, nl_NL"),
    customer_name=string(256, min_length=0),
    parameters={"type": "array", "items": obj(("type",), type=string()), "description": "Template components"},
)
CONNECTION_BODY = obj(
    ("phone_number_id", "access_token"), closed=True,
    phone_number_id=string(pattern=f"^{PHONE_NUMBER_ID}$", description="The WhatsApp Business phone number id"),
    access_token=string(4096, description="The Cloud API access token (shown masked afterwards)"),
    api_base_url=nullable(string(description="Default (absent or null): the whatsapp_api_base_url setting")),
    api_version=nullable(string(pattern=f"^{API_VERSION}$", description="e.g. v21.0; default (absent or null): the whatsapp_api_version setting")),
    agent_id=nullable(string(min_length=0, description="One agent's own connection; absent or null: the organisation's")),
)
