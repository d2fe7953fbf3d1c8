"""Native tool calling for local models whose chat template knows tools.

Models tuned for function calling carry their way of being shown tools and of calling one in their
chat template: Hermes-style templates (Qwen 2.5, Hermes) write ``<tool_call>{"name": .., "arguments":
..}</tool_call>``, Llama 3.x a bare ``{"name": .., "parameters": ..}``, Mistral ``[TOOL_CALLS]`` and a
JSON array. ``detect`` finds the format in the template text. With one, the prompt is rendered with
the template's ``tools`` variable (OpenAI function schemas) and tool turns as the template expects
them (assistant ``tool_calls``, role ``tool``); the reply is watched as it streams (``CallWatch``)
and stops where a call starts. The call itself is then generated under a grammar (``call_schema``:
one of the offered tools with its argument schema), continuing from the same prompt, so the JSON
parsed (``ToolFormat.parse``) is valid: a lazy grammar made of two generations, the second
reusing the first's evaluated prefix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .base import ToolCall, ToolSpec, message_text


@dataclass(frozen=True)
class ToolFormat:
    name: str
    markers: tuple[str, ...]  # text that starts a call anywhere in a reply (not part of the JSON)
    openings: tuple[str, ...] = ()  # text that starts a call only at the start of a reply (the JSON's start)
    closers: tuple[str, ...] = ()  # text that ends a call (not part of the JSON)
    lead: str = ""  # what the constrained call continues from, as the template writes it
    arguments_key: str = "arguments"
    array: bool = False  # the calls are one JSON array
    one_call_per_message: bool = False  # the template renders one call per assistant message
    id_length: int = 0  # the template insists on call ids of this many alphanumerics (0: any id)

    # -- the prompt ---------------------------------------------------------------------------

    def messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """OpenAI-shaped messages (tool calls as ``{id, name, arguments}``) as the template reads them."""
        out: list[dict[str, Any]] = []
        for message in messages:
            role = message.get("role")
            if role == "tool":
                out.append({"role": "tool", "content": message_text(message.get("content")), "name": message.get("name", ""),
                            "tool_call_id": self._call_id(message.get("tool_call_id", ""))})
            elif role == "assistant" and message.get("tool_calls"):
                calls = [{"id": self._call_id(c["id"]), "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                         for c in message["tool_calls"]]
                groups = [[c] for c in calls] if self.one_call_per_message else [calls]
                for index, group in enumerate(groups):
                    out.append({"role": "assistant", "content": message_text(message.get("content")) if index == 0 else "", "tool_calls": group})
            else:
                out.append({"role": role, "content": message_text(message.get("content"))})
        return out

    def _call_id(self, call_id: str) -> str:
        if not self.id_length:
            return call_id
        return hashlib.sha256(call_id.encode()).hexdigest()[: self.id_length]  # the same id for a call and its result

    # -- the reply ----------------------------------------------------------------------------

    def call_start(self, text: str) -> int | None:
        """Where a call starts in a reply, or None."""
        found = [i for marker in self.markers if (i := text.find(marker)) >= 0]
        stripped = text.lstrip()
        if any(stripped.startswith(opening) for opening in self.openings):
            found.append(len(text) - len(stripped))
        return min(found, default=None)

    def undecided(self, text: str) -> int:
        """How many characters at the end of ``text`` may still become the start of a call."""
        stripped = text.lstrip()
        if stripped and any(opening.startswith(stripped) for opening in self.openings):
            return len(text)
        return max((n for marker in self.markers for n in range(1, len(marker)) if text.endswith(marker[:n])), default=0)

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """A reply split into its text and its calls, leniently: whatever JSON can be read after the
        call's start (every call that parses; a model's slightly-off spacing or order is fine)."""
        start = self.call_start(text)
        if start is None:
            return text, []
        rest = text[start:]
        for marker in (*self.markers, *self.closers):
            rest = rest.replace(marker, " ")
        calls = [call for value in _json_values(rest) for item in (value if isinstance(value, list) else [value])
                 if (call := self._call(item)) is not None]
        return text[:start], calls

    def _call(self, item: Any) -> ToolCall | None:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        arguments = item.get(self.arguments_key, item.get("arguments", item.get("parameters", {})))
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(arguments, dict):
            return None
        return ToolCall(id="", name=item["name"], arguments=arguments)

    def call_schema(self, tools: list[ToolSpec]) -> dict[str, Any]:
        """The JSON schema of what follows ``lead``: a call of one of ``tools`` (Mistral: a list of them)."""
        one = {"oneOf": [{
            "type": "object",
            "properties": {"name": {"const": tool.name}, self.arguments_key: tool.parameters},
            "required": ["name", self.arguments_key],
            "additionalProperties": False,
        } for tool in tools]}
        return {"type": "array", "items": one, "minItems": 1} if self.array else one


HERMES = ToolFormat("hermes", markers=("<tool_call>",), closers=("</tool_call>",), lead="<tool_call>\n")
LLAMA3 = ToolFormat("llama3", markers=("<|python_tag|>",), openings=('{"name"', '{ "name"'), closers=("<|eom_id|>", "<|eot_id|>"),
                    arguments_key="parameters", one_call_per_message=True)
MISTRAL = ToolFormat("mistral", markers=("[TOOL_CALLS]",), openings=('[{"name"', '[ {"name"'), lead="[TOOL_CALLS]", array=True, id_length=9)
FORMATS = {f.name: f for f in (HERMES, LLAMA3, MISTRAL)}


def detect(template: str | None) -> ToolFormat | None:
    """The tool-call format a chat template renders, or None (the template knows no tools)."""
    if not template or "tools" not in template:
        return None
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "<tool_call>" in template:
        return HERMES
    if "<|start_header_id|>" in template and ('"parameters"' in template or "<|python_tag|>" in template):
        return LLAMA3
    return None


def template_with_tools(metadata: dict[str, str]) -> str | None:
    """The chat template to render with: the file's own, or its ``tool_use`` variant when only that
    one has a tool format (Hermes 2 Pro and Hermes 3 files keep a second template for tools)."""
    template, tool_use = metadata.get("tokenizer.chat_template"), metadata.get("tokenizer.chat_template.tool_use")
    return tool_use if detect(template) is None and detect(tool_use) is not None else template


class CallWatch:
    """Follows a reply as it streams: ``feed`` returns the text that can no longer be part of a
    call (to stream on); ``call_at`` is set once a call has started."""

    def __init__(self, tool_format: ToolFormat):
        self.format = tool_format
        self.text = ""
        self.call_at: int | None = None
        self._sent = 0

    def feed(self, piece: str) -> str:
        self.text += piece
        self.call_at = self.format.call_start(self.text)
        safe = self.call_at if self.call_at is not None else len(self.text) - self.format.undecided(self.text)
        return self._take(safe)

    def rest(self) -> str:
        """The end of a reply without a call: what was held back."""
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        out = self.text[self._sent:upto] if upto > self._sent else ""
        self._sent = max(self._sent, upto)
        return out


def _json_values(text: str) -> list[Any]:
    """The JSON values written one after another in ``text`` (separated by spaces, commas or
    semicolons), up to the first thing that is not JSON."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    while True:
        while i < len(text) and text[i] in " \t\r\n,;":
            i += 1
        if i >= len(text):
            return values
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return values
        values.append(value)
