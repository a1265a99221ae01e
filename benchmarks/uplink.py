"""Uplink: the Q/GDW 1376.1 codec's throughput, and how soon a stored reading reaches a
master station through the ``gdw1376.1`` uplink.

* Codec: frames per second of :mod:`meterhub.protocols.gdw1376_1` and its data module for
  an active report as :mod:`meterhub_gprs.uplink` sends it (AFN 0C F129 of one measuring
  point with a total and 4 tariffs, uplink PRM = 1, function 4, CON = 1): encode from the
  F129 value to the wire bytes, decode from the wire bytes to the F129 value
  (``decode`` + ``gdw1376_1_data.items``), and stream decoding of 200 reports with noise
  between them in 1-64-byte chunks. PyPI has no Q/GDW 1376.1 codec, so rates only.
  Before anything is timed, the encoded report is checked byte-equal to the frame the
  uplink itself builds from the same readings, and the decoders' results are checked.
* Loopback: the runtime's path from a meter's readings to the master, in one process on
  127.0.0.1. A :class:`~meterhub.runtime.Concentrator` (no channels, no rounds) over a
  new SQLite store file, its uplink ``master`` fed by the outbox; the real
  ``Gdw1376Uplink`` over TCP, on :class:`meterhub.uplinks.ConcentratorTerminal`, to
  :class:`meterhub.headend.station.MasterStation`. Each meter's readings (1-0:1.8.0 and
  1.8.1-1.8.4) are stored as a round stores them (``Concentrator._store_readings``: one
  durable commit per meter, with the outbox rows, then the uplink is woken), 8 meters in
  flight as 8 channels would have them. Measured per meter: from the commit (the store
  call returning) to the master having its F129 item in ``received`` (it has stored it
  and sent the confirm), and to the uplink's acknowledgement of the outbox rows
  (committed after the master's confirm arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
from meterhub.errors import FrameError
from meterhub.model import Meter, OutboxItem, Reading, Site, UplinkConfig
from meterhub.plugins import Plugins
from meterhub.protocols import gdw1376_1 as g
from meterhub.protocols import gdw1376_1_data as d
from meterhub.runtime import Concentrator
from meterhub.store import open_store
from meterhub.uplinks import ConcentratorTerminal

from .codecs import FPS, MAX_CHUNK, MAX_NOISE, STREAM_FRAMES, interleaved_rates
from .codecs import _noisy_stream as noisy_stream
from .figures import Figure

SEED = 1376
AREA, TERMINAL = "3201", 1
UPLINK = "master"
#: what each meter is read for: total and 4 tariffs of forward active energy (F129)
QUANTITIES = ("1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4")
#: meters (measuring points 1..POINTS) and the meters in flight at once (channels)
POINTS = 200
CHANNELS = 8
#: in the latency runs each channel stores a meter every PACE_S, the channels staggered
#: (PACE_S / CHANNELS apart), as from buses: a DL/T 645 meter read for 5 quantities takes
#: about 0.6 s at 2400 Bd; this is 6 times faster, and well below what the uplink can send
PACE_S = 0.1
ROUND_START = datetime(2026, 3, 1, 8, 15, tzinfo=UTC)
WAIT_S = 60.0  #: the longest any phase may take before the benchmark gives up


# -- the report ------------------------------------------------------------------------------


def meter_readings(point: int, when: datetime) -> list[Reading]:
    """One meter's energy readings (kWh, 2 decimals as DL/T 645 gives them; tariffs add up)."""
    total = 1_000_000 + point * 3_701
    tariffs = (total // 10, total * 4 // 10, total * 3 // 10)
    values = (total, *tariffs, total - sum(tariffs))
    return [Reading(meter=f"{point:012d}", quantity=q, value=Decimal(v).scaleb(-2), unit="kWh",
                    timestamp=when + timedelta(seconds=1 + i), channel=f"bus{point % CHANNELS}", protocol="dlt645")
            for i, (q, v) in enumerate(zip(QUANTITIES, values, strict=True))]


def report_frame(point: int, energy: d.TariffEnergy, seq: int) -> g.Frame:
    """The active report of ``energy`` as the uplink makes it (``_report_frames`` + ``_frame``)."""
    return g.Frame(direction=g.Direction.UP, prm=True, function=g.PrimaryFunction.USER_DATA, area=AREA,
                   terminal=TERMINAL, afn=g.Afn.CLASS1,
                   payload=g.pack_units([g.DataUnit([point], [129], energy.encode())]), seq=seq, con=True)


def _uplink_report(readings: Sequence[Reading], point: int, seq: int) -> bytes:
    """The bytes the uplink itself builds for ``readings`` (its report frame of the outbox
    items and its frame builder; private API, used here only as the reference)."""
    from meterhub_gprs import uplink as up

    meter = Meter(readings[0].meter, "dlt645", readings[0].channel, QUANTITIES, point=point)

    class Points:
        def points(self) -> dict[int, Meter]:
            return {point: meter}

    uplink = up.Gdw1376Uplink(up.settings({"server": "127.0.0.1:1", "area_code": AREA, "terminal_address": TERMINAL}),
                              Points())  # type: ignore[arg-type]
    items = [OutboxItem(i, UPLINK, r, r.timestamp) for i, r in enumerate(readings, 1)]
    try:
        frames = uplink._report_frames(items)
        ((afn, units, ids),) = frames
        frame = uplink._frame(afn, units, prm=True, function=g.PrimaryFunction.USER_DATA, seq=seq, con=True)
    except (AttributeError, TypeError, ValueError) as exc:
        raise RuntimeError(f"uplink benchmark: the uplink's report builder changed ({exc}); update _uplink_report") from exc
    _require(ids == [item.id for item in items], "the uplink does not report every reading in one frame")
    return g.encode(frame)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"uplink benchmark precondition failed: {what}")


