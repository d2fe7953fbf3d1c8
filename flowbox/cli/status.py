"""``flowbox status``: the data dir's facts, and its running server's (flowbox/status.py)."""

from __future__ import annotations

from typing import Any

import click

from .. import status as status_mod
from .common import config_options, handle_errors, json_option, output


def _lines(data: Any, prefix: str = "") -> list[str]:
    """Nested facts as ``a.b: value`` lines."""
    if isinstance(data, dict):
        return [line for key, value in data.items() for line in _lines(value, f"{prefix}{key}.")]
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return [line for i, value in enumerate(data) for line in _lines(value, f"{prefix}{i}.")]
    return [f"{prefix.rstrip('.')}: {'-' if data is None else data}"]


@click.command()
@json_option
@config_options
@handle_errors
def status(as_json, cfg):
    """Show the version, uptime, models, queue, disk use, backups and replication of a data dir's flowbox."""
    facts = status_mod.status(cfg)
    if as_json:
        output(facts, True)
    else:
        click.echo("\n".join(_lines(facts)))
