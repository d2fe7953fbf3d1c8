"""Shared by the knowledge tests: one real server per test module (each test works in its own
org, so tests stay independent) and small helpers."""

from __future__ import annotations

import pytest
from conftest import MODELS_DIR, create_agent, start_server

URL = "/api/public/knowledge"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("knowledge")
    server = start_server(tmp, preload_model=False, data_dir=str(tmp / "data"), models_dir=str(MODELS_DIR))
    yield server
    server.stop()


def new_org(srv, **agent_fields):
    """A fresh org on the shared server: (org id, client, an agent)."""
    org_id, key = srv.new_org("kb")
    client = srv.client(key=key)
    return org_id, client, create_agent(client, **{"name": "kb agent", **agent_fields})


def add(client, agent_ids, content, **fields) -> dict:
    response = client.post(URL, json={"content": content, "agent_ids": agent_ids, **fields})
    assert response.status_code == 200, response.text
    return response.json()
