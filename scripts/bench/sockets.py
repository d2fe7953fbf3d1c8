"""Socket benchmark: how many messaging sockets one flowbox holds open, the memory each costs, and
message.send -> message.received latency with 100 sockets active.

Runs ``flowbox serve`` as its own process (temp data dir, the shop flow of
tests/messaging/messaging_flow.json) so its memory is measured alone, then from this process:
  * opens --sockets websockets offering permessage-deflate (as browsers do), then --sockets more
    without it (as the node SDK's websocket package), each following its own thread as a chat widget
    does; checks every one answers a ping, and reads the server's RSS before and after each batch:
    memory per open socket, both kinds;
  * with those still open (kept alive by pings, as the SDK does every 25 s), 1 socket and then
    --active sockets send messages in a closed loop (send, wait for message.received, send the
    next): p50 / p99 of message.send -> message.received, side by side.

    python scripts/bench/sockets.py [--sockets 1000] [--active 100] [--rounds 10]

The file-descriptor limit is raised to its hard limit for this process and the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]
FLOW = ROOT / "tests" / "messaging" / "messaging_flow.json"
SCRIPT = ["Hello", "I want to give feedback", "yes"]  # exact examples: greet, feedback, feedback-yes


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def flowbox(env: dict, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "flowbox", *args], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


class Sockets:
    def __init__(self, base: str, client_id: str):
        self.base, self.client_id = base, client_id
        self.http = httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=50))

    async def open(self, thread: str, deflate: bool = True):
        info = await self.http.get("/socket.info", params={"clientId": self.client_id, "sessionId": thread, "threadId": thread})
        info.raise_for_status()
        return await connect(info.json()["payload"]["endpoint"], ping_interval=None, max_queue=None, open_timeout=60,
                             compression="deflate" if deflate else None)

    async def open_many(self, first: int, count: int, deflate: bool) -> tuple[list, int]:
        held, failures = [], 0
        for batch in range(first, first + count, 50):
            opened = await asyncio.gather(*(self.open(f"hold-{i}", deflate) for i in range(batch, min(first + count, batch + 50))),
                                          return_exceptions=True)
            failures += sum(isinstance(o, BaseException) for o in opened)
            held.extend(o for o in opened if not isinstance(o, BaseException))
        await asyncio.gather(*(ping(ws) for ws in held))  # every one is alive and answering
        return held, failures


async def ping(ws) -> None:
    await ws.send('{"type":"ping"}')
    while json.loads(await ws.recv())["type"] != "pong":
        pass


async def converse(ws, thread: str, rounds: int, latencies: list[float]) -> None:
    for i in range(rounds):
        speech = SCRIPT[i % len(SCRIPT)]
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "message.send", "payload": {"threadId": thread, "speech": speech, "traceId": i}}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "message.received":
                latencies.append((time.perf_counter() - started) * 1000)
                break
            if frame["type"] == "error":
                raise RuntimeError(frame["message"])


async def keepalive(sockets: list, stop: asyncio.Event) -> None:
    """The SDK pings every 25 s; the server closes sockets silent for 50 s."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 20)
        except asyncio.TimeoutError:
            await asyncio.gather(*(ws.send('{"type":"ping"}') for ws in sockets), return_exceptions=True)


async def bench(args, base: str, client_id: str, pid: int) -> dict:
    s = Sockets(base, client_id)
    warm = await s.open("warm-up")
    await converse(warm, "warm-up", 3, [])  # loads the embedder and compiles the flow
    await warm.close()
    await asyncio.sleep(0.5)
    # Browsers offer permessage-deflate (zlib state on both ends); the node SDK's websocket package does not.
    rss = [rss_mb(pid)]
    started = time.perf_counter()
    held, failures = await s.open_many(0, args.sockets, deflate=True)
    await asyncio.sleep(1.0)
    rss.append(rss_mb(pid))
    plain, plain_failures = await s.open_many(args.sockets, args.sockets, deflate=False)
    open_s = time.perf_counter() - started
    await asyncio.sleep(1.0)
    rss.append(rss_mb(pid))
    failures += plain_failures
    held += plain
    stop = asyncio.Event()
    pinger = asyncio.create_task(keepalive(held, stop))

    single: list[float] = []
    await converse(held[0], "hold-0", args.rounds * 3, single)
    active: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(converse(ws, f"hold-{i}", args.rounds, active) for i, ws in enumerate(held[1:args.active + 1], 1)))
    active_s = time.perf_counter() - started
    alive = sum(ws.state.name == "OPEN" for ws in held)
    stop.set()
    await pinger
    await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    await s.http.aclose()
    return {"opened": len(held), "failed": failures, "open_s": open_s, "alive_at_end": alive, "rss": rss,
            "single": single, "active": active, "active_s": active_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10, help="messages each active socket sends")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    data = tempfile.mkdtemp(prefix="flowbox-bench-sockets-")
    env = {**os.environ, "FLOWBOX_DATA_DIR": data, "FLOWBOX_LOG_LEVEL": "warning", "FLOWBOX_RATE_LIMIT_PER_MINUTE": "0",
           "FLOWBOX_MESSAGING_SOCKET_MAX_PER_ADDRESS": "0"}
    if os.environ.get("FLOWBOX_TEST_MODELS_DIR"):
        env["FLOWBOX_MODELS_DIR"] = os.environ["FLOWBOX_TEST_MODELS_DIR"]
    project = flowbox(env, "projects", "create", "bench", "--json")
    flowbox(env, "flows", "import", str(FLOW), "--project", project["projectId"], "--json")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(Path(data) / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "flowbox", "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start; see {log.name}")
            time.sleep(0.2)
        time.sleep(3)  # let the background model preload settle before measuring memory
        r = asyncio.run(bench(args, f"http://127.0.0.1:{port}", project["clientId"], server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(data, ignore_errors=True)

    half = args.sockets
    deflate_kb, plain_kb = ((r["rss"][i + 1] - r["rss"][i]) * 1024 / half for i in (0, 1))
    print(f"flowbox socket benchmark  (fd limit {fd_limit}, {os.cpu_count()} cores, server and clients on this machine)")
    print(f"  sockets held open at once: {r['opened']} of {2 * half} (failed {r['failed']}), all answered a ping; "
          f"opened in {r['open_s']:.1f} s ({r['opened'] / r['open_s']:.0f}/s); still open at the end: {r['alive_at_end']}")
    print(f"  server RSS: {r['rss'][0]:.1f} MB -> {r['rss'][1]:.1f} MB with {half} permessage-deflate sockets (browsers) "
          f"-> {r['rss'][2]:.1f} MB with {half} more plain ones (the node SDK)")
    print(f"  memory per socket: {deflate_kb:.1f} KB with permessage-deflate, {plain_kb:.1f} KB without")
    print("  message.send -> message.received (ms), the other sockets held open and pinging:")
    print(f"    {'':>22} {'n':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'msg/s':>8}")
    rows = [("1 socket, sequential", r["single"], sum(r["single"]) / 1000),
            (f"{args.active} sockets active", r["active"], r["active_s"])]
    for name, values, seconds in rows:
        print(f"    {name:>22} {len(values):>6} {statistics.median(values):>8.2f} {percentile(values, 90):>8.2f} "
              f"{percentile(values, 99):>8.2f} {max(values):>8.2f} {len(values) / seconds:>8.0f}")


if __name__ == "__main__":
    main()
