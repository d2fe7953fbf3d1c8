"""The ``flowbox`` command. Each area keeps its commands in its own module; they register here."""

from __future__ import annotations

import importlib

import click

from .. import __version__

# Modules with a ``register(cli)`` function adding their commands.
CLI_MODULES = ["flowbox.cli.serve", "flowbox.cli.keys", "flowbox.agents.cli", "flowbox.cli.models", "flowbox.cli.backup", "flowbox.chats.cli", "flowbox.cli.credits", "flowbox.cli.outbox", "flowbox.whatsapp.cli", "flowbox.cli.selfcheck", "flowbox.messaging.cli", "flowbox.knowledge.cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowbox")
def cli() -> None:
    """flowbox: agents, chats and messaging on a local model, in one SQLite file."""


for _name in CLI_MODULES:
    importlib.import_module(_name).register(cli)


def main() -> None:
    cli(prog_name="flowbox")
