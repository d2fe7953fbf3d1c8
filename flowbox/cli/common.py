"""What every CLI command shares: config loading, opening the store, JSON or table output."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from typing import Any, Awaitable, Callable

import click

from .. import config as config_mod
from ..db import Store
from ..errors import FlowboxError, StartupError


def config_options(fn):
    """--config and --data-dir, on every command."""
    fn = click.option("--data-dir", envvar="FLOWBOX_DATA_DIR", default=None, help="Data directory (env FLOWBOX_DATA_DIR).")(fn)
    fn = click.option("--config", "config_path", envvar="FLOWBOX_CONFIG", default=None, type=click.Path(), help="TOML config file.")(fn)
    return fn


def load_config(config_path: str | None, **overrides: Any):
    try:
        return config_mod.load(config_path).replace(**overrides)
    except config_mod.ConfigError as exc:
        fail(f"invalid config: {exc}")


def fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def check_data_dir(cfg) -> None:
    path = cfg.data_path
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        fail(f"data dir {path} is not writable ({exc.strerror}); choose another with --data-dir")


def with_store(cfg, fn: Callable[[Store], Awaitable[Any]]) -> Any:
    """Runs ``fn(store)`` on an open store; flowbox errors become one-line messages."""

    async def go():
        store = Store(cfg.db_path, readers=1)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    check_data_dir(cfg)
    try:
        return asyncio.run(go())
    except (FlowboxError, LookupError) as exc:
        fail(str(exc).strip("'\""))


def output(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    if not rows:
        click.echo("(none)")
        return
    columns = columns or list(rows[0].keys())
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row.get(c, "") if row.get(c) is not None else "").ljust(widths[c]) for c in columns))


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StartupError as exc:
            fail(str(exc))

    return wrapper
