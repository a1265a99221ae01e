"""What every command shares: exit statuses and one-line errors, logging, plugin lookups,
and the serial options of the commands that talk to one meter or one bus (read, scan)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError, MeterhubError, NotSupported, UnknownQuantity
from ..plugins import Plugins, get_plugins

if TYPE_CHECKING:
    from ..model import ChannelConfig, SerialSettings

# The API and the model are imported by the functions that use them: ``meterhub --help``
# imports this module and needs neither.

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


def open_existing_store(db: str) -> Any:
    """``--db`` of a command that reads a store: a SQLite file name, or a store URL
    (``sqlite:///FILE``, ``postgresql://...``). A SQLite file that is not there is a usage
    error (opening it would make an empty store, and say nothing is in it)."""
    from ..store import URL_PREFIX, open_store

    if "://" in db:
        path = db[len(URL_PREFIX):].partition("?")[0] if db.startswith(URL_PREFIX) else None
        url = db
    else:
        path, url = db, f"{URL_PREFIX}{os.path.abspath(db)}"
    if path is not None and path != ":memory:" and not Path(path).exists():
        raise Failure(f"{path}: no such file", EXIT_USAGE)
    with _user_errors():
        try:
            return open_store(url)
        except ValueError as exc:
            raise Failure(str(exc), EXIT_USAGE) from None


def _plugins() -> Plugins:
    with _user_errors():
        return get_plugins()


def _driver(plugins: Plugins, protocol: str) -> Any:
    drivers = plugins.meter_drivers()
    if protocol not in drivers:
        known = ", ".join(sorted(drivers)) or "none"
        raise Failure(f"unknown protocol {protocol!r} (installed: {known})", EXIT_USAGE)
    return drivers[protocol]


#: The transport ``read`` and ``scan`` use when none is given: the one for a meter on a
#: serial line, from meterhub-rs485 (a contract of the command line). The only transport
#: name the CLI knows; transports bring their own options through their channel settings.
DEFAULT_TRANSPORT = "rs485"


def _transport(plugins: Plugins, name: str) -> Any:
    transports = plugins.transports()
    if name not in transports:
        known = ", ".join(sorted(transports)) or "none"
        raise Failure(f"unknown transport {name!r} (installed: {known}) — install the plugin that provides it; "
                      "`meterhub plugins` lists what is installed", EXIT_USAGE)
    return transports[name]


def _serial_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--transport", default=DEFAULT_TRANSPORT, show_default=True, help="Transport plugin to reach the meter."),
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


def profile_settings(driver: Any, options: Mapping[str, Any]) -> SerialSettings | None:
    """The serial settings a device profile names (a Modbus meter at 9600 8N1), if any."""
    from ..api import ProfileSettings

    return driver.profile_settings(options) if isinstance(driver, ProfileSettings) else None


def _settings(driver: Any, baudrate: int | None, parity: str | None, bytesize: int | None, stopbits: str | None,
              profile: SerialSettings | None = None) -> SerialSettings:
    from ..model import SerialSettings

    base: SerialSettings = profile or driver.default_settings
    return SerialSettings(
        baudrate=baudrate or base.baudrate,
        bytesize=bytesize or base.bytesize,
        parity=(parity or base.parity).upper(),
        stopbits=float(stopbits) if stopbits else base.stopbits,
    )


def _one_channel(plugins: Plugins, transport_name: str, port: str, settings: SerialSettings) -> ChannelConfig:
    from ..model import ChannelConfig

    transport = _transport(plugins, transport_name)
    channel = ChannelConfig(name="cli", transport=transport_name, port=port, settings=settings)
    problems = transport.validate(channel)
    if problems:
        raise Failure("; ".join(f"{key}: {msg}" for key, msg in problems), EXIT_USAGE)
    return channel
