"""Instrument drivers over pyvisa (the pyvisa-py backend): USB-RS485 adapters and the pulse generator.

What pyvisa cannot do for binary serial traffic, and how it is handled here:

* Terminations. pyvisa's defaults end reads at 0x0A and append CR LF to writes; a binary
  meter frame contains both. Both terminations are switched off and ``end_input`` is set
  to none, and only ``write_raw`` is used.
* Reading "whatever has arrived". ``read_bytes(n)`` with fewer than ``n`` bytes waits for
  the full timeout and then *loses* the partial bytes; there is no read-available call
  with a timeout. Reads here poll ``bytes_in_buffer`` and take exactly what is there.
* Even parity on a pseudo-terminal: the Linux kernel refuses PARENB on a pty (termios
  error 22), so on a virtual bench the adapter opens at N and records the requested
  parity as a no-op, with a warning (a real adapter gets the parity it was asked for).
* Listing. ``list_resources()`` shows only what pyserial's ``comports()`` sees, never a
  pty; resources are opened by name, and adapters named by USB serial number are looked
  up through ``serial.tools.list_ports`` (re-plugging into another USB port moves
  ``/dev/ttyUSBn`` but not the serial number).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from meterhub.api import StreamDecoder
from meterhub.errors import FrameError, LinkError, MeterTimeout
from meterhub.model import SerialSettings

from .bench import Instrument, visa_serial_path

log = logging.getLogger(__name__)

#: How often a read polls ``bytes_in_buffer``: a scheduling figure, far below one
#: character time at 9600 Bd (1.1 ms) is pointless on a USB adapter (1 ms USB frames).
POLL_S = 0.001

#: VISA timeout for the pulse generator's ordinary queries (ms).
SCPI_TIMEOUT_MS = 5000


def resource_manager() -> Any:
    """A pyvisa ResourceManager on the pure-Python backend (no NI-VISA on a lab PC or in CI)."""
    import pyvisa

    return pyvisa.ResourceManager("@py")


def find_serial_number(serial_number: str) -> str:
    """The device path of the USB serial adapter with ``serial_number``."""
    from serial.tools import list_ports

    ports = list(list_ports.comports())
    for port in ports:
        if (port.serial_number or "") == serial_number:
            return port.device
    seen = ", ".join(f"{p.device} ({p.serial_number})" for p in ports if p.serial_number) or "no USB serial adapters"
    raise LinkError(f"no serial adapter with serial number {serial_number!r} is plugged in (found: {seen})")


def adapter_resource(inst: Instrument) -> str:
    """The VISA resource name to open for an adapter, however the bench file named it."""
    if inst.resource:
        return inst.resource
    if inst.by_id:
        return f"ASRL{inst.by_id}::INSTR"
    return f"ASRL{find_serial_number(inst.serial_number)}::INSTR"


def _is_pty(path: str) -> bool:
    return path.startswith("/dev/pts/") or path.startswith("/dev/ttyp")


@attrs.frozen
class Frame:
    """Bytes seen on the wire by an adapter, for the per-test frame log."""

    adapter: str
    direction: str  #: "tx" or "rx"
    data: bytes
    at: float  #: time.monotonic() when the first byte was seen


class Rs485Adapter:
    """A USB-RS485 adapter as a VISA serial instrument: raw binary I/O with timeouts.

    Used as the master's port, as a bus monitor (``capture``), as the port a simulated
    meter answers on, or as a noise injector (``write`` of garbage).
    """

    def __init__(self, name: str, resource: str, settings: SerialSettings, *, rm: Any = None,
                 on_frame: Callable[[Frame], None] | None = None) -> None:
        self.name = name
        self.resource = resource
        self.requested = settings
        self.on_frame = on_frame
        self._rm = rm or resource_manager()
        self._inst: Any = None
        self.virtual = False
        self.identity = ""

    # -- opening -----------------------------------------------------------------------

    def open(self) -> Rs485Adapter:
        from pyvisa import constants

        path = visa_serial_path(self.resource) or ""
        self.virtual = _is_pty(os.path.realpath(path)) if path.startswith("/") else path.startswith(("loop://", "socket://"))
        parity = {"N": constants.Parity.none, "E": constants.Parity.even, "O": constants.Parity.odd,
                  "M": constants.Parity.mark, "S": constants.Parity.space}[self.requested.parity]
        stop = {1: constants.StopBits.one, 1.5: constants.StopBits.one_and_a_half, 2: constants.StopBits.two}[self.requested.stopbits]
        if self.virtual and parity != constants.Parity.none:
            log.warning("%s: %s is a virtual link without parity: %s is carried as %d %dN%g", self.name, path,
                        self.requested, self.requested.baudrate, self.requested.bytesize, self.requested.stopbits)
            parity = constants.Parity.none
        try:
            inst = self._rm.open_resource(self.resource, baud_rate=self.requested.baudrate, data_bits=self.requested.bytesize,
                                          parity=parity, stop_bits=stop, timeout=1000)
        except Exception as exc:  # pyvisa raises VisaIOError, ValueError or the serial layer's OSError
            raise LinkError(f"{self.name}: cannot open {self.resource}: {exc}") from exc
        inst.read_termination = None  # binary frames contain 0A and 0D
        inst.write_termination = None
        inst.end_input = constants.SerialTermination.none
        self._inst = inst
        self.identity = self._describe(path)
        self.flush()
        return self

    def _describe(self, path: str) -> str:
        if self.virtual:
            return f"virtual port {path}"
        try:
            from serial.tools import list_ports

            real = os.path.realpath(path)
            for port in list_ports.comports():
                if os.path.realpath(port.device) == real:
                    return f"{port.description} serial={port.serial_number or '?'} at {port.device}"
        except Exception:  # identity is for the report only
            log.debug("%s: cannot describe %s", self.name, path, exc_info=True)
        return path

    def close(self) -> None:
        if self._inst is not None:
            try:
                self._inst.close()
            finally:
                self._inst = None

    def __enter__(self) -> Rs485Adapter:
        return self.open() if self._inst is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _open(self) -> Any:
        if self._inst is None:
            raise LinkError(f"{self.name} is not open")
        return self._inst

    # -- I/O -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        at = time.monotonic()
        self._open.write_raw(bytes(data))
        if self.on_frame:
            self.on_frame(Frame(self.name, "tx", bytes(data), at))

    def read_available(self, timeout: float) -> bytes:
        """What arrives within ``timeout`` seconds, returned as soon as something has arrived
        and the line then stays quiet for ``gap`` (one poll): b"" if nothing came."""
        inst = self._open
        deadline = time.monotonic() + timeout
        while True:
            waiting = inst.bytes_in_buffer
            if waiting:
                return bytes(inst.read_bytes(waiting))
            if time.monotonic() >= deadline:
                return b""
            time.sleep(POLL_S)

    def capture(self, duration: float) -> list[tuple[float, bytes]]:
        """Every chunk that arrives for ``duration`` seconds, with the time it was seen (bus monitor)."""
        chunks: list[tuple[float, bytes]] = []
        end = time.monotonic() + duration
        while (left := end - time.monotonic()) > 0:
            data = self.read_available(left)
            if data:
                chunks.append((time.monotonic(), data))
        return chunks

    def monitor(self) -> Capture:
        """Start watching the wire in the background (a bus monitor); ``stop()`` the capture
        to get every chunk with the time it was seen (what arrived before is dropped)."""
        self.flush()
        return Capture(self).start()

    def read_frame(self, decoder: StreamDecoder, timeout: float) -> Any:
        """The first frame ``decoder`` finds in what arrives within ``timeout``."""
        deadline = time.monotonic() + timeout
        received = bytearray()
        first = 0.0
        try:
            while (left := deadline - time.monotonic()) > 0:
                data = self.read_available(left)
                if not data:
                    continue
                if not received:
                    first = time.monotonic()
                received += data
                for item in decoder.feed(data):
                    if not isinstance(item, FrameError):
                        return item
        finally:
            if received and self.on_frame:
                self.on_frame(Frame(self.name, "rx", bytes(received), first))
        raise MeterTimeout(f"{self.name}: no frame within {timeout:.3f} s ({len(received)} bytes seen)")

    def flush(self) -> bytes:
        """Drop (and return) whatever is waiting in the input buffer."""
        inst = self._open
        waiting = inst.bytes_in_buffer
        return bytes(inst.read_bytes(waiting)) if waiting else b""


class Capture:
    """A bus monitor running in a thread: every chunk an adapter receives, time-stamped."""

    def __init__(self, adapter: Rs485Adapter) -> None:
        self.adapter = adapter
        self.chunks: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"monitor-{adapter.name}", daemon=True)

    def start(self) -> Capture:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            data = self.adapter.read_available(0.02)
            if data:
                self.chunks.append((time.monotonic(), data))
                if self.adapter.on_frame:
                    self.adapter.on_frame(Frame(self.adapter.name, "rx", data, self.chunks[-1][0]))

    def stop(self) -> list[tuple[float, bytes]]:
        self._stop.set()
        self._thread.join(timeout=2)
        return list(self.chunks)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PulseGenerator:
    """The bench's pulse generator (``meterhub-pulsegen`` on a Raspberry Pi), over SCPI."""

    def __init__(self, name: str, resource: str, *, rm: Any = None) -> None:
        self.name = name
        self.resource = resource
        self._rm = rm or resource_manager()
        self._inst: Any = None

    def open(self) -> PulseGenerator:
        try:
            # Both terminations: a socket has no END, and without them a query times out
            # with the answer swallowed (serial-visa-peers B2).
            self._inst = self._rm.open_resource(self.resource, read_termination="\n", write_termination="\n",
                                                timeout=SCPI_TIMEOUT_MS)
        except Exception as exc:
            raise LinkError(f"{self.name}: cannot open {self.resource}: {exc}") from exc
        return self

    def close(self) -> None:
        if self._inst is not None:
            self._inst.close()
            self._inst = None

    def __enter__(self) -> PulseGenerator:
        return self.open() if self._inst is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, command: str) -> None:
        self._inst.write(command)

    def query(self, command: str, *, timeout: float | None = None) -> str:
        if timeout is None:
            return str(self._inst.query(command)).strip()
        saved = self._inst.timeout
        self._inst.timeout = int(timeout * 1000)
        try:
            return str(self._inst.query(command)).strip()
        finally:
            self._inst.timeout = saved

    def identify(self) -> str:
        return self.query("*IDN?")

    def reset(self) -> None:
        self.write("*RST")
        self.write("*CLS")

    def errors(self) -> list[str]:
        """Drain the SCPI error queue (``SYST:ERR?`` until ``0,"No error"``)."""
        found = []
        for _ in range(32):  # the queue is bounded; a broken server must not loop us forever
            answer = self.query("SYST:ERR?")
            if answer.startswith("0,") or answer.startswith("+0,"):
                break
            found.append(answer)
        return found

    def burst(self, channel: int, count: int, frequency: float, width: float) -> None:
        """Set up and start ``count`` pulses of ``width`` seconds at ``frequency`` Hz."""
        for command in (f"SOUR{channel}:PULS:FREQ {frequency:g}", f"SOUR{channel}:PULS:WIDT {width:g}",
                        f"SOUR{channel}:PULS:COUN {count:d}", f"OUTP{channel} ON", f"INIT{channel}"):
            self.write(command)
        problems = self.errors()
        if problems:
            raise LinkError(f"{self.name} refused the burst on channel {channel}: {'; '.join(problems)}")

    def wait(self, timeout: float) -> None:
        """Block until every counted burst is done (``*OPC?`` answers 1)."""
        answer = self.query("*OPC?", timeout=timeout)
        if answer not in ("1", "+1"):
            raise LinkError(f"{self.name}: *OPC? answered {answer!r}")

    def sent(self, channel: int) -> int:
        return int(float(self.query(f"SOUR{channel}:PULS:SENT?")))

    def abort(self, channel: int) -> None:
        self.write(f"ABOR{channel}")
