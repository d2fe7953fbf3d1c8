"""What every chat backend takes and gives. Messages are OpenAI-shaped dicts."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from ..errors import ReplyBroken
from ..stats import generation_stats


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments
    examples: tuple[tuple[str, dict[str, Any]], ...] = ()  # (user text, arguments): shown to small models
    # Optional: argument values the request itself suggests (e.g. expressions found in the user's
    # text). A small local model copies these far more reliably than it writes them.
    candidates: Callable[[str], dict[str, list[Any]]] | None = None
    # Optional precondition on the user's message; when it fails the tool is not offered.
    applies: Callable[[str], bool] | None = None

    def openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    max_tokens: int = 256
    temperature: float = 0.2
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str = "auto"  # auto | none
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Constrain the reply to this JSON schema (a grammar on the local model, response_format remotely).
    json_schema: dict[str, Any] | None = None


@dataclass
class ChatResult:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    model: str = ""


@dataclass
class TextDelta:
    text: str


@dataclass
class Done:
    result: ChatResult


Event = TextDelta | Done


def message_text(content: Any) -> str:
    """A message's content as text: a string, the text parts of a list of parts, or nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


class ChatBackend(Protocol):
    name: str
    n_ctx: int

    def stream(self, request: ChatRequest, key: str = "") -> AsyncIterator[Event]:
        """Yields text deltas as they are generated, then one Done. Closing it stops generation."""

    def count_tokens(self, messages: list[dict[str, Any]]) -> int: ...


# A reply that broke off is asked again this many times (a remote pool sends it to another server).
ASK_AGAIN = 2


async def generate(
    backend: ChatBackend,
    request: ChatRequest,
    key: str = "",
    on_text: Callable[[str], Awaitable[None]] | None = None,
) -> ChatResult:
    """Runs a request to the end, passing text deltas to ``on_text`` as they come. A reply that broke
    off is asked again while none of its text reached ``on_text``; after that, the caller has seen
    part of an answer, and the error is theirs."""
    for ask in range(ASK_AGAIN + 1):
        reached = False
        try:
            async with contextlib.aclosing(timed(backend, backend.stream(request, key))) as events:
                async for event in events:
                    if isinstance(event, Done):
                        return event.result
                    if on_text is not None:
                        reached = True
                        await on_text(event.text)
            raise RuntimeError("backend ended without a result")
        except ReplyBroken:
            if reached or ask == ASK_AGAIN:
                raise
    raise AssertionError("unreachable: the last ask returns or raises")


async def timed(backend: ChatBackend, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """``events`` passed on, timed into the backend's stats (the metrics' time to first token and
    tokens per second): the first text from the start (waiting for the model and reading the prompt
    included), then the tokens after it and the time they took."""
    stats = generation_stats(backend)
    started, first = time.perf_counter(), 0.0
    stats.running += 1
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, Done):
                    if first:
                        stats.decode_tokens += max(0, event.result.completion_tokens - 1)
                        stats.decode_seconds += time.perf_counter() - first
                elif not first:
                    first = time.perf_counter()
                    stats.first_token.observe(first - started)
                yield event
    finally:
        stats.running -= 1
