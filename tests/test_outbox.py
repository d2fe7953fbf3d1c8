"""The durable outbox against real loopback receivers: signing, de-duplication ids, backoff, timeouts,
dead letters and the CLI, and a kill -9 of a ``flowbox serve`` process with deliveries pending."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from flowbox import orgs, outbox
from flowbox.cli.main import cli
from flowbox.db import Store
from tests.helpers import Receiver, eventually, free_port, models, wait_serving

pytestmark = pytest.mark.slow  # a long module: run first (conftest.py)

FAST = dict(preload_model=False, allow_private_outbound=True, outbox_retry_base_ms=100, outbox_poll_ms=100)


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def make(respond=None, port: int = 0) -> Receiver:
        receiver = Receiver(respond, port)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


def enqueue(server, url: str, payload: dict, **options) -> str:
    async def go():
        async with server.services.store.write() as tx:
            delivery_id = await outbox.enqueue(tx, org_id=server.org_id, url=url, payload=payload, kind=options.pop("kind", "test"), **options)
        outbox.wake(server.services)
        return delivery_id

    return server.call(go())


def row(server, delivery_id: str) -> dict:
    return dict(server.call(server.services.store.fetchone("SELECT * FROM outbox WHERE id = ?", [delivery_id])))


def wait_status(server, delivery_id: str, status: str, timeout: float = 30) -> dict:
    return eventually(lambda: (record := row(server, delivery_id))["status"] == status and record,
                      lambda: f"delivery {delivery_id} {status!r}: {row(server, delivery_id)}", timeout=timeout)


def test_delivery_is_signed_and_carries_its_id(make_server, receivers):
    server = make_server(**FAST)
    receiver = receivers()
    payload = {"event": "message.reply", "text": "héllo", "n": [1, 2]}
    delivery_id = enqueue(server, receiver.url("/hook?x=1"), payload, headers={"X-Custom": "yes"})
    request = receiver.wait_for(1)[0]
    assert request["path"] == "/hook?x=1"
    assert json.loads(request["body"]) == payload
    headers = request["headers"]
    assert headers["x-flowbox-delivery"] == delivery_id
    assert headers["content-type"] == "application/json"
    assert headers["x-custom"] == "yes"
    secret = server.call(outbox.org_secret(server.services.store, server.org_id))
    assert secret.startswith("whsec_")
    assert headers["x-flowbox-signature"] == outbox.sign(secret, request["body"])
    record = wait_status(server, delivery_id, "delivered")
    assert record["attempts"] == 1 and record["last_status"] == 200 and record["delivered_at"]

    # a delivery's own secret signs instead of the org's
    other = enqueue(server, receiver.url(), {"a": 1}, secret="s3cret")
    request = receiver.wait_for(2)[1]
    assert request["headers"]["x-flowbox-delivery"] == other
    assert request["headers"]["x-flowbox-signature"] == "sha256=" + hmac.new(b"s3cret", request["body"], "sha256").hexdigest()


def test_rotated_secret_signs_the_next_attempts(make_server, receivers):
    server = make_server(**FAST)
    receiver = receivers()
    runner = CliRunner()
    first = json.loads(runner.invoke(cli, ["outbox", "secret", "--json"]).output)
    assert first["org_id"] == server.org_id
    assert first["secret"] == server.call(outbox.org_secret(server.services.store, server.org_id))
    rotated = runner.invoke(cli, ["outbox", "secret", "--rotate"]).output.strip()
    assert rotated.startswith("whsec_") and rotated != first["secret"]
    enqueue(server, receiver.url(), {"x": 1})
    request = receiver.wait_for(1)[0]
    assert request["headers"]["x-flowbox-signature"] == outbox.sign(rotated, request["body"])


def test_enqueue_refuses_what_can_never_be_delivered(make_server):
    server = make_server(**FAST)
    for url in ("ftp://example.com/x", "http://169.254.169.254/latest/meta-data", "http://metadata.google.internal/", "not a url"):
        with pytest.raises(ValueError):
            enqueue(server, url, {})
    with pytest.raises(ValueError):
        enqueue(server, "http://example.com/", {}, headers={"X-Flowbox-Signature": "forged"})
    assert server.call(outbox.counts(server.services.store)) == {"pending": 0, "delivered": 0, "dead": 0}


def test_retry_delays_double_with_jitter():
    rng = random.Random(7)
    for attempt, nominal in [(1, 2), (2, 4), (3, 8), (4, 16), (9, 512), (10, 600), (30, 600)]:
        delays = [outbox.retry_delay(attempt, 2, 600, rng) for _ in range(200)]
        assert nominal * (1 - outbox.JITTER) <= min(delays) and max(delays) <= nominal * (1 + outbox.JITTER)
        assert max(delays) - min(delays) > nominal * outbox.JITTER  # jitter is really applied


def test_failures_are_retried_on_the_backoff_schedule(make_server, receivers):
    """Non-2xx answers (including a redirect) are failures; the gaps between attempts follow
    base, 2*base, 4*base (each within the jitter), and the 2xx after them acknowledges."""
    server = make_server(**{**FAST, "outbox_retry_base_ms": 200})
    answers = iter([500, 302, 429])
    receiver = receivers(lambda record: next(answers, 204))
    delivery_id = enqueue(server, receiver.url(), {"x": 1})
    requests = receiver.wait_for(4)
    gaps = [b["at"] - a["at"] for a, b in zip(requests, requests[1:])]
    for gap, nominal in zip(gaps, (0.2, 0.4, 0.8)):
        assert nominal * (1 - outbox.JITTER) - 0.01 <= gap <= nominal * (1 + outbox.JITTER) + 0.25, gaps
    assert {r["headers"]["x-flowbox-delivery"] for r in requests} == {delivery_id}
    record = wait_status(server, delivery_id, "delivered")
    assert record["attempts"] == 4 and record["last_status"] == 204
    time.sleep(0.3)
    assert len(receiver.requests) == 4  # acknowledged: never sent again


def test_hanging_receiver_times_out_and_is_retried(make_server, receivers):
    server = make_server(**FAST, outbox_timeout_ms=300)
    # the first answer would come after 120 s, four times what wait_status waits: delivered within
    # that proves the 300 ms limit gave up on it (a wall-clock bound would measure the machine)
    receiver = receivers(lambda record: time.sleep(120) or 200 if record["n"] == 0 else 200)
    delivery_id = enqueue(server, receiver.url(), {"x": 1})
    record = wait_status(server, delivery_id, "delivered")
    assert record["attempts"] == 2
    assert len(receiver.wait_for(2)) == 2


def test_unreachable_receiver_keeps_the_delivery_until_it_comes_up(make_server, receivers):
    server = make_server(**FAST)
    port = free_port()
    delivery_id = enqueue(server, f"http://127.0.0.1:{port}/late", {"x": 1})
    eventually(lambda: row(server, delivery_id)["attempts"] >= 2, "two attempts at the unreachable receiver")
    record = row(server, delivery_id)
    assert record["status"] == "pending" and "Connect" in record["last_error"]
    receiver = receivers(port=port)
    wait_status(server, delivery_id, "delivered", timeout=20)
    assert receiver.delivery_ids() == {delivery_id: 1}


def test_dead_letters_are_listed_and_retried_from_the_cli(make_server, receivers):
    server = make_server(**FAST)
    healthy = {"on": False}
    receiver = receivers(lambda record: 200 if healthy["on"] else 503)
    delivery_id = enqueue(server, receiver.url(), {"x": 1}, max_age_seconds=0.5, kind="test.dead")
    record = wait_status(server, delivery_id, "dead")
    assert record["attempts"] >= 2 and record["last_status"] == 503 and record["last_error"] == "receiver answered 503"
    runner = CliRunner()
    result = runner.invoke(cli, ["outbox", "dead", "--json"])
    assert result.exit_code == 0, result.output
    dead = json.loads(result.output)
    assert [d["id"] for d in dead] == [delivery_id] and dead[0]["kind"] == "test.dead" and dead[0]["next_attempt_at"] is None
    listed = json.loads(runner.invoke(cli, ["outbox", "list", "--status", "pending", "--json"]).output)
    assert listed == []
    attempts_before = len(receiver.requests)
    healthy["on"] = True
    result = runner.invoke(cli, ["outbox", "retry", delivery_id, "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == {"retried": [delivery_id], "not_found": []}
    wait_status(server, delivery_id, "delivered")  # the server picked up the CLI's change by polling
    assert len(receiver.requests) == attempts_before + 1
    result = runner.invoke(cli, ["outbox", "retry", "no-such-id", "--json"])
    assert result.exit_code == 1 and json.loads(result.output)["not_found"] == ["no-such-id"]


def test_private_receivers_are_refused_unless_allowed(make_server, receivers):
    server = make_server(**{**FAST, "allow_private_outbound": False})
    receiver = receivers()
    delivery_id = enqueue(server, receiver.url(), {"x": 1})
    record = wait_status(server, delivery_id, "dead")
    assert record["last_error"].startswith("refused: loopback address 127.0.0.1 is not allowed")
    assert receiver.requests == []


def _serve(data_dir, port: int, env_extra: dict) -> subprocess.Popen:
    models()
    env = {**os.environ, "FLOWBOX_DATA_DIR": str(data_dir), **env_extra}
    return subprocess.Popen([sys.executable, "-m", "flowbox", "serve", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_with_deliveries_pending_loses_none(tmp_path, receivers):
    """Deliveries queued in the database file, a server killed with SIGKILL halfway, a restart:
    every delivery arrives, and the receiver de-duplicating on X-Flowbox-Delivery sees each once."""
    data_dir = tmp_path / "data"
    receiver = receivers(lambda record: time.sleep(0.02) or 200)
    env = {"FLOWBOX_ALLOW_PRIVATE_OUTBOUND": "true", "FLOWBOX_OUTBOX_POLL_MS": "100", "FLOWBOX_OUTBOX_CONCURRENCY": "4",
           "FLOWBOX_OUTBOX_RETRY_BASE_MS": "100"}
    total = 300

    async def fill():
        store = await Store(data_dir / "flowbox.db", readers=1).open()
        try:
            org, _ = await orgs.ensure_default_org(store, with_key=False)
            ids = []
            async with store.write() as tx:
                for i in range(total):
                    ids.append(await outbox.enqueue(tx, org_id=org["id"], url=receiver.url(f"/d/{i}"), payload={"i": i}, kind="test.crash"))
            return ids
        finally:
            await store.close()

    ids = asyncio.run(fill())
    port = free_port()
    proc = _serve(data_dir, port, env)
    try:
        receiver.wait_for(40, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        arrived_before = len(receiver.delivery_ids())
        assert arrived_before < total, "the server finished before it was killed; the test proves nothing"
        proc = _serve(data_dir, port, env)
        wait_serving(proc, f"http://127.0.0.1:{port}/healthz")
        eventually(lambda: len(receiver.delivery_ids()) >= total, "every delivery arrived after the restart", interval=0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    seen = receiver.delivery_ids()
    assert set(seen) == set(ids)  # every delivery arrived; none invented
    duplicates = sum(n - 1 for n in seen.values())
    assert duplicates <= 4  # at most the attempts in flight at the kill were repeated
    for request in receiver.requests:  # each carries its own payload
        assert json.loads(request["body"]) == {"i": int(request["path"].rsplit("/", 1)[1])}

    async def states():
        store = await Store(data_dir / "flowbox.db", readers=1).open()
        try:
            return await outbox.counts(store)
        finally:
            await store.close()

    assert asyncio.run(states()) == {"pending": 0, "delivered": total, "dead": 0}
