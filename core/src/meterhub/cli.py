"""The ``meterhub`` command line (click).

Machine-readable output (``--json``) goes to stdout alone; progress, warnings and errors
go to stderr. Every expected failure (bad config, unknown protocol, a port that does not
exist, a meter that does not answer) is one line on stderr and a non-zero exit status,
never a traceback.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from . import jsonout
from .errors import ConfigError, MeterhubError, NotSupported, UnknownQuantity
from .model import (
    DEFAULT_STORE,
    ChannelConfig,
    Meter,
    Quality,
    Reading,
    Schedule,
    SerialSettings,
    Site,
)
from .plugins import Plugins, get_plugins
from .quantities import resolve

log = logging.getLogger("meterhub")

EXIT_FAILED = 1  #: the command ran but its job failed (a meter did not answer)
EXIT_USAGE = 2  #: bad input: configuration, options, unknown names


class Failure(click.ClickException):
    """A one-line error for the user, with the exit status to use."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbose else "%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.addLevelName(logging.WARNING, "warning")
    logging.addLevelName(logging.ERROR, "error")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the project's own errors into one line and an exit status."""
    try:
        yield
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    except (UnknownQuantity, NotSupported) as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    except MeterhubError as exc:
        raise Failure(str(exc)) from None


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Hold back a logger's warnings (unless -v asked for more) while a command reports itself."""
    target = logging.getLogger(logger)
    saved = target.level
    if logging.getLogger().level >= logging.WARNING:
        target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(saved)


def _plugins() -> Plugins:
    with _user_errors():
        return get_plugins()


def _driver(plugins: Plugins, protocol: str) -> Any:
    drivers = plugins.meter_drivers()
    if protocol not in drivers:
        known = ", ".join(sorted(drivers)) or "none"
        raise Failure(f"unknown protocol {protocol!r} (installed: {known})", EXIT_USAGE)
    return drivers[protocol]


def _transport(plugins: Plugins, name: str) -> Any:
    transports = plugins.transports()
    if name not in transports:
        known = ", ".join(sorted(transports)) or "none"
        hint = " — install meterhub-rs485" if name == "rs485" else ""
        raise Failure(f"unknown transport {name!r} (installed: {known}){hint}", EXIT_USAGE)
    return transports[name]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="meterhub")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """meterhub: remote centralized meter reading."""
    _setup_logging(verbose)


# --- plugins ------------------------------------------------------------------------


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def plugins_cmd(as_json: bool) -> None:
    """List every plugin with its distribution, version and hooks."""
    plugins = _plugins()
    with _user_errors():
        infos = plugins.info()
    rows = [
        {
            "name": i.name,
            "distribution": i.distribution,
            "version": i.version,
            "hooks": list(i.hooks),
            "status": "disabled" if i.disabled else "failed" if i.error else "ok",
            "error": i.error,
        }
        for i in infos
    ]
    if as_json:
        click.echo(jsonout.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="meterhub plugins")
    for col in ("name", "distribution", "version", "hooks", "status"):
        table.add_column(col)
    for r in rows:
        status = r["status"] if not r["error"] else f"failed: {r['error']}"
        table.add_row(r["name"], r["distribution"], r["version"], "\n".join(r["hooks"]), status)
    Console().print(table)
    drivers = plugins.meter_drivers()
    transports = plugins.transports()
    click.echo(f"protocols: {', '.join(sorted(drivers)) or 'none'}")
    click.echo(f"transports: {', '.join(sorted(transports)) or 'none'}")


# --- read and scan ------------------------------------------------------------------


