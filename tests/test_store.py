"""Store.batch: a small batch commits on the event loop's own connection, never waiting there for
SQLite's lock (another process holding it sends the batch to the writer's thread, which waits),
and those commits still get the WAL checkpointed."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3

import pytest

from flowbox import db
from flowbox.db import Store


async def _store(tmp_path) -> Store:
    store = await Store(tmp_path / "flowbox.db", readers=1).open()
    async with store.write() as tx:
        await tx.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, blob TEXT)")
    return store


def test_a_locked_database_sends_the_batch_to_the_writer_thread_and_the_loop_runs_on(tmp_path):
    async def run():
        store = await _store(tmp_path)
        other = db.connect(tmp_path / "flowbox.db")  # another process's hold on the write lock
        try:
            other.execute("BEGIN IMMEDIATE")

            async def write():
                async with store.batch() as tx:
                    await tx.execute("INSERT INTO t (x) VALUES (1)")

            task = asyncio.ensure_future(write())
            ticks = 0
            for _ in range(20):  # the loop keeps turning while the batch waits for the lock
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20 and not task.done()
            other.execute("COMMIT")
            await asyncio.wait_for(task, 10)
            with pytest.raises(Exception):  # a failing statement rolls the whole batch back
                async with store.batch() as tx:
                    await tx.execute("INSERT INTO t (x) VALUES (2)")
                    await tx.execute("INSERT INTO t (x) VALUES (1)")
            assert [r["x"] for r in await store.fetchall("SELECT x FROM t")] == [1]
        finally:
            other.close()
            await store.close()

    asyncio.run(run())


def _rows_in_the_file(path, scratch) -> int:
    """Rows of t in the database file itself, its WAL left out (the file's growth is no measure: a fresh
    database has free pages, from migrations, that the rows fill first)."""
    shutil.copyfile(path, scratch)
    try:
        with contextlib.closing(sqlite3.connect(scratch)) as conn:
            return conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]
    except sqlite3.DatabaseError:  # not even the table reached the file yet
        return 0


def test_commits_on_the_loop_get_the_wal_checkpointed(tmp_path):
    async def run():
        store = await _store(tmp_path)
        path, scratch = tmp_path / "flowbox.db", tmp_path / "file-only.db"
        try:
            for i in range(db.CHECKPOINT_EVERY):
                async with store.batch() as tx:
                    await tx.execute("INSERT INTO t (x, blob) VALUES (?, ?)", [i, "x" * 2000])
            for _ in range(500):  # the checkpoint runs on a reader's thread
                if store._checkpoint is None and _rows_in_the_file(path, scratch) == db.CHECKPOINT_EVERY:
                    break
                await asyncio.sleep(0.01)
            assert _rows_in_the_file(path, scratch) == db.CHECKPOINT_EVERY  # the rows reached the database file
        finally:
            await store.close()

    asyncio.run(run())
