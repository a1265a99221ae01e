"""``meterhub sim``: simulated meters on pseudo-terminals, served until interrupted."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..model import DEFAULT_STORE
from .common import EXIT_USAGE, Failure, _plugins, _user_errors


@click.group("sim")
def sim_cmd() -> None:
    """Simulated meters on pseudo-terminals, for trying meterhub without hardware."""


@sim_cmd.command("dlt645")
@click.option("--meters", "count", type=click.IntRange(1, 999), default=5, show_default=True)
@click.option("--baudrate", type=int, default=2400, show_default=True)
@click.option("--first-address", default="000000000001", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fault", "faults", multiple=True, metavar="ADDRESS=KIND",
              help="Make a meter misbehave: silence, bad_checksum, noise, truncated, slow, wrong_address, jam.")
def sim_dlt645_cmd(count: int, baudrate: int, first_address: str, seed: int, faults: Sequence[str]) -> None:
    """DL/T 645-2007 meters on a pseudo-terminal; prints the port and runs until interrupted."""
    from ..protocols.dlt645_sim import Fault, start_dlt645_sim

    fault_map: dict[str, Any] = {}
    for spec in faults:
        address, _, kind = spec.partition("=")
        try:
            fault_map[address.strip()] = Fault(kind.strip().lower())
        except ValueError:
            kinds = ", ".join(f.value for f in Fault)
            raise Failure(f"--fault {spec!r}: expected ADDRESS=KIND with KIND one of {kinds}", EXIT_USAGE) from None
    with _UntilInterrupted() as interrupt:
        with _user_errors():
            sim = start_dlt645_sim(count, baudrate=baudrate, faults=fault_map, seed=seed, first_address=first_address)
        try:
            click.echo(sim.port)
            click.echo(f"{count} simulated DL/T 645-2007 meter(s) on {sim.port} at {baudrate} 8E1 "
                       f"(a pseudo-terminal carries no parity: connect with --parity E or N)", err=True)
            for m in sim.devices:
                fault = f"  fault: {m.fault.value}" if m.fault else ""
                click.echo(f"  meter {m.address}{fault}", err=True)
            click.echo(f"try: meterhub read --port {sim.port} --protocol dlt645 --address {sim.devices[0].address} "
                       f"--quantity energy_import", err=True)
            click.echo("Ctrl-C to stop", err=True)
            sys.stdout.flush()
            interrupt.wait()
        finally:
            sim.stop()


class _UntilInterrupted:
    """Ctrl-C or SIGTERM, noted from the moment it is entered (before a port is printed, so a
    caller that stops us as soon as it has read the port is not lost) and waited for.

    The handlers are set explicitly: a program started in the background by a
    non-interactive shell inherits SIGINT ignored, and Ctrl-C must still stop a simulator.
    """

    #: How often the wait looks at the flag: a signal handler cannot wake a sleep that PEP 475 resumes.
    POLL_S = 0.1

    def __init__(self) -> None:
        self.stopped = False
        self._saved: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        self.stopped = True

    def __enter__(self) -> _UntilInterrupted:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved[signum] = signal.signal(signum, self._note)
        return self

    def wait(self) -> None:
        import time

        while not self.stopped:
            time.sleep(self.POLL_S)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)


@sim_cmd.command("bus")
@click.option("--meters", "specs", multiple=True, required=True, metavar="PROTOCOL=N[:KEY=VALUE,...]",
              help="N simulated meters of PROTOCOL (repeat to mix protocols on the one bus), with simulator options: "
                   "dlt645=3, modbus=2:profile=eastron-sdm630, cjt188=2:meter_type=10, mbus=2.")
@click.option("--baudrate", type=int, default=None, help="Put every meter at this rate (default: each protocol's own).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fault", "faults", multiple=True, metavar="[PROTOCOL:]ADDRESS=KIND",
              help="Make a meter misbehave: silence, bad_checksum, noise, truncated, slow, wrong_address, jam.")
@click.option("--site", "site_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a site file that reads every simulated meter (meterhub run FILE --once).")
def sim_bus_cmd(specs: Sequence[str], baudrate: int | None, seed: int, faults: Sequence[str], site_path: str | None) -> None:
    """Meters of any installed simulators on one pseudo-terminal; prints the port, runs until interrupted."""
    from ..simsite import MeterSpec, site_text, start_bus

    plugins = _plugins()
    with _UntilInterrupted() as interrupt:
        try:
            parsed = [MeterSpec.parse(spec) for spec in specs]
            fault_map = dict(_fault_spec(spec) for spec in faults)
            sim = start_bus(plugins.simulators(), parsed, seed=seed, faults=fault_map, baudrate=baudrate)
        except ValueError as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
        try:
            if site_path:  # before the port is printed: whoever waits for the port may read the file at once
                Path(site_path).write_text(site_text({"bus1": sim}, store=DEFAULT_STORE), encoding="utf-8")
            click.echo(sim.port)
            sys.stdout.flush()
            click.echo(f"{len(sim.entries)} simulated meter(s) on {sim.port} (a pseudo-terminal carries no parity)",
                       err=True)
            for entry, dev in zip(sim.entries, sim.bus.devices):
                fault = f"  fault: {dev.fault.value}" if dev.fault else ""
                settings = (f" at {entry['baudrate']} {entry['bytesize']}{entry['parity']}{entry['stopbits']}"
                            if "baudrate" in entry else "")
                click.echo(f"  {entry['protocol']} {entry['address']}{settings}{fault}", err=True)
            if site_path:
                click.echo(f"site file written: {site_path}; try: meterhub run {site_path} --once", err=True)
            click.echo("Ctrl-C to stop", err=True)
            interrupt.wait()
        finally:
            sim.stop()


def _fault_spec(spec: str) -> tuple[str, str]:
    key, sep, kind = spec.rpartition("=")
    if not sep or not key.strip():
        raise ValueError(f"--fault {spec!r}: expected [PROTOCOL:]ADDRESS=KIND")
    return key.strip(), kind.strip()
