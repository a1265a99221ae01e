"""Carrier reading: how close a round over 1,024 meters behind one Q/GDW 1376.2 module comes
to what the simulated carrier network allows.

The real concentrator reads, through the real ``plc`` transport, DL/T 645 meters behind a
simulated HPLC module (9600 8E1 UART, five reads in flight with AFN F1 F1) in front of a
seeded carrier network (relay depths 0-7, 50 ms ± 50 % per hop each way). The simulator
runs in a process of its own, as a module does not share the concentrator's CPU.

* ``plc_round_vs_network``: the round's time ÷ (the sum of the network's per-transaction
  latencies ÷ the module's concurrency), as the issue defines the bound. It can fall below
  1 when reads overlap better than an even split, and rise above it when the UART is the
  limit.
* ``plc_round_vs_bound``: the round's time ÷ what the module allows: each of its slots is
  held from a request's first byte on the UART to its answer's last, so the bound is (the
  network's latencies + the UART time of every request and answer) ÷ the concurrency (at
  9600 Bd the UART adds about 60 ms each way to a transaction of ~0.3 s), and never less
  than the busier UART direction alone. 1.0 is what the hardware allows.
* ``plc_success_rate_lossy``: readings ok after two retries on a network where each hop
  loses 2 % of frames, with eight collectors of 32 meters (full run only).

Every meter here has its own carrier module for the efficiency figures: meters behind one
collector share its RS485 line and are read one at a time, which no network bound counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from meterhub import timing
from meterhub.model import ChannelConfig, Hop, Meter, Quality, Schedule, SerialSettings, Site
from meterhub.plugins import Plugins
from meterhub.runtime import Concentrator
from meterhub.store import open_store

from .figures import Figure

BAUDRATE = 9600
CONCURRENCY = 5
HOP_LATENCY_S = 0.05
GOAL_VS_BOUND = 1.25
GOAL_SUCCESS = 0.99


def _serve(spec: dict[str, Any], conn: Connection) -> None:
    """The module and its network, in a process of their own: sends (port, nodes), then the
    module's statistics when told to stop."""
    from meterhub_plc.network import CarrierNetwork
    from meterhub_plc.sim import ModuleSim

    net = CarrierNetwork.build(meters=spec["meters"], collectors=spec["collectors"], meters_per_collector=32,
                               seed=spec["seed"], hop_latency=HOP_LATENCY_S, loss=spec["loss"])
    with ModuleSim(net, baudrate=BAUDRATE, concurrency=CONCURRENCY) as sim:
        nodes = [(n.address, n.kind.value, n.depth, list(n.meters)) for n in net.nodes()]
        conn.send((sim.path, nodes))
        conn.recv()
        stats = sim.stats()
        network = stats.pop("network")
        conn.send({**stats, "total_latency": network.total_latency, "transactions": network.transactions})


@contextlib.contextmanager
def _module(**spec: Any) -> Iterator[tuple[str, list[Any], Connection]]:
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(spec, theirs), daemon=True)
    process.start()
    try:
        if ours not in multiprocessing.connection.wait([ours, process.sentinel], 120):
            raise RuntimeError(f"the simulated module did not start (exit code {process.exitcode})")
        port, nodes = ours.recv()
        yield port, nodes, ours
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()


def _meters(nodes: list[Any]) -> list[Meter]:
    meters = []
    for k, (address, kind, _depth, behind) in enumerate(nodes):
        if kind == "collector":
            hop = Hop(f"c{k}", address, "dlt645")
            meters += [Meter(a, "dlt645", "carrier", ("1-0:1.8.0",), hops=(hop,)) for a in behind]
        else:
            meters.append(Meter(address, "dlt645", "carrier", ("1-0:1.8.0",)))
    return meters


def _round(meters: int, collectors: int = 0, loss: float = 0.0, seed: int = 0) -> dict[str, Any]:
    with _module(meters=meters, collectors=collectors, loss=loss, seed=seed) as (port, nodes, conn):
        channel = ChannelConfig("carrier", "plc", port, SerialSettings(BAUDRATE, 8, "E", 1))
        site = Site(channels={"carrier": channel}, meters=tuple(_meters(nodes)), store="sqlite:///:memory:",
                    schedule=Schedule(retries=2))

        async def once() -> tuple[float, Any]:
            with open_store(site.store) as store:
                async with Concentrator(site, plugins=Plugins(), store=store) as conc:
                    await conc.open()
                    await conc._open_channel(conc._channels["carrier"])  # the start-up (route table) is not the round
                    started = time.perf_counter()
                    report = await conc.run_round()
                    return time.perf_counter() - started, report

        seconds, report = asyncio.run(once())
        conn.send("stop")
        stats = conn.recv()
    ok = sum(1 for r in report.readings if r.quality is Quality.OK)
    return {"seconds": seconds, "ok": ok, "readings": len(report.readings), **stats}


def run(quick: bool) -> list[Figure]:
    meters = 128 if quick else 1024
    got = _round(meters)
    network = got["total_latency"] / CONCURRENCY
    settings = SerialSettings(BAUDRATE, 8, "E", 1)
    down, up = timing.frame_time(got["bytes_in"], settings), timing.frame_time(got["bytes_out"], settings)
    # each of the module's slots is held from a request's first byte to its answer's last
    held = (got["total_latency"] + down + up) / CONCURRENCY
    bound = max(held, down, up)
    note = (f"{meters} meters, {got['ok']}/{got['readings']} ok; round {got['seconds']:.1f} s; network "
            f"{got['total_latency']:.1f} s over {got['transactions']} transactions ÷ {CONCURRENCY} = {network:.1f} s")
    figures = [
        Figure(f"plc_round_vs_network_{meters}", round(got["seconds"] / network, 3), "× network bound", note=note),
        Figure(f"plc_round_vs_bound_{meters}", round(got["seconds"] / bound, 3), "× bound", GOAL_VS_BOUND,
               note=f"bound {bound:.1f} s: (network + UART both ways {down:.1f} + {up:.1f} s at {BAUDRATE} Bd) "
                    f"÷ {CONCURRENCY} slots"),
    ]
    if not quick:
        lossy = _round(768, collectors=8, loss=0.02, seed=1)
        rate = lossy["ok"] / lossy["readings"]
        figures.append(Figure("plc_success_rate_lossy", round(rate, 4), "ok ÷ readings", GOAL_SUCCESS, better="higher",
                              note=f"{lossy['readings']} meters (256 behind 8 collectors), 2 % loss per hop, "
                                   f"2 retries; round {lossy['seconds']:.1f} s"))
    return figures
