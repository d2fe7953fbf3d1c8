"""The SQLite store: connections with sqlite-vec loaded, migrations, async access.

One file in WAL mode. Reads use a small pool of aiosqlite connections; every write goes
through one writer connection behind a lock, in ``BEGIN IMMEDIATE``: SQLite has one writer,
and the code admits it (the shape Datasette uses). Small indexed reads and small statement-only
batches use the event loop's own connection instead (``lookup``, ``batch``), under the same lock
for writes: for them the hop to a thread and back costs more than the work.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import aiosqlite
import sqlite_utils
import sqlite_vec

try:  # the stdlib sqlite3 of many Pythons cannot load extensions
    import pysqlite3.dbapi2 as sqlite3  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - platforms where stdlib sqlite3 can
    import sqlite3  # type: ignore[no-redef]

from .errors import StartupError

Row = sqlite3.Row
IntegrityError = sqlite3.IntegrityError

def connect(path: str | Path, *, check_same_thread: bool = True, checkpoints: bool = True) -> sqlite3.Connection:
    """A plain connection with sqlite-vec loaded and flowbox's pragmas set.

    ``checkpoints=False`` while Litestream replicates the file: it must be the only one that copies
    the WAL into the database (replication.py), so this connection never checkpoints by itself."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=check_same_thread, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if not checkpoints:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def migration_sets() -> list:
    """Every area's migration sets, in the order of ``app.AREAS``."""
    from .app import AREAS  # the areas import this module

    return [migrations for area in AREAS for migrations in area.migrations]


def migrate(path: str | Path) -> str:
    """Apply pending migrations; refuse a database written by a newer flowbox. Returns vec_version()."""
    conn = connect(path)
    try:
        db = sqlite_utils.Database(conn)
        known = {(m.name, mig.name) for m in migration_sets() for mig in m._migrations}
        if db["_sqlite_migrations"].exists():
            applied = {(r["migration_set"], r["name"]) for r in db["_sqlite_migrations"].rows}
            ours = {s.name for s in migration_sets()}
            newer = sorted(n for (s, n) in applied - known if s in ours)
            if newer:
                raise StartupError(
                    f"database {path} was written by a newer flowbox (migration {newer[0]!r}); "
                    "upgrade flowbox or restore a backup"
                )
        for m in migration_sets():
            m.apply(db)
        return conn.execute("select vec_version()").fetchone()[0]
    finally:
        conn.close()


