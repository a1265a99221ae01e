"""Bus arbitration: one transaction in flight per half-duplex channel, with the
inter-frame gap and turnaround that the channel's character format demands.

This is a core service so that every meter driver, built-in or third-party, gets the
same guarantees without knowing about the others sharing its wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import attrs

from . import timing
from .api import Link, StreamDecoder
from .errors import ChecksumError, FrameError, MeterTimeout, TruncatedFrame, UnexpectedReply
from .model import SerialSettings


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

    @property
    def settings(self) -> SerialSettings:
        return self._settings

    async def _prepare(self, settings: SerialSettings | None) -> SerialSettings:
        wanted = settings or self.link.settings
        if wanted != self._settings:
            await self.link.apply_settings(wanted)
            self._settings = wanted
        # Wait out the inter-frame gap (and the last talker's turnaround) since the line
        # last went quiet, measured in the *current* character format.
        quiet = timing.inter_frame_gap(wanted) + timing.turnaround(wanted)
        wait = self._idle_since + quiet - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self.link.reset_input()  # stale bytes belong to nobody's answer
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
            used = await self._prepare(settings)
            sent_at = await self._send(request, used)
            self._idle_since = sent_at

    async def transact(
        self,
        request: bytes,
        decoder: StreamDecoder,
        *,
        timeout: float,
        accept: Callable[[Any], bool] = lambda frame: True,
        settings: SerialSettings | None = None,
    ) -> Exchange:
        """Send ``request`` and return the first decoded frame that ``accept`` takes.

        ``timeout`` counts from the start of the request. Frames that ``accept`` refuses
        (another meter's answer, an echo) and candidates the decoder rejects are kept in
        ``Exchange.rejected``; if no acceptable frame arrives in time the most telling
        error is raised: a checksum error beats an unexpected reply, which beats a
        truncated frame, which beats plain silence (:class:`MeterTimeout`).
        """
        async with self._lock:
            used = await self._prepare(settings)
            start = time.monotonic()
            sent_at = await self._send(request, used)
            deadline = start + timeout
            rejected: list[FrameError] = []
            rx = bytearray()
            rx_started = 0.0
            last_rx = sent_at
            try:
                while True:
                    remaining = deadline - time.monotonic()
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
                            return Exchange(item, now - sent_at, decoder.skipped, tuple(rejected))
                        else:
                            rejected.append(UnexpectedReply(f"unexpected reply: {item!r}"))
            finally:
                self._idle_since = max(last_rx, sent_at)
                if self._trace and rx:
                    self._trace(WireRecord("rx", bytes(rx), rx_started))
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
