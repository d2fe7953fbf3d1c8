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
from ..errors import FlowboxError, Problem, StartupError


def config_options(fn=None, *, overrides: tuple[str, ...] = ()):
    """``--config`` and ``--data-dir`` on a command, which is called with the loaded ``cfg`` instead
    of them. ``overrides`` names the command's own options that override settings (``serve --port``)."""
    if fn is None:
        return functools.partial(config_options, overrides=overrides)

    @functools.wraps(fn)
    def wrapper(*args, config_path, data_dir, **kwargs):
        settings = {name: kwargs.pop(name) for name in overrides}
        return fn(*args, cfg=load_config(config_path, data_dir=data_dir, **settings), **kwargs)

    wrapper = click.option("--data-dir", envvar="FLOWBOX_DATA_DIR", default=None, help="Data directory (env FLOWBOX_DATA_DIR).")(wrapper)
    return click.option("--config", "config_path", envvar="FLOWBOX_CONFIG", default=None, type=click.Path(), help="TOML config file.")(wrapper)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
org_option = click.option("--org", "org_id", default=None, help="Org id (default: the default org).")


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
        store = Store(cfg.db_path, readers=1, checkpoints=not cfg.replicate_to)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    check_data_dir(cfg)
    try:
        return asyncio.run(go())
    except Problem as exc:  # the functions the HTTP layer calls: what went wrong, as one line
        for problem in (exc.extra.get("errors") or [])[1:]:  # a flow's further validation problems
            click.echo(f"  {problem['path']}: {problem['message']}", err=True)
        fail(exc.text)
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


def output_secret(record: dict[str, Any], as_json: bool, label: str, field: str, *shown: str) -> None:
    """A record holding a new secret (an API key, a project token): it is printed this once."""
    if as_json:
        output(record, True)
        return
    click.echo(f"{label} (shown once, store it now): {record[field]}")
    if shown:
        click.echo("  ".join(f"{name}: {record[name]}" for name in shown))


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StartupError as exc:
            fail(str(exc))

    return wrapper
