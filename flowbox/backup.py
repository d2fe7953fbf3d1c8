"""Online backup and restore with SQLite's backup API: consistent copies of a live database,
taken and brought back while the server keeps running."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .db import connect, migrate
from .errors import StartupError
from .ids import now


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
