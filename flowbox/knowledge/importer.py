"""Bulk import of documents (.txt, .md, .rst, .html) as knowledge entries.

Each file becomes entries of at most ``chunk_size`` characters keyed ``<absolute path>#<part>``,
so importing the same files again changes nothing, and an edited file updates (and re-embeds)
only its changed parts and drops parts it no longer has. A file's entries are written in one
transaction with their vectors: a failure leaves that file as it was before.
"""

from __future__ import annotations

import html.parser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..db import Store
from ..embeddings import Embedder
from ..ids import iso, new_id
from ..validation import invalid
from . import index as idx
from . import store as kb
from .chunking import first_heading, split_text

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES
BATCH_CHUNKS = 64  # chunks embedded per model call; files are grouped up to this


class _HTMLText(html.parser.HTMLParser):
    SKIP = {"script", "style", "head", "noscript"}
    BLOCKS = {"p", "div", "br", "li", "tr", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(lines)


class ImportProblem(Exception):
    """A file that cannot be imported; the message says why (one line)."""


def collect(paths: list[str | Path]) -> list[Path]:
    """The files named, and the supported files under the folders named (sorted, no hidden)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend(sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ))
        else:
            files.append(path)
    return list(dict.fromkeys(p.resolve() for p in files))


def read_document(path: Path) -> str:
    if path.suffix.lower() not in SUFFIXES:
        raise ImportProblem(f"{path}: unsupported file type (use {', '.join(sorted(SUFFIXES))})")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportProblem(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportProblem(f"{path}: not UTF-8 text (invalid byte at position {exc.start}); convert it to UTF-8") from None
    if "\x00" in text:
        raise ImportProblem(f"{path}: looks like a binary file, not text")
    return html_text(text) if path.suffix.lower() in HTML_SUFFIXES else text


@dataclass
class Planned:
    """One file's entries: what to write (with or without a new vector) and what to drop."""

    path: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    to_embed: list[dict[str, Any]] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    unchanged: int = 0


def _name(path: Path, text: str, part: int, parts: int) -> str:
    base = path.name if parts == 1 else f"{path.name} ({part}/{parts})"
    heading = first_heading(text)
    return f"{base}: {heading}"[: kb.MAX_NAME] if heading else base


def plan_file(conn, org_id: str, path: Path, text: str, chunk_size: int, agent_ids: list[str] | None, source: str) -> Planned:
    """Compares a file's entries with what an earlier import stored (sync, on a reader)."""
    prefix = f"{path}#"
    existing = {
        row["source_key"]: row for row in conn.execute(
            "SELECT * FROM knowledge_items WHERE org_id = ? AND source_key >= ? AND source_key < ?",
            [org_id, prefix, prefix[:-1] + chr(ord("#") + 1)],
        )
    }
    links = kb.links_of(conn, [r["n"] for r in existing.values()])
    chunks = split_text(text, chunk_size)
    plan = Planned(path)
    now = iso()
    for part, chunk in enumerate(chunks, start=1):
        key = f"{prefix}{part}"
        name = _name(path, chunk, part, len(chunks))
        old = existing.pop(key, None)
        new_links = agent_ids if agent_ids is not None else (links[old["n"]] if old else [])
        if old is not None and old["content"] == chunk and old["name"] == name and links[old["n"]] == new_links \
                and not old["description_to_index_on"]:
            plan.unchanged += 1
            continue
        item = {
            "n": old["n"] if old else None, "id": old["id"] if old else new_id(), "org_id": org_id, "name": name,
            "content": chunk, "description_to_index_on": None, "source": old["source"] if old else source,
            "source_key": key, "created_at": old["created_at"] if old else now, "updated_at": now,
            "agent_ids": new_links, "vector": None,
        }
        plan.items.append(item)
        if old is None or idx.indexed_text(dict(old)) != idx.indexed_text(item):
            plan.to_embed.append(item)
    plan.drop = [row["n"] for row in existing.values()]
    return plan


@dataclass
class ImportResult:
    files: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def count(self, plan: Planned) -> None:
        """Adds a file whose plan has been saved."""
        self.files += 1
        self.created += sum(1 for item in plan.items if item["n"] is None)
        self.updated += sum(1 for item in plan.items if item["n"] is not None)
        self.unchanged += plan.unchanged
        self.deleted += len(plan.drop)


async def import_paths(store: Store, embedder: Embedder, org_id: str, paths: list[str | Path], *,
                       agent_ids: list[str] | None = None, chunk_size: int = 1500, source: str = "import",
                       max_items: int = 0, progress: Callable[[int], None] | None = None) -> ImportResult:
    """Imports files (see ``collect``); returns counts and the files that could not be imported,
    with why. ``progress(n)`` is called with the number of files just done. ``agent_ids`` (if
    given) replace the links of the imported entries."""
    if not 100 <= chunk_size <= kb.MAX_CONTENT:
        raise invalid(f"chunk size must be between 100 and {kb.MAX_CONTENT} characters")
    if agent_ids:
        await kb.check_agents(store, org_id, agent_ids)
    result = ImportResult()
    group: list[Planned] = []

    async def flush() -> None:
        await _save(store, embedder, org_id, max_items, group)
        for plan in group:
            result.count(plan)
        if progress is not None:
            progress(len(group))
        group.clear()

    for path in collect(paths):
        try:
            text = read_document(path)
        except ImportProblem as exc:
            result.errors.append(str(exc))
            if progress is not None:
                progress(1)
            continue
        async with store.read() as tx:
            plan = await tx.run(plan_file, org_id, path, text, chunk_size, agent_ids, source)
        group.append(plan)
        if sum(len(p.to_embed) for p in group) >= BATCH_CHUNKS:
            await flush()
    if group:
        await flush()
    return result


async def _save(store: Store, embedder: Embedder, org_id: str, max_items: int, group: list[Planned]) -> None:
    """Embeds the group's changed chunks, then writes the whole group in one transaction (within ``max_items``)."""
    pending = [item for plan in group for item in plan.to_embed]
    vectors = await embedder.embed([idx.indexed_text(item) for item in pending])
    for item, vector in zip(pending, vectors):
        item["vector"] = vector

    def write(conn):
        adding = sum(1 for plan in group for item in plan.items if item["n"] is None)
        kb.check_limit(conn, org_id, max_items, adding - sum(len(plan.drop) for plan in group))
        for plan in group:
            kb.delete_items(conn, plan.drop)
            kb.save_items(conn, embedder.name, embedder.dim, plan.items)

    async with store.write() as tx:
        await tx.run(write)
