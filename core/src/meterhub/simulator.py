"""Simulated buses: devices that answer on a pseudo-terminal with real byte timing.

A :class:`PtyBus` owns a pty pair and serves it from a background thread, so an asyncio
concentrator (or a plain ``os.read``) in the main thread talks to it exactly as it would
to a USB-RS485 adapter. The bus is protocol-independent: it feeds what the master writes
into one stream decoder per protocol, lets each :class:`SimDevice` answer, and puts the
answers back on the wire paced at the baud rate, after a turnaround, with the wire-level
faults a real installation shows (silence, noise, truncation, slow answers, collisions).

A :class:`PacedPtyServer` is the serving loop of one simulated device with a state of its
own (a carrier module, an optical meter): timers relative to the event being handled and
output paced at the character time, on the same kind of pty.
"""

from __future__ import annotations

import bisect
import enum
import errno
import heapq
import itertools
import logging
import math
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar, runtime_checkable

import attrs

from . import timing
from .api import StreamDecoder
from .errors import FrameError
from .model import SerialSettings

if TYPE_CHECKING:
    from types import TracebackType

logger = logging.getLogger(__name__)

#: How often the serving thread wakes up when nothing happens, so stop() is prompt.
#: A scheduling figure of the simulator, not a protocol timing.
POLL_INTERVAL_S = 0.05

#: Replies are written in chunks spanning about this long on the wire, each one when its
#: last character would have left the meter's UART, so a reply arrives over its wire time
#: (11 bits a character at 8E1) instead of in one burst. Coarse enough for a loaded CI box.
CHUNK_INTERVAL_S = 0.010

#: Default delay between the end of a request and the first byte of the answer, drawn
#: uniformly from this range. DL/T 645-2007 allows 20 ms <= Td <= 500 ms (protocols
#: README §1.6); real meters typically answer in a few tens of milliseconds.
DEFAULT_TURNAROUND = (0.030, 0.060)

#: How late a device with the ``slow`` fault answers, on top of its turnaround: beyond
#: the DL/T 645 500 ms response limit plus a 2400 Bd reply, so a driver times out.
DEFAULT_SLOW_DELAY = 3.0

#: Garbage lengths (bytes) the ``noise`` fault puts before and after a reply, and that
#: bus-level noise injects between transactions.
NOISE_BEFORE = (3, 12)
NOISE_AFTER = (2, 8)
IDLE_NOISE = (1, 10)

#: A collision is re-garbled until no decoder can find a valid frame in it (bounded).
MAX_GARBLE_ROUNDS = 32

#: Garbage a jamming device keeps queued ahead of the wire, in character times: it sends
#: back to back, and whatever else is sent meanwhile collides with it.
JAM_BURST_CHARS = 64


class Fault(enum.Enum):
    """A misbehaviour a simulated device can be switched to, at start or while running.

    The bus applies the wire faults (``SILENCE``, ``NOISE``, ``TRUNCATED``, ``SLOW``, ``JAM``); the
    device applies the ones only its protocol knows how to produce (``BAD_CHECKSUM``,
    ``WRONG_ADDRESS``) in its ``handle``.
    """

    SILENCE = "silence"  #: the device neither processes nor answers anything
    BAD_CHECKSUM = "bad_checksum"  #: answers with a wrong checksum
    NOISE = "noise"  #: garbage bytes before and after a valid answer
    TRUNCATED = "truncated"  #: the answer stops part-way through
    SLOW = "slow"  #: answers after a delay longer than a normal timeout
    WRONG_ADDRESS = "wrong_address"  #: answers with an address that is not its own
    JAM = "jam"  #: floods the line with garbage, asked or not (a babbling device, a stuck transmitter)


R = TypeVar("R")


def as_fault(value: Fault | str | None) -> Fault | None:
    """``Fault`` from a fault, its value (``"bad_checksum"``) or name; None stays None."""
    if value is None or isinstance(value, Fault):
        return value
    text = str(value).strip().lower().replace("-", "_")
    try:
        return Fault(text)
    except ValueError:
        choices = ", ".join(f.value for f in Fault)
        raise ValueError(f"unknown fault {value!r}; choose one of: {choices}") from None


