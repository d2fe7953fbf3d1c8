"""``flowbox agents``: the same functions the admin HTTP endpoints call."""

from __future__ import annotations

import click

from ..cli.common import config_options, json_option, org_option, output, with_store
from ..cli.keys import _org_id
from ..models import ModelRegistry
from . import store as agents_store

COLUMNS = ["id", "name", "model", "tools", "temperature", "max_tokens"]


def _fields(name, instructions, description, model, temperature, max_tokens, tools) -> dict:
    fields = {"name": name, "instructions": instructions, "description": description, "model": model,
              "temperature": temperature, "max_tokens": max_tokens}
    fields = {k: v for k, v in fields.items() if v is not None}
    if tools is not None:
        fields["tools"] = [t for t in tools.split(",") if t]
    return fields


def agent_options(fn):
    for option in reversed([
        click.option("--instructions", default=None, help="System instructions."),
        click.option("--description", default=None, help="A short description."),
        click.option("--model", default=None, help="'local', a model added with 'flowbox models add', or a configured remote model's name."),
        click.option("--temperature", type=float, default=None),
        click.option("--max-tokens", type=int, default=None),
        click.option("--tools", default=None, help="Comma-separated tool names, e.g. calculator,datetime."),
        json_option,
    ]):
        fn = option(fn)
    return config_options(fn)


@click.group()
def agents() -> None:
    """Create, list, update and delete agents."""


@agents.command("create")
@click.argument("name")
@org_option
@agent_options
def agents_create(name, org_id, instructions, description, model, temperature, max_tokens, tools, as_json, cfg):
    """Create an agent."""
    fields = _fields(name, instructions, description, model, temperature, max_tokens, tools)

    async def go(store):
        return await agents_store.create_agent(store, await _org_id(store, org_id), fields, ModelRegistry(cfg).names())

    output(with_store(cfg, go), as_json, COLUMNS)


@agents.command("list")
@org_option
@json_option
@config_options
def agents_list(org_id, as_json, cfg):
    """List agents."""

    async def go(store):
        return await agents_store.list_agents(store, await _org_id(store, org_id))

    output(with_store(cfg, go), as_json, COLUMNS)


@agents.command("update")
@click.argument("agent_id")
@click.option("--name", default=None)
@agent_options
def agents_update(agent_id, name, instructions, description, model, temperature, max_tokens, tools, as_json, cfg):
    """Change an agent's fields."""
    fields = _fields(name, instructions, description, model, temperature, max_tokens, tools)

    async def go(store):
        agent = await agents_store.get_agent(store, agent_id)
        if agent is None:
            raise LookupError(f"no agent with id {agent_id}")
        return await agents_store.update_agent(store, agent["org_id"], agent_id, fields, ModelRegistry(cfg).names())

    output(with_store(cfg, go), as_json, COLUMNS)


@agents.command("delete")
@click.argument("agent_id")
@json_option
@config_options
def agents_delete(agent_id, as_json, cfg):
    """Delete an agent and its threads."""

    async def go(store):
        agent = await agents_store.get_agent(store, agent_id)
        if agent is None:
            raise LookupError(f"no agent with id {agent_id}")
        return await agents_store.delete_agent(store, agent["org_id"], agent_id)

    deleted = with_store(cfg, go)
    output({"id": agent_id, "deleted": deleted}, as_json)
