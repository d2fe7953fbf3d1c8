"""Batched generation benchmark (issue 18 item 4). Prints, from one run, measured side by side:

aggregate tokens/s of 4 concurrent chats on the local model / tokens/s of the same 4 chats run one
at a time (goal >= 1.8)

the same for chats of mixed lengths (96, 24, 96 and 48 tokens: a chat ending between others
leaves a gap in the batch's sequence ids, which llama.cpp would decode as two batches), and, for
prompt-prefix reuse, the time to the first token of a chat whose long system prompt is new,
beside that of the next chat with the same system prompt (a new question), which reads only its
end (at least 64 tokens).

Same prompts, greedy, through ``LocalChatModel`` (the fair queue, the worker process, the batch
engine), prompt reading included. Rounds alternate which way goes first; each round's ratio is
reported and their median is the result. Run it on a quiet machine (``uptime`` load < 1.5).

Beside it, in the same run, the plain baseline: llama.cpp alone (``BareLlama``: a worker process like the
model's, the same prompt tokens, threads and file, no queue, no sampler chain, no prefix reuse), reading
each prompt and then decoding the sequences one at a time, or together in one ``llama_batch``. Its ratio is
what this CPU and model file allow; flowbox's is measured against the same.

The kernels matter as much as the batching: on x86, llama.cpp multiplies a batch's matrices in one
pass (its tinyBLAS) for Q4_0, IQ4_NL and Q8_0 weights but token by token for Q4_1, the packaged
model's type. ``--model FILE`` measures another GGUF file the same way.

With llama-cpp-python built for a GPU, both run on it (all layers offloaded, as ``flowbox serve`` does;
``--gpu-layers 0`` keeps them on the CPU).

Usage: python scripts/bench/batched_generation.py [--models-dir DIR] [--model FILE] [--rounds N] [--max-tokens N]
       [--threads N] [--parallel N] [--gpu-layers N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flowbox.models.base import ChatRequest, generate  # noqa: E402
from flowbox.models.files import ensure_model  # noqa: E402
from flowbox.models.llama_load import backend, gpu_layers  # noqa: E402
from flowbox.models.local import LocalChatModel  # noqa: E402
from flowbox.models.worker import ModelWorker  # noqa: E402

TOPICS = ["a lighthouse keeper", "a dragon who bakes bread", "a lost robot", "two rival gardeners"]
MIXED = [96, 24, 96, 48]  # max_tokens of chats that end at different steps, the second first


def request(topic: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"Write a long story about {topic}."}],
                       max_tokens=max_tokens, temperature=0)


async def compare(model: LocalChatModel, requests: list[ChatRequest], label: str, reverse: bool) -> float:
    """Runs the requests one at a time and 4 at once; prints both rates and returns their ratio."""
    ways = [("one at a time", one_at_a_time), ("4 concurrent", together)]
    rates = {}
    for name, way in reversed(ways) if reverse else ways:
        tokens, seconds = await way(model, requests)
        rates[name] = tokens / seconds
        print(f"{label}: {name:>13}: {tokens} tokens in {seconds:5.1f} s = {rates[name]:6.1f} tokens/s")
    ratio = rates["4 concurrent"] / rates["one at a time"]
    print(f"{label}: ratio {ratio:.2f}")
    return ratio


async def one_at_a_time(model: LocalChatModel, requests: list[ChatRequest]) -> tuple[int, float]:
    started = time.perf_counter()
    tokens = 0
    for req in requests:
        tokens += (await generate(model, req)).completion_tokens
    return tokens, time.perf_counter() - started


async def together(model: LocalChatModel, requests: list[ChatRequest]) -> tuple[int, float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(generate(model, req, key=f"org{i}") for i, req in enumerate(requests)))
    return sum(r.completion_tokens for r in results), time.perf_counter() - started


class BareLlama:
    """llama.cpp alone, in a worker process of its own (``ModelWorker``: the same OpenMP wait as the model's)."""

    def __init__(self, path: str, n_threads: int, parallel: int, n_gpu_layers: int = 0):
        import llama_cpp
        from llama_cpp._internals import LlamaContext, LlamaModel

        from flowbox.models.llama_load import load_llama

        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = n_gpu_layers
        self.model = load_llama(LlamaModel, path_model=path, params=model_params)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.kv_unified = 1024 * parallel, parallel, False
        params.n_batch = params.n_ubatch = 512
        params.n_threads = params.n_threads_batch = n_threads
        self.ctx = LlamaContext(model=self.model, params=params, verbose=False)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)

    def run(self, prompts: list[list[int]], max_tokens: int, together: bool, *, cancel, emit) -> tuple[int, float]:
        """Tokens generated and seconds taken: each prompt read, then its reply decoded greedily (``together``:
        all the replies, one token of each per ``llama_decode``) until ``max_tokens`` or the end of a reply.
        (``cancel`` and ``emit``, which every worker call gets, are not used.)"""
        import llama_cpp

        memory = llama_cpp.llama_get_memory(self.ctx.ctx)
        n_vocab = llama_cpp.llama_vocab_n_tokens(self.model.vocab)
        started, generated = time.perf_counter(), 0
        for group in [list(range(len(prompts)))] if together else [[i] for i in range(len(prompts))]:
            position, last = {}, {}
            for seq in group:
                llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
                last[seq] = self._decode([(seq, token, i) for i, token in enumerate(prompts[seq])], n_vocab)[seq]
                position[seq] = len(prompts[seq])
            for _ in range(max_tokens):
                live = [seq for seq in group if not llama_cpp.llama_vocab_is_eog(self.model.vocab, last[seq])]
                if not live:
                    break
                generated += len(live)
                last.update(self._decode([(seq, last[seq], position[seq]) for seq in live], n_vocab))
                for seq in live:
                    position[seq] += 1
        return generated, time.perf_counter() - started

    def _decode(self, tokens: list[tuple[int, int, int]], n_vocab: int) -> dict[int, int]:
        """Decodes (sequence, token, position) triples in one batch; each sequence's next token (argmax)."""
        import llama_cpp
        import numpy as np

        batch = self.batch
        for n, (seq, token, position) in enumerate(tokens):
            batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.seq_id[n][0] = token, position, 1, seq
            batch.logits[n] = n == len(tokens) - 1 or tokens[n + 1][0] != seq
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(self.ctx.ctx, batch) == 0
        return {seq: int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx.ctx, n), shape=(n_vocab,)).argmax())
                for n, (seq, *_) in enumerate(tokens) if batch.logits[n]}


