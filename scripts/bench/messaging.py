"""Messaging benchmark: REST message -> reply latency (no LLM) and intent accuracy on paraphrases.

Runs ``flowbox serve`` on 127.0.0.1 (temp data dir, a process of its own, as deployed) with a loopback
webhook receiver in this process, a flow of eight intents, and measures in one run:
  * POST /rest/v1/messages -> reply produced (stored and queued; the POST returns after that):
    p50/p99 for exact-example messages and for paraphrases (one embedding each), and the server's
    CPU time per message (its embedding worker's included);
  * the same messages -> the reply webhook received at the receiver (through the outbox);
  * intent accuracy on paraphrases that are not examples (and on off-topic messages, which must
    fall to UNKNOWN), at several thresholds side by side (the engine called in this process, on the
    same data, after the server has stopped).

    python scripts/bench/messaging.py [--messages 300] [--threads N]

``--threads`` sets ``n_threads`` (the local models' CPU threads; 0 = all cores, the default).
The server is a separate process because a client or receiver in the server's own process shares
its interpreter lock: on a 2-core machine that added 5-10 ms to every message measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn
from processes import cpu_seconds, free_port, wait_http  # this folder's

ROOT = Path(__file__).resolve().parents[2]

INTENTS = {
    "greeting": ["hello", "hi there", "good morning", "hey"],
    "weather": ["what is the weather like", "weather forecast", "will it rain tomorrow", "is it sunny outside"],
    "order": ["I want to order a pizza", "can I place an order", "order food", "I would like to buy something"],
    "opening_hours": ["when are you open", "what are your opening hours", "are you open on sunday"],
    "human": ["I want to talk to a human", "connect me with an agent", "can I speak to someone"],
    "refund": ["I want my money back", "how do I get a refund", "return an item"],
    "delivery": ["where is my package", "track my order", "when will my delivery arrive"],
    "goodbye": ["bye", "see you later", "goodbye and thanks"],
}
PARAPHRASES = [
    ("hey, good morning to you", "greeting"), ("hiya", "greeting"), ("hello, anybody there?", "greeting"),
    ("good afternoon", "greeting"), ("howdy", "greeting"),
    ("is it going to rain later?", "weather"), ("how's the weather today", "weather"), ("do I need an umbrella today", "weather"),
    ("what's the temperature outside", "weather"), ("will it be sunny this weekend", "weather"),
    ("I'd like a pizza please", "order"), ("can I get some food delivered", "order"), ("I want to buy a pizza", "order"),
    ("put in an order for me", "order"), ("let me order something", "order"),
    ("what time do you open", "opening_hours"), ("are you open tomorrow", "opening_hours"), ("when do you close today", "opening_hours"),
    ("what are your hours", "opening_hours"), ("is the shop open on saturday", "opening_hours"),
    ("I'd like to speak with a person", "human"), ("get me a real person", "human"), ("can I talk to customer service", "human"),
    ("transfer me to an operator", "human"), ("I need a human agent", "human"),
    ("can I get my money back", "refund"), ("I want to return this", "refund"), ("please refund my purchase", "refund"),
    ("how do returns work", "refund"), ("I'd like a refund", "refund"),
    ("where is my order", "delivery"), ("my parcel hasn't arrived", "delivery"), ("when does my package come", "delivery"),
    ("track my shipment", "delivery"), ("has my order shipped yet", "delivery"),
    ("see you", "goodbye"), ("thanks, bye", "goodbye"), ("talk to you later", "goodbye"), ("goodbye", "goodbye"),
    ("have a nice day, bye", "goodbye"),
]
OFF_TOPIC = ["zzqx blorp", "tell me a joke", "what is the capital of France", "my cat is orange", "asdf", "1234",
             "how many legs does a spider have", "play some music", "purple monkey dishwasher", "what is 2 + 2"]
THRESHOLDS = (0.4, 0.5, 0.6, 0.7)


def flow() -> dict:
    steps = [{"stepId": name, "title": name, "type": "INTENT", "intent": {"title": name, "examples": examples},
              "actions": [{"type": "TEXT", "payload": {"texts": [f"[{name}]"]}}]} for name, examples in INTENTS.items()]
    steps.append({"stepId": "unknown", "title": "unknown", "type": "UNKNOWN", "actions": [{"type": "TEXT", "payload": {"texts": ["[unknown]"]}}]})
    return {"flowId": "bench-flow", "title": "Bench", "steps": steps}


class Receiver:
    """Loopback webhook receiver: records when each reply for a thread arrived."""

    def __init__(self):
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if body["type"] == "message.reply":
                    with receiver.cond:
                        receiver.arrived.setdefault(body["payload"]["threadId"], time.perf_counter())
                        receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, thread: str, timeout: float = 30) -> float:
        with self.cond:
            self.cond.wait_for(lambda: thread in self.arrived, timeout)
            return self.arrived[thread]


def cli(env: dict, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "flowbox", *args, "--json"], capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout)


def serve(env: dict) -> tuple[subprocess.Popen, str]:
    """``flowbox serve`` in a process of its own; returns it and its base URL once /healthz answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flowbox", "serve", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", 120, proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc, base


