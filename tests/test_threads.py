"""The threads of flowbox's own process: numpy's OpenBLAS stays on one (``flowbox/__init__.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

# A product as the matcher computes them, then the number of threads the process has (Linux: /proc).
PROBE = ("import flowbox, numpy, os; a = numpy.ones((4000, 384), 'float32'); v = numpy.ones(384, 'float32'); "
         "[a @ v for _ in range(20)]; print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])")


def threads(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, env={**clean, **env}, check=True)
    return result.stdout.split()


def test_openblas_runs_on_one_thread_unless_the_environment_says_otherwise():
    assert threads() == ["1", "1"]
    assert threads(OPENBLAS_NUM_THREADS="2") == ["2", "2"]  # a value set by the user is kept (OpenBLAS caps it at the cores: 2 or more)
