"""``meterhub demo``: simulated meters read over the real RS485 path, stored and printed."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import click

from .common import DEFAULT_TRANSPORT, EXIT_USAGE, Failure, _plugins, _transport, _user_errors
from .report import _print_report
from .rounds import _run_once

#: The demo's meters: bus1 carries DL/T 645 meters only; bus2 mixes every other installed
#: simulator with DL/T 645 meters, one noisy and one dead.
DEMO_MIXED = {"modbus": "profile=eastron-sdm630", "cjt188": "meter_type=10", "mbus": ""}


@click.command("demo")
@click.option("--meters", "count", type=click.IntRange(1, 64), default=3, show_default=True, help="Meters per bus.")
@click.option("--db", default="meterhub.db", show_default=True, type=click.Path(dir_okay=False), help="SQLite file to store the readings in.")
@click.option("--rounds", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between rounds (with --rounds > 1).")
@click.option("--faults/--no-faults", default=True, show_default=True,
              help="Put a noisy and a silent meter on the second bus to show how failures are handled.")
@click.option("--services", is_flag=True,
              help="Show the data services instead: a month of freezes turned into a bill, a prepaid meter cut off "
                   "and restored, an alarm for each injected fault, a time sync (about half a minute).")
def demo_cmd(count: int, db: str, rounds: int, interval: float, faults: bool, services: bool) -> None:
    """Read simulated meters over the real RS485 path, store and print the readings."""
    if services:
        _services_demo(db)
        return
    from ..simsite import MeterSpec, site_text, start_bus

    plugins = _plugins()
    _transport(plugins, DEFAULT_TRANSPORT)
    simulators = plugins.simulators()
    second_first = f"{count + 1:012d}"
    mixed = [MeterSpec.parse(f"{p}=1:{opts}") for p, opts in DEMO_MIXED.items() if p in simulators]
    fault_map: dict[str, str] = {}
    if faults and count > 1:
        fault_map = {f"dlt645:{second_first}": "noise", f"dlt645:{2 * count:012d}": "silence"}
    buses: dict[str, Any] = {}
    try:
        try:
            buses["bus1"] = start_bus(simulators, [MeterSpec("dlt645", count)], seed=1)
            buses["bus2"] = start_bus(simulators, [MeterSpec("dlt645", count, {"first_address": second_first}), *mixed],
                                      seed=2, faults=fault_map)
        except ValueError as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
        site_yaml = site_text(buses, store=f"sqlite:///{os.path.abspath(db)}", interval=f"{interval}s")
        described = ", ".join(f"{b.port} ({_protocol_counts(b.entries)})" for b in buses.values())
        click.echo(f"simulated meters: {described}; storing in {db}", err=True)
        for address, fault in fault_map.items():
            click.echo(f"  meter {address} has fault {fault!r}", err=True)
        from ..config import parse_site

        with _user_errors():
            site = parse_site(site_yaml, filename="<demo>", drivers=plugins.meter_drivers(), transports=plugins.transports())
        report = None
        for i in range(rounds):
            if i:
                import time

                time.sleep(interval)
            report = _run_once(site, plugins).report
        assert report is not None
        _print_report(report, site)
        click.echo(f"readings stored in {db}; try: meterhub export --db {db} --format csv", err=True)
    finally:
        for bus in buses.values():
            bus.stop()


def _protocol_counts(entries: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["protocol"]] = counts.get(entry["protocol"], 0) + 1
    return ", ".join(f"{n} {p}" for p, n in counts.items())


def _services_demo(db: str) -> None:
    """``meterhub demo --services``: see :mod:`meterhub.simservices`."""
    from ..simservices import HOME, PREPAID, alarm_lines, services_demo

    plugins = _plugins()
    _transport(plugins, DEFAULT_TRANSPORT)
    click.echo(f"simulated site: 6 DL/T 645 meters and a CJ/T 188 water meter on one bus; storing in {db}", err=True)
    with _user_errors():
        result = services_demo(db, plugins=plugins, progress=lambda text: click.echo(text, err=True))
    for step in result.steps:
        click.echo(f"\n{step.title}")
        click.echo("\n".join(alarm_lines(step.events)) or "  (nothing to report)")
        click.echo(f"  prepaid meter {PREPAID}: relay {'open (supply cut)' if step.prepaid_relay_open else 'closed'}")
    click.echo("")
    if result.bill is not None:
        click.echo(result.bill.render())
    else:
        click.echo(f"no bill for {result.period}: {result.bill_error}")
    click.echo(f"\ntry: meterhub bill --db {db} --meter {HOME} --period {result.period}\n"
               f"     meterhub events --db {db} --severity warning\n"
               f"     meterhub prepay ledger --db {db} --meter {PREPAID}\n"
               f"     meterhub commands --db {db}", err=True)
