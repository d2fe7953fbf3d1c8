"""``flowbox status``: what a data dir holds and what its running server is doing.

Facts about the data dir (database size, media and outbox, scheduled backups, replication position)
are read from its files and database, with or without a server. Live facts (uptime, models loaded,
queue) come from the server that serves it: at start the server writes ``server.json`` into the data
dir (its pid, URL and a random token, readable by its owner only) and answers ``GET /api/status`` to
a caller that presents that token. So whoever can read the data dir can ask; no org's API key can.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
from litestar import Request, get

from . import __version__, backup, replication
from .config import Config
from .db import sqlite3
from .errors import error
from .http import services_of
from .ids import iso, now
from .models.pool import pool_servers

RUN_FILE = "server.json"


class ServerInfo:
    """This server's start and its status token (an ``Area.state``)."""

    def __init__(self) -> None:
        self.started = now()
        self.started_monotonic = time.monotonic()
        self.token = secrets.token_urlsafe(32)


def _url(config: Config) -> str:
    """Where a client on this machine reaches the server (a wildcard address is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.host, config.host)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if config.tls_cert else 'http'}://{host}:{config.port}"


async def announce(services) -> None:
    """Writes ``server.json``: how ``flowbox status`` finds this server and proves it may ask."""
    info, path = services.state(ServerInfo), services.config.data_path / RUN_FILE
    record = {"pid": os.getpid(), "url": _url(services.config), "token": info.token, "started_at": iso(info.started)}
    tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fp:
        json.dump(record, fp)
    os.replace(tmp, path)


async def withdraw(services) -> None:
    """Removes ``server.json`` at shutdown, unless another server has written its own since."""
    path = services.config.data_path / RUN_FILE
    if (_read_run_file(path) or {}).get("token") == services.state(ServerInfo).token:
        path.unlink(missing_ok=True)


@get("/api/status", summary="The server's live status (for flowbox status)", include_in_schema=False)
async def status_endpoint(request: Request) -> dict[str, Any]:
    services = services_of(request)
    expected = f"Bearer {services.state(ServerInfo).token}".encode()
    if not hmac.compare_digest(request.headers.get("authorization", "").encode("utf-8", "replace"), expected):
        raise error(401, "Unauthorized", "Send the token from the data dir's server.json as 'Authorization: Bearer <token>' "
                                         "(flowbox status does)")
    return live(services)


def live(services) -> dict[str, Any]:
    """What only the running server knows."""
    info = services.state(ServerInfo)
    models = []
    for name, backend in services.models.loaded().items():
        scheduler = getattr(backend, "scheduler", None)  # local models queue here; remote servers queue on their side
        models.append({"name": name, "local": scheduler is not None,
                       "waiting": scheduler.waiting if scheduler else 0, "busy": bool(scheduler and scheduler.busy),
                       **({"servers": servers} if (servers := pool_servers(backend)) else {})})
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started_at": iso(info.started),
        "uptime_seconds": round(time.monotonic() - info.started_monotonic, 1),
        "models": models,
        "queue": sum(model["waiting"] for model in models),
        "replication": services.state(replication.Replicator).info(),
        "backups": services.state(backup.BackupSchedule).info(),
    }


# -- the command's side: the data dir, and the server found through server.json ------------------------

def _read_run_file(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def ask_server(data_path: Path) -> dict[str, Any] | None:
    """The live status of the server serving this data dir, or None when none answers."""
    record = _read_run_file(data_path / RUN_FILE)
    if not record or not isinstance(record.get("pid"), int):
        return None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return None  # left behind by a server that was killed
    except PermissionError:
        pass  # alive, another user's
    try:
        # verify=False: the URL is this machine's loopback, and a certificate names the public host
        response = httpx.get(f"{record['url']}/api/status", headers={"Authorization": f"Bearer {record['token']}"},
                             timeout=10, verify=False)
    except (httpx.HTTPError, KeyError, TypeError):
        return None
    return {"url": record["url"], **response.json()} if response.status_code == 200 else None


def _tree_size(path: Path) -> dict[str, Any]:
    files = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                size += os.stat(os.path.join(root, name)).st_size
                files += 1
            except FileNotFoundError:  # deleted while counted
                pass
    return {"path": str(path), "files": files, "bytes": size}


def _database(db_path: Path) -> dict[str, Any]:
    sizes = {suffix: (db_path.with_name(db_path.name + suffix).stat().st_size
                      if db_path.with_name(db_path.name + suffix).exists() else 0) for suffix in ("", "-wal", "-shm")}
    return {"path": str(db_path), "bytes": sum(sizes.values()), "wal_bytes": sizes["-wal"]}


def _outbox(db_path: Path) -> dict[str, Any] | None:
    """The outbox's backlog and the bytes its rows hold (it lives in the database)."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        counts = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
        oldest, size = conn.execute(
            "SELECT min(CASE WHEN status = 'pending' THEN created_at END), "
            "coalesce(sum(length(body) + length(headers) + coalesce(length(last_error), 0)), 0) FROM outbox").fetchone()
    except sqlite3.Error:  # not a flowbox database (yet)
        return None
    finally:
        conn.close()
    return {"pending": counts.get("pending", 0), "dead": counts.get("dead", 0), "delivered": counts.get("delivered", 0),
            "oldest_pending_at": oldest, "bytes": size}


def _backups(cfg: Config, live: dict[str, Any] | None) -> dict[str, Any]:
    """The scheduled backups: by the running server's settings when it takes them, else by these."""
    if live and live.get("every"):
        facts = {key: live[key] for key in ("every", "dir", "keep")}
    else:
        facts = {"every": cfg.backup_every if backup.duration_seconds(cfg.backup_every) else None, "dir": str(cfg.backup_path),
                 "keep": cfg.backup_keep}
    taken = backup.scheduled_backups(Path(facts["dir"]))
    sizes = [path.stat().st_size for path in taken if path.exists()]
    facts.update(count=len(taken), latest=str(taken[-1]) if taken else None, bytes=sum(sizes))
    if live and live.get("every"):  # what only the server counts: backups taken, the last failure
        facts.update(taken=live["taken"], last_error=live["last_error"])
    return facts


def status(cfg: Config) -> dict[str, Any]:
    """``flowbox status``: the data dir's facts, and the live ones when a server serves it."""
    from .messaging.media import media_dir

    server = ask_server(cfg.data_path)
    has_db = cfg.db_path.exists()
    result: dict[str, Any] = {
        "running": server is not None,
        "version": server["version"] if server else __version__,
        "url": server and server["url"],
        "pid": server and server["pid"],
        "started_at": server and server["started_at"],
        "uptime_seconds": server and server["uptime_seconds"],
        "models": server and server["models"],
        "queue": server and server["queue"],
        "data_dir": str(cfg.data_path),
        "database": _database(cfg.db_path) if has_db else None,
        "media": _tree_size(media_dir(cfg.data_path)),
        "outbox": _outbox(cfg.db_path) if has_db else None,
        "backups": _backups(cfg, server and server["backups"]),
        "replication": "off",
    }
    if cfg.replicate_to:
        result["replication"] = {**replication.position(cfg), **((server or {}).get("replication") or {})} if has_db \
            else {"to": cfg.replicate_to}
    return result
