"""Request bodies of the messages endpoint: JSON within the body limit, or multipart/form-data
with a ``file`` part streamed to disk (never held in memory) and a ``query`` part holding the
JSON message. The upload limit is enforced while the bytes arrive: past it the partial file is
deleted at once and the request answered 413. A project holds at most ``messaging_media_quota_mb``
of media; files older than ``messaging_media_keep_days`` are deleted by a sweep (at start, then
hourly), which also removes files no row names (a deleted project's, or a crash's leftovers).

Stored files are served at ``/rest/v1/media/<id>``; the random id is the capability to read it.
They are served on flowbox's own origin, where the console keeps its key, so nothing served may run
there: only raster images, audio and video are shown inline; everything else is an attachment,
a type that could hold script (HTML, XML, SVG, JavaScript) goes out as ``application/octet-stream``,
and every answer carries ``nosniff`` and a sandboxing CSP (a document opened anyway gets a unique
origin and runs no script).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import multipart
from litestar import Request
from litestar.response import File

from ..db import Store
from ..http import BadJSON, decode_json, decode_json_async
from ..ids import iso, now
from ..services import Services
from .common import public_base, rest_error

log = logging.getLogger("flowbox.messaging.media")

MAX_FIELD_BYTES = 65_536   # the ``query`` part and any other non-file field
WRITE_BUFFER = 1 << 20     # file bytes are written in ~1 MB pieces, off the event loop
DRAIN_BYTES = 64 << 20     # after refusing an upload, read (and drop) this much more so the client sees the 413
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})  # and audio/*, video/*
_ACTIVE = re.compile(r"html|xml|svg|script|xsl", re.IGNORECASE)  # types a browser may run script from
_MIME = re.compile(r"^[a-z0-9][\w.+-]*/[\w.+-]+$")
MEDIA_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}
SWEEP_EVERY_SECONDS = 3600
STALE_FILE_SECONDS = 3600  # an unrecorded file untouched this long is no upload in progress


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, at most ``limit`` bytes (counted as they arrive)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise rest_error(413, f"The request body is larger than {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise rest_error(413, f"The request body is larger than {limit} bytes")
    if not data.strip():
        raise rest_error(400, "The request body is empty")
    try:
        return await decode_json_async(bytes(data))
    except BadJSON as exc:
        raise rest_error(400, f"The request body is not valid JSON: {exc}") from None


def media_dir(data_path: Path) -> Path:
    return data_path / "messaging" / "media"


async def receive_upload(request: Request, directory: Path, max_bytes: int, limit_label: str) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Parses a multipart body. Returns (text fields, upload) where upload is
    ``{"path", "name", "mimetype", "size"}`` of the ``file`` part written under ``directory``."""
    _, options = multipart.parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get("boundary")
    if not boundary:
        raise rest_error(400, "multipart/form-data needs a boundary")
    directory.mkdir(parents=True, exist_ok=True)
    parts = _Parts(directory / f".incoming-{secrets.token_hex(8)}", max_bytes, limit_label)
    parser = multipart.PushMultipartParser(boundary, max_segment_count=16)
    stream = request.stream()
    try:
        async for chunk in stream:
            for event in parser.parse(chunk) if chunk else ():
                await parts.take(event, stream)
        parser.close()
    except multipart.MultipartError as exc:
        parts.discard()
        raise rest_error(400, f"The multipart/form-data body is not valid: {exc}") from None
    except BaseException:
        parts.discard()
        raise
    if parts.upload is None:
        parts.discard()
    return parts.fields, parts.upload


