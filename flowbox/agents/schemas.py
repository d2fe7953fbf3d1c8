"""The Agents API's response bodies as TypedDicts, for the OpenAPI document at `/schema`
(`api.py` returns plain dicts; tests check that real responses match these)."""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from typing import Any, NotRequired, TypedDict

from ..apidoc import obj, string
from .chat import ROLES
from .store import MAX_INSTRUCTIONS, THREAD_ID
from .tools import BUILTIN_TOOLS


class Agent(TypedDict):
    """The agent"""

    id: str
    org_id: str
    name: str
    description: str
    instructions: str
    model: str
    temperature: float
    max_tokens: int | None
    tools: list[str]
    created_at: str
    updated_at: str


class AgentList(TypedDict):
    """The organisation's agents"""

    agents: list[Agent]


class Deleted(TypedDict):
    """Deleted"""

    message: str


class Message(TypedDict):
    """A stored message: `content` is text, or content parts (text, tool-call, tool-result)"""

    role: str
    content: str | list[dict[str, Any]]
    id: str


class Thread(TypedDict):
    """The thread's messages, oldest first"""

    thread_id: str
    agent_id: str
    messages: list[Message]


class ToolCallResult(TypedDict):
    toolName: str
    args: dict[str, Any]
    result: Any


class LegacyToolCall(ToolCallResult):
    toolCallId: str


class ChatMetadata(TypedDict):
    id: str
    model: str
    timestamp: str
    tool_calls: dict[str, ToolCallResult]  # keyed by tool call id
    execution_time: int  # milliseconds
    used_credits: float
    thread_id: str


class LegacyChatMetadata(TypedDict):
    id: str
    model: str
    timestamp: str
    tool_calls: list[LegacyToolCall]
    execution_time: str  # seconds, e.g. "1.52"
    used_credits: float
    thread_id: str


class ChatBody(TypedDict):
    agent_id: str
    conversation_history: list[Message]
    metadata: ChatMetadata


class LegacyChatBody(TypedDict):
    agent_id: str
    conversation_history: list[Message]
    metadata: LegacyChatMetadata


class ChatResponse(TypedDict):
    """The agent's reply and the whole thread (always check `statusCode`)"""

    statusCode: int
    body: ChatBody


class LegacyChatResponse(TypedDict):
    """The agent's reply and the whole thread (always check `statusCode`)"""

    statusCode: int
    body: LegacyChatBody


class ChatErrorBody(TypedDict):
    agent_id: str | None
    message: str
    error: str


class ChatError(TypedDict):
    """No credits available (402) or the model is unavailable (503), in the chat's wrapped shape"""

    statusCode: int
    body: ChatErrorBody


class AsyncAccepted(TypedDict):
    """Accepted: the reply is POSTed to `callback_url` when ready"""

    message: str
    status: str


class DailyUsage(TypedDict):
    date: str
    credits_used: float


class UsageTotals(TypedDict):
    total_credits_used: float
    daily_breakdown: list[DailyUsage]


class TimeRange(TypedDict):
    start: str
    end: str


class Usage(TypedDict):
    """Credits used per UTC day, newest first"""

    agent_id: str
    time_range: TimeRange
    usage: UsageTotals
    note: NotRequired[str]


# Request bodies (JSON schema; the handlers check them and answer the documented 400s).
_MESSAGE = obj(("content",), role={"type": "string", "enum": list(ROLES), "default": "user"},
               content={"oneOf": [string(), {"type": "array", "items": obj(type={"type": "string"}, text={"type": "string"})}]})
_CHAT_FIELDS = {
    "messages": {"oneOf": [string(), _MESSAGE, {"type": "array", "minItems": 1, "items": _MESSAGE}],
                 "description": "A message string, a message object, or an array of message objects "
                                "(content at most `max_message_chars`, 32000 by default)"},
    "thread_id": string(128, pattern=f"^{THREAD_ID.pattern}$",
                        description="Continue this thread, or start one with this id (it comes back in the response's metadata)"),
    "callback_url": string(2048, pattern="^https?://", description="Answer 202 now and POST the response here"),
}
CHAT_BODY = obj(("messages",), **_CHAT_FIELDS)
LEGACY_CHAT_BODY = obj(("agent_id", "messages"), agent_id=string(), **_CHAT_FIELDS)

_AGENT_FIELDS = {
    "name": string(200),
    "description": string(2000, min_length=0),
    "instructions": string(MAX_INSTRUCTIONS, min_length=0),
    "model": string(description="`local` or a configured remote model's name"),
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": 8192},
    "tools": {"type": "array", "items": {"type": "string", "enum": list(BUILTIN_TOOLS)}},
}
AGENT_CREATE_BODY = obj(("name",), closed=True, **_AGENT_FIELDS)
AGENT_UPDATE_BODY = obj(closed=True, **_AGENT_FIELDS)
