"""Head-end: many concentrators on one ``meterhub head-end``, and how fast it stores their
reports into SQLite and PostgreSQL, on one node and on two.

Everything runs the real code paths on 127.0.0.1: the head-end is ``python -m meterhub.cli
head-end --allow-any`` in a process of its own (no scheduled reads: ``--realtime 0
--frozen-days 0 --frozen-months 0``; otherwise its defaults, logging included), and the
terminals are simulated by client processes (:data:`CLIENTS` of them, forked), each an
asyncio loop holding its share of raw TCP connections that speak Q/GDW 1376.1 through the
core codec (:mod:`meterhub.protocols.gdw1376_1` and its data module): a login (AFN 02 F1,
CON = 1) from a terminal address of its own (area 3201, A2 = 1, 2, ...); answers to the
head-end's reads of the meter archive at login (AFN 0A F10: an empty archive); then
heartbeats (AFN 02 F3, CON = 1) or active reports (AFN 0C F129, CON = 1).

* **Connections.** Terminals log in, at most :data:`LOGINS_IN_FLIGHT` per client process
  at a time (a ramp as fast as the head-end takes them), then wait until the head-end has
  read their archives. Then every terminal sends a heartbeat every ``period`` seconds (its
  first at a random point of the first period) for ``seconds``; the client times each from
  writing it to reading its confirm (AFN 00 F1, RSEQ = its PSEQ). Twice: at a realistic rate
  (a heartbeat a minute: 10,000 terminals make 167/s) and at a higher one. Held: logged in,
  every heartbeat at the realistic rate confirmed, and the connection still open at the end.
  Before the heartbeats each client freezes its own objects out of the garbage collector
  (``gc.freeze()``): its full collections would otherwise show in its timings. The head-end's RSS
  (``VmRSS``) per connection is (RSS with the terminals logged in - RSS before the first) /
  terminals.
* **Ingest.** Terminals log in as above; then each sends F129 reports of
  :data:`POINTS_PER_REPORT` measuring points (a DA group: 8 points x total and 4 tariffs,
  40 readings, 268 bytes) one after another, the next as soon as the last was confirmed (the
  head-end confirms a report only once it is committed), each a minute later than the last
  (new readings every time). Readings per second = confirmed reports x 40 / seconds, counted
  after a warm-up; every counted reading is then checked to be in the store. Into SQLite (the
  default store, WAL, ``synchronous=FULL``) and into PostgreSQL, a throwaway server of
  :class:`meterhub.testing.postgres.PostgresServer` (fsync off, synchronous_commit off, as
  it is made for tests) and, in the full run, one with fsync and synchronous_commit on.
  Beside each: the raw store's rate for the same readings (``open_store(url).add_readings``
  in batches of :data:`RAW_BATCH`, one process, no 1376.1), so the cost of the protocol
  path shows.
* **Two nodes.** Two head-end processes on one PostgreSQL database (fsync off), the
  terminals split between them; the ratio of their summed ingest to one node's.

This machine has 2 cores and the client processes (and PostgreSQL) compete with the
head-end for them: every figure's note gives each side's share of the machine's CPU over
the measured window ("other" is whatever else ran on the host).

``python -m benchmarks.headend [--quick] [--profile DIR]`` runs the scenario alone; with
``--profile`` every head-end runs under cProfile and its top functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import multiprocessing
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Self

import attrs
from meterhub.errors import FrameError
from meterhub.protocols import gdw1376_1 as g
from meterhub.protocols import gdw1376_1_data as d

from .figures import Figure

#: the goals of the issue: connections held with a p99 heartbeat confirm below 100 ms;
#: 100,000 readings/s into PostgreSQL; two nodes carry twice what one does
CONNECTIONS_GOAL = 10_000
HEARTBEAT_P99_GOAL_MS = 100.0
INGEST_GOAL_PER_S = 100_000.0
TWO_NODES_GOAL = 2.0

AREA = "3201"
#: client processes simulating the terminals (the machine has 2 cores: more only add switching)
CLIENTS = 4
#: logins each client process has in flight at once: the head-end's listen backlog is 100
LOGINS_IN_FLIGHT = 16
#: the archive reads at login are over when no terminal of a client was asked anything for this long
SETTLED_S = 1.0
#: an F129 report: this many points of one DA group, each total + 4 tariffs (A.14)
POINTS_PER_REPORT = 8
READINGS_PER_REPORT = POINTS_PER_REPORT * 5
#: readings per add_readings call of the raw store ingest
RAW_BATCH = 1000
#: the first report's read time (the terminals' local time; the head-end runs with --timezone UTC)
FIRST_READ = datetime(2026, 11, 1, 0, 0)
#: a confirm not come after this is counted as missing
CONFIRM_WAIT_S = 10.0
STARTUP_S = 60.0  #: the longest a head-end may take to listen


@attrs.frozen
class Plan:
    """The sizes of a run."""

    terminals: int  #: in the connections test
    periods: tuple[tuple[float, float], ...]  #: (heartbeat period, seconds measured), realistic first
    ingest_terminals: int
    ingest_s: float
    warmup_s: float
    raw_readings: int
    fsync_on: bool  #: measure PostgreSQL with fsync on too
    idle_s: float  #: how long the head-end's CPU is measured with every terminal logged in and silent


FULL = Plan(terminals=10_000, periods=((60.0, 60.0), (10.0, 20.0)), ingest_terminals=1000, ingest_s=20.0,
            warmup_s=3.0, raw_readings=200_000, fsync_on=True, idle_s=5.0)
#: quick: a tenth of the terminals, heartbeats as often in all (167/s, then 1000/s) for less time
QUICK = Plan(terminals=1000, periods=((6.0, 6.0), (1.0, 3.0)), ingest_terminals=120, ingest_s=3.5,
             warmup_s=1.0, raw_readings=40_000, fsync_on=False, idle_s=1.5)


# -- the terminals (client processes) --------------------------------------------------------


def _up(area: str, address: int, afn: int, units: Sequence[g.DataUnit], *, prm: bool, function: int, seq: int,
        con: bool = False, master: int = 0) -> g.Frame:
    return g.Frame(direction=g.Direction.UP, prm=prm, function=function, area=area, terminal=address, afn=afn,
                   payload=g.pack_units(units), master=master, seq=seq, con=con)


class _Terminal(asyncio.Protocol):
    """One simulated concentrator's connection: sends what its client tells it, answers the
    head-end's requests, and times each confirm against the frame it confirms (by PSEQ)."""

    def __init__(self, client: _Client, address: int) -> None:
        self.client = client
        self.address = address
        self.decoder = g.StreamDecoder()
        self.transport: asyncio.Transport | None = None
        self.pfc = 0
        self.pending: dict[int, tuple[str, float]] = {}  # PSEQ -> (what, when sent)
        self.login: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.closing = False
        self.dropped = False
        self.reports = 0  #: report frames sent (each a minute later than the last)
        self.missed = False  #: a heartbeat of it was never confirmed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.dropped = True
            self.client.dropped += 1
        if not self.login.done():
            self.login.set_result(False)

    def send(self, what: str, afn: int, units: Sequence[g.DataUnit], function: int) -> None:
        seq = self.pfc & g.SEQ_MASK
        self.pfc += 1
        frame = g.encode(_up(AREA, self.address, afn, units, prm=True, function=function, seq=seq, con=True))
        assert self.transport is not None
        self.pending[seq] = (what, time.monotonic())
        self.transport.write(frame)

    def heartbeat(self) -> None:
        if not self.dropped:
            self.send("heartbeat", g.Afn.LINK, [d.unit([0], [3])], g.PrimaryFunction.LINK_TEST)

    def report(self) -> None:
        minute = self.reports
        self.reports += 1
        self.send("report", g.Afn.CLASS1, [g.DataUnit(self.client.points, [129], self.client.values(minute))],
                  g.PrimaryFunction.USER_DATA)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for frame in self.decoder.feed(data):
            if isinstance(frame, FrameError):
                self.client.damaged += 1
            elif frame.prm:
                self._answer(frame)
            else:
                self._confirmed(frame, now)

    def _answer(self, request: g.Frame) -> None:
        """The head-end reads the meter archive at login (AFN 0A F10): this terminal has none."""
        self.client.asked = time.monotonic()
        self.client.requests += 1
        if request.afn == g.Afn.QUERY:
            answer = _up(AREA, self.address, g.Afn.QUERY, [d.unit([0], [10], [d.MeterArchive([])])], prm=False,
                         function=g.SecondaryFunction.USER_DATA, seq=request.seq, master=request.master)
        else:
            answer = _up(AREA, self.address, g.Afn.CONFIRM, [g.DataUnit((0,), (2,))], prm=False,
                         function=g.SecondaryFunction.CONFIRM, seq=request.seq, master=request.master)
        assert self.transport is not None
        self.transport.write(g.encode(answer))

    def _confirmed(self, frame: g.Frame, now: float) -> None:
        sent = self.pending.pop(frame.seq, None)
        if frame.afn != g.Afn.CONFIRM or sent is None:
            self.client.unexpected += 1
            return
        (unit,) = d.units(frame)
        if unit.functions != (1,):
            self.client.denied += 1
            return
        what, at = sent
        if what == "login":
            if not self.login.done():
                self.login.set_result(True)
        elif what == "heartbeat":
            self.client.heartbeats.append(now - at)
        elif what == "report":
            self.client.on_report(self, now, now - at)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class _Client:
    """One client process: its terminals and what they measured."""

    def __init__(self, ports: Sequence[int], addresses: Sequence[int]) -> None:
        self.ports = ports
        self.addresses = addresses
        self.terminals: list[_Terminal] = []
        self.dropped = self.damaged = self.unexpected = self.denied = self.requests = 0
        self.asked = 0.0
        self.heartbeats: list[float] = []
        self.logins: list[float] = []
        self.failed_logins = 0
        self.points = list(range(1, POINTS_PER_REPORT + 1))
        self._values: dict[int, bytes] = {}
        self.window = (0.0, 0.0)
        self.stop_at = 0.0
        self.reported = 0
        self.report_times: list[float] = []

    def values(self, minute: int) -> bytes:
        """The F129 values of every point of a report read ``minute`` minutes after FIRST_READ
        (the same register values each minute; the read time makes the readings new)."""
        found = self._values.get(minute)
        if found is None:
            energy = d.TariffEnergy(FIRST_READ + timedelta(minutes=minute),
                                    [Decimal("123456.7800"), Decimal("12345.0000"), Decimal("45678.0000"),
                                     Decimal("34567.7800"), Decimal("30866.0000")])
            found = self._values[minute] = energy.encode() * POINTS_PER_REPORT
        return found

    def on_report(self, terminal: _Terminal, now: float, took: float) -> None:
        if self.window[0] <= now <= self.window[1]:
            self.reported += 1
            self.report_times.append(took)
        if now < self.stop_at:
            terminal.report()

    async def connect(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(LOGINS_IN_FLIGHT)

        async def one(i: int, address: int) -> None:
            async with gate:
                started = time.monotonic()
                try:
                    _, terminal = await loop.create_connection(lambda: _Terminal(self, address), "127.0.0.1",
                                                               self.ports[i % len(self.ports)])
                except OSError:
                    self.failed_logins += 1
                    return
                self.terminals.append(terminal)
                terminal.send("login", g.Afn.LINK, [d.unit([0], [1])], g.PrimaryFunction.LINK_TEST)
                try:
                    ok = await asyncio.wait_for(asyncio.shield(terminal.login), CONFIRM_WAIT_S * 3)
                except TimeoutError:
                    ok = False
                if ok:
                    self.logins.append(time.monotonic() - started)
                else:
                    self.failed_logins += 1

        started = time.monotonic()
        await asyncio.gather(*(one(i, a) for i, a in enumerate(self.addresses)))
        ramp = time.monotonic() - started
        self.asked = time.monotonic()
        while time.monotonic() - self.asked < SETTLED_S:  # the head-end reads each archive
            await asyncio.sleep(0.1)
        # the simulator's own objects out of the collector's way: a full collection over
        # thousands of connections would pause this client, and its timings, for ~0.1 s
        gc.collect()
        gc.freeze()
        return {"logins": self.logins, "failed": self.failed_logins, "ramp_s": ramp, "requests": self.requests,
                "settled_s": time.monotonic() - started, **self._health()}

    def _health(self) -> dict[str, Any]:
        return {"dropped": self.dropped, "damaged": self.damaged, "unexpected": self.unexpected,
                "denied": self.denied, "cpu_s": sum(os.times()[:2]),
                "open": sum(1 for t in self.terminals if not t.dropped),
                "held": sum(1 for t in self.terminals if t.login.done() and t.login.result() and not t.dropped
                            and not t.missed)}

    async def run_heartbeats(self, start: float, period: float, seconds: float, counts: bool) -> dict[str, Any]:
        """Each terminal: a heartbeat every ``period`` from a random offset, until ``start`` + ``seconds``;
        ``counts``: a terminal with a heartbeat left unconfirmed is no longer counted as held."""
        loop = asyncio.get_running_loop()
        self.heartbeats = []
        rng = random.Random(self.addresses[0])
        offset = loop.time() - time.monotonic()  # the loop's clock is the monotonic one; to be sure
        handles = []
        sent = 0
        for terminal in self.terminals:
            first = start + rng.uniform(0, period)
            for k in itertools.count():
                at = first + k * period
                if at >= start + seconds:
                    break
                handles.append(loop.call_at(at + offset, terminal.heartbeat))
                sent += 1
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        deadline = time.monotonic() + CONFIRM_WAIT_S
        while len(self.heartbeats) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        missing = 0
        for t in self.terminals:
            unconfirmed = sum(1 for what, _ in t.pending.values() if what == "heartbeat")
            t.missed = t.missed or (counts and unconfirmed > 0)
            missing += unconfirmed
            t.pending.clear()
        return {"latencies": self.heartbeats, "sent": sent, "missing": missing, **self._health()}

    async def run_reports(self, start: float, warmup: float, seconds: float) -> dict[str, Any]:
        """Each terminal: a report, and the next as soon as it is confirmed, from ``start`` for
        ``seconds``; counted after ``warmup``."""
        self.window = (start + warmup, start + seconds)
        self.stop_at = start + seconds
        self.reported = 0
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        for terminal in self.terminals:
            if not terminal.dropped:
                terminal.report()
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        deadline = time.monotonic() + CONFIRM_WAIT_S  # the last reports' confirms
        while any(t.pending for t in self.terminals if not t.dropped) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"reported": self.reported, "sent": sum(t.reports for t in self.terminals),
                "latencies": self.report_times,
                "missing": sum(len(t.pending) for t in self.terminals), **self._health()}

    def close(self) -> None:
        for terminal in self.terminals:
            terminal.close()


