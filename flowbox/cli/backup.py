"""``flowbox backup`` and ``flowbox restore`` (from a backup or a replica): work while the server runs."""

from __future__ import annotations

from pathlib import Path

import click

from .. import backup as backup_mod
from .. import replication
from .common import check_data_dir, config_options, fail, handle_errors, json_option, output


@click.command()
@click.argument("path", type=click.Path())
@json_option
@config_options
@handle_errors
def backup(path, as_json, cfg):
    """Write a consistent copy of the live database to PATH (a file, or a folder)."""
    output(backup_mod.backup(cfg.db_path, Path(path)), as_json)


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--from", "replica", metavar="URL", help="Restore the newest state of a replica (file:///path or s3://bucket/path).")
@json_option
@config_options
@handle_errors
def restore(path, replica, as_json, cfg):
    """Check the backup at PATH, or the replica at --from URL, and bring it back (the current database is
    kept beside it)."""
    if bool(path) == bool(replica):
        fail("give a backup file or --from URL (one of them)")
    check_data_dir(cfg)
    if replica:
        output(replication.restore_from(cfg, replica), as_json)
    else:
        output(backup_mod.restore(cfg.db_path, Path(path)), as_json)
