"""``flowbox keys`` and ``flowbox orgs``: API keys are shown once, at creation."""

from __future__ import annotations

import click

from .. import orgs
from .common import config_options, json_option, org_option, output, output_secret, with_store


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


async def _org_id(store, org_id: str | None) -> str:
    if org_id:
        if await orgs.get_org(store, org_id) is None:
            raise LookupError(f"no org with id {org_id}")
        return org_id
    org, _ = await orgs.ensure_default_org(store, with_key=False)
    return org["id"]


@keys.command("create")
@click.option("--name", default="cli", help="A label for the key.")
@org_option
@json_option
@config_options
def keys_create(name, org_id, as_json, cfg):
    """Create a key. It is printed once and never again."""

    async def go(store):
        key, record = await orgs.create_key(store, await _org_id(store, org_id), name)
        return {**record, "key": key}

    output_secret(with_store(cfg, go), as_json, "API key", "key", "id", "org_id", "name")


@keys.command("list")
@click.option("--org", "org_id", default=None, help="Only this org's keys.")
@json_option
@config_options
def keys_list(org_id, as_json, cfg):
    """List keys (their prefixes, never the keys)."""
    rows = with_store(cfg, lambda store: orgs.list_keys(store, org_id))
    output(rows, as_json, ["id", "org_id", "name", "prefix", "created_at", "revoked_at"])


@keys.command("revoke")
@click.argument("key_id")
@json_option
@config_options
def keys_revoke(key_id, as_json, cfg):
    """Revoke a key by its id: it stops working at once."""
    revoked = with_store(cfg, lambda store: orgs.revoke_key(store, key_id))
    if as_json:
        output({"id": key_id, "revoked": revoked}, True)
    elif revoked:
        click.echo(f"revoked {key_id}")
    else:
        raise click.ClickException(f"no active key with id {key_id}")
    if not revoked:
        raise SystemExit(1)


@click.group("orgs")
def orgs_group() -> None:
    """Create and list organisations."""


@orgs_group.command("create")
@click.argument("name")
@json_option
@config_options
def orgs_create(name, as_json, cfg):
    """Create an org with a first API key (printed once)."""

    async def go(store):
        org = await orgs.create_org(store, name)
        key, _ = await orgs.create_key(store, org["id"], "first key")
        return {**org, "key": key}

    record = with_store(cfg, go)
    if as_json:
        output(record, True)
    else:
        click.echo(f"org {record['id']} ({name}); API key (shown once): {record['key']}")


@orgs_group.command("list")
@json_option
@config_options
def orgs_list(as_json, cfg):
    """List orgs."""
    output(with_store(cfg, orgs.list_orgs), as_json, ["id", "name", "credits", "created_at"])
