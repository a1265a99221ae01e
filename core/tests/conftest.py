"""Peers for the link tests: a thread on the master side of a real pseudo-terminal, a
local TCP server for ``socket://``, and a recording stand-in for an RS485 adapter."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import select
import socket
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: How long the peers wait in select() before looking at their stop flag (test plumbing).
PEER_POLL_S = 0.02


class PtyPeer:
    """The far end of a pty: reads what the link sends, answers line by line, can send.

    ``answer(line)`` gets each received line (without its ``\\n``) and returns the bytes
    to send back, or ``None`` to stay silent. The slave fd stays open here so the master
    never reads EIO while the link under test reopens the slave.
    """

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # before anyone opens it: a fresh pty is in cooked mode
        self.path = os.ttyname(self.slave)
        self.answer: Callable[[bytes], bytes | None] | None = None
        self.received = bytearray()
        self._pending = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pty-peer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], PEER_POLL_S)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError as exc:  # EIO while no slave fd is open: nobody to talk to
                if exc.errno != errno.EIO:
                    raise
                time.sleep(PEER_POLL_S)
                continue
            self.received += data
            self._pending += data
            while b"\n" in self._pending:
                line, _, rest = bytes(self._pending).partition(b"\n")
                self._pending[:] = rest
                reply = self.answer(line) if self.answer else None
                if reply:
                    os.write(self.master, reply)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait_buffered(self, count: int, timeout: float = 2.0) -> None:
        """Wait until ``count`` bytes sit in the slave's input queue (pty delivery is async)."""
        deadline = time.monotonic() + timeout
        while self.buffered() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.buffered()} of {count} bytes arrived")
            time.sleep(0.001)

    def wait_received(self, count: int, timeout: float = 2.0) -> None:
        """Wait until the peer has read ``count`` bytes from the link."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"peer got {bytes(self.received)!r}, expected {count} bytes")
            time.sleep(0.001)

    def buffered(self) -> int:
        raw = fcntl.ioctl(self.slave, termios.FIONREAD, struct.pack("i", 0))
        return struct.unpack("i", raw)[0]

    def hang_up(self) -> None:
        """Close the master side, as a simulator that exits does."""
        self._stop.set()
        self._thread.join()
        os.close(self.master)
        self.master = -1

    def stop(self) -> None:
        if self.master >= 0:
            self.hang_up()
        os.close(self.slave)


@pytest.fixture
def peer() -> Iterator[PtyPeer]:
    p = PtyPeer()
    try:
        yield p
    finally:
        p.stop()


class TcpPeer:
    """A one-connection TCP server answering lines, for ``socket://`` URLs."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tcp-peer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.server.settimeout(PEER_POLL_S)
        conn = None
        while conn is None and not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
        if conn is None:
            return
        pending = bytearray()
        with conn:
            while not self._stop.is_set():
                ready, _, _ = select.select([conn], [], [], PEER_POLL_S)
                if not ready:
                    continue
                data = conn.recv(4096)
                if not data:
                    return
                pending += data
                while b"\n" in pending:
                    line, _, rest = bytes(pending).partition(b"\n")
                    pending[:] = rest
                    reply = self.answer(line)
                    if reply:
                        conn.sendall(reply)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture
def tcp_peer() -> Iterator[TcpPeer]:
    p = TcpPeer(lambda line: b"re:" + line + b"\n")
    try:
        yield p
    finally:
        p.stop()


class RecordingPort:
    """Stands in for a pyserial port on an RS485 adapter whose driver-enable follows RTS.

    It logs ``(time, what, value)`` for every RTS change, write and flush, and behaves
    like pyserial where it matters: a refused setting is stored anyway and every later
    reconfiguration of the open port fails while it is stored.
    """

    def __init__(self, url: str = "fake://rs485", *, refuse: dict[str, object] | None = None,
                 refuse_rts: bool = False) -> None:
        self.portstr = url
        self.events: list[tuple[float, str, object]] = []
        self.is_open = False
        self.timeout: float | None = None
        self.exclusive = None
        self.rs485_mode = None
        self._format = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}
        self._refuse = refuse or {}
        self._refuse_rts = refuse_rts
        self._rts = True
        self.rx = bytearray()

    def _log(self, what: str, value: object) -> None:
        self.events.append((time.monotonic(), what, value))

    def _reconfigure(self) -> None:
        if not self.is_open:
            return
        for field, bad in self._refuse.items():
            if self._format[field] == bad:
                raise termios.error(errno.EINVAL, "Invalid argument")

    def _setter(field: str):  # type: ignore[misc]
        def get(self: RecordingPort) -> object:
            return self._format[field]

        def set_(self: RecordingPort, value: object) -> None:
            self._format[field] = value
            self._reconfigure()

        return property(get, set_)

    baudrate = _setter("baudrate")
    bytesize = _setter("bytesize")
    parity = _setter("parity")
    stopbits = _setter("stopbits")

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, level: bool) -> None:
        if self.is_open and self._refuse_rts:
            raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")
        self._rts = level
        self._log("rts" if self.is_open else "rts-before-open", level)

    def open(self) -> None:
        self.is_open = True
        self._reconfigure()
        self._log("open", None)

    def close(self) -> None:
        self.is_open = False

    def write(self, data: bytes) -> int:
        self._log("write", bytes(data))
        return len(data)

    def flush(self) -> None:
        self._log("flush", None)

    @property
    def in_waiting(self) -> int:
        return len(self.rx)

    def read(self, size: int = 1) -> bytes:
        if not self.rx:
            time.sleep(self.timeout or 0)
        data = bytes(self.rx[:size])
        del self.rx[:size]
        return data

    def reset_input_buffer(self) -> None:
        self.rx.clear()


@pytest.fixture
def make_port() -> Callable[..., RecordingPort]:
    """Build recording stand-ins: ``make_port(refuse={"parity": "E"}, refuse_rts=True)``."""
    return RecordingPort


async def _read_exactly(link, count: int, timeout: float = 2.0) -> bytes:
    """Collect reads until ``count`` bytes came (a pty or socket may split a frame)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    buf = bytearray()
    while len(buf) < count and loop.time() < deadline:
        buf += await link.read(deadline - loop.time())
    return bytes(buf)


@pytest.fixture
def read_exactly() -> Callable[..., Any]:
    """``await read_exactly(link, count)``: the next ``count`` bytes, or what came in time."""
    return _read_exactly
