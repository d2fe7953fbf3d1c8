"""``flowbox outbox``: deliveries (callbacks, webhooks), dead letters, retries, signing secrets.
A running server picks up retried deliveries within ``outbox_poll_ms``."""

from __future__ import annotations

import click

from .. import outbox
from .common import config_options, fail, json_option, org_option, output, with_store
from .keys import _org_id

COLUMNS = ["id", "kind", "status", "attempts", "last_status", "last_error", "created_at", "next_attempt_at", "url"]


@click.group("outbox")
def outbox_group() -> None:
    """Inspect and retry outbound deliveries (async chat callbacks, webhooks)."""


def _list(status, org_id, kind, limit, as_json, cfg) -> None:
    rows = with_store(cfg, lambda store: outbox.list_deliveries(store, status, org_id, kind, limit))
    output(rows, as_json, COLUMNS)


def list_options(fn):
    for option in reversed([
        click.option("--org", "org_id", default=None, help="Only this org's deliveries."),
        click.option("--kind", default=None, help="Only this kind, e.g. agent.callback."),
        click.option("--limit", type=click.IntRange(1), default=100, show_default=True),
        json_option,
    ]):
        fn = option(fn)
    return config_options(fn)


@outbox_group.command("list")
@click.option("--status", type=click.Choice(["pending", "delivered", "dead"]), default=None, help="Only deliveries in this state.")
@list_options
def outbox_list(status, org_id, kind, limit, as_json, cfg):
    """Deliveries, newest first."""
    _list(status, org_id, kind, limit, as_json, cfg)


@outbox_group.command("dead")
@list_options
def outbox_dead(org_id, kind, limit, as_json, cfg):
    """Dead letters: deliveries that failed for their whole age limit, or were refused."""
    _list("dead", org_id, kind, limit, as_json, cfg)


@outbox_group.command("show")
@click.argument("delivery_id")
@json_option
@config_options
def outbox_show(delivery_id, as_json, cfg):
    """One delivery, with its body and extra headers."""
    record = with_store(cfg, lambda store: outbox.get_delivery(store, delivery_id))
    if record is None:
        fail(f"no delivery with id {delivery_id}")
    if as_json:
        output(record, True)
    else:
        for key, value in record.items():
            click.echo(f"{key}: {'' if value is None else value}")


@outbox_group.command("retry")
@click.argument("delivery_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Every dead letter.")
@json_option
@config_options
def outbox_retry(delivery_ids, all_dead, as_json, cfg):
    """Attempt dead (or pending) deliveries again now, with a fresh age limit."""
    if not delivery_ids and not all_dead:
        fail("name delivery ids, or pass --all-dead")
    changed = with_store(cfg, lambda store: outbox.retry(store, list(delivery_ids), all_dead))
    missing = sorted(set(delivery_ids) - set(changed))
    if as_json:
        output({"retried": changed, "not_found": missing}, True)
    else:
        click.echo(f"retrying {len(changed)} deliveries" + (f"; not found or already delivered: {', '.join(missing)}" if missing else ""))
    if missing:
        raise SystemExit(1)


@outbox_group.command("secret")
@org_option
@click.option("--rotate", is_flag=True, help="Replace the secret; deliveries from now on are signed with the new one.")
@json_option
@config_options
def outbox_secret(org_id, rotate, as_json, cfg):
    """The org's signing secret: receivers check X-Flowbox-Signature (sha256=HMAC-SHA256 of the body) with it."""

    async def go(store):
        org = await _org_id(store, org_id)
        return {"org_id": org, "secret": await outbox.org_secret(store, org, rotate=rotate)}

    record = with_store(cfg, go)
    if as_json:
        output(record, True)
    else:
        click.echo(record["secret"])
