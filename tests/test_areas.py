"""The areas as app.AREAS composes them: what each declares reaches the app, the migrations and the
command, and databases written before the areas declared their migrations open unchanged."""

from __future__ import annotations

import pytest
import sqlite_utils
from litestar import get

from flowbox.app import AREAS
from flowbox.cli.main import cli
from flowbox.db import connect, migrate, migration_sets
from flowbox.http import authenticated

# Stored in every database's _sqlite_migrations: a renamed set would be applied again.
SET_NAMES = ["flowbox", "flowbox.outbox", "flowbox.callbacks", "flowbox.chats", "flowbox.whatsapp",
             "flowbox.messaging", "flowbox.knowledge"]
# The order flowbox applied them in before the areas declared them.
EARLIER_ORDER = ["flowbox", "flowbox.chats", "flowbox.outbox", "flowbox.callbacks", "flowbox.whatsapp",
                 "flowbox.messaging", "flowbox.knowledge"]


def test_migration_sets_keep_their_names():
    assert [s.name for s in migration_sets()] == SET_NAMES


def test_a_database_migrated_in_the_earlier_order_opens_unchanged(tmp_path):
    path = tmp_path / "earlier.db"
    conn = connect(path)
    sets = {s.name: s for s in migration_sets()}
    for name in EARLIER_ORDER:
        sets[name].apply(sqlite_utils.Database(conn))
    applied = [tuple(r) for r in conn.execute("SELECT migration_set, name, applied_at FROM _sqlite_migrations ORDER BY 1, 2")]
    conn.close()
    migrate(path)
    conn = connect(path)
    assert [tuple(r) for r in conn.execute("SELECT migration_set, name, applied_at FROM _sqlite_migrations ORDER BY 1, 2")] == applied
    conn.close()


def test_each_area_is_declared_once_and_its_commands_reach_the_cli():
    names = [area.name for area in AREAS]
    assert len(names) == len(set(names))
    declared = [command.name for area in AREAS for command in area.commands]
    assert len(declared) == len(set(declared))
    assert set(declared) == set(cli.commands)


def test_an_authenticated_router_refuses_a_handler_that_skips_its_authentication():
    @get("/open", sync_to_thread=False)
    def open_route() -> None: ...

    with pytest.raises(TypeError, match="must take 'principal'"):
        authenticated([open_route])
