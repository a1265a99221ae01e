"""``meterhub run``: the concentrator on a site file, forever or for one round."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import jsonout
from .common import (
    EXIT_CHANNEL_DOWN,
    EXIT_USAGE,
    Failure,
    _plugins,
    _quiet,
    _user_errors,
)
from .report import _print_report, _round_line
from .rounds import _run_once

if TYPE_CHECKING:
    from ..model import Site
    from ..plugins import Plugins


@click.command("run")
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
        for name, count in sorted(outcome.outbox_left.items()):
            click.echo(f"warning: uplink {name} has not taken {count} item(s) yet; they stay in the outbox and go "
                       "out on the next run", err=True)
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
    import asyncio

    from ..runtime import Concentrator
    from ..store import open_store
    from ..uplinks import UplinkRunner

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
                async with UplinkRunner(conc, plugins.uplinks()):
                    uplinks = "".join(f"; uplink {u.name} ({u.protocol})" for u in site.uplinks)
                    click.echo(f"meterhub running {len(site.meters)} meter(s) on {len(site.channels)} channel(s) "
                               f"every {site.schedule.interval:g} s; store {site.store}{uplinks}; Ctrl-C to stop",
                               err=True)
                    await conc.run(stop=stop)
            finally:
                await conc.close()

    with _user_errors():
        asyncio.run(forever())


def _load_site(plugins: Plugins, path: str) -> Site:
    from ..config import load_site

    with _user_errors():
        return load_site(path, drivers=plugins.meter_drivers(), transports=plugins.transports(),
                         uplinks=plugins.uplinks())
