"""Request bodies of the messages endpoint: JSON within the body limit, or multipart/form-data
with a ``file`` part streamed to disk (never held in memory) and a ``query`` part holding the
JSON message. The upload limit is enforced while the bytes arrive: past it the partial file is
deleted at once and the request answered 413. Stored files are served at
``/rest/v1/media/<id>``; the random id is the capability to read it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Awaitable, Callable

import multipart
from litestar import Request

from ..db import Store
from ..http import BadJSON, decode_json, decode_json_async
from ..ids import iso
from ..services import Services
from .common import public_base, rest_error

MAX_FIELD_BYTES = 65_536   # the ``query`` part and any other non-file field
WRITE_BUFFER = 1 << 20     # file bytes are written in ~1 MB pieces, off the event loop
DRAIN_BYTES = 64 << 20     # after refusing an upload, read (and drop) this much more so the client sees the 413


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
    content_type, options = multipart.parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get("boundary")
    if not boundary:
        raise rest_error(400, "multipart/form-data needs a boundary")
    directory.mkdir(parents=True, exist_ok=True)
    fields: dict[str, str] = {}
    upload: dict[str, Any] | None = None
    temp = directory / f".incoming-{secrets.token_hex(8)}"
    handle = None
    pending = bytearray()
    current: multipart.MultipartSegment | None = None
    field_data = bytearray()
    parser = multipart.PushMultipartParser(boundary, max_segment_count=16)

    stream = request.stream()

    async def flush() -> None:
        if pending:
            data = bytes(pending)
            pending.clear()
            await asyncio.to_thread(handle.write, data)

    try:
        async for chunk in stream:
            for event in parser.parse(chunk) if chunk else ():
                if isinstance(event, multipart.MultipartSegment):
                    current = event
                    if event.filename is not None and event.name == "file":
                        if handle is not None:
                            raise rest_error(400, "Upload one file per message")
                        handle = await asyncio.to_thread(open, temp, "wb")
                    else:
                        field_data.clear()
                elif event is None:  # end of a part
                    if current is not None and current.filename is not None and current.name == "file":
                        await flush()
                        await asyncio.to_thread(handle.close)
                        upload = {"path": temp, "name": os.path.basename(current.filename) or "file",
                                  "mimetype": current.content_type or "application/octet-stream", "size": current.size}
                    elif current is not None and current.name:
                        fields[current.name] = field_data.decode("utf-8", "replace")
                    current = None
                elif current is not None and current.filename is not None and current.name == "file":
                    if current.bytes_received > max_bytes:
                        _discard(handle, temp)
                        await _drain(stream)
                        raise rest_error(413, f"The maximum file size you can upload is {limit_label}")
                    pending += event
                    if len(pending) >= WRITE_BUFFER:
                        await flush()
                else:
                    field_data += event
                    if len(field_data) > MAX_FIELD_BYTES:
                        raise rest_error(413, f"Form fields other than the file are limited to {MAX_FIELD_BYTES} bytes")
        parser.close()
    except multipart.MultipartError as exc:
        _discard(handle, temp)
        raise rest_error(400, f"The multipart/form-data body is not valid: {exc}") from None
    except BaseException:
        _discard(handle, temp)
        raise
    if upload is None:
        _discard(handle, temp)
    return fields, upload


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


async def keep(store: Store, directory: Path, project_id: str, upload: dict[str, Any]) -> str:
    """Moves an upload to its final place and records it; returns its id."""
    media_id = secrets.token_urlsafe(24)
    final = directory / project_id / media_id
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(upload["path"], final)
    try:
        async with store.write() as tx:
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


async def upload_message(request: Request, services: Services, parse: Callable[[dict[str, str], dict[str, Any] | None], Awaitable[tuple[dict, Any]]]) -> tuple[dict, Any]:
    """A multipart message: the file streamed to disk (within ``messaging_max_upload_mb``), then
    ``parse(fields, upload)`` gives (project, incoming); the file is kept and the message's media
    points at where it is served. A refused message leaves no file behind."""
    mb = services.config.messaging_max_upload_mb
    directory = media_dir(services.config.data_path)
    fields, upload = await receive_upload(request, directory, mb << 20, f"{mb}MB")
    try:
        project, incoming = await parse(fields, upload)
    except BaseException:
        if upload:
            upload["path"].unlink(missing_ok=True)
        raise
    if upload is not None:
        media_id = await keep(services.store, directory, project["id"], upload)
        incoming.media = {k: v for k, v in incoming.media.items() if k != "path"}
        incoming.media["url"] = f"{public_base(request, services.config)}/rest/v1/media/{media_id}"
    return project, incoming
