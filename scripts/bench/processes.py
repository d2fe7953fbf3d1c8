"""The servers a benchmark starts: a free loopback port, waiting until one answers, its CPU time (Linux ``/proc``)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    """Returns once ``url`` answers at all; raises after ``timeout`` seconds, or as soon as ``proc`` (the server) exits."""
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """A process's user + system CPU time so far (Linux, as wrk); with ``children``, its child processes' too (the
    embedding workers)."""
    ticks = 0
    for name in [p.name for p in Path("/proc").iterdir() if p.name.isdigit()] if children else [str(pid)]:
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if name == str(pid) or int(fields[1]) == pid:  # fields[1]: the parent's pid
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
