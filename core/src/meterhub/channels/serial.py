"""A :class:`meterhub.api.Link` over a pyserial port: a local tty, a pseudo-terminal, or
any pyserial URL (``rfc2217://``, ``socket://``, ``loop://``, ``spy://``).

Two things real buses and virtual ones disagree on are handled here, once:

* a pseudo-terminal has no parity and only 8 data bits (Linux clears PARENB and refuses
  a ``tcsetattr`` that only changes it), so on a pty the link carries the closest format
  it can, says so in one warning, and still reports the settings that were asked for;
* RS485 direction control (driver-enable on RTS) exists only on real UARTs; on a pty it
  is skipped with one warning, on a real port that refuses it the link fails to open.

Blocking pyserial calls run on one worker thread per link, so calls stay in order and
the event loop never blocks. Ports with a file descriptor (a tty, a pty) are read and
written from the loop itself: the descriptor is non-blocking (pyserial opens it so), a
frame fits the kernel's transmit buffer, and a transaction then costs no thread hop
(measured in BENCHMARKS.md, ``bus``). Only RTS direction control, which must time the
end of its own frame, still writes on the worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import serial
import serial.rs485

from meterhub import timing
from meterhub.errors import LinkError
from meterhub.model import SerialSettings

try:  # POSIX only: termios and the native port class whose fd the event loop can watch
    import termios

    from serial.serialposix import Serial as PosixSerial
except ImportError:  # pragma: no cover - Windows
    termios = None  # type: ignore[assignment]
    PosixSerial = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

#: Direction-control modes: the adapter switches by itself, the kernel driver toggles
#: RTS (TIOCSRS485), or meterhub toggles RTS around every write.
MODES = ("none", "kernel", "rts")

#: Linux Documentation/admin-guide/devices.txt: character majors 136-143 are the Unix98
#: PTY slaves (``/dev/pts/N``).
PTY_SLAVE_MAJORS = range(136, 144)
PTY_DIR = "/dev/pts/"

#: The only character format a Linux pty keeps: 8 data bits, no parity (the kernel
#: clears PARENB and rejects CS5-CS7). Speed and stop bits are kept, though meaningless.
PTY_BYTESIZE = 8
PTY_PARITY = "N"

#: Largest single read: the Linux tty layer buffers N_TTY_BUF_SIZE = 4096 bytes per port.
MAX_READ = 4096

#: Ports without a file descriptor (``loop://``, ``socket://``, ``rfc2217://``) are read
#: on the worker thread in waits this long. It bounds how late a timeout or a
#: cancellation is noticed there; it is software latency, not line timing.
POLL_SLICE_S = 0.01

#: tcdrain() returns once the driver has handed every byte to the UART; the last
#: character may still be in the transmit shift register, so the transmitter stays
#: enabled this many character times longer before RTS returns to receive.
TX_TAIL_CHARS = 1.0

if termios is not None:
    _PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, ValueError, termios.error)
else:  # pragma: no cover - Windows
    _PORT_ERRORS = (serial.SerialException, OSError, ValueError)


def _seconds(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, not {value!r}")


@attrs.frozen
class Rs485Options:
    """How the RS485 transceiver's transmitter (driver-enable) is switched.

    ``none``: the adapter does it by itself (most USB-RS485 adapters); ``kernel``: the
    UART driver raises RTS while sending (TIOCSRS485); ``rts``: meterhub sets RTS
    around each write. Levels are the RTS state while sending/receiving; delays are
    seconds waited after switching to transmit and after switching back to receive.
    """

    mode: str = attrs.field(default="none", validator=attrs.validators.in_(MODES))
    rts_level_for_tx: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    rts_level_for_rx: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    delay_before_tx: float = attrs.field(default=0.0, validator=_seconds)
    delay_before_rx: float = attrs.field(default=0.0, validator=_seconds)


def is_pty_path(path: str) -> bool:
    """Whether ``path`` (symlinks followed) is the slave side of a Unix98 pseudo-terminal."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_SLAVE_MAJORS:
        return True
    return os.path.realpath(path).startswith(PTY_DIR)


