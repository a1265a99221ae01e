"""The concentrator's side of a Q/GDW 1376.2 link to a local communication module: frames
out with a sequence number, answers matched back to their command by R6, and whatever the
module says of its own accord (AFN 06 reports, AFN 14 requests) handed to a callback, at
any time, also while commands are in flight.

The module link knows the frame layer and the confirm/deny answers; what a command means
(reading a meter, synchronising the route table) is :mod:`meterhub_plc.channel`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
from meterhub.errors import FrameError, LinkError
from meterhub.protocols import gdw1376_2 as frames
from meterhub.protocols import gdw1376_2_data as units
from meterhub.protocols.gdw1376_2 import Addresses, Afn, Direction, DownInfo, Frame

log = logging.getLogger(__name__)

#: Q/GDW 1376.2 appendix A: a module answers a direct command within 6 s (the local
#: channel's time, reading a meter, excluded).
COMMAND_TIMEOUT_S = 6.0

#: How long reads of the port wait before looking again whether the link is closing.
READ_POLL_S = 0.5

#: R6 values in use at once: 256 minus a margin, so that a late answer to a given-up
#: command cannot be matched to the next command that gets its number.
MAX_OUTSTANDING = 200


class ModuleDenied(Exception):  # noqa: N818 - it is the module's answer, not our error
    """The module answered 00 F2 (deny) with ``reason`` (a :class:`~meterhub.protocols.gdw1376_2_data.DenyReason` where known)."""

    def __init__(self, command: str, reason: int) -> None:
        self.reason = reason
        super().__init__(f"the carrier module denied {command}: {deny_text(reason)}")


def deny_text(reason: int) -> str:
    """A deny code as words: ``busy (9)``."""
    try:
        name = units.DenyReason(reason).name.lower().replace("_", " ")
    except ValueError:
        name = "reserved code"
    return f"{name} ({int(reason)})"


@attrs.define
class LinkCounters:
    """What went over the module's UART, for ``meterhub plc`` and the tests."""

    frames_out: int = 0
    frames_in: int = 0
    damaged: int = 0  #: frames with a wrong checksum or length, and noise runs
    noise_bytes: int = 0
    stray: int = 0  #: answers to no command in flight (given up, or never asked)
    denied: int = 0
    reports: int = 0  #: module-initiated frames (06, 14)


@attrs.define
class _Waiting:
    command: str
    future: asyncio.Future[Frame]
    sent: float
    timeout: float = 0.0
    afn: int = 0
    node: str = ""  #: the slave node a read went to: its answer comes from there

    def answered_by(self, frame: Frame) -> bool:
        """Whether ``frame`` (with this command's R6) can be its answer: a confirm or deny,
        or the command's AFN from the node it went to (R6 wraps after 256 commands, and a
        read's answer may come long after it was given up)."""
        if frame.afn == Afn.CONFIRM:
            return True
        if frame.afn != self.afn:
            return False
        return not self.node or (frame.addresses is not None and frame.addresses.source == self.node)


