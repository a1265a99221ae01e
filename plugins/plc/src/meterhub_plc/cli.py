"""``meterhub plc``: look at a carrier module (identity, route table) and run a simulated
carrier network to try the ``plc`` transport without one."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click
from meterhub.errors import LinkError
from meterhub.model import ChannelConfig, SerialSettings

from .transport import BAUDRATES, MODULE_SETTINGS


@click.group("plc")
def plc_cmd() -> None:
    """Power-line carrier: a Q/GDW 1376.2 module's identity and route table, and a
    simulated carrier network (meterhub-plc)."""


def _port_options(fn: Any) -> Any:
    fn = click.option("--parity", type=click.Choice(["E", "N", "O"]), default=MODULE_SETTINGS.parity, show_default=True)(fn)
    fn = click.option("--baudrate", type=click.Choice([str(b) for b in BAUDRATES]), default=str(MODULE_SETTINGS.baudrate),
                      show_default=True, help="The module's UART speed.")(fn)
    return click.option("--port", required=True, help="The module's serial port (device path or pyserial URL).")(fn)


def _channel(port: str, baudrate: str, parity: str) -> Any:
    from . import options
    from .channel import PlcChannel

    settings = SerialSettings(int(baudrate), 8, parity, 1)
    return PlcChannel(ChannelConfig("plc", "plc", port, settings), options.PlcOptions(route_sync="off"))


async def _probe(port: str, baudrate: str, parity: str, table: bool) -> dict[str, Any]:
    channel = _channel(port, baudrate, parity)
    identity = await channel.probe()
    try:
        out: dict[str, Any] = {"port": port, **identity}
        if table:
            nodes = await channel.read_table()
            out["nodes"] = [{"address": n.address, "relay_level": n.relay_level, "quality": n.quality,
                             "phases": n.phases, "protocol": n.protocol} for n in nodes.values()]
        return out
    finally:
        await channel.close()


def _run_probe(port: str, baudrate: str, parity: str, table: bool) -> dict[str, Any]:
    try:
        return asyncio.run(_probe(port, baudrate, parity, table))
    except LinkError as exc:
        raise click.ClickException(str(exc)) from None


@plc_cmd.command("info")
@_port_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def info_cmd(port: str, baudrate: str, parity: str, as_json: bool) -> None:
    """The module's vendor, version, main node address, type and whether it reads
    concurrently (03 F1, F10, F4, F11). Changes nothing."""
    out = _run_probe(port, baudrate, parity, table=False)
    if as_json:
        click.echo(json.dumps(out))
        return
    for key, value in out.items():
        click.echo(f"{key:>13}: {value}")


@plc_cmd.command("nodes")
@_port_options
@click.option("--json", "as_json", is_flag=True, help="A JSON list of nodes on stdout.")
def nodes_cmd(port: str, baudrate: str, parity: str, as_json: bool) -> None:
    """The module's route table (10 F1, 10 F2): each slave node with its relay level,
    signal quality, phases and protocol. Changes nothing."""
    out = _run_probe(port, baudrate, parity, table=True)
    if as_json:
        click.echo(json.dumps(out["nodes"]))
        return
    click.echo(f"{len(out['nodes'])} node(s) in the route table of {out['vendor']}/{out['chip']} on {port}", err=True)
    click.echo(f"{'address':<14}{'relay level':>12}{'quality':>9}{'phases':>8}{'protocol':>10}")
    for node in out["nodes"]:
        click.echo(f"{node['address']:<14}{node['relay_level']:>12}{node['quality']:>9}{node['phases']:>8}{node['protocol']:>10}")
    sys.stdout.flush()