def is_pty_fd(fd: int) -> bool:
    """Whether an open file descriptor is the slave side of a Unix98 pseudo-terminal."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_SLAVE_MAJORS


def virtual_settings(settings: SerialSettings) -> SerialSettings:
    """The format a pty actually carries for ``settings``: same speed and stop bits, 8N."""
    return attrs.evolve(settings, bytesize=PTY_BYTESIZE, parity=PTY_PARITY)


def _pyserial_port(url: str) -> Any:
    return serial.serial_for_url(url, do_not_open=True)


def _errno_of(exc: BaseException | None) -> int | None:
    if exc is None:
        return None
    code = getattr(exc, "errno", None)
    if code is None and termios is not None and isinstance(exc, termios.error) and exc.args:
        code = exc.args[0]
    return code if isinstance(code, int) and code > 0 else None


def _reason(exc: BaseException) -> str:
    """One line saying why a port operation failed, without pyserial's nested repeats."""
    if "exclusively lock" in str(exc):
        return "in use by another program (it holds the port's lock)"
    for candidate in (exc, exc.__cause__, exc.__context__):
        code = _errno_of(candidate)
        if code:
            return f"[Errno {code}] {os.strerror(code)}"
    return " ".join(str(exc).split()) or type(exc).__name__


_FORMAT_FIELDS = ("baudrate", "bytesize", "parity", "stopbits")


def _format_of(ser: Any) -> SerialSettings:
    return SerialSettings(ser.baudrate, ser.bytesize, ser.parity, ser.stopbits)


def _set_format(ser: Any, wire: SerialSettings) -> None:
    """Put ``wire`` on the port; if the port refuses a field, put the old values back.

    pyserial stores a refused value anyway and re-sends it with every later change,
    which then fails too (a pty refusing parity E breaks every later baud switch).
    """
    old = _format_of(ser)
    changed: list[str] = []
    for field in _FORMAT_FIELDS:
        value = getattr(wire, field)
        if getattr(ser, field) == value:
            continue
        try:
            setattr(ser, field, value)
        except _PORT_ERRORS:
            for undo in [field, *reversed(changed)]:
                try:
                    setattr(ser, undo, getattr(old, undo))
                except _PORT_ERRORS:
                    break
            raise
        changed.append(field)


def _close_quietly(ser: Any) -> None:
    try:
        ser.close()
    except _PORT_ERRORS as exc:
        log.debug("closing %s: %s", getattr(ser, "portstr", ser), exc)


def _sleep_until(when: float) -> None:
    remaining = when - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


@attrs.define
class _ReadToken:
    """Hand-over between a polled read on the worker and the coroutine awaiting it."""

    cancelled: bool = False
    done: bool = False
    data: bytes = b""


