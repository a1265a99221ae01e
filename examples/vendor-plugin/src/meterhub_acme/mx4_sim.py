"""A simulated ACME MX4 on a real TCP socket: four RS485 ports with simulated meters.

:class:`Mx4Sim` serves the MX4's envelopes (:mod:`meterhub_acme.mx4`) on loopback from a
thread of its own, so an asyncio concentrator in the main thread, or a ``meterhub``
process, reaches it over TCP as it would a real gateway. Behind each port sit meterhub's
simulated devices (:class:`meterhub.simulator.SimDevice`: the DL/T 645 meters of
:mod:`meterhub.protocols.dlt645_sim`, or any other protocol's); a port decodes a request
with its devices' own decoders and lets them answer, as a :class:`meterhub.simulator.PtyBus`
does.

Timing is the RS485 pair's: a port sends a request when its line is free, a device
answers after its turnaround (and ``slow_delay`` more with the ``slow`` fault), and the MX4
forwards the answer once it has arrived whole and the line has been quiet for an
inter-frame gap, all at the ports' character format (:mod:`meterhub.timing`). The four
ports work at once; each carries one request at a time, in the order they came. What is
tagged how follows the MX4's window rule (:mod:`meterhub_acme.mx4`).

The simulator counts what a test wants to know: requests in flight (received and not yet
answered, or their window not yet closed) at the peak, on all ports and on each, and the
unsolicited reports it sent with how many requests were in flight at that moment.
Faults: the devices' own (``silence``, ``bad_checksum``, ``wrong_address``) and ``slow``;
the other wire faults (``noise``, ``truncated``, ``jam``) are refused, as the code that
makes them is :class:`~meterhub.simulator.PtyBus`'s own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
from meterhub import timing
from meterhub.errors import FrameError
from meterhub.model import SerialSettings
from meterhub.protocols import dlt645
from meterhub.protocols.dlt645_data import ITEMS, encode_value
from meterhub.protocols.dlt645_sim import CHARACTER_FORMAT, COVER_OPEN_EVENTS, make_meters, slow_delay
from meterhub.simulator import DEFAULT_TURNAROUND, Fault, SimDevice, as_fault

from . import mx4

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

#: How long start() and stop() wait for the simulator's thread. A scheduling figure of the
#: simulator, not a protocol timing.
THREAD_WAIT_S = 5.0

#: How often a test's thread looks at the simulator's counters while it waits for them.
POLL_S = 0.01

#: The faults a device behind the MX4 may have: those it applies itself, and slow answers.
FAULTS = (None, Fault.SILENCE, Fault.BAD_CHECKSUM, Fault.WRONG_ADDRESS, Fault.SLOW)


@attrs.frozen
class SentReport:
    """An unsolicited report the MX4 sent, and how busy it was at that moment."""

    port: int
    address: str
    frame: bytes  #: the meter-protocol bytes the envelope carried
    tag: int  #: 0, or the tag of a window that was open on the port
    in_flight: int  #: requests in flight on all ports when it was sent


@attrs.define(eq=False)
class _Request:
    writer: asyncio.StreamWriter
    tag: int
    port: int
    payload: bytes


@attrs.define(eq=False)
class _Report:
    address: str
    frame: bytes


class Mx4Sim:
    """Simulated devices on the RS485 ports of an MX4 served over TCP (see the module).

    ``ports`` maps port numbers (1..4) to the devices wired to them; all ports run at
    ``settings``. ``turnaround`` is a device's delay before it answers (seconds, or a
    range to draw from); ``answer_window`` the MX4's window (:data:`mx4.ANSWER_WINDOW_S`).
    """

    def __init__(
        self,
        ports: Mapping[int, Sequence[SimDevice]],
        *,
        settings: SerialSettings = SerialSettings(2400, **CHARACTER_FORMAT),
        turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
        seed: int = 0,
        answer_window: float = mx4.ANSWER_WINDOW_S,
        slow: float | None = None,
    ) -> None:
        unknown = [p for p in ports if p not in mx4.PORTS]
        if unknown:
            raise ValueError(f"the MX4 has ports {mx4.PORTS.start}..{mx4.PORTS.stop - 1}, not {unknown}")
        for devices in ports.values():
            for dev in devices:
                _check_fault(dev.fault)
        self.ports: dict[int, list[SimDevice]] = {p: list(ports.get(p, ())) for p in mx4.PORTS}
        self.settings = settings
        self.turnaround = turnaround
        self.answer_window = answer_window
        self.slow_delay = slow_delay(settings) if slow is None else slow
        self.host = LOOPBACK
        self.tcp_port = 0
        self.requests = 0  #: request envelopes received
        self.answers = 0  #: answer envelopes sent
        self.rejected_in = 0  #: envelopes received damaged, or with tag 0
        self.handler_errors = 0  #: exceptions of device handlers (logged)
        self.in_flight = 0  #: requests received and not yet answered (or their window not yet closed)
        self.peak_in_flight = 0
        self.port_in_flight = {p: 0 for p in mx4.PORTS}
        self.peak_per_port = {p: 0 for p in mx4.PORTS}
        self.reports: list[SentReport] = []
        self._rng = random.Random(seed)
        self._armed: list[tuple[int, int, _Report]] = []  # (in-flight threshold, port, report)
        self._clients: set[asyncio.StreamWriter] = set()
        self._queues: dict[int, asyncio.Queue[_Request | _Report]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Listen on a free loopback port; returns ``(host, port)``."""
        if self._thread is not None:
            return self.host, self.tcp_port
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="Mx4Sim", daemon=True)
        self._thread.start()
        if not ready.wait(THREAD_WAIT_S) or self._error is not None:
            raise RuntimeError(f"the simulated MX4 did not start: {self._error!r}")
        return self.host, self.tcp_port

    def stop(self) -> None:
        """Close the server and every connection (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(THREAD_WAIT_S)
        self._thread = None

    def __enter__(self) -> Mx4Sim:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._open())
        except Exception as exc:  # reported by start()
            self._error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        self._queues = {p: asyncio.Queue() for p in mx4.PORTS}
        self._server = await asyncio.start_server(self._client, LOOPBACK, 0)
        self.tcp_port = self._server.sockets[0].getsockname()[1]
        self._workers = [asyncio.create_task(self._port(p), name=f"Mx4Sim port {p}") for p in mx4.PORTS]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._clients):
            writer.close()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self._server.wait_closed()

    # -- control (from any thread) ---------------------------------------------------------

    def mx4_ports(self) -> dict[int, list[str]]:
        """A channel's ``mx4_ports`` for these devices: port -> addresses."""
        return {p: [d.address for d in devices] for p, devices in self.ports.items() if devices}

    def device(self, address: str) -> tuple[int, SimDevice]:
        """The port and device with this address; KeyError otherwise."""
        for port, devices in self.ports.items():
            for dev in devices:
                if dev.address == address:
                    return port, dev
        raise KeyError(f"no simulated device {address!r} on this MX4")

    def set_fault(self, address: str, fault: Fault | str | None) -> None:
        """Switch a device's fault (None = healthy); ValueError for one the MX4 does not simulate."""
        self.device(address)[1].fault = _check_fault(as_fault(fault))

    def report(self, address: str, di: int = COVER_OPEN_EVENTS, *, port: int | None = None, when_in_flight: int = 0) -> bytes:
        """Have a DL/T 645 meter report on its own: what it would answer to a read of ``di``
        (an event record's count by default), sent as soon as its port's line is free and
        at least ``when_in_flight`` requests are in flight. A device on the MX4 sends its own
        answer; any other ``address`` is a meter nobody configured, on ``port`` (default 1),
        reporting a count of 1. Returns the frame's bytes."""
        try:
            port, dev = self.device(address)
            frame = dev.handle(dlt645.read_request(address, di))[0]
        except KeyError:
            port = port or mx4.PORTS.start
            frame = dlt645.encode(dlt645.read_reply(address, di, encode_value(ITEMS[di], 1)))
        self._call(self._arm, when_in_flight, port, _Report(address, frame))
        return frame

    def send_raw(self, data: bytes) -> None:
        """Put ``data`` on every client's TCP stream as it is (garbage, a damaged envelope)."""
        self._call(self._broadcast, bytes(data))

    def wait_reports(self, count: int, timeout: float = THREAD_WAIT_S) -> bool:
        """Wait until ``count`` reports were sent; False on timeout."""
        return _wait(lambda: len(self.reports) >= count, timeout)

    def wait_clients(self, count: int = 1, timeout: float = THREAD_WAIT_S) -> bool:
        """Wait until ``count`` masters are connected; False on timeout."""
        return _wait(lambda: len(self._clients) >= count, timeout)

    def _call(self, function: Callable[..., Any], *args: Any) -> None:
        if self._loop is None or self._thread is None:
            raise RuntimeError("the simulated MX4 is not running")
        self._loop.call_soon_threadsafe(function, *args)

    # -- serving ---------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        decoder = mx4.StreamDecoder()
        try:
            while data := await reader.read(4096):
                for item in decoder.feed(data):
                    if isinstance(item, FrameError) or item.unsolicited:
                        self.rejected_in += 1
                        log.warning("simulated MX4: refused %r", item)
                        continue
                    self._received(_Request(writer, item.tag, item.port, item.payload))
        except OSError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    def _received(self, request: _Request) -> None:
        self.requests += 1
        self.in_flight += 1
        self.port_in_flight[request.port] += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.peak_per_port[request.port] = max(self.peak_per_port[request.port], self.port_in_flight[request.port])
        self._queues[request.port].put_nowait(request)
        for armed in [a for a in self._armed if a[0] <= self.in_flight]:
            self._armed.remove(armed)
            self._queues[armed[1]].put_nowait(armed[2])

    def _settled(self, port: int) -> None:
        self.in_flight -= 1
        self.port_in_flight[port] -= 1

    def _arm(self, threshold: int, port: int, report: _Report) -> None:
        if self.in_flight >= threshold:
            self._queues[port].put_nowait(report)
        else:
            self._armed.append((threshold, port, report))

    def _broadcast(self, data: bytes) -> None:
        for writer in list(self._clients):
            if not writer.is_closing():
                writer.write(data)

    async def _port(self, port: int) -> None:
        """One RS485 port: its requests and reports one after the other."""
        queue = self._queues[port]
        free_at = 0.0  # time.monotonic() when the port's line is next free
        carried: _Request | _Report | None = None
        while True:
            item = carried if carried is not None else await queue.get()
            carried = None
            if isinstance(item, _Report):
                free_at = await self._send_report(port, item, free_at, mx4.UNSOLICITED)
            else:
                carried, free_at = await self._serve(port, item, free_at, queue)

    async def _serve(
        self, port: int, request: _Request, free_at: float, queue: asyncio.Queue[_Request | _Report]
    ) -> tuple[_Request | _Report | None, float]:
        """Put a request on the port's line and forward its answer; returns what came next
        while its window was open (if it stayed unanswered) and when the line is free."""
        start = await _until(free_at)
        end_of_request = start + timing.frame_time(len(request.payload), self.settings)
        bursts, delay = self._answers(port, request.payload)
        if not bursts:
            try:
                following = await asyncio.wait_for(queue.get(), start + self.answer_window - time.monotonic())
            except TimeoutError:
                following = None
            if isinstance(following, _Report):  # heard within the window: it gets the window's tag
                self._settled(port)
                return None, await self._send_report(port, following, end_of_request, request.tag)
            self._settled(port)
            return following, end_of_request
        at = end_of_request + delay
        for i, burst in enumerate(bursts):
            # The MX4 forwards a burst once the line has been quiet for a gap after it.
            due = at + timing.frame_time(len(burst), self.settings) + timing.inter_frame_gap(self.settings)
            await _until(due)
            first = i == 0
            tag = request.tag if first and due - start <= self.answer_window else mx4.UNSOLICITED
            if not request.writer.is_closing():
                request.writer.write(mx4.encode(mx4.Envelope(tag, port, burst)))
            if first:
                self.answers += 1
                self._settled(port)
            at = due
        return None, at

    def _answers(self, port: int, payload: bytes) -> tuple[list[bytes], float]:
        """The bursts the port's devices answer ``payload`` with, and the delay from the end
        of the request to the first one's first byte."""
        groups: dict[str, list[SimDevice]] = {}
        for dev in self.ports[port]:
            groups.setdefault(dev.protocol, []).append(dev)
        answers: list[tuple[SimDevice, list[bytes]]] = []
        for devices in groups.values():
            for frame in devices[0].new_decoder().feed(payload):
                if isinstance(frame, FrameError):
                    continue
                for dev in devices:
                    if dev.fault is Fault.SILENCE:
                        continue
                    try:
                        replies = dev.handle(frame)
                    except Exception:  # deliberate: one faulty device must not stop the MX4
                        self.handler_errors += 1
                        log.exception("simulated MX4: device %s failed on %r", dev.address, frame)
                        continue
                    if replies:
                        answers.append((dev, replies))
        if not answers:
            return [], 0.0
        turnaround = self.turnaround if isinstance(self.turnaround, (int, float)) else self._rng.uniform(*self.turnaround)
        if len(answers) > 1:  # several devices drive the pair at once: a wired-AND of their bytes
            joined = [b"".join(replies) for _, replies in answers]
            garbled = bytearray(b"\xff" * max(map(len, joined)))
            for reply in joined:
                for i, byte in enumerate(reply):
                    garbled[i] &= byte
            return [bytes(garbled)], turnaround
        dev, replies = answers[0]
        return replies, turnaround + (self.slow_delay if dev.fault is Fault.SLOW else 0.0)

    async def _send_report(self, port: int, report: _Report, free_at: float, tag: int) -> float:
        """A meter's report on the port's line, forwarded to every client; returns when the
        line is free again."""
        start = await _until(free_at)
        due = start + timing.frame_time(len(report.frame), self.settings) + timing.inter_frame_gap(self.settings)
        await _until(due)
        self._broadcast(mx4.encode(mx4.Envelope(tag, port, report.frame)))
        self.reports.append(SentReport(port, report.address, report.frame, tag, self.in_flight))
        return due


