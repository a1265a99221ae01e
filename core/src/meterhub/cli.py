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
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
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

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("meterhub")

EXIT_FAILED = 1  #: the command ran but its job failed (a meter did not answer)
EXIT_USAGE = 2  #: bad input: configuration, options, unknown names
EXIT_CHANNEL_DOWN = 3  #: ``run --once``: a channel could not be opened (its meters are recorded as link_error)


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
        click.option("--timeout", type=float, default=None,
                     help="Seconds from the start of a request by which the answer must have begun "
                          "(default: the protocol's longest response delay at this baud rate)."),
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
    """Read quantities of one meter, once.

    With --json, one --quantity prints one reading object and several a list of them, one
    per quantity in the order asked (a failed one has "value": null, its quality and
    detail); when nothing at all could be read, an error object with the keys error, meter,
    protocol, port, quality and readings. Exit status 1 when any quantity failed.
    """
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
    try:
        with _quiet("meterhub.runtime"):  # a channel-down warning would repeat the error line below
            readings = _in_asked_order(obis, _run_once(site, plugins, progress=False).report.readings)
    except Failure as exc:
        if as_json and exc.exit_code == EXIT_FAILED:  # the round itself failed: nothing was read
            click.echo(jsonout.dumps(_read_error(exc.format_message(), meter, port, None, [])))
        raise
    errors = _read_errors(readings, address, port)
    if as_json:
        click.echo(jsonout.dumps(_read_json(readings, errors, meter, port, single=len(quantities) == 1)))
    else:
        for r in readings:
            if r.ok:
                click.echo(f"{r.meter} {r.quantity} {_fmt_value(r)} {r.unit}".rstrip())
    for line in errors:
        click.echo(f"error: {line}", err=True)
    if errors:
        raise SystemExit(EXIT_FAILED)


def _in_asked_order(asked: Sequence[str], readings: Sequence[Reading]) -> list[Reading]:
    """One reading per quantity asked, in the order asked (a quantity asked twice appears
    twice), whatever order the driver read them in."""
    by_quantity: dict[str, list[Reading]] = {}
    for r in readings:
        by_quantity.setdefault(r.quantity, []).append(r)
    ordered = []
    for obis in asked:
        queue = by_quantity.get(obis)
        if queue:
            ordered.append(queue.pop(0) if len(queue) > 1 else queue[0])
    return ordered


def _read_errors(readings: Sequence[Reading], address: str, port: str) -> list[str]:
    """The one-line messages (without ``error:``) for what ``read`` could not read: the port
    once when the link is down, else one line per failed quantity."""
    failed = [r for r in readings if not r.ok]
    link_down = [r for r in failed if r.quality is Quality.LINK_ERROR]
    lines = [f"meter {address} on {port}: {_link_reason(link_down[0].detail)}"] if link_down else []
    lines += [f"meter {r.meter} on {port}: {r.quantity}: {_describe_failure(r)}"
              for r in failed if r.quality is not Quality.LINK_ERROR]
    return lines


def _read_json(readings: Sequence[Reading], errors: Sequence[str], meter: Meter, port: str, *, single: bool) -> Any:
    """What ``read --json`` prints; its shape depends on the command line, not on the outcome.

    One ``--quantity``: one reading object (``meter, quantity, value, unit, timestamp, quality,
    error_code, detail, ...``); several: a list of them, one per quantity asked, in order, a
    failed one with ``"value": null`` and its ``quality`` and ``detail``. When no quantity at
    all could be read (port missing, meter silent) the error object of :func:`_read_error`.
    """
    rows = [jsonout.reading_to_dict(r) for r in readings]
    if not any(r.ok for r in readings):
        cause = _first_cause(readings)
        message = errors[0] if errors else f"meter {meter.address} on {port}: nothing was read"
        return _read_error(message, meter, port, cause.quality.value if cause else None, rows)
    return rows[0] if single else rows


