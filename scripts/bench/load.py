"""Mixed load benchmark (issue 11), all on 127.0.0.1, bounded in time. Prints, from one run:

- a bare Litestar hello-world's req/s (the baseline, measured here, same wrk settings)
- flowbox's authed GET /api/public/agent req/s and p99 alone, and its ratio to the baseline (goal >= 0.5)
- intent-flow REST messages alone (one thread): req/s, p99; for both, the server's CPU time per request
  (less hurt by a busy machine than req/s)
- messages in customers' own words: the eval's telecom flow (``scripts/eval/data``) sent its utterances, each
  text once and on a thread of its own, as new conversations, 4 at a time (the measures above send "Hello", an exact
  match, on one thread, whose turns are taken one at a time; a repeated text's vector would be found cached):
  what a message the learned model and its judge read costs, CPU counted in the embedding workers too; and knowledge
  searches in customers' words: the eval's help-centre corpus searched with its questions, each once, 4 at a time.
  For information: the goals below are set on the measures above
- a mixed load at once: authed GETs, intent-flow REST messages, knowledge searches, with sockets held
  open: req/s, p99 and errors for each (goals: 0 errors; knowledge search p99 <= 250 ms; intent-flow
  messages >= 100 req/s, all on one thread, as one busy conversation sends them)

Needs `wrk` (Debian package). Usage: python scripts/bench/load.py [--seconds 8] [--sockets 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EVAL_DATA = ROOT / "scripts" / "eval" / "data"
sys.path.insert(0, str(EVAL_DATA.parent))  # first: this folder has a knowledge.py of its own
from intents import load_cases  # noqa: E402 - the evaluations' data, read as they read it
from knowledge import load_entries, load_questions  # noqa: E402
from processes import cpu_seconds, free_port, wait_http  # noqa: E402 - this folder's

HELLO_APP = textwrap.dedent('''
    from litestar import Litestar, get
    import uvicorn

    @get("/hello")
    async def hello() -> dict:
        return {"hello": "world"}

    uvicorn.run(Litestar([hello]), host="127.0.0.1", port=int(__import__("sys").argv[1]), log_level="warning")
''')


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str] | None = None, lua: str | None = None) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    script = None
    if lua:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(lua)
        script.close()
        cmd += ["-s", script.name]
    out = subprocess.run([*cmd, url], capture_output=True, text=True).stdout
    if script:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"rps": rps, "p99_ms": p99_ms, "errors": errors, "seconds": seconds, "requests": requests}


def measured(pid: int, run, children: bool = False) -> dict:
    """``run()``'s result (``wrk``'s or ``send_each_once``'s) with the server's CPU milliseconds per request (with
    ``children``, its workers' too)."""
    before = cpu_seconds(pid, children)
    result = run()
    requests = result["requests"]
    result["cpu_ms"] = (cpu_seconds(pid, children) - before) * 1000 / requests if requests else float("nan")
    return result


async def send_each_once(requests: list[dict], concurrency: int) -> dict:
    """Sends each of ``requests`` (``httpx.AsyncClient.request``'s arguments) once, ``concurrency`` at a time: requests a
    second over the time they took (wrk divides by its whole duration, even when its script stops it early), p50 and
    p99 latency, errors."""
    queue = list(requests)
    latencies: list[float] = []
    errors = 0

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            request = queue.pop(0)
            began = time.perf_counter()
            try:
                response = await client.request(**request)
                errors += response.status_code >= 300
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - began)

    async with httpx.AsyncClient(timeout=30) as client:
        began = time.perf_counter()
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ms = np.percentile(latencies, [50, 99]) * 1000
    return {"rps": len(requests) / elapsed, "p50_ms": float(ms[0]), "p99_ms": float(ms[1]), "errors": errors,
            "seconds": elapsed, "requests": len(requests)}


def post_lua(body: dict, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}", 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def cli(env: dict, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "flowbox", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout)