class SerialLink:
    """A serial channel over any pyserial URL, usable from asyncio without blocking it.

    ``settings`` always reports the format asked for; ``wire_settings`` what the port
    really carries (they differ only on a pseudo-terminal). ``factory`` builds the
    unopened pyserial object for ``url``; tests pass a stand-in for hardware.
    """

    def __init__(
        self,
        name: str,
        url: str,
        settings: SerialSettings,
        *,
        rs485: Rs485Options | None = None,
        exclusive: bool = True,
        factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.settings = settings
        self.rs485 = rs485 or Rs485Options()
        self.exclusive = exclusive
        self._factory = factory or _pyserial_port
        self._ser: Any = None
        self._fd: int | None = None
        self._pty = False
        self._wire = settings
        self._direction = "none"
        self._warned: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None  # a write waiting for the driver's buffer
        self._stash = bytearray()  # bytes a cancelled polled read took off the port
        self._lock = threading.Lock()
        self._closing = False

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<SerialLink {self.name} {self.url} {self.settings} {state}>"

    # -- what the link is ----------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    @property
    def is_virtual(self) -> bool:
        """True on a pseudo-terminal: no parity, no direction control (known after open)."""
        return self._pty

    @property
    def wire_settings(self) -> SerialSettings:
        """The character format the port really carries."""
        return self._wire

    @property
    def direction(self) -> str:
        """The direction control in effect: ``none``, ``kernel`` or ``rts``."""
        return self._direction

    # -- open / close --------------------------------------------------------------

    async def open(self) -> None:
        """Open the port; raise LinkError with a one-line reason naming it if it cannot."""
        if self._ser is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"rs485-{self.name}")
        try:
            await self._loop.run_in_executor(self._executor, self._open_blocking)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        assert self._loop is not None
        ser, self._ser = self._ser, None
        self._closing = True
        fd, self._fd = self._fd, None
        if fd is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        for waiter in (self._waiter, self._room):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        executor, self._executor = self._executor, None
        try:
            if ser is not None:
                await self._loop.run_in_executor(executor, _close_quietly, ser)
        finally:
            executor.shutdown(wait=False)
            self._closing = False
            self._stash.clear()

    async def __aenter__(self) -> SerialLink:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _open_blocking(self) -> None:
        try:
            ser = self._factory(self.url)
        except _PORT_ERRORS as exc:
            raise LinkError(f"cannot open {self.url}: {_reason(exc)}") from exc
        native = PosixSerial is not None and isinstance(ser, PosixSerial)
        self._pty = native and is_pty_path(ser.portstr)
        wire = self._wire_for(self.settings)
        try:
            # Not open yet: pyserial only records these and applies them in one go.
            _set_format(ser, wire)
            ser.timeout = 0 if native else POLL_SLICE_S
            if native and self.exclusive:
                ser.exclusive = True
            if self.rs485.mode == "rts":
                ser.rts = self.rs485.rts_level_for_rx  # open with the transmitter off
            ser.open()
        except _PORT_ERRORS as exc:
            raise LinkError(f"cannot open {self.url}: {_reason(exc)}") from exc
        try:
            self._fd = ser.fileno() if native else None
            if self._fd is not None and not self._pty and is_pty_fd(self._fd):
                self._pty = True  # a pty reached through a path that did not look like one
                virtual = self._wire_for(self.settings)
                if virtual != wire:
                    _set_format(ser, virtual)
                    wire = virtual
            self._direction = self._setup_direction(ser, native)
        except _PORT_ERRORS as exc:
            _close_quietly(ser)
            self._fd = None
            raise LinkError(f"cannot open {self.url}: {_reason(exc)}") from exc
        except BaseException:
            _close_quietly(ser)
            self._fd = None
            raise
        self._wire = wire
        self._ser = ser
        self._warn_format(self.settings)

    def _setup_direction(self, ser: Any, native: bool) -> str:
        opts = self.rs485
        if opts.mode == "none":
            return "none"
        if opts.mode == "kernel" and not native:
            raise LinkError(f"cannot use kernel RS485 direction control on {self.url}: it is not a local serial device")
        try:
            if opts.mode == "kernel":
                ser.rs485_mode = serial.rs485.RS485Settings(
                    rts_level_for_tx=opts.rts_level_for_tx,
                    rts_level_for_rx=opts.rts_level_for_rx,
                    loopback=False,
                    delay_before_tx=opts.delay_before_tx,
                    delay_before_rx=opts.delay_before_rx,
                )
            else:
                ser.rts = opts.rts_level_for_rx
        except _PORT_ERRORS as exc:
            if opts.mode == "kernel":
                # pyserial keeps the refused settings and would retry the ioctl (and
                # fail) on every later format change.
                try:
                    ser.rs485_mode = None
                except _PORT_ERRORS as undo:
                    log.debug("%s: clearing the refused RS485 mode: %s", self.url, undo)
            if not self._pty:
                hint = ""
                if _errno_of(exc.__context__) == errno.ENOTTY or _errno_of(exc) == errno.ENOTTY:
                    hint = " (an adapter that switches direction by itself needs rs485 mode none)"
                raise LinkError(
                    f"cannot set RS485 direction control {opts.mode!r} on {self.url}: {_reason(exc)}{hint}"
                ) from exc
            self._warn_once(
                "direction",
                "%s is a pseudo-terminal (a virtual link) with no RTS line or RS485 driver: "
                "rs485 mode %r is ignored on it",
                self.url,
                opts.mode,
            )
            return "none"
        return opts.mode

    # -- settings ------------------------------------------------------------------

    def _wire_for(self, settings: SerialSettings) -> SerialSettings:
        return virtual_settings(settings) if self._pty else settings

    def _warn_format(self, settings: SerialSettings) -> None:
        wire = self._wire_for(settings)
        if self._pty and wire != settings:
            self._warn_once(
                "format",
                "%s is a pseudo-terminal (a virtual link) without parity or data-bit "
                "settings: %s is carried as %s on it (a real adapter gets %s)",
                self.url,
                settings,
                wire,
                settings,
            )

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, *args)

    async def apply_settings(self, settings: SerialSettings) -> None:
        """Switch speed/character format (between transactions); LinkError if refused."""
        if self._ser is None:
            self.settings = settings
            return
        wire = self._wire_for(settings)
        if wire != self._wire:
            await self._run(self._apply_blocking, wire, settings)
        self.settings = settings
        self._warn_format(settings)

    def _apply_blocking(self, wire: SerialSettings, settings: SerialSettings) -> None:
        ser = self._ser
        try:
            _set_format(ser, wire)
        except _PORT_ERRORS as exc:
            if _format_of(ser) != self._wire:  # could not even go back: state unknown
                self._ser = None
                _close_quietly(ser)
                raise LinkError(f"cannot set {self.url} to {settings} (port closed): {_reason(exc)}") from exc
            raise LinkError(f"cannot set {self.url} to {settings}: {_reason(exc)}") from exc
        self._wire = wire

    # -- I/O -----------------------------------------------------------------------

    def _require_open(self) -> Any:
        if self._ser is None:
            raise LinkError(f"{self.url} is not open")
        return self._ser

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None or self._loop is None:
            raise LinkError(f"{self.url} is not open")
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def write(self, data: bytes) -> None:
        """Send ``data``; returns once handed to the driver (``rts`` mode: once sent)."""
        ser = self._require_open()
        if self._direction == "rts":
            await self._run(self._write_rts, ser, bytes(data))
        elif self._fd is not None:
            await self._write_fd(self._fd, bytes(data))
        else:
            await self._run(self._write_plain, ser, bytes(data))

    async def _write_fd(self, fd: int, data: bytes) -> None:
        """Hand ``data`` to the driver from the loop; waits for room only if the kernel's
        buffer is full (never for a meter's frame on a working port)."""
        loop = self._loop
        assert loop is not None
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                pass
            except OSError as exc:
                raise LinkError(f"write to {self.url} failed: {_reason(exc)}") from exc
            if view:
                room: asyncio.Future[None] = loop.create_future()
                loop.add_writer(fd, _wake, room)
                self._room = room
                try:
                    await room
                finally:
                    self._room = None
                    if self._fd == fd:
                        loop.remove_writer(fd)
                if self._fd != fd:
                    raise LinkError(f"{self.url} was closed while writing")

    def _write_plain(self, ser: Any, data: bytes) -> None:
        try:
            ser.write(data)
        except _PORT_ERRORS as exc:
            raise LinkError(f"write to {self.url} failed: {_reason(exc)}") from exc

    def _write_rts(self, ser: Any, data: bytes) -> None:
        """Drive the bus only while our frame is on it: RTS to transmit, send, drain, release."""
        opts = self.rs485
        wire = self._wire
        try:
            ser.rts = opts.rts_level_for_tx
            if opts.delay_before_tx:
                time.sleep(opts.delay_before_tx)
            try:
                started = time.monotonic()
                ser.write(data)
                ser.flush()  # tcdrain: every byte handed to the UART
                drained = time.monotonic()
                # Some drivers (USB adapters) report drained before the bytes are out; the
                # frame cannot end before its own time on the wire from the first byte.
                last_stop_bit = max(drained, started + timing.frame_time(len(data), wire))
                _sleep_until(last_stop_bit + TX_TAIL_CHARS * timing.char_time(wire))
            finally:
                ser.rts = opts.rts_level_for_rx  # never leave the bus driven
            if opts.delay_before_rx:
                time.sleep(opts.delay_before_rx)
        except _PORT_ERRORS as exc:
            raise LinkError(f"write to {self.url} failed: {_reason(exc)}") from exc

    async def read(self, timeout: float) -> bytes:
        """Whatever has arrived, as soon as there is at least one byte; ``b""`` after ``timeout``."""
        ser = self._require_open()
        if self._fd is not None:
            return await self._read_fd(ser, self._fd, timeout)
        return await self._read_polled(ser, timeout)

    def _read_now(self, ser: Any) -> bytes:
        try:
            return ser.read(MAX_READ)  # timeout 0: what is buffered, never waits
        except _PORT_ERRORS as exc:
            if self._ser is None:
                raise LinkError(f"{self.url} was closed") from exc
            raise LinkError(f"read from {self.url} failed: {_reason(exc)}") from exc

    async def _read_fd(self, ser: Any, fd: int, timeout: float) -> bytes:
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            if self._ser is not ser:  # closed meanwhile (close() wakes us): nothing more to read
                return b""
            data = self._read_now(ser)
            if data:
                return data
            remaining = deadline - loop.time()
            if remaining <= 0:
                return b""
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            self._waiter = ready
            try:
                await asyncio.wait_for(ready, remaining)
            except TimeoutError:
                return b"" if self._ser is not ser else self._read_now(ser)
            finally:
                self._waiter = None
                if self._fd == fd:
                    loop.remove_reader(fd)

    async def _read_polled(self, ser: Any, timeout: float) -> bytes:
        token = _ReadToken()
        deadline = time.monotonic() + max(timeout, 0.0)
        try:
            return await self._run(self._read_blocking, ser, deadline, token)
        except asyncio.CancelledError:
            with self._lock:
                token.cancelled = True
                if token.done:  # the answer was ready but nobody will take it: keep it
                    self._stash[0:0] = token.data
            raise

    def _read_blocking(self, ser: Any, deadline: float, token: _ReadToken) -> bytes:
        try:
            data = self._poll(ser, deadline, token)
        except _PORT_ERRORS as exc:
            raise LinkError(f"read from {self.url} failed: {_reason(exc)}") from exc
        with self._lock:
            if token.cancelled:
                self._stash += data
                return b""
            token.done, token.data = True, data
        return data

    def _poll(self, ser: Any, deadline: float, token: _ReadToken) -> bytes:
        with self._lock:
            stashed = bytes(self._stash)
            self._stash.clear()
        if stashed:
            return stashed + _drain(ser)
        while True:
            if ser.in_waiting:
                return _drain(ser)
            if token.cancelled or self._closing or time.monotonic() >= deadline:
                return b""
            first = ser.read(1)  # waits at most POLL_SLICE_S
            if first:
                return first + _drain(ser)

    async def reset_input(self) -> None:
        """Drop whatever arrived and was not read: it belongs to nobody's answer."""
        ser = self._require_open()
        await self._run(self._reset_blocking, ser)

    def _reset_blocking(self, ser: Any) -> None:
        with self._lock:
            self._stash.clear()
        try:
            ser.reset_input_buffer()
        except _PORT_ERRORS as exc:
            raise LinkError(f"cannot flush input of {self.url}: {_reason(exc)}") from exc


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _drain(ser: Any) -> bytes:
    buf = bytearray()
    while n := ser.in_waiting:
        chunk = ser.read(min(n, MAX_READ))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)