def _read_error(message: str, meter: Meter, port: str, quality: str | None,
                rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``read --json``'s object when nothing could be read: ``error`` (the line also printed on
    stderr), ``meter``, ``protocol``, ``port``, ``quality`` (of the first failure: link_error,
    timeout, ...; null when the round itself failed) and ``readings`` (every quantity asked,
    as above; empty when the round itself failed)."""
    return {"error": message, "meter": meter.address, "protocol": meter.protocol, "port": port,
            "quality": quality, "readings": rows}


def _first_cause(readings: Sequence[Reading]) -> Reading | None:
    """The failure that explains the others: the first one actually tried (a back-off only
    follows a failure)."""
    tried = (r for r in readings if not r.ok and r.quality is not Quality.BACKED_OFF)
    return next(tried, None) or next((r for r in readings if not r.ok), None)


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

    async def scan(progress: ScanProgress) -> list[str]:
        link = _transport(plugins, transport).create_link(channel)
        await link.open()
        try:
            bus = Bus(channel.name, link, trace=progress.record)
            return await driver.scan(bus, timeout or per_address(settings), **options)
        finally:
            await link.close()

    with _user_errors(), ScanProgress(f"scanning {port} ({protocol})", enabled=sys.stderr.isatty()) as progress:
        found = asyncio.run(scan(progress))
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


@attrs.frozen
class _Once:
    """One round's report and the channels that were down at its end (name: reason)."""

    report: Any  #: the runtime's RoundReport
    channel_errors: Mapping[str, str]


def _run_once(site: Site, plugins: Plugins, *, progress: bool = True) -> _Once:
    from .runtime import Concentrator
    from .store import open_store

    async def once() -> _Once:
        with open_store(site.store) as store, _Progress(enabled=progress) as bar:
            conc = Concentrator(site, plugins=plugins, store=store, progress=bar.update)
            await conc.open()
            try:
                report = await conc.run_round()
                return _Once(report, conc.channel_errors())
            finally:
                await conc.close()

    with _user_errors():
        return asyncio.run(once())


@cli.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--once", is_flag=True,
              help="Run one reading round, print it and exit: 0 when every channel could be opened (failed meters are "
                   f"recorded, not fatal); {EXIT_CHANNEL_DOWN} when a channel could not be opened (its meters are "
                   "recorded as link_error).")
@click.option("--json", "as_json", is_flag=True, help="With --once: the round's readings as JSON on stdout.")
def run_cmd(config: str, once: bool, as_json: bool) -> None:
    """Run the concentrator on a site file."""
    plugins = _plugins()
    if not Path(config).exists():
        raise Failure(f"{config}: no such file", EXIT_USAGE)
    site = _load_site(plugins, config)
    if once:
        with _quiet("meterhub.runtime"):  # a channel-down warning would repeat the error line below
            outcome = _run_once(site, plugins, progress=not as_json)
        if as_json:
            click.echo(jsonout.dumps([jsonout.reading_to_dict(r) for r in outcome.report.readings], indent=2))
        else:
            _print_report(outcome.report, site)
        _fail_if_channels_down(outcome.channel_errors)
        return
    _run_forever(site, plugins)


def _fail_if_channels_down(channel_errors: Mapping[str, str]) -> None:
    """A round in which a channel could not be opened is not a success: one line per channel,
    then exit :data:`EXIT_CHANNEL_DOWN` (its readings are stored, as ``link_error``)."""
    for name, reason in sorted(channel_errors.items()):
        click.echo(f"error: channel {name} is down: {reason} (its meters are recorded as link_error)", err=True)
    if channel_errors:
        raise SystemExit(EXIT_CHANNEL_DOWN)


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
                click.echo(f"{datetime.now().isoformat(timespec='seconds')} {_round_line(info)}", err=True)

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
    """A reading's value for people: a Decimal in plain digits (230, not 2.3E+2)."""
    if r.value is None:
        return ""
    return jsonout.decimal_text(r.value) if isinstance(r.value, Decimal) else str(r.value)


def _outcome_counts(ok: int, failed: int, backed_off: int) -> str:
    """``98 ok, 1 failed, 11 backed off``; ``failed`` counts back-offs too, as RoundReport's
    failed_count and the round_finished summary do, but a meter waiting out its back-off was
    not tried, so the two are told apart."""
    return f"{ok} ok, {failed - backed_off} failed, {backed_off} backed off"


