"""Outbox benchmark: deliveries per second to a loopback receiver that answers at once, and the time
from enqueue to arrival (p50/p99) at a steady enqueue rate.

    python scripts/bench/outbox.py [--n 3000] [--rate 200] [--seconds 5]

The receiver is a minimal asyncio HTTP/1.1 server in its own process (so it does not share the
benchmark's interpreter), recording the arrival time of each X-Flowbox-Delivery id. The outbox runs
as in ``flowbox serve``: a real SQLite file, one write transaction per enqueue in the latency phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from flowbox import config as config_mod
from flowbox import orgs, outbox
from flowbox.db import Store


def receiver_main(port_queue) -> None:
    arrivals: dict[str, float] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                await reader.readexactly(int(headers.get("content-length", 0)))
                if lines[0].startswith("GET /stats"):
                    body = json.dumps(arrivals).encode()
                    arrivals.clear()
                else:
                    arrivals.setdefault(headers.get("x-flowbox-delivery", ""), arrived)
                    body = b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


async def arrivals(port: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    data = json.loads(await reader.readexactly(length))
    writer.close()
    return data


async def wait_delivered(store: Store, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while (await outbox.counts(store))["delivered"] < n:
        if time.time() > deadline:
            raise SystemExit(f"only {(await outbox.counts(store))} after {timeout}s")
        await asyncio.sleep(0.01)


async def run_phase(data_dir: Path, port: int, concurrency: int, n: int, rate: float, seconds: float) -> dict:
    cfg = config_mod.load(None, env={}).replace(data_dir=str(data_dir), allow_private_outbound=True, outbox_concurrency=concurrency)
    store = await Store(cfg.db_path).open()
    org, _ = await orgs.ensure_default_org(store, with_key=False)
    worker = outbox.Outbox(store, cfg)
    worker.start()
    url = f"http://127.0.0.1:{port}/hook"
    payload = {"event": "message.reply", "text": "x" * 200}
    try:
        # throughput: a backlog of n deliveries committed at once
        async with store.write() as tx:
            for _ in range(n):
                await outbox.enqueue(tx, org_id=org["id"], url=url, payload=payload, kind="bench")
        started = time.perf_counter()
        worker.wake()
        await wait_delivered(store, n)
        throughput = n / (time.perf_counter() - started)
        await arrivals(port)

        # latency: one transaction per enqueue, at a steady rate, as callers do
        enqueued: dict[str, float] = {}
        interval = 1 / rate
        next_at = time.perf_counter()
        for _ in range(int(rate * seconds)):
            at = time.time()
            async with store.write() as tx:
                delivery_id = await outbox.enqueue(tx, org_id=org["id"], url=url, payload=payload, kind="bench")
            worker.wake()
            enqueued[delivery_id] = at
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await wait_delivered(store, n + len(enqueued))
        got = await arrivals(port)
        latencies = sorted((got[i] - t) * 1000 for i, t in enqueued.items())
        return {
            "concurrency": concurrency,
            "deliveries_per_s": throughput,
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
            "max_ms": latencies[-1],
        }
    finally:
        await worker.stop()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="backlog size for the throughput phase")
    parser.add_argument("--rate", type=float, default=200, help="enqueues per second in the latency phase")
    parser.add_argument("--seconds", type=float, default=5, help="length of the latency phase")
    parser.add_argument("--concurrency", default="1,16,64", help="outbox_concurrency values to compare")
    args = parser.parse_args()
    ports = multiprocessing.Queue()
    proc = multiprocessing.Process(target=receiver_main, args=(ports,), daemon=True)
    proc.start()
    port = ports.get(timeout=10)
    rows = []
    try:
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(asyncio.run(run_phase(Path(tmp), port, concurrency, args.n, args.rate, args.seconds)))
    finally:
        proc.terminate()
    print(f"outbox -> loopback receiver; backlog {args.n}; latency at {args.rate:g}/s for {args.seconds:g}s (one transaction per enqueue)")
    print(f"{'concurrency':>11}  {'deliveries/s':>12}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}")
    for r in rows:
        print(f"{r['concurrency']:>11}  {r['deliveries_per_s']:>12.0f}  {r['p50_ms']:>7.1f}  {r['p99_ms']:>7.1f}  {r['max_ms']:>7.1f}")
    base = rows[0]["deliveries_per_s"]
    print("throughput vs concurrency " + str(rows[0]["concurrency"]) + ": "
          + ", ".join(f"{r['concurrency']}: {r['deliveries_per_s'] / base:.1f}x" for r in rows))


if __name__ == "__main__":
    main()
