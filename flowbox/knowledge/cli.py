"""``flowbox knowledge``: the same functions the Knowledge API calls, plus bulk import and
re-embedding. Commands that create or list things take ``--json``."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import click

from ..cli.common import config_options, fail, json_option, org_option, output, with_store
from ..cli.keys import _org_id
from ..db import Store
from ..embeddings import Embedder, answers_model, knowledge_model, load_embedder
from . import store as kb

COLUMNS = ["id", "name", "source", "linked_agents", "updated_at"]
SEARCH_COLUMNS = ["relevance", "score", "similarity", "id", "name", "snippet"]


def run(cfg, fn: Callable[..., Awaitable[Any]], embedder: bool = False) -> Any:
    """``fn(store)`` or ``fn(store, embedder)`` on an open store; API errors become one line."""

    async def go(store: Store):
        if not embedder:
            return await fn(store)
        model: Embedder = await asyncio.to_thread(load_embedder, cfg, True, model=knowledge_model(cfg))
        try:
            return await fn(store, model)
        finally:
            await model.aclose()

    return with_store(cfg, go)


async def _item_org(store: Store, item_id: str) -> str:
    row = await store.fetchone("SELECT org_id FROM knowledge_items WHERE id = ?", [item_id])
    if row is None:
        raise kb.not_found()
    return row["org_id"]


def _agents(values: tuple[str, ...]) -> list[str] | None:
    return [a for value in values for a in value.split(",") if a] or None


def _table(items: list[dict]) -> list[dict]:
    return [{**item, "linked_agents": ",".join(item["linked_agents"])} for item in items]


agent_option = click.option("--agent", "agents", multiple=True, help="Agent id to link (repeat, or comma-separated).")


@click.group()
def knowledge() -> None:
    """Knowledge items that agents answer from: add, import, search, re-embed."""


@knowledge.command("add")
@click.argument("content", required=False)
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), help="Read the content from a file ('-' for stdin).")
@click.option("--name", default=None, help="Display name.")
@click.option("--description", default=None, help="Text to embed instead of the content.")
@agent_option
@org_option
@json_option
@config_options
def knowledge_add(content, file, name, description, agents, org_id, as_json, cfg):
    """Add one item (at most 4000 characters) linked to agents."""
    if file is not None:
        content = file.read()
    if content is None:
        fail("give the content as an argument or with --file")
    body = {"content": content, "agent_ids": _agents(agents), "name": name, "description_to_index_on": description}

    async def go(store, embedder):
        return await kb.create_item(store, embedder, await _org_id(store, org_id), body, source="cli",
                                    max_items=cfg.knowledge_max_items)

    item = run(cfg, go, embedder=True)
    output(item if as_json else _table([item]), as_json, COLUMNS)


@knowledge.command("list")
@click.option("--agent", "agent_id", default=None, help="Only items linked to this agent.")
@click.option("--source", type=click.Choice(["all", "api", "cli", "import"]), default="all", show_default=True)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--limit", type=click.IntRange(1, kb.MAX_PAGE_SIZE), default=kb.DEFAULT_PAGE_SIZE, show_default=True)
@org_option
@json_option
@config_options
def knowledge_list(agent_id, source, page, limit, org_id, as_json, cfg):
    """List items, newest first (one page; --json includes the pagination object)."""

    async def go(store):
        return await kb.list_items(store, await _org_id(store, org_id), agent_id=agent_id, page=page, limit=limit,
                                   source=None if source == "all" else source)

    data = run(cfg, go)
    output(data if as_json else _table(data["knowledge_items"]), as_json, COLUMNS)


@knowledge.command("get")
@click.argument("item_id")
@json_option
@config_options
def knowledge_get(item_id, as_json, cfg):
    """Show one item with its content."""

    async def go(store):
        return await kb.get_item(store, await _item_org(store, item_id), item_id)

    item = run(cfg, go)
    if as_json:
        output(item, True)
    else:
        output(_table([item]), False, COLUMNS)
        click.echo("\n" + item["content"])


@knowledge.command("update")
@click.argument("item_id")
@click.option("--content", default=None)
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), help="Read the new content from a file.")
@click.option("--name", default=None)
@click.option("--description", default=None, help="Text to embed instead of the content ('' to drop it).")
@agent_option
@json_option
@config_options
def knowledge_update(item_id, content, file, name, description, agents, as_json, cfg):
    """Change an item; a new content (or description) is re-embedded."""
    body: dict[str, Any] = {}
    if file is not None:
        content = file.read()
    for key, value in (("content", content), ("name", name), ("description_to_index_on", description), ("agent_ids", _agents(agents))):
        if value is not None:
            body[key] = value

    async def go(store, embedder):
        return await kb.update_item(store, embedder, await _item_org(store, item_id), item_id, body)

    data = run(cfg, go, embedder=True)
    output(data if as_json else _table([data]), as_json, COLUMNS)


@knowledge.command("delete")
@click.argument("item_id")
@json_option
@config_options
def knowledge_delete(item_id, as_json, cfg):
    """Delete an item and its vectors."""

    async def go(store):
        await kb.delete_item(store, await _item_org(store, item_id), item_id)

    run(cfg, go)
    output({"id": item_id, "deleted": True}, as_json)


@knowledge.command("search")
@click.argument("query")
@click.option("--agent", "agent_id", default=None, help="Only items linked to this agent.")
@click.option("--limit", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--mode", type=click.Choice(["hybrid", "vector", "keyword"]), default="hybrid", show_default=True)
@org_option
@json_option
@config_options
def knowledge_search(query, agent_id, limit, mode, org_id, as_json, cfg):
    """Hybrid search (vectors + BM25, fused; each result with its relevance), best first."""

    async def go(store, embedder):
        org = await _org_id(store, org_id)
        if agent_id is not None:
            await kb.check_agent(store, org, agent_id)
        reader = None
        if mode == "hybrid" and answers_model(cfg):  # the second reading, as the server makes it
            reader = await asyncio.to_thread(load_embedder, cfg, True, model=answers_model(cfg))
        try:
            return await kb.search(store, embedder if mode != "keyword" else None, org, query,
                                   agent_id=agent_id, limit=limit, mode=mode, answers=reader)
        finally:
            if reader is not None:
                await reader.aclose()

    results = run(cfg, go, embedder=True)
    rows = results if as_json else [{**r, "snippet": " ".join(r["content"].split())[:60]} for r in results]
    output(rows, as_json, SEARCH_COLUMNS)


@knowledge.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--chunk-size", type=click.IntRange(100, kb.MAX_CONTENT), default=1500, show_default=True,
              help="Largest entry, in characters; documents are split on headings, paragraphs, sentences.")
@agent_option
@org_option
@json_option
@config_options
def knowledge_import(paths, chunk_size, agents, org_id, as_json, cfg):
    """Import .txt, .md, .rst and .html files (folders: all such files in them). Importing the
    same files again is a no-op; edited files update only their changed parts."""
    from tqdm import tqdm

    from .importer import collect, import_paths
    files = collect(list(paths))

    async def go(store, embedder):
        with tqdm(total=len(files), unit="file", desc="importing", disable=as_json) as bar:
            return await import_paths(store, embedder, await _org_id(store, org_id), files, agent_ids=_agents(agents),
                                      chunk_size=chunk_size, max_items=cfg.knowledge_max_items, progress=bar.update)

    result = run(cfg, go, embedder=True).as_dict()
    if as_json:
        output(result, True)
    else:
        for problem in result["errors"]:
            click.echo(f"skipped {problem}", err=True)
        output({k: v for k, v in result.items() if k != "errors"}, False)
    if result["errors"]:
        raise SystemExit(1)


@knowledge.command("reembed")
@json_option
@config_options
def knowledge_reembed(as_json, cfg):
    """Embed every item again with the configured embedding model (after changing it)."""
    from tqdm import tqdm

    from .reembed import reembed

    async def go(store, embedder):
        total = (await store.fetchone("SELECT count(*) AS c FROM knowledge_items"))["c"]
        with tqdm(total=total, unit="item", desc="re-embedding", disable=as_json) as bar:
            return await reembed(store, embedder, progress=bar.update)

    output(run(cfg, go, embedder=True), as_json)
