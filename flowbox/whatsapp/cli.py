"""``flowbox whatsapp``: WhatsApp Cloud API connections (the same functions as the admin endpoints)."""

from __future__ import annotations

import click

from ..cli.common import config_options, fail, json_option, org_option, output, with_store
from ..cli.keys import _org_id
from . import store as wa_store

COLUMNS = ["id", "org_id", "agent_id", "phone_number_id", "access_token", "api_base_url", "api_version", "updated_at"]
SEND_COLUMNS = ["created_at", "agent_id", "recipient", "template_name", "language", "status", "http_status", "message_id", "error"]


@click.group()
def whatsapp() -> None:
    """Connect organisations (or single agents) to the WhatsApp Cloud API."""


@whatsapp.command("connect")
@click.option("--phone-number-id", required=True, help="The WhatsApp Business phone number id.")
@click.option("--token", required=True, envvar="FLOWBOX_WHATSAPP_TOKEN", help="Cloud API access token (env FLOWBOX_WHATSAPP_TOKEN).")
@click.option("--base-url", default=None, help="API base URL (default: the whatsapp_api_base_url setting).")
@click.option("--api-version", default=None, help="API version, e.g. v21.0 (default: the whatsapp_api_version setting).")
@click.option("--agent", "agent_id", default=None, help="Only for this agent (default: every agent of the org).")
@org_option
@json_option
@config_options
def whatsapp_connect(phone_number_id, token, base_url, api_version, agent_id, org_id, as_json, cfg):
    """Create or replace a connection."""
    fields = {"phone_number_id": phone_number_id, "access_token": token, "api_base_url": base_url, "api_version": api_version, "agent_id": agent_id}

    async def go(store):
        return await wa_store.save_connection(store, await _org_id(store, org_id), {k: v for k, v in fields.items() if v is not None})

    output(with_store(cfg, go), as_json, COLUMNS)


@whatsapp.command("list")
@click.option("--org", "org_id", default=None, help="Only this org's connections.")
@json_option
@config_options
def whatsapp_list(org_id, as_json, cfg):
    """Connections (tokens masked)."""
    output(with_store(cfg, lambda store: wa_store.list_connections(store, org_id)), as_json, COLUMNS)


@whatsapp.command("disconnect")
@click.option("--agent", "agent_id", default=None, help="Remove this agent's own connection (default: the org's).")
@org_option
@json_option
@config_options
def whatsapp_disconnect(agent_id, org_id, as_json, cfg):
    """Remove a connection."""

    async def go(store):
        return await wa_store.delete_connection(store, await _org_id(store, org_id), agent_id)

    removed = with_store(cfg, go)
    if as_json:
        output({"removed": removed}, True)
    elif not removed:
        fail("no such connection")
    else:
        click.echo("connection removed")
    if not removed:
        raise SystemExit(1)


@whatsapp.command("sends")
@click.option("--org", "org_id", default=None, help="Only this org's sends.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@json_option
@config_options
def whatsapp_sends(org_id, limit, as_json, cfg):
    """Template sends, newest first."""
    output(with_store(cfg, lambda store: wa_store.list_sends(store, org_id, limit)), as_json, SEND_COLUMNS)
