"""Fuzzing (issue 11, point 1): schemathesis over the whole OpenAPI document of a live flowbox.

Every operation is called with generated valid and invalid inputs, with the org's key and without
one. No answer may be a 5xx; answers must have a documented status, content type and body; and no operation
outside ``PUBLIC`` answers anything but 401/403 to a caller without a valid key.

Every operation that takes a body has it described (``apidoc.body_doc``), so each also gets invalid
inputs (schemathesis' negative mode: wrong types, missing fields, values past the documented limits),
and each of those must be rejected with a 4xx (schemathesis' ``negative_data_rejection``).
Path parameters get real ids of seeded resources as examples besides the generated ones, to reach
past the 404s.

Each run draws a new seed, so runs keep trying new cases; the seed is printed and named in any
failure, and ``FLOWBOX_FUZZ_SEED=<seed>`` replays that run's cases.
"""

from __future__ import annotations

import copy
import os
import random
import time

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import create_agent

pytestmark = pytest.mark.slow  # a long module: run first (conftest.py)

EXAMPLES = 8  # per operation: bounded so the test fits in CI (the seed changes every run)
NEGATIVE_EXAMPLES = 6  # more per operation with a documented body, all invalid

# Operations a caller without an API key may use, and why (each read in its handler).
PUBLIC = {
    # The Flow.ai web SDK's calls: a project's clientId is public (it sits in web pages); a thread's
    # messages need the thread's x-flowai-secret, and an unknown clientId is a 400 before anything.
    ("GET", "/socket.info"): "web SDK entry; clientId is public, a thread needs its secret",
    ("GET", "/thread.history"): "web SDK; needs clientId and the thread's x-flowai-secret (403 otherwise)",
    ("GET", "/thread.unnoticed"): "web SDK; needs clientId and the thread's x-flowai-secret (403 otherwise)",
    ("POST", "/thread.merger"): "web SDK; needs the thread's x-flowai-secret; no merger key is ever valid",
    ("POST", "/thread.upload"): "web SDK; 401 unless x-flowai-secret of a known thread is sent",
    # OAuth2 client credentials: the API key is the client secret, sent in the body or as Basic auth.
    ("POST", "/oauth/token"): "the credential (client secret) is the request itself",
    # The unguessable media id is the capability (links in messages that chat widgets render).
    ("GET", "/rest/v1/media/{media_id}"): "capability URL: the random media id is the secret",
}
# Outside the document: /healthz (liveness), / and /static/... (the console page: no data until a
# key is typed into it), /schema... (the API reference itself). Checked below to stay public.
PUBLIC_PAGES = ["/healthz", "/", "/static/favicon.svg", "/schema", "/schema/openapi.json"]

