"""The local chat model: one llama.cpp model, loaded once, shared by up to ``parallel``
generations at a time, decoded together in one batch (``batching.py``).

Prompt evaluation is the expensive part on a CPU, so evaluated prompts are kept (each sequence's
KV cache, and saved sequence states): a continued thread, or any prompt that shares a prefix with
a recent one (an agent's system prompt, the tool router), evaluates only its new tokens.

Tool calls: a model whose chat template has a tool-call format calls tools in it (``tool_calls.py``:
the reply streams until a call starts, the call is generated under a grammar of the tools). Small
models without one do not follow a function-calling format, so a separate short "router" prompt
asks which tool to use, and the answer is constrained by a JSON-schema grammar to exactly one of
the enabled tools (or none), with tight argument schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from ..errors import ContextTooLong, ModelError
from ..ids import short_id
from ..sse import pump
from .base import ChatRequest, ChatResult, Done, Event, TextDelta, ToolCall, ToolSpec, message_text
from .batching import BatchEngine, Job, make_sampler
from .files import check_gguf
from .grammar import InvalidSchema, schema_grammar, schema_text
from .llama_load import load_llama
from .scheduler import FairScheduler
from .tool_calls import CallWatch, detect, template_with_tools
from .worker import ModelWorker

log = logging.getLogger("flowbox.models")


CALL_MAX_TOKENS = 512  # a native tool call's own budget (the reply's max_tokens limits the text before it)
ROUTER_SYSTEM = "You are a router. Pick the tool that answers the user's message, or none.\nTools:\n"
ROUTER_NONE = "- none: no tool is needed (greetings, general knowledge, chit-chat).\nAnswer in JSON."


class ChatRunner:
    """The model itself, in its worker process (``models/worker.py``): generation only. Prompts
    are rendered and tokenized by ``LocalChatModel`` in the server, from the same file's vocabulary.
    Its calls run at once (``concurrent``), each on a thread of the worker that waits while the
    batch engine's one thread decodes for all of them."""

    concurrent = True

    def __init__(self, path: str, n_ctx: int, n_threads: int, cache_bytes: int, n_gpu_layers: int = 0, parallel: int = 1):
        import llama_cpp
        from llama_cpp._internals import LlamaContext, LlamaModel

        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = n_gpu_layers
        self.model = load_llama(LlamaModel, path_model=path, params=model_params)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * parallel  # n_ctx for each sequence, each in a KV stream of its own
        params.n_seq_max = parallel
        params.kv_unified = False
        params.n_batch = params.n_ubatch = 512
        params.n_threads = params.n_threads_batch = n_threads
        params.no_perf = True
        self.ctx = LlamaContext(model=self.model, params=params, verbose=False)
        self.engine = BatchEngine(self.model, self.ctx, slots=parallel, cache_bytes=cache_bytes)
        self.info = {"n_ctx": self.engine.n_ctx, "parallel": parallel}
        self._seed = llama_cpp.LLAMA_DEFAULT_SEED
        self._seed_lock = threading.Lock()

    def close(self) -> None:
        self.engine.close()
        self.ctx.close()
        self.model.close()

    def generate(self, prompt_tokens: list[int], *, max_tokens: int, temperature: float, grammar: str | None,
                 stop, seed, cancel: threading.Event, emit) -> tuple[str, int, str]:
        """Returns (text, completion tokens, finish reason); ``emit`` gets each piece as it comes."""
        if seed is None:  # as llama-cpp-python did: each call's seed drawn from the one before
            with self._seed_lock:
                seed = self._seed = random.Random(self._seed).randint(0, 2**32)
        sampler = make_sampler(self.model.vocab, temperature=temperature, grammar=grammar, seed=seed)
        return self.engine.run(Job(prompt=list(prompt_tokens), max_tokens=max_tokens, sampler=sampler,
                                   stop=[s.encode("utf-8") for s in stop or () if s], cancel=cancel, emit=emit))


