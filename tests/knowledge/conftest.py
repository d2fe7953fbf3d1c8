"""The knowledge tests share one real server per test module; each test works in its own org
(``knowledge_org``), so tests stay independent."""

import pytest


@pytest.fixture(scope="module")
def srv(module_server):
    return module_server
