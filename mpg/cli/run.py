"""``mpg run``: the gateway service in the foreground."""

from __future__ import annotations

import click

from mpg.cli import context
from mpg.gateway import runner


@click.command("run")
@click.pass_obj
def run(obj: context.CliContext) -> int:
    """Run the gateway: send Outbox rows, fetch into Inbox, until SIGTERM or Ctrl-C.

    The message in hand is finished before the process exits.
    """
    return runner.run(obj.load("gateway"))