class LocalChatModel:
    """The local chat backend: prompts, tokens and the fair queue here; generation in a
    supervised worker process, so a crash in llama.cpp costs the requests in flight (503), not
    the server."""

    def __init__(self, path: Path, *, name: str, n_ctx: int = 4096, n_threads: int = 2,
                 cache_bytes: int = 1 << 30, max_waiting: int = 64, tool_format: str = "auto",
                 n_gpu_layers: int = 0, chat_format: str = "", parallel: int = 4, max_per_org: int = 0):
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
        metadata = self.vocab.metadata()
        template = metadata.get("tokenizer.chat_template") if tool_format == "router" else template_with_tools(metadata)
        # None: the grammar router picks tools; else the template's own tool-call format (tool_calls.py).
        # A named chat_format is a fixed formatter that knows no tools.
        self.tool_format = None if tool_format == "router" or chat_format else detect(template)
        if tool_format == "native" and self.tool_format is None:
            self.vocab.close()
            raise ModelError(f"the chat template of {path.name} has no tool-call format flowbox reads (Hermes/Qwen, Llama 3, Mistral); "
                             "set tool_format = auto or router")
        self.worker = ModelWorker(ChatRunner, {"path": str(path), "n_ctx": n_ctx, "n_threads": n_threads, "n_gpu_layers": n_gpu_layers,
                                               "cache_bytes": cache_bytes, "parallel": parallel}, name=name)
        self.worker.start()
        self.n_ctx = self.worker.info["n_ctx"]
        eos = self.vocab.detokenize([self.vocab.token_eos()]).decode("utf-8", "ignore")
        bos = self.vocab.detokenize([self.vocab.token_bos()]).decode("utf-8", "ignore")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from .registry import chat_formatter

        # a named chat_format (models added with --chat-format) stands in for the file's own template
        self._formatter = chat_formatter(chat_format) if chat_format else Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        # a file's template writes its BOS itself; llama-cpp's named formats leave it to the tokenizer
        self._add_bos = not self._formatter(messages=[{"role": "user", "content": "x"}]).added_special
        self.scheduler = FairScheduler(max_waiting, slots=parallel, max_per_key=max_per_org)

    def close(self) -> None:
        self.worker.close()
        with contextlib.suppress(Exception):
            self.vocab.close()

    # -- prompts -------------------------------------------------------------------------

    def render(self, messages: list[dict[str, Any]], tools: list[ToolSpec] | None = None) -> str:
        """The chat template applied to OpenAI-shaped messages. With a native tool format, tool turns
        as the template expects them and ``tools`` offered; else tool turns folded into text."""
        if self.tool_format is None:
            return self._formatter(messages=_plain_messages(messages)).prompt
        return self._formatter(messages=self.tool_format.messages(messages), tools=[t.openai() for t in tools or ()] or None).prompt

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return len(self.prompt_tokens(messages))

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        """The tokens the model reads for ``messages`` (no tools offered)."""
        return self._tokens(self.render(messages))

    def _tokens(self, prompt: str) -> list[int]:
        return self.vocab.tokenize(prompt.encode("utf-8", "replace"), add_bos=self._add_bos, special=True)

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
            tools = request.tools if request.tool_choice != "none" else []
            native = await self._native_prompt(request.messages, tools) if tools and self.tool_format and not request.json_schema else None
            if native is not None:
                async for event in self._native(request, *native, result):
                    yield event
                return
            if tools:
                call, used = await self._route(request)
                result.prompt_tokens += used[0]
                result.completion_tokens += used[1]
                if call is not None:
                    result.tool_calls.append(call)
                    result.finish_reason = "tool_calls"
                    yield Done(result)
                    return
            # rendering and tokenizing a long thread takes a while: off the event loop
            prompt_tokens = await asyncio.to_thread(self.prompt_tokens, request.messages)
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

    async def _native_prompt(self, messages: list[dict[str, Any]], tools: list[ToolSpec]) -> tuple[str, list[int]] | None:
        """The prompt with the tools offered in the template's way; None when the tools do not fit
        (the thread was fitted without them): the router's short prompt picks a tool instead."""
        prompt = await asyncio.to_thread(self.render, messages, tools)
        tokens = await asyncio.to_thread(self._tokens, prompt)
        return (prompt, tokens) if len(tokens) + 1 <= self.n_ctx else None

    async def _native(self, request: ChatRequest, prompt: str, prompt_tokens: list[int], result: ChatResult) -> AsyncIterator[Event]:
        """A reply in the model's own tool-call format: text streams until a call starts; the call
        is then generated under a grammar of the offered tools, continuing the same prompt."""
        tool_format, watch = self.tool_format, CallWatch(self.tool_format)
        generation = pump(lambda emit: self._generate(
            prompt_tokens, on_text=emit, max_tokens=max(1, min(request.max_tokens, self.n_ctx - len(prompt_tokens))),
            temperature=request.temperature, grammar=None, stop=request.stop, seed=request.seed,
        ))
        finish, n_completion = "stop", None
        async with contextlib.aclosing(generation):  # left at a call's start, it stops the model at the next token
            async for done, item in generation:
                if done:
                    _, n_completion, finish = item
                    break
                if text := watch.feed(item):
                    yield TextDelta(text)
                if watch.call_at is not None:
                    break
        result.prompt_tokens += len(prompt_tokens)
        result.completion_tokens += n_completion if n_completion is not None else len(await asyncio.to_thread(self._tokens, watch.text))
        if watch.call_at is None:
            if text := watch.rest():
                yield TextDelta(text)
            result.text, result.finish_reason = watch.text, "length" if finish == "length" else "stop"
            yield Done(result)
            return
        head = watch.text[:watch.call_at]
        call_tokens = await asyncio.to_thread(self._tokens, prompt + head + tool_format.lead)
        try:
            grammar = _schema_grammar(tool_format.call_schema(request.tools))
        except InvalidSchema as exc:  # the call is read leniently instead
            log.warning("tool call grammar skipped: %s", exc)
            grammar = None
        text, n_completion = "", 0
        if len(call_tokens) < self.n_ctx:
            text, n_completion, _ = await self._generate(
                call_tokens, max_tokens=min(CALL_MAX_TOKENS, self.n_ctx - len(call_tokens)),
                temperature=request.temperature, grammar=grammar, stop=[], seed=request.seed,
            )
        result.prompt_tokens += len(call_tokens)
        result.completion_tokens += n_completion
        result.text, calls = tool_format.parse(head + tool_format.lead + text)
        if not calls:  # the call broke off (too long for its budget): the router decides
            call, used = await self._route(request)
            result.prompt_tokens += used[0]
            result.completion_tokens += used[1]
            calls = [call] if call is not None else []
        result.tool_calls = [ToolCall(id=call.id or short_id("call"), name=call.name, arguments=call.arguments) for call in calls]
        result.finish_reason = "tool_calls" if calls else "stop"
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
            return message_text(message.get("content"))
        if message.get("role") == "tool":
            return ""  # a tool already answered this turn: no second routing
    return ""


def _plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat templates of small models know system/user/assistant only: tool calls become nothing
    (the result says it all) and tool results become a system note before the reply."""
    plain = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            plain.append({"role": "system", "content": f"Result of the {message.get('name', 'tool')} tool: {message_text(message.get('content'))}"})
        elif role == "assistant" and message.get("tool_calls"):
            if message_text(message.get("content")):
                plain.append({"role": "assistant", "content": message_text(message.get("content"))})
        else:
            plain.append({"role": role, "content": message_text(message.get("content"))})
    return plain