def encode_with_fault(reply: R, fault: Fault | None, encode: Callable[[R], bytes], wrong: Callable[[R], R]) -> bytes:
    """``reply`` on the wire with the faults a device applies itself, for protocols whose
    frames end ``CS 16h`` (DL/T 645, CJ/T 188, M-Bus): ``WRONG_ADDRESS`` sends
    ``wrong(reply)`` instead, ``BAD_CHECKSUM`` a CS one too high. The bus applies the rest."""
    if fault is Fault.WRONG_ADDRESS:
        reply = wrong(reply)
    raw = bytearray(encode(reply))
    if fault is Fault.BAD_CHECKSUM:
        raw[-2] = (raw[-2] + 1) & 0xFF  # CS is the byte before the final 16h
    return bytes(raw)


@runtime_checkable
class PacedDevice(Protocol):
    """A simulated device whose answers the bus paces at its own serial format (set by
    whoever puts it on a mixed bus, from its simulator's settings)."""

    settings: SerialSettings


@runtime_checkable
class SimDevice(Protocol):
    """What a :class:`PtyBus` needs from a simulated device of any protocol.

    Devices with the same ``protocol`` share one stream decoder on the bus, so several
    protocols (DL/T 645, CJ/T 188, Modbus) can share one virtual wire.
    """

    address: str
    protocol: str  #: the decoder group, e.g. "dlt645"
    fault: Fault | None

    def new_decoder(self) -> StreamDecoder:
        """A fresh stream decoder for the frames this device understands."""
        ...

    def handle(self, frame: Any) -> list[bytes]:
        """Encoded answers to one decoded request (empty: stay silent)."""
        ...


@attrs.frozen
class _Chunk:
    due: float  #: time.monotonic() at which the bytes may be written
    data: bytes
    ends_frame: bool = False  #: the last chunk of a complete reply (counted in frames_out)


