"""The Agents API's response bodies as TypedDicts, for the OpenAPI document at `/schema`
(`api.py` returns plain dicts; tests check that real responses match these)."""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from typing import Any, NotRequired, TypedDict


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
