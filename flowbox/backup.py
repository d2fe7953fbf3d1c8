"""Online backup and restore with SQLite's backup API: consistent copies of a live database,
taken and brought back while the server keeps running; and the backups a running server takes
on its own (``backup_every``, ``backup_keep``)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from .config import Config, duration_seconds
from .db import connect, migrate
from .errors import StartupError
from .ids import now

log = logging.getLogger("flowbox.backup")
# Scheduled backups are named to the microsecond, so a name sorts by time and never repeats; only
# files named so are ever deleted (a `flowbox backup` into the same folder has seconds only).
SCHEDULED = re.compile(r"flowbox-\d{8}T\d{12}Z\.db")


def _check(path: Path) -> None:
    """A usable flowbox database: SQLite, intact, and not from a newer flowbox."""
    try:
        conn = connect(path)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                raise StartupError(f"{path} failed its integrity check: {result}")
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = '_sqlite_migrations'").fetchone():
                raise StartupError(f"{path} is not a flowbox database")
        finally:
            conn.close()
    except StartupError:
        raise
    except Exception as exc:  # not a database at all
        raise StartupError(f"{path} is not a readable SQLite database ({exc})") from None


def backup(db_path: Path, dest: Path) -> dict:
    """Copies the live database to ``dest`` (pages copied in steps, so writers are never blocked long)."""
    if not db_path.exists():
        raise StartupError(f"no database at {db_path}")
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"flowbox-{now().strftime('%Y%m%dT%H%M%SZ')}.db"
    if dest.exists():
        raise StartupError(f"{dest} exists; choose a new file name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    src = connect(db_path)
    out = connect(tmp)
    try:
        src.backup(out, pages=1024)
        out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        out.close()
        src.close()
    _check(tmp)
    os.replace(tmp, dest)
    return {"path": str(dest), "bytes": dest.stat().st_size}


def restore(db_path: Path, source: Path) -> dict:
    """Checks ``source``, keeps a copy of the current database beside it, then copies ``source``
    over the live database through the backup API: a running server sees the restored data."""
    source = Path(source)
    if not source.is_file():
        raise StartupError(f"no backup file at {source}")
    _check(source)
    staged = db_path.with_name(db_path.name + ".restore")
    shutil.copyfile(source, staged)
    try:
        migrate(staged)  # refuses a newer flowbox's file; brings an older one up to date
        safety = None
        if db_path.exists():
            safety = backup(db_path, db_path.with_name(f"{db_path.name}.before-restore-{now().strftime('%Y%m%dT%H%M%S%fZ')}"))
        src = connect(staged)
        live = connect(db_path)
        try:
            src.backup(live)
        finally:
            live.close()
            src.close()
    finally:
        staged.unlink(missing_ok=True)
    _check(db_path)
    return {"restored_from": str(source), "previous_copy": safety["path"] if safety else None}


def scheduled_backups(folder: Path) -> list[Path]:
    """The backups the server took in ``folder``, oldest first."""
    try:
        return sorted(path for path in folder.iterdir() if SCHEDULED.fullmatch(path.name))
    except FileNotFoundError:
        return []


def take_scheduled(db_path: Path, folder: Path, keep: int) -> dict:
    """One scheduled backup, then the oldest beyond the newest ``keep`` deleted (0: none)."""
    result = backup(db_path, folder / f"flowbox-{now().strftime('%Y%m%dT%H%M%S%fZ')}.db")
    taken = scheduled_backups(folder)
    for old in taken[:-keep] if keep else []:
        old.unlink(missing_ok=True)
    return result


def _newest_time(folder: Path) -> float:
    """When the newest scheduled backup was written (0: there is none)."""
    for path in reversed(scheduled_backups(folder)):
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            continue
    return 0.0


class BackupSchedule:
    """The running server's backups (an ``Area.state``): one every ``backup_every``, counted from the
    newest one already taken, so restarting the server neither skips a backup nor takes an extra one.
    Each is taken in a thread: the event loop never waits for it."""

    def __init__(self, config: Config):
        self.config = config
        self.every = duration_seconds(config.backup_every, "backup_every")
        self.taken = 0
        self.last_error: str | None = None

    def info(self) -> dict[str, Any]:
        if not self.every:
            return {"every": None}
        return {"every": self.config.backup_every, "dir": str(self.config.backup_path), "keep": self.config.backup_keep,
                "taken": self.taken, "last_error": self.last_error}

    async def run(self) -> None:
        folder, db_path = self.config.backup_path, self.config.db_path
        while True:
            newest = await asyncio.to_thread(_newest_time, folder)
            await asyncio.sleep(max(0.0, newest + self.every - time.time()))
            try:
                result = await asyncio.to_thread(take_scheduled, db_path, folder, self.config.backup_keep)
            except Exception as exc:  # a full or missing disk: say so, try again after the interval
                self.last_error = str(exc)
                log.error("scheduled backup to %s failed: %s", folder, exc)
                await asyncio.sleep(self.every)
            else:
                self.taken += 1
                self.last_error = None
                log.info("scheduled backup written to %s (%d bytes)", result["path"], result["bytes"])


async def start_schedule(services) -> None:
    schedule = services.state(BackupSchedule)
    if schedule.every:
        services.spawn(schedule.run(), "scheduled-backups")