def _check_fault(fault: Fault | None) -> Fault | None:
    if fault not in FAULTS:
        known = ", ".join(f.value for f in FAULTS if f is not None)
        raise ValueError(f"the simulated MX4 does not simulate the {fault.value} fault (it does: {known})")
    return fault


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` from another thread until it holds (True) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


async def _until(moment: float) -> float:
    """Sleep until ``moment`` (time.monotonic()); returns the time it is then, at least ``moment``."""
    now = time.monotonic()
    if moment > now:
        await asyncio.sleep(moment - now)
    return max(moment, time.monotonic())


def start_mx4_sim(
    meters_per_port: int = 8,
    *,
    ports: int = len(mx4.PORTS),
    baudrate: int = 2400,
    seed: int = 0,
    clock: Callable[[], datetime] = datetime.now,
    first_address: str = "000000000001",
    turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
    **meter_options: Any,
) -> tuple[str, int, Mx4Sim]:
    """A started :class:`Mx4Sim` with ``meters_per_port`` simulated DL/T 645 meters on each of
    its first ``ports`` ports (consecutive addresses from ``first_address``, port 1 first)
    at ``baudrate`` 8E1. Returns ``(host, port, sim)``; the caller stops ``sim``."""
    if ports not in range(1, len(mx4.PORTS) + 1):
        raise ValueError(f"the MX4 has {len(mx4.PORTS)} ports, not {ports}")
    meters = make_meters(meters_per_port * ports, first_address=first_address, seed=seed, clock=clock, **meter_options)
    layout = {p: meters[i * meters_per_port : (i + 1) * meters_per_port] for i, p in enumerate(mx4.PORTS[:ports])}
    sim = Mx4Sim(layout, settings=SerialSettings(baudrate, **CHARACTER_FORMAT), turnaround=turnaround, seed=seed)
    host, port = sim.start()
    return host, port, sim