def open_raw_pty() -> tuple[int, int, str]:
    """A pseudo-terminal for a simulated device: (master fd, non-blocking; slave fd; the
    slave's path for the client). The slave is made raw before any client opens it (no
    echo, no CR/LF mangling), and the caller keeps the slave fd open so that a client
    closing and reopening the port does not make reads on the master fail with EIO
    (serial-visa-peers notes B1)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def close_pty(*fds: int | None) -> None:
    """Close a simulator's pty ends (None: not open); a closed one is no error."""
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class PtyServer:
    """A simulated device served on a pseudo-terminal by one background thread: the life
    cycle the device simulators share (a modem, a carrier module, an optical meter).

    A subclass calls ``super().__init__()``, implements :meth:`_serve` (the thread's loop,
    until ``self._stop`` is set, on ``self._master``) and may override :meth:`_starting`
    (called with the pty open, before the thread starts) and :meth:`_stopping` (after the
    thread has ended, before the pty closes). ``path`` is the pty slave a client opens.
    """

    #: how long stop() waits for the serving thread
    JOIN_S = 2.0
    #: how long :meth:`read_master` pauses while no client has the port open
    POLL_S = POLL_INTERVAL_S

    def __init__(self) -> None:
        self.path = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None

    def _serve(self) -> None:
        raise NotImplementedError

    def _starting(self) -> None:
        """With the pty open, before the thread starts."""

    def _stopping(self) -> None:
        """After the thread has ended, before the pty closes."""

    def start(self) -> Self:
        """Open the pty and start serving; returns self."""
        if self._thread is not None:
            return self
        self._master, self._slave, self.path = open_raw_pty()
        self._starting()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"{type(self).__name__} {self.path}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the pty (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.JOIN_S)
            self._thread = None
        self._stopping()
        close_pty(self._master, self._slave)
        self._master = self._slave = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def read_master(self, master: int) -> bytes:
        """What the client wrote, b"" when nothing is there or no client has the port open
        (EIO: then after a poll interval, so the serving loop does not spin)."""
        try:
            return os.read(master, 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: no client has the slave open right now
                logger.warning("%s %s: read failed: %s", type(self).__name__, self.path, exc)
            time.sleep(self.POLL_S)
            return b""


@attrs.define(slots=True, eq=False)
class SimTimer:
    """Something the serving thread of a :class:`PacedPtyServer` does at ``due``
    (monotonic s), unless ``cancelled`` is set first."""

    due: float
    action: Callable[[], None]
    cancelled: bool = False


@attrs.frozen
class PacedChunk:
    """A piece of output of a :class:`PacedPtyServer`, written when its last character
    would have left the device's UART."""

    data: bytes
    ends_frame: bool = False  #: the last chunk of a message (counted in frames_out)
    tag: Any = None  #: what the subclass attached for :meth:`PacedPtyServer._outgoing`


class PacedPtyServer(PtyServer):
    """A :class:`PtyServer` whose one thread reads the master, runs timers and writes
    output paced at the character time: the serving loop of a device that answers on its
    own schedule (a carrier module, an optical meter).

    Each turn of the loop waits (select) until the master is readable, a timer or a chunk
    is due, or :attr:`POLL_S` has passed; then, with ``self._lock`` held, it hands what
    the client wrote to :meth:`_receive`, runs the timers that are due (in due order,
    ties in the order they were set) and writes the chunks that are due. A subclass
    implements :meth:`_receive` and schedules with :meth:`_after` and :meth:`_emit`,
    both relative to ``self._now``, the time of the event being handled (set it to a
    request's end on the wire, ``self._rx_end``, before handling it). An exception in a
    handler or timer is logged on :attr:`_logger`, and the loop goes on.
    """

    #: The logger and the name in its messages (a subclass sets its own).
    _logger: logging.Logger = logger
    LABEL = "simulator"

    def __init__(self) -> None:
        super().__init__()
        self.frames_out = 0  #: messages completely written
        self.bytes_out = 0  #: bytes written (noise and echo included)
        self._lock = threading.RLock()
        self._timers: list[tuple[float, int, SimTimer]] = []  # heap by due time, then order set
        self._out: list[tuple[float, int, PacedChunk]] = []  # heap by due time, then order queued
        self._ticket = itertools.count()  # insertion order, for ties in both heaps
        self._line_free_at = 0.0  # monotonic time the device's last transmission ends
        self._rx_end = 0.0  # monotonic time what the client wrote ends on the wire
        self._now = 0.0  # the time of the event being handled (a request's end, a timer's due)
        self._epoch = 0  # a subclass bumps it where timers set before must no longer act

    # -- the hooks ------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """What the client wrote (called with the lock held)."""
        raise NotImplementedError

    def _outgoing(self, chunk: PacedChunk) -> bytes:
        """The bytes to write for ``chunk`` now (the subclass may damage them)."""
        return chunk.data

    # -- scheduling (with the lock held) --------------------------------------------------

    def _arrived(self, size: int, now: float, settings: SerialSettings) -> float:
        """Note ``size`` bytes the client wrote at ``now``: the pty delivers at once what
        takes its wire time on a real UART, so a request ends when its last character
        would have arrived. Returns that end (``self._rx_end``)."""
        self._rx_end = max(self._rx_end, now) + timing.frame_time(size, settings)
        return self._rx_end

    def _after(self, delay: float, action: Callable[[], None]) -> SimTimer:
        """Run ``action`` ``delay`` s after the event being handled; cancel the timer
        returned to keep it from running."""
        timer = SimTimer(self._now + delay, action)
        heapq.heappush(self._timers, (timer.due, next(self._ticket), timer))
        return timer

    def _in_epoch(self, action: Callable[[], None]) -> Callable[[], None]:
        """``action``, unless ``self._epoch`` has changed by the time it runs."""
        epoch = self._epoch

        def run() -> None:
            if epoch == self._epoch:
                action()

        return run

    def _emit(self, data: bytes, at: float, settings: SerialSettings, *, frame: bool,
              occupy: bool = True, tag: Any = None) -> float:  # fmt: skip
        """Queue ``data`` to go out from ``at`` paced at ``settings``, in chunks of about
        :data:`CHUNK_INTERVAL_S`; returns when its last character has left. ``occupy``:
        it waits until the line is free and holds it until then (False: it goes out from
        ``at`` whatever else is sent, as an echo does). ``frame``: it is a message
        (counted in ``frames_out`` once written)."""
        start = max(at, self._line_free_at) if occupy else at
        step = max(1, math.floor(CHUNK_INTERVAL_S / timing.char_time(settings)))
        for i in range(0, len(data), step):
            stop = min(i + step, len(data))
            due = start + timing.frame_time(stop, settings)
            heapq.heappush(self._out, (due, next(self._ticket), PacedChunk(data[i:stop], frame and stop == len(data), tag)))
        end = start + timing.frame_time(len(data), settings)
        if occupy:
            self._line_free_at = end
        return end

    # -- the serving thread -----------------------------------------------------------------

    def _serve(self) -> None:
        master = self._master
        assert master is not None
        while not self._stop.is_set():
            with self._lock:
                wait = self._wait_time()
            try:
                readable, _, _ = select.select([master], [], [], wait)
            except (OSError, ValueError):  # fd closed under us by stop()
                break
            data = self.read_master(master) if readable else b""
            with self._lock:
                if data:
                    self._receive(data)
                self._run_timers()
                self._write_due(master)

    def _wait_time(self) -> float:
        now = time.monotonic()
        wait = self.POLL_S
        if self._timers:
            wait = min(wait, self._timers[0][0] - now)
        if self._out:
            wait = min(wait, self._out[0][0] - now)
        return max(0.0, wait)

    def _guarded(self, what: str, subject: object, action: Callable[..., object], *args: object) -> None:
        """``action(*args)``; an exception is logged ("``what`` ``subject`` failed"), not raised."""
        try:
            action(*args)
        except Exception:  # deliberate: a handler bug must not kill the device; report it loudly
            self._logger.exception("%s %s: %s %r failed", self.LABEL, self.path, what, subject)

    def _run_timers(self) -> None:
        while self._timers and self._timers[0][0] <= time.monotonic():
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = due
            self._guarded("timer", timer.action, timer.action)

    def _write_due(self, master: int) -> None:
        now = time.monotonic()
        while self._out and self._out[0][0] <= now:
            _, _, chunk = heapq.heappop(self._out)
            data = self._outgoing(chunk)
            try:
                written = os.write(master, data)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._logger.warning("%s %s: write failed: %s", self.LABEL, self.path, exc)
                return
            self.bytes_out += written
            if written < len(data):
                # Nobody reads the port and its buffer is full: on a real UART these
                # characters would be lost too.
                self._logger.debug("%s %s: client not reading; dropped %d bytes", self.LABEL, self.path, len(data) - written)
            if chunk.ends_frame:
                self.frames_out += 1

    def _wait_idle(self, timeout: float, poll: float, ready: Callable[[], bool] | None = None) -> bool:
        """Wait until nothing is left to send and ``ready()`` (asked with the lock held),
        checking every ``poll`` s; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if (ready is None or ready()) and not self._out:
                    return True
            time.sleep(poll)
        return False


class PtyBus:
    """Simulated devices on a pseudo-terminal, served by a background thread.

    ``port`` (the pty slave path, e.g. ``/dev/pts/7``) is what a client opens; it is
    set by :meth:`start`. Use as a context manager to start and stop the thread.
    ``echo``: every byte the master writes comes back to it as it is sent (a half-duplex
    optical probe hears itself), ahead of any answer.
    """

    def __init__(
        self,
        devices: Iterable[SimDevice],
        *,
        settings: SerialSettings = SerialSettings(),
        turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
        seed: int = 0,
        slow_delay: float = DEFAULT_SLOW_DELAY,
        noise_interval: float | None = None,
        echo: bool = False,
    ) -> None:
        self.devices: list[SimDevice] = list(devices)
        #: the master hears its own transmission, as through a half-duplex optical probe
        self.echo = echo
        self.settings = settings
        self.turnaround = turnaround
        self.slow_delay = slow_delay
        self.port = ""
        self.frames_in = 0  #: valid frames decoded from what the master wrote
        self.rejected_in = 0  #: candidates the decoders rejected (bad checksum, ...)
        self.frames_out = 0  #: answers completely written back
        self.collisions = 0  #: requests several devices answered at once
        self.handler_errors = 0  #: exceptions raised by device handlers (logged)
        self._noise_interval = noise_interval
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._tx: list[_Chunk] = []  # by due time
        self._busy: list[tuple[float, float]] = []  # (start, end) of each transmission scheduled, by start
        self._line_free_at = 0.0  # monotonic time the last transmission scheduled ends
        self._rx_end = 0.0  # monotonic time the request being received ends on the wire
        self._next_idle_noise: float | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> PtyBus:
        """Open the pty and start serving; returns self."""
        if self._thread is not None:
            return self
        self._master, self._slave, self.port = open_raw_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"PtyBus {self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the pty (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * POLL_INTERVAL_S + 1.0)
            self._thread = None
        close_pty(self._master, self._slave)
        self._master = self._slave = None

    def __enter__(self) -> PtyBus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- control (thread-safe) ---------------------------------------------------------

    def device(self, address: str) -> SimDevice:
        """The device with this address; KeyError naming the known ones otherwise."""
        for dev in self.devices:
            if dev.address == address:
                return dev
        known = ", ".join(d.address for d in self.devices) or "none"
        raise KeyError(f"no simulated device with address {address!r} on this bus (have: {known})")

    def set_fault(self, address: str, fault: Fault | str | None) -> None:
        """Switch a device's fault (None = healthy); safe while the bus is serving."""
        value = as_fault(fault)
        dev = self.device(address)
        with self._lock:
            dev.fault = value

    @property
    def noise_interval(self) -> float | None:
        """Mean seconds between bursts of garbage on an idle bus (None = no bus noise)."""
        return self._noise_interval

    @noise_interval.setter
    def noise_interval(self, value: float | None) -> None:
        with self._lock:
            self._noise_interval = value
            self._next_idle_noise = None

    def inject_noise(self, data: bytes | None = None) -> bytes:
        """Put garbage on the wire as soon as the line is free; returns the bytes sent."""
        with self._lock:
            if data is None:
                data = self._garbage(IDLE_NOISE)
            self._schedule(bytes(data), time.monotonic(), self.settings, frame=False)
        return data

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until everything scheduled has been written; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._tx:
                    return True
            time.sleep(POLL_INTERVAL_S / 5)
        return False

    # -- serving thread ------------------------------------------------------------------

    def _serve(self) -> None:
        decoders = self._make_decoders()
        master = self._master
        assert master is not None
        while not self._stop.is_set():
            wait = self._wait_time()
            try:
                readable, _, _ = select.select([master], [], [], wait)
            except (OSError, ValueError):  # fd closed under us by stop()
                break
            if readable:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        logger.warning("pty %s: read failed: %s", self.port, exc)
                    time.sleep(POLL_INTERVAL_S)
                    data = b""
                if data:
                    self._receive(data, time.monotonic(), decoders)
            self._jam()
            self._write_due(master)
            self._idle_noise()

    def _make_decoders(self) -> dict[str, tuple[StreamDecoder, list[SimDevice]]]:
        groups: dict[str, tuple[StreamDecoder, list[SimDevice]]] = {}
        for dev in self.devices:
            if dev.protocol not in groups:
                groups[dev.protocol] = (dev.new_decoder(), [])
            groups[dev.protocol][1].append(dev)
        return groups

    def _wait_time(self) -> float:
        with self._lock:
            wait = POLL_INTERVAL_S
            if self._tx:
                wait = min(wait, max(0.0, self._tx[0].due - time.monotonic()))
            return wait

    def _receive(self, data: bytes, now: float, decoders: Mapping[str, tuple[StreamDecoder, list[SimDevice]]]) -> None:
        # The pty delivers the request at once; on a real line it takes its wire time,
        # and a device can only start answering after the last character arrived.
        self._rx_end = max(self._rx_end, now) + timing.frame_time(len(data), self.settings)
        if self.echo:
            with self._lock:
                bisect.insort(self._tx, _Chunk(now, bytes(data), ends_frame=False), key=lambda c: c.due)
        for decoder, devices in decoders.values():
            try:
                items = decoder.feed(data)
            except Exception:  # a decoder bug must not kill the bus; report it loudly
                logger.exception("pty %s: decoder %r raised on %s", self.port, decoder, data.hex(" "))
                continue
            for item in items:
                if isinstance(item, FrameError):
                    self.rejected_in += 1
                    logger.debug("pty %s: rejected request candidate: %s", self.port, item)
                    continue
                self.frames_in += 1
                self._dispatch(item, devices)

    def _dispatch(self, frame: Any, devices: Sequence[SimDevice]) -> None:
        answers: list[tuple[float, list[bytes], SerialSettings, SimDevice]] = []
        for dev in devices:
            with self._lock:
                fault = dev.fault
            if fault in (Fault.SILENCE, Fault.JAM):
                continue
            settings = getattr(dev, "settings", None) or self.settings  # before a baud change
            try:
                replies = dev.handle(frame)
            except Exception:  # deliberate: one faulty device handler must not stop the bus
                self.handler_errors += 1
                logger.exception("pty %s: device %s failed on %r", self.port, dev.address, frame)
                continue
            if not replies:
                continue
            delay = self._turnaround_delay()
            if fault is Fault.SLOW:
                delay += self.slow_delay
            answers.append((delay, [self._wire_fault(r, fault) for r in replies], settings, dev))
        if not answers:
            return
        with self._lock:
            if len(answers) == 1 and not self._jamming():
                delay, replies, settings, _ = answers[0]
                at = self._rx_end + delay
                for reply in replies:
                    at = self._schedule(reply, at, settings, frame=True)
                    at += timing.inter_frame_gap(settings)
            else:
                self.collisions += 1
                garbled = self._collide([b"".join(r) for _, r, _, _ in answers], answers[0][3])
                at = self._rx_end + min(a[0] for a in answers)
                self._schedule(garbled, at, self.settings, frame=False)
                logger.debug("pty %s: %d devices answered at once: collision", self.port, len(answers))

    def _jamming(self) -> bool:
        return any(dev.fault is Fault.JAM for dev in self.devices)

    def _jam(self) -> None:
        """Keep a jamming device's garbage flowing back to back (call with the lock free)."""
        with self._lock:
            if not self._jamming():
                return
            now = time.monotonic()
            if self._line_free_at > now + JAM_BURST_CHARS * timing.char_time(self.settings) / 2:
                return  # enough already queued
            garbage = bytes(self._rng.randrange(256) for _ in range(JAM_BURST_CHARS))
            self._schedule(garbage, max(now, self._line_free_at), self.settings, frame=False, pause=0.0)

    def _turnaround_delay(self) -> float:
        if isinstance(self.turnaround, (int, float)):
            return float(self.turnaround)
        low, high = self.turnaround
        return self._rng.uniform(low, high)

    def _wire_fault(self, reply: bytes, fault: Fault | None) -> bytes:
        if fault is Fault.NOISE:
            return self._garbage(NOISE_BEFORE) + reply + self._garbage(NOISE_AFTER)
        if fault is Fault.TRUNCATED:
            return reply[: max(1, len(reply) * 2 // 3)]
        return reply

    def _garbage(self, size: tuple[int, int]) -> bytes:
        return bytes(self._rng.randrange(256) for _ in range(self._rng.randint(*size)))

    def _collide(self, replies: list[bytes], device: SimDevice) -> bytes:
        """What the master hears when several devices drive the pair at once.

        Modelled as a wired-AND of the overlapping characters (a simplification: real
        fighting drivers give undefined levels), then garbled further until the device
        protocol's decoder finds no valid frame in it, as no real collision yields one.
        """
        length = max(len(r) for r in replies)
        out = bytearray(b"\xff" * length)
        for reply in replies:
            for i, byte in enumerate(reply):
                out[i] &= byte
        for _ in range(MAX_GARBLE_ROUNDS):
            found = [f for f in device.new_decoder().feed(bytes(out)) if not isinstance(f, FrameError)]
            if not found:
                break
            out[self._rng.randrange(length)] ^= 1 << self._rng.randrange(8)
        return bytes(out)

    def _schedule(
        self, data: bytes, at: float, settings: SerialSettings, *, frame: bool, pause: float | None = None
    ) -> float:
        """Queue ``data`` to go out from ``at``, or from the first moment after it when no
        other transmission is on the line (a device waits out one that is under way; one
        scheduled for later, a slow device's answer, does not hold up an earlier one),
        paced at the baud rate and followed by ``pause`` (default: a turnaround) before
        the next; returns when its last character has left. Call with the lock held."""
        now = time.monotonic()
        self._busy = [(s, e) for s, e in self._busy if e > now]
        duration = timing.frame_time(len(data), settings)
        start = at
        for busy_start, busy_end in self._busy:
            if start < busy_end and start + duration > busy_start:
                start = busy_end
        finished = start + duration
        end = finished + (timing.turnaround(settings) if pause is None else pause)
        bisect.insort(self._busy, (start, end))
        self._line_free_at = max(self._line_free_at, end)
        step = max(1, math.floor(CHUNK_INTERVAL_S / timing.char_time(settings)))
        for i in range(0, len(data), step):
            stop = min(i + step, len(data))
            due = start + timing.frame_time(stop, settings)
            bisect.insort(self._tx, _Chunk(due, data[i:stop], ends_frame=frame and stop == len(data)), key=lambda c: c.due)
        return finished

    def _write_due(self, master: int) -> None:
        while True:
            with self._lock:
                if not self._tx or self._tx[0].due > time.monotonic():
                    return
                chunk = self._tx.pop(0)
            try:
                written = os.write(master, chunk.data)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                logger.warning("pty %s: write failed: %s", self.port, exc)
                return
            if written < len(chunk.data):
                # Nobody reads the port and its buffer is full: on a real wire these
                # characters would be lost too.
                logger.debug("pty %s: client not reading; dropped %d bytes", self.port, len(chunk.data) - written)
            if chunk.ends_frame:
                self.frames_out += 1

    def _idle_noise(self) -> None:
        with self._lock:
            interval = self._noise_interval
            if not interval:
                return
            now = time.monotonic()
            if self._next_idle_noise is None:
                self._next_idle_noise = now + self._rng.expovariate(1.0 / interval)
                return
            if now < self._next_idle_noise:
                return
            self._next_idle_noise = now + self._rng.expovariate(1.0 / interval)
            # Only between transactions: not while a request is arriving or we answer.
            if self._tx or now < self._rx_end + DEFAULT_TURNAROUND[1] or now < self._line_free_at:
                return
            self._schedule(self._garbage(IDLE_NOISE), now, self.settings, frame=False)


def start_bus(
    devices: Iterable[SimDevice],
    settings: SerialSettings,
    *,
    faults: Mapping[str, Fault | str] | None = None,
    turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
    seed: int = 0,
    slow_delay: float = DEFAULT_SLOW_DELAY,
    noise_interval: float | None = None,
    echo: bool = False,
) -> PtyBus:
    """A started :class:`PtyBus` serving ``devices`` at ``settings``, each device named in
    ``faults`` (address -> fault) switched to its fault; what every ``start_*_sim`` does."""
    bus = PtyBus(devices, settings=settings, turnaround=turnaround, seed=seed, slow_delay=slow_delay,
                 noise_interval=noise_interval, echo=echo)
    for address, fault in (faults or {}).items():
        bus.set_fault(address, fault)
    return bus.start()
