"""Text embeddings: the one place every area gets vectors from.

Local by default: all-MiniLM-L6-v2 (converted to GGUF by ``models/minilm_gguf.py``) run by
llama.cpp in embedding mode on its own thread, so embedding never waits behind the chat model's
generation queue, nor blocks the event loop. A remote OpenAI-compatible ``/embeddings`` endpoint
is used instead when ``embedding_base_url`` is set. Vectors are always L2-normalised, so a dot
product is the cosine similarity.

``Embedder.name`` identifies the model that made a vector; stores keep it beside their vectors
so that a model change is noticed and everything can be re-embedded.

Serving: a search or a message asks for one short text (``embed_query``), and the same questions
come back, so their vectors are kept in an LRU keyed by the text. The local model runs one call
at a time in its worker process; ``Batcher`` sends it the waiting requests together (one call for
every query waiting, not one each), queries ahead of bulk work, and bulk work in slices of one
model batch, so an ingest never holds a query up for longer than one slice.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .errors import ModelError, StartupError, upstream_refusal
from .services import Services

log = logging.getLogger(__name__)

N_CTX = 512  # MiniLM's trained context; longer texts are embedded in pieces and averaged
REMOTE_BATCH = 64
# A short call (a query or a few) gains little from a second thread, and its threads wait for each
# other at every step: on a busy machine a descheduled one stalls the call. Measured on 2 cores, one
# query: 9 ms on two threads and 13 ms on one when quiet; beside one busy process 41 ms (p90 106) on
# two and 13 ms on one. So a short call runs on one thread while other work leaves too few cores free
# (scripts/bench/load.py's knowledge search p99 under mixed load: 135-138 ms, against 165-246 ms).
SHORT_CALL = 64  # tokens
QUERY_CACHE = 4096  # recent query texts and their vectors (float32: 1.5 kB each at 384 dimensions)
INLINE_TOKENIZE = 2000  # a query up to this many characters is tokenized on the event loop (microseconds)
# WordPiece's max_input_chars_per_word: longer words (runs of letters and digits; CJK characters
# are words of their own) are [UNK] for the original tokenizer. llama.cpp would split them into
# many pieces instead, slowly.
LONG_WORD = re.compile(r"[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]{101,}")


# Token attributes of what a model does not read as text: its unknown token ([UNK] is a control token in
# MiniLM's vocabulary as llama.cpp loads it).
_UNREAD = 1 | 8  # LLAMA_TOKEN_ATTR_UNKNOWN | LLAMA_TOKEN_ATTR_CONTROL


def _normalise(vectors: np.ndarray) -> list[list[float]]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).tolist()


class Embedder:
    """What callers use: ``name``, ``dim``, ``await embed(texts)`` (bulk: documents, examples),
    ``await embed_query(text)`` (one text a user is waiting on, cached), ``embed_sync(texts)``."""

    name: str
    dim: int
    embedded = 0  # texts embedded so far (the metrics' embeddings per second)
    _queries: collections.OrderedDict | None = None

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def is_word(self, word: str) -> bool | None:
        """Whether the model's vocabulary has ``word`` (lower case) as one whole token: a word it
        knows, not a misspelling it spells out in pieces; None when this embedder cannot tell."""
        return None

    def reads(self, text: str) -> bool | None:
        """Whether the model reads anything in ``text``: a token other than its unknown one. A text of
        emoji or of a script its vocabulary lacks embeds as [UNK] alone, a vector that says nothing of
        the text yet lies near some unrelated ones. None when this embedder cannot tell."""
        return None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    async def _embed_queries(self, texts: list[str]) -> list[list[float]]:
        return await self.embed(texts)

    async def embed_query(self, text: str) -> np.ndarray:
        """The vector (float32, read-only) of a search or a message; repeated texts come from an
        LRU of recent ones (a vector depends only on the text and this embedder's model)."""
        return (await self.embed_queries([text]))[0]

    async def embed_queries(self, texts: list[str]) -> list[np.ndarray]:
        """``embed_query`` of several texts a user is waiting on, those not kept embedded in one call."""
        if self._queries is None:
            self._queries = collections.OrderedDict()
        found = {text: self._queries.get(text) for text in texts}
        if missing := [text for text, vector in found.items() if vector is None]:
            for text, vector in zip(missing, await self._embed_queries(missing)):
                vector = found[text] = np.asarray(vector, dtype=np.float32)
                vector.flags.writeable = False  # shared by every caller asking the same
                self._queries[text] = vector
        for text in found:
            self._queries.move_to_end(text)
        while len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return [found[text] for text in texts]

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def others_running() -> float | None:
    """How many other tasks want a core now: the runnable count in /proc/loadavg (instant; this
    process's reader excluded), elsewhere the one-minute load average; None when neither exists."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0]) - 1
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()[0]
    return None


def threads_for(tokens: int, n_threads: int, others: float | None, cores: int) -> int:
    """Threads for an embedding call of ``tokens``: one for a short call when other work leaves
    fewer than ``n_threads`` cores free (``SHORT_CALL``), else all of them."""
    return 1 if tokens <= SHORT_CALL and others is not None and others + n_threads > cores else n_threads


class EmbedRunner:
    """MiniLM itself, in its worker process (``models/worker.py``): token sequences in, vectors out.
    Tokenizing happens in the server, from the same file's vocabulary."""

    def __init__(self, path: str, n_threads: int):
        from .models.llama_load import load_llama

        # One batch = one context: llama.cpp runs an encoder's whole batch in one ubatch.
        self.llm = load_llama(model_path=path, embedding=True, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX,
                              n_threads=n_threads, n_threads_batch=n_threads)
        self.dim = self.llm.n_embd()
        self.info = {"dim": self.dim}
        self.n_threads = self.threads = n_threads

    def _use_threads(self, tokens: int) -> None:
        import llama_cpp

        wanted = threads_for(tokens, self.n_threads, others_running() if tokens <= SHORT_CALL else None, os.cpu_count() or 1)
        if wanted != self.threads:
            llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, wanted, wanted)
            self.threads = wanted

    def embed(self, pieces: list[list[int]], *, cancel, emit) -> np.ndarray:
        """The mean-pooled vector of each token sequence (not normalised: ``Batcher`` adds up
        the pieces of a long text)."""
        import llama_cpp

        self._use_threads(sum(map(len, pieces)))
        max_seqs = self.llm.context_params.n_seq_max
        out = np.zeros((len(pieces), self.dim), dtype=np.float32)
        ctx, batch = self.llm._ctx, self.llm._batch
        start = 0
        while start < len(pieces):
            # Pack whole sequences into one batch of at most N_CTX tokens (and sequences).
            end, used = start, 0
            while end < len(pieces) and used + len(pieces[end]) <= N_CTX and end - start < max_seqs:
                used += len(pieces[end])
                end += 1
            batch.reset()
            for seq_id, tokens in enumerate(pieces[start:end]):
                batch.add_sequence(tokens, seq_id, True)
            ctx.kv_cache_clear()
            ctx.decode(batch)
            for seq_id in range(end - start):
                ptr = llama_cpp.llama_get_embeddings_seq(ctx.ctx, seq_id)
                out[start + seq_id] = np.ctypeslib.as_array(ptr, shape=(self.dim,))
            start = end
        batch.reset()
        ctx.kv_cache_clear()
        return out