class ModuleLink:
    """Commands to a module over a serial link, answers matched by R6.

    ``on_frame(frame)`` is called (from the reader task) for every frame the module starts
    itself (PRM = 1: AFN 06 reports, AFN 14 requests) and for answers nobody waits for;
    ``on_late(frame, after, timeout)`` for the answer of a command that was given up, with
    the seconds from its sending and what it had been given. Neither may block. ``mode`` is the C byte's communication mode the concentrator writes
    (HPLC by default; a module answers in its own).
    """

    def __init__(self, link: Any, on_frame: Callable[[Frame], None], *, mode: int = frames.CommMode.HPLC,
                 command_timeout: float = COMMAND_TIMEOUT_S,
                 on_late: Callable[[Frame, float, float], None] | None = None) -> None:
        self.link = link
        self.on_frame = on_frame
        self.on_late = on_late
        self.mode = mode
        self.command_timeout = command_timeout
        self.counters = LinkCounters()
        self._waiting: dict[int, _Waiting] = {}
        self._seq = 0
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._failure: LinkError | None = None
        self._closing = False

    # -- life ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.link.open()
        await self.link.reset_input()
        self._failure = None
        self._closing = False
        self._reader = asyncio.get_running_loop().create_task(self._read_forever(), name=f"meterhub plc {self.link.name} reader")

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        self._closing = True
        if reader is not None:
            # Python 3.11's wait_for may swallow a cancellation that meets a read's data
            # (gh-86296): cancel until the reader has stopped; it also stops at _closing.
            while not reader.done():
                reader.cancel()
                await asyncio.wait({reader}, timeout=READ_POLL_S)
            if not reader.cancelled() and reader.exception() is not None:
                log.debug("channel %s: the reader had failed", self.link.name, exc_info=reader.exception())
        self._fail_waiting(LinkError(f"channel {self.link.name}: closed"))
        await self.link.close()

    # -- commands ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        if len(self._waiting) >= MAX_OUTSTANDING // 2:
            self._forget_given_up()
        if len(self._waiting) >= MAX_OUTSTANDING:
            raise LinkError(f"channel {self.link.name}: {len(self._waiting)} commands unanswered; the module is not keeping up")
        while True:
            self._seq = (self._seq + 1) & 0xFF
            if self._seq not in self._waiting:
                return self._seq

    async def command(self, afn: int, fn: int, unit: Any = None, *, addresses: Addresses | None = None,
                      timeout: float | None = None, attached: bool = False) -> Frame:
        """Send a downlink command and return the module's answer frame (00 F1 confirm or
        the data answer). Raises :class:`ModuleDenied` for 00 F2, :class:`TimeoutError`
        when no answer comes within ``timeout`` (default: the standard's 6 s), LinkError
        when the port fails."""
        if self._failure is not None:
            raise self._failure
        seq = self._next_seq()
        info = DownInfo(seq=seq, module=addresses is not None,
                        relay_level=0 if addresses is None else len(addresses.relays), attached=attached)
        frame = units.unit_frame(afn, fn, unit, info=info, addresses=addresses, mode=self.mode)
        name = units.layout(afn, fn, Direction.DOWN).name
        limit = self.command_timeout if timeout is None else timeout
        waiting = _Waiting(name, asyncio.get_running_loop().create_future(), time.monotonic(), limit, afn,
                           addresses.destination if addresses is not None else "")
        self._waiting[seq] = waiting
        try:
            await self._write(frame)
            answer = await asyncio.wait_for(asyncio.shield(waiting.future), limit)
        except (TimeoutError, asyncio.CancelledError):
            # Keep the number a while: a late answer is then recognised as late, not as
            # another command's (see MAX_OUTSTANDING); it is reported when it comes.
            waiting.future.cancel()
            raise
        if answer.afn == Afn.CONFIRM and answer.fn == 2:
            self.counters.denied += 1
            raise ModuleDenied(name, units.decode_unit(answer).reason)
        return answer

    async def answer(self, request: Frame, afn: int, fn: int, unit: Any = None, *, addresses: Addresses | None = None) -> None:
        """Answer a frame the module started, echoing its R6. C says PRM = 1 as in the
        captured 14 F1 exchange (a concentrator's answers there are C = 43h), which the
        module matches by R6, not by PRM."""
        info = DownInfo(seq=request.info.seq, module=addresses is not None,
                        relay_level=0 if addresses is None else len(addresses.relays))
        await self._write(units.unit_frame(afn, fn, unit, info=info, addresses=addresses, prm=True, mode=self.mode))

    async def _write(self, frame: Frame) -> None:
        data = frames.encode(frame)
        log.debug("%s tx %s", self.link.name, data.hex(" "))
        async with self._write_lock:
            try:
                await self.link.write(data)
            except LinkError as exc:
                self._fail(exc)
                raise
            except OSError as exc:
                error = LinkError(f"channel {self.link.name}: write to {getattr(self.link, 'url', '')} failed: {exc}")
                self._fail(error)
                raise error from exc
        self.counters.frames_out += 1

    # -- what comes in -----------------------------------------------------------------------

    async def _read_forever(self) -> None:
        decoder = frames.StreamDecoder()
        skipped = 0
        while not self._closing:
            try:
                data = await self.link.read(READ_POLL_S)
            except (LinkError, OSError) as exc:
                error = exc if isinstance(exc, LinkError) else LinkError(f"channel {self.link.name}: read failed: {exc}")
                log.warning("%s", error)
                self._fail(error)
                return
            if not data:
                self._forget_given_up()
                continue
            for found in decoder.feed(data):
                if isinstance(found, FrameError):
                    self.counters.damaged += 1
                    log.warning("channel %s: damaged frame from the module dropped: %s", self.link.name, found)
                    continue
                self._dispatch(found)
            if decoder.skipped != skipped:
                self.counters.noise_bytes += decoder.skipped - skipped
                log.debug("channel %s: %d noise byte(s) skipped", self.link.name, decoder.skipped - skipped)
                skipped = decoder.skipped

    def _dispatch(self, frame: Frame) -> None:
        self.counters.frames_in += 1
        if frame.direction is not Direction.UP:
            self.counters.stray += 1  # our own frame echoed, or another master on the UART
            return
        log.debug("%s rx AFN %02X F%d seq %d", self.link.name, frame.afn, frame.fn, frame.info.seq)
        if not frame.prm:
            waiting = self._waiting.get(frame.info.seq)
            if waiting is not None and not waiting.answered_by(frame):
                self.counters.stray += 1  # another command's, long given up: not this one's
                return
            if waiting is not None and not waiting.future.done():
                self._waiting.pop(frame.info.seq, None)
                waiting.future.set_result(frame)
                return
            self._waiting.pop(frame.info.seq, None)
            self.counters.stray += 1
            if waiting is not None and self.on_late is not None:
                try:
                    self.on_late(frame, time.monotonic() - waiting.sent, waiting.timeout)
                except Exception:  # a bug in the handler must not stop the reader
                    log.exception("channel %s: handling a late answer failed", self.link.name)
                return
        else:
            self.counters.reports += 1
        try:
            self.on_frame(frame)
        except Exception:  # a bug in the handler must not stop the reader
            log.exception("channel %s: handling AFN %02X F%d failed", self.link.name, frame.afn, frame.fn)

    def _forget_given_up(self) -> None:
        """Numbers of given-up commands are free again after a quiet read poll, unless
        recent: a module answers a command within the standard's 6 s or not at all."""
        now = time.monotonic()
        for seq, waiting in list(self._waiting.items()):
            if waiting.future.done() and now - waiting.sent > 2 * self.command_timeout:
                del self._waiting[seq]

    def _fail(self, error: LinkError) -> None:
        self._failure = error
        self._fail_waiting(error)

    def _fail_waiting(self, error: LinkError) -> None:
        for waiting in self._waiting.values():
            if not waiting.future.done():
                waiting.future.set_exception(error)
        self._waiting.clear()
