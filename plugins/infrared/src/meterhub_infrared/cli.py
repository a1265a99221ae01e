"""``meterhub ir``: the field technician's optical-probe tools (meterhub-infrared)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import click
from meterhub import jsonout
from meterhub.errors import MeterhubError
from meterhub.model import ChannelConfig, Meter

from . import iec62056_21 as iec


@click.group("ir")
def ir_cmd() -> None:
    """Optical (infrared) port: a meter's IEC 62056-21 readout, and a simulated optical meter."""


def _progress() -> Any:
    """Progress lines on stderr, on a terminal only (the 300 Bd sign-on takes a while)."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def say(text: str) -> None:
        click.echo(f"[{time.monotonic() - started:5.1f} s] {text}", err=True)

    return say


async def _readout(port: str, address: str, options: dict[str, Any], echo: str) -> tuple[Any, Any]:
    from .driver import Iec62056Driver

    driver = Iec62056Driver()
    address = driver.normalize_address(address)
    meter = Meter(address, driver.name, "ir", options=options)
    problems = driver.validate_meter(meter)
    if problems:
        raise click.UsageError("; ".join(f"{key}: {message}" for key, message in problems))
    async with _probe(port, echo) as channel:
        return await driver.readout(channel.towards(meter), meter, driver.transaction_timeout(iec.SIGN_ON_SETTINGS),
                                    progress=_progress())


@contextlib.asynccontextmanager
async def _probe(port: str, echo: str) -> AsyncIterator[Any]:
    """The optical probe on ``port`` as an open channel, closed afterwards."""
    from .transport import InfraredTransport

    channel = InfraredTransport().create_channel(ChannelConfig("ir", "infrared", port, iec.SIGN_ON_SETTINGS, {"echo": echo}))
    await channel.open()
    try:
        yield channel
    finally:
        await channel.close()


def dataset_to_dict(dataset: Any) -> dict[str, Any]:
    """A data set as ``ir readout --json`` prints it: ``quantity`` (the OBIS code, or the
    meter's own address where it is none), ``value`` (exact, a number where it is one),
    ``unit``, and ``timestamp`` where the meter gives one."""
    try:
        value: Any = dataset.decimal()
    except ValueError:
        value = dataset.value
    out: dict[str, Any] = {"quantity": dataset.obis() or dataset.address, "value": value, "unit": dataset.unit}
    stamp = dataset.timestamp()
    if stamp is not None:
        out["timestamp"] = stamp
    return out


@ir_cmd.command("readout")
@click.option("--port", required=True, help="The optical probe's serial port (device path or pyserial URL).")
@click.option("--address", default="", help="The meter's device address for the sign-on (default: none, the meter in front of the probe).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of {quantity, value, unit[, timestamp]} on stdout.")
@click.option("--max-baudrate", type=click.Choice([str(r) for r in sorted(set(iec.MODE_C_BAUD.values()))]), default=None,
              help="The highest readout rate to accept (a probe that cannot go faster).")
@click.option("--wake-up", is_flag=True, help="Wake a battery meter first (NUL characters at 300 Bd).")
@click.option("--echo", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Whether the probe hears its own transmission (auto: learn it).")
@click.option("--bcc", type=click.Choice(["xor", "sum"]), default="xor", show_default=True,
              help="The block check: xor (the standard) or sum (meters that add instead).")
def readout_cmd(port: str, address: str, as_json: bool, max_baudrate: str | None, wake_up: bool, echo: str,
                bcc: str) -> None:
    """Sign on at 300 Bd and print the meter's whole data readout (mode A, B or C)."""
    options: dict[str, Any] = {"bcc": bcc}
    if wake_up:
        options["wake_up"] = True
    if max_baudrate:
        options["max_baudrate"] = int(max_baudrate)
    try:
        ident, readout = asyncio.run(_readout(port, address, options, echo))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except MeterhubError as exc:
        raise click.ClickException(f"meter on {port}: {exc}") from None
    rows = [dataset_to_dict(d) for d in readout.datasets]
    if as_json:
        click.echo(jsonout.dumps(rows))
        return
    click.echo(f"{ident.manufacturer} {ident.identification}: {len(rows)} data set(s)", err=True)
    for row in rows:
        stamp = f"  {row['timestamp'].isoformat()}" if "timestamp" in row else ""
        click.echo(f"{row['quantity']:<16} {row['value']} {row['unit']}{stamp}".rstrip())


@ir_cmd.command("sim")
@click.option("--baud-char", default="5", show_default=True,
              help="The highest rate the meter offers: mode C 0-6 (300..19200 Bd), mode B A-F.")
@click.option("--mode", type=click.Choice(["A", "B", "C"]), default="C", show_default=True)
@click.option("--address", default="", help="The meter's device address (it then answers only a sign-on with it).")
@click.option("--password", default="00000000", show_default=True, help="The programming-mode password (P1).")
@click.option("--no-echo", is_flag=True, help="Do not echo what the reader sends (a full-duplex head).")
@click.option("--fault", "faults", multiple=True,
              type=click.Choice(["bad_bcc", "no_answer_at_new_baud", "garbled_identification", "silent", "slow"]),
              help="Start with a fault switched on; repeatable.")
@click.option("--seed", type=int, default=0, show_default=True)
def sim_cmd(baud_char: str, mode: str, address: str, password: str, no_echo: bool, faults: tuple[str, ...],
            seed: int) -> None:
    """An optical meter (IEC 62056-21) on a pseudo-terminal; prints its port, runs until interrupted."""
    import signal

    from .sim import OpticalMeter

    stopped: list[int] = []  # noted from the start: a caller may stop us as soon as it has read the port
    saved = {signum: signal.signal(signum, lambda number, _frame: stopped.append(number))
             for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            meter = OpticalMeter(baud_char=baud_char, mode=mode, address=address, password=password, echo=not no_echo,
                                 seed=seed)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        for fault in faults:
            setattr(meter, fault, True)
        with meter:
            click.echo(meter.path)
            sys.stdout.flush()
            click.echo(f"optical meter on {meter.path}: mode {mode}, baud character {baud_char!r}"
                       f"{', echoing' if not no_echo else ''} (a pseudo-terminal carries no baud rate); "
                       f"try: meterhub ir readout --port {meter.path}", err=True)
            while not stopped:
                time.sleep(0.1)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _probe_site(port: str, address: str, echo: str, db: str, credential: str) -> tuple[Any, Any]:
    """A one-meter site on the probe (``meterhub ir write`` runs its command through it)."""
    from meterhub.model import Schedule, Site

    from .driver import Iec62056Driver

    driver = Iec62056Driver()
    meter = Meter(driver.normalize_address(address), driver.name, "ir", quantities=("1-0:1.8.0",), credential=credential)
    channel = ChannelConfig("ir", "infrared", port, iec.SIGN_ON_SETTINGS, {"echo": echo})
    return Site(channels={"ir": channel}, meters=(meter,), schedule=Schedule(retries=0), store=f"sqlite:///{db}"), meter


@ir_cmd.command("register")
@click.option("--port", required=True, help="The optical probe's serial port.")
@click.option("--register", "register", required=True, help="The register's address as the meter names it (1.8.0).")
@click.option("--address", default="", help="The meter's device address for the sign-on (default: none).")
@click.option("--credential", default="", help="A secret-store entry whose password goes in P1 first (optional).")
@click.option("--echo", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object {register, value, unit} on stdout.")
def register_cmd(port: str, register: str, address: str, credential: str, echo: str, as_json: bool) -> None:
    """Read one register in programming mode (R1), with the password (P1) when --credential names one."""
    from meterhub.secrets import default_secrets

    from .driver import Iec62056Driver

    password = None
    if credential:
        try:
            password = default_secrets().get(credential).get("password")
        except MeterhubError as exc:
            raise click.ClickException(str(exc)) from None
        if password is None:
            raise click.ClickException(f"secret-store entry {credential!r} has no password")

    async def run() -> Any:
        driver = Iec62056Driver()
        meter = Meter(driver.normalize_address(address), driver.name, "ir")
        async with _probe(port, echo) as channel:
            return await driver.read_register(channel.towards(meter), meter, register,
                                              driver.transaction_timeout(iec.SIGN_ON_SETTINGS), password)

    try:
        dataset = asyncio.run(run())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except MeterhubError as exc:
        raise click.ClickException(f"meter on {port}: {exc}") from None
    if as_json:
        click.echo(jsonout.dumps({"register": dataset.address, "value": dataset.value, "unit": dataset.unit}))
    else:
        click.echo(f"{dataset.address} {dataset.value} {dataset.unit}".rstrip())


@ir_cmd.command("write")
@click.option("--port", required=True, help="The optical probe's serial port.")
@click.option("--register", "register", required=True, help="The register's address as the meter names it.")
@click.option("--value", required=True, help="The value to write, as the meter writes it (no parentheses).")
@click.option("--credential", required=True,
              help="The secret-store entry with the meter's programming password (METERHUB_SECRET_<REF>_PASSWORD, "
                   "the secrets file or the keyring).")
@click.option("--address", default="", help="The meter's device address for the sign-on (default: none).")
@click.option("--echo", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
@click.option("--db", default="meterhub.db", show_default=True, type=click.Path(dir_okay=False),
              help="The store whose audit trail records the command.")
def write_cmd(port: str, register: str, value: str, credential: str, address: str, echo: str, db: str) -> None:
    """Write one register in programming mode (P1 with the password, W1), through the command
    path: policy hooks, the password from the secret store, the audit trail (meterhub commands)."""
    from meterhub.commands import local_issuer
    from meterhub.errors import CommandRefused
    from meterhub.model import Command, Origin
    from meterhub.plugins import get_plugins
    from meterhub.runtime import Concentrator
    from meterhub.secrets import default_secrets
    from meterhub.store import open_store

    site, meter = _probe_site(port, address, echo, db, credential)

    async def run() -> Any:
        with open_store(site.store) as store:
            async with Concentrator(site, plugins=get_plugins(), store=store,
                                    secrets=default_secrets()) as conc:
                command = Command(meter.address, meter.protocol, "write_register", {"register": register, "value": value},
                                  origin=Origin.CLI, issuer=local_issuer())
                return await conc.execute(meter, command)

    try:
        answer = asyncio.run(run())
    except CommandRefused as exc:
        raise click.ClickException(f"refused, nothing sent: {exc}") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except MeterhubError as exc:
        raise click.ClickException(f"meter on {port}: {exc}") from None
    click.echo(f"{register} written ({answer.get('ok') and 'acknowledged'}); recorded in {db} (meterhub commands)", err=True)