class _Request:
    """Texts waiting for their vectors: their pieces, how many are sent, the sums so far."""

    def __init__(self, pieces: list[tuple[int, list[int]]], n_texts: int, dim: int):
        self.pieces = pieces
        self.sent = 0
        self.left = len(pieces)
        self.sums = np.zeros((n_texts, dim), dtype=np.float64)
        self.future: concurrent.futures.Future = concurrent.futures.Future()

    def add(self, index: int, tokens: list[int], vector: np.ndarray) -> None:
        # a long text is the token-weighted mean of its pieces' mean-pooled vectors
        self.sums[index] += vector * (len(tokens) - 2 or 1)
        self.left -= 1
        if not self.left:
            self.finish(result=_normalise(self.sums))

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # the caller gave up meanwhile
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)


class Batcher:
    """The one way into the model's worker, which runs one call at a time. While a call runs,
    requests wait here; when it ends, the next call carries the waiting queries' pieces together
    (up to one model batch, ``N_CTX`` tokens), and only when no query waits, the next slice of bulk
    work (as much), taken from the bulk requests in turn. A query therefore waits for at most one
    slice of an ingest, and concurrent queries share calls instead of queueing one behind another.
    Calls are sent from whichever thread finds the worker free and answered on the worker's pipe
    reader (no thread of ours waits). A request whose caller gave up is dropped; a worker failure
    fails the requests of that call only (the worker restarts for the next)."""

    def __init__(self, worker: Any, dim: int):
        self.worker, self.dim = worker, dim
        self.calls = 0  # worker calls made (tests read it)
        self.embedded = 0  # texts whose vectors are done
        self._queries: collections.deque[_Request] = collections.deque()
        self._bulk: collections.deque[_Request] = collections.deque()
        self._lock = threading.Lock()
        self._busy = False  # a call is in flight (or the worker is starting for one)
        self._closed = False

    def submit(self, pieces: list[tuple[int, list[int]]], n_texts: int, *, query: bool) -> concurrent.futures.Future:
        request = _Request(pieces, n_texts, self.dim)
        with self._lock:
            if self._closed:
                raise ModelError("the embedding model is closed")
            (self._queries if query else self._bulk).append(request)
        self._next()
        return request.future

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting = [*self._queries, *self._bulk]
            self._queries.clear()
            self._bulk.clear()
        for request in waiting:
            request.finish(error=ModelError("the embedding model was closed"))

    def _take(self) -> list[tuple[_Request, int, list[int]]]:
        """The next call's pieces as (request, text index, tokens); the lock is held."""
        for waiting in (self._queries, self._bulk):  # drop what nobody waits for (a caller gave up, a failed call)
            live = [r for r in waiting if not r.future.done()]
            if len(live) < len(waiting):
                waiting.clear()
                waiting.extend(live)
        queue = self._queries or self._bulk
        taken: list[tuple[_Request, int, list[int]]] = []
        used = 0
        while queue:
            request = queue[0]
            while request.sent < len(request.pieces):
                index, tokens = request.pieces[request.sent]
                if taken and used + len(tokens) > N_CTX:
                    break
                taken.append((request, index, tokens))
                used += len(tokens)
                request.sent += 1
            if request.sent < len(request.pieces):  # the call is full
                if queue is self._bulk:
                    queue.rotate(-1)  # bulk requests take turns, slice by slice
                break
            queue.popleft()
        return taken

    def _next(self) -> None:
        """Sends the next call unless one is in flight."""
        with self._lock:
            if self._busy or self._closed:
                return
            taken = self._take()
            if not taken:
                return
            self._busy = True
            self.calls += 1
        if self.worker.pid is None:  # (re)starting takes seconds: not on this thread, maybe the event loop's
            threading.Thread(target=self._send, args=(taken, True), name="flowbox-embed-start", daemon=True).start()
        else:
            self._send(taken)

    def _send(self, taken: list[tuple[_Request, int, list[int]]], start: bool = False) -> None:
        try:
            if start:
                self.worker.start()
            self.worker.call_then("embed", ([tokens for _, _, tokens in taken],),
                                  lambda vectors, error: self._answered(taken, vectors, error))
        except ModelError as exc:
            self._answered(taken, None, exc)

    def _answered(self, taken: list[tuple[_Request, int, list[int]]], vectors: Any, error: ModelError | None) -> None:
        if error is not None:
            for request in dict.fromkeys(r for r, _, _ in taken):
                request.finish(error=error)
        else:
            for (request, index, tokens), vector in zip(taken, vectors):
                request.add(index, tokens, vector)
        done = 0 if error is not None else sum(len(r.sums) for r in dict.fromkeys(r for r, _, _ in taken) if not r.left)
        with self._lock:
            self._busy = False
            self.embedded += done
        self._next()


