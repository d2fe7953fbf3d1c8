"""``flowbox backup`` and ``flowbox restore``: work while the server runs."""

from __future__ import annotations

from pathlib import Path

import click

from .. import backup as backup_mod
from .common import check_data_dir, config_options, handle_errors, json_option, output


@click.command()
@click.argument("path", type=click.Path())
@json_option
@config_options
@handle_errors
def backup(path, as_json, cfg):
    """Write a consistent copy of the live database to PATH (a file, or a folder)."""
    output(backup_mod.backup(cfg.db_path, Path(path)), as_json)


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@json_option
@config_options
@handle_errors
def restore(path, as_json, cfg):
    """Check the backup at PATH and bring it back (the current database is kept beside it)."""
    check_data_dir(cfg)
    output(backup_mod.restore(cfg.db_path, Path(path)), as_json)
