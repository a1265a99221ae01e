"""The concentrator: scheduled reading rounds over every channel of a site.

Channels are read concurrently, and on each channel as many meters at once as the
channel has transactions in flight (:attr:`meterhub.api.Channel.in_flight`: one on a
half-duplex bus, several on a carrier module that reads concurrently). Every outcome
becomes a :class:`~meterhub.model.Reading`, failures included, recording the route it
came by; it is stored and handed to the observer hooks. A silent meter is backed off so
it cannot stall its channel round after round. Frames a channel did not ask for become
events, and readings where they carry a configured meter's values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from .api import (
    BatchReader,
    Channel,
    ChannelArchive,
    CommandCredentials,
    Conduit,
    FrozenReader,
    LateAnswer,
    MeterDriver,
    RouteReporter,
    Unsolicited,
    WireRecord,
)
from .commands import Send, run_command
from .errors import (
    ChecksumError,
    CommandRefused,
    FrameError,
    LineJammed,
    LinkError,
    MeterError,
    MeterTimeout,
    NotAttempted,
    NotSupported,
    UnexpectedReply,
    UnknownQuantity,
)
from .model import (
    Command,
    CommandRecord,
    CommandState,
    Event,
    Measurement,
    Meter,
    Quality,
    Reading,
    RoundReport,
    Site,
    meter_key,
    place_meter,
    utcnow,
)
from .plugins import Plugins
from .quantities import VOCABULARY, Quantity, resolve
from .secrets import SecretStore, default_secrets
from .services import Services
from .services import wanted as services_wanted
from .stats import StatsBook
from .store import Store
from .store.writer import StoreWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Q/GDW 1376.1 measuring points: pn 1..2040 (pn 0 is the terminal itself).
MIN_POINT, MAX_POINT = 1, 2040
#: What a meter put in the archive without quantities reads: the billing register.
DEFAULT_QUANTITY = "1-0:1.8.0"

#: The meter gave no usable answer: silence or garbage. A round with only these (and
#: back-off) counts as a failed round for the meter.
NO_ANSWER = frozenset({Quality.TIMEOUT, Quality.CHECKSUM_ERROR, Quality.FRAME_ERROR, Quality.UNEXPECTED_REPLY})

#: The meter is alive: it answered, even if only to say it has no such data.
ANSWERED = frozenset({Quality.OK, Quality.METER_ERROR, Quality.NOT_SUPPORTED})

#: Timers and float sums drift by microseconds; a back-off that ends within this much of
#: a round's start counts as over, so back-off == interval skips exactly one round.
CLOCK_SLACK_S = 1e-3

#: Back-off doubles per failed round; past 2**64 it has long hit ``backoff_max``.
_MAX_DOUBLINGS = 64

DETAIL_SILENT = "not tried: meter did not answer"
DETAIL_LATE = "not tried: meter answers too late"

#: Failures worth another attempt within the round: silence, a damaged frame, a request
#: the driver did not get to send because the meter was silent before it.
RETRYABLE = (MeterTimeout, FrameError, NotAttempted)

ProgressCallback = Callable[[str, dict[str, Any]], None]


@attrs.define
class _MeterState:
    """Back-off bookkeeping of one meter, across rounds."""

    failed_rounds: int = 0
    until: float | None = None  #: clock() time the back-off ends
    until_wall: datetime | None = None  #: the same moment on the wall clock, for messages
    dead: bool = False


@attrs.define
class _Channel:
    """A configured channel and, once opened, the transport's channel."""

    name: str
    config: Any
    channel: Channel | None = None
    error: str = ""  #: why the channel is down; empty while it is up or never tried
    down: bool = False
    jam: str = ""  #: why the line is jammed (LineJammed); empty once it has carried a round again
    #: one lock per lane, and ``in_flight`` slots: a round, a read the channel asked for and a
    #: command never read two meters of one lane at once, nor more than in_flight meters
    locks: dict[Hashable, asyncio.Lock] = attrs.field(factory=dict)
    slots: asyncio.Semaphore | None = None


@attrs.define
class _Visit:
    """One meter being read: its channel, the conduit to it, a link failure met on the way."""

    ch: _Channel
    meter: Meter
    conduit: Conduit
    failure: LinkError | None = None


@attrs.define
class _Sink:
    """What one channel tells the concentrator of its own accord (:class:`meterhub.api.ChannelSink`)."""

    concentrator: Concentrator
    ch: _Channel

    def wire(self, record: WireRecord) -> None:
        """Frames are not kept by the runtime (the HIL bench and ``meterhub scan`` trace them)."""

    def unsolicited(self, report: Unsolicited) -> None:
        self.concentrator._unsolicited(self.ch, report)

    def wanted(self, address: str, protocol: str = "") -> None:
        self.concentrator._wanted(self.ch, address, protocol)


@attrs.define
class _Round:
    """Per-round context handed down to the meter readers."""

    at: float  #: scheduled start on the concentrator's clock
    started: datetime
    book: StatsBook
    readings: dict[int, list[Reading]] = attrs.field(factory=dict)  #: by meter index in the site
    late: dict[str, LateAnswer] = attrs.field(factory=dict)  #: per meter (events' source) that failed late: its latest answer


_FAILURE_QUALITY: tuple[tuple[type[BaseException], Quality], ...] = (
    (MeterTimeout, Quality.TIMEOUT),
    (ChecksumError, Quality.CHECKSUM_ERROR),
    (UnexpectedReply, Quality.UNEXPECTED_REPLY),
    (FrameError, Quality.FRAME_ERROR),
)


def _meter_data(meter: Meter) -> dict[str, str]:
    """What an event about a meter says of it."""
    return {"meter": meter.address, "protocol": meter.protocol, "channel": meter.channel}


class _StoreJournal:
    """The command path's journal (:class:`meterhub.commands.CommandJournal`): the store's
    commands table, written where the store is used."""

    def __init__(self, concentrator: Concentrator) -> None:
        self._c = concentrator

    async def add_command(self, record: CommandRecord) -> None:
        await self._c.store_call(lambda store: store.add_command(record))

    async def update_command(self, id: str, state: CommandState, *, reason: str = "",
                             answer: Mapping[str, Any] | None = None) -> CommandRecord:
        return await self._c.store_call(lambda store: store.update_command(id, state, reason=reason, answer=answer))


#: The store's settings scope of the meter archive changes made while running.
ARCHIVE_SETTINGS = "archive"


def _archive_record(meter: Meter | None) -> dict[str, Any] | None:
    """What the store keeps of a meter put at a point while running: where it is and what
    is read (a master's archive says no more; per-meter serial settings and hops stay the
    site file's business)."""
    if meter is None:
        return None
    return {"address": meter.address, "protocol": meter.protocol, "channel": meter.channel,
            "quantities": list(meter.quantities), "name": meter.name, "credential": meter.credential}


