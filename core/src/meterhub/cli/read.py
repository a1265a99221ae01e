"""``meterhub read``: quantities of one meter, once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from .. import jsonout
from ..api import MeterValidator
from ..model import Meter, Quality, Reading, Schedule, Site
from ..quantities import resolve
from .common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Failure,
    _driver,
    _meter_options,
    _one_channel,
    _plugins,
    _quiet,
    _serial_options,
    _settings,
    _user_errors,
    profile_settings,
)
from .report import _fmt_value
from .rounds import _run_once


@click.command("read")
@_serial_options
@click.option("--address", default=None,
              help="Meter address in the protocol's own form; optional where the protocol has a default (IEC 62056-21 "
                   "through an optical probe: the one meter in front of it).")
@click.option("--quantity", "quantities", required=True, multiple=True, help="OBIS code or alias; repeat for several.")
@click.option("--retries", type=click.IntRange(0, 10), default=2, show_default=True)
@click.option("--profile", default=None, help="Device profile, lower-case vendor-model (Modbus: eastron-sdm630, ...).")
@click.option("--meter-type", default=None, help="CJ/T 188 meter type T in hex (10 cold water, 20 heat, 30 gas, ...).")
@click.option("--option", "extra_options", multiple=True, metavar="KEY=VALUE",
              help="A driver option as a site file's meter options: would give it; repeat for several.")
def read_cmd(
    transport: str, port: str, baudrate: int | None, parity: str | None, bytesize: int | None, stopbits: str | None,
    protocol: str, timeout: float | None, as_json: bool, address: str | None, quantities: Sequence[str], retries: int,
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
    if address is None:
        try:
            address = driver.normalize_address("")
        except ValueError:
            raise Failure(f"Missing option '--address': protocol {protocol} needs the meter's address", EXIT_USAGE) from None
    else:
        try:
            address = driver.normalize_address(address)
        except ValueError as exc:
            raise Failure(f"bad {protocol} address {address!r}: {exc}", EXIT_USAGE) from None
    options = _meter_options(profile, meter_type, extra_options)
    settings = _settings(driver, baudrate, parity, bytesize, stopbits, profile_settings(driver, options))
    channel = _one_channel(plugins, transport, port, settings)
    meter = Meter(address=address, protocol=protocol, channel="cli", quantities=tuple(obis), timeout=timeout,
                  retries=retries, options=options)
    problems = list(driver.validate_meter(meter)) if isinstance(driver, MeterValidator) else []
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


def _option_problem(key: str, message: str) -> str:
    """A driver's finding about a meter, named by the command-line option that set it."""
    flag = {"options.profile": "--profile", "options.meter_type": "--meter-type", "address": "--address"}.get(key)
    if flag is None and key.startswith("quantities"):
        flag = "--quantity"
    elif flag is None and key.startswith("options."):
        flag = f"--option {key.removeprefix('options.')}"
    return f"{flag or key}: {message}" if (flag or key) else message
