"""Bus arbitration: one transaction in flight per half-duplex channel, the inter-frame gap
and turnaround that the channel's character format demands, and the rule that keeps a
late answer from being taken for another request's.

This is a core service so that every meter driver, built-in or third-party, gets the
same guarantees without knowing about the others sharing its wire.

**The late-answer rule.** An answer is taken only inside its own request's window, and
only if the request's ``accept`` recognises it (drivers check everything the protocol
carries: address, function, data identifier, byte count). A request that got no accepted
answer may still be answered by a meter slower than its timeout: the line *owes* it an
answer. Before anything else is sent on the line, retries included, the bus listens out a
*guard*: until :data:`LATE_GUARD_TIMEOUTS` timeouts have passed since the unanswered
request left the wire (plus :data:`RX_LATENCY_S`), then until the line has been quiet for
an inter-frame gap. A frame heard in the guard that the unanswered request accepts is a
:class:`LateAnswer`: it is dropped and reported to whoever calls :meth:`Bus.settle`, never
handed to the next request. Cost in bus time: a transaction that fails holds the line for
one more timeout plus its request's wire time (a dead DL/T 645 meter at 2400 Bd: 1.6 s
window + 1.7 s guard per attempt); a transaction that is answered costs nothing extra.

Before it sends, the bus also listens until the line has been quiet for an inter-frame
gap plus a turnaround (bytes heard meanwhile belong to nobody's answer and are dropped);
a line that never falls quiet within a whole transaction's time raises
:class:`~meterhub.errors.LineJammed`, blaming the line instead of the meter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import attrs

from . import timing
from .api import Link, StreamDecoder
from .errors import ChecksumError, FrameError, LineJammed, MeterTimeout, TruncatedFrame, UnexpectedReply
from .model import SerialSettings

#: How long the line is held for an unanswered request, in multiples of its timeout,
#: counted from when the request left the wire: a meter that answers up to this many
#: timeouts late is heard in the guard instead of in the next request's window.
LATE_GUARD_TIMEOUTS = 2.0

#: Bytes reach the host later than they are on the wire: a USB-serial adapter hands them
#: over in packets (an FTDI chip holds them up to its latency timer, 16 ms by default) and
#: a loaded host wakes its reader late. Timing that decides which request a frame belongs
#: to allows this much.
RX_LATENCY_S = 0.020

#: The longest frame of the serial meter protocols meterhub speaks (an M-Bus long frame:
#: 255 bytes of L-field data and 6 of framing). A line that stays busy longer than this
#: takes on the wire, with no inter-frame gap, is jammed.
LONGEST_FRAME_BYTES = 261


@attrs.frozen
class Exchange:
    """The accepted answer of one transaction and what happened on the way."""

    frame: Any
    latency: float  #: seconds from the end of the request to the accepted answer
    skipped: int = 0  #: noise bytes skipped by the decoder
    rejected: tuple[FrameError, ...] = ()  #: candidates discarded before the answer


@attrs.frozen
class WireRecord:
    """A frame seen on the wire, for logs and the HIL bench's per-test traces."""

    direction: str  #: "tx" or "rx"
    data: bytes
    at: float  #: time.monotonic() of the first byte


@attrs.frozen
class LateAnswer:
    """An answer that arrived after its request had been given up; heard in the guard,
    dropped, and reported so that the caller can say the meter is too slow."""

    request: bytes  #: the request it answers
    frame: Any  #: the decoded answer
    began: float  #: seconds from the start of the request until the answer's first bytes arrived
    after: float  #: seconds from the start of the request until the answer was complete
    timeout: float  #: what the request had been given


@attrs.define
class _Owed:
    """An unanswered request whose answer may still come, and how to recognise it."""

    request: bytes
    decoder: StreamDecoder
    accept: Callable[[Any], bool]
    started: float  #: time.monotonic() the request started
    timeout: float
    until: float  #: end of the guard
    skipped: int = 0  #: noise bytes of the decoder already counted as stray
    began: float | None = None  #: when the bytes the decoder holds began to arrive


