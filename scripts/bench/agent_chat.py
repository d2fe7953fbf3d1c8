"""Agent chat benchmark (issue 3). Prints, from one run, measured side by side:

(a) HTTP agent chat wall time / a direct llama-cpp chat completion of the same prompt and token count
(b) p99 latency of GET /api/public/agent while 4 chats generate
(c) errors among 8 concurrent chats
(d) latency of the 6th turn of a thread / the 1st

Usage: python scripts/bench/agent_chat.py [--models-dir DIR] [--rounds N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
# The direct side waits for its threads as flowbox's model workers do (models/worker.py), so (a)
# compares the API layer, not two OpenMP wait policies. Set before llama.cpp is loaded.
from flowbox.models.worker import thread_wait  # noqa: E402

os.environ.update({k: v for k, v in thread_wait().items() if v is not None})

from flowbox.models.files import ensure_model  # noqa: E402


def start_server(data_dir: Path, models_dir: Path, port: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "FLOWBOX_MODELS_DIR": str(models_dir), "FLOWBOX_RATE_LIMIT_PER_MINUTE": "0"}  # a benchmark, not abuse
    proc = subprocess.Popen([sys.executable, "-m", "flowbox", "serve", "--port", str(port), "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    key = None
    for line in proc.stdout:
        match = re.search(r"First API key .*: (fbx_\S+)", line)
        if match:
            key = match.group(1)
        if "Uvicorn running on" in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, key


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", default=os.environ.get("FLOWBOX_TEST_MODELS_DIR") or str(Path.home() / ".cache" / "flowbox-test-models"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    models_dir = Path(args.models_dir)
    model_file = ensure_model(models_dir, "smollm2")
    tmp = Path(tempfile.mkdtemp(prefix="flowbox-bench-"))
    proc, key = start_server(tmp / "data", models_dir, args.port)
    base = f"http://127.0.0.1:{args.port}"
    client = httpx.Client(base_url=base, headers={"Authorization": key}, timeout=300)
    try:
        def new_agent(instructions: str, max_tokens: int) -> str:
            response = client.post("/api/public/agent", json={"name": "bench", "instructions": instructions,
                                                              "max_tokens": max_tokens, "temperature": 0})
            return response.json()["id"]

        warm = new_agent("Warm up.", 8)  # the server loads its model in the background at start
        client.post(f"/api/public/agent/{warm}/chat", json={"messages": "hi"})

        # (a) HTTP vs direct, same prompt and token count, no prefix reuse on either side
        import llama_cpp

        from flowbox.models.llama_load import keep_weights_out_of_amx

        keep_weights_out_of_amx()  # as the server loads its model

        threads = os.cpu_count() or 1
        direct = llama_cpp.Llama(str(model_file), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
        ratios = []
        for i in range(args.rounds):
            instructions = f"You are assistant number {i}. Answer in detail."
            agent_id = new_agent(instructions, 96)
            message = f"Explain topic {i}: how do bees make honey?"
            start = time.perf_counter()
            body = client.post(f"/api/public/agent/{agent_id}/chat", json={"messages": message}).json()["body"]
            http_time = time.perf_counter() - start
            reply = body["conversation_history"][-1]["content"]
            n_tokens = len(direct.tokenize(reply.encode(), add_bos=False)) or 1
            direct.reset()
            start = time.perf_counter()
            direct.create_chat_completion([{"role": "system", "content": instructions}, {"role": "user", "content": message}],
                                          max_tokens=n_tokens, temperature=0)
            direct_time = time.perf_counter() - start
            ratios.append(http_time / direct_time)
        direct.close()
        print(f"(a) HTTP chat / direct llama-cpp (same prompt, same tokens): median {statistics.median(ratios):.3f} "
              f"(runs: {', '.join(f'{r:.3f}' for r in ratios)}; goal <= 1.10)")

        # (b) p99 of a cheap GET while 4 chats generate
        agent_id = new_agent("Tell long stories.", 200)
        stop = threading.Event()
        latencies: list[float] = []

        def chat_loop():
            with httpx.Client(base_url=base, headers={"Authorization": key}, timeout=300) as c:
                while not stop.is_set():
                    c.post(f"/api/public/agent/{agent_id}/chat", json={"messages": "Tell me a long story about a dragon."})

        workers = [threading.Thread(target=chat_loop) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(1.0)
        end = time.time() + 10
        while time.time() < end:
            start = time.perf_counter()
            assert client.get("/api/public/agent").status_code == 200
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.02)
        stop.set()
        for w in workers:
            w.join()
        print(f"(b) GET /api/public/agent while 4 chats generate: p50 {percentile(latencies, 50):.1f} ms, "
              f"p99 {percentile(latencies, 99):.1f} ms over {len(latencies)} requests (goal p99 <= 50 ms)")

        # (c) 8 concurrent chats
        agent_id = new_agent("Answer briefly.", 48)

        def one(i: int) -> int:
            with httpx.Client(base_url=base, headers={"Authorization": key}, timeout=300) as c:
                r = c.post(f"/api/public/agent/{agent_id}/chat", json={"messages": f"Question {i}: what is the sky's colour?"})
                return 0 if r.status_code == 200 and r.json()["statusCode"] == 200 else 1

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            errors = sum(pool.map(one, range(8)))
        print(f"(c) 8 concurrent chats: {errors} errors in {time.perf_counter() - start:.1f} s (goal 0)")

        # (d) 6th turn / 1st turn of a thread
        turn_ratios = []
        for i in range(args.rounds):
            agent_id = new_agent(f"You are a patient tutor number {i}. Keep answers short. " * 8, 32)
            thread_id, times = None, []
            for turn in range(6):
                payload = {"messages": f"Turn {turn}: tell me one fact about the number {turn + 7}."}
                if thread_id:
                    payload["thread_id"] = thread_id
                start = time.perf_counter()
                body = client.post(f"/api/public/agent/{agent_id}/chat", json=payload).json()["body"]
                times.append(time.perf_counter() - start)
                thread_id = body["metadata"]["thread_id"]
            turn_ratios.append(times[5] / times[0])
        print(f"(d) 6th turn / 1st turn latency: median {statistics.median(turn_ratios):.3f} "
              f"(runs: {', '.join(f'{r:.3f}' for r in turn_ratios)}; goal <= 1.3)")
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
