"""Store: how many readings a second reach the SQLite store, durably, in the runtime's shape.

The concentrator stores each meter's readings as soon as the meter is read, and a meter's
channel moves on only once they are committed (``await StoreWriter.add_readings``): a
reading is never acknowledged before it would survive a power cut (``synchronous=FULL``).
With 8 channels, 8 meters' writes are in flight at once and the writer thread merges what
queued up while it was busy into one transaction (group commit); one meter at a time shows
what a write costs without that. Every reading is counted in the file afterwards, so no
figure counts work that was lost.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
from meterhub.model import Reading
from meterhub.store import open_store
from meterhub.store.writer import StoreWriter

from .figures import Figure

INGEST_GOAL_PER_S = 100_000.0
#: channels read at once, each waiting for its meter's commit before the next meter
CHANNELS = 8
#: the uplink whose outbox gets every reading, as a site with one uplink has
OUTBOX = ("feed",)
#: what a DL/T 645 meter is read for in a typical round: (OBIS code, unit)
QUANTITIES = (
    ("1-0:1.8.0", "kWh"), ("1-0:1.8.1", "kWh"), ("1-0:1.8.2", "kWh"), ("1-0:1.8.3", "kWh"), ("1-0:1.8.4", "kWh"),
    ("1-0:1.7.0", "kW"), ("1-0:32.7.0", "V"), ("1-0:31.7.0", "A"),
)
#: a round's start, and the time one transaction takes on a 2400 bit/s bus
ROUND_START = datetime(2025, 3, 1, 0, 15, tzinfo=UTC)
TRANSACTION = timedelta(milliseconds=120)


@attrs.frozen
class Ingest:
    """One timed run: readings stored, the seconds it took, the commits it cost."""

    readings: int
    seconds: float
    commits: int
    merged: int

    @property
    def rate(self) -> float:
        return self.readings / self.seconds


def run(quick: bool) -> list[Figure]:
    meters, rounds = (2048, 2) if quick else (8192, 3)
    batches = meter_readings(meters)
    concurrent = max((ingest(batches, lanes=CHANNELS) for _ in range(rounds)), key=lambda r: r.rate)
    serial = max((ingest(batches, lanes=1) for _ in range(rounds)), key=lambda r: r.rate)
    fsync_ms = fsync_time() * 1000
    shape = f"{meters} meters × {len(QUANTITIES)} readings, outbox {OUTBOX[0]!r}, best of {rounds}"
    return [
        Figure("store_ingest_readings_per_s", concurrent.rate, "readings/s", INGEST_GOAL_PER_S, better="higher",
               note=f"{shape}; {CHANNELS} meters in flight; {concurrent.commits} commits "
                    f"({concurrent.merged} merged), {concurrent.seconds:.2f} s"),
        Figure("store_ingest_serial_readings_per_s", serial.rate, "readings/s", INGEST_GOAL_PER_S, better="higher",
               note=f"{shape}; one meter at a time; {serial.commits} commits, {serial.seconds:.2f} s; "
                    f"an fsync of 4 KiB in the temp folder takes {fsync_ms:.2f} ms here"),
    ]


def meter_readings(meters: int) -> list[list[Reading]]:
    """Each meter's readings of one round, as the runtime hands them to the store: meter
    ``m`` on channel ``bus{m % CHANNELS}``, read after the meters before it on that bus."""
    batches = []
    for m in range(meters):
        channel, turn = m % CHANNELS, m // CHANNELS
        read_at = ROUND_START + turn * len(QUANTITIES) * TRANSACTION
        # DL/T 645-2007 data formats: energy XXXXXX.XX kWh (the tariffs add up to the
        # total), power XX.XXXX kW, voltage XXX.X V, current XXX.XXX A
        total = 10_000 + m * 37
        tariffs = (total // 10, total * 4 // 10, total * 3 // 10)
        values = (_scaled(total, 2), *(_scaled(t, 2) for t in tariffs), _scaled(total - sum(tariffs), 2),
                  _scaled(1050 + m % 90_000, 4), _scaled(2200 + m % 100, 1), _scaled(m % 60_000, 3))
        batches.append([
            Reading(meter=f"{m + 1:012d}", quantity=obis, value=value, unit=unit,
                    timestamp=read_at + (q + 1) * TRANSACTION, channel=f"bus{channel}", protocol="dlt645",
                    latency=0.095 + q / 1000)
            for q, ((obis, unit), value) in enumerate(zip(QUANTITIES, values, strict=True))
        ])
    return batches


def fsync_time(writes: int = 50) -> float:
    """Median seconds of a 4 KiB write and its fsync in the folder the store files go to:
    what a commit at synchronous=FULL waits for at least (a gateway's flash is slower than
    a server's disk, so read the figures with it)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="meterhub-bench-") as tmp:
        fd = os.open(Path(tmp) / "fsync", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(writes):
                started = time.perf_counter()
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
                times.append(time.perf_counter() - started)
        finally:
            os.close(fd)
    return statistics.median(times)


def _scaled(digits: int, decimals: int) -> Decimal:
    """``digits`` with ``decimals`` of them after the point, as the meter sends it (BCD)."""
    return Decimal(digits).scaleb(-decimals)


def ingest(batches: Sequence[Sequence[Reading]], *, lanes: int) -> Ingest:
    """Store ``batches`` in a new file, ``lanes`` meters in flight, and check they all are there."""
    with tempfile.TemporaryDirectory(prefix="meterhub-bench-") as tmp:
        path = Path(tmp) / "store.db"
        result = asyncio.run(_ingest(path, batches, lanes))
        expected = sum(len(batch) for batch in batches)
        with sqlite3.connect(path) as conn:
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            queued = conn.execute("SELECT count(*) FROM outbox WHERE uplink = ?", OUTBOX).fetchone()[0]
        conn.close()
        if not expected == result.readings == stored == queued:
            raise RuntimeError(f"{expected} readings written, {result.readings} reported new, {stored} stored, "
                               f"{queued} queued for {OUTBOX[0]!r}")
        return result


async def _ingest(path: Path, batches: Sequence[Sequence[Reading]], lanes: int) -> Ingest:
    async with StoreWriter(lambda: open_store(f"sqlite:///{path}")) as writer:
        commits_before = await writer.call(lambda store: store.commits)

        async def lane(own: Sequence[Sequence[Reading]]) -> int:
            new = 0
            for readings in own:
                new += await writer.add_readings(readings, outbox=OUTBOX)
            return new

        started = time.perf_counter()
        counts = await asyncio.gather(*(lane(batches[i::lanes]) for i in range(lanes)))
        seconds = time.perf_counter() - started
        commits = await writer.call(lambda store: store.commits) - commits_before
        return Ingest(sum(counts), seconds, commits, writer.merged_writes)