class Bus:
    """Serialises transactions on one link and keeps the line's timing.

    ``transact`` holds the bus for a whole request/answer; concurrent callers queue.
    Settings may differ per transaction (a DL/T 645 meter at 2400 8E1 and a Modbus
    meter at 9600 8N1 on one pair); the link is switched only while the bus is held.
    """

    def __init__(self, name: str, link: Link, *, trace: Callable[[WireRecord], None] | None = None) -> None:
        self.name = name
        self.link = link
        self._lock = asyncio.Lock()
        self._idle_since = 0.0  # monotonic time the line last went quiet
        self._settings: SerialSettings = link.settings
        self._trace = trace
        self._owed: _Owed | None = None
        self._late: list[LateAnswer] = []
        #: the last bytes on the line were a whole frame we know (our request, an accepted
        #: answer); after bytes of unknown extent the line must stay quiet longer to be sure
        self._known_end = True
        self.stray_bytes = 0  #: bytes heard while the line should have been quiet (noise, foreign traffic)

    @property
    def settings(self) -> SerialSettings:
        return self._settings

    @property
    def owes_answer(self) -> bool:
        """Whether an unanswered request's guard is still to be listened out."""
        return self._owed is not None

    # -- the late-answer guard ---------------------------------------------------------

    async def settle(self) -> list[LateAnswer]:
        """Listen out the guard of an unanswered request, if there is one; return the late
        answers heard since the last call (in this guard or in guards that transactions
        ran before they sent). Raises LinkError if the link fails meanwhile."""
        async with self._lock:
            await self._settle_locked()
        late, self._late = self._late, []
        return late

    async def _settle_locked(self) -> None:
        owed = self._owed
        if owed is None:
            return
        try:
            remaining = owed.until - time.monotonic()
            while remaining > 0:
                self._heard(await self.link.read(remaining), owed)
                remaining = owed.until - time.monotonic()
            # A late answer may be under way as the guard ends: wait for a quiet line.
            await self._await_quiet(self._settings, owed.timeout, owed)
        finally:
            self._owed = None

    def _heard(self, data: bytes, owed: _Owed | None) -> None:
        """Bytes on a line that owes nobody an answer now: judge them against the
        unanswered request (a late answer) or count them as stray."""
        if not data:
            return
        now = time.monotonic()
        self._idle_since = now
        self._known_end = False
        if self._trace:
            self._trace(WireRecord("rx", bytes(data), now))
        if owed is None:
            self.stray_bytes += len(data)
            return
        began = owed.began if owed.began is not None else now  # of what the decoder holds, or of these bytes
        for item in owed.decoder.feed(data):
            if not isinstance(item, FrameError) and owed.accept(item):
                self._late.append(LateAnswer(owed.request, item, began - owed.started, now - owed.started, owed.timeout))
        owed.began = began if owed.decoder.pending else None
        self.stray_bytes += owed.decoder.skipped - owed.skipped
        owed.skipped = owed.decoder.skipped

    async def _await_quiet(self, settings: SerialSettings, limit: float, owed: _Owed | None = None) -> None:
        """Listen until the line has been quiet for an inter-frame gap plus a turnaround
        since anything was last on it (our own frames included). After bytes that were
        not a frame we know the end of, quiet must also outlast RX_LATENCY_S: the host sees
        a busy line in packets, with pauses longer than the gap. LineJammed if it does
        not fall quiet within ``limit`` seconds (at least a longest frame's wire time)."""
        started = time.monotonic()
        deadline = started + max(limit, timing.frame_time(LONGEST_FRAME_BYTES, settings))
        heard = 0
        while True:
            quiet = timing.inter_frame_gap(settings) + timing.turnaround(settings)
            if not self._known_end:
                quiet = max(quiet, RX_LATENCY_S)
            wait = self._idle_since + quiet - time.monotonic()
            data = await self.link.read(max(wait, 0.0))
            if not data:
                return
            heard += len(data)
            self._heard(data, owed)
            if time.monotonic() >= deadline:
                raise LineJammed(
                    f"line {self.name} is jammed: {heard} bytes in {time.monotonic() - started:.2f} s and never quiet "
                    f"for {quiet * 1000:.1f} ms (an inter-frame gap); nothing was sent"
                )

    # -- transactions ------------------------------------------------------------------

    async def _prepare(self, settings: SerialSettings | None, limit: float) -> SerialSettings:
        await self._settle_locked()
        wanted = settings or self.link.settings
        if wanted != self._settings:
            await self.link.apply_settings(wanted)
            self._settings = wanted
        # The inter-frame gap (and the last talker's turnaround) since the line last went
        # quiet, measured in the *current* character format; stray bytes are dropped.
        await self._await_quiet(wanted, limit)
        return wanted

    async def _send(self, request: bytes, settings: SerialSettings) -> float:
        started = time.monotonic()
        await self.link.write(request)
        if self._trace:
            self._trace(WireRecord("tx", bytes(request), started))
        # The UART shifts the request out after write() returns; the line is ours until then.
        return started + timing.frame_time(len(request), settings)

    async def send(self, request: bytes, *, settings: SerialSettings | None = None) -> None:
        """Send a frame that gets no answer (broadcast time sync, broadcast freeze)."""
        async with self._lock:
            used = await self._prepare(settings, 0.0)
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
    ) -> Exchange:
        """Send ``request`` and return the first decoded frame that ``accept`` takes.

        ``timeout`` counts from the start of the request; a frame that has begun to arrive
        by then is heard to its end. Frames that ``accept`` refuses
        (another meter's answer, an echo) and candidates the decoder rejects are kept in
        ``Exchange.rejected``; if no acceptable frame arrives in time the most telling
        error is raised: a checksum error beats an unexpected reply, which beats a
        truncated frame, which beats plain silence (:class:`MeterTimeout`).

        Without an accepted answer (or a damaged one: a checksum error) the line owes the
        request one: the next transaction first listens out the late-answer guard
        (module docstring). ``guard=False`` skips
        it, for requests whose late answers cannot be taken for the next request's
        because ``accept`` checks what tells them apart (scan probes to one address
        after another); a driver that is unsure keeps the guard.
        """
        async with self._lock:
            used = await self._prepare(settings, timeout)
            start = time.monotonic()
            sent_at = await self._send(request, used)
            deadline = start + timeout
            # An answer that began in time is in time: one under way at the deadline is
            # heard to its end (while bytes keep coming, at most a longest frame longer).
            overtime = deadline + timing.frame_time(LONGEST_FRAME_BYTES, used)
            pause = max(timing.inter_frame_gap(used) + timing.turnaround(used), RX_LATENCY_S)
            rejected: list[FrameError] = []
            rx = bytearray()
            rx_started = 0.0
            last_rx = sent_at
            answered = False
            try:
                while True:
                    now = time.monotonic()
                    remaining = deadline - now
                    if remaining <= 0:
                        if not decoder.pending:
                            break
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
                        elif accept(item):
                            answered = True
                            return Exchange(item, now - sent_at, decoder.skipped, tuple(rejected))
                        else:
                            rejected.append(UnexpectedReply(f"unexpected reply: {item!r}"))
            finally:
                self._idle_since = max(last_rx, sent_at)
                self._known_end = answered and not decoder.pending
                if self._trace and rx:
                    self._trace(WireRecord("rx", bytes(rx), rx_started))
                # A damaged answer (bad checksum) is the meter's answer: nothing more is owed.
                if not answered and guard and not any(isinstance(e, ChecksumError) for e in rejected):
                    until = sent_at + LATE_GUARD_TIMEOUTS * timeout + RX_LATENCY_S
                    self._owed = _Owed(bytes(request), decoder, accept, start, timeout, until, decoder.skipped)
            raise _timeout_error(rejected, decoder, timeout)


def _timeout_error(rejected: list[FrameError], decoder: StreamDecoder, timeout: float) -> Exception:
    for kind in (ChecksumError, UnexpectedReply, TruncatedFrame, FrameError):
        for err in rejected:
            if isinstance(err, kind):
                return err
    if decoder.pending:
        return TruncatedFrame(f"incomplete frame: {decoder.pending} bytes then silence for the rest of {timeout:.3f} s")
    if decoder.skipped:
        return FrameError(f"only noise ({decoder.skipped} bytes) within {timeout:.3f} s")
    return MeterTimeout(f"no answer within {timeout:.3f} s")
