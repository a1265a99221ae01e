"""meterhub-hil's meterhub hooks: the pulse-collector quantity and driver, and ``meterhub bench``.

Everything goes through the public hooks, as any vendor plugin's would. The driver is
imported when a hook asks for it, not when the plugin is loaded.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from meterhub.hookspecs import hookimpl

from .quantities import PULSE_COUNT

if TYPE_CHECKING:
    from meterhub.protocols.dlt645_driver import Dlt645Driver

#: The protocol name that reads a pulse collector's inputs (DL/T 645 with the collector's registers).
COLLECTOR_PROTOCOL = "dlt645-pulse"


def collector_driver() -> Dlt645Driver:
    from meterhub.protocols.dlt645_driver import Dlt645Driver

    from .pulse import driver_items

    return Dlt645Driver(name=COLLECTOR_PROTOCOL, description="DL/T 645-2007 pulse collector inputs (meterhub-hil)",
                        extra_items=driver_items())


@hookimpl
def meterhub_register_quantities(register: Any) -> None:
    register(PULSE_COUNT)


@hookimpl
def meterhub_register_meter_drivers(register: Any) -> None:
    register(collector_driver())


@click.group("bench")
def bench_cmd() -> None:
    """The hardware-in-the-loop bench (meterhub-hil)."""


@bench_cmd.command("check")
@click.argument("bench_file", type=click.Path(dir_okay=False))
@click.option("--virtual/--real", "virtual", default=None, help="Override the bench file's virtual: key.")
@click.option("--json", "as_json", is_flag=True, help="Results as JSON on stdout.")
def check_cmd(bench_file: str, virtual: bool | None, as_json: bool) -> None:
    """List every instrument with its identity and self-test it; exit 1 if any fails."""
    from meterhub.errors import ConfigError

    from .check import check_bench

    try:
        results = check_bench(bench_file, virtual=virtual)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        raise SystemExit(2) from None
    failed = [r for r in results if not r.ok]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        width = max((len(r.name) for r in results), default=4)
        for r in results:
            click.echo(f"{'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.kind:<16} {r.identity}")
            for line in r.details:
                click.echo(f"      {'':<{width}}  {line}")
        click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed", err=True)
    sys.stdout.flush()
    if failed:
        raise SystemExit(1)


@hookimpl
def meterhub_register_commands(cli: Any) -> None:
    cli.add_command(bench_cmd)