class Tx:
    """The writer connection inside one transaction."""

    def __init__(self, conn: aiosqlite.Connection):
        self.conn = conn

    async def execute(self, sql: str, params: Iterable[Any] | dict = ()) -> int:
        cursor = await self.conn.execute(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    # One hop to the connection's thread per query (execute and fetch together): on the hot
    # path of every authenticated request, each thread hop costs more than the query itself.
    async def fetchone(self, sql: str, params: Iterable[Any] | dict = ()) -> Row | None:
        return await self.run(lambda conn: conn.execute(sql, params).fetchone())

    async def fetchall(self, sql: str, params: Iterable[Any] | dict = ()) -> list[Row]:
        return await self.run(lambda conn: conn.execute(sql, params).fetchall())

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(sqlite3_connection, *args)`` on this connection's thread (bulk work in one hop)."""
        conn = self.conn
        return await conn._execute(lambda: fn(conn._conn, *args))


class Batch:
    """A write transaction whose statements nobody reads a result of (``Store.batch``): they are
    queued here and run together when the block ends."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any, bool]] = []

    async def execute(self, sql: str, params: Iterable[Any] | dict = ()) -> None:
        self.statements.append((sql, params, False))

    async def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        self.statements.append((sql, list(rows), True))


def _run_batch(conn: sqlite3.Connection, statements: list[tuple[str, Any, bool]], begun: bool = False) -> None:
    if not begun:
        conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params, many in statements:
            (conn.executemany if many else conn.execute)(sql, params)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock (the loop's connection never waits)."""
    return "locked" in str(exc) or "busy" in str(exc)


LOOP_BATCH_ROWS = 64  # a batch of at most this many rows commits on the event loop (well under a millisecond)
CHECKPOINT_EVERY = 100  # commits on the loop between checkpoints: about SQLite's default of 1000 pages


class Store:
    def __init__(self, path: str | Path, readers: int = 3, checkpoints: bool = True):
        self.path = Path(path)
        self.checkpoints = checkpoints  # False while Litestream replicates the file (see connect)
        self._n_readers = readers
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._quick: sqlite3.Connection | None = None
        self._loop_commits = 0
        self._checkpoint: asyncio.Future | None = None
        self.vec_version = ""

    async def open(self) -> "Store":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.vec_version = await asyncio.to_thread(migrate, self.path)
        factory = lambda: connect(self.path, check_same_thread=False, checkpoints=self.checkpoints)  # noqa: E731
        self._writer = await aiosqlite.Connection(factory, 64)
        for _ in range(self._n_readers):
            reader = await aiosqlite.Connection(factory, 64)
            self._all_readers.append(reader)
            self._readers.put_nowait(reader)
        self._quick = connect(self.path, check_same_thread=False, checkpoints=self.checkpoints)
        self._quick.execute("PRAGMA busy_timeout=0")  # never wait on the loop
        self._quick.execute("PRAGMA wal_autocheckpoint=0")  # nor checkpoint there (_checkpoint_wal)
        return self

    async def close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint
        for conn in [self._writer, *self._all_readers]:
            if conn is not None:
                await conn.close()
        self._writer = None
        self._all_readers.clear()
        if self._quick is not None:
            self._quick.close()
            self._quick = None

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """One transaction on the single writer: commits on success, rolls back on any error."""
        assert self._writer is not None, "store is not open"
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            else:
                await self._writer.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[Batch]:
        """A write transaction of statements only (no reads), run when the block ends, nothing if it
        raises. A small one commits on the event loop's own connection: a busy loop makes a hop to the
        writer's thread and back wait for its turn (and for the GIL), which costs a hot path (a
        message) more than its few rows. A larger one, or one that finds SQLite locked by another
        process, goes in one hop to the writer's thread."""
        assert self._writer is not None, "store is not open"
        batch = Batch()
        yield batch
        if batch.statements:
            writer = self._writer
            async with self._write_lock:
                if not self._commit_on_loop(batch.statements):
                    await writer._execute(lambda: _run_batch(writer._conn, batch.statements))

    def _commit_on_loop(self, statements: list[tuple[str, Any, bool]]) -> bool:
        """Runs ``statements`` on the loop's connection if they are few and SQLite's write lock is
        free now (never waiting for it); False when they are left for the writer's thread."""
        rows = sum(len(params) if many else 1 for _, params, many in statements)
        if self._quick is None or rows > LOOP_BATCH_ROWS:
            return False
        try:
            self._quick.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            return False
        _run_batch(self._quick, statements, begun=True)
        self._loop_commits += 1
        if self.checkpoints and self._loop_commits % CHECKPOINT_EVERY == 0 and self._checkpoint is None:
            self._checkpoint = asyncio.ensure_future(self._checkpoint_wal())
        return True

    async def _checkpoint_wal(self) -> None:
        """What SQLite's automatic checkpoint does after a commit, which the loop's connection
        leaves to a reader's thread (it copies and syncs pages: milliseconds). Passive: it never
        waits for, nor holds up, readers and writers."""
        try:
            async with self.read() as tx:
                await tx.run(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        except Exception:  # noqa: BLE001 - the next one, or the writer's own, checkpoints instead
            pass
        finally:
            self._checkpoint = None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        reader = await self._readers.get()
        try:
            yield Tx(reader)
        finally:
            self._readers.put_nowait(reader)

    async def fetchone(self, sql: str, params: Iterable[Any] | dict = ()) -> Row | None:
        async with self.read() as tx:
            return await tx.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Iterable[Any] | dict = ()) -> list[Row]:
        async with self.read() as tx:
            return await tx.fetchall(sql, params)

    async def lookup(self, sql: str, params: Iterable[Any] | dict = ()) -> list[Row]:
        """A small indexed read (a key, an org's agents) on the event loop's own connection.

        Such a read takes microseconds from SQLite's page cache, less than the hop to a reader
        thread and back; that hop was the largest cost of a cheap authenticated GET. The
        connection never waits for a lock: if SQLite is busy, the read goes to a reader thread.
        Anything that scans or may be slow uses fetchone/fetchall instead.
        """
        if self._quick is not None:
            try:
                return self._quick.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
        return await self.fetchall(sql, params)
