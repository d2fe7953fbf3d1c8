"""The Chats API's request and response bodies, for the OpenAPI document at `/schema` (`api.py`
returns plain dicts and checks bodies itself; the fuzz test checks real responses against these)."""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from typing import NotRequired, TypedDict

from ..apidoc import obj, string
from .flows import EXPORT_FORMAT, HUMAN_INPUT_MODES, MAX_AGENTS, MAX_ROUNDS, SPEAKER_SELECTION


class FlowAgent(TypedDict):
    """One of a flow's agents: an assistant (its own instructions and model, or `agent_id`) or the user proxy"""

    name: str
    type: str
    description: str
    instructions: NotRequired[str]
    model: NotRequired[str]
    temperature: NotRequired[float]
    max_tokens: NotRequired[int | None]
    agent_id: NotRequired[str]
    human_input_mode: NotRequired[str]
    auto_reply: NotRequired[str]


class FlowDefinition(TypedDict):
    name: str
    description: str
    agents: list[FlowAgent]
    speaker_selection: str
    manager_model: str
    max_rounds: int
    termination_keyword: str | None


class Flow(FlowDefinition):
    """The flow"""

    id: str
    created_at: str
    updated_at: str


class FlowExport(TypedDict):
    """A portable document: POST it to /chatflows/import"""

    format: str
    version: int
    flow: FlowDefinition


class Deleted(TypedDict):
    """Deleted"""

    id: str
    deleted: bool


class Waiting(TypedDict):
    agent: str
    reason: str  # 'turn' or 'termination'


class Chat(TypedDict):
    """The chat session and its status"""

    id: str
    name: str
    from_type: str
    from_flow: str
    status: str  # ready, running, wait_for_human_input, completed, error
    error: str | None
    waiting_for: Waiting | None
    round: int
    max_rounds: int
    created_at: str
    updated_at: str


class ChatMessage(TypedDict):
    """A chat message"""

    id: str
    type: str
    sender: str
    content: str
    created_at: str


class Accepted(TypedDict):
    """Accepted: the chat runs in the background (follow GET /chats/{chat_id}, its messages or its stream)"""

    chat: Chat
    message: ChatMessage | None


class Busy(TypedDict):
    """The chat's status does not allow this now"""

    error: str
    message: str
    status: str


class AccessToken(TypedDict):
    """An access token for `Authorization: Bearer <token>`"""

    access_token: str
    token_type: str
    expires_in: int


class OAuthError(TypedDict):
    """RFC 6749 section 5.2 error"""

    error: str
    error_description: str


# -- request bodies --------------------------------------------------------------------------------

_NULLABLE_STRING = {"type": ["string", "null"]}
FLOW_AGENT = obj(
    ("name",),
    name={"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    type={"type": "string", "enum": ["assistant", "user_proxy"], "default": "assistant"},
    description=string(2000, min_length=0),
    instructions=string(20_000, min_length=0, description="Assistants without agent_id"),
    model=string(description="'local', an added model or a configured remote model (see GET /api/admin/options)"),
    temperature={"type": "number", "minimum": 0, "maximum": 2},
    max_tokens={"type": ["integer", "null"], "minimum": 1, "maximum": 8192},
    agent_id=string(200, description="An agent of the Agents API; its instructions and model are used"),
    human_input_mode={"type": "string", "enum": list(HUMAN_INPUT_MODES), "description": "The user proxy's"},
    auto_reply=string(2000, min_length=0, description="The user proxy's answer when it is not asked"),
)
_FLOW_FIELDS = dict(
    name=string(200),
    description=string(2000, min_length=0),
    agents={"type": "array", "items": FLOW_AGENT, "minItems": 1, "maxItems": MAX_AGENTS},
    speaker_selection={"type": "string", "enum": list(SPEAKER_SELECTION)},
    manager_model=string(description="The model that picks the next speaker when speaker_selection is 'auto'"),
    max_rounds={"type": "integer", "minimum": 1, "maximum": MAX_ROUNDS},
    termination_keyword={**_NULLABLE_STRING, "maxLength": 100},
)
FLOW_BODY = obj(("name", "agents"), **_FLOW_FIELDS)
FLOW_UPDATE_BODY = obj(**_FLOW_FIELDS)  # the fields given replace the flow's (agents as a whole)
IMPORT_BODY = {"anyOf": [
    obj(("format", "version", "flow"), format={"type": "string", "enum": [EXPORT_FORMAT]}, version={"type": "integer", "enum": [1]},
        flow=FLOW_BODY),
    FLOW_BODY,
], "description": "A document from GET /chatflows/{flow_id}/export, or a bare flow definition"}
CHAT_BODY = obj(("from_flow",), from_flow=string(description="The flow's id (see GET /chatflows)"),
                from_type={"type": "string", "enum": ["flow"], "default": "flow"},
                name=string(200, description="Defaults to the flow's name"))
MESSAGE_BODY = obj(("message",), message=string(description="At most `max_message_chars` (32000 by default)"))
INPUT_BODY = obj(("message",), message=string(min_length=0, description="The human's answer; 'exit' ends the chat"))
TOKEN_BODY = obj(
    ("grant_type",),
    grant_type={"type": "string", "enum": ["client_credentials"]},
    client_secret=string(description="Your API key (or send it with HTTP Basic authentication)"),
    client_id=string(description="Optional: the key's id (`flowbox keys list`)"),
)