def _obis_or_none(name: str) -> str | None:
    try:
        return resolve(name).obis
    except UnknownQuantity:
        return None


def _quality_for(exc: BaseException) -> Quality:
    for kind, quality in _FAILURE_QUALITY:
        if isinstance(exc, kind):
            return quality
    raise TypeError(f"no quality for {type(exc).__name__}")  # pragma: no cover - callers catch only these


def _with_relays(visit: _Visit, readings: list[Reading]) -> list[Reading]:
    """The readings with the relays the conduit's medium reports (a carrier network's)."""
    if not isinstance(visit.conduit, RouteReporter):
        return readings
    try:
        relays = visit.conduit.relays()
    except Exception:  # a transport bug: the site file's route is still true
        log.warning("channel %s: relays() failed for %s", visit.ch.name, visit.meter.key, exc_info=True)
        return readings
    if isinstance(relays, bool) or not isinstance(relays, int) or relays <= 0:
        return readings
    return [attrs.evolve(r, relays=relays) for r in readings]


def _lanes(channel: Channel) -> int:
    """How many of a channel's meters are read at once: its ``in_flight`` (at least one)."""
    try:
        return max(1, int(channel.in_flight))
    except (TypeError, ValueError):  # a transport bug; one at a time is always safe
        log.warning("channel %s: in_flight %r is not a number; reading one meter at a time",
                    channel.name, channel.in_flight)
        return 1


def _lane_of(ch: _Channel, meter: Meter) -> Hashable:
    """``meter``'s lane on the channel (:meth:`meterhub.api.Channel.lane`)."""
    if ch.channel is None:
        return ch.name
    try:
        key = ch.channel.lane(meter)
        hash(key)
    except Exception:  # a transport bug: the whole channel as one lane is always safe
        log.warning("channel %s: lane(%s) failed; reading its meters one at a time", ch.name, meter.key,
                    exc_info=True)
        return ch.name
    return key


def next_round_start(previous: float, interval: float, now: float) -> float:
    """When the round after one scheduled at ``previous`` starts: one interval later,
    start to start, so a slow round does not shift the schedule; at once if the round
    overran the interval (missed starts are not made up)."""
    target = previous + interval
    if target < now:
        log.warning("round took longer than the %.1f s interval; starting the next one now", interval)
        return now
    return target


