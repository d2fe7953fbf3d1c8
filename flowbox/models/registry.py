"""Registered local models: GGUF files a person added by name (``flowbox models add``), kept in
the ``models`` table with what their header says and their own load settings.

The header is read here, not with ``gguf.GGUFReader``: that reader decodes every vocabulary entry
into numpy objects (15 s for SmolLM2's 49k tokens, minutes for a 150k vocabulary), where skipping
them takes milliseconds. The ``gguf`` package still names the value and tensor types.
"""

from __future__ import annotations

import mmap
import re
import sqlite3
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import StartupError
from ..ids import iso

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 20
_U64 = struct.Struct("<Q")


class NotGGUF(StartupError):
    """The file is not a usable GGUF model (garbage, truncated, an unknown version); ``reason`` says
    why, without the file's name."""

    def __init__(self, reason: str, path: Path | None = None):
        super().__init__(f"{path} is not a usable GGUF model file: {reason}" if path else reason)
        self.reason = reason


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    parameters: int
    quantization: str
    context_length: int | None
    chat_template: bool


@dataclass(frozen=True)
class Registered:
    """One row of the ``models`` table. ``n_ctx``, ``threads``, ``gpu_layers``, ``chat_format``:
    None (or "") means the global setting."""

    name: str
    path: str
    size: int
    sha256: str
    parameters: int
    quantization: str
    context_length: int | None
    chat_template: bool
    n_ctx: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    chat_format: str = ""
    source: str = ""  # the URL it was downloaded from, if any
    added_at: str = ""

    def settings(self) -> tuple:
        """What its loaded worker depends on: a change means a new load."""
        return (self.path, self.size, self.n_ctx, self.threads, self.gpu_layers, self.chat_format)


# -- the GGUF header ------------------------------------------------------------------------------

class _Header:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise NotGGUF("it ends inside its header (an incomplete download?)")
        value = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> bytes:
        length = self.take("<Q")
        if self.pos + length > len(self.buf):
            raise NotGGUF("it ends inside its header (an incomplete download?)")
        self.pos += length
        return self.buf[self.pos - length:self.pos]

    def value(self, kind: int, keep: bool) -> Any:
        from gguf import GGUFValueType as T

        scalar = {T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I", T.INT32: "<i",
                  T.FLOAT32: "<f", T.BOOL: "<?", T.UINT64: "<Q", T.INT64: "<q", T.FLOAT64: "<d"}
        if kind in scalar:
            return self.take(scalar[kind])
        if kind == T.STRING:
            raw = self.string()
            return raw.decode("utf-8", "replace") if keep else None
        if kind == T.ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in scalar:  # skipped in one step
                size = struct.calcsize(scalar[item]) * count
                if self.pos + size > len(self.buf):
                    raise NotGGUF("it ends inside its header (an incomplete download?)")
                self.pos += size
            elif item == T.STRING:  # a vocabulary: 100k+ strings, walked without decoding
                pos, length = self.pos, _U64.unpack_from
                try:
                    for _ in range(count):
                        pos += 8 + length(self.buf, pos)[0]
                except struct.error:
                    pos = len(self.buf) + 1
                if pos > len(self.buf):
                    raise NotGGUF("it ends inside its header (an incomplete download?)")
                self.pos = pos
            else:
                for _ in range(count):
                    self.value(item, False)
            return None
        raise NotGGUF(f"its header holds an unknown value type ({kind})")


