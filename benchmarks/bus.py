"""Bus efficiency: how close a reading round comes to the wire's own limit.

A round over 32 simulated DL/T 645 meters on one pseudo-terminal bus, read by the real
concentrator through the real ``rs485`` transport. The simulator paces every byte at the
bus's baud rate and answers after a fixed turnaround, so the least time the round can
take is the wire time of the frames actually exchanged (bytes × bits per character ÷
baud, both directions) plus one turnaround per answer. ``bus_efficiency_<baud>`` is the
round's time divided by that bound: 1.0 is the wire's limit.

``parallel_channels_ratio`` (full run only): 8 such buses read in one round against one
bus, time(8) ÷ time(1); 1.0 means the channels cost each other nothing.

The simulated meters run in a process of their own, as real meters do not share the
concentrator's CPU; on this 2-core machine they still share the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import statistics
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from meterhub import timing
from meterhub.api import WireRecord
from meterhub.channels import HalfDuplexChannel
from meterhub.hookspecs import hookimpl
from meterhub.model import ChannelConfig, Meter, SerialSettings, Site
from meterhub.plugins import Plugins
from meterhub.protocols.dlt645_sim import start_dlt645_sim
from meterhub.runtime import Concentrator
from meterhub.store import open_store

from .figures import Figure

METERS = 32
#: The simulated meters' turnaround, fixed so that the bound is exact (DL/T 645 allows
#: 20..500 ms; the simulator's default is a random 30..60 ms).
TURNAROUND_S = 0.030
GOAL_EFFICIENCY = 1.02
GOAL_PARALLEL = 1.1


class _TracedRs485:
    """The installed ``rs485`` transport, with every frame of its channels recorded."""

    name = "rs485-traced"
    description = "rs485, recording every frame (benchmarks)"

    def __init__(self, inner: Any, record: Callable[[str, WireRecord], None]) -> None:
        self.inner = inner
        self.record = record

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        return self.inner.validate(channel)

    def create_channel(self, channel: ChannelConfig) -> HalfDuplexChannel:
        link = self.inner.create_link(channel)
        return HalfDuplexChannel(channel.name, link, trace=lambda rec: self.record(channel.name, rec))


def _plugins(record: Callable[[str, WireRecord], None]) -> Plugins:
    base = Plugins()
    traced = _TracedRs485(base.transports()["rs485"], record)

    class Plugin:
        @staticmethod
        @hookimpl
        def meterhub_register_transports(register: Any) -> None:
            register(traced)

    return Plugins(extra=[("benchmarks", Plugin())])


def _serve_buses(baud: int, buses: int, conn: Connection) -> None:
    """The simulated buses, in a process of their own (real meters do not share the
    concentrator's CPU): sends (port, addresses) per bus, stops when told to."""
    sims = [start_dlt645_sim(METERS, baudrate=baud, turnaround=TURNAROUND_S, seed=b,
                             first_address=f"{b * 1000 + 1:012d}") for b in range(buses)]
    try:
        conn.send([(sim.port, [dev.address for dev in sim.devices]) for sim in sims])
        conn.recv()
    finally:
        for sim in sims:
            sim.stop()


@contextlib.contextmanager
def _simulated_buses(baud: int, buses: int) -> Iterator[list[tuple[str, list[str]]]]:
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_serve_buses, args=(baud, buses, theirs), daemon=True)
    process.start()
    try:
        if ours not in multiprocessing.connection.wait([ours, process.sentinel], 60):
            raise RuntimeError(f"the simulated buses did not start (exit code {process.exitcode})")
        yield ours.recv()
    finally:
        if process.is_alive():
            ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()


def _round(baud: int, buses: int) -> tuple[float, float, int, float]:
    """(round seconds, wire-time bound of the busiest bus, readings ok, the concentrator's
    median dead time per transaction) for ``buses`` buses of METERS meters each."""
    settings = SerialSettings(baud, 8, "E", 1)
    frames: dict[str, list[WireRecord]] = {}
    seen: dict[str, list[float]] = {}  # when each record reached the trace
    with _simulated_buses(baud, buses) as sims:
        channels = {f"bus{b}": ChannelConfig(f"bus{b}", "rs485-traced", port, settings)
                    for b, (port, _) in enumerate(sims)}
        meters = tuple(Meter(address, "dlt645", f"bus{b}", ("1-0:1.8.0",))
                       for b, (_, addresses) in enumerate(sims) for address in addresses)
        site = Site(channels=channels, meters=meters, store="sqlite:///:memory:")
        def record(name: str, rec: WireRecord) -> None:
            frames.setdefault(name, []).append(rec)
            seen.setdefault(name, []).append(time.monotonic())

        plugins = _plugins(record)

        async def once() -> tuple[float, int]:
            with open_store(site.store) as store:
                async with Concentrator(site, plugins=plugins, store=store) as conc:
                    started = time.perf_counter()
                    report = await conc.run_round()
                    return time.perf_counter() - started, report.ok_count

        seconds, ok = asyncio.run(once())
    bound = max(_bound(records, settings) for records in frames.values())
    return seconds, bound, ok, _dead_time(frames["bus0"], seen["bus0"])


def _dead_time(records: list[WireRecord], seen: list[float]) -> float:
    """The median time from an answer's completion (its record reaches the trace as the
    transaction ends) to the next request: the concentrator's own share of a transaction,
    apart from the simulator's (whose process wakes late now and then)."""
    gaps = [records[i + 1].at - seen[i] for i in range(len(records) - 1)
            if records[i].direction == "rx" and records[i + 1].direction == "tx"]
    return statistics.median(gaps) if gaps else float("nan")


def _bound(records: list[WireRecord], settings: SerialSettings) -> float:
    """Wire time of every frame on one bus plus one turnaround per answer."""
    wire = sum(timing.frame_time(len(rec.data), settings) for rec in records)
    answers = sum(1 for rec in records if rec.direction == "rx")
    return wire + answers * TURNAROUND_S


def run(quick: bool) -> list[Figure]:
    figures = []
    for baud in (2400,) if quick else (2400, 9600):
        seconds, bound, ok, dead = _round(baud, 1)
        note = f"{ok}/{METERS} ok; round {seconds:.3f} s, wire-time bound {bound:.3f} s"
        figures.append(Figure(f"bus_efficiency_{baud}", round(seconds / bound, 4), "× bound", GOAL_EFFICIENCY,
                              note=note))
        figures.append(Figure(f"bus_dead_time_{baud}_ms", round(dead * 1000, 3), "ms",
                              note="median, an answer's end to the next request, the concentrator's own"))
    if not quick:
        one, _, ok1, _ = _round(9600, 1)
        eight, _, ok8, _ = _round(9600, 8)
        figures.append(Figure("parallel_channels_ratio", round(eight / one, 4), "× one bus", GOAL_PARALLEL,
                              note=f"9600 Bd; 1 bus {one:.3f} s ({ok1} ok), 8 buses {eight:.3f} s ({ok8} ok)"))
    return figures
