"""Batched generation: the requests running on one local model decode together.

Each request gets a sequence of its own (a slot: one KV cache stream of ``n_ctx`` tokens) and one
thread decodes for all of them. Each step is one ``llama_decode`` of a batch holding the next
token of every generating sequence, then each sequence samples its token with its own sampler
chain (its grammar, its temperature, its seed); and, between steps, one chunk of a prompt being
read. The weights are read once per step however many sequences it carries, so four chats cost
little more than one (``scripts/bench/batched_generation.py``).

A greedy reply does not depend on what runs beside it. llama.cpp's numbers for a token depend on
the shape of the batch it is computed in: its KV streams are kept apart (``kv_unified`` off; with
one unified cache replies changed after a few dozen tokens), a prompt chunk is decoded on its own
(in a batch with other sequences' tokens, llama.cpp would split it to match them), and every chunk
after a reused prefix holds at least ``MIN_CHUNK`` tokens, which its CPU attention computes the
same way however they are cut (fewer take another path, with other rounding).

Prompt prefixes are reused. A finished sequence's KV cache stays in its slot; a new request takes
the free slot sharing the longest prefix with its prompt, or a longer prefix from another slot (a
running one too, copied) or from the saved states: a slot's contents are saved
there (``llama_state_seq_get_data``, up to ``cache_bytes``) before a different prompt overwrites
them, so an agent's system prompt or a continued thread evaluates only its new tokens.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import queue
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger("flowbox.models")

COPY_GAIN = 32  # tokens a copied prefix must save over the slot's own before a copy is worth it
MIN_CHUNK = 64  # a prompt's tokens after a reused prefix, at least (see above)
SAVE_MIN = 64  # a slot's contents are saved when a new prompt differs from them in at least this many tokens


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def make_sampler(vocab: Any, *, temperature: float, grammar: str | None, seed: int) -> Any:
    """A sampler chain as llama-cpp-python's completions build it: the grammar first, then greedy
    at temperature 0, else top-k 40, top-p 0.95, min-p 0.05, the temperature and a seeded draw.
    None for greedy without a grammar: the engine takes the logits' argmax itself, which is what
    the greedy sampler picks (the first highest), without copying the whole vocabulary per token."""
    import llama_cpp

    if temperature == 0 and not grammar:
        return None
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if grammar:
        constraint = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not constraint:
            llama_cpp.llama_sampler_free(chain)
            raise ValueError("the grammar could not be parsed")
        llama_cpp.llama_sampler_chain_add(chain, constraint)
    if temperature == 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    else:
        if temperature > 0:
            for sampler in (llama_cpp.llama_sampler_init_top_k(40), llama_cpp.llama_sampler_init_typical(1.0, 1),
                            llama_cpp.llama_sampler_init_top_p(0.95, 1), llama_cpp.llama_sampler_init_min_p(0.05, 1),
                            llama_cpp.llama_sampler_init_temp(temperature)):
                llama_cpp.llama_sampler_chain_add(chain, sampler)
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


@dataclass
class Job:
    """One request: its prompt, limits and sampler in; text out through ``emit`` as it comes."""

    prompt: list[int]
    max_tokens: int
    sampler: Any  # None: greedy, the engine's argmax (see make_sampler)
    stop: list[bytes]
    cancel: threading.Event
    emit: Callable[[str], None]
    done: threading.Event = field(default_factory=threading.Event)
    pending: list[int] = field(default_factory=list)  # prompt tokens not decoded yet
    chunks: list[int] = field(default_factory=list)  # the sizes they are decoded in
    next_token: int | None = None  # sampled, to be decoded in the next step
    out: bytearray = field(default_factory=bytearray)  # the reply's bytes so far
    sent: int = 0  # bytes of ``out`` emitted
    pieces: list[str] = field(default_factory=list)
    n_generated: int = 0
    result: tuple[str, int, str] | None = None
    error: Exception | None = None

    def take(self, piece: bytes) -> str | None:
        """Adds a token's bytes; emits what can no longer be the start of a stop string or of a
        UTF-8 character. Returns the finish reason when a stop string completed."""
        self.out += piece
        cut = min((i for i in (self.out.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            del self.out[cut:]
            return "stop"
        end = len(self.out)
        held = 0
        for s in self.stop:  # the longest tail that a stop string starts with
            for k in range(min(len(s) - 1, end - self.sent), held, -1):
                if self.out.endswith(s[:k]):
                    held = k
                    break
        self._emit(_utf8_end(self.out, self.sent, end - held))
        return None

    def _emit(self, end: int) -> None:
        if end > self.sent:
            text = self.out[self.sent:end].decode("utf-8", "ignore")
            self.sent = end
            if text:
                self.pieces.append(text)
                self.emit(text)

    def finish(self, reason: str) -> None:
        self._emit(len(self.out))
        self.result = ("".join(self.pieces), self.n_generated, reason)
        self.done.set()

    def fail(self, error: Exception) -> None:
        self.error = error
        self.done.set()


def _utf8_end(data: bytearray, start: int, end: int) -> int:
    """``end``, moved back before a UTF-8 character whose bytes are not all there yet."""
    for back in range(1, min(4, end - start) + 1):
        byte = data[end - back]
        if byte & 0xC0 != 0x80:  # the lead byte of the last character
            size = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return end - back if size > back else end
    return end


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what this sequence's KV cache holds, from position 0
    job: Job | None = None
    used: int = 0  # when it last took a job (least recently used first when all else is equal)


class SavedStates:
    """Sequence states by the tokens they hold, least recently used dropped past ``capacity`` bytes."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 0
        self._states: OrderedDict[tuple[int, ...], tuple[np.ndarray, Any]] = OrderedDict()

    def longest(self, prompt: np.ndarray) -> tuple[int, tuple[int, ...] | None]:
        best, best_key = 0, None
        for key, (tokens, _) in self._states.items():
            n = _common_prefix(tokens, prompt)
            if n > best:
                best, best_key = n, key
        return best, best_key

    def get(self, key: tuple[int, ...]) -> Any:
        self._states.move_to_end(key)
        return self._states[key][1]

    def add(self, tokens: list[int], data: Any) -> None:
        key = tuple(tokens)
        if key in self._states or len(data) > self.capacity:
            return
        self._states[key] = (np.asarray(tokens, dtype=np.int32), data)
        self.size += len(data)
        while self.size > self.capacity:
            _, (_, dropped) = self._states.popitem(last=False)
            self.size -= len(dropped)


