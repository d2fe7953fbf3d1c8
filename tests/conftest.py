"""Fixtures: every test gets its own data dir (a real SQLite file); servers are real uvicorn servers
on 127.0.0.1 running the real app with the real local model (see helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import MODELS_DIR, Receiver, Server, models, start_server


def pytest_collection_modifyitems(items):
    """Modules marked slow first. The suite's two processes each take a whole module at a time
    (README: test; ``--dist loadfile``, in this order: ``--no-loadscope-reorder``), so a long module
    left for last would run alone at the end while the other process sits idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: collection order otherwise


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The prepared models, for tests that load one without starting a server through helpers.py."""
    return models()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """A fresh data dir per test; only the prepared models are shared."""
    for name in list(os.environ):
        if name.startswith("FLOWBOX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLOWBOX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOWBOX_MODELS_DIR", str(MODELS_DIR))
    yield


@pytest.fixture
def server(tmp_path):
    srv = start_server(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def module_server(request, tmp_path_factory):
    """One server for a whole test module, for tests that do not get in each other's way (each works in
    an org of its own: ``org_server``). Most of what it saves is the model's load, paid once per server.
    A module sets config overrides for it in ``SERVER_OPTIONS``."""
    tmp = tmp_path_factory.mktemp("server")
    options = getattr(request.module, "SERVER_OPTIONS", {})
    srv = start_server(tmp, data_dir=str(tmp / "data"), models_dir=str(MODELS_DIR), **options)
    yield srv
    srv.stop()


@pytest.fixture
def org_server(module_server):
    """The module's server, seen from a fresh org of this test's own."""
    srv = module_server.in_new_org()
    yield srv
    srv.stop()


@pytest.fixture
def receiver():
    """A real HTTP receiver on 127.0.0.1 for webhooks and callbacks."""
    rec = Receiver()
    yield rec
    rec.stop()


@pytest.fixture
def make_server(tmp_path):
    """A factory for tests that need config overrides or several servers."""
    started: list[Server] = []

    def make(**overrides) -> Server:
        srv = start_server(tmp_path, **overrides)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