def start_server(data_dir: str, threads: int):
    """The app in this process (for the accuracy section, which calls the engine directly)."""
    os.environ["FLOWBOX_DATA_DIR"] = data_dir
    from flowbox import config as config_mod
    from flowbox.app import create_app

    port = free_port()
    cfg = config_mod.load(None).replace(host="127.0.0.1", port=port, rate_limit_per_minute=0, allow_private_outbound=True,
                                        outbox_poll_ms=50, log_level="warning", n_threads=threads)
    app = create_app(cfg, preload_model=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    server.install_signal_handlers = lambda: None
    box: dict = {}

    def run():
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())

    threading.Thread(target=run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return app, server, box["loop"], f"http://127.0.0.1:{port}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="n_threads for the local models (0 = all cores)")
    args = parser.parse_args()
    logging_off()
    data_dir = tempfile.mkdtemp(prefix="flowbox-bench-messaging-")
    env = {**os.environ, "FLOWBOX_DATA_DIR": data_dir, "FLOWBOX_RATE_LIMIT_PER_MINUTE": "0", "FLOWBOX_ALLOW_PRIVATE_OUTBOUND": "true",
           "FLOWBOX_OUTBOX_POLL_MS": "50", "FLOWBOX_LOG_LEVEL": "warning", "FLOWBOX_N_THREADS": str(args.threads)}
    receiver = Receiver()
    project = cli(env, "projects", "create", "bench", "--webhook-url", f"http://127.0.0.1:{receiver.httpd.server_address[1]}/hook")
    flow_file = Path(data_dir) / "bench-flow.json"
    flow_file.write_text(json.dumps(flow()))
    cli(env, "flows", "import", str(flow_file), "--project", project["projectId"])
    proc, base = serve(env)
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {project['token']}"}, timeout=60)

    # warm up: the embedding model loads and the flow's examples are embedded once
    started = time.perf_counter()
    client.post("/rest/v1/messages/warmup", json={"payload": {"type": "text", "speech": "hello"}})
    print(f"first message (loads the embedding model, embeds {sum(map(len, INTENTS.values()))} examples): "
          f"{(time.perf_counter() - started) * 1000:.0f} ms")

    def measure(texts: list[str], label: str) -> None:
        posted, delivered = [], []
        cpu = cpu_seconds(proc.pid, children=True)
        for i, text in enumerate(texts):
            thread = f"{label}-{i}"
            t0 = time.perf_counter()
            response = client.post(f"/rest/v1/messages/{thread}", json={"payload": {"type": "text", "speech": text}})
            t1 = time.perf_counter()
            assert response.status_code == 200, response.text
            posted.append((t1 - t0) * 1000)
            delivered.append((receiver.wait(thread) - t0) * 1000)
        cpu_ms = (cpu_seconds(proc.pid, children=True) - cpu) * 1000 / len(texts)
        print(f"{label:11} n={len(texts):4}  POST->reply produced p50 {pct(posted, .5):6.2f}  p90 {pct(posted, .9):6.2f}"
              f"  p99 {pct(posted, .99):7.2f} ms  |  ->webhook received p50 {pct(delivered, .5):6.2f}  p99 {pct(delivered, .99):7.2f} ms"
              f"  |  server CPU {cpu_ms:.1f} ms/message (webhooks and worker included)")

    rng = random.Random(7)
    examples = [e for ex in INTENTS.values() for e in ex]
    print()
    try:
        measure([rng.choice(examples) for _ in range(args.messages)], "exact")
        measure([rng.choice(PARAPHRASES)[0] + ("" if i < len(PARAPHRASES) else f" {i}") for i in range(args.messages)], "paraphrase")
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)

    app, server, loop, _ = start_server(data_dir, args.threads)
    services = app.state.services
    call = lambda coro: asyncio.run_coroutine_threadsafe(coro, loop).result(300)  # noqa: E731
    from flowbox.messaging import conversation, projects
    from flowbox.messaging.engine import Input, decide

    # accuracy: the engine on the same compiled flow, at several thresholds
    graph = call(conversation.graph_for(services, call(projects.get_project(services.store, project["projectId"]))))

    async def classify(text: str, threshold: float) -> str:
        decision = await decide(graph, {}, Input(kind="text", text=text, reply_to=text), threshold=threshold)
        return decision.messages[0]["step"]["stepId"] if decision.messages else "none"

    print(f"\nintent accuracy ({len(PARAPHRASES)} paraphrases not among the examples, {len(OFF_TOPIC)} off-topic messages that must be UNKNOWN)")
    print("threshold  paraphrases  off-topic  overall")
    for threshold in THRESHOLDS:
        hits = sum(call(classify(text, threshold)) == want for text, want in PARAPHRASES)
        rejects = sum(call(classify(text, threshold)) == "unknown" for text in OFF_TOPIC)
        total = (hits + rejects) / (len(PARAPHRASES) + len(OFF_TOPIC))
        marker = "  <- default" if abs(threshold - services.config.messaging_intent_threshold / 100) < 1e-9 else ""
        print(f"   {threshold:.2f}     {hits / len(PARAPHRASES):6.1%}     {rejects / len(OFF_TOPIC):6.1%}   {total:6.1%}{marker}")
    misses = [(text, want, call(classify(text, services.config.messaging_intent_threshold / 100))) for text, want in PARAPHRASES]
    misses = [m for m in misses if m[1] != m[2]]
    if misses:
        print("misses at the default threshold: " + "; ".join(f"{t!r} -> {got} (want {want})" for t, want, got in misses))
    server.should_exit = True
    time.sleep(0.5)
    print(f"\nmachine load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


def logging_off() -> None:
    import logging

    logging.disable(logging.INFO)


if __name__ == "__main__":
    main()