class Concentrator:
    """Reads every meter of a site in rounds, stores the readings and tells observers.

    ``clock`` (monotonic seconds) schedules rounds and back-off; tests inject a fake one.
    Use as ``async with Concentrator(...) as c`` or call :meth:`open`/:meth:`close`.
    """

    def __init__(
        self,
        site: Site,
        *,
        plugins: Plugins,
        store: Store,
        progress: ProgressCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        secrets: SecretStore | None = None,
    ) -> None:
        self.site = site
        self.plugins = plugins
        self.store = store
        self.secrets = secrets if secrets is not None else default_secrets()
        self.stats = StatsBook()  #: per meter and per channel, across every round of this concentrator
        self._progress = progress
        self._clock = clock
        self._channels = {name: _Channel(name, cfg) for name, cfg in site.channels.items()}
        self._states: dict[str, _MeterState] = {}  # by Meter.key
        self._opened = False
        self._tasks: set[asyncio.Task[Any]] = set()  # reads a channel asked for (ChannelSink.wanted)
        self._writes: set[asyncio.Task[Any]] = set()  # events on their way to the store
        self._writer: StoreWriter | None = None
        self._outbox = tuple(uplink.name for uplink in site.uplinks)  #: uplinks whose outbox gets every reading and event
        self._queued: list[Callable[[], None]] = []
        #: the meter each measuring point had in the site as given: what a kept archive
        #: change replaced (see :meth:`set_meter`)
        self._given_points = {m.point: m.key for m in site.meters if m.point is not None}
        #: freezes, prepayment, alarms and time sync, when the site asks for any
        self.services: Services | None = Services.for_site(self) if services_wanted(site) else None

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Start the store's writer thread, then create and open every channel. A channel
        that fails is remembered, its meters get LINK_ERROR readings, and it is tried
        again next round; only a store that cannot be used raises."""
        if self._writer is None:
            store = self.store
            writer = StoreWriter(lambda: store, close_store=False)
            await writer.start()
            self._writer = writer
            if self.services is not None:
                await self.services.start()
        # The drivers are imported when their registry is first built: here, not in the
        # middle of the first round's first meter (pymodbus alone takes a tenth of a second).
        self.plugins.meter_drivers()
        if not self._opened:
            await self._apply_kept_archive()
        await asyncio.gather(*(self._open_channel(ch) for ch in self._channels.values()))
        self._opened = True

    async def close(self) -> None:
        """Close every open channel and write what is still on its way to the store
        (errors are logged: shutting down must finish)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for ch in self._channels.values():
            await self._drop_link(ch)
        await self.flush()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        self._opened = False

    # -- the store, off the event loop --------------------------------------------------

    async def store_call(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` where the store is used (the writer thread once open), in turn
        with the writes: how uplinks and the terminal facade read the store."""
        if self._writer is None:
            return fn(self.store)
        return await self._writer.call(fn)

    def on_queued(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever readings or events enter the uplinks' outbox."""
        self._queued.append(callback)

    async def flush(self) -> None:
        """Wait until every event raised so far is stored (and observers told), and tell
        observers of any ``outbox_overflow`` the store wrote meanwhile (rare: checked here,
        once a round or a command, not after every meter)."""
        while self._writes:
            await asyncio.wait(list(self._writes))
        if self._outbox:
            for event in await self.store_call(lambda store: store.take_overflow_events()):
                self.plugins.call_each("meterhub_event", event=event)

    async def _store_readings(self, readings: Sequence[Reading]) -> None:
        """Store readings, queued for the uplinks, durably (returns after the commit)."""
        if self._writer is None:
            self.store.add_readings(readings, outbox=self._outbox)
        else:
            await self._writer.add_readings(readings, outbox=self._outbox)
        if self._outbox:
            self._tell_queued()

    def _tell_queued(self) -> None:
        for callback in self._queued:
            callback()

    async def __aenter__(self) -> Concentrator:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def channel_errors(self) -> dict[str, str]:
        """Channels currently down or jammed (open, but nothing could be sent), with the reason."""
        errors = {name: ch.error for name, ch in self._channels.items() if ch.down}
        errors.update({name: ch.jam for name, ch in self._channels.items() if ch.jam and not ch.down})
        return errors

    async def _open_channel(self, ch: _Channel) -> bool:
        if ch.channel is not None:
            return True
        transport = self.plugins.transports().get(ch.config.transport)
        if transport is None:
            known = ", ".join(sorted(self.plugins.transports())) or "none"
            self._channel_down(ch, f"no transport {ch.config.transport!r} is installed (known: {known})")
            return False
        channel: Channel | None = None
        try:
            channel = transport.create_channel(ch.config)
            self._place(ch.name, channel)
            await channel.open()
            channel.listen(_Sink(self, ch))
        except Exception as exc:  # LinkError, OSError or a transport bug: this channel is down, the others go on
            log.debug("channel %s failed to open", ch.name, exc_info=True)
            # A LinkError names the port and says why; anything else is a transport bug.
            reason = str(exc) if isinstance(exc, LinkError) else f"cannot open {ch.config.port}: {type(exc).__name__}: {exc}"
            if channel is not None:
                await self._close_quietly(ch.name, channel)
            self._channel_down(ch, reason)
            return False
        ch.channel = channel
        ch.slots = asyncio.Semaphore(_lanes(channel))
        if ch.down:
            ch.down, ch.error = False, ""
            self.raise_event(Event("link_up", source=ch.name, data={"channel": ch.name, "port": ch.config.port}))
        return True

    def _place(self, name: str, channel: Channel | None) -> None:
        """Tell a channel that keeps its own meter list (:class:`ChannelArchive`) its meters."""
        if isinstance(channel, ChannelArchive):
            channel.place([m for m in self.site.meters if m.channel == name])

    def _channel_down(self, ch: _Channel, reason: str) -> None:
        was_down, known = ch.down, ch.error
        ch.down, ch.error = True, reason
        if not was_down or reason != known:  # a channel that stays down is not news every round
            log.warning("channel %s is down: %s", ch.name, reason)
        self._report("channel_down", {"channel": ch.name, "reason": reason})
        if not was_down:
            self.raise_event(
                Event("link_down", source=ch.name, severity="warning",
                      data={"channel": ch.name, "port": ch.config.port, "reason": reason})
            )

    async def _drop_link(self, ch: _Channel) -> None:
        channel, ch.channel = ch.channel, None
        if channel is not None:
            await self._close_quietly(ch.name, channel)

    @staticmethod
    async def _close_quietly(name: str, channel: Channel) -> None:
        try:
            await channel.close()
        except Exception:  # a link that cannot even close is gone anyway; say so and move on
            log.warning("channel %s: closing the link failed", name, exc_info=True)

    # -- rounds -----------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event, rounds: int | None = None) -> None:
        """Run rounds every ``site.schedule.interval`` seconds, start to start.

        A slow round does not push the schedule by a whole interval; a round longer than
        the interval is followed at once by the next. Returns after ``rounds`` rounds, or
        promptly when ``stop`` is set (a round in progress is cancelled; what it stored
        stays stored).
        """
        if rounds is not None and rounds <= 0:
            return
        if not self._opened:
            await self.open()
        interval = self.site.schedule.interval
        target = self._clock()
        done = 0
        while not stop.is_set():
            if not await self._round_unless_stopped(target, stop):
                return
            done += 1
            if rounds is not None and done >= rounds:
                return
            now = self._clock()
            target = next_round_start(target, interval, now)
            try:
                await asyncio.wait_for(stop.wait(), timeout=target - now)
            except TimeoutError:
                continue
            return

    async def _round_unless_stopped(self, at: float, stop: asyncio.Event) -> bool:
        """Run one round; ``False`` if ``stop`` was set first (the round is cancelled)."""
        round_task = asyncio.ensure_future(self._run_round(at))
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({round_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
            if not round_task.done():
                round_task.cancel()
                await asyncio.wait({round_task})
        if round_task.cancelled():
            log.info("stopped during a round")
            return False
        round_task.result()  # a store failure must not pass unnoticed
        return True

    async def run_round(self) -> RoundReport:
        """Read every meter once, store and publish the outcomes, and report."""
        if not self._opened:
            await self.open()
        return await self._run_round(self._clock())

    async def _run_round(self, at: float) -> RoundReport:
        rnd = _Round(at=at, started=utcnow(), book=StatsBook())
        by_channel: dict[str, list[tuple[int, Meter]]] = {}
        for index, meter in enumerate(self.site.meters):
            by_channel.setdefault(meter.channel, []).append((index, meter))
        self._report("round_started", {"meters": len(self.site.meters), "channels": len(by_channel)})
        try:
            async with asyncio.TaskGroup() as group:
                for name, meters in by_channel.items():
                    group.create_task(self._read_channel(name, meters, rnd), name=f"meterhub channel {name}")
        except BaseExceptionGroup as group_error:
            # One channel's failure (a store that cannot write) stopped the round; surface it
            # as itself, the others are chained for the traceback.
            raise group_error.exceptions[0] from group_error
        readings = tuple(r for index in sorted(rnd.readings) for r in rnd.readings[index])
        report = RoundReport(
            started=rnd.started,
            finished=utcnow(),
            readings=readings,
            meter_stats=rnd.book.meter_snapshot(),
            channel_stats=rnd.book.channel_snapshot(),
            collector_stats=rnd.book.collector_snapshot(),
            depth_stats=rnd.book.depth_snapshot(),
        )
        await self.store_call(lambda store: store.add_round(report))
        summary = {
            "readings": len(readings),
            "ok": report.ok_count,
            "failed": report.failed_count,
            "backed_off": report.backed_off_count,
            "meters": len(self.site.meters),
            "seconds": report.duration,
        }
        self.raise_event(Event("round_finished", source="concentrator", data=summary))
        if self.services is not None:
            await self.services.after_round()
        await self.flush()
        self._report("round_finished", summary)
        return report

    async def _read_channel(self, name: str, meters: Sequence[tuple[int, Meter]], rnd: _Round) -> None:
        ch = self._channels.get(name)
        if ch is None:  # the configuration loader forbids this; a hand-built Site may not
            for index, meter in meters:
                await self._finish_meter(index, meter, self._all(meter, Quality.LINK_ERROR,
                                                                 f"channel {name!r} is not configured"), rnd)
            return
        await self._open_channel(ch)
        todo = list(meters)
        jam: list[str] = []  # the line is jammed: the rest of this round's meters are not tried
        busy: set[Hashable] = set()  # lanes with a meter being read
        turn = asyncio.Condition()

        async def worker() -> None:
            # The next meter in site order whose lane is free: a multiplexer's four ports
            # are kept busy whatever order the site file lists their meters in.
            while True:
                async with turn:
                    while True:
                        if not todo:
                            return
                        pick = next((i for i, (_, m) in enumerate(todo) if _lane_of(ch, m) not in busy), None)
                        if pick is not None:
                            break
                        await turn.wait()
                    index, meter = todo.pop(pick)
                    taken = _lane_of(ch, meter)
                    busy.add(taken)
                try:
                    readings = await self._visit(ch, index, meter, rnd, jam)
                finally:
                    async with turn:
                        busy.discard(taken)
                        turn.notify_all()
                # Stored while the line reads the next meter: a commit (an fsync on a
                # gateway's flash) never holds the bus. The round waits for every one.
                group.create_task(self._finish_meter(index, meter, readings, rnd), name=f"meterhub store {meter.label}")

        lanes = min(_lanes(ch.channel), len(todo)) if ch.channel is not None else 1
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(max(lanes, 1)):
                    group.create_task(worker(), name=f"meterhub channel {name} lane {number}")
        except BaseExceptionGroup as group_error:  # a store failure: raise it as itself (see _run_round)
            raise group_error.exceptions[0] from group_error
        if ch.jam and not jam and ch.channel is not None:
            ch.jam = ""
            log.warning("channel %s: the line is clear again", ch.name)
            self.raise_event(Event("line_clear", source=ch.name, data={"channel": ch.name, "port": ch.config.port}))

    async def _visit(self, ch: _Channel, index: int, meter: Meter, rnd: _Round, jam: list[str]) -> list[Reading]:
        """Read one meter of a channel, or record why it was not tried; the caller finishes it."""
        if ch.channel is None:
            readings = self._all(meter, Quality.LINK_ERROR, f"channel {ch.name} is down: {ch.error}")
        elif jam:
            readings = self._all(meter, Quality.LINK_ERROR, f"not tried: {jam[0]}", channel=ch.name)
        else:
            visit = _Visit(ch, meter, ch.channel.towards(meter))
            async with self._lane(ch, meter):
                readings = _with_relays(visit, await self._read_meter(visit, index, rnd))
            if isinstance(visit.failure, LineJammed):
                # The line's fault, not this meter's nor the port's: keep the port
                # open, spare the other meters a wait each, try again next round.
                if not jam:
                    jam.append(str(visit.failure))
                    self._line_jammed(ch, jam[0])
            elif (broken := next((r for r in readings if r.quality is Quality.LINK_ERROR), None)) is not None:
                # the port went away mid-round: reopen next round
                await self._drop_link(ch)
                self._channel_down(ch, broken.detail)
        return readings

    @contextlib.asynccontextmanager
    async def _lane(self, ch: _Channel, meter: Meter) -> AsyncIterator[None]:
        """Hold ``meter``'s lane of the channel and one of its in_flight slots."""
        key = _lane_of(ch, meter)
        lock = ch.locks.setdefault(key, asyncio.Lock())
        slots = ch.slots or asyncio.Semaphore(1)
        async with lock, slots:
            yield

    def _line_jammed(self, ch: _Channel, reason: str) -> None:
        """A channel-level event: the line, not a meter, failed this round."""
        self._report("channel_down", {"channel": ch.name, "reason": reason})
        was_jammed, ch.jam = bool(ch.jam), reason
        if not was_jammed:
            log.warning("channel %s: %s", ch.name, reason)
            self.raise_event(Event("line_jammed", source=ch.name, severity="warning",
                                    data={"channel": ch.name, "port": ch.config.port, "reason": reason}))

    async def _read_meter(self, visit: _Visit, index: int, rnd: _Round, *, force: bool = False) -> list[Reading]:
        """Every quantity of one meter, unless it is backed off (``force``: even then).

        Until the meter has answered something this round, a quantity whose every attempt
        timed out marks it silent: its remaining quantities are recorded as BACKED_OFF
        instead of spending the retries again on a meter that is not there.
        """
        ch, meter = visit.ch, visit.meter
        state = self._states.get(meter.key)
        if not force and state is not None and state.until is not None and rnd.at < state.until - CLOCK_SLACK_S:
            assert state.until_wall is not None
            until = state.until_wall.isoformat(timespec="seconds")
            return self._all(meter, Quality.BACKED_OFF, f"back-off until {until}", channel=ch.name)
        driver = self.plugins.meter_drivers().get(meter.protocol)
        if driver is None:
            known = ", ".join(sorted(self.plugins.meter_drivers())) or "none"
            return self._all(meter, Quality.DRIVER_ERROR,
                             f"no meter driver for protocol {meter.protocol!r} is installed (known: {known})",
                             channel=ch.name)
        try:
            timeout = self._timeout(driver, meter, ch)
        except Exception as exc:  # a driver bug; the other meters still get read
            log.debug("driver %s: transaction_timeout raised", meter.protocol, exc_info=True)
            return self._all(meter, Quality.DRIVER_ERROR, f"{type(exc).__name__}: {exc}", channel=ch.name)
        retries = meter.retries if meter.retries is not None else self.site.schedule.retries
        if isinstance(driver, BatchReader):
            return await self._read_batched(visit, driver, timeout, retries, rnd)
        readings: list[Reading] = []
        answered = False
        skip = ""  # why the remaining quantities are not tried (silent or late meter)
        link_error = ""
        for name in meter.quantities:
            if link_error:
                readings.append(self._failed(meter, name, Quality.LINK_ERROR, link_error, channel=ch.name))
                continue
            if skip:
                readings.append(self._failed(meter, name, Quality.BACKED_OFF, skip, channel=ch.name))
                continue
            reading, all_timeouts, late = await self._read_quantity(visit, driver, name, timeout, retries, rnd)
            readings.append(reading)
            if reading.quality in ANSWERED:
                answered = True
            elif reading.quality is Quality.LINK_ERROR:
                link_error = reading.detail
            elif (late or all_timeouts) and not answered:
                # Every attempt went unanswered (or was answered too late): don't spend the
                # retries again on the rest.
                skip = DETAIL_LATE if late else DETAIL_SILENT
        return readings

    def _timeout(self, driver: MeterDriver, meter: Meter, ch: _Channel) -> float:
        """The meter's ``timeout:`` as given, or what its protocol needs at its character
        format plus what the channel's medium and the meter's route add."""
        if meter.timeout is not None:
            return meter.timeout
        base = float(driver.transaction_timeout(meter.settings or ch.config.settings))
        return float(ch.channel.answer_time(meter, base)) if ch.channel is not None else base

    async def _settle(self, visit: _Visit, rnd: _Round) -> tuple[list[LateAnswer], LinkError | None]:
        """Let the channel listen out the guard of the meter's last request, if it went
        unanswered; returns the late answers to this meter's requests (another meter's,
        heard meanwhile, is an event of its own)."""
        meter = visit.meter
        try:
            late = await visit.conduit.settle()
        except LinkError as exc:
            return [], exc
        for answer in late:
            if answer.target not in (None, meter.key):  # an earlier meter's, from its key
                channel, _, name = answer.target.partition("/")
                protocol, _, address = name.partition(":")
                self._late_meter(answer.target, {"meter": address, "protocol": protocol, "channel": channel}, [answer], rnd)
        return [a for a in late if a.target in (None, meter.key)], None

    def _late_meter(self, source: str, data: Mapping[str, Any], late: Sequence[LateAnswer], rnd: _Round) -> None:
        """A meter (events' ``source``) whose answers came after they were given up: tell the
        operator once a round, with the timeout it needs."""
        if source in rnd.late:
            return
        answer = rnd.late[source] = max(late, key=lambda a: a.began)
        self.raise_event(Event(
            "late_answer", source=source, severity="warning",
            data={**data, "timeout": round(answer.timeout, 3), "began_after": round(answer.began, 3),
                  "complete_after": round(answer.after, 3)},
        ))
        log.warning("meter %s began an answer %.3f s after the request, later than its %.3f s timeout; the answer was "
                    "dropped (give it a timeout above %.2f s)", source, answer.began, answer.timeout, answer.began)

    @staticmethod
    def _late_timeout(late: Sequence[LateAnswer]) -> MeterTimeout:
        """The failure of an attempt whose answer came after it was given up: a timeout,
        whatever the window saw, saying how late the meter was."""
        answer = max(late, key=lambda a: a.began)
        return MeterTimeout(
            f"no answer began within {answer.timeout:.3f} s; one began {answer.began:.3f} s after the request and "
            f"was dropped (give this meter a timeout above {answer.began:.2f} s)"
        )

    async def _read_quantity(
        self, visit: _Visit, driver: MeterDriver, name: str, timeout: float, retries: int, rnd: _Round
    ) -> tuple[Reading, bool, bool]:
        """One quantity with bounded retries; also says whether every attempt timed out
        and whether the meter answered after it had been given up (late)."""
        ch, meter = visit.ch, visit.meter
        try:
            quantity = resolve(name)
        except UnknownQuantity as exc:
            return self._failed(meter, name, Quality.NOT_SUPPORTED, str(exc), channel=ch.name), False, False
        attempts = 0
        timeouts = 0
        heard_late: list[LateAnswer] = []
        while True:
            attempts += 1
            started = time.monotonic()
            try:
                outcome: Measurement | Exception = await driver.read(visit.conduit, meter, quantity, timeout)
            except Exception as exc:  # classified below: a driver bug must cost one reading, not the round
                outcome = exc
            latency = time.monotonic() - started
            late, link_error = await self._settle(visit, rnd)
            heard_late += late
            if any(a.held for a in late) and not isinstance(outcome, (MeterError, NotSupported, LinkError)):
                # Answered, but the answer may have been an earlier attempt's: the bus held
                # the line and heard another, so this attempt's answer is doubtful.
                outcome = self._late_timeout(late)
            elif link_error is not None and isinstance(outcome, Exception):
                outcome = link_error
            if isinstance(outcome, LinkError):
                visit.failure = outcome
            if isinstance(outcome, RETRYABLE):
                timeouts += isinstance(outcome, MeterTimeout)
                if attempts <= retries:
                    continue  # after the guard the line is clear: the retry gets its own answer
            late_meter = bool(heard_late) and isinstance(outcome, RETRYABLE)
            if late_meter:
                outcome = self._late_timeout(heard_late)  # the reason the meter failed: it answers too late
                self._late_meter(meter.key, _meter_data(meter), heard_late, rnd)
            reading = self._outcome(meter, quantity, outcome, ch.name, attempts, latency)
            return reading, bool(timeouts) and timeouts == attempts, late_meter

    async def _read_batched(
        self, visit: _Visit, driver: MeterDriver, timeout: float, retries: int, rnd: _Round
    ) -> list[Reading]:
        """Every quantity of a meter through the driver's ``read_many`` (one Modbus request
        for neighbouring registers, one M-Bus telegram for all records), retrying only the
        quantities that failed with silence or a bad frame."""
        ch, meter = visit.ch, visit.meter
        done: dict[str, Reading] = {}
        pending: list[Quantity] = []
        for name in meter.quantities:
            try:
                pending.append(resolve(name))
            except UnknownQuantity as exc:
                done[name] = self._failed(meter, name, Quality.NOT_SUPPORTED, str(exc), channel=ch.name)
        attempts = 0
        heard_late: list[LateAnswer] = []
        while pending:
            attempts += 1
            started = time.monotonic()
            try:
                outcomes: Sequence[Measurement | Exception] = await driver.read_many(visit.conduit, meter, pending, timeout)
                if len(outcomes) != len(pending):
                    raise TypeError(f"read_many returned {len(outcomes)} outcomes for {len(pending)} quantities")
            except Exception as exc:  # a LinkError or a driver bug: the same outcome for every quantity asked
                outcomes = [exc] * len(pending)
            latency = time.monotonic() - started
            late, link_error = await self._settle(visit, rnd)
            heard_late += late
            if any(a.held for a in late):  # as in _read_quantity: what was answered is doubtful
                timed_out = self._late_timeout(late)
                outcomes = [o if isinstance(o, (MeterError, NotSupported, LinkError, NotAttempted)) else timed_out
                            for o in outcomes]
            elif link_error is not None and any(isinstance(o, RETRYABLE) for o in outcomes):
                outcomes = [link_error if isinstance(o, RETRYABLE) else o for o in outcomes]
            if any(isinstance(o, LinkError) for o in outcomes):
                visit.failure = next(o for o in outcomes if isinstance(o, LinkError))
            last = attempts > retries
            if last and heard_late and any(isinstance(o, RETRYABLE) for o in outcomes):
                # the meter failed because it answers too late: say so, and not tried is why
                self._late_meter(meter.key, _meter_data(meter), heard_late, rnd)
                timed_out = self._late_timeout(heard_late)
                skipped = NotAttempted(DETAIL_LATE.removeprefix("not tried: "))
                outcomes = [skipped if isinstance(o, NotAttempted) else timed_out if isinstance(o, RETRYABLE) else o
                            for o in outcomes]
            retry: list[Quantity] = []
            for quantity, outcome in zip(pending, outcomes):
                if isinstance(outcome, RETRYABLE) and not last:
                    retry.append(quantity)
                else:
                    done[quantity.obis] = self._outcome(meter, quantity, outcome, ch.name, attempts, latency)
            pending = retry
        return [done[resolve(name).obis] if name in VOCABULARY else done[name] for name in meter.quantities]

    def _outcome(
        self, meter: Meter, quantity: Quantity, outcome: Measurement | BaseException, channel: str, attempts: int,
        latency: float,
    ) -> Reading:
        """The reading for one attempt's result: a measurement, or the error it failed with."""
        if not isinstance(outcome, BaseException):
            return self._reading(meter, quantity, outcome, channel, attempts, latency)
        if isinstance(outcome, NotAttempted):
            return self._failed(meter, quantity, Quality.BACKED_OFF, f"not tried: {outcome}", channel=channel,
                                attempts=0)
        if isinstance(outcome, (MeterTimeout, FrameError)):
            return self._failed(meter, quantity, _quality_for(outcome), str(outcome), channel=channel, attempts=attempts)
        if isinstance(outcome, MeterError):
            return self._failed(meter, quantity, Quality.METER_ERROR, outcome.reason or str(outcome), channel=channel,
                                attempts=attempts, error_code=outcome.code)
        if isinstance(outcome, NotSupported):
            return self._failed(meter, quantity, Quality.NOT_SUPPORTED, str(outcome), channel=channel, attempts=attempts)
        if isinstance(outcome, LinkError):
            return self._failed(meter, quantity, Quality.LINK_ERROR, str(outcome), channel=channel, attempts=attempts)
        log.debug("driver %s failed reading %s of %s", meter.protocol, quantity.obis, meter.label,
                  exc_info=(type(outcome), outcome, outcome.__traceback__))
        return self._failed(meter, quantity, Quality.DRIVER_ERROR, f"{type(outcome).__name__}: {outcome}",
                            channel=channel, attempts=attempts)

    def _reading(
        self, meter: Meter, quantity: Quantity, measurement: Measurement, channel: str, attempts: int, latency: float
    ) -> Reading:
        value = getattr(measurement, "value", None)
        if not isinstance(value, (str, Decimal)):
            # Floats would silently round a bill; a driver returning one is a bug to report.
            return self._failed(meter, quantity, Quality.DRIVER_ERROR,
                                f"driver returned {measurement!r}, not a Measurement with a Decimal or str value",
                                channel=channel, attempts=attempts)
        data_time = getattr(measurement, "data_time", None)
        period = getattr(measurement, "period", None)
        if data_time is not None and not (isinstance(data_time, datetime) and data_time.utcoffset() is not None):
            return self._failed(meter, quantity, Quality.DRIVER_ERROR,
                                f"driver returned data_time {data_time!r}, not a timezone-aware datetime",
                                channel=channel, attempts=attempts)
        if period is not None and (isinstance(period, bool) or not isinstance(period, int) or period < 0):
            return self._failed(meter, quantity, Quality.DRIVER_ERROR,
                                f"driver returned period {period!r}, not a billing period number >= 0",
                                channel=channel, attempts=attempts)
        return Reading(
            meter=meter.address,
            quantity=quantity.obis,
            value=value,
            unit=measurement.unit or quantity.unit,
            timestamp=utcnow(),
            channel=channel,
            protocol=meter.protocol,
            attempts=attempts,
            latency=latency,
            route=meter.route.collectors,
            data_time=data_time,
            period=period,
            terminal=self.site.terminal,
        )

    def _failed(
        self,
        meter: Meter,
        quantity: Quantity | str,
        quality: Quality,
        detail: str,
        *,
        channel: str | None = None,
        attempts: int = 0,
        error_code: int | None = None,
    ) -> Reading:
        if isinstance(quantity, str):
            try:
                quantity = resolve(quantity)
            except UnknownQuantity:
                obis, unit = quantity, ""
            else:
                obis, unit = quantity.obis, quantity.unit
        else:
            obis, unit = quantity.obis, quantity.unit
        return Reading(
            meter=meter.address,
            quantity=obis,
            value=None,
            unit=unit,
            timestamp=utcnow(),
            quality=quality,
            error_code=error_code,
            detail=detail,
            channel=meter.channel if channel is None else channel,
            protocol=meter.protocol,
            attempts=attempts,
            latency=None,
            route=meter.route.collectors,
            terminal=self.site.terminal,
        )

    def _all(self, meter: Meter, quality: Quality, detail: str, *, channel: str | None = None) -> list[Reading]:
        """The same untried outcome for every quantity of a meter (nothing silently dropped)."""
        return [self._failed(meter, name, quality, detail, channel=channel) for name in meter.quantities]

    async def _finish_meter(self, index: int, meter: Meter, readings: list[Reading], rnd: _Round) -> None:
        """Store a meter's readings (durably, and queued for the uplinks), count them, tell
        observers and update its back-off."""
        await self._store_readings(readings)
        rnd.readings[index] = readings
        for reading in readings:
            self.stats.record(reading)
            rnd.book.record(reading)
        self.plugins.call_each("meterhub_readings_collected", readings=list(readings), channel=meter.channel)
        self._update_backoff(meter, readings, rnd)
        if self.services is not None:
            await self.services.after_visit(meter, readings)
        ok = sum(1 for r in readings if r.quality is Quality.OK)
        self._report("meter_done", {"meter": meter.label, "address": meter.address, "channel": meter.channel,
                                    "ok": ok, "failed": len(readings) - ok})

    def _update_backoff(self, meter: Meter, readings: Sequence[Reading], rnd: _Round) -> None:
        qualities = {r.quality for r in readings}
        state = self._states.setdefault(meter.key, _MeterState())
        source = meter.key
        data = _meter_data(meter)
        if qualities & ANSWERED:
            if state.dead:
                self.raise_event(Event("meter_recovered", source=source,
                                        data={**data, "failed_rounds": state.failed_rounds}))
            self._states[meter.key] = _MeterState()
        elif qualities & NO_ANSWER:
            state.failed_rounds += 1
            schedule = self.site.schedule
            doublings = min(state.failed_rounds - 1, _MAX_DOUBLINGS)
            delay = min(schedule.backoff_initial * 2**doublings, schedule.backoff_max)
            state.until = rnd.at + delay
            state.until_wall = rnd.started + timedelta(seconds=delay)
            if not state.dead:
                state.dead = True
                reason = next(r.detail for r in readings if r.quality in NO_ANSWER)
                self.raise_event(Event("meter_dead", source=source, severity="warning",
                                        data={**data, "reason": reason,
                                              "until": state.until_wall.isoformat(timespec="seconds")}))
        # Only back-off, link or driver trouble: nothing learned about the meter itself.

    # -- what channels say of their own accord ----------------------------------------------

    def _meter_at(self, channel: str, address: str, protocol: str) -> Meter | None:
        """The configured meter a channel names by ``address`` (in any form its driver
        reads: ``1`` is DL/T 645 meter ``000000000001``) and, if given, ``protocol``."""
        drivers = self.plugins.meter_drivers()
        for meter in self.site.meters:
            if meter.channel != channel or protocol not in ("", meter.protocol):
                continue
            if meter.address == address:
                return meter
            driver = drivers.get(meter.protocol)
            try:
                if driver is not None and driver.normalize_address(address) == meter.address:
                    return meter
            except (ValueError, TypeError):
                continue  # not an address of this meter's protocol
        return None

    def _unsolicited(self, ch: _Channel, report: Unsolicited) -> None:
        """A frame nobody asked for: an event, and readings of the values it carries for
        the quantities its meter is configured to read. Never raises into the channel."""
        try:
            meter = self._meter_at(ch.name, report.address, report.protocol)
            source = meter.key if meter else meter_key(ch.name, report.protocol, report.address)
            data = {**dict(report.data), "channel": ch.name, "meter": report.address, "protocol": report.protocol,
                    "known": meter is not None}
            if report.frame:
                data["frame"] = report.frame.hex(" ").upper()
            readings = []
            if meter is not None:
                wanted = {_obis_or_none(name) for name in meter.quantities}
                for obis, measurement in report.measurements.items():
                    if _obis_or_none(obis) in wanted:
                        readings.append(attrs.evolve(
                            self._reading(meter, resolve(obis), measurement, ch.name, 0, None), attempts=0))
                data["readings"] = [r.quantity for r in readings]
            event = Event(report.kind, source=source, severity=report.severity, data=data)
        except Exception:  # a bad report must not take the channel's reader down
            log.exception("channel %s: could not make sense of an unsolicited %s from %r", ch.name, report.kind,
                          report.address)
            return
        self._spawn(self._record_unsolicited(ch, readings, event), self._writes)

    async def _record_unsolicited(self, ch: _Channel, readings: list[Reading], event: Event) -> None:
        """Store an unsolicited report's readings, then its event, which is stored even when
        the readings cannot be (it then says why)."""
        if readings:
            try:
                await self._store_readings(readings)
            except Exception as exc:  # a store failure: say so in the event, the channel goes on
                log.exception("channel %s: could not store the readings of an unsolicited %s from %s", ch.name,
                              event.kind, event.source)
                event = attrs.evolve(event, severity="warning",
                                     data={**event.data, "readings": [], "not_stored": f"{type(exc).__name__}: {exc}"})
            else:
                for reading in readings:
                    self.stats.record(reading)
                self.plugins.call_each("meterhub_readings_collected", readings=list(readings), channel=ch.name)
        self.raise_event(event)

    def _wanted(self, ch: _Channel, address: str, protocol: str) -> None:
        """The far end asks for a meter's requests: read that meter now."""
        meter = self._meter_at(ch.name, address, protocol)
        if meter is None:
            log.warning("channel %s asks for meter %s, which is not configured on it", ch.name, address)
            return
        self._spawn(self.read_meter(meter), self._tasks)

    @staticmethod
    def _spawn(work: Coroutine[Any, Any, Any], tasks: set[asyncio.Task[Any]]) -> None:
        """Run ``work`` beside the caller, kept in ``tasks`` until done; a failure is logged."""
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("%s failed", work.__qualname__, exc_info=task.exception())

        task.add_done_callback(done)

    async def read_meter(self, meter: Meter) -> list[Reading]:
        """Read every quantity of one configured meter now, outside the rounds (back-off
        or not): the readings are stored and observers told, as in a round."""
        index = self.site.meters.index(meter)
        readings, rnd = await self._read_now(meter, index)
        await self._finish_meter(index, meter, readings, rnd)
        await self.flush()
        return readings

    async def read_quantities(self, meter: Meter, quantities: Sequence[str]) -> list[Reading]:
        """Read ``quantities`` of a configured meter now, back-off or not, and return the
        readings without storing them (a service's own reads: a clock before a time sync)."""
        readings, _rnd = await self._read_now(attrs.evolve(meter, quantities=tuple(quantities)), -1)
        return readings

    async def _read_now(self, meter: Meter, index: int) -> tuple[list[Reading], _Round]:
        """Read ``meter`` at once, back-off or not, holding its lane; nothing stored yet."""
        if not self._opened:
            await self.open()
        rnd = _Round(at=self._clock(), started=utcnow(), book=StatsBook())
        ch = self._channels.get(meter.channel)
        if ch is None or not await self._open_channel(ch) or ch.channel is None:
            reason = ch.error if ch is not None else f"channel {meter.channel!r} is not configured"
            return self._all(meter, Quality.LINK_ERROR, f"channel {meter.channel} is down: {reason}"), rnd
        async with self._lane(ch, meter):
            visit = _Visit(ch, meter, ch.channel.towards(meter))
            return _with_relays(visit, await self._read_meter(visit, index, rnd, force=True)), rnd

    async def read_frozen(self, meter: Meter, back: int) -> Sequence[Measurement]:
        """The meter's daily freeze record ``back`` records ago, through its driver's
        :class:`~meterhub.api.FrozenReader` (NotSupported when it has none); raises what
        the driver raises (MeterTimeout, MeterError, ...) and LinkError for a channel down."""
        driver = self.plugins.meter_drivers().get(meter.protocol)
        if not isinstance(driver, FrozenReader):
            raise NotSupported(f"the {meter.protocol} driver reads no freeze records")
        ch = self._channels.get(meter.channel)
        if ch is None or not await self._open_channel(ch) or ch.channel is None:
            raise LinkError(f"channel {meter.channel} is down: {ch.error if ch is not None else 'not configured'}")
        async with self._lane(ch, meter):
            return await driver.read_frozen(ch.channel.towards(meter), meter, back, self._timeout(driver, meter, ch))

    async def store_readings(self, readings: Sequence[Reading]) -> None:
        """Store readings a service made (frozen values, profile points), durably and
        queued for the uplinks like the round's own."""
        await self._store_readings(readings)

    # -- the meter archive -----------------------------------------------------------------

    async def set_meter(self, point: int, meter: Meter | None) -> None:
        """Put ``meter`` at measuring point ``point`` of the running concentrator (replacing
        the meter there), or take the point's meter out (``None``). Read from the next
        round on; a ``meter_archive_changed`` event records it. ValueError saying why a
        meter cannot be taken: an unknown channel or protocol, an invalid address, an
        address another point's meter already has."""
        if isinstance(point, bool) or not isinstance(point, int) or not MIN_POINT <= point <= MAX_POINT:
            raise ValueError(f"measuring point must be {MIN_POINT}..{MAX_POINT}, got {point!r}")
        if meter is not None:
            meter = self._archive_entry(point, meter, [m for m in self.site.meters if m.point != point])
        meters, old = place_meter(self.site.meters, point, meter)
        kept = {str(point): {"meter": _archive_record(meter), "given": self._given_points.get(point)}}
        await self.store_call(lambda store: store.put_settings(ARCHIVE_SETTINGS, kept))
        self.site = attrs.evolve(self.site, meters=tuple(meters))
        if old is not None:
            self._states.pop(old.key, None)
        for name in {m.channel for m in (old, meter) if m is not None}:
            ch = self._channels.get(name)
            if ch is not None:
                self._place(name, ch.channel)
        self.raise_event(Event("meter_archive_changed", source="concentrator", data={
            "point": point, "old": old.key if old else None, "new": meter.key if meter else None}))
        await self.flush()

    async def _apply_kept_archive(self) -> None:
        """Put back the archive changes made while running (:meth:`set_meter`), kept in the
        store: a master station's meter archive outlives a restart. A change whose point
        the site file has changed since (another meter there than the one it replaced) is
        dropped: the newer word, the file's, wins; so is one that no longer fits the site
        (its channel or protocol gone)."""
        kept = await self.store_call(lambda store: store.settings(ARCHIVE_SETTINGS))
        dropped: dict[str, None] = {}
        for key, entry in sorted(kept.items(), key=lambda item: int(item[0]) if item[0].isdigit() else -1):
            meters = list(self.site.meters)
            try:
                point = int(key)
                at = next((i for i, m in enumerate(meters) if m.point == point), None)
                if entry.get("given") != self._given_points.get(point):
                    log.warning("measuring point %d: the site file changed it since a running change (kept in the "
                                "store) replaced %s; the site file's meter stays", point, entry.get("given") or "none")
                    dropped[key] = None
                    continue
                record = entry.get("meter")
                if record is None:
                    if at is not None:
                        del meters[at]
                else:
                    meter = self._archive_entry(point, Meter(**{**record, "quantities": tuple(record["quantities"])}),
                                                [m for m in meters if m.point != point])
                    if at is None:
                        meters.append(meter)
                    else:
                        meters[at] = meter
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("measuring point %s: a kept archive change no longer fits the site (%s); dropped",
                            key, exc)
                dropped[key] = None
                continue
            log.info("measuring point %d: %s, as set while running (kept in the store), not the site file's %s",
                     point, "no meter" if record is None else f"meter {meter.key}", entry.get("given") or "none")
            self.site = attrs.evolve(self.site, meters=tuple(meters))
        if dropped:
            await self.store_call(lambda store: store.put_settings(ARCHIVE_SETTINGS, dropped))

    def _archive_entry(self, point: int, meter: Meter, others: Sequence[Meter]) -> Meter:
        if meter.channel not in self.site.channels:
            known = ", ".join(sorted(self.site.channels)) or "none"
            raise ValueError(f"channel {meter.channel!r} is not configured (known: {known})")
        driver = self.plugins.meter_drivers().get(meter.protocol)
        if driver is None:
            raise ValueError(f"no meter driver for protocol {meter.protocol!r} is installed")
        address = driver.normalize_address(meter.address)
        for name in meter.quantities:
            resolve(name)  # UnknownQuantity is a ValueError naming it
        meter = attrs.evolve(meter, address=address, point=point, quantities=meter.quantities or (DEFAULT_QUANTITY,))
        clash = next((m for m in others if m.key == meter.key), None)
        if clash is not None:
            raise ValueError(f"meter {meter.key} is already at measuring point {clash.point}")
        return meter

    # -- commands ---------------------------------------------------------------------

    async def execute(self, meter: Meter, command: Command) -> Mapping[str, Any]:
        """Carry out a command on ``meter`` through the command path every origin uses
        (:func:`meterhub.commands.run_command`): journalled in the store's commands table,
        refused with nothing sent (:class:`CommandRefused`) when a policy hook refuses or
        fails or its credentials cannot be had from the secret store. ``command_refused``
        and ``command_executed`` events tell observers; no secret is stored anywhere."""
        if not self._opened:
            await self.open()
        command = attrs.evolve(command, meter=meter.address, protocol=meter.protocol, channel=meter.channel,
                               credential=command.credential or meter.credential)
        journal = _StoreJournal(self)
        source = meter.key
        data = {"meter": meter.address, "protocol": meter.protocol, "command": command.name, "id": command.id,
                "origin": command.origin.value, "issuer": command.issuer}
        driver = self.plugins.meter_drivers().get(meter.protocol)
        ch = self._channels.get(meter.channel)
        problem = ""
        if driver is None:
            problem = f"no meter driver for protocol {meter.protocol!r} is installed"
        elif ch is None:
            problem = f"channel {meter.channel!r} is not configured"
        elif not await self._open_channel(ch):
            problem = f"channel {ch.name} is down: {ch.error}"
        if problem:  # nothing could be sent: a failure on record, not a refusal
            await journal.add_command(CommandRecord(command, CommandState.REQUESTED, utcnow()))
            await journal.update_command(command.id, CommandState.FAILED, reason=f"not sent: {problem}")
            raise (NotSupported if driver is None else LinkError)(problem)
        assert driver is not None and ch is not None
        needs = driver.command_credentials(command.name) if isinstance(driver, CommandCredentials) else ()

        async def send(ready: Command) -> Mapping[str, Any]:
            assert ch is not None and ch.channel is not None and driver is not None
            async with self._lane(ch, meter):
                return await driver.execute(ch.channel.towards(meter), meter, ready, self._timeout(driver, meter, ch))

        try:
            result = await run_command(command, plugins=self.plugins, secrets=self.secrets, journal=journal,
                                       send=send, needs=needs)
        except CommandRefused as exc:
            self.raise_event(Event("command_refused", source=source, severity="warning",
                                   data={**data, "reason": str(exc)}))
            await self.flush()
            raise
        self.raise_event(Event("command_executed", source=source, data=data))
        await self.flush()
        return result

    async def execute_local(self, command: Command, carry: Send) -> Mapping[str, Any]:
        """Carry out a command on the concentrator itself (set its clock, change an
        uplink's parameters), one that names no meter, through the same command path as
        :meth:`execute`: journalled, refused with nothing done (:class:`CommandRefused`)
        when a policy hook refuses or fails; ``carry(command)`` does it once every check
        passed and returns its answer. The command is journalled with an empty meter,
        protocol and channel, as policy hooks see it."""
        if not self._opened:
            await self.open()
        command = attrs.evolve(command, meter="", protocol="", channel="")
        data = {"meter": "", "command": command.name, "id": command.id, "origin": command.origin.value,
                "issuer": command.issuer}
        try:
            result = await run_command(command, plugins=self.plugins, secrets=self.secrets,
                                       journal=_StoreJournal(self), send=carry)
        except CommandRefused as exc:
            self.raise_event(Event("command_refused", source="concentrator", severity="warning",
                                   data={**data, "reason": str(exc)}))
            await self.flush()
            raise
        self.raise_event(Event("command_executed", source="concentrator", data=data))
        await self.flush()
        return result

    # -- events and progress ----------------------------------------------------------

    def raise_event(self, event: Event) -> None:
        """Store an event (queued for the uplinks) and then tell observers. Written by the
        store's thread while the caller goes on; :meth:`flush` waits for it."""
        if self._writer is None:
            self.store.add_event(event, outbox=self._outbox)
            self._event_stored(event)
        else:
            self._spawn(self._write_event(event), self._writes)

    async def _write_event(self, event: Event) -> None:
        assert self._writer is not None
        await self._writer.add_event(event, outbox=self._outbox)
        self._event_stored(event)

    def _event_stored(self, event: Event) -> None:
        if self._outbox:
            self._tell_queued()
        self.plugins.call_each("meterhub_event", event=event)

    def _report(self, kind: str, info: dict[str, Any]) -> None:
        if self._progress is None:
            return
        try:
            self._progress(kind, info)
        except Exception:  # a display glitch must not stop the meters being read
            log.warning("progress callback failed on %s", kind, exc_info=True)

