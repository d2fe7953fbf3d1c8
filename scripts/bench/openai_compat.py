"""OpenAI-compatible API benchmark (issue 10). Prints, from one run, measured side by side:

(a) time to first token of a streamed chat completion through flowbox (the ``openai`` SDK against
    /v1/chat/completions) / the same of a direct llama-cpp streamed call with the same prompt (goal <= 1.10)
(b) tokens/s after the first token, flowbox / direct (goal >= 0.95)

for the raw local model, and for an agent whose instructions are the same system prompt. Calls
alternate between flowbox and direct (who goes first alternates too), each prompt new to both (no
prefix-cache advantage on either side), greedy. Medians of the per-pair ratios are reported.

Usage: python scripts/bench/openai_compat.py [--models-dir DIR] [--rounds N] [--max-tokens N] [--client openai|httpx] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_chat import start_server  # noqa: E402

from flowbox.models.files import ensure_model  # noqa: E402

TOPICS = ["bees make honey", "tides work", "volcanoes erupt", "bread rises", "rainbows form", "birds migrate",
          "glaciers move", "coffee is roasted", "bridges carry weight", "clouds form", "batteries store energy"]


def prompt(i: int) -> tuple[str, str]:
    system = f"You are assistant number {i}, a patient teacher. Explain things step by step, in detail, for a curious reader."
    user = (f"Question {i}: could you explain how {TOPICS[i % len(TOPICS)]}? Please start from the basics, describe "
            "each stage in order, mention one common misconception, and finish with a short summary.")
    return system, user


def timed(chunks) -> tuple[float, float, int]:
    """(seconds to the first text, tokens per second after it, text pieces) of a stream of text pieces."""
    start = time.perf_counter()
    stamps = [time.perf_counter() - start for piece in chunks if piece]
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return stamps[0], rate, len(stamps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", default=os.environ.get("FLOWBOX_TEST_MODELS_DIR") or str(Path.home() / ".cache" / "flowbox-test-models"))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="model threads, the same on both sides")
    parser.add_argument("--client", choices=["openai", "httpx"], default="openai",
                        help="what reads flowbox's stream: the openai SDK (default) or a minimal SSE reader")
    args = parser.parse_args()
    models_dir = Path(args.models_dir)
    model_file = ensure_model(models_dir, "smollm2")
    os.environ["FLOWBOX_N_THREADS"] = str(args.threads)  # the server's model threads
    proc, key = start_server(Path(tempfile.mkdtemp(prefix="flowbox-bench-")) / "data", models_dir, args.port)
    base = f"http://127.0.0.1:{args.port}"
    import llama_cpp

    from flowbox.models.llama_load import keep_weights_out_of_amx

    keep_weights_out_of_amx()  # as the server loads its model

    direct = llama_cpp.Llama(str(model_file), n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=300)
    try:
        def new_agent(instructions: str) -> str:
            return httpx.post(f"{base}/api/public/agent", headers={"Authorization": key}, timeout=60, json={
                "name": "bench", "instructions": instructions, "max_tokens": args.max_tokens, "temperature": 0}).json()["id"]

        client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}], max_tokens=2)  # loaded

        def through_flowbox(model: str, messages: list[dict]):
            if args.client == "openai":
                with client.chat.completions.create(model=model, messages=messages, stream=True, max_tokens=args.max_tokens,
                                                    temperature=0) as stream:
                    for chunk in stream:
                        yield chunk.choices[0].delta.content if chunk.choices else None
                return
            # a minimal SSE reader: the client's own per-chunk work out of the measurement
            with httpx.stream("POST", f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=300,
                              json={"model": model, "messages": messages, "stream": True, "max_tokens": args.max_tokens,
                                    "temperature": 0}) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        yield chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None

        def direct_call(messages: list[dict]):
            for chunk in direct.create_chat_completion(messages, stream=True, max_tokens=args.max_tokens, temperature=0):
                yield chunk["choices"][0]["delta"].get("content")

        results: dict[str, list[tuple[float, float]]] = {"raw local model": [], "agent": []}
        for i in range(1, args.rounds + 1):
            for label in results:
                system, user = prompt(i if label == "raw local model" else 1000 + i)
                messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
                if label == "agent":  # the agent's instructions are the system prompt; the caller sends the question
                    model, sent = new_agent(system), messages[1:]
                else:
                    model, sent = "local", messages
                if i % 2:  # alternate who goes first, so load drifting during a round cancels out
                    ours = timed(through_flowbox(model, sent))
                    theirs = timed(direct_call(messages))
                else:
                    theirs = timed(direct_call(messages))
                    ours = timed(through_flowbox(model, sent))
                results[label].append((ours[0] / theirs[0], ours[1] / theirs[1]))
                print(f"  round {i} {label}: TTFT {ours[0] * 1000:.0f} vs {theirs[0] * 1000:.0f} ms, "
                      f"{ours[1]:.1f} vs {theirs[1]:.1f} tok/s ({ours[2]} vs {theirs[2]} pieces)", flush=True)
        for label, pairs in results.items():
            ttft = [p[0] for p in pairs]
            rate = [p[1] for p in pairs]
            print(f"(a) {label}: TTFT flowbox / direct: median {statistics.median(ttft):.3f} "
                  f"(runs: {', '.join(f'{r:.3f}' for r in ttft)}; goal <= 1.10)")
            print(f"(b) {label}: tokens/s flowbox / direct: median {statistics.median(rate):.3f} "
                  f"(runs: {', '.join(f'{r:.3f}' for r in rate)}; goal >= 0.95)")
    finally:
        client.close()
        direct.close()
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