# -- running ---------------------------------------------------------------------------------


def run(quick: bool) -> list[Figure]:
    seconds, rounds = (0.3, 3) if quick else (1.0, 7)
    figures = _codec_figures(lambda **works: interleaved_rates(works, seconds=seconds, rounds=rounds))
    figures += _loopback_figures(rounds=1 if quick else 3)
    return figures


def _codec_figures(race: Callable[..., dict[str, float]]) -> list[Figure]:
    from meterhub_gprs.uplink import tariff_energy

    when = ROUND_START
    readings = meter_readings(1, when)
    energy = tariff_energy({r.quantity: r for r in readings})
    _require(energy is not None and len(energy.values) == 5, "tariff_energy gives no F129 of total + 4 tariffs")
    assert energy is not None
    report = g.encode(report_frame(1, energy, 5))
    _require(report == _uplink_report(readings, 1, 5), "our report and the uplink's differ")
    _require(len(report) == 8 + 8 + 4 + 5 + 1 + 5 * 5, f"an F129 report of 4 tariffs is 51 bytes, got {len(report)}")

    def encode() -> int:
        g.encode(report_frame(1, energy, 5))
        return 1

    def decode_items() -> tuple[d.Item, ...]:
        return d.items(g.decode(report))

    (item,) = decode_items()
    _require((item.point, item.fn, item.value) == (1, 129, energy), "the report decodes to another F129")
    _require(item.value.values == tuple(r.value for r in readings), "F129 values differ from the readings")

    # stream: reports of 16 points at 4 read times, PSEQ counting, noise between (never 68h)
    rng = random.Random(SEED)
    variety = []
    for n in range(64):
        point, at = 1 + n % 16, when + timedelta(minutes=15 * (n // 16))
        e = tariff_energy({r.quantity: r for r in meter_readings(point, at)})
        assert e is not None
        variety.append(g.encode(report_frame(point, e, n % 16)))
    chunks, sent = noisy_stream(variety, rng)

    def stream_frames() -> list[g.Frame | FrameError]:
        decoder = g.StreamDecoder()
        return [found for chunk in chunks for found in decoder.feed(chunk)]

    _require(stream_frames() == [g.decode(f) for f in sent], "the 1376.1 stream decoder missed or invented frames")

    rates = race(encode=encode, decode=lambda: len(decode_items()), stream=lambda: len(stream_frames()))
    none = "ours only: PyPI has no Q/GDW 1376.1 codec"
    what = (f"a {len(report)}-byte active report, AFN 0C F129 of one point, total + 4 tariffs (uplink PRM=1, fn 4, "
            "CON=1), byte-equal to the uplink's own")
    return [
        Figure("gdw1376_encode_fps", round(rates["encode"]), FPS, None, "higher",
               f"F129 value -> DataUnit -> Frame -> encode; {what}; {none}"),
        Figure("gdw1376_decode_fps", round(rates["decode"]), FPS, None, "higher",
               f"decode + gdw1376_1_data.items to the F129 value; {what}; {none}"),
        Figure("gdw1376_stream_fps", round(rates["stream"]), FPS, None, "higher",
               f"StreamDecoder().feed: {STREAM_FRAMES} such reports (16 points, 4 read times) with 0-{MAX_NOISE} "
               f"noise bytes before each (no 68h), fed in 1-{MAX_CHUNK} B chunks; {none}"),
    ]


# -- loopback --------------------------------------------------------------------------------


Key = tuple[int, datetime]  #: (measuring point, read time as F129 carries it: local, to the minute)


class _TimedTerminal(ConcentratorTerminal):
    """The uplink's terminal facade, noting when each report's outbox rows were acknowledged."""

    def __init__(self, name: str, concentrator: Concentrator) -> None:
        super().__init__(name, concentrator)
        self.keys: dict[int, Key] = {}
        self.acked: dict[Key, float] = {}

    async def outbox(self, limit: int = 100) -> list[OutboxItem]:
        from meterhub_gprs.uplink import local_minute

        items = await super().outbox(limit)
        for item in items:
            if isinstance(item.item, Reading):
                self.keys[item.id] = (int(item.item.meter), local_minute(item.item.timestamp))
        return items

    async def ack(self, ids: Any) -> int:
        wanted = list(ids)
        done = await super().ack(wanted)
        now = time.perf_counter()
        for i in wanted:
            if i in self.keys:
                self.acked.setdefault(self.keys[i], now)
        return done


@attrs.frozen
class Phase:
    """One round of every meter through the uplink: per meter, seconds from commit to the
    master's having it and to the ack; and the round's wall time (first store to last report)."""

    to_master: tuple[float, ...]
    to_ack: tuple[float, ...]
    seconds: float

    @property
    def reports_per_s(self) -> float:
        return len(self.to_master) / self.seconds


def _loopback_figures(*, rounds: int) -> list[Figure]:
    logging.getLogger("meterhub").setLevel(logging.ERROR)
    logging.getLogger("meterhub_gprs").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="meterhub-bench-") as tmp:
        paced, bursts, queued = asyncio.run(_loopback(Path(tmp) / "hub.db", rounds))
    _require(queued == 0, f"{queued} outbox rows were never acknowledged")
    to_master = [t for phase in paced for t in phase.to_master]
    to_ack = [t for phase in paced for t in phase.to_ack]
    best = max(bursts, key=lambda p: p.reports_per_s)
    burst_ms = sorted(t * 1000 for t in best.to_master)
    median_ms = statistics.median(to_master) * 1000
    p95_ms = _percentile(to_master, 0.95) * 1000
    setup = (f"{POINTS} meters (points) x 5 energy readings (1.8.0-1.8.4), {CHANNELS} in flight; SQLite store "
             f"(WAL, synchronous=FULL) -> outbox -> gdw1376.1 uplink over TCP 127.0.0.1 -> MasterStation, one process")
    paced_what = (f"{len(to_master)} meters over {rounds} round(s), each channel storing a meter every "
                  f"{PACE_S * 1000:g} ms, staggered ({CHANNELS / PACE_S:g} meters/s, one every {PACE_S / CHANNELS * 1000:g} ms)")
    return [
        Figure("uplink_confirm_latency_ms", round(median_ms, 2), "ms", None, "lower",
               f"median, per meter, from the commit of its readings (store call returned) to its F129 item in "
               f"MasterStation.received (stored there, confirm sent); {paced_what}; to the outbox ack (committed "
               f"after the confirm): median {statistics.median(to_ack) * 1000:.2f} ms; {setup}"),
        Figure("uplink_confirm_p95_ms", round(p95_ms, 2), "ms", None, "lower",
               f"95th percentile of the same; to the outbox ack p95 {_percentile(to_ack, 0.95) * 1000:.2f} ms, "
               f"max {max(to_master) * 1000:.2f} ms to the master"),
        Figure("uplink_reports_per_s", round(best.reports_per_s, 1), "reports/s", None, "higher",
               f"F129 reports (one per meter, one frame each: sent, confirmed, acked, then the next) confirmed per "
               f"second when all {POINTS} meters are stored at once, {CHANNELS} in flight: first store to last report "
               f"at the master, {best.seconds:.2f} s, best of {len(bursts)}; commit to master then median "
               f"{burst_ms[len(burst_ms) // 2]:.1f} ms, max {burst_ms[-1]:.1f} ms (queueing); {setup}"),
    ]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _loopback(path: Path, rounds: int) -> tuple[list[Phase], list[Phase], int]:
    from meterhub_gprs import uplink as up
    from meterhub.headend.station import MasterStation

    master = await MasterStation(heartbeat_s=600.0).start("127.0.0.1", 0)
    config = {"server": f"127.0.0.1:{master.port}", "area_code": AREA, "terminal_address": TERMINAL,
              "heartbeat_s": 600}
    meters = tuple(Meter(f"{p:012d}", "dlt645", f"bus{p % CHANNELS}", QUANTITIES, point=p) for p in range(1, POINTS + 1))
    url = f"sqlite:///{path}"
    site = Site(meters=meters, store=url, uplinks=(UplinkConfig(UPLINK, "gdw1376.1", config),))
    store = open_store(url)
    seen: dict[Key, float] = {}
    counted = 0

    def note_arrivals() -> bool:
        nonlocal counted
        now = time.perf_counter()
        for item in master.received[counted:]:
            if item.fn == 129:
                seen.setdefault((item.point, item.value.read_time), now)
        counted = len(master.received)
        return False

    try:
        async with asyncio.timeout(WAIT_S * (2 * rounds + 1)), Concentrator(
                site, plugins=Plugins(load_entry_points=False), store=store) as conc:
            terminal = _TimedTerminal(UPLINK, conc)
            task = asyncio.get_running_loop().create_task(up.Gdw1376Uplink(up.settings(config), terminal).run())
            watcher = asyncio.get_running_loop().create_task(master.wait_until(note_arrivals, WAIT_S * 2 * rounds))
            try:
                _require(await master.wait_until(lambda: bool(master.online), WAIT_S), "the uplink did not log in")
                paced, bursts = [], []
                for r in range(2 * rounds):
                    when = ROUND_START + timedelta(minutes=r)
                    phase = await _round(conc, terminal, seen, when, pace=PACE_S if r < rounds else 0.0)
                    (paced if r < rounds else bursts).append(phase)
                queued = await conc.store_call(lambda s: s.outbox_size(UPLINK))
            finally:
                for t in (task, watcher):
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
    finally:
        await master.stop()
        store.close()
    return paced, bursts, queued


async def _round(conc: Concentrator, terminal: _TimedTerminal, seen: dict[Key, float], when: datetime, *,
                 pace: float) -> Phase:
    from meterhub_gprs.uplink import local_minute

    committed: dict[Key, float] = {}
    minute = local_minute(when)

    async def lane(n: int, points: Sequence[int]) -> None:
        if pace:
            await asyncio.sleep(pace * n / CHANNELS)  # channels are not in step
        for point in points:
            await conc._store_readings(meter_readings(point, when))  # what a round does per meter
            committed[(point, minute)] = time.perf_counter()
            if pace:
                await asyncio.sleep(pace)

    started = time.perf_counter()
    points = list(range(1, POINTS + 1))
    await asyncio.gather(*(lane(i, points[i::CHANNELS]) for i in range(CHANNELS)))
    keys = list(committed)
    deadline = time.perf_counter() + WAIT_S
    while not all(k in seen and k in terminal.acked for k in keys):
        if time.perf_counter() > deadline:
            missing = sum(k not in seen for k in keys)
            raise RuntimeError(f"uplink benchmark: {missing} of {len(keys)} reports never reached the master")
        await asyncio.sleep(0.005)
    last = max(seen[k] for k in keys)
    return Phase(tuple(seen[k] - committed[k] for k in keys), tuple(terminal.acked[k] - committed[k] for k in keys),
                 last - started)
