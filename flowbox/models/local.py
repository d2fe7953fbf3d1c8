"""The local chat model: one llama.cpp model, loaded once, shared, one generation at a time.

Prompt evaluation is the expensive part on a CPU, so the evaluated state of recent prompts is
kept (``LlamaRAMCache``): a continued thread, or any prompt that shares a prefix with a recent
one (an agent's system prompt, the tool router), evaluates only its new tokens.

Tool calls: small local models do not follow a native function-calling format, so a separate
short "router" prompt asks which tool to use, and the answer is constrained by a JSON-schema
grammar to exactly one of the enabled tools (or none), with tight argument schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from ..errors import ContextTooLong, ModelError
from ..ids import short_id
from ..sse import pump
from .base import ChatRequest, ChatResult, Done, Event, TextDelta, ToolCall, ToolSpec
from .files import check_gguf
from .grammar import InvalidSchema, schema_grammar, schema_text
from .llama_load import load_llama
from .scheduler import FairScheduler
from .worker import ModelWorker

log = logging.getLogger("flowbox.models")


def _stateful_llama_class():
    import llama_cpp

    class StatefulLlama(llama_cpp.Llama):
        """Llama whose saved states skip the logits array: sampling happens in llama.cpp's
        sampler, so the scores are never read back, and copying them costs ~100 MB a save."""

        def save_state(self):
            size = llama_cpp.llama_state_get_size(self._ctx.ctx)
            buffer = (ctypes.c_uint8 * int(size))()
            n_bytes = llama_cpp.llama_state_get_data(self._ctx.ctx, buffer, size)
            if int(n_bytes) > int(size):
                raise RuntimeError("failed to copy llama state")
            return llama_cpp.LlamaState(
                scores=np.empty((0, 0), dtype=np.single),
                input_ids=self.input_ids[: self.n_tokens].copy(),
                n_tokens=self.n_tokens,
                llama_state=bytes(buffer)[: int(n_bytes)],
                llama_state_size=int(n_bytes),
                seed=self._seed,
            )

        def load_state(self, state):
            self.input_ids[: state.n_tokens] = state.input_ids[: state.n_tokens]
            self.n_tokens = state.n_tokens
            self._requires_eval = True
            self._seed = state.seed
            array = (ctypes.c_uint8 * state.llama_state_size).from_buffer_copy(state.llama_state)
            if llama_cpp.llama_state_set_data(self._ctx.ctx, array, state.llama_state_size) != state.llama_state_size:
                raise RuntimeError("failed to restore llama state")

    return StatefulLlama


ROUTER_SYSTEM = "You are a router. Pick the tool that answers the user's message, or none.\nTools:\n"
ROUTER_NONE = "- none: no tool is needed (greetings, general knowledge, chit-chat).\nAnswer in JSON."


class ChatRunner:
    """The model itself, in its worker process (``models/worker.py``): generation only. Prompts
    are rendered and tokenized by ``LocalChatModel`` in the server, from the same file's vocabulary."""

    def __init__(self, path: str, n_ctx: int, n_threads: int, cache_bytes: int, n_gpu_layers: int = 0):
        import llama_cpp

        self.llm = load_llama(_stateful_llama_class(), model_path=path, n_ctx=n_ctx,
                              n_threads=n_threads, n_threads_batch=n_threads, n_gpu_layers=n_gpu_layers)
        if cache_bytes > 0:
            self.llm.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=cache_bytes))
        self.info = {"n_ctx": self.llm.n_ctx()}

    def generate(self, prompt_tokens: list[int], *, max_tokens: int, temperature: float, grammar: str | None,
                 stop, seed, cancel: threading.Event, emit) -> tuple[str, int, str]:
        """Returns (text, completion tokens, finish reason); ``emit`` gets each piece as it comes."""
        import llama_cpp

        counted = {"n": 0}
        start = len(prompt_tokens)

        def stop_when_cancelled(ids, logits) -> bool:
            counted["n"] = len(ids) - start
            return cancel.is_set()

        pieces: list[str] = []
        finish = "stop"
        for chunk in self.llm.create_completion(
            prompt_tokens,
            max_tokens=max_tokens,
            temperature=temperature,
            grammar=llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) if grammar else None,
            stop=stop or None,
            seed=seed,
            stream=True,
            stopping_criteria=llama_cpp.StoppingCriteriaList([stop_when_cancelled]),
        ):
            choice = chunk["choices"][0]
            if choice["text"]:
                pieces.append(choice["text"])
                emit(choice["text"])
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        if cancel.is_set():
            finish = "cancelled"
        return "".join(pieces), max(counted["n"], len(pieces)), finish


