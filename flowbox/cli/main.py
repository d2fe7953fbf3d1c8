"""The ``flowbox`` command: the commands each area declares (``Area.commands``)."""

from __future__ import annotations

import click

from .. import __version__
from ..app import AREAS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowbox")
def cli() -> None:
    """flowbox: agents, chats and messaging on a local model, in one SQLite file."""


for _area in AREAS:
    for _command in _area.commands:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="flowbox")
