"""``mpg [--config FILE] [--version] COMMAND``: the entry point of the console script.

Commands are imported only when they run (``LazyGroup``): ``mpg status`` does not pay
for importing the HTTP server, and ``mpg --help`` lists every command. :func:`main`
turns any exception into one ``mpg: error: ...`` line on standard error and the exit
code of :mod:`mpg.exitcodes`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Final

import click

import mpg
from mpg import errors, exitcodes

#: command name -> ("module:attribute" of its click command, its one-line help).
#: The help is here so that ``mpg --help`` lists every command without importing any
#: (importing them all took most of its time; docs/benchmarks.md).
COMMANDS: Final = {
    "init-db": ("mpg.cli.db:init_db", "Create the Outbox, Inbox, attachment and history tables."),
    "run": ("mpg.cli.run:run", "Run the gateway: send Outbox rows, fetch into Inbox."),
    "server": ("mpg.cli.server:server", "The push server: run it, or manage it and its accounts."),
    "send": ("mpg.cli.send:send", "Insert one Outbox row (State 10) and print its TxMessageId."),
    "status": ("mpg.cli.status:status", "Health, counts per Outbox state, stuck rows, Inbox."),
    "tail": ("mpg.cli.tail:tail", "Follow state transitions live (Ctrl-C stops)."),
    "history": ("mpg.cli.history:history", "One message's timeline, gateway and server."),
    "void": ("mpg.cli.operate:void", "Void messages not yet sent; recall those already sent."),
    "retry": ("mpg.cli.operate:retry", "Requeue failed (99) or timed-out (97) rows to 10."),
    "service": ("mpg.cli.service:service", "Install and control MPG as a system service."),
    "inbox": ("mpg.cli.inbox:inbox", "Messages the gateway stored in the Inbox table."),
    "attachment": ("mpg.cli.attachment:attachment", "Inbox attachments."),
    "content": ("mpg.cli.content:content_group", "Build and parse Content documents."),
    "device": ("mpg.cli.device:device", "The reference phone agent: register, fetch, read, reply."),
    "demo": ("mpg.cli.demo:demo", "Run a server and two gateways here and send a round trip."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported from :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command, in the order of :data:`COMMANDS`."""
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the command, or None for an unknown name."""
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute = entry[0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{entry[0]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``mpg --help``, from :data:`COMMANDS` (nothing imported)."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML configuration file (default: $MPG_CONFIG, else ./mpg.toml if present).",
)
@click.version_option(mpg.__version__, prog_name="mpg")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """MPG: the database mailbox gateway (`run`) and its push server (`server`)."""
    from mpg.cli import context  # here: --help and --version need none of its imports

    obj = context.CliContext(config_path)
    ctx.obj = obj
    ctx.call_on_close(obj.close)


def _fail(message: str) -> None:
    click.echo(f"mpg: error: {message}", err=True)


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code instead of exiting."""
    try:
        result = cli.main(args=argv, prog_name="mpg", standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        return exitcodes.USAGE
    except click.ClickException as exc:
        _fail(exc.format_message())
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        # Ctrl-C is how `tail` and friends are meant to stop: no error line, just the code.
        return exitcodes.INTERRUPTED
    except errors.CommandError as exc:
        _fail(exc.message)
        return exc.code
    except errors.MpgError as exc:
        _fail(str(exc))
        return exitcodes.for_exception(exc)
    except Exception as exc:
        # Driver errors that escaped the storage boundary still get a code and a line;
        # anything else is a bug, and its traceback is what a developer needs.
        code = exitcodes.for_exception(exc)
        if code == exitcodes.FAILURE:
            raise
        _fail(f"{type(exc).__name__}: {exc}")
        return code
    return result if isinstance(result, int) else exitcodes.OK


def main() -> None:
    """Console script ``mpg``."""
    sys.exit(run_cli())


if __name__ == "__main__":
    main()