class LocalChatModel:
    """The local chat backend: prompts, tokens and the fair queue here; generation in a
    supervised worker process, so a crash in llama.cpp costs the requests in flight (503), not
    the server."""

    def __init__(self, path: Path, *, name: str, n_ctx: int = 4096, n_threads: int = 2,
                 cache_bytes: int = 1 << 30, max_waiting: int = 64, n_gpu_layers: int = 0, chat_format: str = ""):
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        check_gguf(path)
        self.name = name
        self.path = path
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True  # the tokenizer and the chat template, without the weights
        try:
            self.vocab = load_llama(LlamaModel, path_model=str(path), params=params)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load model {path}: {exc}") from exc
        self.worker = ModelWorker(ChatRunner, {"path": str(path), "n_ctx": n_ctx, "n_threads": n_threads, "n_gpu_layers": n_gpu_layers,
                                               "cache_bytes": cache_bytes}, name=name)
        self.worker.start()
        self.n_ctx = self.worker.info["n_ctx"]
        template = self.vocab.metadata().get("tokenizer.chat_template")
        eos = self.vocab.detokenize([self.vocab.token_eos()]).decode("utf-8", "ignore")
        bos = self.vocab.detokenize([self.vocab.token_bos()]).decode("utf-8", "ignore")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from .registry import chat_formatter

        # a named chat_format (models added with --chat-format) stands in for the file's own template
        self._formatter = chat_formatter(chat_format) if chat_format else Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self.scheduler = FairScheduler(max_waiting)

    def close(self) -> None:
        self.worker.close()
        with contextlib.suppress(Exception):
            self.vocab.close()

    # -- prompts -------------------------------------------------------------------------

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The chat template applied to OpenAI-shaped messages, tool turns folded into text."""
        return self._formatter(messages=_plain_messages(messages)).prompt

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return len(self._tokens(self.render(messages)))

    def _tokens(self, prompt: str) -> list[int]:
        return self.vocab.tokenize(prompt.encode("utf-8", "replace"), add_bos=False, special=True)

    # -- generation ----------------------------------------------------------------------

    async def _generate(self, prompt_tokens, *, on_text=None, **options) -> tuple[str, int, str]:
        """Runs the model in its worker; ``on_text`` gets each piece on the loop, in order.
        Cancelled, it stops the model at the next token and returns once the model is free."""
        return await self.worker.call("generate", prompt_tokens, on_event=on_text, **options)

    def _check_context(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt + 1 > self.n_ctx:
            raise ContextTooLong(n_prompt, self.n_ctx)

    async def stream(self, request: ChatRequest, key: str = "") -> AsyncIterator[Event]:
        async with self.scheduler.slot(key):
            result = ChatResult(model=self.name)
            if request.tools and request.tool_choice != "none":
                call, used = await self._route(request)
                result.prompt_tokens += used[0]
                result.completion_tokens += used[1]
                if call is not None:
                    result.tool_calls.append(call)
                    result.finish_reason = "tool_calls"
                    yield Done(result)
                    return
            # rendering and tokenizing a long thread takes a while: off the event loop
            prompt_tokens = await asyncio.to_thread(lambda: self._tokens(self.render(request.messages)))
            self._check_context(len(prompt_tokens), request.max_tokens)
            max_tokens = max(1, min(request.max_tokens, self.n_ctx - len(prompt_tokens)))
            generation = pump(lambda emit: self._generate(
                prompt_tokens, on_text=emit, max_tokens=max_tokens, temperature=request.temperature,
                grammar=_schema_grammar(request.json_schema), stop=request.stop, seed=request.seed,
            ))
            async with contextlib.aclosing(generation):  # closed early, it stops the model at the next token
                async for done, item in generation:
                    if not done:
                        yield TextDelta(item)
                    else:
                        text, n_completion, finish = item
            result.text = text
            result.prompt_tokens += len(prompt_tokens)
            result.completion_tokens += n_completion
            result.finish_reason = "length" if finish == "length" else "stop"
            yield Done(result)

    async def _route(self, request: ChatRequest) -> tuple[ToolCall | None, tuple[int, int]]:
        """Asks the router prompt which tool (if any) the last user message needs."""
        user_text = _last_user_text(request.messages)
        tools = offered_tools(request.tools, user_text) if user_text else []
        if not tools:
            return None, (0, 0)
        try:
            grammar = _schema_grammar(router_schema(tools, user_text))
        except InvalidSchema as exc:  # text no grammar can hold: answered without a tool
            log.warning("tool routing skipped: %s", exc)
            return None, (0, 0)
        prompt = self.render(router_messages(tools, user_text))
        tokens = self._tokens(prompt)
        self._check_context(len(tokens), 64)
        text, n_completion, _ = await self._generate(
            tokens, max_tokens=96, temperature=0.0, grammar=grammar, stop=[], seed=0,
        )
        try:
            decision = json.loads(text)
        except json.JSONDecodeError:
            return None, (len(tokens), n_completion)
        name = decision.get("tool")
        if name in (None, "none"):
            return None, (len(tokens), n_completion)
        return ToolCall(id=short_id("call"), name=name, arguments=decision.get("arguments") or {}), (len(tokens), n_completion)


def offered_tools(tools: list[ToolSpec], user_text: str) -> list[ToolSpec]:
    """Tools whose precondition holds for this message: a tiny model over-calls tools, so one
    that cannot apply (a calculator with no arithmetic in sight) is not offered at all."""
    return [t for t in tools if t.applies is None or t.applies(user_text)]


def _schema_grammar(schema: dict[str, Any] | None) -> str | None:
    """The grammar text for the worker (None: unconstrained). Callers' schemas were checked when
    their request was read, so an ``InvalidSchema`` here is flowbox's own mistake."""
    return schema_grammar(schema) if schema else None


