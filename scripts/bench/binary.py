"""Executable benchmark (issue 9). Prints, from one run, side by side for the one-file executable and
for the same code run from source:

(a) executable size (goal <= 250 MB with both models)
(b) time from start to the first successful authenticated request, fresh data dir (goal <= 3 s)
(c) resident memory (the whole process tree) at idle, after the chat model has loaded
(d) peak resident memory during an agent chat

Usage: python scripts/bench/binary.py [--binary dist/flowbox] [--runs 3]
(build the executable first: scripts/build_binary.sh)
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def tree_rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants (the executable is a bootloader plus Python)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue
    return total / 1024


class Server:
    def __init__(self, command: list[str], data_dir: Path, port: int, env: dict):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([*command, "serve", "--port", str(port), "--data-dir", str(data_dir)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        self.base = f"http://127.0.0.1:{port}"

    def first_request_seconds(self) -> tuple[float, str]:
        key = None
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("server exited:\n" + "".join(self.lines))
            if key is None:
                match = re.search(r"First API key .*: (fbx_\S+)", "".join(self.lines))
                key = match.group(1) if match else None
            if key is not None:
                try:
                    if httpx.get(f"{self.base}/api/public/agent", headers={"Authorization": key}, timeout=5).status_code == 200:
                        return time.perf_counter() - self.started, key
                except httpx.TransportError:
                    pass
            time.sleep(0.005)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def wait_model_loaded(base: str, key: str) -> None:
    """A 1-token chat: returns once the chat model is loaded and has answered."""
    client = httpx.Client(base_url=base, headers={"Authorization": key}, timeout=300)
    agent = client.post("/api/public/agent", json={"name": "warm", "max_tokens": 1}).json()
    assert client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Hi"}).status_code == 200


def chat_peak_rss(server: Server, key: str) -> tuple[float, float]:
    client = httpx.Client(base_url=server.base, headers={"Authorization": key}, timeout=300)
    agent = client.post("/api/public/agent", json={"name": "bench", "max_tokens": 96}).json()
    peak, done = 0.0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mb(server.proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    reply = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "Tell me about the history of tea in a few sentences."})
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    assert reply.status_code == 200, reply.text
    return peak, elapsed


def measure(name: str, command: list[str], runs: int, env: dict) -> dict:
    starts, idle, peak, chat_s = [], 0.0, 0.0, 0.0
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            port = 18700 + run
            server = Server(command, Path(tmp) / "data", port, env)
            try:
                seconds, key = server.first_request_seconds()
                starts.append(seconds)
                if run == runs - 1:  # memory on the last run
                    wait_model_loaded(server.base, key)
                    time.sleep(2)
                    idle = tree_rss_mb(server.proc.pid)
                    peak, chat_s = chat_peak_rss(server, key)
            finally:
                code = server.stop()
            if code != 0:
                raise SystemExit(f"{name}: exit code {code} after SIGTERM")
    return {"starts": starts, "idle": idle, "peak": peak, "chat_s": chat_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(ROOT / "dist" / "flowbox"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models-dir", default=os.environ.get("FLOWBOX_TEST_MODELS_DIR") or str(Path.home() / ".cache" / "flowbox-test-models"))
    args = parser.parse_args()
    binary = Path(args.binary)
    if not binary.exists():
        raise SystemExit(f"no executable at {binary}: run scripts/build_binary.sh first")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWBOX_")}
    with tempfile.TemporaryDirectory() as empty_models:
        # The executable uses its bundled models; the source run the prepared ones.
        results = {
            "executable": measure("executable", [str(binary)], args.runs, {**base_env, "FLOWBOX_MODELS_DIR": empty_models}),
            "from source": measure("from source", [sys.executable, "-m", "flowbox"], args.runs,
                                   {**base_env, "FLOWBOX_MODELS_DIR": args.models_dir}),
        }
    size_mb = binary.stat().st_size / 2**20
    load = os.getloadavg()
    print(f"flowbox executable benchmark — {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"(a) executable size: {size_mb:.0f} MiB = {binary.stat().st_size / 1e6:.0f} MB (goal <= 250 MB)")
    print(f"{'':50}{'executable':>18}{'from source':>18}")
    rows = [
        ("(b) start -> first authenticated request, median", lambda r: f"{statistics.median(r['starts']):.2f} s"),
        ("    each run", lambda r: " ".join(f"{s:.2f}" for s in r["starts"])),
        ("(c) RSS at idle (model loaded)", lambda r: f"{r['idle']:.0f} MB"),
        ("(d) peak RSS during a chat", lambda r: f"{r['peak']:.0f} MB"),
        ("    that chat's wall time", lambda r: f"{r['chat_s']:.2f} s"),
    ]
    for label, cell in rows:
        print(f"{label:50}{cell(results['executable']):>18}{cell(results['from source']):>18}")
    ratio = statistics.median(results["executable"]["starts"]) / statistics.median(results["from source"]["starts"])
    print(f"start time executable / from source: {ratio:.2f}; "
          f"goal (b) {'met' if statistics.median(results['executable']['starts']) <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
