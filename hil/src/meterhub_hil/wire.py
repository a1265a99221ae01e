"""A virtual RS485 pair: several pseudo-terminals joined like adapters clipped onto one bus.

Whatever one port sends, every other port receives, as on a real half-duplex pair (a
USB-RS485 adapter does not hear its own transmission once its driver is off; ours never
echoes). Each port's path (``/dev/pts/N``) is what a VISA ``ASRL/dev/pts/N::INSTR``
resource or a pyserial URL opens, so adapters, a bus monitor, a noise injector and a
simulated meter each get their own device path, like on the bench.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
import tty

log = logging.getLogger(__name__)

#: How often the hub thread checks its stop flag when the pair is idle (plumbing, not timing).
POLL_S = 0.05


class VirtualPair:
    """``count`` pty ports joined into one bus, served by a background thread."""

    def __init__(self, count: int, *, name: str = "pair") -> None:
        if count < 1:
            raise ValueError("a virtual pair needs at least one port")
        self.name = name
        self._masters: list[int] = []
        self._slaves: list[int] = []
        self.paths: list[str] = []
        for _ in range(count):
            master, slave = os.openpty()
            tty.setraw(slave)  # before anyone opens it: a fresh pty is in cooked mode (echo, ICRNL)
            os.set_blocking(master, False)
            self._masters.append(master)
            self._slaves.append(slave)  # kept open: the master never sees EIO between clients
            self.paths.append(os.ttyname(slave))
        self._attached: list[int] = []
        self.carried = 0  #: bytes moved between ports
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"virtual-pair-{name}", daemon=True)
        self._thread.start()

    def attach(self, path: str) -> None:
        """Join an existing device path (a simulator's pty) to the pair, as one more drop."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        self._attached.append(fd)
        self._masters.append(fd)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(self._masters, [], [], POLL_S)
            except (OSError, ValueError):  # closed under us
                return
            for master in ready:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EIO:  # nobody has this port open right now
                        time.sleep(POLL_S / 10)
                        continue
                    log.warning("virtual pair %s: read failed: %s", self.name, exc)
                    continue
                for other in self._masters:
                    if other != master:
                        self._write_all(other, data)
                self.carried += len(data)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view and time.monotonic() < deadline:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                time.sleep(0.001)  # the far port's buffer is full: nobody is reading it
            except OSError:
                return
        # bytes nobody reads within a second are dropped, as a real line drops them

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in self._masters + self._slaves:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> VirtualPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