def _client_main(pipe: Connection, ports: Sequence[int], addresses: Sequence[int]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner's Ctrl-C is the runner's to handle
    asyncio.run(_client_loop(pipe, ports, addresses))


async def _client_loop(pipe: Connection, ports: Sequence[int], addresses: Sequence[int]) -> None:
    loop = asyncio.get_running_loop()
    client = _Client(ports, addresses)
    try:
        while True:
            command, *args = await loop.run_in_executor(None, pipe.recv)
            if command == "close":
                break
            try:
                result = await getattr(client, command)(*args)
            except Exception:  # the runner raises it, with this traceback
                pipe.send({"error": traceback.format_exc()})
                raise
            pipe.send(result)
    finally:
        client.close()
        await asyncio.sleep(0.1)
        pipe.send({"closed": True})


class _Clients:
    """The client processes, driven in step: each command goes to all, and their answers come back."""

    def __init__(self, ports: Sequence[int], terminals: int, processes: int = CLIENTS) -> None:
        context = multiprocessing.get_context("fork")
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        addresses = list(range(1, terminals + 1))
        for n in range(min(processes, terminals)):
            mine, theirs = context.Pipe()
            process = context.Process(target=_client_main, args=(theirs, ports, addresses[n::processes]),
                                      name=f"headend-bench-client-{n}", daemon=True)
            process.start()
            self.pipes.append(mine)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def ask(self, command: str, *args: Any, timeout: float = 600.0) -> list[dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send((command, *args))
        answers = []
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            if not pipe.poll(timeout):
                raise RuntimeError(f"head-end benchmark: client {process.name} gave no answer to {command!r} "
                                   f"within {timeout:g} s")
            answer = pipe.recv()
            if "error" in answer:
                raise RuntimeError(f"head-end benchmark: client {process.name} failed at {command!r}:\n{answer['error']}")
            answers.append(answer)
        return answers

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, BrokenPipeError):
                pipe.send(("close",))
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the head-end process --------------------------------------------------------------------


@attrs.define
class _Node:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


_LISTENING = re.compile(rb"listening on [^:\s]+:(\d+)")


@contextlib.contextmanager
def _head_end(db: str, folder: Path, name: str, *, profile: Path | None) -> Iterator[_Node]:
    """``meterhub head-end`` on a free port of 127.0.0.1 (under cProfile with ``profile``)."""
    run = [sys.executable, *(["-m", "cProfile", "-o", str(profile / f"{name}.prof")] if profile else [])]
    argv = [*run, "-m", "meterhub.cli", "head-end", "--listen", "127.0.0.1:0", "--db", db, "--allow-any",
            "--node", name, "--realtime", "0", "--frozen-days", "0", "--frozen-months", "0", "--timezone", "UTC"]
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out)
    try:
        deadline = time.monotonic() + STARTUP_S
        while (found := _LISTENING.search(log.read_bytes()[:4096])) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"head-end benchmark: `{' '.join(argv[1:])}` did not start:\n"
                                   f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield _Node(process, int(found[1]), log)
    finally:
        if process.poll() is None:
            # SIGTERM: it closes its sessions (a store write each) and its writer, and cProfile
            # writes its figures; without a profile it is killed: nothing of it is needed any more
            process.send_signal(signal.SIGTERM if profile else signal.SIGKILL)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# -- what /proc says -------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _machine_busy_s() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall-clock CPU seconds available) so far."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _TICK, sum(fields[:8]) / _TICK


