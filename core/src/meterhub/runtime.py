"""The concentrator: scheduled reading rounds over every channel of a site.

Channels are read concurrently, the meters of one channel one after another (a
half-duplex bus carries one transaction at a time; :class:`~meterhub.bus.Bus` enforces
it). Every outcome becomes a :class:`~meterhub.model.Reading`, failures included, is
stored, and is handed to the observer hooks. A silent meter is backed off so it cannot
stall its bus round after round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from .api import Link, MeterDriver
from .bus import Bus, LateAnswer, current_target
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
from .model import Command, Event, Measurement, Meter, Quality, Reading, RoundReport, Site, utcnow
from .plugins import Plugins
from .quantities import VOCABULARY, Quantity, resolve
from .stats import StatsBook
from .store import Store

log = logging.getLogger(__name__)

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
    """A configured channel and, once opened, its link and bus."""

    name: str
    config: Any
    link: Link | None = None
    bus: Bus | None = None
    error: str = ""  #: why the channel is down; empty while it is up or never tried
    down: bool = False
    jam: str = ""  #: why the line is jammed (LineJammed); empty once it has carried a round again
    failure: LinkError | None = None  #: the link error of the meter being read, if any


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


def _quality_for(exc: BaseException) -> Quality:
    for kind, quality in _FAILURE_QUALITY:
        if isinstance(exc, kind):
            return quality
    raise TypeError(f"no quality for {type(exc).__name__}")  # pragma: no cover - callers catch only these


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
    ) -> None:
        self.site = site
        self.plugins = plugins
        self.store = store
        self.stats = StatsBook()  #: per meter and per channel, across every round of this concentrator
        self._progress = progress
        self._clock = clock
        self._channels = {name: _Channel(name, cfg) for name, cfg in site.channels.items()}
        self._states: dict[int, _MeterState] = {}  # by the meter's index in site.meters
        self._opened = False

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create and open every channel's link. A channel that fails is remembered, its
        meters get LINK_ERROR readings, and it is tried again next round; never raises."""
        await asyncio.gather(*(self._open_channel(ch) for ch in self._channels.values()))
        self._opened = True

    async def close(self) -> None:
        """Close every open link (errors are logged: shutting down must finish)."""
        for ch in self._channels.values():
            await self._drop_link(ch)
        self._opened = False

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
        if ch.bus is not None:
            return True
        transport = self.plugins.transports().get(ch.config.transport)
        if transport is None:
            known = ", ".join(sorted(self.plugins.transports())) or "none"
            self._channel_down(ch, f"no transport {ch.config.transport!r} is installed (known: {known})")
            return False
        link: Link | None = None
        try:
            link = transport.create_link(ch.config)
            await link.open()
        except Exception as exc:  # LinkError, OSError or a transport bug: this channel is down, the others go on
            log.debug("channel %s failed to open", ch.name, exc_info=True)
            # A LinkError names the port and says why; anything else is a transport bug.
            reason = str(exc) if isinstance(exc, LinkError) else f"cannot open {ch.config.port}: {type(exc).__name__}: {exc}"
            if link is not None:
                await self._close_quietly(ch.name, link)
            self._channel_down(ch, reason)
            return False
        ch.link = link
        ch.bus = Bus(ch.name, link)
        if ch.down:
            ch.down, ch.error = False, ""
            self._raise_event(Event("link_up", source=ch.name, data={"channel": ch.name, "port": ch.config.port}))
        return True

    def _channel_down(self, ch: _Channel, reason: str) -> None:
        was_down, known = ch.down, ch.error
        ch.down, ch.error = True, reason
        if not was_down or reason != known:  # a channel that stays down is not news every round
            log.warning("channel %s is down: %s", ch.name, reason)
        self._report("channel_down", {"channel": ch.name, "reason": reason})
        if not was_down:
            self._raise_event(
                Event("link_down", source=ch.name, severity="warning",
                      data={"channel": ch.name, "port": ch.config.port, "reason": reason})
            )

    async def _drop_link(self, ch: _Channel) -> None:
        link, ch.link, ch.bus = ch.link, None, None
        if link is not None:
            await self._close_quietly(ch.name, link)

    @staticmethod
    async def _close_quietly(name: str, link: Link) -> None:
        try:
            await link.close()
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
        )
        self.store.add_round(report)
        summary = {
            "readings": len(readings),
            "ok": report.ok_count,
            "failed": report.failed_count,
            "backed_off": report.backed_off_count,
            "meters": len(self.site.meters),
            "seconds": report.duration,
        }
        self._raise_event(Event("round_finished", source="concentrator", data=summary))
        self._report("round_finished", summary)
        return report

    async def _read_channel(self, name: str, meters: Sequence[tuple[int, Meter]], rnd: _Round) -> None:
        ch = self._channels.get(name)
        if ch is None:  # the configuration loader forbids this; a hand-built Site may not
            for index, meter in meters:
                self._finish_meter(index, meter, self._all(meter, Quality.LINK_ERROR, f"channel {name!r} is not configured"), rnd)
            return
        await self._open_channel(ch)
        jam = ""  # the line is jammed: the rest of this round's meters are not tried
        for index, meter in meters:
            if ch.bus is None:
                readings = self._all(meter, Quality.LINK_ERROR, f"channel {name} is down: {ch.error}")
            elif jam:
                readings = self._all(meter, Quality.LINK_ERROR, f"not tried: {jam}", channel=ch.name)
            else:
                ch.failure = None
                token = current_target.set(meter.key)
                try:
                    readings = await self._read_meter(ch, index, meter, rnd)
                finally:
                    current_target.reset(token)
                if isinstance(ch.failure, LineJammed):
                    # The line's fault, not this meter's nor the port's: keep the port
                    # open, spare the other meters a wait each, try again next round.
                    jam = str(ch.failure)
                    self._line_jammed(ch, jam)
                elif (broken := next((r for r in readings if r.quality is Quality.LINK_ERROR), None)) is not None:
                    # the port went away mid-round: reopen next round
                    await self._drop_link(ch)
                    self._channel_down(ch, broken.detail)
            self._finish_meter(index, meter, readings, rnd)
        if ch.jam and not jam and ch.bus is not None:
            ch.jam = ""
            log.warning("channel %s: the line is clear again", ch.name)
            self._raise_event(Event("line_clear", source=ch.name, data={"channel": ch.name, "port": ch.config.port}))

    def _line_jammed(self, ch: _Channel, reason: str) -> None:
        """A channel-level event: the line, not a meter, failed this round."""
        self._report("channel_down", {"channel": ch.name, "reason": reason})
        was_jammed, ch.jam = bool(ch.jam), reason
        if not was_jammed:
            log.warning("channel %s: %s", ch.name, reason)
            self._raise_event(Event("line_jammed", source=ch.name, severity="warning",
                                    data={"channel": ch.name, "port": ch.config.port, "reason": reason}))

    async def _read_meter(self, ch: _Channel, index: int, meter: Meter, rnd: _Round) -> list[Reading]:
        """Every quantity of one meter, unless it is backed off.

        Until the meter has answered something this round, a quantity whose every attempt
        timed out marks it silent: its remaining quantities are recorded as BACKED_OFF
        instead of spending the retries again on a meter that is not there.
        """
        state = self._states.get(index)
        if state is not None and state.until is not None and rnd.at < state.until - CLOCK_SLACK_S:
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
        if callable(getattr(driver, "read_many", None)):
            return await self._read_batched(ch, driver, meter, timeout, retries, rnd)
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
            reading, all_timeouts, late = await self._read_quantity(ch, driver, meter, name, timeout, retries, rnd)
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
        if meter.timeout is not None:
            return meter.timeout
        return float(driver.transaction_timeout(meter.settings or ch.config.settings))

    async def _settle(self, ch: _Channel, meter: Meter, rnd: _Round) -> tuple[list[LateAnswer], LinkError | None]:
        """Let the bus listen out the guard of the meter's last request, if it went
        unanswered; returns the late answers to this meter's requests (another meter's,
        heard meanwhile, is an event of its own)."""
        assert ch.bus is not None
        try:
            late = await ch.bus.settle()
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
        self._raise_event(Event(
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
        self, ch: _Channel, driver: MeterDriver, meter: Meter, name: str, timeout: float, retries: int, rnd: _Round
    ) -> tuple[Reading, bool, bool]:
        """One quantity with bounded retries; also says whether every attempt timed out
        and whether the meter answered after it had been given up (late)."""
        try:
            quantity = resolve(name)
        except UnknownQuantity as exc:
            return self._failed(meter, name, Quality.NOT_SUPPORTED, str(exc), channel=ch.name), False, False
        assert ch.bus is not None
        attempts = 0
        timeouts = 0
        heard_late: list[LateAnswer] = []
        while True:
            attempts += 1
            started = time.monotonic()
            try:
                outcome: Measurement | Exception = await driver.read(ch.bus, meter, quantity, timeout)
            except Exception as exc:  # classified below: a driver bug must cost one reading, not the round
                outcome = exc
            latency = time.monotonic() - started
            late, link_error = await self._settle(ch, meter, rnd)
            heard_late += late
            if any(a.held for a in late) and not isinstance(outcome, (MeterError, NotSupported, LinkError)):
                # Answered, but the answer may have been an earlier attempt's: the bus held
                # the line and heard another, so this attempt's answer is doubtful.
                outcome = self._late_timeout(late)
            elif link_error is not None and isinstance(outcome, Exception):
                outcome = link_error
            if isinstance(outcome, LinkError):
                ch.failure = outcome
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
        self, ch: _Channel, driver: MeterDriver, meter: Meter, timeout: float, retries: int, rnd: _Round
    ) -> list[Reading]:
        """Every quantity of a meter through the driver's ``read_many`` (one Modbus request
        for neighbouring registers, one M-Bus telegram for all records), retrying only the
        quantities that failed with silence or a bad frame."""
        assert ch.bus is not None
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
                outcomes: Sequence[Measurement | Exception] = await driver.read_many(ch.bus, meter, pending, timeout)
                if len(outcomes) != len(pending):
                    raise TypeError(f"read_many returned {len(outcomes)} outcomes for {len(pending)} quantities")
            except Exception as exc:  # a LinkError or a driver bug: the same outcome for every quantity asked
                outcomes = [exc] * len(pending)
            latency = time.monotonic() - started
            late, link_error = await self._settle(ch, meter, rnd)
            heard_late += late
            if any(a.held for a in late):  # as in _read_quantity: what was answered is doubtful
                timed_out = self._late_timeout(late)
                outcomes = [o if isinstance(o, (MeterError, NotSupported, LinkError, NotAttempted)) else timed_out
                            for o in outcomes]
            elif link_error is not None and any(isinstance(o, RETRYABLE) for o in outcomes):
                outcomes = [link_error if isinstance(o, RETRYABLE) else o for o in outcomes]
            if any(isinstance(o, LinkError) for o in outcomes):
                ch.failure = next(o for o in outcomes if isinstance(o, LinkError))
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
        )

    def _all(self, meter: Meter, quality: Quality, detail: str, *, channel: str | None = None) -> list[Reading]:
        """The same untried outcome for every quantity of a meter (nothing silently dropped)."""
        return [self._failed(meter, name, quality, detail, channel=channel) for name in meter.quantities]

    def _finish_meter(self, index: int, meter: Meter, readings: list[Reading], rnd: _Round) -> None:
        """Store a meter's readings, count them, tell observers and update its back-off."""
        self.store.add_readings(readings)
        rnd.readings[index] = readings
        for reading in readings:
            self.stats.record(reading)
            rnd.book.record(reading)
        self.plugins.call_each("meterhub_readings_collected", readings=list(readings), channel=meter.channel)
        self._update_backoff(index, meter, readings, rnd)
        ok = sum(1 for r in readings if r.quality is Quality.OK)
        self._report("meter_done", {"meter": meter.label, "address": meter.address, "channel": meter.channel,
                                    "ok": ok, "failed": len(readings) - ok})

    def _update_backoff(self, index: int, meter: Meter, readings: Sequence[Reading], rnd: _Round) -> None:
        qualities = {r.quality for r in readings}
        state = self._states.setdefault(index, _MeterState())
        source = meter.key
        data = _meter_data(meter)
        if qualities & ANSWERED:
            if state.dead:
                self._raise_event(Event("meter_recovered", source=source,
                                        data={**data, "failed_rounds": state.failed_rounds}))
            self._states[index] = _MeterState()
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
                self._raise_event(Event("meter_dead", source=source, severity="warning",
                                        data={**data, "reason": reason,
                                              "until": state.until_wall.isoformat(timespec="seconds")}))
        # Only back-off, link or driver trouble: nothing learned about the meter itself.

    # -- commands ---------------------------------------------------------------------

    async def execute(self, meter: Meter, command: Command) -> Mapping[str, Any]:
        """Send a command after the policy hooks agreed; :class:`CommandRefused` if one did not.

        Both outcomes are recorded as events (``command_refused`` / ``command_executed``)
        for the audit trail; command arguments (passwords) are not stored.
        """
        source = meter.key
        data = {"meter": meter.address, "protocol": meter.protocol, "command": command.name}
        answers = self.plugins.call_each("meterhub_before_command", command=command)
        reasons = [a.strip() for a in answers if isinstance(a, str) and a.strip()]
        if reasons:
            self._raise_event(Event("command_refused", source=source, severity="warning",
                                    data={**data, "reason": reasons[0]}))
            raise CommandRefused(reasons[0])
        driver = self.plugins.meter_drivers().get(meter.protocol)
        if driver is None:
            raise NotSupported(f"no meter driver for protocol {meter.protocol!r} is installed")
        ch = self._channels.get(meter.channel)
        if ch is None:
            raise LinkError(f"channel {meter.channel!r} is not configured")
        if not await self._open_channel(ch):
            raise LinkError(f"channel {ch.name} is down: {ch.error}")
        assert ch.bus is not None
        result = await driver.execute(ch.bus, meter, command, self._timeout(driver, meter, ch))
        self._raise_event(Event("command_executed", source=source, data=data))
        return result

    # -- events and progress ----------------------------------------------------------

    def _raise_event(self, event: Event) -> None:
        self.store.add_event(event)
        self.plugins.call_each("meterhub_event", event=event)

    def _report(self, kind: str, info: dict[str, Any]) -> None:
        if self._progress is None:
            return
        try:
            self._progress(kind, info)
        except Exception:  # a display glitch must not stop the meters being read
            log.warning("progress callback failed on %s", kind, exc_info=True)