class LocalEmbedder(Embedder):
    """MiniLM run in a supervised worker process, so native code cannot take the server down;
    ``llm`` here is the file's vocabulary only (for tokenizing and counting)."""

    def __init__(self, path: Path, *, name: str, n_threads: int, prefixes: tuple[str, str] = ("", "")):
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        from .models.files import check_gguf
        from .models.llama_load import load_llama
        from .models.worker import ModelWorker

        check_gguf(path)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self.llm = load_llama(LlamaModel, path_model=str(path), params=params)
            self.worker = ModelWorker(EmbedRunner, {"path": str(path), "n_threads": n_threads}, name=name)
            self.worker.start()
        except (ValueError, RuntimeError, ModelError) as exc:
            raise StartupError(f"cannot load embedding model {path}: {exc}; delete it and run 'flowbox models pull'") from exc
        self.name = name
        self.prefixes = prefixes  # (a query's, a document's): what the model was trained to see first
        self.dim = self.worker.info["dim"]
        self.batcher = Batcher(self.worker, self.dim)
        self._cls = self.llm.token_bos()
        self._sep = self.llm.token_sep()
        # The vocabulary is tokenized on several threads (queries inline, bulk texts off the event loop) and
        # freed by close(), which may come while one tokenizes (a server stopping mid-ingest): freeing it under
        # a tokenizer crashes the process, so the two take turns.
        self._vocab_lock = threading.Lock()
        self._vocab_closed = False

    @property
    def embedded(self) -> int:  # type: ignore[override]
        return self.batcher.embedded

    def close(self) -> None:
        self.batcher.close()
        self.worker.close()
        with self._vocab_lock:
            self._vocab_closed = True
            with contextlib.suppress(Exception):
                self.llm.close()

    def _tokenize(self, text: str, special: bool) -> list[int]:
        with self._vocab_lock:
            if self._vocab_closed:
                raise ModelError("the embedding model is closed")
            return self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=special)

    def is_word(self, word: str) -> bool | None:
        try:
            return len(self._tokenize(word, special=False)) == 1
        except ModelError:  # closed: it cannot tell
            return None

    def reads(self, text: str) -> bool | None:
        if len(text) > INLINE_TOKENIZE:  # a long text is not worth tokenizing twice on the event loop
            return None
        with self._vocab_lock:
            if self._vocab_closed:
                return None
            tokens = self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False)
            return any(not self.llm.token_get_attr(t) & _UNREAD for t in tokens)

    def _pieces(self, text: str) -> list[list[int]]:
        """Token sequences of at most N_CTX tokens, each wrapped in [CLS] ... [SEP], tokenized
        as the original (Hugging Face) tokenizer does: special tokens written in the text count,
        and a word over 100 characters is one [UNK]."""
        text = LONG_WORD.sub(" [UNK] ", text)
        inner = self._tokenize(text, special=True)
        width = N_CTX - 2
        windows = [inner[i:i + width] for i in range(0, len(inner), width)] or [[]]
        return [[self._cls, *w, self._sep] for w in windows]

    def _all_pieces(self, texts: list[str], query: bool = False) -> list[tuple[int, list[int]]]:
        prefix = self.prefixes[0 if query else 1]
        return [(index, seq) for index, text in enumerate(texts) for seq in self._pieces(prefix + text)]

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.batcher.submit(self._all_pieces(texts), len(texts), query=False).result()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        texts = list(texts)
        pieces = await asyncio.to_thread(self._all_pieces, texts)  # long documents: off the event loop
        return await asyncio.wrap_future(self.batcher.submit(pieces, len(texts), query=False))

    async def _embed_queries(self, texts: list[str]) -> list[list[float]]:
        if sum(map(len, texts)) > INLINE_TOKENIZE:
            pieces = await asyncio.to_thread(self._all_pieces, texts, True)
        else:
            pieces = self._all_pieces(texts, True)
        return await asyncio.wrap_future(self.batcher.submit(pieces, len(texts), query=True))


