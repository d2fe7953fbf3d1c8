"""A remote OpenAI-compatible chat model, with native function calling and SSE streaming, on one
server or a pool of them (pool.py picks the server)."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import httpx

from ..config import RemoteModel
from ..errors import ModelError, ReplyBroken, upstream_refusal
from .base import ChatRequest, ChatResult, Done, Event, TextDelta, ToolCall
from .pool import Lease, Pool

CONNECT_TIMEOUT_S = 5.0  # a server that does not accept within this is failed over
PROBE_TIMEOUT_S = 3.0
UNAVAILABLE = (502, 503, 504)  # answers that say "not this server, not now" (loading, overloaded, its proxy's backend gone)


class _Unavailable(Exception):
    """This server answered one of UNAVAILABLE: another may take the request."""

    def __init__(self, reason: str, error: ModelError):
        super().__init__(reason)
        self.error = error


class RemoteChatModel:
    def __init__(self, remote: RemoteModel, n_ctx: int = 8192, timeout: float = 120.0):
        self.name = remote.name
        self.remote = remote
        self.n_ctx = n_ctx
        headers = {"Authorization": f"Bearer {remote.api_key}"} if remote.api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S))
        self.pool = Pool(remote.name, remote.base_urls, self._answers)

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self._client.aclose()

    async def _answers(self, base_url: str) -> bool:
        """The pool's probe: the server answers its model list (any answer but a server error)."""
        try:
            response = await self._client.get(f"{base_url}/models", timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return sum(len(json.dumps(m)) for m in messages) // 4  # an estimate; the server counts for real

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.remote.model,
            "messages": [_wire(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            payload["stop"] = request.stop
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.json_schema:
            payload["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": request.json_schema}}
        if request.tools and request.tool_choice != "none":
            payload["tools"] = [t.openai() for t in request.tools]
            payload["tool_choice"] = request.tool_choice
        return payload

    async def stream(self, request: ChatRequest, key: str = "") -> AsyncIterator[Event]:
        """The reply from the pool's least busy server. A server that does not take the request is
        taken out and the next one tried; once the reply began, a break is ReplyBroken (never sent
        elsewhere here: the caller may have shown part of it)."""
        payload = self._payload(request)
        tried: set[str] = set()
        error = ModelError(f"remote model {self.name} has no server")
        while (backend := self.pool.pick(tried)) is not None:
            tried.add(backend.url)
            began = False
            with self.pool.lease(backend) as lease:
                try:
                    async for event in self._reply(lease, request, payload):
                        began = True
                        yield event
                    return
                except _Unavailable as exc:
                    self.pool.failed(backend, str(exc))
                    error = exc.error
                except httpx.HTTPError as exc:
                    self.pool.failed(backend, type(exc).__name__)
                    if began:
                        raise ReplyBroken(f"remote model {self.name} broke off its reply: {type(exc).__name__}") from exc
                    error = ModelError(f"remote model {self.name} is unreachable: {type(exc).__name__}")
        raise error

    async def _reply(self, lease: Lease, request: ChatRequest, payload: dict[str, Any]) -> AsyncIterator[Event]:
        """One server's streamed reply, as events."""
        result = ChatResult(model=self.remote.model)
        calls: dict[int, dict[str, Any]] = {}
        texts: list[str] = []
        try:
            async with self._client.stream("POST", f"{lease.backend.url}/chat/completions", json=payload) as response:
                if response.status_code >= 400:
                    body = (await response.aread()).decode("utf-8", "replace")
                    refusal = upstream_refusal(f"remote model {self.name}", response.status_code, body, self.remote.api_key)
                    if response.status_code in UNAVAILABLE:
                        raise _Unavailable(f"answered {response.status_code}", refusal)
                    raise refusal
                self.pool.answered(lease)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        result.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
                        result.completion_tokens = chunk["usage"].get("completion_tokens", 0)
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            texts.append(delta["content"])
                            yield TextDelta(delta["content"])
                        for call in delta.get("tool_calls") or []:
                            slot = calls.setdefault(call.get("index", 0), {"id": "", "name": "", "arguments": ""})
                            slot["id"] = call.get("id") or slot["id"]
                            function = call.get("function") or {}
                            slot["name"] += function.get("name") or ""
                            slot["arguments"] += function.get("arguments") or ""
                        if choice.get("finish_reason"):
                            result.finish_reason = choice["finish_reason"]
        except json.JSONDecodeError as exc:
            raise ModelError(f"remote model {self.name} sent a malformed stream") from exc
        result.text = "".join(texts)
        for index in sorted(calls):
            slot = calls[index]
            try:
                arguments = json.loads(slot["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = {}
            result.tool_calls.append(ToolCall(id=slot["id"] or f"call_{index}", name=slot["name"], arguments=arguments))
        if result.tool_calls:
            result.finish_reason = "tool_calls"
        if not result.completion_tokens:  # servers that ignore stream_options send no usage
            result.completion_tokens = len(texts)
        if not result.prompt_tokens:
            result.prompt_tokens = self.count_tokens(request.messages)
        yield Done(result)


def _wire(message: dict[str, Any]) -> dict[str, Any]:
    """Our stored message shape → the OpenAI wire shape."""
    out = {"role": message["role"], "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for c in message["tool_calls"]
        ]
    if message["role"] == "tool":
        out["tool_call_id"] = message.get("tool_call_id")
        out["content"] = message.get("content") if isinstance(message.get("content"), str) else json.dumps(message.get("content"))
    return out