def _serial_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--transport", default="rs485", show_default=True, help="Transport plugin to reach the meter."),
        click.option("--port", required=True, help="Serial port or pyserial URL (/dev/ttyUSB0, socket://host:port, ...)."),
        click.option("--baudrate", type=int, default=None, help="Default: the protocol's usual rate."),
        click.option("--parity", type=click.Choice(["N", "E", "O", "M", "S"], case_sensitive=False), default=None),
        click.option("--bytesize", type=click.IntRange(5, 8), default=None),
        click.option("--stopbits", type=click.Choice(["1", "1.5", "2"]), default=None),
        click.option("--protocol", required=True, help="Meter protocol (see `meterhub plugins`)."),
        click.option("--timeout", type=float, default=None, help="Seconds per transaction (default: derived from the baud rate)."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _meter_options(profile: str | None, meter_type: str | None, extra: Sequence[str]) -> dict[str, Any]:
    """A meter's ``options:`` from the command line; values stay text, as a site file's would
    be read by the driver (``meter_type: "10"`` is hex 10)."""
    options: dict[str, Any] = {}
    for spec in extra:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise Failure(f"--option {spec!r}: expected KEY=VALUE", EXIT_USAGE)
        options[key.strip()] = value.strip()
    if profile is not None:
        options["profile"] = profile
    if meter_type is not None:
        options["meter_type"] = meter_type
    return options


def _option_problem(key: str, message: str) -> str:
    """A driver's finding about a meter, named by the command-line option that set it."""
    flag = {"options.profile": "--profile", "options.meter_type": "--meter-type", "address": "--address"}.get(key)
    if flag is None and key.startswith("quantities"):
        flag = "--quantity"
    elif flag is None and key.startswith("options."):
        flag = f"--option {key.removeprefix('options.')}"
    return f"{flag or key}: {message}" if (flag or key) else message


def profile_settings(driver: Any, options: Mapping[str, Any]) -> SerialSettings | None:
    """The serial settings a device profile names (a Modbus meter at 9600 8N1), if any."""
    lookup = getattr(driver, "profile_settings", None)
    return lookup(options) if lookup is not None else None


def _settings(driver: Any, baudrate: int | None, parity: str | None, bytesize: int | None, stopbits: str | None,
              profile: SerialSettings | None = None) -> SerialSettings:
    base: SerialSettings = profile or driver.default_settings
    return SerialSettings(
        baudrate=baudrate or base.baudrate,
        bytesize=bytesize or base.bytesize,
        parity=(parity or base.parity).upper(),
        stopbits=float(stopbits) if stopbits else base.stopbits,
    )


def _one_channel(plugins: Plugins, transport_name: str, port: str, settings: SerialSettings) -> ChannelConfig:
    transport = _transport(plugins, transport_name)
    channel = ChannelConfig(name="cli", transport=transport_name, port=port, settings=settings)
    problems = transport.validate(channel)
    if problems:
        raise Failure("; ".join(f"{key}: {msg}" for key, msg in problems), EXIT_USAGE)
    return channel


@cli.command("read")
@_serial_options
@click.option("--address", required=True, help="Meter address in the protocol's own form.")
@click.option("--quantity", "quantities", required=True, multiple=True, help="OBIS code or alias; repeat for several.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True)
@click.option("--profile", default=None, help="Device profile, lower-case vendor-model (Modbus: eastron-sdm630, ...).")
@click.option("--meter-type", default=None, help="CJ/T 188 meter type T in hex (10 cold water, 20 heat, 30 gas, ...).")
@click.option("--option", "extra_options", multiple=True, metavar="KEY=VALUE",
              help="A driver option as a site file's meter options: would give it; repeat for several.")
def read_cmd(
    transport: str, port: str, baudrate: int | None, parity: str | None, bytesize: int | None, stopbits: str | None,
    protocol: str, timeout: float | None, as_json: bool, address: str, quantities: Sequence[str], retries: int,
    profile: str | None, meter_type: str | None, extra_options: Sequence[str],
) -> None:
    """Read quantities of one meter, once."""
    plugins = _plugins()
    driver = _driver(plugins, protocol)
    with _user_errors():
        obis = [resolve(q).obis for q in quantities]
    unsupported = [q for q in obis if q not in set(driver.supported_quantities())]
    if unsupported:
        raise Failure(f"protocol {protocol} cannot read {', '.join(unsupported)}", EXIT_USAGE)
    try:
        address = driver.normalize_address(address)
    except ValueError as exc:
        raise Failure(f"bad {protocol} address {address!r}: {exc}", EXIT_USAGE) from None
    options = _meter_options(profile, meter_type, extra_options)
    settings = _settings(driver, baudrate, parity, bytesize, stopbits, profile_settings(driver, options))
    channel = _one_channel(plugins, transport, port, settings)
    meter = Meter(address=address, protocol=protocol, channel="cli", quantities=tuple(obis), timeout=timeout,
                  retries=retries, options=options)
    validate = getattr(driver, "validate_meter", None)
    problems = list(validate(meter)) if validate is not None else []
    if problems:
        raise Failure("; ".join(_option_problem(key, msg) for key, msg in problems), EXIT_USAGE)
    site = Site(channels={"cli": channel}, meters=(meter,), schedule=Schedule(retries=retries), store="sqlite:///:memory:")
    with _quiet("meterhub.runtime"):  # a channel-down warning would repeat the error line below
        readings = _run_once(site, plugins, progress=False).readings
    failed = [r for r in readings if not r.ok]
    if as_json:
        rows = [jsonout.reading_to_dict(r) for r in readings if r.ok]
        if rows:
            click.echo(jsonout.dumps(rows[0] if len(rows) == 1 else rows))
    else:
        for r in readings:
            if r.ok:
                click.echo(f"{r.meter} {r.quantity} {_fmt_value(r)} {r.unit}".rstrip())
    link_down = [r for r in failed if r.quality is Quality.LINK_ERROR]
    if link_down:  # the port, not the meter: say it once
        click.echo(f"error: meter {address} on {port}: {_link_reason(link_down[0].detail)}", err=True)
    for r in failed:
        if r.quality is not Quality.LINK_ERROR:
            click.echo(f"error: meter {r.meter} on {port}: {r.quantity}: {_describe_failure(r)}", err=True)
    if failed:
        raise SystemExit(EXIT_FAILED)


def _link_reason(detail: str) -> str:
    """The runtime's "channel cli is down: <reason>" without the channel the user never named."""
    prefix = "channel cli is down: "
    return detail[len(prefix):] if detail.startswith(prefix) else detail


def _describe_failure(r: Reading) -> str:
    text = {
        Quality.TIMEOUT: "no answer",
        Quality.BACKED_OFF: "not tried",
    }.get(r.quality, r.quality.value.replace("_", " "))
    if r.error_code is not None:
        text += f" (code 0x{r.error_code:02X})"
    return f"{text}: {r.detail}" if r.detail else text


@cli.command("scan")
@_serial_options
@click.option("--option", "extra_options", multiple=True, metavar="KEY=VALUE",
              help="A scan option of the protocol's driver (M-Bus: mode=secondary); repeat for several.")
def scan_cmd(
    transport: str, port: str, baudrate: int | None, parity: str | None, bytesize: int | None, stopbits: str | None,
    protocol: str, timeout: float | None, as_json: bool, extra_options: Sequence[str],
) -> None:
    """Find the addresses of the meters answering on a bus."""
    from .bus import Bus

    plugins = _plugins()
    driver = _driver(plugins, protocol)
    options = _meter_options(None, None, extra_options)
    settings = _settings(driver, baudrate, parity, bytesize, stopbits)
    channel = _one_channel(plugins, transport, port, settings)
    # a sweep asks many addresses that are not there: a driver may know a shorter wait per address
    per_address = getattr(driver, "scan_timeout", driver.transaction_timeout)

    if options:
        import inspect

        try:
            inspect.signature(driver.scan).bind(None, 0.0, **options)
        except TypeError:
            raise Failure(f"the {protocol} scan takes no option {', '.join(options)}", EXIT_USAGE) from None

    async def scan() -> list[str]:
        link = _transport(plugins, transport).create_link(channel)
        await link.open()
        try:
            return await driver.scan(Bus(channel.name, link), timeout or per_address(settings), **options)
        finally:
            await link.close()

    with _user_errors():
        found = asyncio.run(scan())
    if as_json:
        click.echo(jsonout.dumps(found))
    else:
        for address in found:
            click.echo(address)
        click.echo(f"{len(found)} meter(s) found on {port}", err=True)


# --- run ------------------------------------------------------------------------------


def _load_site(plugins: Plugins, path: str) -> Site:
    from .config import load_site

    with _user_errors():
        return load_site(path, drivers=plugins.meter_drivers(), transports=plugins.transports())


def _run_once(site: Site, plugins: Plugins, *, progress: bool = True) -> Any:
    from .runtime import Concentrator
    from .store import open_store

    async def once() -> Any:
        with open_store(site.store) as store, _Progress(enabled=progress) as bar:
            conc = Concentrator(site, plugins=plugins, store=store, progress=bar.update)
            await conc.open()
            try:
                return await conc.run_round()
            finally:
                await conc.close()

    with _user_errors():
        return asyncio.run(once())


@cli.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--once", is_flag=True, help="Run one reading round, print it and exit 0 (failed meters are recorded, not fatal).")
@click.option("--json", "as_json", is_flag=True, help="With --once: the round's readings as JSON on stdout.")
def run_cmd(config: str, once: bool, as_json: bool) -> None:
    """Run the concentrator on a site file."""
    plugins = _plugins()
    if not Path(config).exists():
        raise Failure(f"{config}: no such file", EXIT_USAGE)
    site = _load_site(plugins, config)
    if once:
        report = _run_once(site, plugins, progress=not as_json)
        if as_json:
            click.echo(jsonout.dumps([jsonout.reading_to_dict(r) for r in report.readings], indent=2))
        else:
            _print_report(report, site)
        return
    _run_forever(site, plugins)


def _run_forever(site: Site, plugins: Plugins) -> None:
    from .runtime import Concentrator
    from .store import open_store

    async def forever() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def progress(kind: str, info: dict[str, Any]) -> None:
            if kind == "round_finished":
                click.echo(f"{datetime.now().isoformat(timespec='seconds')} round finished: "
                           f"{info.get('ok', '?')} ok, {info.get('failed', '?')} failed", err=True)

        with open_store(site.store) as store:
            conc = Concentrator(site, plugins=plugins, store=store, progress=progress)
            await conc.open()
            try:
                click.echo(f"meterhub running {len(site.meters)} meter(s) on {len(site.channels)} channel(s) "
                           f"every {site.schedule.interval:g} s; store {site.store}; Ctrl-C to stop", err=True)
                await conc.run(stop=stop)
            finally:
                await conc.close()

    with _user_errors():
        asyncio.run(forever())


# --- output helpers ---------------------------------------------------------------------


def _fmt_value(r: Reading) -> str:
    return "" if r.value is None else str(r.value)


class _Progress:
    """A rich progress bar on stderr while a round runs, only when stderr is a terminal."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]reading"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, kind: str, info: dict[str, Any]) -> None:
        if self._progress is None:
            return
        if kind == "round_started":
            self._task = self._progress.add_task("", total=info.get("meters"))
        elif kind == "meter_done" and self._task is not None:
            self._progress.update(self._task, advance=1, description=str(info.get("meter", "")))


def _print_report(report: Any, site: Site, *, console: Any = None) -> None:
    """The round's readings, one section per meter, then the read statistics.

    Laid out to fit an 80-column terminal; a wider one also gets each quantity's alias.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    wide = console.width >= WIDE_TERMINAL
    table = Table(title=f"readings ({report.ok_count} ok, {report.failed_count} failed)",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    table.add_column("meter", no_wrap=True)
    table.add_column("quantity", no_wrap=True)
    if wide:
        table.add_column("", no_wrap=True, style="dim")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("quality", no_wrap=True)
    table.add_column("tries", justify="right")
    table.add_column("ms", justify="right")
    previous = None
    row_in_meter = 0
    for r in report.readings:
        meter = (r.channel, r.meter)
        row_in_meter = row_in_meter + 1 if meter == previous else 0
        if previous is not None and meter != previous:
            table.add_section()
        quality = "ok" if r.ok else f"[red]{r.quality.value}[/red]"
        if r.error_code is not None:
            quality += f" (0x{r.error_code:02X})"
        latency = "" if r.latency is None else f"{r.latency * 1000:.0f}"
        value = r.value.replace("T", " ")[:19] if isinstance(r.value, str) and r.quantity == CLOCK else _fmt_value(r)
        # the meter's address on its first row, the channel it is on below it
        label = r.meter if row_in_meter == 0 else f"[dim]{r.protocol} on {r.channel}[/dim]" if row_in_meter == 1 else ""
        cells = [label, r.quantity]
        if wide:
            cells.append(_alias(r.quantity))
        cells += [value, r.unit, quality, str(r.attempts), latency]
        table.add_row(*cells)
        previous = meter
    console.print(table)
    console.print()
    _print_stats(report, console)


#: Columns from which the readings table also shows quantity aliases.
WIDE_TERMINAL = 100

CLOCK = "0-0:1.0.0"


def _alias(obis: str) -> str:
    try:
        return resolve(obis).alias
    except UnknownQuantity:
        return ""


def _print_stats(report: Any, console: Any) -> None:
    from rich import box
    from rich.table import Table

    for title, stats in (("per meter", report.meter_stats), ("per channel", report.channel_stats)):
        table = Table(title=f"read statistics {title}", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
        table.add_column("name", no_wrap=True)
        for col in ("reads", "ok", "fail", "skip", "ok %", "retry", "ms min/avg/max"):
            table.add_column(col, justify="right", no_wrap=True)
        kinds = []
        for name, s in stats.items():
            table.add_row(
                name,
                str(s["readings"]),
                str(s["successes"]),
                str(s["failed"]),
                str(s["backed_off"]),
                "-" if s["success_rate"] is None else f"{s['success_rate'] * 100:.0f}%",
                str(s["retries"]),
                _latency_text(s),
            )
            if s["failures"]:
                kinds.append(f"{name}: " + ", ".join(f"{n} {kind}" for kind, n in s["failures"].items()))
        console.print(table)
        if title == "per meter" and kinds:
            console.print("failed: " + "; ".join(kinds), highlight=False)
    console.print("skip: not tried while the meter is backed off; ms: from request to accepted answer",
                  style="dim", highlight=False)


def _latency_text(s: dict[str, Any]) -> str:
    parts = [s.get("latency_min"), s.get("latency_mean"), s.get("latency_max")]
    if any(p is None for p in parts):
        return "-"
    return "/".join(f"{p * 1000:.0f}" for p in parts)


# --- export --------------------------------------------------------------------------------

EXPORT_FIELDS = ("meter", "quantity", "value", "unit", "timestamp", "quality", "error_code", "detail",
                 "channel", "protocol", "attempts", "latency")


@cli.command("export")
@click.option("--db", "db", required=True, type=click.Path(dir_okay=False), help="SQLite file written by meterhub.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), required=True)
@click.option("--meter", default=None, help="Only this meter address.")
@click.option("--quantity", default=None, help="Only this quantity (OBIS code or alias).")
@click.option("--since", default=None, help="Only readings at or after this ISO timestamp.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-", show_default=True)
def export_cmd(db: str, fmt: str, meter: str | None, quantity: str | None, since: str | None, output: str) -> None:
    """Export readings from the store as CSV or JSON."""
    from .store import open_store

    if not Path(db).exists():
        raise Failure(f"{db}: no such file", EXIT_USAGE)
    with _user_errors():
        obis = resolve(quantity).obis if quantity else None
    try:
        since_dt = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise Failure(f"--since: not an ISO timestamp: {since!r}", EXIT_USAGE) from None
    with _user_errors(), open_store(f"sqlite:///{os.path.abspath(db)}") as store:
        readings = store.readings(meter=meter, quantity=obis, since=since_dt)
    rows = [jsonout.reading_to_dict(r) for r in readings]
    out = click.open_file(output, "w", encoding="utf-8")
    with out:
        if fmt == "json":
            out.write(jsonout.dumps(rows, indent=2) + "\n")
        else:
            writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    if output != "-":
        click.echo(f"{len(rows)} reading(s) written to {output}", err=True)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- sim and demo ---------------------------------------------------------------------------


@cli.group("sim")
def sim_cmd() -> None:
    """Simulated meters on pseudo-terminals, for trying meterhub without hardware."""


@sim_cmd.command("dlt645")
@click.option("--meters", "count", type=click.IntRange(1, 999), default=5, show_default=True)
@click.option("--baudrate", type=int, default=2400, show_default=True)
@click.option("--first-address", default="000000000001", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fault", "faults", multiple=True, metavar="ADDRESS=KIND",
              help="Make a meter misbehave: silence, bad_checksum, noise, truncated, slow, wrong_address.")
def sim_dlt645_cmd(count: int, baudrate: int, first_address: str, seed: int, faults: Sequence[str]) -> None:
    """DL/T 645-2007 meters on a pseudo-terminal; prints the port and runs until interrupted."""
    from .protocols.dlt645_sim import Fault
    from .simulator import start_dlt645_sim

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
                fault = f"  fault: {m.fault.value}" if getattr(m, "fault", None) else ""
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
              help="Make a meter misbehave: silence, bad_checksum, noise, truncated, slow, wrong_address.")
@click.option("--site", "site_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a site file that reads every simulated meter (meterhub run FILE --once).")
def sim_bus_cmd(specs: Sequence[str], baudrate: int | None, seed: int, faults: Sequence[str], site_path: str | None) -> None:
    """Meters of any installed simulators on one pseudo-terminal; prints the port, runs until interrupted."""
    from .simsite import MeterSpec, site_text, start_bus

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
                fault = f"  fault: {dev.fault.value}" if getattr(dev, "fault", None) else ""
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


#: The demo's meters: bus1 carries DL/T 645 meters only; bus2 mixes every other installed
#: simulator with DL/T 645 meters, one noisy and one dead.
DEMO_MIXED = {"modbus": "profile=eastron-sdm630", "cjt188": "meter_type=10", "mbus": ""}


@cli.command("demo")
@click.option("--meters", "count", type=click.IntRange(1, 64), default=3, show_default=True, help="Meters per bus.")
@click.option("--db", default="meterhub.db", show_default=True, type=click.Path(dir_okay=False), help="SQLite file to store the readings in.")
@click.option("--rounds", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between rounds (with --rounds > 1).")
@click.option("--faults/--no-faults", default=True, show_default=True,
              help="Put a noisy and a silent meter on the second bus to show how failures are handled.")
def demo_cmd(count: int, db: str, rounds: int, interval: float, faults: bool) -> None:
    """Read simulated meters over the real RS485 path, store and print the readings."""
    from .simsite import MeterSpec, site_text, start_bus

    plugins = _plugins()
    _transport(plugins, "rs485")
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
        from .config import parse_site

        with _user_errors():
            site = parse_site(site_yaml, filename="<demo>", drivers=plugins.meter_drivers(), transports=plugins.transports())
        report = None
        for i in range(rounds):
            if i:
                import time

                time.sleep(interval)
            report = _run_once(site, plugins)
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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``meterhub`` script: adds plugin subcommands, then runs."""
    try:
        plugins = get_plugins()
        plugins.call_each("meterhub_register_commands", cli=cli)
    except MeterhubError as exc:  # strict mode: a broken plugin is fatal
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    cli.main(args=list(argv) if argv is not None else None, prog_name="meterhub")


if __name__ == "__main__":  # pragma: no cover
    main()