async def bare(path: Path, model: LocalChatModel, requests: list[ChatRequest], threads: int, gpu_layers: int) -> float:
    """The plain baseline: llama.cpp's rates one at a time and together, on the same prompt tokens; their ratio."""
    options = {"path": str(path), "n_threads": threads, "parallel": len(requests), "n_gpu_layers": gpu_layers}
    worker = ModelWorker(BareLlama, options, name="bare llama.cpp")
    try:
        prompts = [model.prompt_tokens(req.messages) for req in requests]
        rates = {}
        for name, together in (("one at a time", False), ("4 together", True)):
            tokens, seconds = await worker.call("run", prompts, requests[0].max_tokens, together)
            rates[name] = tokens / seconds
            print(f"bare llama.cpp: {name:>13}: {tokens} tokens in {seconds:5.1f} s = {rates[name]:6.1f} tokens/s")
    finally:
        worker.close()
    print(f"bare llama.cpp: ratio {rates['4 together'] / rates['one at a time']:.2f}")
    return rates["4 together"] / rates["one at a time"]


async def first_token(model: LocalChatModel, req: ChatRequest) -> float:
    started = time.perf_counter()
    seen: list[float] = []

    async def note(text: str) -> None:
        seen.append(time.perf_counter() - started)

    await generate(model, req, on_text=note)
    return seen[0]


async def prefix_reuse(model: LocalChatModel) -> None:
    system = "You are the support assistant of the Zephyr drone company. " + " ".join(
        f"Rule {i}: answer politely, mention the warranty when asked about repairs, and keep it short." for i in range(30))

    def chat(question: str) -> ChatRequest:
        return ChatRequest(messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
                           max_tokens=4, temperature=0)

    n_prompt = model.count_tokens(chat("How long does the drone fly?").messages)
    fresh = await first_token(model, chat("How long does the drone fly?"))
    reused = await first_token(model, chat("Where can I buy spare batteries?"))
    print(f"prefix reuse: first token of a {n_prompt}-token prompt {fresh:.2f} s new, {reused:.2f} s "
          f"with its system prompt cached ({fresh / reused:.1f}x)")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", default=os.environ.get("FLOWBOX_TEST_MODELS_DIR") or str(Path.home() / ".cache" / "flowbox-test-models"))
    parser.add_argument("--model", help="a GGUF chat model file to measure instead of the packaged SmolLM2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parallel", type=int, default=4, help="the model's parallel_sequences")
    parser.add_argument("--gpu-layers", type=int, default=-1, help="layers offloaded to a GPU (-1: all, when llama.cpp has a GPU backend)")
    args = parser.parse_args()
    path = Path(args.model) if args.model else ensure_model(Path(args.models_dir), "smollm2")
    gpu = gpu_layers(args.gpu_layers)
    where = f"{backend()} ({'all' if gpu == -1 else gpu} layers offloaded)" if gpu else "CPU"
    model = LocalChatModel(path, name="local", n_ctx=1024, n_threads=args.threads, parallel=args.parallel, n_gpu_layers=gpu)
    try:
        requests = [request(topic, args.max_tokens) for topic in TOPICS]
        await generate(model, request("warming up", 4))
        ratios = [await compare(model, requests, f"round {round_ + 1}", bool(round_ % 2)) for round_ in range(args.rounds)]
        mixed = await compare(model, [request(topic, n) for topic, n in zip(TOPICS, MIXED)], "mixed lengths", False)
        await prefix_reuse(model)
        ceiling = await bare(path, model, requests, args.threads, gpu)
        print(f"\naggregate tokens/s, 4 concurrent chats / 1 at a time: {statistics.median(ratios):.2f} "
              f"(median of {len(ratios)} rounds; goal >= 1.8); mixed lengths {mixed:.2f}; bare llama.cpp {ceiling:.2f}; "
              f"{path.name}, threads={args.threads}, load={os.getloadavg()[0]:.2f}, on {where}")
    finally:
        model.close()


if __name__ == "__main__":
    asyncio.run(main())