class RemoteEmbedder(Embedder):
    """An OpenAI-compatible ``POST /embeddings`` endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 60.0):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"remote:{model}"
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._async: httpx.AsyncClient | None = None  # made on first async use, on the app's loop
        self.dim = len(self.embed_sync(["dimension probe"])[0])

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()

    def _parse(self, response: Any, count: int) -> list[list[float]]:
        if response.status_code >= 400:
            raise upstream_refusal("embedding server", response.status_code, response.text, self._api_key)
        try:
            data = sorted(response.json()["data"], key=lambda d: d.get("index", 0))
            vectors = np.array([d["embedding"] for d in data], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"embedding server sent a malformed answer: {exc}") from None
        if len(vectors) != count or vectors.ndim != 2:
            raise ModelError(f"embedding server returned {len(vectors)} vectors for {count} texts")
        self.embedded += count
        return _normalise(vectors)

    def _batches(self, texts: list[str]):
        for i in range(0, len(texts), REMOTE_BATCH):
            chunk = texts[i:i + REMOTE_BATCH]
            yield chunk, {"model": self.model, "input": chunk}

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        import httpx

        out: list[list[float]] = []
        for chunk, payload in self._batches(texts):
            try:
                response = httpx.post(f"{self.base_url}/embeddings", json=payload, headers=self._headers, timeout=self._timeout)
            except httpx.HTTPError as exc:
                raise ModelError(f"embedding server {self.base_url} is unreachable: {type(exc).__name__}") from exc
            out.extend(self._parse(response, len(chunk)))
        return out

    async def embed(self, texts: list[str]) -> list[list[float]]:
        import httpx

        if self._async is None:
            self._async = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout)
        out: list[list[float]] = []
        for chunk, payload in self._batches(texts):
            try:
                response = await self._async.post("/embeddings", json=payload)
            except httpx.HTTPError as exc:
                raise ModelError(f"embedding server {self.base_url} is unreachable: {type(exc).__name__}") from exc
            out.extend(self._parse(response, len(chunk)))
        return out


def knowledge_model(config: Config) -> str:
    """The local embedding model of the knowledge base: ``knowledge_embedding_model``, else, with the built-in
    MiniLM, MiniLM as changed for search (``models/search_encoder.py``), else ``embedding_model``."""
    from .models.search_encoder import BASE, MODEL

    if config.knowledge_embedding_model:
        return config.knowledge_embedding_model
    return MODEL if config.embedding_model == BASE else config.embedding_model


def intent_model(config: Config) -> str:
    """The local embedding model the intent matcher reads messages with: with the built-in MiniLM, MiniLM
    as changed for intents (``models/intent_encoder.py``); any other model as it is."""
    from .models.intent_encoder import BASE, MODEL

    return MODEL if config.embedding_model == BASE else config.embedding_model


def pairs_model(config: Config) -> str:
    """The local model that reads a message beside an intent's examples (``models/pair_encoder.py``): with the
    built-in MiniLM, run locally, only; "" otherwise (the matcher's second reading is then not made)."""
    from .models.pair_encoder import BASE, MODEL

    return MODEL if config.embedding_model == BASE and not config.embedding_base_url else ""


def answers_model(config: Config) -> str:
    """The local model that reads a question beside a knowledge entry (``models/answer_encoder.py``): with the
    built-in MiniLM, run locally, and the knowledge base reading with MiniLM as changed for search, only; ""
    otherwise (the knowledge base's second reading is then not made: it was learned beside that search), and
    where ``knowledge_second_reading`` is off."""
    from .models.answer_encoder import BASE, MODEL
    from .models.search_encoder import MODEL as SEARCH

    usable = (config.knowledge_second_reading and config.embedding_model == BASE and not config.embedding_base_url
              and knowledge_model(config) == SEARCH)
    return MODEL if usable else ""


def load_embedder(config: Config, progress: bool = False, *, model: str = "") -> Embedder:
    """The configured embedder (blocking: loads a model file or probes a server); with ``model``, that
    local model instead of ``embedding_model`` (``knowledge_model``, ``intent_model``). A remote embedder
    serves everything."""
    if config.embedding_base_url:
        if not config.embedding_remote_model:
            raise StartupError("setting 'embedding_remote_model' is required when 'embedding_base_url' is set")
        try:
            return RemoteEmbedder(config.embedding_base_url, config.embedding_remote_model, config.embedding_api_key)
        except ModelError as exc:
            raise StartupError(str(exc)) from None
    from .models.files import MODELS, embedder_name, ensure_model

    model = model or config.embedding_model
    path = ensure_model(config.models_path, model, progress=progress)
    known = MODELS.get(model)
    name = embedder_name(model) if known else Path(path).stem
    return LocalEmbedder(path, name=name, n_threads=config.threads, prefixes=known.prefixes if known else ("", ""))


@dataclass
class LoadedEmbedder:
    """One embedder of the app's once loaded; one load at a time."""
    model: str  # the local model it loads ("" for the configured one, and for a remote embedder)
    embedder: Embedder | None = None
    # The load under way, shared by every caller. It runs to its end even when the caller that
    # started it goes away (a request, the warm start), so no model worker is left unowned.
    loading: asyncio.Future | None = None
    closed: bool = False
    failed_at: float = -math.inf  # when an optional model (``answer_reader``) last failed to load


def loaded_embedders(services: Services) -> list[LoadedEmbedder]:
    """The app's embedders: the configured one, then the knowledge base's and the intent matcher's where
    those are other models."""
    return list({id(slot): slot for slot in services.state(LoadedEmbedders).slots.values()}.values())


@dataclass
class LoadedEmbedders:
    # by use: "app", "knowledge", "intents" (two uses of one model share it), and "pairs" and "answers" where
    # there are such models
    slots: dict[str, LoadedEmbedder]

    @classmethod
    def of(cls, config: Config) -> "LoadedEmbedders":
        app = LoadedEmbedder("")
        slots = {"app": app, "knowledge": app, "intents": app}
        if not config.embedding_base_url:
            for use, model in (("knowledge", knowledge_model(config)), ("intents", intent_model(config)),
                               ("pairs", pairs_model(config)), ("answers", answers_model(config))):
                if model and model != config.embedding_model:
                    slots[use] = LoadedEmbedder(model)
        return cls(slots)


def has_pairs(services: Services) -> bool:
    """Whether there is a model that reads a message beside an intent's examples (``pairs_model``)."""
    return "pairs" in services.state(LoadedEmbedders).slots


def has_answers(services: Services) -> bool:
    """Whether there is a model that reads a question beside a knowledge entry (``answers_model``)."""
    return "answers" in services.state(LoadedEmbedders).slots


RETRY_SECONDS = 60.0  # before an optional model that failed to load is tried again


async def answer_reader(services: Services) -> Embedder | None:
    """The answer encoder, where there is one (``has_answers``) and it loads; None otherwise (a search then
    stands on its first reading; a model that failed to load is tried again ``RETRY_SECONDS`` later)."""
    if not has_answers(services):
        return None
    slot = services.state(LoadedEmbedders).slots["answers"]
    if time.monotonic() - slot.failed_at < RETRY_SECONDS:
        return None
    try:
        return await get_embedder(services, answers=True)
    except Exception as exc:  # noqa: BLE001 - the search answers without it
        slot.failed_at = time.monotonic()
        log.warning("the knowledge base's second reading is off: its model is unavailable (%s)", exc)
        return None


async def get_embedder(services: Services, *, knowledge: bool = False, intents: bool = False,
                       pairs: bool = False, answers: bool = False) -> Embedder:
    """The app's embedder (with ``knowledge``: the knowledge base's; with ``intents``: the intent
    matcher's; with ``pairs``, where ``has_pairs``: the pair encoder; with ``answers``, where ``has_answers``:
    the answer encoder), loaded once (off the event loop) on first use."""
    use = ("knowledge" if knowledge else "intents" if intents else "pairs" if pairs else "answers" if answers
           else "app")
    loaded = services.state(LoadedEmbedders).slots[use]
    if loaded.embedder is not None:
        return loaded.embedder
    if loaded.closed:
        raise ModelError("the server is stopping")
    if loaded.loading is None:
        loaded.loading = asyncio.ensure_future(asyncio.to_thread(load_embedder, services.config, model=loaded.model))
        loaded.loading.add_done_callback(lambda done: _settle(loaded, done))
    return await asyncio.shield(loaded.loading)


def _settle(loaded: LoadedEmbedder, done: asyncio.Future) -> None:
    """Keeps a load's embedder; a failed load is tried again by the next caller."""
    loaded.loading = None
    if not done.cancelled() and done.exception() is None:
        loaded.embedder = done.result()


async def close_embedder(services: Services) -> None:
    for loaded in loaded_embedders(services):
        loaded.closed = True
        if loaded.loading is not None:  # its worker is closed with it below
            await asyncio.wait([loaded.loading])
        embedder, loaded.embedder = loaded.embedder, None
        if embedder is not None:
            await embedder.aclose()