class _Parts:
    """One multipart body as its parser events arrive: the text fields, and the ``file`` part
    streamed to ``temp`` (written WRITE_BUFFER bytes at a time, off the event loop)."""

    def __init__(self, temp: Path, max_bytes: int, limit_label: str) -> None:
        self.temp = temp
        self.max_bytes = max_bytes
        self.limit_label = limit_label
        self.fields: dict[str, str] = {}
        self.upload: dict[str, Any] | None = None
        self.handle = None
        self.pending = bytearray()
        self.current: multipart.MultipartSegment | None = None
        self.field_data = bytearray()

    async def take(self, event: multipart.MultipartSegment | bytes | bytearray | None, stream) -> None:
        """Handles one event: a part's headers, the end of a part (None), or a piece of its body."""
        if isinstance(event, multipart.MultipartSegment):
            await self._begin(event)
        elif event is None:
            await self._end()
        elif self._in_file():
            await self._file_bytes(event, stream)
        else:
            self._field_bytes(event)

    def _in_file(self) -> bool:
        return self.current is not None and self.current.filename is not None and self.current.name == "file"

    async def _begin(self, segment: multipart.MultipartSegment) -> None:
        self.current = segment
        if self._in_file():
            if self.handle is not None:
                raise rest_error(400, "Upload one file per message")
            self.handle = await asyncio.to_thread(open, self.temp, "wb")
        else:
            self.field_data.clear()

    async def _end(self) -> None:
        current = self.current
        if self._in_file():
            await self._flush()
            await asyncio.to_thread(self.handle.close)
            self.upload = {"path": self.temp, "name": os.path.basename(current.filename) or "file",
                           "mimetype": current.content_type or "application/octet-stream", "size": current.size}
        elif current is not None and current.name:
            self.fields[current.name] = self.field_data.decode("utf-8", "replace")
        self.current = None

    async def _file_bytes(self, data: bytes | bytearray, stream) -> None:
        """Past the limit the partial file goes at once; the rest of the body is read so the client gets the 413."""
        if self.current.bytes_received > self.max_bytes:
            self.discard()
            await _drain(stream)
            raise rest_error(413, f"The maximum file size you can upload is {self.limit_label}")
        self.pending += data
        if len(self.pending) >= WRITE_BUFFER:
            await self._flush()

    def _field_bytes(self, data: bytes | bytearray) -> None:
        self.field_data += data
        if len(self.field_data) > MAX_FIELD_BYTES:
            raise rest_error(413, f"Form fields other than the file are limited to {MAX_FIELD_BYTES} bytes")

    async def _flush(self) -> None:
        if self.pending:
            data = bytes(self.pending)
            self.pending.clear()
            await asyncio.to_thread(self.handle.write, data)

    def discard(self) -> None:
        """Closes and deletes the partial file, if any."""
        _discard(self.handle, self.temp)


async def _drain(stream) -> None:
    """Reads on (dropping the bytes) so a client still sending gets the answer, up to a bound."""
    drained = 0
    async for chunk in stream:
        drained += len(chunk)
        if drained > DRAIN_BYTES:
            break


def _discard(handle, temp: Path) -> None:
    if handle is not None and not handle.closed:
        handle.close()
    temp.unlink(missing_ok=True)


async def keep(store: Store, directory: Path, project_id: str, upload: dict[str, Any], quota_mb: int = 0) -> str:
    """Moves an upload to its final place and records it, within the project's quota (checked in
    the same write, so uploads at once cannot overshoot it together); returns its id."""
    media_id = secrets.token_urlsafe(24)
    final = directory / project_id / media_id
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(upload["path"], final)
    try:
        async with store.write() as tx:
            if quota_mb:
                row = await tx.fetchone("SELECT COALESCE(SUM(size), 0) AS used FROM msg_media WHERE project_id = ?", [project_id])
                if row["used"] + upload["size"] > quota_mb << 20:
                    raise rest_error(413, f"This project's media storage is full (at most {quota_mb}MB); "
                                          "files are deleted as they expire")
            await tx.execute(
                "INSERT INTO msg_media (id, project_id, name, mimetype, size, path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [media_id, project_id, upload["name"][:255], upload["mimetype"], upload["size"], str(final), iso()],
            )
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return media_id


def forget_project(data_path: Path, project_id: str) -> None:
    """Removes a deleted project's files (their rows went with the project)."""
    shutil.rmtree(media_dir(data_path) / project_id, ignore_errors=True)


async def get_media(store: Store, media_id: str) -> dict[str, Any] | None:
    row = await store.fetchone("SELECT * FROM msg_media WHERE id = ?", [media_id])
    return dict(row) if row else None


def served_type(mimetype: str) -> tuple[str, bool]:
    """(Content-Type, inline) for a stored file of the uploader's ``mimetype``."""
    main = mimetype.split(";")[0].strip().lower()
    if not _MIME.match(main) or _ACTIVE.search(main):
        return "application/octet-stream", False
    return main, main in INLINE_TYPES or main.startswith(("audio/", "video/"))