def _round_line(info: Mapping[str, Any]) -> str:
    """``run``'s log line for a finished round, from the runtime's round_finished summary."""
    ok, failed, backed_off = info.get("ok"), info.get("failed"), info.get("backed_off", 0)
    if isinstance(ok, int) and isinstance(failed, int) and isinstance(backed_off, int):
        return f"round finished: {_outcome_counts(ok, failed, backed_off)}"
    return "round finished"


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


class ScanProgress:
    """Queries sent and replies heard while a scan runs, with the time it has taken.

    A Modbus sweep of 247 unit ids or a DL/T 645 search level of 100 queries at 2400 Bd
    runs for minutes; this says it is alive. Fed by the bus's wire trace (``record`` is a
    ``Bus(..., trace=...)`` callback): every "tx" record is a query, every "rx" one a reply
    heard (an answer, or a collision of several). Which of them are meters the driver only
    says at the end. Shown on stderr only while enabled: the caller enables it when stderr
    is a terminal, so a pipe or a log never gets it, and stdout never does.
    """

    def __init__(self, title: str, *, enabled: bool, console: Any = None) -> None:
        self.title = title
        self.enabled = enabled
        self.queries = 0
        self.replies = 0
        self._console = console
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ScanProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]{task.fields[title]}"), TextColumn("{task.description}"),
                TimeElapsedColumn(), console=self._console or Console(stderr=True), transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.status(), total=None, title=self.title)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def record(self, record: Any) -> None:
        """Count one :class:`meterhub.bus.WireRecord`."""
        if record.direction == "tx":
            self.queries += 1
        elif record.direction == "rx":
            self.replies += 1
        if self._progress is not None:
            self._progress.update(self._task, description=self.status())

    def status(self) -> str:
        """``37 queries sent, 2 replies``."""
        return f"{_count(self.queries, 'query', 'queries')} sent, {_count(self.replies, 'reply', 'replies')}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _print_report(report: Any, site: Site, *, console: Any = None) -> None:
    """The round's readings, one section per meter, then the read statistics.

    Laid out to fit an 80-column terminal; a wider one also gets each quantity's alias.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    wide = console.width >= WIDE_TERMINAL
    counts = _outcome_counts(report.ok_count, report.failed_count, report.backed_off_count)
    table = Table(title=f"readings ({counts})",
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
    console.print("skip: not tried (backed off, or the meter went unanswered earlier in the round); "
                  "ms: from request to accepted answer",
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
@click.option("--meter", default=None, metavar="[CHANNEL/][PROTOCOL:]ADDRESS",
              help="Only this meter: its address (refused, with the candidates, when meters of several protocols or "
                   "channels share it), PROTOCOL:ADDRESS (modbus:1) or CHANNEL/PROTOCOL:ADDRESS (bus1/modbus:1), "
                   "as the read statistics name it.")
@click.option("--protocol", default=None, help="Only meters of this protocol (dlt645, modbus, mbus, ...).")
@click.option("--channel", default=None, help="Only meters on this channel of the site file.")
@click.option("--quantity", default=None, help="Only this quantity (OBIS code or alias).")
@click.option("--since", default=None, metavar="TIME",
              help="Only readings at or after TIME: a date (2026-12-02, from midnight) or an ISO time "
                   "(2026-12-02T17:22:20), in local time unless it carries an offset (+08:00, Z).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-", show_default=True)
def export_cmd(db: str, fmt: str, meter: str | None, protocol: str | None, channel: str | None, quantity: str | None,
               since: str | None, output: str) -> None:
    """Export readings from the store as CSV or JSON."""
    from .store import open_store

    if not Path(db).exists():
        raise Failure(f"{db}: no such file", EXIT_USAGE)
    with _user_errors():
        obis = resolve(quantity).obis if quantity else None
    since_dt = parse_since(since) if since is not None else None
    wanted = MeterFilter.parse(meter, protocol=protocol, channel=channel)
    with _user_errors(), open_store(f"sqlite:///{os.path.abspath(db)}") as store:
        wanted = wanted.resolve(store)
        readings = store.readings(meter=wanted.address, protocol=wanted.protocol, channel=wanted.channel,
                                  quantity=obis, since=since_dt)
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


def parse_since(text: str) -> datetime:
    """``--since`` as an aware UTC time: a date (its local midnight), a naive ISO time (local
    wall-clock time, as the user reads it on the gateway) or an ISO time with an offset.
    Anything else is a usage error naming the forms accepted."""
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None or moment.utcoffset() is None:
            moment = moment.astimezone()  # a naive time is the local time of this machine
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 shifted out of range
        raise Failure(f"--since {text!r}: expected a date or ISO time, e.g. 2026-12-02, 2026-12-02T17:22:20 (local) "
                      "or 2026-12-02T17:22:20+08:00", EXIT_USAGE) from None


@attrs.frozen
class MeterFilter:
    """Which meter(s) ``export`` keeps: any part may be open (None).

    A meter is named unambiguously by ``channel/protocol:address`` (stats.meter_key): Modbus
    unit 1 and M-Bus primary address 1 share an address on one mixed bus, and unit 1 may
    exist on two buses. A bare address is fine while the store holds one meter with it.
    """

    address: str | None = None
    protocol: str | None = None
    channel: str | None = None
    spelled: str = ""  #: the --meter text, for messages

    @classmethod
    def parse(cls, meter: str | None, *, protocol: str | None = None, channel: str | None = None) -> MeterFilter:
        """``--meter [CHANNEL/][PROTOCOL:]ADDRESS`` together with ``--protocol`` and ``--channel``;
        a usage error when the parts are empty or contradict each other."""
        if meter is None:
            return cls(None, protocol, channel)
        # addresses hold neither "/" nor ":"; a channel name is whatever precedes the last "/"
        in_channel, slash, rest = meter.strip().rpartition("/")
        in_protocol, colon, address = rest.rpartition(":")
        if not address or (slash and not in_channel) or (colon and not in_protocol):
            raise Failure(f"--meter {meter!r}: expected ADDRESS, PROTOCOL:ADDRESS or CHANNEL/PROTOCOL:ADDRESS "
                          "(e.g. 1, modbus:1, bus1/modbus:1)", EXIT_USAGE)
        for option, given, named in (("--protocol", protocol, in_protocol), ("--channel", channel, in_channel)):
            if given is not None and named and given != named:
                raise Failure(f"--meter {meter!r} and {option} {given!r} name different meters", EXIT_USAGE)
        return cls(address, protocol or in_protocol or None, channel or in_channel or None, meter)

    def resolve(self, store: Store) -> MeterFilter:
        """Pin an address to the one stored meter it names; a usage error listing the
        candidates when it names several (their readings would be mixed)."""
        if self.address is None:
            return self
        candidates = store.meters(meter=self.address, protocol=self.protocol, channel=self.channel)
        if len(candidates) > 1:
            keys = ", ".join(c.key for c in candidates)
            raise Failure(f"--meter {self.spelled!r} names {len(candidates)} meters: {keys}; "
                          "give one of them as CHANNEL/PROTOCOL:ADDRESS", EXIT_USAGE)
        if not candidates:
            return self
        only = candidates[0]
        return attrs.evolve(self, protocol=only.protocol, channel=only.channel)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return jsonout.decimal_text(value)  # 230, not 2.3E+2
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
              help="Make a meter misbehave: silence, bad_checksum, noise, truncated, slow, wrong_address, jam.")
def sim_dlt645_cmd(count: int, baudrate: int, first_address: str, seed: int, faults: Sequence[str]) -> None:
    """DL/T 645-2007 meters on a pseudo-terminal; prints the port and runs until interrupted."""
    from .protocols.dlt645_sim import Fault, start_dlt645_sim

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
              help="Make a meter misbehave: silence, bad_checksum, noise, truncated, slow, wrong_address, jam.")
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