# FLOWBOX_FUZZ_ONLY=/chats,/oauth fuzzes only operations under these prefixes (while working on an
# area); the full run, which CI does, also checks that the document covers the whole API.
ONLY = tuple(p for p in os.environ.get("FLOWBOX_FUZZ_ONLY", "").split(",") if p)
# Read at import: the test's fixtures clear FLOWBOX_* from the environment.
SEED = int(os.environ.get("FLOWBOX_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
# Every answer: no 5xx, a documented status, a documented content type and body; and an invalid
# input is refused (400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429; never a 2xx).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
# Operations that take no request body (every other POST, PUT and PATCH documents its body).
NO_BODY = {("POST", "/v1/projects/{project_id}/token")}
# Streams that stay open while the resource exists: no seeded id, and a short read timeout.
STREAMS = {("GET", "/chats/{chat_id}/stream"), ("GET", "/v1/projects/{project_id}/events")}


def seed(server) -> dict[str, str]:
    """Real resources whose ids the fuzzer gets as path-parameter examples."""
    client = server.client()
    agent = create_agent(client, max_tokens=4)
    thread = client.post(f"/api/public/agent/{agent['id']}/chat", json={"messages": "hi"}).json()
    flow = client.post("/chatflows", json={"name": "fuzz", "max_rounds": 1,
                                            "agents": [{"name": "a", "instructions": "Say hi.", "max_tokens": 4}]}).json()
    chat = client.post("/chats", json={"from_flow": flow["id"]}).json()  # the fuzzer's messages run one short turn
    project = client.post("/v1/projects", json={"name": "fuzz"}).json()
    item = client.post("/api/public/knowledge", json={"name": "fuzz", "content": "a short note", "agent_ids": agent["id"]}).json()
    spare_key = client.post("/api/admin/keys", json={"name": "fuzz"}).json()  # the fuzzer may revoke it (not the one it calls with)
    ids = {
        "agent_id": agent["id"],
        "thread_id": thread["body"]["metadata"]["thread_id"],
        "flow_id": flow.get("id", ""),
        "chat_id": chat.get("id", ""),
        "project_id": project.get("projectId", ""),
        "item_id": item.get("id", ""),
        "key_id": spare_key.get("id", ""),
        "model_id": "local",
    }
    missing = [name for name, value in ids.items() if not (isinstance(value, str) and value)]
    assert not missing, f"seeding failed for {missing}"  # else the fuzzer never gets past the 404s there
    return ids


def prepared(document: dict, ids: dict[str, str]) -> dict:
    document = copy.deepcopy(document)
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            if method in ("post", "put", "patch") and "requestBody" not in op:  # NO_BODY: arbitrary JSON must not hurt
                op["requestBody"] = {"required": False, "content": {"application/json": {"schema": {}}}}
            if (method.upper(), path) in STREAMS:
                continue
            for param in op.get("parameters", []):
                if param.get("in") == "path" and param["name"] in ids:
                    param["examples"] = {"seeded": {"value": ids[param["name"]]}}
    return document


def test_fuzz_whole_api(make_server):
    print(f"fuzz seed {SEED} (FLOWBOX_FUZZ_SEED={SEED} replays this run)")
    server = make_server(preload_model=False, allow_private_outbound=False)
    ids = seed(server)
    document = httpx.get(server.base_url + "/schema/openapi.json").json()
    undescribed = sorted((method.upper(), path) for path, item in document["paths"].items() for method, op in item.items()
                         if method in ("post", "put", "patch") and "requestBody" not in op and (method.upper(), path) not in NO_BODY)
    assert not undescribed, f"request bodies missing from the document: {undescribed}"
    schema = schemathesis.openapi.from_dict(prepared(document, ids))
    # An invalid body can also be too big: 413 (documented on every body) rejects it as well as a 400.
    schema.config.checks.negative_data_rejection.expected_statuses.append("413")
    authed = {"Authorization": f"Bearer {server.key}"}
    failures: list[str] = []
    fuzzed: dict[str, int] = {}
    seconds: dict[str, float] = {}  # per operation, to see where the time goes
    started = time.monotonic()

    # Deletions last, so the seeded resources are there for every other operation first.
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=lambda op: op.method.upper() == "DELETE")
    for op in operations:
        method, path = op.method.upper(), op.path
        if ONLY and not path.startswith(ONLY):
            continue
        label = f"{method} {path}"
        timeout = 5 if (method, path) in STREAMS else 60
        public = (method, path) in PUBLIC
        calls = 0
        op_started = time.monotonic()

        def one(case) -> None:
            nonlocal calls
            calls += 1
            try:
                response = case.call(headers=authed, base_url=server.base_url, timeout=timeout)
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:  # collected, so one run reports every failing operation
                failures.append(f"{label} (authed): {type(exc).__name__}: {str(exc)[:400]}")
                return
            for headers in ({}, {"Authorization": "Bearer fb_not_a_key"}):
                response = case.call(headers=headers, base_url=server.base_url, timeout=timeout)
                status = response.status_code
                if status >= 500:
                    failures.append(f"{label} (no key): {status} {response.text[:300]}")
                elif not public and status not in (401, 403):
                    failures.append(f"{label}: {status} without a valid key ({headers or 'none'}): {response.text[:200]}")

        # Valid inputs: with untyped string parameters and "any JSON" bodies there is nothing
        # schemathesis could negate; a documented body can be (bad bodies must get 4xx, not 5xx).
        modes = [(GenerationMode.POSITIVE, EXAMPLES)]
        if "requestBody" in document["paths"][path].get(method.lower(), {}):
            modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
        for mode, examples in modes:
            settings(
                max_examples=examples, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
            )(hypothesis.seed(SEED)(given(case=op.as_strategy(mode))(one)))()
        fuzzed[label] = calls
        seconds[label] = time.monotonic() - op_started

    elapsed = time.monotonic() - started
    for page in PUBLIC_PAGES:
        assert httpx.get(server.base_url + page).status_code == 200, page
    print(f"fuzzed {len(fuzzed)} operations, {sum(fuzzed.values())} cases in {elapsed:.1f}s")
    for label, calls in sorted(fuzzed.items()):
        print(f"  {calls:3d} {seconds[label]:5.1f}s  {label}")
    assert ONLY or len(fuzzed) >= 60, sorted(fuzzed)
    assert all(calls > 0 for calls in fuzzed.values()), fuzzed
    assert not failures, f"FLOWBOX_FUZZ_SEED={SEED} replays these:\n" + "\n".join(failures)