async def hold_sockets(base: str, client_id: str, count: int, stop: threading.Event, opened: list) -> None:
    import websockets

    sockets = []
    async with httpx.AsyncClient(base_url=base) as http:
        for i in range(count):
            info = (await http.get("/socket.info", params={"clientId": client_id, "sessionId": f"load-{i}"})).json()
            sockets.append(await websockets.connect(info["payload"]["endpoint"]))
            opened.append(1)
    while not stop.is_set():
        await asyncio.sleep(5)
        for ws in sockets:
            await ws.send(json.dumps({"type": "ping"}))
    for ws in sockets:
        await ws.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sockets", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flowbox-load-"))
    env = {**os.environ, "FLOWBOX_DATA_DIR": str(tmp / "data"), "FLOWBOX_RATE_LIMIT_PER_MINUTE": "0",
           # every load socket comes from 127.0.0.1: lift the per-address socket cap for this run
           "FLOWBOX_MESSAGING_SOCKET_MAX_PER_ADDRESS": str(max(1000, 2 * args.sockets))}
    if os.environ.get("FLOWBOX_TEST_MODELS_DIR"):
        env["FLOWBOX_MODELS_DIR"] = os.environ["FLOWBOX_TEST_MODELS_DIR"]
    procs = []
    try:
        hello_port = free_port()
        (tmp / "hello.py").write_text(HELLO_APP)
        procs.append(subprocess.Popen([sys.executable, str(tmp / "hello.py"), str(hello_port)]))
        wait_http(f"http://127.0.0.1:{hello_port}/hello")
        baseline = wrk(f"http://127.0.0.1:{hello_port}/hello", args.seconds, args.connections)
        procs.pop().terminate()

        key = cli(env, "keys", "create", "--json")["key"]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        procs.append(subprocess.Popen([sys.executable, "-m", "flowbox", "serve", "--port", str(port)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT))
        wait_http(f"{base}/healthz")
        auth = {"Authorization": key}
        server = procs[-1].pid
        alone = measured(server, lambda: wrk(f"{base}/api/public/agent", args.seconds, args.connections, auth))
        print(f"hello-world baseline: {baseline['rps']:.0f} req/s, p99 {baseline['p99_ms']:.1f} ms")
        print(f"authed GET alone:     {alone['rps']:.0f} req/s, p99 {alone['p99_ms']:.1f} ms, errors {alone['errors']} "
              f"-> ratio {alone['rps'] / baseline['rps']:.2f} (goal >= 0.5); server CPU {alone['cpu_ms']:.2f} ms/request")

        # a messaging project with a small flow, knowledge for an agent
        project = cli(env, "projects", "create", "load", "--json")
        flow_file = ROOT / "tests" / "messaging" / "messaging_flow.json"
        cli(env, "flows", "import", str(flow_file), "--project", project["projectId"], "--json")
        message = post_lua({"payload": {"type": "text", "speech": "Hello", "originator": {"name": "Load", "role": "external"}}},
                           {"Authorization": f"Bearer {project['token']}"})
        # the project's first message waits for the embedding model to load (seconds): not part of the measure
        httpx.post(f"{base}/rest/v1/messages/warm-up", headers={"Authorization": f"Bearer {project['token']}"}, timeout=120,
                   json={"payload": {"type": "text", "speech": "Hello", "originator": {"name": "Load", "role": "external"}}})
        wrk(f"{base}/rest/v1/messages/warm-up", 1, 4, lua=message)
        messages = measured(server, lambda: wrk(f"{base}/rest/v1/messages/alone-thread", args.seconds, 4, lua=message))
        print(f"messages alone:       {messages['rps']:.0f} req/s, p99 {messages['p99_ms']:.1f} ms, errors {messages['errors']} "
              f"(4 connections, one thread); server CPU {messages['cpu_ms']:.2f} ms/message")
        # customers' own words, to a flow the learned model and its judge read (CPU counted in the workers too)
        telecom = cli(env, "projects", "create", "telecom", "--json")
        cli(env, "flows", "import", str(EVAL_DATA / "telecom_flow.json"), "--project", telecom["projectId"], "--json")
        telecom_auth = {"Authorization": f"Bearer {telecom['token']}"}
        texts = list(dict.fromkeys(case.text for case in load_cases("telecom") if not case.context))  # each text once
        bodies = [{"payload": {"type": "text", "speech": t, "originator": {"name": "Load", "role": "external"}}} for t in texts]
        deadline = time.time() + 300  # the flow's model is learned in the background: wait for it, as a client would
        while time.time() < deadline:
            explained = httpx.get(f"{base}/v1/projects/{telecom['projectId']}/explain", params={"text": "warm up"},
                                  headers={"Authorization": f"Bearer {key}"}, timeout=120)
            explained.raise_for_status()
            if explained.json()["method"] == "learned":
                break
            time.sleep(1)
        sends = [{"method": "POST", "url": f"{base}/rest/v1/messages/varied-{n}", "json": body, "headers": telecom_auth}
                 for n, body in enumerate(bodies)]
        varied = measured(server, lambda: asyncio.run(send_each_once(sends, 4)), children=True)
        print(f"customers' words:     {varied['rps']:.0f} req/s, p50 {varied['p50_ms']:.1f} ms, p99 {varied['p99_ms']:.1f} ms, "
              f"errors {varied['errors']} ({varied['requests']} texts, each once and on a new thread, 4 at a time); "
              f"server and worker CPU {varied['cpu_ms']:.2f} ms/message")
        # knowledge searches in customers' words: a help centre's questions, each once (the mixed load repeats one)
        helpdesk = httpx.post(f"{base}/api/public/agent", headers=auth, json={"name": "helpdesk"}).json()
        items = load_entries("helpdesk")
        questions = list(dict.fromkeys(q.text for q in load_questions("helpdesk", {item.id for item in items})))
        for item in items:
            httpx.post(f"{base}/api/public/knowledge", headers=auth, timeout=60,
                       json={"name": item.name, "content": item.content, "agent_ids": helpdesk["id"]})
        searches = [{"method": "GET", "url": f"{base}/api/public/knowledge/search", "headers": auth,
                     "params": {"q": q, "agent_id": helpdesk["id"], "limit": 5}} for q in questions]
        # one search first (its models loaded, as a running server's are), of a question not among those measured
        httpx.get(f"{base}/api/public/knowledge/search", headers=auth, timeout=120,
                  params={"q": "warm up: how do I reach you", "agent_id": helpdesk["id"], "limit": 5}).raise_for_status()
        asked = measured(server, lambda: asyncio.run(send_each_once(searches, 4)), children=True)
        print(f"customers' questions: {asked['rps']:.0f} req/s, p50 {asked['p50_ms']:.1f} ms, p99 {asked['p99_ms']:.1f} ms, "
              f"errors {asked['errors']} ({asked['requests']} questions to {len(items)} entries, each once, 4 at a time); "
              f"server and worker CPU {asked['cpu_ms']:.2f} ms/search")
        agent = httpx.post(f"{base}/api/public/agent", headers=auth, json={"name": "kb"}).json()
        for i in range(50):
            httpx.post(f"{base}/api/public/knowledge", headers=auth, timeout=60, json={
                "name": f"doc {i}", "content": f"Store {i} opens at {8 + i % 4} am and sells item number {i}.", "agent_ids": agent["id"]})

        stop, opened = threading.Event(), []
        holder = threading.Thread(target=lambda: asyncio.run(hold_sockets(base, project["clientId"], args.sockets, stop, opened)))
        holder.start()
        deadline = time.time() + 60
        while len(opened) < args.sockets and holder.is_alive() and time.time() < deadline:
            time.sleep(0.1)

        results: dict[str, dict] = {}
        jobs = {
            "authed GET": lambda: wrk(f"{base}/api/public/agent", args.seconds, args.connections // 2, auth),
            "intent-flow message": lambda: wrk(f"{base}/rest/v1/messages/load-thread", args.seconds, 4, lua=message),
            "knowledge search": lambda: wrk(f"{base}/api/public/knowledge/search?q=when+does+store+7+open&agent_id={agent['id']}&limit=5",
                                            args.seconds, 4, auth),
        }
        threads = [threading.Thread(target=lambda n=n, f=f: results.__setitem__(n, f())) for n, f in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        holder.join(timeout=30)
        print(f"mixed load for {args.seconds} s with {len(opened)} sockets open (machine load {os.getloadavg()[0]:.1f}, "
              f"{os.cpu_count()} cores):")
        goals = {"knowledge search": "(goal: p99 <= 250 ms)", "intent-flow message": "(goal: >= 100 req/s)"}
        total_errors = 0
        for name, r in results.items():
            total_errors += r["errors"]
            print(f"  {name:22s} {r['rps']:8.0f} req/s  p99 {r['p99_ms']:8.1f} ms  errors {r['errors']}  {goals.get(name, '')}")
        print(f"  total errors: {total_errors} (goal 0)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
