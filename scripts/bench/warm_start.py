"""Warm start benchmark: the first intent message after a restart, with and without the warm start.

Prepares a data dir (a project, the messaging bench's flow of eight intents, one message so the
example vectors and the learned model are stored), then restarts a real server on it (127.0.0.1)
several times and measures POST /rest/v1/messages (it returns once the reply is produced):

  * cold:      no warm start (``warmup.WARM_PROJECTS = 0``: nothing to prepare), the first message
               loads the embedding model and builds the project's intent index itself;
  * at once:   warm start, the first message sent as soon as the server answers (it waits for the
               load already under way instead of starting one);
  * when warm: warm start, the first message sent once the embedder and the index are ready
               (and how long after startup that was);
  * later:     the next messages of the same server, for comparison.

    python scripts/bench/warm_start.py [--rounds 3] [--threads N] [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "eval"))
from inprocess import InProcessServer  # noqa: E402 - the evaluations' in-process server
from messaging import flow, logging_off  # noqa: E402 - the messaging bench's flow

TEXTS = ["hiya, anybody there?", "is it going to rain later?", "can I get my money back", "where is my parcel"]


class Running(InProcessServer):
    """A real flowbox server in a thread, on the data dir."""

    def __init__(self, data_dir: str, models_dir: str, threads: int):
        super().__init__("warm", (), 300, data_dir=data_dir, models_dir=Path(models_dir), n_threads=threads)

    def warm(self, project_id: str) -> bool:
        from flowbox.embeddings import LoadedEmbedders
        from flowbox.messaging.conversation import CompiledFlows

        graph = self.services.state(CompiledFlows).graphs.get(project_id)
        intents = self.services.state(LoadedEmbedders).slots["intents"]
        return intents.embedder is not None and graph is not None and graph.index.ready


def say(client: httpx.Client, thread: str, text: str) -> float:
    t0 = time.perf_counter()
    response = client.post(f"/rest/v1/messages/{thread}", json={"payload": {"type": "text", "speech": text}})
    elapsed = (time.perf_counter() - t0) * 1000
    assert response.status_code == 200, response.text
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="n_threads for the local models (0 = all cores)")
    parser.add_argument("--models-dir", default=os.environ.get("FLOWBOX_TEST_MODELS_DIR") or str(Path.home() / ".cache" / "flowbox-test-models"))
    args = parser.parse_args()
    logging_off()
    from flowbox import orgs, warmup
    from flowbox.messaging import projects

    data_dir = tempfile.mkdtemp(prefix="flowbox-bench-warm-")
    first = Running(data_dir, args.models_dir, args.threads)
    org, _ = first.call(orgs.ensure_default_org(first.services.store, with_key=False))
    project, token = first.call(projects.create_project(first.services.store, org["id"], "bench", {}))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=first.base_url, headers=headers, timeout=120) as client:
        assert client.post(f"/v1/projects/{project['id']}/flows", json=flow()).status_code == 201
        say(client, "setup", "hello")
    while not first.warm(project["id"]):  # the learned model is stored
        time.sleep(0.05)
    first.stop()

    results: dict[str, list[float]] = {"cold": [], "at once": [], "when warm": [], "later": [], "serving": [], "warm after": []}
    default = warmup.WARM_PROJECTS
    for round_no in range(args.rounds):
        for mode in ("cold", "at once", "when warm"):
            warmup.WARM_PROJECTS = 0 if mode == "cold" else default
            server = Running(data_dir, args.models_dir, args.threads)
            results["serving"].append(server.serving * 1000)
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as client:
                client.get("/healthz")  # the connection is open before anything is timed
                if mode == "when warm":
                    while not server.warm(project["id"]):
                        time.sleep(0.01)
                    results["warm after"].append((time.perf_counter() - server.began) * 1000)
                results[mode].append(say(client, f"{mode}-{round_no}", TEXTS[round_no % len(TEXTS)]))
                if mode == "when warm":
                    results["later"].extend(say(client, f"later-{round_no}-{i}", text) for i, text in enumerate(TEXTS))
            server.stop()
    warmup.WARM_PROJECTS = default

    print(f"first message after a restart, median of {args.rounds} restarts (ms; POST until the reply is produced)")
    print(f"  cold (no warm start):                      {statistics.median(results['cold']):7.0f}")
    print(f"  warm start, sent as soon as serving:       {statistics.median(results['at once']):7.0f}")
    print(f"  warm start, sent once warm:                {statistics.median(results['when warm']):7.0f}")
    print(f"  later messages:                            {statistics.median(results['later']):7.1f}")
    print(f"startup until serving: {statistics.median(results['serving']):.0f} ms; until warm: "
          f"{statistics.median(results['warm after']):.0f} ms")
    print(f"machine load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