class _CpuShare:
    """The share of the machine's CPU each side used between ``start()`` and ``stop()``."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = groups
        self.before: dict[str, float] = {}
        self.shares: dict[str, float] = {}
        self.seconds: dict[str, float] = {}  #: CPU seconds of each group

    def _now(self) -> dict[str, float]:
        busy, total = _machine_busy_s()
        return {"_busy": busy, "_total": total, **{k: sum(_cpu_s(p) for p in pids) for k, pids in self.groups.items()}}

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> None:
        after = self._now()
        total = after["_total"] - self.before["_total"]
        self.seconds = {k: after[k] - self.before[k] for k in self.groups}
        used = {k: (after[k] - self.before[k]) / total for k in after if k != "_total"}
        used["other"] = used.pop("_busy") - sum(v for k, v in used.items() if k != "_busy")
        used["idle"] = 1 - sum(used.values())
        self.shares = used

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.0%}" for k, v in self.shares.items())


def _postgres_pids(server: Any) -> list[int]:
    pid = int((server.directory / "data" / "postmaster.pid").read_text().split()[0])
    return [pid, *_children(pid)]


# -- connections -----------------------------------------------------------------------------


_STARTED = time.monotonic()


def _say(what: str) -> None:
    """Progress on stderr, as the runner reports its scenarios."""
    print(f"  headend {time.monotonic() - _STARTED:6.1f} s: {what}", file=sys.stderr, flush=True)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def _connections(plan: Plan, folder: Path, profile: Path | None, quick: bool, db: str = "") -> list[Figure]:
    n = plan.terminals
    with _head_end(db or f"sqlite:///{folder / 'connections.db'}", folder, "conn", profile=profile) as node:
        time.sleep(0.5)
        idle_kib = _rss_kib(node.process.pid)
        with _Clients([node.port], n) as clients:
            cpu = _CpuShare({"head-end": [node.process.pid], "clients": clients.pids})
            cpu.start()
            _say(f"{n} terminals log in")
            connected = clients.ask("connect")
            cpu.stop()
            ramp_cpu = str(cpu)
            logins = [t for c in connected for t in c["logins"]]
            ramp_s = max(c["ramp_s"] for c in connected)
            settled_s = max(c["settled_s"] for c in connected)
            held_kib = _rss_kib(node.process.pid)
            cpu.start()  # the cost of holding the connections: no frame comes
            time.sleep(plan.idle_s)
            cpu.stop()
            idle_core = cpu.seconds["head-end"] / plan.idle_s
            phases = []
            for k, (period, seconds) in enumerate(plan.periods):
                start = time.monotonic() + 1.0
                _say(f"heartbeats every {period:g} s for {seconds:g} s")
                cpu.start()
                beats = clients.ask("run_heartbeats", start, period, seconds, k == 0)
                cpu.stop()
                latencies = [t for c in beats for t in c["latencies"]]
                per_beat = cpu.seconds["head-end"] / max(1, len(latencies)) * 1e6
                phases.append((period, seconds, latencies, sum(c["sent"] for c in beats),
                               sum(c["missing"] for c in beats), f"{cpu}; head-end CPU {per_beat:.0f} µs a heartbeat"))
            end_kib = _rss_kib(node.process.pid)
            health = beats
            dropped = sum(c["dropped"] for c in health)
            still_open = sum(c["open"] for c in health)
            oddities = {k: sum(c[k] for c in health) for k in ("damaged", "unexpected", "denied")}
        refused = node.log.read_text(errors="replace").count("new ones are closed at once")
    missing = sum(p[4] for p in phases)
    held = sum(c["held"] for c in health)
    per_conn = (held_kib - idle_kib) / max(1, len(logins))
    shape = (f"{n:,} terminals in {min(CLIENTS, n)} client processes over 127.0.0.1 to one `meterhub head-end "
             f"--allow-any` ({'a ' + db.split(':')[0] if db else 'SQLite'} store, its default INFO log to a file)")
    figures = [
        Figure("headend_connections_held", held, "connections", None if quick else float(CONNECTIONS_GOAL), "higher",
               f"{shape}: logged in and every heartbeat at the realistic rate confirmed (in {CONFIRM_WAIT_S:g} s), "
               f"and open at the end; logged in {len(logins):,}, failed logins {sum(c['failed'] for c in connected)}, "
               f"open at the end {still_open:,}, heartbeats unconfirmed {phases[0][4]} at the realistic rate and "
               f"{missing - phases[0][4]} at the higher one, refused by the head-end {refused}; "
               f"{'quick: 1,000 terminals; the goal of 10,000 is the full run' if quick else ''}"),
        Figure("headend_logins_per_s", round(len(logins) / ramp_s, 1), "logins/s", None, "higher",
               f"ramp: connect + login (AFN 02 F1) confirmed, {LOGINS_IN_FLIGHT} in flight per client process; "
               f"{len(logins):,} in {ramp_s:.1f} s; login p50 {statistics.median(logins) * 1000:.1f} ms, "
               f"p99 {_percentile(logins, 0.99) * 1000:.1f} ms; the head-end's reads of each archive at login "
               f"(AFN 0A F10, 8 requests) over after {settled_s:.1f} s; CPU during the ramp: {ramp_cpu}"),
    ]
    for k, (period, seconds, latencies, sent, lost, share) in enumerate(phases):
        rate = n / period
        tag = "" if k == 0 else "_fast"
        ms = [t * 1000 for t in latencies]
        what = (f"{len(ms):,} heartbeats (AFN 02 F3, CON=1) of {sent:,} sent, {lost} unconfirmed, over {seconds:g} s: "
                f"each terminal every {period:g} s ({rate:,.0f}/s); client-side, write to confirm read; "
                f"max {max(ms, default=float('nan')):.1f} ms; CPU: {share}")
        figures += [
            Figure(f"headend_heartbeat{tag}_p50_ms", round(statistics.median(ms), 2) if ms else float("nan"), "ms",
                   None, "lower", what),
            Figure(f"headend_heartbeat{tag}_p99_ms", round(_percentile(ms, 0.99), 2), "ms",
                   HEARTBEAT_P99_GOAL_MS if k == 0 else None, "lower",
                   f"99th percentile; {what}" if k == 0 else f"99th percentile, at the higher rate; {what}"),
        ]
    figures += [
        Figure("headend_idle_cpu_share", round(idle_core, 3), "cores", None, "lower",
               f"the head-end's CPU with {len(logins):,} terminals logged in and silent, over {plan.idle_s:g} s"),
        Figure("headend_rss_per_connection_kib", round(per_conn, 1), "KiB", None, "lower",
               f"head-end VmRSS {idle_kib / 1024:.1f} MiB idle, {held_kib / 1024:.1f} MiB with {len(logins):,} "
               f"logged in, {end_kib / 1024:.1f} MiB after the heartbeats: (held - idle) / logins"),
        Figure("headend_dropped_connections", dropped, "connections", 0.0, "lower",
               f"connections the head-end closed during the run; frames damaged {oddities['damaged']}, unexpected "
               f"{oddities['unexpected']}, denied {oddities['denied']}"),
    ]
    return figures


# -- ingest ----------------------------------------------------------------------------------


@attrs.frozen
class _Ingest:
    rate: float  #: readings/s confirmed
    reports: int
    seconds: float
    latencies: tuple[float, ...]
    stored: int
    cpu: str
    dropped: int
    cpu_us: float  #: head-end CPU (all nodes) per reading stored, µs


def _ingest(urls: Sequence[str], plan: Plan, folder: Path, name: str, profile: Path | None,
            postgres: Any = None) -> _Ingest:
    """``plan.ingest_terminals`` terminals reporting to one head-end per URL (the same store
    for all), split between them."""
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(_head_end(url, folder, f"{name}{i}" if len(urls) > 1 else name, profile=profile))
                 for i, url in enumerate(urls)]
        clients = stack.enter_context(_Clients([node.port for node in nodes], plan.ingest_terminals))
        _say(f"ingest {name}: {plan.ingest_terminals} terminals log in to {len(nodes)} node(s)")
        connected = clients.ask("connect")
        failed = sum(c["failed"] for c in connected)
        if failed:
            raise RuntimeError(f"head-end benchmark: {failed} of {plan.ingest_terminals} terminals did not log in")
        groups = {"head-end": [node.process.pid for node in nodes], "clients": clients.pids}
        if postgres is not None:
            groups["postgres"] = _postgres_pids(postgres)
        cpu = _CpuShare(groups)
        start = time.monotonic() + 0.5
        _say(f"ingest {name}: reports for {plan.ingest_s:g} s")
        cpu.start()
        answers = clients.ask("run_reports", start, plan.warmup_s, plan.ingest_s)
        cpu.stop()
    _say(f"ingest {name}: done")
    reports = sum(c["reported"] for c in answers)
    seconds = plan.ingest_s - plan.warmup_s
    stored = _count(urls[0])
    sent = sum(c["sent"] for c in answers)
    if stored < reports * READINGS_PER_REPORT or stored > sent * READINGS_PER_REPORT:
        raise RuntimeError(f"head-end benchmark: {reports} reports confirmed in the window and {sent} sent in all, "
                           f"but {stored} readings stored (each report has {READINGS_PER_REPORT})")
    return _Ingest(reports * READINGS_PER_REPORT / seconds, reports, seconds,
                   tuple(t for c in answers for t in c["latencies"]), stored, str(cpu),
                   sum(c["dropped"] for c in answers), cpu.seconds["head-end"] / max(1, stored) * 1e6)


def _count(url: str) -> int:
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])


def _raw_ingest(url: str, total: int) -> tuple[float, float]:
    """Readings/s of ``open_store(url).add_readings`` in batches of RAW_BATCH, the readings the
    head-end makes of F129 reports; (rate, seconds)."""
    from meterhub.protocols.gdw1376_1_quantities import readings_of
    from meterhub.store import open_store

    received = datetime.now(UTC)
    readings = []
    for k in itertools.count():
        energy = d.TariffEnergy(FIRST_READ + timedelta(minutes=k % 10_000), [Decimal("123456.7800"), Decimal(
            "12345.0000"), Decimal("45678.0000"), Decimal("34567.7800"), Decimal("30866.0000")])
        for point in range(1, POINTS_PER_REPORT + 1):
            item = d.Item(point, 129, energy)
            readings += readings_of(item, terminal=f"{AREA}{1 + k // 10_000:04X}", zone=UTC, received=received)
        if len(readings) >= total:
            break
    batches = [readings[i:i + RAW_BATCH] for i in range(0, len(readings), RAW_BATCH)]
    store = open_store(url)
    try:
        started = time.perf_counter()
        for batch in batches:
            store.add_readings(batch)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    return len(readings) / seconds, seconds


def _ingest_figures(plan: Plan, folder: Path, profile: Path | None) -> list[Figure]:
    from meterhub.testing.postgres import PostgresServer, unavailable_reason

    shape = (f"{plan.ingest_terminals:,} terminals in {min(CLIENTS, plan.ingest_terminals)} client processes, each "
             f"sending AFN 0C F129 reports of {POINTS_PER_REPORT} points ({READINGS_PER_REPORT} readings, CON=1) one "
             f"after another, the next once the last is confirmed (the head-end confirms after its commit); counted "
             f"over {plan.ingest_s - plan.warmup_s:g} s after a {plan.warmup_s:g} s warm-up")

    def note(result: _Ingest, raw: tuple[float, float], store: str) -> str:
        ms = [t * 1000 for t in result.latencies]
        return (f"{shape}; into {store}: {result.reports:,} reports confirmed, report to confirm p50 "
                f"{statistics.median(ms):.1f} ms, p99 {_percentile(ms, 0.99):.1f} ms; {result.stored:,} readings in the "
                f"store after; connections dropped {result.dropped}; CPU: {result.cpu}; head-end CPU "
                f"{result.cpu_us:.1f} µs a reading (one core: {1e6 / result.cpu_us:,.0f} readings/s); the raw store "
                f"(add_readings, batches of {RAW_BATCH}) takes {raw[0]:,.0f} readings/s here, "
                f"{raw[0] / result.rate:.1f}x the head-end")

    sqlite_url = f"sqlite:///{folder / 'ingest.db'}"
    result = _ingest([sqlite_url], plan, folder, "sqlite", profile)
    _say("raw store ingest, SQLite")
    raw = _raw_ingest(f"sqlite:///{folder / 'raw.db'}", plan.raw_readings)
    figures = [
        Figure("headend_ingest_sqlite_readings_per_s", round(result.rate), "readings/s", None, "higher",
               note(result, raw, "SQLite (WAL, synchronous=FULL)")),
        Figure("headend_store_sqlite_readings_per_s", round(raw[0]), "readings/s", None, "higher",
               f"raw store: {plan.raw_readings:,} readings (F129 of 8 points as the head-end makes them) by "
               f"open_store(url).add_readings in batches of {RAW_BATCH}, one process; {raw[1]:.2f} s"),
    ]
    why = unavailable_reason()
    if why is not None:
        return [*figures, Figure("headend_ingest_postgres_readings_per_s", float("nan"), "readings/s",
                                 INGEST_GOAL_PER_S, "higher", f"not measured: {why}")]
    settings = [("", {})]
    if plan.fsync_on:
        settings.append(("_fsync", {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}))
    one_node = None
    for tag, extra in settings:
        with PostgresServer(settings=extra) as server:
            durability = ("fsync, synchronous_commit and full_page_writes on" if extra else
                          "fsync, synchronous_commit and full_page_writes OFF, as the test server is made")
            result = _ingest([server.create_database("headend")], plan, folder, f"pg{tag}", profile, server)
            raw = _raw_ingest(server.create_database("raw"), plan.raw_readings)
            figures += [
                Figure(f"headend_ingest_postgres{tag}_readings_per_s", round(result.rate), "readings/s",
                       INGEST_GOAL_PER_S, "higher", note(result, raw, f"PostgreSQL on this machine ({durability})")),
                Figure(f"headend_store_postgres{tag}_readings_per_s", round(raw[0]), "readings/s", None, "higher",
                       f"raw store: {plan.raw_readings:,} readings by open_store(url).add_readings in batches of "
                       f"{RAW_BATCH}, one process; {raw[1]:.2f} s; {durability}"),
            ]
            if not extra:
                one_node = result
                url = server.create_database("two")
                two = _ingest([url, url], plan, folder, "pg-two", profile, server)
                figures.append(Figure(
                    "headend_two_nodes_ratio", round(two.rate / one_node.rate, 3), "x one node", TWO_NODES_GOAL,
                    "higher",
                    f"two `meterhub head-end` processes on one PostgreSQL database (fsync off), the "
                    f"{plan.ingest_terminals:,} terminals split between them: {two.rate:,.0f} readings/s against "
                    f"{one_node.rate:,.0f} for one node; CPU: {two.cpu}; head-end CPU {two.cpu_us:.1f} µs a reading "
                    f"on two nodes against {one_node.cpu_us:.1f} on one; dropped {two.dropped}; both nodes, the "
                    f"clients and PostgreSQL share the 2 cores"))
    return figures


# -- running ---------------------------------------------------------------------------------


def run(quick: bool, profile: Path | None = None) -> list[Figure]:
    plan = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="meterhub-bench-headend-") as tmp:
        folder = Path(tmp)
        figures = _connections(plan, folder, profile, quick)
        figures += _ingest_figures(plan, folder, profile)
    return figures


def _print_profiles(folder: Path, top: int = 25) -> None:
    import pstats

    for path in sorted(folder.glob("*.prof")):
        print(f"\n== {path.name}: cumulative, then own time ==")
        stats = pstats.Stats(str(path))
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.headend", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", metavar="DIR", type=Path,
                        help="run each head-end under cProfile, keep DIR/<node>.prof and print the top functions")
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    for fig in run(args.quick, args.profile):
        goal = "" if fig.goal is None else f"  goal {'≤' if fig.better == 'lower' else '≥'} {fig.goal:g}: " + (
            "met" if fig.met else "NOT met")
        print(f"{fig.name}: {fig.value:,.4g} {fig.unit}{goal}\n    {fig.note}")
    if args.profile:
        _print_profiles(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
