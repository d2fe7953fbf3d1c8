"""Remote-model pool benchmark (issue 19): what flowbox's API layer handles in front of an inference pool.

The pool's servers are stand-ins that answer at once (a small OpenAI-compatible server streaming a
fixed reply of --reply-tokens chunks), so what is measured is flowbox's layer, not a model. Prints,
from one run, requests/s and p50/p99 latency at --concurrency clients, and the CPU time the serving
process spent per request (its user+system time over the run / requests: unlike requests/s, this
holds on a busy machine; 1000 / it is the requests/s one core of that process keeps up with), for:

  direct         the stand-in itself, POST /v1/chat/completions as flowbox sends it (the load
                 generator's ceiling on this machine)
  raw            POST /v1/chat/completions {"model": "remote"} through flowbox (non-streamed)
  raw-stream     the same, streamed (SSE)
  agent          POST /api/public/agent/{id}/chat through flowbox (a thread stored per chat)

then how the requests of the runs through flowbox spread over the pool's servers.

Usage: python scripts/bench/pool.py [--servers N] [--concurrency C] [--seconds S] [--reply-tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


# -- the stand-in server (run as a child: --stub PORT) --------------------------------------------

def stub_app(reply_tokens: int):
    words = [f" word{i}" for i in range(reply_tokens)]

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        body = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub",
                "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n".encode()

    reply = b"".join([chunk({"role": "assistant"}), *(chunk({"content": w}) for w in words), chunk({}, "stop"),
                      chunk({}, usage={"prompt_tokens": 20, "completion_tokens": reply_tokens, "total_tokens": 20 + reply_tokens}),
                      b"data: [DONE]\n\n"])
    served = {"n": 0}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["path"].endswith("/chat/completions"):
            served["n"] += 1
            body, kind = reply, b"text/event-stream"
        elif scope["path"].endswith("/served"):
            body, kind = json.dumps(served).encode(), b"application/json"
        else:
            body, kind = b'{"object": "list", "data": [{"id": "stub", "object": "model"}]}', b"application/json"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})

    return app


def run_stub(port: int, reply_tokens: int) -> None:
    import uvicorn

    uvicorn.run(stub_app(reply_tokens), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{url}: the process exited")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    sys.exit(f"{url}: not serving")


def start_flowbox(data_dir: Path, port: int, stubs: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "FLOWBOX_RATE_LIMIT_PER_MINUTE": "0",
           "FLOWBOX_REMOTE_BASE_URLS": ",".join(stubs), "FLOWBOX_REMOTE_MODEL": "stub"}
    proc = subprocess.Popen([sys.executable, "-m", "flowbox", "serve", "--port", str(port), "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    key = None
    for line in proc.stdout:
        match = re.search(r"First API key .*: (fbx_\S+)", line)
        key = match.group(1) if match else key
        if "Uvicorn running on" in line:
            break
    if proc.poll() is not None or not key:
        sys.exit("flowbox serve did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, key


# -- load -----------------------------------------------------------------------------------------

async def load(url: str, body: dict, headers: dict, concurrency: int, seconds: float, stream: bool) -> dict:
    """``concurrency`` clients sending ``body`` back to back for ``seconds``: requests/s, latencies, errors."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
        async def one() -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                if stream:
                    async with client.stream("POST", url, json=body) as response:
                        async for _ in response.aiter_lines():
                            pass
                else:
                    response = await client.post(url, json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

        async def client_loop(until: float) -> None:
            while time.perf_counter() < until:
                await one()

        for _ in range(concurrency):  # warm: connections open, first-use costs paid
            await one()
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(started + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")  # noqa: E731
    return {"rps": len(latencies) / elapsed, "p50": pick(0.50), "p99": pick(0.99), "errors": errors, "n": len(latencies)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=2, help="stand-in servers in the pool")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--reply-tokens", type=int, default=16)
    parser.add_argument("--stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub:
        return run_stub(args.stub, args.reply_tokens)

    stub_ports = [free_port() for _ in range(args.servers)]
    stubs = [subprocess.Popen([sys.executable, __file__, "--stub", str(p), "--reply-tokens", str(args.reply_tokens)]) for p in stub_ports]
    stub_urls = [f"http://127.0.0.1:{p}/v1" for p in stub_ports]
    port = free_port()
    flowbox = None
    try:
        for url, proc in zip(stub_urls, stubs):
            wait_for(f"{url}/models", proc)
        flowbox, key = start_flowbox(Path(tempfile.mkdtemp(prefix="flowbox-bench-")) / "data", port, stub_urls)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": key}
        agent = httpx.post(f"{base}/api/public/agent", headers=auth, json={"name": "bench", "model": "remote", "max_tokens": 64}).json()
        messages = [{"role": "user", "content": "Say something short."}]
        wire = {"model": "stub", "messages": messages, "max_tokens": 64, "temperature": 0.2, "stream": True,
                "stream_options": {"include_usage": True}}
        runs = [
            ("direct", stubs[0].pid, f"{stub_urls[0]}/chat/completions", wire, {}, True),
            ("raw", flowbox.pid, f"{base}/v1/chat/completions", {"model": "remote", "messages": messages}, auth, False),
            ("raw-stream", flowbox.pid, f"{base}/v1/chat/completions", {"model": "remote", "messages": messages, "stream": True}, auth, True),
            ("agent", flowbox.pid, f"{base}/api/public/agent/{agent['id']}/chat", {"messages": "Say something short."}, auth, False),
        ]
        print(f"{args.servers} stand-in servers, {args.reply_tokens}-token replies, {args.concurrency} clients, "
              f"{args.seconds:g}s per run, {os.cpu_count()} CPUs")
        print(f"{'run':<12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU ms/req':>12}{'req/s/core':>12}")
        results = {}
        served = lambda: [httpx.get(f"{url}/served").json()["n"] for url in stub_urls]  # noqa: E731
        for name, pid, url, body, headers, stream in runs:
            if name == "raw":
                before = served()
            cpu = cpu_seconds(pid)
            result = asyncio.run(load(url, body, headers, args.concurrency, args.seconds, stream))
            result["cpu_ms"] = (cpu_seconds(pid) - cpu) * 1000 / max(1, result["n"] + args.concurrency)  # the warm-up's too
            results[name] = result
            print(f"{name:<12}{result['rps']:>9.0f}{result['p50']:>9.1f}{result['p99']:>9.1f}{result['errors']:>8}"
                  f"{result['cpu_ms']:>12.2f}{1000 / result['cpu_ms']:>12.0f}")
        print("requests through flowbox per server:", [n - b for n, b in zip(served(), before)])
        print(json.dumps({name: {k: round(v, 1) for k, v in r.items()} for name, r in results.items()}))
    finally:
        for proc in [*stubs, *([flowbox] if flowbox else [])]:
            proc.terminate()
        for proc in [*stubs, *([flowbox] if flowbox else [])]:
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
