"""``meterhub scan``: the addresses answering on a bus, with a progress line on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import jsonout
from ..api import ScanTiming, Unsolicited, WireRecord
from .common import (
    EXIT_USAGE,
    Failure,
    _driver,
    _meter_options,
    _one_channel,
    _plugins,
    _serial_options,
    _settings,
    _transport,
    _user_errors,
)

log = logging.getLogger(__name__)


@click.command("scan")
@_serial_options
@click.option("--option", "extra_options", multiple=True, metavar="KEY=VALUE",
              help="A scan option of the protocol's driver (M-Bus: mode=secondary); repeat for several.")
def scan_cmd(
    transport: str, port: str, baudrate: int | None, parity: str | None, bytesize: int | None, stopbits: str | None,
    protocol: str, timeout: float | None, as_json: bool, extra_options: Sequence[str],
) -> None:
    """Find the addresses of the meters answering on a bus."""
    import asyncio

    plugins = _plugins()
    driver = _driver(plugins, protocol)
    options = _meter_options(None, None, extra_options)
    settings = _settings(driver, baudrate, parity, bytesize, stopbits)
    channel = _one_channel(plugins, transport, port, settings)
    # a sweep asks many addresses that are not there: a driver may know a shorter wait per address
    per_address = driver.scan_timeout if isinstance(driver, ScanTiming) else driver.transaction_timeout

    if options:
        import inspect

        try:
            inspect.signature(driver.scan).bind(None, 0.0, **options)
        except TypeError:
            raise Failure(f"the {protocol} scan takes no option {', '.join(options)}", EXIT_USAGE) from None

    async def scan(progress: ScanProgress) -> list[str]:
        medium = _transport(plugins, transport).create_channel(channel)
        await medium.open()
        try:
            medium.listen(_ProgressSink(progress))
            return await driver.scan(medium.towards(None), timeout or per_address(settings), **options)
        finally:
            await medium.close()

    with _user_errors(), ScanProgress(f"scanning {port} ({protocol})", enabled=sys.stderr.isatty()) as progress:
        found = asyncio.run(scan(progress))
    if as_json:
        click.echo(jsonout.dumps(found))
    else:
        for address in found:
            click.echo(address)
        click.echo(f"{len(found)} meter(s) found on {port}", err=True)


class _ProgressSink:
    """A scan's :class:`meterhub.api.ChannelSink`: frames on the wire feed the progress line;
    a frame nobody asked for is only logged (a scan reads no configured meter)."""

    def __init__(self, progress: ScanProgress) -> None:
        self.progress = progress

    def wire(self, record: WireRecord) -> None:
        self.progress.record(record)

    def unsolicited(self, report: Unsolicited) -> None:
        log.info("heard an unsolicited %s from %s during the scan", report.kind, report.address or "the channel")

    def wanted(self, address: str, protocol: str = "") -> None:
        log.info("the channel asked for meter %s during the scan; a scan reads no meter", address)


class ScanProgress:
    """Queries sent and replies heard while a scan runs, with the time it has taken.

    A Modbus sweep of 247 unit ids or a DL/T 645 search level of 100 queries at 2400 Bd
    runs for minutes; this says it is alive. Fed by the bus's wire trace (``record`` is a
    channel's :meth:`~meterhub.api.ChannelSink.wire` records): every "tx" record is a query, every "rx" one a reply
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
            from rich.progress import (
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

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
