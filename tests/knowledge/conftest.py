"""The knowledge tests share one real server per test module; each test works in its own org
(``knowledge_org``), so tests stay independent."""

from __future__ import annotations

import pytest

from tests.helpers import MODELS_DIR, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("knowledge")
    server = start_server(tmp, preload_model=False, data_dir=str(tmp / "data"), models_dir=str(MODELS_DIR))
    yield server
    server.stop()