def media_response(media: dict[str, Any]) -> File:
    """A stored file as it may be served on flowbox's origin (see the module's docstring)."""
    content_type, inline = served_type(media["mimetype"])
    return File(media["path"], media_type=content_type, filename=media["name"],
                content_disposition_type="inline" if inline else "attachment", headers=MEDIA_HEADERS)


async def sweep(services: Services) -> int:
    """Deletes media past ``messaging_media_keep_days`` (rows and files), and files that no row
    names. Returns how many files were removed."""
    store, directory = services.store, media_dir(services.config.data_path)
    expired: list[str] = []
    keep_days = services.config.messaging_media_keep_days
    if keep_days:
        cutoff = iso(now() - dt.timedelta(days=keep_days))
        async with store.write() as tx:
            expired = [r["path"] for r in await tx.fetchall("SELECT path FROM msg_media WHERE created_at < ?", [cutoff])]
            await tx.execute("DELETE FROM msg_media WHERE created_at < ?", [cutoff])
    known = {r["id"] for r in await store.fetchall("SELECT id FROM msg_media")}
    projects = {r["id"] for r in await store.fetchall("SELECT id FROM msg_projects")}
    return await asyncio.to_thread(_remove_files, directory, expired, known, projects)


def _remove_files(directory: Path, expired: list[str], known: set[str], projects: set[str]) -> int:
    removed = 0
    for path in expired:
        with contextlib.suppress(OSError):
            Path(path).unlink()
            removed += 1
    if not directory.is_dir():
        return removed
    stale = time.time() - STALE_FILE_SECONDS
    for entry in directory.iterdir():
        if entry.is_dir() and entry.name not in projects:  # a deleted project's folder
            removed += sum(1 for p in entry.rglob("*") if p.is_file())
            shutil.rmtree(entry, ignore_errors=True)
            continue
        # In a project's folder, files no row names; beside them, uploads (.incoming-*) a crash left.
        for path in entry.iterdir() if entry.is_dir() else [entry]:
            with contextlib.suppress(OSError):
                if path.is_file() and path.name not in known and path.stat().st_mtime < stale:
                    path.unlink()
                    removed += 1
    return removed


async def sweep_forever(services: Services) -> None:
    while True:
        try:
            removed = await sweep(services)
            if removed:
                log.info("media sweep: %d expired or unrecorded files removed", removed)
        except Exception:  # the next sweep tries again
            log.exception("media sweep failed")
        await asyncio.sleep(SWEEP_EVERY_SECONDS)


async def start_sweeper(services: Services) -> None:
    services.spawn(sweep_forever(services), name="messaging-media-sweep")


def message_body(fields: dict[str, str]) -> Any:
    """The JSON message of a multipart request: the ``query`` field (``{"payload": ...}``,
    also accepted wrapped as ``{"query": {...}}``); none means a bare media message."""
    raw = fields.get("query") or fields.get("payload")
    if raw is None:
        return {"payload": {"type": "media"}}
    try:
        body = decode_json(raw)
    except BadJSON as exc:
        raise rest_error(400, f"The query field is not valid JSON: {exc}") from None
    if isinstance(body, dict) and isinstance(body.get("query"), dict):
        body = body["query"]
    return body


async def upload_message(request: Request, services: Services, parse: Callable[[dict[str, str], dict[str, Any] | None], Awaitable[tuple[dict, Any]]],
                         max_mb: int | None = None) -> tuple[dict, Any]:
    """A multipart message: the file streamed to disk (within ``max_mb``, by default
    ``messaging_max_upload_mb``), then ``parse(fields, upload)`` gives (project, incoming); the file is
    kept within the project's quota and the message's media points at where it is served. A refused
    message leaves no file behind."""
    mb = services.config.messaging_max_upload_mb if max_mb is None else max_mb
    directory = media_dir(services.config.data_path)
    fields, upload = await receive_upload(request, directory, mb << 20, f"{mb}MB")
    try:
        project, incoming = await parse(fields, upload)
    except BaseException:
        if upload:
            upload["path"].unlink(missing_ok=True)
        raise
    if upload is not None:
        media_id = await keep(services.store, directory, project["id"], upload, services.config.messaging_media_quota_mb)
        incoming.media = {k: v for k, v in incoming.media.items() if k != "path"}
        incoming.media["url"] = f"{public_base(request, services.config)}/rest/v1/media/{media_id}"
    return project, incoming

