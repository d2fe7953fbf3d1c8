"""Checking a ``POST /v1/chat/completions`` body: every problem is a 400 in OpenAI's shape naming
the parameter, and what passes becomes plain values: messages in the Agents-API stored form (so
an agent's thread can keep them), caller tools as ``ToolSpec``s, a JSON schema for constrained replies.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..http import BadJSON, decode_json
from ..ids import short_id
from ..models import ToolSpec
from ..validation import is_number, is_text
from .errors import bad, unsupported

KNOWN = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "stop", "seed", "tools", "tool_choice", "parallel_tool_calls", "response_format", "n", "user", "metadata",
    "store", "service_tier", "prompt_cache_key", "safety_identifier", "reasoning_effort", "verbosity",
    "top_p", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias", "modalities",
    "functions", "function_call", "audio", "prediction", "web_search_options",
}
# Accepted only at the value that changes nothing: flowbox's samplers do not take them.
NEUTRAL = {"top_p": (1, 1.0), "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logprobs": (False,),
           "top_logprobs": (0,), "logit_bias": ({},), "n": (1,), "modalities": (["text"],)}
UNSUPPORTED = {"functions": "; use 'tools'", "function_call": "; use 'tool_choice'", "audio": "", "prediction": "",
               "web_search_options": ""}
ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class CompletionParams:
    model: str
    messages: list[dict[str, Any]]  # stored form: {"role", "content", "id"}
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str | None = None  # auto | none | required | a function name (forced)
    json_schema: dict[str, Any] | None = None
    thread_id: str | None = None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _type_error(param: str, expected: str, value: Any) -> Exception:
    return bad(f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.", param, "invalid_type")


def _number(body: dict, name: str, low: float, high: float, integer: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not is_number(value, integer=integer):
        raise _type_error(name, "an integer" if integer else "a number", value)
    if not low <= value <= high:
        raise bad(f"Invalid '{name}': {value} is out of range; expected a value from {low} to {high}.", name)
    return value


def parse(body: Any, thread_header: str | None = None) -> CompletionParams:
    """Everything except the messages, which need the model and thread first (``parse_messages``)."""
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.", None, "invalid_type")
    for name in body:
        if name not in KNOWN:
            raise bad(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
    for name, why in UNSUPPORTED.items():
        if body.get(name) is not None:
            raise unsupported(name, why)
    for name, neutral in NEUTRAL.items():
        if body.get(name) is not None and body[name] not in neutral:
            raise unsupported(name, f" (only {json.dumps(neutral[0])} is accepted)")
    model = body.get("model")
    if not is_text(model, required=True):
        raise bad("you must provide a model parameter", "model", "missing_required_parameter")
    params = CompletionParams(model=model.strip(), messages=[])
    params.stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None:
        if not params.stream:
            raise bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
        if not isinstance(options, dict):
            raise _type_error("stream_options", "an object", options)
        params.include_usage = _flag(options, "include_usage", "stream_options.include_usage")
    params.max_tokens = _number(body, "max_completion_tokens", 1, 1 << 20, True) or _number(body, "max_tokens", 1, 1 << 20, True)
    params.temperature = _number(body, "temperature", 0, 2)
    params.seed = _number(body, "seed", -(1 << 63), (1 << 64) - 1, True)
    params.stop = _stop(body.get("stop"))
    params.tools = parse_tools(body.get("tools"))
    params.tool_choice = _tool_choice(body.get("tool_choice"), params.tools)
    params.json_schema = _response_format(body.get("response_format"))
    params.thread_id = _thread(body.get("metadata"), thread_header)
    return params


def _flag(body: dict, name: str, param: str | None = None) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _type_error(param or name, "a boolean", value)
    return bool(value)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values) or len(values) > 4:
        raise bad("Invalid 'stop': expected a non-empty string or an array of up to 4 non-empty strings.", "stop", "invalid_type")
    return values


def _thread(metadata: Any, header: str | None) -> str | None:
    if metadata is not None and not isinstance(metadata, dict):
        raise _type_error("metadata", "an object", metadata)
    from_body = (metadata or {}).get("thread_id")
    if from_body is not None and not is_text(from_body, required=True):
        raise bad("Invalid 'metadata.thread_id': expected a non-empty string.", "metadata.thread_id")
    header = (header or "").strip() or None
    if header and from_body and header != from_body.strip():
        raise bad("X-Flowbox-Thread and metadata.thread_id name different threads.", "metadata.thread_id")
    return header or (from_body.strip() if from_body else None)


# -- tools and schemas ------------------------------------------------------------------------------

def inline_refs(schema: Any, param: str) -> Any:
    """Local ``$ref``s (``#/$defs/X``, ``#/definitions/X``, as pydantic writes them) replaced by
    their targets: the tool router nests each schema inside its own, where such refs would dangle."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})} if isinstance(schema, dict) else {}

    def walk(node: Any, depth: int) -> Any:
        if depth > 32:
            raise bad(f"Invalid schema in '{param}': recursive or too deeply nested.", param, "invalid_function_parameters")
        if isinstance(node, list):
            return [walk(item, depth + 1) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if not ref.startswith(("#/$defs/", "#/definitions/")) or name not in defs:
                raise bad(f"Invalid schema in '{param}': cannot resolve reference {ref!r}.", param, "invalid_function_parameters")
            return walk({**copy.deepcopy(defs[name]), **{k: v for k, v in node.items() if k != "$ref"}}, depth + 1)
        return {k: walk(v, depth + 1) for k, v in node.items() if k not in ("$defs", "definitions")}

    return walk(schema, 0)


def check_grammar(schema: dict[str, Any], param: str, label: str) -> None:
    """The local model constrains replies with a grammar made from the schema: one it cannot
    make is the caller's mistake (or beyond it), told now rather than mid-reply."""
    from ..models.grammar import InvalidSchema, schema_grammar

    try:
        schema_grammar(schema)
    except InvalidSchema as exc:
        raise bad(f"Invalid schema for {label}: {exc}", param, "invalid_function_parameters") from None


def parse_tools(value: Any) -> list[ToolSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _type_error("tools", "an array", value)
    if len(value) > 128:
        raise bad("Invalid 'tools': array too long. Expected an array with maximum length 128.", "tools", "array_above_max_length")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _type_error(param, "an object", tool)
        if tool.get("type") != "function":
            raise bad(f"Invalid value for '{param}.type': only 'function' tools are supported.", f"{param}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad(f"Missing required parameter: '{param}.function'.", f"{param}.function", "missing_required_parameter")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise bad(f"Invalid '{param}.function.name': string does not match pattern. Expected a string that matches "
                      "the pattern '^[a-zA-Z0-9_-]+$' (at most 64 characters).", f"{param}.function.name")
        if any(spec.name == name for spec in specs):
            raise bad(f"Invalid 'tools': duplicate function name '{name}'.", f"{param}.function.name")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise _type_error(f"{param}.function.description", "a string", description)
        schema = function.get("parameters")
        schema = {"type": "object", "properties": {}} if schema is None else schema
        pparam = f"{param}.function.parameters"
        if not isinstance(schema, dict):
            raise _type_error(pparam, "an object", schema)
        if schema.get("type") != "object":
            raise bad(f"Invalid schema for function '{name}': schema must be a JSON Schema of 'type: \"object\"', "
                      f"got 'type: {json.dumps(schema.get('type'))}'.", pparam, "invalid_function_parameters")
        schema = inline_refs(schema, pparam)
        specs.append(ToolSpec(name=name, description=description, parameters=schema))
    return specs


def _tool_choice(value: Any, tools: list[ToolSpec]) -> str | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        if value == "required" and not tools:
            raise bad("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", "tool_choice")
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        if not any(spec.name == name for spec in tools):
            raise bad(f"Invalid value for 'tool_choice': no function named '{name}' was specified in the 'tools' parameter.",
                      "tool_choice")
        return name
    raise bad("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a function choice object.", "tool_choice")


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error("response_format", "an object", value)
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise bad("Missing required parameter: 'response_format.json_schema.schema'.",
                      "response_format.json_schema.schema", "missing_required_parameter")
        return inline_refs(spec["schema"], "response_format.json_schema.schema")
    raise bad("Invalid value for 'response_format.type': expected 'text', 'json_object' or 'json_schema'.", "response_format.type")


# -- messages -------------------------------------------------------------------------------------

def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _type_error(param, "a string or an array of content parts", content)
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            raise _type_error(f"{param}[{index}]", "an object", part)
        kind = part.get("type")
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            texts.append(part[kind])
        else:
            raise bad(f"Invalid content part '{param}[{index}]': flowbox models read text only "
                      f"('{kind}' parts are not supported).", f"{param}[{index}].type", "unsupported_value")
    return "".join(texts)


def _tool_calls(value: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _type_error(param, "an array", value)
    parts = []
    for index, call in enumerate(value):
        where = f"{param}[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str) or not isinstance(function.get("name"), str):
            raise bad(f"Invalid '{where}': expected an object with 'id', 'type': 'function' and 'function': {{'name', 'arguments'}}.", where)
        arguments = function.get("arguments") or "{}"
        try:
            args = decode_json(arguments) if isinstance(arguments, str) else None
        except BadJSON:
            args = None
        if not isinstance(args, dict):
            raise bad(f"Invalid '{where}.function.arguments': expected a JSON object encoded as a string.", f"{where}.function.arguments")
        parts.append({"type": "tool-call", "toolCallId": call["id"], "toolName": function["name"], "args": args})
    return parts


def parse_messages(value: Any, known_calls: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """OpenAI messages → the stored form. ``known_calls`` (call id → tool name) are the calls a
    stored thread already holds, which tool messages may answer."""
    if not isinstance(value, list):
        raise bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter") if value is None \
            else _type_error("messages", "an array", value)
    if not value:
        raise bad("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                  "messages", "empty_array")
    calls = dict(known_calls or {})
    out: list[dict[str, Any]] = []
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _type_error(param, "an object", message)
        role = message.get("role")
        if role not in ROLES:
            if role is None:
                raise bad(f"Missing required parameter: '{param}.role'.", f"{param}.role", "missing_required_parameter")
            raise bad(f"Invalid value: {json.dumps(role)}. Supported values are: 'system', 'assistant', 'user', 'tool', "
                      "and 'developer'.", f"{param}.role")
        content = message.get("content")
        if role == "assistant" and message.get("tool_calls"):
            parts = _tool_calls(message["tool_calls"], f"{param}.tool_calls")
            text = "" if content is None else _text(content, f"{param}.content")
            calls.update({p["toolCallId"]: p["toolName"] for p in parts})
            stored: Any = ([{"type": "text", "text": text}] if text else []) + parts
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in calls:
                raise bad("Invalid parameter: messages with role 'tool' must be a response to a preceding message with "
                          "'tool_calls'.", f"{param}.tool_call_id")
            text = _text(content, f"{param}.content")
            try:
                result = decode_json(text)
            except BadJSON:  # not JSON flowbox can hold: kept as the text it is
                result = text
            stored = [{"type": "tool-result", "toolCallId": call_id, "toolName": calls[call_id], "result": result}]
        else:
            if content is None and role != "assistant":
                raise bad(f"Missing required parameter: '{param}.content'.", f"{param}.content", "missing_required_parameter")
            stored = "" if content is None else _text(content, f"{param}.content")
        out.append({"role": "system" if role == "developer" else role, "content": stored, "id": short_id("msg")})
    return out