def router_messages(tools: list[ToolSpec], user_text: str) -> list[dict[str, Any]]:
    """The router's prompt. Its system part depends only on the offered tools, so its evaluated
    prefix is reused across threads; only the user text is new. (Few-shot examples as chat turns
    made SmolLM2 copy the last one; examples inside the tool lines work.)"""
    lines = [ROUTER_SYSTEM]
    for tool in tools:
        examples = "; ".join(f'"{text}"' for text, _ in tool.examples)
        lines.append(f"- {tool.name}: {tool.description}" + (f" For example: {examples}" if examples else "") + "\n")
    lines.append(ROUTER_NONE)
    return [{"role": "system", "content": "".join(lines)}, {"role": "user", "content": user_text}]


def router_schema(tools: list[ToolSpec], user_text: str) -> dict[str, Any]:
    options: list[dict[str, Any]] = [
        {"type": "object", "properties": {"tool": {"const": "none"}}, "required": ["tool"], "additionalProperties": False}
    ]
    for tool in tools:
        parameters = json.loads(json.dumps(tool.parameters))  # a copy we may narrow
        if tool.candidates is not None:
            for arg, values in tool.candidates(user_text).items():
                if values and arg in parameters.get("properties", {}):
                    parameters["properties"][arg] = {"enum": [schema_text(v) if isinstance(v, str) else v for v in values]}
        options.append({
            "type": "object",
            "properties": {"tool": {"const": tool.name}, "arguments": parameters},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        })
    return {"oneOf": options}


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
        if message.get("role") == "tool":
            return ""  # a tool already answered this turn: no second routing
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat templates of small models know system/user/assistant only: tool calls become nothing
    (the result says it all) and tool results become a system note before the reply."""
    plain = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            plain.append({"role": "system", "content": f"Result of the {message.get('name', 'tool')} tool: {_text(message.get('content'))}"})
        elif role == "assistant" and message.get("tool_calls"):
            if _text(message.get("content")):
                plain.append({"role": "assistant", "content": _text(message.get("content"))})
        else:
            plain.append({"role": role, "content": _text(message.get("content"))})
    return plain