def read_gguf(path: Path) -> GGUFInfo:
    """What a GGUF file's header says, after checking that the file holds every tensor it lists."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

    try:
        with open(path, "rb") as fp:
            size = fp.seek(0, 2)
            if size < 24:
                raise NotGGUF("it does not start like a GGUF file")
            with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = _Header(buf)
                magic, version = header.take("<4sI")
                if magic != b"GGUF":
                    raise NotGGUF("it does not start like a GGUF file")
                if version not in (2, 3):
                    raise NotGGUF(f"it is GGUF version {version}; flowbox reads versions 2 and 3")
                n_tensors, n_kv = header.take("<QQ")
                if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
                    raise NotGGUF(f"its header lists {n_tensors} tensors and {n_kv} values")
                meta: dict[str, Any] = {}
                for _ in range(n_kv):
                    key = header.string().decode("utf-8", "replace")
                    meta[key] = header.value(header.take("<I"), keep=not key.startswith("tokenizer.ggml."))
                tensors = []
                for _ in range(n_tensors):
                    header.string()
                    n_dims = header.take("<I")
                    if n_dims > 8:
                        raise NotGGUF(f"a tensor has {n_dims} dimensions")
                    dims = header.take(f"<{n_dims}Q") if n_dims else ()
                    dims = dims if isinstance(dims, tuple) else (dims,)
                    kind, offset = header.take("<IQ")
                    count = 1
                    for dim in dims:
                        count *= dim
                    tensors.append((kind, offset, count))
                header_end = header.pos
    except NotGGUF as exc:
        raise NotGGUF(exc.reason, path) from None
    except OSError as exc:
        raise StartupError(f"cannot read {path}: {exc.strerror or exc}") from None
    alignment = meta.get("general.alignment") or 32
    data_start = -(-header_end // alignment) * alignment
    end, by_type = data_start, {}
    for kind, offset, count in tensors:
        by_type[kind] = by_type.get(kind, 0) + count
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            continue  # a type newer than this gguf package: llama.cpp judges it
        end = max(end, data_start + offset + count * type_size // block)
    if end > size:
        raise NotGGUF(f"it is truncated ({size} of {end} bytes)", path)
    if not tensors:
        raise NotGGUF("it holds no tensors (a vocabulary-only file?)", path)
    arch = str(meta.get("general.architecture") or "")
    return GGUFInfo(
        architecture=arch,
        parameters=sum(by_type.values()),
        quantization=_quantization(meta.get("general.file_type"), by_type, LlamaFileType, GGMLQuantizationType),
        context_length=meta.get(f"{arch}.context_length"),
        chat_template=bool(meta.get("tokenizer.chat_template")),
    )


def _quantization(file_type, by_type: dict[int, int], file_types, tensor_types) -> str:
    """The file's declared type (Q4_K_M), else the type holding most of its weights."""
    try:
        if file_type is not None:
            return file_types(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        pass
    try:
        return tensor_types(max(by_type, key=by_type.get)).name
    except ValueError:
        return "unknown"


# -- the table ----------------------------------------------------------------------------------

_COLUMNS = tuple(Registered.__dataclass_fields__)


def _row(row: sqlite3.Row) -> Registered:
    values = dict(row)
    values["chat_template"] = bool(values["chat_template"])
    return Registered(**{k: values[k] for k in _COLUMNS})


def all_registered(conn: sqlite3.Connection) -> dict[str, Registered]:
    return {row["name"]: _row(row) for row in conn.execute("SELECT * FROM models ORDER BY name")}


def check_name(name: str, taken: list[str]) -> None:
    """A new model's name: like an id, and not a name that already means a model."""
    if not NAME.fullmatch(name):
        raise StartupError(f"model name {name!r} must be 1 to 64 letters, digits or . _ : + -, starting with a letter or digit")
    if name in taken:
        raise StartupError(f"'{name}' is already a model; choose another name (or 'flowbox models remove {name}' first)")


def insert(conn: sqlite3.Connection, model: Registered) -> Registered:
    model = Registered(**{**asdict(model), "added_at": model.added_at or iso()})
    try:
        conn.execute(f"INSERT INTO models ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                     [getattr(model, k) for k in _COLUMNS])
    except sqlite3.IntegrityError:
        raise StartupError(f"'{model.name}' is already a model; remove it first") from None
    return model


def delete(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("DELETE FROM models WHERE name = ?", [name]).rowcount > 0


def chat_formatter(chat_format: str):
    """llama-cpp-python's prompt formatter named ``chat_format`` (chatml, llama-3, mistral-instruct, ...)."""
    from llama_cpp import llama_chat_format

    wanted = chat_format.replace("-", "").replace("_", "").lower()
    for attr in dir(llama_chat_format):
        if attr.startswith("format_") and attr[len("format_"):].replace("_", "") == wanted:
            return getattr(llama_chat_format, attr)
    raise StartupError(f"unknown chat format {chat_format!r}; one of: {', '.join(chat_formats())}")


def chat_formats() -> list[str]:
    from llama_cpp import llama_chat_format

    return sorted(a[len("format_"):].replace("_", "-") for a in dir(llama_chat_format) if a.startswith("format_"))


# -- adding and removing ----------------------------------------------------------------------------

def add_model(conn: sqlite3.Connection, name: str, source: str, *, models_dir: Path, taken: list[str],
              sha256: str | None = None, n_ctx: int | None = None, threads: int | None = None,
              gpu_layers: int | None = None, chat_format: str = "", progress: bool = False) -> Registered:
    """Registers ``source`` (a GGUF file's path, or an http(s) URL to download into ``models_dir``)
    as ``name``. Everything that can be refused is refused before a byte is downloaded; a file that
    fails its checks is not registered. ``taken``: names that already mean a model (local, remotes)."""
    from .download import check_url, download, file_sha256

    check_name(name, [*taken, *all_registered(conn)])
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise StartupError("--sha256 must be 64 hexadecimal digits")
    if chat_format:
        chat_formatter(chat_format)
    downloaded = "://" in source
    if downloaded:
        check_url(source)
        part, digest = download(source, models_dir, sha256=sha256, progress=progress, desc=f"downloading {name}")
        path = (models_dir / f"{name}.gguf").resolve()
        part.replace(path)
    else:
        path = Path(source).expanduser().absolute()
        if not path.is_file():
            raise StartupError(f"no such file: {path}")
        read_gguf(path)  # refuses a wrong file before reading all of it
        digest = file_sha256(path, progress, desc=f"checking {name}")
        if sha256 and digest != sha256.lower():
            raise StartupError(f"{path} does not match the expected SHA-256 (it has {digest}); nothing was added")
    info = read_gguf(path)
    model = Registered(
        name=name, path=str(path), size=path.stat().st_size, sha256=digest, parameters=info.parameters,
        quantization=info.quantization, context_length=info.context_length, chat_template=info.chat_template,
        n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, chat_format=chat_format, source=source if downloaded else "",
    )
    try:
        return insert(conn, model)
    except StartupError:
        if downloaded:
            path.unlink(missing_ok=True)
        raise


def remove_model(conn: sqlite3.Connection, name: str, models_dir: Path) -> Registered:
    """Unregisters ``name``; a file flowbox downloaded is deleted, a file added by path stays."""
    model = all_registered(conn).get(name)
    if model is None:
        raise StartupError(f"no model named {name!r} was added ('flowbox models list' shows them)")
    delete(conn, name)
    if model.source and Path(model.path).parent == models_dir.resolve():
        Path(model.path).unlink(missing_ok=True)
    return model
