"""``flowbox chatflows`` (flows of agents for the Chats API) and ``flowbox chats``: the same
functions the HTTP endpoints call. Definitions are JSON files (``-`` reads stdin)."""

from __future__ import annotations

import json

import click

from ..cli.common import config_options, fail, json_option, org_option, output, with_store
from ..cli.keys import _org_id
from ..models import ModelRegistry
from . import flows as flows_mod
from . import store as chats_store

FLOW_COLUMNS = ["id", "name", "speaker_selection", "max_rounds", "agents"]
CHAT_COLUMNS = ["id", "name", "from_flow", "status", "round", "error", "updated_at"]


def _read_json(file) -> object:
    try:
        return json.load(file)
    except json.JSONDecodeError as exc:
        fail(f"{file.name} is not valid JSON: {exc}")


def _table(flow: dict) -> dict:
    return {**flow, "agents": ",".join(a["name"] for a in flow["agents"])}


def _show(data, as_json: bool, columns: list[str]) -> None:
    if as_json:
        output(data, True)
    else:
        output([_table(f) for f in data] if isinstance(data, list) else _table(data), False, columns)




@click.group()
def chatflows() -> None:
    """Flows of agents (group chats) that Chats API sessions start from."""


@chatflows.command("list")
@org_option
@json_option
@config_options
def flows_list(org_id, as_json, cfg):
    """List flows."""

    async def go(store):
        return await flows_mod.list_flows(store, await _org_id(store, org_id))

    _show(with_store(cfg, go), as_json, FLOW_COLUMNS)


@chatflows.command("show")
@click.argument("flow_id")
@config_options
def flows_show(flow_id, cfg):
    """Print a flow's definition (JSON)."""
    flow = with_store(cfg, lambda store: flows_mod.require_flow(store, None, flow_id))
    output({k: v for k, v in flow.items() if k != "org_id"}, True)


def _create(cfg, org_id, document) -> dict:
    async def go(store):
        fields = flows_mod.import_fields(document)
        return await flows_mod.create_flow(store, await _org_id(store, org_id), fields, ModelRegistry(cfg).names())

    return with_store(cfg, go)


@chatflows.command("create")
@click.argument("file", type=click.File("r"))
@click.option("--name", default=None, help="Override the definition's name.")
@org_option
@json_option
@config_options
def flows_create(file, name, org_id, as_json, cfg):
    """Create a flow from a JSON definition (name, agents, speaker_selection, max_rounds, ...)."""
    fields = _read_json(file)
    if name is not None and isinstance(fields, dict):
        fields["name"] = name
    _show(_create(cfg, org_id, fields), as_json, FLOW_COLUMNS)


@chatflows.command("update")
@click.argument("flow_id")
@click.argument("file", type=click.File("r"))
@json_option
@config_options
def flows_update(flow_id, file, as_json, cfg):
    """Change a flow: the JSON file's top-level fields replace the flow's."""
    fields = _read_json(file)
    flow = with_store(cfg, lambda store: flows_mod.update_flow(store, None, flow_id, fields, ModelRegistry(cfg).names()))
    _show(flow, as_json, FLOW_COLUMNS)


@chatflows.command("delete")
@click.argument("flow_id")
@json_option
@config_options
def flows_delete(flow_id, as_json, cfg):
    """Delete a flow (chats started from it keep running on their copy)."""
    with_store(cfg, lambda store: flows_mod.delete_flow(store, None, flow_id))
    output({"id": flow_id, "deleted": True}, as_json)


@chatflows.command("export")
@click.argument("flow_id")
@click.option("-o", "--output", "out", type=click.File("w"), default="-", help="Write to this file (default stdout).")
@config_options
def flows_export(flow_id, out, cfg):
    """Write a flow as a portable JSON document (for `flowbox chatflows import`)."""
    flow = with_store(cfg, lambda store: flows_mod.require_flow(store, None, flow_id))
    out.write(json.dumps(flows_mod.export_document(flow), indent=2) + "\n")


@chatflows.command("import")
@click.argument("file", type=click.File("r"))
@org_option
@json_option
@config_options
def flows_import(file, org_id, as_json, cfg):
    """Create a flow from an exported document (or a bare definition)."""
    _show(_create(cfg, org_id, _read_json(file)), as_json, FLOW_COLUMNS)


@click.group()
def chats() -> None:
    """Chat sessions of the Chats API (start and steer them over HTTP)."""


@chats.command("list")
@click.option("--org", "org_id", default=None, help="Only this org's chats.")
@json_option
@config_options
def chats_list(org_id, as_json, cfg):
    """List chats and their status."""
    output(with_store(cfg, lambda store: chats_store.list_chats(store, org_id)), as_json, CHAT_COLUMNS)


@chats.command("messages")
@click.argument("chat_id")
@json_option
@config_options
def chats_messages(chat_id, as_json, cfg):
    """A chat's messages in order."""

    async def go(store):
        if await chats_store.get_chat(store, chat_id) is None:
            raise LookupError(f"no chat with id {chat_id}")
        return [chats_store.message_out(m) for m in await chats_store.messages_after(store, chat_id)]

    output(with_store(cfg, go), as_json, ["id", "sender", "type", "content"])
