"""The one-file executable, built once for each set of inputs and kept.

    python scripts/cached_binary.py      # prints the executable's path, building it first if needed

Building (scripts/build_binary.sh) takes minutes, so the result is kept under a hash of everything
that goes into it: our files, the installed packages, the models, Python
(~/.cache/flowbox/binary-<hash>/, or FLOWBOX_BINARY_CACHE). Beside the executable lies
``selfcheck.json``, the report of its smoke run (`flowbox selfcheck --json` from the executable),
which tests/test_binary.py checks. CI builds it before the tests, as part of installing; the tests
build it themselves when it is missing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ["flowbox", "packaging", "scripts/build_binary.sh", "pyproject.toml"]
MODELS_DIR = Path(os.environ.get("FLOWBOX_TEST_MODELS_DIR") or Path.home() / ".cache" / "flowbox-test-models")


def prepared_models(models_dir: Path = MODELS_DIR) -> Path:
    """The chat and embedding models the executable bundles, prepared first if missing."""
    from flowbox.models.files import ensure_model

    models_dir.mkdir(parents=True, exist_ok=True)
    ensure_model(models_dir, "smollm2", progress=False)
    ensure_model(models_dir, "all-minilm-l6-v2", progress=False)
    return models_dir


def source_hash(models_dir: Path = MODELS_DIR) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for top in INPUTS:
        path = ROOT / top
        for file in sorted([path] if path.is_file() else path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    for dist in sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()):
        digest.update(dist.encode())
    for model in sorted(models_dir.glob("*.gguf")):
        digest.update(f"{model.name}:{model.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def cached_binary(models_dir: Path = MODELS_DIR) -> Path:
    """The executable for the current inputs, built now if there is none yet."""
    models_dir = prepared_models(models_dir)
    cache = Path(os.environ.get("FLOWBOX_BINARY_CACHE") or Path.home() / ".cache" / "flowbox")
    target = cache / f"binary-{source_hash(models_dir)}" / "flowbox"
    if target.exists():
        return target
    staging = target.parent.with_name(target.parent.name + f".part{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    env = {**os.environ, "PYTHON": sys.executable, "FLOWBOX_BUNDLE_MODELS_DIR": str(models_dir),
           "FLOWBOX_DIST_DIR": str(staging), "FLOWBOX_BUILD_DIR": str(cache / "pyinstaller-work")}
    started = time.monotonic()
    result = subprocess.run(["bash", "scripts/build_binary.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    if result.returncode != 0:
        raise RuntimeError("building the executable failed:\n" + result.stdout[-3000:] + result.stderr[-6000:])
    (staging / "selfcheck.json").write_text(result.stdout)
    print(f"built {target} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    for old in cache.glob("binary-*"):  # keep only the newest build
        if old != staging:
            shutil.rmtree(old, ignore_errors=True)
    staging.rename(target.parent)
    return target


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(cached_binary())
