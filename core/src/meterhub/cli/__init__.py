"""The ``meterhub`` command line (click): the top-level group, one module per command group.

Machine-readable output (``--json``) goes to stdout alone; progress, warnings and errors
go to stderr. Every expected failure (bad config, unknown protocol, a port that does not
exist, a meter that does not answer) is one line on stderr and a non-zero exit status,
never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from ..errors import MeterhubError
from ..plugins import get_plugins
from .commands import commands_cmd
from .common import (
    EXIT_CHANNEL_DOWN,
    EXIT_FAILED,
    EXIT_USAGE,
    Failure,
    _setup_logging,
    profile_settings,
)
from .demo import demo_cmd
from .export import MeterFilter, _csv_cell, export_cmd, parse_since
from .plugins import plugins_cmd
from .read import read_cmd
from .report import _print_report, _round_line
from .run import run_cmd
from .scan import ScanProgress, scan_cmd
from .sim import sim_cmd

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meterhub")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """meterhub: remote centralized meter reading."""
    _setup_logging(verbose)


for _command in (plugins_cmd, read_cmd, scan_cmd, run_cmd, export_cmd, commands_cmd, sim_cmd, demo_cmd):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``meterhub`` script: adds plugin subcommands, then runs."""
    try:
        plugins = get_plugins()
        plugins.call_each("meterhub_register_commands", cli=cli)
    except MeterhubError as exc:  # strict mode: a broken plugin is fatal
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    cli.main(args=list(argv) if argv is not None else None, prog_name="meterhub")
