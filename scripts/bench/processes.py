"""What the benchmarks read about a server process they started (Linux ``/proc``)."""

from __future__ import annotations

import os
from pathlib import Path


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
