"""Chats API benchmark (issue 8). Prints, from one run, measured side by side:

(a) a 3-agent x 4-round chat (12 turns) over HTTP, from POST /chats/{id}/messages to the stream's
    ``completed``, divided by the sum of the same model calls made directly: every request the chat
    sent to the model is recorded, then replayed with ``flowbox.models.generate`` on the same
    backend, one after the other. Both runs start from an empty prompt cache. (goal <= 1.10)
    Beside it, the chat's time over the time its model calls took inside the same run (immune to the
    load drifting between the two runs on a shared machine).
(b) 4 chats of that flow at once: errors (goal 0), and their wall time.

The server runs in this process (as `flowbox serve` runs it: uvicorn, the real app and model), so
the model's requests can be recorded.

Usage: python scripts/bench/chats.py [--models-dir DIR] [--threads N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flowbox import config as config_mod  # noqa: E402
from flowbox import orgs  # noqa: E402
from flowbox.app import create_app  # noqa: E402
from flowbox.models import generate  # noqa: E402

AGENTS = ["planner", "writer", "editor"]


def start(cfg):
    """The app on uvicorn in a thread; returns (app, loop)."""
    app = create_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=cfg.port, log_level="warning"))
    server.install_signal_handlers = lambda: None
    holder: dict = {}

    def run():
        holder["loop"] = asyncio.new_event_loop()
        holder["loop"].run_until_complete(server.serve())

    threading.Thread(target=run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return app, holder["loop"], server


def wait_completed(client: httpx.Client, chat_id: str) -> str:
    """Follows the chat's SSE stream until it is completed or in error; returns that status."""
    with client.stream("GET", f"/chats/{chat_id}/stream") as response:
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "status":
                for status in ("completed", "error"):
                    if f'"status": "{status}"' in line:
                        return status
    return "stream ended"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", default=os.environ.get("FLOWBOX_TEST_MODELS_DIR") or str(Path.home() / ".cache" / "flowbox-test-models"))
    parser.add_argument("--threads", type=int, default=0, help="model threads (0 = all cores)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="runs of (a); the median is reported")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data_dir = tempfile.mkdtemp(prefix="flowbox-bench-chats-")
    cfg = config_mod.load(None).replace(data_dir=data_dir, models_dir=args.models_dir, port=port, n_threads=args.threads,
                                        rate_limit_per_minute=0)
    app, loop, server = start(cfg)
    services = app.state.services
    call = lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(600)  # noqa: E731

    async def setup():
        await services.models.get("local")
        org, _ = await orgs.ensure_default_org(services.store, with_key=False)
        key, _ = await orgs.create_key(services.store, org["id"], "bench")
        return key

    key = call(setup())
    backend = call(services.models.get("local"))
    recorded: list = []
    in_chat: list[float] = []  # how long each model call took inside the chat
    original_stream = backend.stream

    async def recording_stream(request, key=""):
        recorded.append(request)
        started = time.perf_counter()
        try:
            async for event in original_stream(request, key):
                yield event
        finally:
            in_chat.append(time.perf_counter() - started)

    backend.stream = recording_stream

    def cold_cache() -> None:
        import llama_cpp

        def reset():
            backend.llm.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=cfg.prompt_cache_mb << 20))
            backend.llm.reset()

        backend._executor.submit(reset).result()

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-KEY": key}, timeout=600)
    try:
        flow = client.post("/chatflows", json={
            "name": "bench",
            "agents": [{"name": name, "instructions": f"You are the {name}. Add one useful sentence to the plan.",
                        "max_tokens": args.max_tokens, "temperature": 0} for name in AGENTS],
            "speaker_selection": "round_robin", "max_rounds": 3 * 4, "termination_keyword": None,
        }).json()

        def run_chat(topic: str) -> tuple[str, float]:
            with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=600) as c:
                chat = c.post("/chats", json={"name": topic, "from_type": "flow", "from_flow": flow["id"]}).json()
                start_time = time.perf_counter()
                if c.post(f"/chats/{chat['id']}/messages", json={"message": f"Plan a trip to {topic}."}).status_code != 202:
                    return "refused", 0.0
                status = wait_completed(c, chat["id"])
                return status, time.perf_counter() - start_time

        run_chat("a warm-up place")  # the first request of a process pays for imports and allocations

        # (a) one chat, then its model calls directly; the median of a few runs (a shared machine is noisy)
        ratios, inside, chat_times = [], [], []
        for run in range(args.repeat):
            cold_cache()
            recorded.clear()
            in_chat.clear()
            status, chat_time = run_chat(f"Lisbon, day {run}")
            requests, model_time = list(recorded), sum(in_chat)
            cold_cache()
            direct_time = 0.0
            for request in requests:
                started = time.perf_counter()
                call(generate(backend, request))
                direct_time += time.perf_counter() - started
            ratios.append(chat_time / direct_time)
            chat_times.append(chat_time)
            inside.append(chat_time / model_time)
            print(f"    run {run + 1}: {chat_time:.2f} s over HTTP ({status}, {len(requests)} model calls) / "
                  f"{direct_time:.2f} s for the same calls made directly = {ratios[-1]:.3f}; "
                  f"/ {model_time:.2f} s in those calls during the chat = {inside[-1]:.3f}")
        chat_time = statistics.median(chat_times)
        print(f"(a) 3-agent x 4-round chat / its model calls made directly: median {statistics.median(ratios):.3f} (goal <= 1.10); "
              f"/ its model calls' time inside the chat: median {statistics.median(inside):.3f}")

        # (b) four at once
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(run_chat, ["Oslo", "Rome", "Kyoto", "Lima"]))
        errors = sum(status != "completed" for status, _ in outcomes)
        print(f"(b) 4 concurrent chats: {errors} errors (goal 0) in {time.perf_counter() - started:.1f} s "
              f"(one alone: {chat_time:.1f} s; the model runs one generation at a time)")
    finally:
        client.close()
        server.should_exit = True
        time.sleep(1)


if __name__ == "__main__":
    main()
