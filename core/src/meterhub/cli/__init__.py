"""The ``meterhub`` command line (click): the top-level group, one module per command group.

Machine-readable output (``--json``) goes to stdout alone; progress, warnings and errors
go to stderr. Every expected failure (bad config, unknown protocol, a port that does not
exist, a meter that does not answer) is one line on stderr and a non-zero exit status,
never a traceback.

The built-in commands are imported only when one is run (``meterhub --help`` lists them
from :data:`BUILTIN_COMMANDS`), and plugin commands (``meterhub_register_commands``) are
added only when a listing or a name that is not built in needs them: a command line that
starts fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import click

from ..errors import MeterhubError
from ..plugins import get_plugins
from .common import (
    EXIT_CHANNEL_DOWN,
    EXIT_FAILED,
    EXIT_USAGE,
    Failure,
    _setup_logging,
    profile_settings,
)

__all__ = [
    "EXIT_CHANNEL_DOWN",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "Failure",
    "MeterFilter",
    "ScanProgress",
    "_csv_cell",
    "_print_report",
    "_round_line",
    "cli",
    "main",
    "parse_since",
    "profile_settings",
]

#: The built-in commands: name -> (module under ``meterhub.cli``, attribute, short help as
#: ``meterhub --help`` lists it). The short help must be the command's own (tests check it).
BUILTIN_COMMANDS: dict[str, tuple[str, str, str]] = {
    "plugins": ("plugins", "plugins_cmd", "List every plugin with its distribution, version and hooks."),
    "read": ("read", "read_cmd", "Read quantities of one meter, once."),
    "scan": ("scan", "scan_cmd", "Find the addresses of the meters answering on a bus."),
    "run": ("run", "run_cmd", "Run the concentrator on a site file."),
    "export": ("export", "export_cmd", "Export readings from the store as CSV or JSON."),
    "control": ("control", "control_cmd",
                "Trip (relay-off) or close (relay-on) a meter's relay, with its credentials from the secret store; "
                "close or open a water or gas meter's valve (valve-close, valve-open)."),
    "commands": ("commands", "commands_cmd",
                 "The audited command log: every command with its origin, issuer, state and answer."),
    "bill": ("bill", "bill_cmd", "A meter's bill for a month, from its frozen readings and its tariff, every line explained."),
    "events": ("events", "events_cmd", "Stored events and alarms: what happened to which meter, when, and how bad."),
    "prepay": ("prepay", "prepay_cmd", "Prepaid meters: balances, recharges and the ledger behind them."),
    "sim": ("sim", "sim_cmd", "Simulated meters on pseudo-terminals, for trying meterhub without hardware."),
    "demo": ("demo", "demo_cmd", "Read simulated meters over the real RS485 path, store and print the readings."),
    "head-end": ("headend", "headend_cmd", "The master station: accepts concentrators (Q/GDW 1376.1 over TCP), checks "
                 "each login against the allowlist, stores their reports and scheduled reads, and carries out the "
                 "requests and commands queued for the terminals it holds."),
}

#: Names once imported here, now imported on first use (``from meterhub.cli import ...``).
_LAZY_NAMES = {
    "MeterFilter": "export",
    "_csv_cell": "export",
    "parse_since": "export",
    "_print_report": "report",
    "_round_line": "report",
    "ScanProgress": "scan",
}


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


class MeterhubGroup(click.Group):
    """The top-level group: built-in commands imported when run, plugin commands added
    (through ``meterhub_register_commands``, which calls :meth:`add_command`) when needed."""

    def __init__(self, *args: Any, builtins: dict[str, tuple[str, str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.builtins = builtins
        self._plugin_commands_added = False

    def add_plugin_commands(self) -> None:
        """Let every plugin add its commands (once); a broken plugin in strict mode is an
        error of the whole command line."""
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        try:
            get_plugins().call_each("meterhub_register_commands", cli=self)
        except MeterhubError as exc:  # strict mode: a broken plugin is fatal
            raise Failure(str(exc), EXIT_USAGE) from None

    def _builtin(self, name: str) -> click.Command:
        module, attr, _ = self.builtins[name]
        command: click.Command = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        self.add_command(command, name)
        return command

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in self.builtins:
            return self._builtin(cmd_name)
        self.add_plugin_commands()
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:  # click suggests only from the commands imported
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=self.list_commands(ctx),
                                                 ctx=ctx) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.add_plugin_commands()
        return sorted(set(self.commands) | set(self.builtins))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As :meth:`click.Group.format_commands`, with the short help of a built-in
        command not imported yet taken from :data:`BUILTIN_COMMANDS`."""
        commands = []
        for name in self.list_commands(ctx):
            cmd = self.commands[name] if name in self.commands else click.Command(name, help=self.builtins[name][2])
            if not cmd.hidden:
                commands.append((name, cmd))
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in commands])


@click.group(cls=MeterhubGroup, builtins=BUILTIN_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meterhub")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """meterhub: remote centralized meter reading."""
    _setup_logging(verbose)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``meterhub`` script: loads the plugins, then runs."""
    try:
        get_plugins()
    except MeterhubError as exc:  # strict mode: a broken plugin is fatal
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    cli.main(args=list(argv) if argv is not None else None, prog_name="meterhub")
