"""The half-duplex channel: one transaction in flight, the inter-frame gap
and turnaround that the channel's character format demands, and the rules that keep a
late answer from being taken for another request's.

This is a core service so that every meter driver, built-in or third-party, gets the
same guarantees without knowing about the others sharing its wire.

**Which request an answer belongs to.** An answer is taken only if the request's
``accept`` recognises it (drivers check everything the protocol carries: address,
function, data identifier, byte count). A request that got no accepted answer may still be
answered by a meter slower than its timeout: it stays *pending* (:data:`PENDING_TIMEOUTS`).
A meter answers in the order it was asked, so a frame that a pending request would accept
is that request's late answer, also when it arrives in a later request's window and that
request would accept it too (two Modbus reads of the same size): the older request claims
it, and the later one goes on waiting for its own. A :class:`LateAnswer` is dropped and
reported to whoever calls :meth:`HalfDuplexChannel.settle`. Only a repeat of the very same request (a
retry) takes an answer that an earlier identical request may have been owed: whichever
attempt it answers, it is the answer to that question.

**The guard.** After a request got no answer, nothing else is sent, retries included,
until :data:`LATE_GUARD_TIMEOUTS` timeouts have passed since it left the wire (plus
:data:`RX_LATENCY_S`) and the line has been quiet: a late answer is heard then, instead of
arriving on top of the next request and its answer. When a retry is answered after
identical attempts went unanswered, its answer may be the first attempt's and its own
still to come: the line is held again as long as the meter would take if it was that
slow, and an answer heard then makes the taken one doubtful (``LateAnswer.held``). Cost in
bus time: a failed transaction holds the line one more timeout plus its request's wire
time (a dead DL/T 645 meter at 2400 Bd: 0.62 s window + 0.71 s guard per attempt); an
answered one nothing, but for a retry that was answered after a silent attempt.

Before it sends, the bus also listens until the line has been quiet for an inter-frame
gap plus a turnaround (bytes heard meanwhile belong to nobody's answer and are dropped);
a line that never falls quiet within a whole transaction's time raises
:class:`~meterhub.errors.LineJammed`, blaming the line instead of the meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs

from .. import timing
from ..api import ChannelSink, Exchange, LateAnswer, Link, StreamDecoder, WireRecord
from ..errors import (
    ChecksumError,
    FrameError,
    LineJammed,
    MeterTimeout,
    TruncatedFrame,
    UnexpectedReply,
)
from ..model import Meter, SerialSettings

#: How long the line is held for an unanswered request, in multiples of its timeout,
#: counted from when the request left the wire: a meter that answers up to this many
#: timeouts late is heard in the guard instead of in the next request's window.
LATE_GUARD_TIMEOUTS = 2.0

#: Bytes reach the host later than they are on the wire: a USB-serial adapter hands them
#: over in packets (an FTDI chip holds them up to its latency timer, 16 ms by default) and
#: a loaded host wakes its reader late. Timing that decides which request a frame belongs
#: to allows this much.
RX_LATENCY_S = 0.020

#: The longest frame of the serial meter protocols meterhub speaks (:data:`meterhub.timing.LONGEST_FRAME_BYTES`).
#: A line that stays busy longer than this takes on the wire, with no inter-frame gap, is jammed.
LONGEST_FRAME_BYTES = timing.LONGEST_FRAME_BYTES

#: How long an unanswered request may still claim its answer, in multiples of its
#: timeout: a meter up to ten times slower than its timeout allows (a Modbus meter at
#: 9600 Bd: 2.1 s) never has its answer taken for another request's. Bounded because a
#: request that was lost on the wire, not answered late, would otherwise take the answers
#: of the later requests that look like it (the same Modbus unit and size) for its own.
PENDING_TIMEOUTS = 10.0

#: At most this many unanswered requests are remembered per line (a dead meter adds one
#: per attempt); the oldest are forgotten first.
MAX_PENDING = 64

@attrs.define
class _Pending:
    """An unanswered request that may still be answered, and how to recognise its answer."""

    request: bytes
    accept: Callable[[Any], bool]
    started: float  #: time.monotonic() it started (for a retry: its first attempt)
    timeout: float
    expires: float
    target: str | None


@attrs.define
class _Listen:
    """A stretch of listening before the next request: a guard or a hold."""

    request: bytes  #: the unanswered request, or the retry whose answer is doubtful
    target: str | None  #: whose request it is (:data:`current_target`)
    decoder: StreamDecoder  #: that request's own, mid-stream
    until: float
    timeout: float  #: of that request: how long the line may stay busy after ``until``
    held: bool = False  #: a hold after a retry was answered
    skipped: int = 0  #: noise bytes of the decoder already counted as stray
    began: float | None = None  #: when the bytes the decoder holds began to arrive


class HalfDuplexChannel:
    """A :class:`~meterhub.api.Channel` on a half-duplex line (RS485, an optical probe, a
    module's UART): one transaction at a time, the line's timing kept.

    ``transact`` holds the line for a whole request/answer; concurrent callers queue.
    Settings may differ per transaction (a DL/T 645 meter at 2400 8E1 and a Modbus
    meter at 9600 8N1 on one pair); the link is switched only while the line is held.
    Meters behind collectors are reached through them (the collectors relay the frames
    as they are); each relay adds its store-and-forward time to the answer time.
    """

    in_flight = 1  #: a half-duplex line carries one transaction at a time

    def __init__(self, name: str, link: Link, *, trace: Callable[[WireRecord], None] | None = None) -> None:
        self.name = name
        self.link = link
        self._lock = asyncio.Lock()
        self._session: asyncio.Task[Any] | None = None  # the task holding the line for a session
        self._idle_since = 0.0  # monotonic time the line last went quiet
        self._settings: SerialSettings = link.settings  # what the link is set to now
        self._default: SerialSettings = link.settings  # the channel's own: for requests that name none
        self._trace = trace
        self._pending: list[_Pending] = []  # oldest first
        self._listen: _Listen | None = None
        self._late: list[LateAnswer] = []
        #: the request last sent, and when its identical sendings in a row went unanswered
        self._repeated: bytes | None = None
        self._unanswered: list[float] = []
        #: the last bytes on the line were a whole frame we know (our request, an accepted
        #: answer); after bytes of unknown extent the line must stay quiet longer to be sure
        self._known_end = True
        self.stray_bytes = 0  #: bytes heard while the line should have been quiet (noise, foreign traffic)

    @property
    def settings(self) -> SerialSettings:
        """The channel's own character format (a request that names none goes out in it)."""
        return self._default

    # -- the Channel contract ------------------------------------------------------------

    async def open(self) -> None:
        await self.link.open()

    async def close(self) -> None:
        await self.link.close()

    def lane(self, meter: Meter) -> str:
        """One line: every meter shares it."""
        return self.name

    def towards(self, meter: Meter | None) -> _Towards:
        return _Towards(self, meter.key if meter is not None else None)

    def answer_time(self, meter: Meter, base: float) -> float:
        """``base`` plus each relay's store-and-forward time (:func:`meterhub.timing.relay_time`)."""
        settings = meter.settings or self._default
        return base + sum(hop.delay if hop.delay is not None else timing.relay_time(settings) for hop in meter.hops)

    def listen(self, sink: ChannelSink) -> None:
        """Every frame on the line goes to ``sink.wire`` (and still to a ``trace`` given at
        construction). A half-duplex line has no unsolicited frames of its own: bytes
        between transactions are late answers or stray (counted in :attr:`stray_bytes`)."""
        first = self._trace
        if first is None:
            self._trace = sink.wire
            return

        def both(record: WireRecord) -> None:
            first(record)
            sink.wire(record)

        self._trace = both

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Hold the line for several transactions of the current task (see
        :meth:`meterhub.api.Conduit.session`); other callers wait until it ends."""
        if self._session is asyncio.current_task():
            yield  # already held by this task: nested sessions are one
            return
        async with self._lock:
            self._session = asyncio.current_task()
            try:
                yield
            finally:
                self._session = None

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[None]:
        """The line for one transaction: taken, or already held by this task's session."""
        if self._session is not None and self._session is asyncio.current_task():
            yield
            return
        async with self._lock:
            yield

    @property
    def owes_answer(self) -> bool:
        """Whether a guard (or hold) is still to be listened out before the next request."""
        return self._listen is not None

    # -- late answers ------------------------------------------------------------------

    async def settle(self) -> list[LateAnswer]:
        """Listen out the guard of an unanswered request (or the hold after a retry), if
        there is one; return the late answers heard since the last call, here or during
        transactions. Raises LinkError if the link fails meanwhile."""
        async with self._held():
            await self._settle_locked()
        late, self._late = self._late, []
        return late

    def _forget_expired(self) -> None:
        """Drop the pending requests too old to be answered now, keeping at most
        MAX_PENDING. Expiry is judged here, when a transaction or a guard begins, never
        while bytes are being processed: a loop that stalls after an answer arrived in
        time must not let that answer expire and be taken for the next request's."""
        now = time.monotonic()
        self._pending = [p for p in self._pending if p.expires > now][-MAX_PENDING:]

    async def _settle_locked(self) -> None:
        listen = self._listen
        if listen is None:
            return
        self._forget_expired()
        try:
            remaining = listen.until - time.monotonic()
            while remaining > 0:
                self._heard(await self.link.read(remaining), listen)
                remaining = listen.until - time.monotonic()
            # A late answer may be under way as the guard ends: wait for a quiet line.
            await self._await_quiet(self._settings, listen.timeout, listen)
            if listen.held:
                # Nothing more came from a meter as slow as the answer taken: that answer was
                # the retry's own, and the earlier attempts were lost, not late.
                self._pending = [p for p in self._pending if (p.request, p.target) != (listen.request, listen.target)]
        finally:
            self._listen = None

    def _claim(
        self, frame: Any, now: float, began: float, target: str | None, *, mine: bool = False, held: bool = False,
        skip: bytes | None = None,
    ) -> bool:
        """Whether a pending request takes ``frame`` as its late answer; it is then reported
        and no longer pending. ``target``'s own requests are asked first, oldest first (a
        meter answers in the order it was asked), then the others'. A frame that the
        current request would take (``mine``) is left to it unless one of its target's
        earlier requests, other than repeats of ``skip``, takes it: another meter's late
        answer can look the same (an M-Bus E5 names no one) and is no concern of this one.
        Every request still pending when this transaction or guard began may claim
        (:meth:`_forget_expired`)."""
        ordered = [p for p in self._pending if p.target == target]
        if not mine:
            ordered += [p for p in self._pending if p.target != target]
        for pending in ordered:
            if pending.request != skip and pending.accept(frame):
                self._pending.remove(pending)
                self._late.append(LateAnswer(pending.request, frame, began - pending.started, now - pending.started,
                                             pending.timeout, pending.target, held))
                return True
        return False

    def _heard(self, data: bytes, listen: _Listen | None) -> None:
        """Bytes between transactions: a pending request's late answer, or stray."""
        if not data:
            return
        now = time.monotonic()
        self._idle_since = now
        self._known_end = False
        if self._trace:
            self._trace(WireRecord("rx", bytes(data), now))
        if listen is None:
            self.stray_bytes += len(data)
            return
        began = listen.began if listen.began is not None else now  # of what the decoder holds, or of these bytes
        for item in listen.decoder.feed(data):
            if not isinstance(item, FrameError):
                self._claim(item, now, began, listen.target, held=listen.held)
        listen.began = began if listen.decoder.pending else None
        self.stray_bytes += listen.decoder.skipped - listen.skipped
        listen.skipped = listen.decoder.skipped

    async def _await_quiet(
        self, settings: SerialSettings, limit: float, listen: _Listen | None = None, gap: float | None = None,
        wake_up: int = 0,
    ) -> None:
        """Listen until the line has been quiet for the next frame's gap (at least a
        turnaround) since anything was last on it (our own frames included; :func:`_quiet`).
        LineJammed if it does not fall quiet within ``limit`` seconds (at least a longest
        frame's wire time)."""
        started = time.monotonic()
        deadline = started + max(limit, timing.frame_time(LONGEST_FRAME_BYTES, settings))
        heard = 0
        while True:
            quiet = _quiet(settings, known_end=self._known_end, gap=gap, wake_up=wake_up)
            wait = self._idle_since + quiet - time.monotonic()
            data = await self.link.read(max(wait, 0.0))
            if not data:
                return
            heard += len(data)
            self._heard(data, listen)
            if time.monotonic() >= deadline:
                raise LineJammed(
                    f"line {self.name} is jammed: {heard} bytes in {time.monotonic() - started:.2f} s and never quiet "
                    f"for {quiet * 1000:.1f} ms (an inter-frame gap); nothing was sent"
                )

    # -- transactions ------------------------------------------------------------------

    async def _prepare(
        self, settings: SerialSettings | None, limit: float, gap: float | None = None, wake_up: int = 0,
    ) -> SerialSettings:
        await self._settle_locked()
        self._forget_expired()
        wanted = settings or self._default
        if wanted != self._settings:
            # Our last frame may still be leaving the UART (IEC 62056-21: the option select
            # at 300 Bd, then the readout at the new rate): switching now would garble its
            # tail. Wait until its last character is out.
            await asyncio.sleep(max(self._idle_since - time.monotonic(), 0.0))
            await self.link.apply_settings(wanted)
            self._settings = wanted
        # The frame's gap (at least the last talker's turnaround) since the line last went
        # quiet, measured in the *current* character format; stray bytes are dropped.
        await self._await_quiet(wanted, limit, gap=gap, wake_up=wake_up)
        return wanted

    async def _send(self, request: bytes, settings: SerialSettings) -> float:
        started = time.monotonic()
        await self.link.write(request)
        if self._trace:
            self._trace(WireRecord("tx", bytes(request), started))
        # The UART shifts the request out after write() returns; the line is ours until then.
        return started + timing.frame_time(len(request), settings)

    async def send(
        self, request: bytes, *, settings: SerialSettings | None = None, gap: float | None = None, wake_up: int = 0,
    ) -> None:
        """Send a frame that gets no answer (broadcast time sync, broadcast freeze)."""
        async with self._held():
            used = await self._prepare(settings, 0.0, gap, wake_up)
            sent_at = await self._send(request, used)
            self._idle_since = sent_at
            self._known_end = True

    async def transact(
        self,
        request: bytes,
        decoder: StreamDecoder,
        *,
        timeout: float,
        accept: Callable[[Any], bool] = lambda frame: True,
        settings: SerialSettings | None = None,
        guard: bool = True,
        target: str | None = None,
        gap: float | None = None,
        wake_up: int = 0,
        answer_within: float | None = None,
    ) -> Exchange:
        """Send ``request`` and return the first decoded frame that ``accept`` takes and no
        earlier unanswered request claims (module docstring).

        ``timeout`` counts from the start of the request; a frame that has begun to arrive
        by then is heard to its end. Frames that ``accept`` refuses (another meter's
        answer, an echo) and candidates the decoder rejects are kept in
        ``Exchange.rejected``; if no acceptable frame arrives in time the most telling
        error is raised: a checksum error beats an unexpected reply, which beats a
        truncated frame, which beats plain silence (:class:`MeterTimeout`).

        Without an accepted answer (or a damaged one: a checksum error) the request stays
        pending and the next transaction first listens out the guard. ``guard=False``
        does neither, for requests whose late answers cannot be taken for another's
        because ``accept`` checks what tells them apart (scan probes to one address after
        another, each answer naming its address); a driver that is unsure keeps the guard.
        ``target`` names the meter asked (its key), so that a late answer says whose it is
        and the meter's own earlier requests claim first; :meth:`towards` fills it in.
        ``gap`` is the silence the request's protocol needs before it, ``wake_up`` the
        characters at its head that may overlap the last talker's turnaround (see
        :func:`meterhub.timing.line_quiet`). ``answer_within`` (at most ``timeout``) is how
        long after the start of the request the answer must have begun, for answers whose
        length makes ``timeout`` long (an IEC 62056-21 readout of up to 8 KiB: a silent meter
        is given up on after the reaction time, not after the wire time of a whole readout);
        past it, only a frame under way is heard out (a readout that came with a bad
        checksum ends the wait: no other is coming). It is also the lateness the guard after
        an unanswered request allows for.
        """
        if answer_within is not None and not 0 < answer_within <= timeout:
            raise ValueError(f"answer_within must be within (0, timeout={timeout}], not {answer_within}")
        async with self._held():
            used = await self._prepare(settings, timeout, gap, wake_up)
            if request != self._repeated:
                self._repeated, self._unanswered = bytes(request), []
            start = time.monotonic()
            sent_at = await self._send(request, used)
            deadline = start + timeout
            # By then the answer has begun, or it is not coming: however long an answer may
            # take, the transaction ends there unless a frame is under way.
            begun_by = start + answer_within if answer_within is not None else deadline
            # An answer that began in time is in time: one under way at the deadline is
            # heard to its end (while bytes keep coming, at most a longest frame longer).
            overtime = deadline + timing.frame_time(LONGEST_FRAME_BYTES, used)
            pause = _quiet(used, known_end=False)
            rejected: list[FrameError] = []
            rx = bytearray()
            rx_started = 0.0
            last_rx = sent_at
            answered_at: float | None = None
            try:
                while True:
                    now = time.monotonic()
                    if now >= begun_by and not decoder.pending:
                        break
                    remaining = (deadline if decoder.pending else begun_by) - now
                    if remaining <= 0:
                        remaining = min(last_rx + pause, overtime) - now
                        if remaining <= 0:
                            break
                    data = await self.link.read(remaining)
                    if not data:
                        continue
                    now = time.monotonic()
                    if not rx:
                        rx_started = now
                    rx += data
                    last_rx = now
                    for item in decoder.feed(data):
                        if isinstance(item, FrameError):
                            rejected.append(item)
                            continue
                        mine = accept(item)
                        # An earlier request asked first; a repeat of this one may not claim it.
                        if self._claim(item, now, now, target, mine=mine, skip=bytes(request) if mine else None):
                            continue
                        if mine:
                            answered_at = now
                            return Exchange(item, now - sent_at, decoder.skipped, tuple(rejected))
                        rejected.append(UnexpectedReply(f"unexpected reply: {item!r}"))
            finally:
                self._idle_since = max(last_rx, sent_at)
                self._known_end = answered_at is not None and not decoder.pending
                if self._trace and rx:
                    self._trace(WireRecord("rx", bytes(rx), rx_started))
                self._after(request, decoder, accept, start, sent_at, answer_within or timeout, answered_at, target,
                            guard and not any(isinstance(e, ChecksumError) for e in rejected))
            raise transaction_error(rejected, decoder, timeout if decoder.pending else answer_within or timeout)

    def _after(
        self, request: bytes, decoder: StreamDecoder, accept: Callable[[Any], bool], start: float, sent_at: float,
        timeout: float, answered_at: float | None, target: str | None, owed: bool,
    ) -> None:
        """What a transaction leaves the line owing: nothing, a guard, or a hold."""
        if answered_at is not None:
            if self._unanswered:
                # Perhaps the first identical attempt's answer, as slow as that: this one's
                # own would come that much after it was sent. Hear it before anything else.
                slowest = answered_at - self._unanswered[0]
                # (The first attempt's pending entry stands for that one answer still due.)
                self._listen = _Listen(bytes(request), target, decoder, start + slowest + timeout + RX_LATENCY_S,
                                       timeout, True, decoder.skipped)
            self._unanswered = []
        elif owed:  # a damaged answer (bad checksum) is the meter's answer: nothing is owed then
            first = self._unanswered[0] if self._unanswered else start  # an answer may be the first attempt's
            self._unanswered.append(start)
            expires = start + PENDING_TIMEOUTS * timeout
            self._pending.append(_Pending(bytes(request), accept, first, timeout, expires, target))
            self._listen = _Listen(bytes(request), target, decoder,
                                   sent_at + LATE_GUARD_TIMEOUTS * timeout + RX_LATENCY_S, timeout, False,
                                   decoder.skipped)


@attrs.frozen
class _Towards:
    """A :class:`HalfDuplexChannel` as one meter's driver sees it (:class:`~meterhub.api.Conduit`)."""

    channel: HalfDuplexChannel
    target: str | None

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def settings(self) -> SerialSettings:
        return self.channel.settings

    async def transact(
        self,
        request: bytes,
        decoder: StreamDecoder,
        *,
        timeout: float,
        accept: Callable[[Any], bool] = lambda frame: True,
        settings: SerialSettings | None = None,
        guard: bool = True,
        gap: float | None = None,
        wake_up: int = 0,
        answer_within: float | None = None,
    ) -> Exchange:
        return await self.channel.transact(request, decoder, timeout=timeout, accept=accept, settings=settings,
                                           guard=guard, target=self.target, gap=gap, wake_up=wake_up,
                                           answer_within=answer_within)

    async def send(
        self, request: bytes, *, settings: SerialSettings | None = None, gap: float | None = None, wake_up: int = 0,
    ) -> None:
        await self.channel.send(request, settings=settings, gap=gap, wake_up=wake_up)

    def session(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.channel.session()

    async def settle(self) -> list[LateAnswer]:
        return await self.channel.settle()


def _quiet(settings: SerialSettings, *, known_end: bool, gap: float | None = None, wake_up: int = 0) -> float:
    """How long the line must be silent to be quiet: the next frame's gap, at least a
    turnaround (:func:`meterhub.timing.line_quiet`), after a frame we know the end of; after
    bytes of unknown extent at least an inter-frame gap and RX_LATENCY_S too, as the host
    sees a busy line in packets with pauses longer than the gap."""
    if known_end:
        return timing.line_quiet(settings, gap, wake_up=wake_up)
    return max(timing.line_quiet(settings), RX_LATENCY_S)


def transaction_error(rejected: list[FrameError], decoder: StreamDecoder, timeout: float) -> Exception:
    """The error a transaction without an accepted answer ends with: the most telling of
    what came (a checksum error beats an unexpected reply, which beats a truncated frame,
    which beats noise) or, if nothing did, MeterTimeout. Public so that every channel
    reports failures alike."""
    for kind in (ChecksumError, UnexpectedReply, TruncatedFrame, FrameError):
        for err in rejected:
            if isinstance(err, kind):
                return err
    if decoder.pending:
        return TruncatedFrame(f"incomplete frame: {decoder.pending} bytes then silence for the rest of {timeout:.3f} s")
    if decoder.skipped:
        return FrameError(f"only noise ({decoder.skipped} bytes) within {timeout:.3f} s")
    return MeterTimeout(f"no answer within {timeout:.3f} s")
