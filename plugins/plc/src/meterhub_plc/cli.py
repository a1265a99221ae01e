"""``meterhub plc``: look at a carrier module (identity, route table) and run a simulated
carrier network to try the ``plc`` transport without one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Coroutine
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


@contextlib.asynccontextmanager
async def _module(port: str, baudrate: str, parity: str) -> AsyncIterator[Any]:
    """The module on ``port``, its identity read (changing nothing), closed afterwards."""
    from . import options
    from .channel import PlcChannel

    settings = SerialSettings(int(baudrate), 8, parity, 1)
    channel = PlcChannel(ChannelConfig("plc", "plc", port, settings), options.PlcOptions(route_sync="off"))
    await channel.probe()
    try:
        yield channel
    finally:
        await channel.close()


def _run(work: Coroutine[Any, Any, Any]) -> Any:
    """Run ``work``; a module that cannot be reached is one line, not a traceback."""
    try:
        return asyncio.run(work)
    except LinkError as exc:
        raise click.ClickException(str(exc)) from None


async def _probe(port: str, baudrate: str, parity: str, table: bool) -> dict[str, Any]:
    async with _module(port, baudrate, parity) as channel:
        out: dict[str, Any] = {"port": port, **channel.identity}
        if table:
            nodes = await channel.read_table()
            out["nodes"] = [{"address": n.address, "relay_level": n.relay_level, "quality": n.quality,
                             "phases": n.phases, "protocol": n.protocol} for n in nodes.values()]
        return out


def _run_probe(port: str, baudrate: str, parity: str, table: bool) -> dict[str, Any]:
    return _run(_probe(port, baudrate, parity, table))


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


@plc_cmd.command("router")
@click.argument("action", type=click.Choice(["pause", "resume", "restart"]))
@_port_options
def router_cmd(action: str, port: str, baudrate: str, parity: str) -> None:
    """Pause (12 F2), resume (12 F3) or restart (12 F1) the module's router: its own
    reading task. A concentrator reading through the module pauses it at start."""

    async def run() -> None:
        async with _module(port, baudrate, parity) as channel:
            await channel.router(action)

    _run(run())
    click.echo(f"router {action}: confirmed by the module on {port}", err=True)


@plc_cmd.command("sim")
@click.option("--meters", "meters", type=click.IntRange(0, 2000), default=20, show_default=True,
              help="Meters with carrier modules of their own.")
@click.option("--collectors", type=click.IntRange(0, 200), default=2, show_default=True,
              help="Collectors on the carrier network, each with RS485 meters behind it.")
@click.option("--per-collector", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Meters behind each collector (real ones take 12, 32 or 64).")
@click.option("--max-depth", type=click.IntRange(0, 7), default=7, show_default=True, help="Deepest relay level.")
@click.option("--hop-latency", type=click.FloatRange(0, 10), default=0.05, show_default=True,
              help="Seconds per relay hop, each way (HPLC tens of ms; narrowband PLC about a second).")
@click.option("--loss", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability that a hop loses a frame.")
@click.option("--formation", type=click.FloatRange(0, 3600), default=0.0, show_default=True,
              help="Seconds the network takes to form after power-up (deeper nodes join later).")
@click.option("--dropout-rate", type=click.FloatRange(0, 3600), default=0.0, show_default=True,
              help="Random drop-outs per node per hour.")
@click.option("--concurrency", type=click.IntRange(1, 32), default=5, show_default=True,
              help="Reads the module takes at once (AFN F1 F1; 1: none, 13 F1 only).")
@click.option("--baudrate", type=click.Choice([str(b) for b in BAUDRATES]), default="9600", show_default=True,
              help="The module's UART speed.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--site", "site_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a site file that reads every simulated meter (meterhub run FILE --once).")
@click.option("--reading", type=click.Choice(["concentrator", "module"]), default="concentrator", show_default=True,
              help="The reading mode the site file asks for.")
def sim_cmd(meters: int, collectors: int, per_collector: int, max_depth: int, hop_latency: float, loss: float,
            formation: float, dropout_rate: float, concurrency: int, baudrate: str, seed: int, site_path: str | None,
            reading: str) -> None:
    """A simulated Q/GDW 1376.2 module on a pseudo-terminal with a carrier network of
    DL/T 645 meters and collectors behind it; prints the port, runs until interrupted."""
    import signal
    import time
    from pathlib import Path

    from .network import CarrierNetwork
    from .sim import ModuleSim

    if meters + collectors == 0:
        raise click.UsageError("give --meters or --collectors: a network needs nodes")
    net = CarrierNetwork.build(meters=meters, collectors=collectors, meters_per_collector=per_collector,
                               max_depth=max_depth, seed=seed, hop_latency=hop_latency, loss=loss,
                               formation_time=formation, dropout_rate=dropout_rate)
    stopped: list[int] = []  # noted from before the port is printed: a caller may stop us as soon as it reads it
    saved = {signum: signal.signal(signum, lambda number, _frame: stopped.append(number))
             for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ModuleSim(net, baudrate=int(baudrate), concurrency=concurrency) as sim:
            if site_path:  # before the port is printed: whoever waits for the port may read the file at once
                Path(site_path).write_text(site_text(net, sim.path, int(baudrate), reading), encoding="utf-8")
            click.echo(sim.path)
            sys.stdout.flush()
            depths: dict[int, int] = {}
            for node in net.nodes():
                depths[node.depth] = depths.get(node.depth, 0) + 1
            shape = ", ".join(f"{count} at {depth}" for depth, count in sorted(depths.items()))
            click.echo(f"carrier module on {sim.path} ({baudrate} 8E1; a pseudo-terminal carries no parity): "
                       f"{meters} meter(s), {collectors} collector(s) with {per_collector} meter(s) each; "
                       f"nodes by relay level: {shape}", err=True)
            if site_path:
                click.echo(f"site file written: {site_path}; try: meterhub run {site_path} --once", err=True)
            click.echo("Ctrl-C to stop", err=True)
            while not stopped:
                time.sleep(0.1)  # a signal handler cannot wake a sleep that PEP 475 resumes
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def site_text(net: Any, port: str, baudrate: int, reading: str = "concentrator") -> str:
    """A site file that reads every meter of the simulated network ``net`` on ``port``."""
    from .network import NodeKind

    quantities = '["energy_import", "voltage_l1"]'
    lines = ["# written by meterhub plc sim: a simulated carrier module and the meters behind it",
             "channels:",
             f"  carrier: {{transport: plc, port: {port}, baudrate: {baudrate}, reading: {reading}}}"]
    collectors = [n for n in net.nodes() if n.kind is NodeKind.COLLECTOR]
    if collectors:
        lines.append("collectors:")
        lines += [f'  c{k + 1}: {{channel: carrier, address: "{n.address}"}}' for k, n in enumerate(collectors)]
    lines.append("meters:")
    for node in net.nodes():
        if node.kind is NodeKind.METER:
            lines.append(f'  - {{address: "{node.address}", channel: carrier, protocol: dlt645, quantities: {quantities}}}')
    for k, node in enumerate(collectors):
        lines += [f'  - {{address: "{a}", collector: c{k + 1}, protocol: dlt645, quantities: {quantities}}}'
                  for a in node.meters]
    return "\n".join(lines) + "\n"
