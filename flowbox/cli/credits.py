"""``flowbox credits``: an org's credit balance (unlimited until set)."""

from __future__ import annotations

import click

from .. import usage
from .common import config_options, fail, json_option, org_option, output, with_store
from .keys import _org_id

COLUMNS = ["org_id", "name", "credits", "used_credits"]


@click.group()
def credits() -> None:
    """Show and set organisations' credit balances."""


def _show(records: dict | list[dict], as_json: bool) -> None:
    if not as_json:
        rows = records if isinstance(records, list) else [records]
        records = [{**r, "credits": "unlimited" if r["unlimited"] else r["credits"]} for r in rows]
    output(records, as_json, COLUMNS)


@credits.command("show")
@org_option
@click.option("--all", "all_orgs", is_flag=True, help="Every org.")
@json_option
@config_options
def credits_show(org_id, all_orgs, as_json, cfg):
    """An org's balance ("unlimited" until set) and the credits it has used."""

    async def go(store):
        if all_orgs:
            return [await usage.balance(store, row["id"]) for row in await store.fetchall("SELECT id FROM orgs ORDER BY created_at")]
        return await usage.balance(store, await _org_id(store, org_id))

    _show(with_store(cfg, go), as_json)


@credits.command("set", context_settings={"ignore_unknown_options": True})  # AMOUNT may be negative with --add
@click.argument("amount")
@org_option
@click.option("--add", is_flag=True, help="Add AMOUNT (may be negative) to the balance instead of setting it.")
@json_option
@config_options
def credits_set(amount, org_id, add, as_json, cfg):
    """Set the balance to AMOUNT credits, or to "unlimited". At 0, chats answer 402."""
    if amount.lower() == "unlimited":
        if add:
            fail("--add needs a number")
        value = None
    else:
        try:
            value = float(amount)
        except ValueError:
            fail(f"AMOUNT must be a number or 'unlimited', got {amount!r}")

    async def go(store):
        try:
            return await usage.set_credits(store, await _org_id(store, org_id), value, add=add)
        except ValueError as exc:
            fail(str(exc))

    _show(with_store(cfg, go), as_json)
