"""The `/v1` routes' request and response bodies in OpenAI's shapes, for the OpenAPI document at
`/schema` (the handlers build plain dicts; the fuzz test checks real responses against these)."""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from typing import Any, NotRequired, TypedDict

from ..apidoc import obj, string
from .embeddings import FIELDS as EMBEDDING_FIELDS
from .embeddings import MAX_INPUTS
from .params import ROLES


class OpenAIErrorDetail(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(TypedDict):
    """OpenAI's error shape"""

    error: OpenAIErrorDetail


class Model(TypedDict):
    """A model: one of the organisation's agents (`owned_by: flowbox-agent`) or a raw model"""

    id: str
    object: str
    created: int
    owned_by: str
    name: NotRequired[str]
    description: NotRequired[str]


class ModelList(TypedDict):
    """The organisation's agents, then the raw chat models and the embedding model"""

    object: str
    data: list[Model]


class FunctionCall(TypedDict):
    name: str
    arguments: str  # JSON


class ToolCall(TypedDict):
    id: str
    type: str
    function: FunctionCall


class AssistantMessage(TypedDict):
    role: str
    content: str | None
    refusal: None
    tool_calls: NotRequired[list[ToolCall]]


class Choice(TypedDict):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: str


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(TypedDict):
    """The completion (with `stream: true`, `text/event-stream` chunks ending in `data: [DONE]`)"""

    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: None
    flowbox: NotRequired[dict[str, Any]]  # agent runs: thread_id, run_id, used_credits, tool calls run inside


class Embedding(TypedDict):
    object: str
    index: int
    embedding: list[float] | str  # base64 of little-endian float32 with encoding_format=base64


class EmbeddingUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(TypedDict):
    """One embedding per input, in order"""

    object: str
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


_CONTENT = {"oneOf": [{"type": "string"}, {"type": "array", "items": obj(("type",), type=string(), text={"type": "string"})},
                      {"type": "null"}]}
COMPLETION_BODY = obj(
    ("model", "messages"),
    model=string(description="An agent id, or a raw model (see GET /v1/models)"),
    messages={"type": "array", "minItems": 1,
              "items": obj(("role",), role={"type": "string", "enum": list(ROLES)}, content=_CONTENT,
                           tool_calls={"type": "array", "items": {"type": "object"}}, tool_call_id={"type": "string"})},
    stream={"type": "boolean"}, stream_options=obj(include_usage={"type": "boolean"}),
    max_tokens={"type": "integer", "minimum": 1}, max_completion_tokens={"type": "integer", "minimum": 1},
    temperature={"type": "number", "minimum": 0, "maximum": 2}, seed={"type": "integer"},
    stop={"oneOf": [string(), {"type": "array", "maxItems": 4, "items": string()}]},
    tools={"type": "array", "items": {"type": "object"}}, tool_choice={"oneOf": [{"type": "string"}, {"type": "object"}]},
    response_format={"type": "object"}, metadata={"type": "object"},
)
_INPUT = string(description="A text to embed")
EMBEDDINGS_BODY = obj(
    ("model", "input"), closed=True,
    model=string(description="The embedding model's name (see GET /v1/models)"),
    input={"oneOf": [_INPUT, {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": _INPUT}]},
    encoding_format={"type": "string", "enum": ["float", "base64"]},
    dimensions={"type": "integer", "description": "Only the model's own dimension is accepted"},
    user={"type": "string"},
)
assert set(EMBEDDINGS_BODY["properties"]) == EMBEDDING_FIELDS  # documented = accepted