class BatchEngine:
    """Runs jobs on a llama.cpp context made with ``n_seq_max`` = slots and ``kv_unified`` off;
    ``run`` is called from any thread, the decoding happens on the engine's own."""

    def __init__(self, model: Any, ctx: Any, *, slots: int, cache_bytes: int):
        import llama_cpp

        self.model, self.ctx = model, ctx  # the Python wrappers: they own (and free) the native objects
        self.vocab = model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.memory = llama_cpp.llama_get_memory(ctx.ctx)
        self.n_ctx = llama_cpp.llama_n_ctx_seq(ctx.ctx)
        self.n_batch = llama_cpp.llama_n_batch(ctx.ctx)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.slots = [Slot(seq) for seq in range(slots)]
        self.states = SavedStates(cache_bytes)
        self._incoming: queue.SimpleQueue[Job | None] = queue.SimpleQueue()  # None: close
        self._waiting: deque[Job] = deque()
        self._turns = itertools.count(1)
        self._piece = ctypes.create_string_buffer(64)
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="flowbox-batch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Ends the engine's thread once the jobs it has are done (a worker process just exits;
        an engine in a longer-lived process is closed before its context is freed)."""
        import llama_cpp

        self._closing = True
        self._incoming.put(None)
        self._thread.join()
        llama_cpp.llama_batch_free(self.batch)

    def run(self, job: Job) -> tuple[str, int, str]:
        """Queues the job and waits for it (blocking); the sampler is the engine's from now on."""
        if not job.prompt or len(job.prompt) >= self.n_ctx:
            self._free_sampler(job)
            raise ValueError("empty prompt" if not job.prompt else
                             f"Requested tokens ({len(job.prompt)}) exceed context window of {self.n_ctx}")
        job.max_tokens = max(1, min(job.max_tokens, self.n_ctx - len(job.prompt)))
        self._incoming.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    # -- the engine's thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            running = [slot for slot in self.slots if slot.job is not None]
            try:
                if not running and not self._waiting:
                    if self._closing or (job := self._incoming.get()) is None:
                        return
                    self._waiting.append(job)
                while not self._incoming.empty():
                    if (job := self._incoming.get_nowait()) is not None:
                        self._waiting.append(job)
                self._start_waiting()
                self._end_cancelled()
                self._pack()
                if any(slot.job is not None for slot in self.slots):
                    self._step()
            except Exception as exc:  # a mistake of ours: the jobs running fail, the engine goes on
                log.exception("batched generation failed")
                for slot in self.slots:
                    if slot.job is not None:
                        self._end(slot, error=exc)
                    self._clear(slot)

    def _start_waiting(self) -> None:
        for job in [job for job in self._waiting if job.cancel.is_set()]:  # gone before they started
            self._waiting.remove(job)
            self._free_sampler(job)
            job.finish("cancelled")
        while self._waiting:
            job = self._waiting[0]
            free = [slot for slot in self.slots if slot.job is None]
            if not free:
                return
            self._waiting.popleft()
            try:
                self._place(job, free)
            except Exception as exc:  # never seen; the job must not wait forever
                log.exception("placing a generation failed")
                self._free_sampler(job)
                job.fail(exc)

    def _place(self, job: Job, free: list[Slot]) -> None:
        """Puts the job in the free slot whose cache serves its prompt best, brought there from
        another slot or a saved state when that saves enough of the prompt's evaluation."""
        import llama_cpp

        prompt = np.asarray(job.prompt, dtype=np.int32)
        usable = max(0, len(prompt) - MIN_CHUNK)  # a shorter prompt is read whole: no prefix is reused
        common = {slot.seq: _common_prefix(np.asarray(slot.tokens, dtype=np.int32), prompt) for slot in self.slots}
        shared = {seq: min(n, usable) for seq, n in common.items()}
        running = [s.seq for s in self.slots if s.job is not None]

        def gaps(s: Slot) -> int:  # free ids left between the running sequences if the job takes s
            ids = running + [s.seq]
            return max(ids) - min(ids) + 1 - len(ids)

        slot = max(free, key=lambda s: (shared[s.seq], -gaps(s), -s.used))
        reuse = shared[slot.seq]
        donor = max((s for s in self.slots if s is not slot), key=lambda s: shared[s.seq], default=None)
        saved, saved_key = self.states.longest(prompt) if self.states.capacity else (0, None)
        saved = min(saved, usable)
        self._save_before_overwrite(slot, common[slot.seq])  # another prompt takes its place
        if donor is not None and shared[donor.seq] >= max(reuse, saved) + COPY_GAIN:
            # another stream holds more of the prompt: copied whole, then cut to the shared prefix
            reuse = shared[donor.seq] if self._copy(donor, slot) else 0
        elif saved_key is not None and saved >= reuse + COPY_GAIN:
            data = self.states.get(saved_key)
            if llama_cpp.llama_state_seq_set_data(self.ctx.ctx, data, len(data), slot.seq):
                slot.tokens, reuse = list(saved_key), saved
            else:
                self._clear(slot)
                reuse = 0
        if not llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, reuse, -1):
            self._clear(slot)
            reuse = 0
        del slot.tokens[reuse:]
        job.pending = job.prompt[reuse:]
        parts = -(-len(job.pending) // self.n_batch)  # chunks of equal size, none of them small
        job.chunks = [len(job.pending) // parts + (i < len(job.pending) % parts) for i in range(parts)]
        slot.job, slot.used = job, next(self._turns)

    def _state(self, slot: Slot) -> Any:
        """The slot's sequence state (its cells of the KV cache), or None if llama.cpp gives none."""
        import llama_cpp

        size = llama_cpp.llama_state_seq_get_size(self.ctx.ctx, slot.seq)
        data = (ctypes.c_uint8 * size)()
        return data if llama_cpp.llama_state_seq_get_data(self.ctx.ctx, data, size, slot.seq) == size else None

    def _save(self, slot: Slot) -> None:
        data = self._state(slot)
        if data is not None:
            self.states.add(slot.tokens, data)

    def _save_before_overwrite(self, slot: Slot, kept: int) -> None:
        """Saves the slot's contents before other tokens, sharing their first ``kept`` with it, take
        its place: unless they differ by fewer than SAVE_MIN (a continued thread keeps its own)."""
        if self.states.capacity and len(slot.tokens) - kept >= SAVE_MIN:
            self._save(slot)

    def _copy(self, src: Slot, dst: Slot) -> bool:
        """Puts src's cache in dst's stream too, through its sequence state: the cells it uses
        (llama.cpp's stream-to-stream copy copies all ``n_ctx`` cells, many times more)."""
        import llama_cpp

        self._clear(dst)  # a state of no cells (a request not started yet) would leave dst's own in place
        data = self._state(src)
        if data is not None and llama_cpp.llama_state_seq_set_data(self.ctx.ctx, data, len(data), dst.seq):
            dst.tokens = list(src.tokens)
            return True
        self._clear(dst)
        return False

    def _pack(self) -> None:
        """Keeps the running sequences' ids contiguous. llama.cpp splits a batch at a gap in its
        sequence ids (0, 2, 3 decode as 0, then 2 and 3), each part paying a step's fixed cost (a
        split step took 10 to 20% longer); a request that ends between others leaves such a gap, so
        the highest sequence moves into it (a copy of its cells: a few milliseconds for a few
        hundred tokens, about what one split step loses)."""
        while True:
            running = [slot for slot in self.slots if slot.job is not None]
            if len(running) < 2 or running[-1].seq - running[0].seq + 1 == len(running):
                return
            gap = next(slot for slot in self.slots[running[0].seq:] if slot.job is None)
            top = running[-1]
            self._save_before_overwrite(gap, _common_prefix(np.asarray(gap.tokens, dtype=np.int32),
                                                            np.asarray(top.tokens, dtype=np.int32)))
            if not self._copy(top, gap):
                return  # never seen; the split batches still decode right
            gap.job, gap.used, top.job = top.job, top.used, None

    def _clear(self, slot: Slot) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
        slot.tokens = []

    def _end_cancelled(self) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.job.cancel.is_set():
                self._end(slot, "cancelled")

    def _end(self, slot: Slot, reason: str = "", error: Exception | None = None) -> None:
        job, slot.job = slot.job, None
        assert job is not None
        self._free_sampler(job)
        if error is not None:
            job.fail(error)
        else:
            job.finish(reason)

    @staticmethod
    def _free_sampler(job: Job) -> None:
        import llama_cpp

        if job.sampler is not None:
            llama_cpp.llama_sampler_free(job.sampler)
            job.sampler = None

    def _step(self) -> None:
        """One decode of every generating sequence's next token, then one chunk of a prompt."""
        generating = [slot for slot in self.slots if slot.job is not None and slot.job.next_token is not None]
        if generating:
            self._decode([(slot, [slot.job.next_token]) for slot in generating])
        reading = [slot for slot in self.slots if slot.job is not None and slot.job.pending]
        if reading:
            slot = min(reading, key=lambda s: s.used)  # the oldest request first
            job = slot.job
            size = job.chunks.pop(0)
            chunk, job.pending = job.pending[:size], job.pending[size:]
            self._decode([(slot, chunk)])

    def _decode(self, parts: list[tuple[Slot, list[int]]]) -> None:
        """Decodes each slot's tokens at its next positions, then samples each slot's next token
        from its last one's logits (its first after the prompt's last chunk)."""
        import llama_cpp

        batch, n = self.batch, 0
        sample_at: list[tuple[Slot, int]] = []
        for slot, tokens in parts:
            position = len(slot.tokens)
            for i, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = position + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = slot.seq
                batch.logits[n] = False
                n += 1
            if not slot.job.pending:
                batch.logits[n - 1] = True
                sample_at.append((slot, n - 1))
            slot.tokens.extend(tokens)
            slot.job.next_token = None
        batch.n_tokens = n
        code = llama_cpp.llama_decode(self.ctx.ctx, batch)
        if code != 0:
            for slot, _ in parts:  # what their caches hold is not known now
                if slot.job is not None:
                    self._end(slot, error=RuntimeError(f"llama_decode returned {code}"))
                self._clear(slot)
            return
        for slot, index in sample_at:
            self._next(slot, self._sample(slot.job, index))

    def _sample(self, job: Job, index: int) -> int:
        import llama_cpp

        if job.sampler is not None:
            return llama_cpp.llama_sampler_sample(job.sampler, self.ctx.ctx, index)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx.ctx, index), shape=(self.n_vocab,))
        return int(logits.argmax())

    def _next(self, slot: Slot, token: int) -> None:
        import llama_cpp

        job = slot.job
        assert job is not None
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self._end(slot, "stop")
            return
        job.n_generated += 1
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:  # a piece longer than the buffer (never seen: pieces are a few bytes)
            self._piece = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
        if job.take(self._piece.raw[:n]) == "stop":
            self._end(slot, "stop")
        elif job.n_generated >= job.max_tokens:
            self._end(slot, "length")
        else:
            job.next_token = token
