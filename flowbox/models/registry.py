"""Registered local models: GGUF files a person added by name (``flowbox models add``), kept in
the ``models`` table with what their header says (``gguf_header.py``) and their own load settings.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import StartupError
from ..ids import iso
from .download import check_url, download, file_sha256
from .gguf_header import read_gguf

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")


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
