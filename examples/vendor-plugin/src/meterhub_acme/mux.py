"""The ``acme-mx4`` transport: meters on the four RS485 ports of an ACME MX4 gateway,
reached over one TCP connection, up to four transactions at once (one per port).

A channel in a site file::

    mx4:
      transport: acme-mx4
      port: tcp://192.0.2.10:4001     # the MX4's address and TCP port
      baudrate: 2400                  # the character format of all four RS485 ports
      parity: E
      mx4_ports:                      # which meters hang on which MX4 port (1..4)
        1: ["000000000001", "000000000002"]
        2: ["000000000003"]

``mx4_ports`` names each meter by its address as its driver writes it (DL/T 645: all 12
digits), quoted. The map sits on the channel rather than in each meter's ``options:``
because a meter's options belong to its meter driver (the Modbus, M-Bus and CJ/T 188
drivers refuse keys they do not know), and because the transport can check the channel's
keys when the site file is loaded.

What the channel does (:class:`Mx4Channel`):

* Each request goes out in an envelope (:mod:`meterhub_acme.mx4`) with a fresh tag and
  the meter's port; the answer envelope with that tag is fed to the driver's decoder, and
  the first frame the driver's ``accept`` takes is the answer. Errors are those of a
  half-duplex line: MeterTimeout when nothing came by the timeout, else the most telling
  of what came (checksum error, unexpected reply, truncated frame, noise).
* At most one transaction per MX4 port (an RS485 pair is half-duplex) and four in all.
* A request left unanswered keeps its port quiet for a guard of
  :data:`LATE_GUARD_TIMEOUTS` timeouts, as a half-duplex line does: an answer that comes
  meanwhile is its late answer (returned by ``settle``), not the next request's.
* Envelopes with tag 0, and those whose tag nobody awaits any more, are what a port heard
  on its own. They are first offered to the port's own request: the one whose late answer
  its guard waits for, or (tag 0) the one under way, whose window a burst of noise may have
  closed. What neither takes is reported, whatever else is under way: each DL/T 645 frame
  in it as an :class:`~meterhub.api.Unsolicited` (:func:`report_of`).
* ``answer_time`` adds what the gateway costs (:meth:`Mx4Channel.answer_time`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
from meterhub import timing
from meterhub.api import ChannelSink, Exchange, LateAnswer, StreamDecoder, Unsolicited
from meterhub.channels import transaction_error
from meterhub.errors import (
    ChecksumError,
    FrameError,
    LinkError,
    MeterTimeout,
    NotSupported,
    TruncatedFrame,
    UnexpectedReply,
)
from meterhub.model import ChannelConfig, Hop, Meter, SerialSettings
from meterhub.protocols import dlt645
from meterhub.protocols.dlt645_data import ITEMS, decode_value

from . import mx4

log = logging.getLogger(__name__)

#: What the TCP leg adds to an answer: the request's way to the MX4 and the answer's way
#: back, on a gateway backhauled over a cellular network (LTE round trips are tens of
#: milliseconds, GPRS ones several hundred; a LAN's well under one).
TCP_ROUND_TRIP_S = 0.2

#: The MX4 stores and forwards: an answer leaves the gateway only once the port has been
#: quiet for an inter-frame gap after it. An answer's first byte reaches the channel that
#: long after the meter began it, at most the wire time of the longest answer a port
#: carries: a DL/T 645 frame with L = 255 and four FE wake-up bytes (Modbus RTU's longest
#: frame, 256 bytes, is shorter). The channel cannot ask the meter's driver for its own.
LONGEST_ANSWER_BYTES = len(dlt645.PREAMBLE) + dlt645.MAX_FRAME_LEN

#: How long a port is kept quiet after an unanswered request, in multiples of its timeout,
#: counted from when the request was sent: an answer up to that late is heard as the late
#: answer it is (the figure of meterhub's half-duplex channel).
LATE_GUARD_TIMEOUTS = 2.0

#: How long opening the TCP connection may take before the channel is reported down.
CONNECT_TIMEOUT_S = 5.0

#: Late answers kept until their meter's ``settle`` takes them; the oldest go first.
MAX_LATE = 256

#: The MX4's UARTs: these speeds, 7 or 8 data bits, 1 or 2 stop bits.
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
BYTESIZES = (7, 8)
PARITIES = ("N", "E", "O")
STOPBITS = (1, 2)

#: Channel keys beyond ``transport``, ``port`` and the serial settings.
OPTION_KEYS = ("mx4_ports",)

#: DL/T 645-2007 appendix A: DI3 03h is the class of event records (power down, cover
#: opened, ...), 1Dh and 1Eh the relay trip and close records. A meter that reports on its
#: own sends what it would answer to a read of such a DI: the record's count.
EVENT_DI3 = frozenset({0x03, 0x1D, 0x1E})


def report_of(frame: dlt645.Frame, port: int, tag: int = mx4.UNSOLICITED, raw: bytes = b"") -> Unsolicited:
    """What a DL/T 645 frame that a port heard on its own says.

    A normal read reply (91h) with an event-record DI is the meter's event report
    (``meter_event``): ``data`` holds the DI, its name and value (the record's count). Any
    other frame (a reply to another DI, an abnormal reply, a request) is reported as an
    ``unsolicited_frame``: an answer later than its request's guard looks like this.
    Neither carries measurements: a value nobody asked for is not stored as a reading.
    """
    data: dict[str, Any] = {"mx4_port": port, "tag": tag, "control": f"{frame.control:02X}"}
    kind, severity = "unsolicited_frame", "info"
    if frame.is_reply and not frame.is_abnormal and frame.function == dlt645.Control.READ and len(frame.data) >= 4:
        di, payload = dlt645.parse_read_reply(frame)
        data["di"] = f"{di:08X}"
        item = ITEMS.get(di)
        if item is not None:
            data["item"] = item.name
            try:
                data["value"] = str(decode_value(item, payload))
            except (FrameError, NotSupported) as exc:
                data["error"] = str(exc)
        if di >> 24 in EVENT_DI3:
            kind, severity = "meter_event", "warning"
    return Unsolicited(kind, frame.address, "dlt645", data, frame=raw, severity=severity)


@attrs.define(eq=False)
class _Request:
    """A request sent and not yet settled: what the reader needs to judge what comes back."""

    tag: int
    port: int
    request: bytes
    decoder: StreamDecoder
    accept: Callable[[Any], bool]
    target: str | None
    started: float  #: time.monotonic() when it was handed to the socket (its timeout counts from here)
    timeout: float
    answer: asyncio.Future[Exchange]
    rejected: list[FrameError] = attrs.field(factory=list)


@attrs.define(eq=False)
class _Owed:
    """An unanswered request whose port is kept quiet until ``until`` or its late answer."""

    request: _Request
    until: float
    answered: asyncio.Event = attrs.field(factory=asyncio.Event)


class Mx4Channel:
    """A :class:`meterhub.api.Channel` to the meters on an MX4's four RS485 ports.

    ``ports`` maps a meter's address to its MX4 port. All four ports run at ``settings``.
    """

    in_flight = len(mx4.PORTS)  #: one transaction per port, all four at once

    def __init__(self, name: str, host: str, tcp_port: int, settings: SerialSettings, ports: Mapping[str, int]) -> None:
        self.name = name
        self.host = host
        self.tcp_port = tcp_port
        self.settings = settings
        self.ports = dict(ports)
        self._slots = asyncio.Semaphore(self.in_flight)
        self._locks = {port: asyncio.Lock() for port in mx4.PORTS}
        self._sessions: dict[int, asyncio.Task[Any] | None] = {}  # port -> the task holding it for a session
        self._waiting: dict[int, _Request] = {}  # by tag
        self._owed: dict[int, _Owed] = {}  # by port
        self._late: list[LateAnswer] = []
        self._last_tag = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._broken: LinkError | None = None
        self._sink: ChannelSink | None = None
        self.bad_envelopes = 0  #: envelopes with a wrong CRC from the MX4
        self.stray_bytes = 0  #: bytes on the TCP stream that were no envelope

    @property
    def where(self) -> str:
        return f"tcp://{self.host}:{self.tcp_port}"

    # -- the Channel contract ------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.tcp_port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise LinkError(f"channel {self.name}: cannot reach the MX4 at {self.where}: {exc or type(exc).__name__}") from exc
        self._broken = None
        self._task = asyncio.get_running_loop().create_task(self._read_loop(), name=f"acme-mx4 {self.name} reader")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._fail(LinkError(f"channel {self.name} is closed"))

    def lane(self, meter: Meter) -> int | str:
        """Its MX4 port: each port is an RS485 pair of its own, one transaction at a time."""
        return self.ports.get(meter.address, "unmapped")

    def towards(self, meter: Meter | None) -> _Towards:
        if meter is None:
            return _Towards(self, None, None)
        return _Towards(self, self.ports.get(meter.address), meter.key, meter.address, meter.hops)

    def answer_time(self, meter: Meter, base: float) -> float:
        """``base`` (the answer begun on the RS485 pair) plus the gateway's store and forward
        (the longest answer's wire time and the gap that ends it, at the port's character
        format) and :data:`TCP_ROUND_TRIP_S`. At 2400 8E1: 1.24 s + 16 ms + 0.2 s."""
        settings = meter.settings or self.settings
        forward = timing.frame_time(LONGEST_ANSWER_BYTES, settings) + timing.inter_frame_gap(settings)
        return base + forward + TCP_ROUND_TRIP_S

    def listen(self, sink: ChannelSink) -> None:
        self._sink = sink

    # -- what a conduit asks -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session(self, port: int) -> AsyncIterator[None]:
        """Hold ``port`` for several transactions of the current task."""
        if self._sessions.get(port) is asyncio.current_task():
            yield
            return
        async with self._locks[port]:
            self._sessions[port] = asyncio.current_task()
            try:
                yield
            finally:
                self._sessions[port] = None

    @contextlib.asynccontextmanager
    async def _held(self, port: int) -> AsyncIterator[None]:
        """``port`` for one transaction: taken, or already held by this task's session."""
        if self._sessions.get(port) is asyncio.current_task():
            yield
            return
        async with self._locks[port]:
            yield

    @contextlib.asynccontextmanager
    async def _turn(self, port: int) -> AsyncIterator[None]:
        """``port`` and one of the four transaction slots, once what the port's last request
        was owed has come or its guard is over."""
        async with self._held(port):
            await self._listen_out(port)
            async with self._slots:
                yield

    async def transact(
        self, port: int, target: str | None, request: bytes, decoder: StreamDecoder, *, timeout: float,
        accept: Callable[[Any], bool], guard: bool,
    ) -> Exchange:
        """Send ``request`` to ``port`` and return the first frame ``accept`` takes (module docstring)."""
        async with self._turn(port):
            req = _Request(self._new_tag(), port, bytes(request), decoder, accept, target, 0.0, timeout,
                           asyncio.get_running_loop().create_future())
            self._waiting[req.tag] = req
            try:
                await self._write(mx4.Envelope(req.tag, port, req.request), req)
                return await asyncio.wait_for(req.answer, max(req.started + timeout - time.monotonic(), 0.0))
            except TimeoutError:
                pass
            finally:
                del self._waiting[req.tag]
                if not req.answer.done():
                    req.answer.cancel()
            # A damaged answer (bad checksum) is the meter's answer: nothing more is owed then.
            if guard and not any(isinstance(e, ChecksumError) for e in req.rejected):
                self._owed[port] = _Owed(req, req.started + LATE_GUARD_TIMEOUTS * timeout)
        raise transaction_error(req.rejected, decoder, timeout)

    async def send(self, ports: list[int], request: bytes) -> None:
        """Send a frame that gets no answer on each of ``ports``."""
        for port in ports:
            async with self._turn(port):
                await self._write(mx4.Envelope(self._new_tag(), port, bytes(request)))

    async def settle(self, port: int | None, target: str | None) -> list[LateAnswer]:
        """Wait out ``port``'s guard, if its last request is owed an answer; return the late
        answers to ``target``'s requests heard since its last call."""
        if port is not None and port in self._owed:
            async with self._held(port):
                await self._listen_out(port)
        mine = [a for a in self._late if a.target == target]
        self._late = [a for a in self._late if a.target != target]
        if self._broken is not None:
            raise self._broken
        return mine

    # -- inside --------------------------------------------------------------------------

    def _new_tag(self) -> int:
        busy = set(self._waiting) | {owed.request.tag for owed in self._owed.values()}
        for _ in mx4.TAGS:
            self._last_tag = self._last_tag % len(mx4.TAGS) + 1  # 1, 2, ..., 255, 1, ...
            if self._last_tag not in busy:
                return self._last_tag
        raise RuntimeError("no free MX4 tag")  # pragma: no cover - at most 4 waiting and 4 owed of 255

    async def _listen_out(self, port: int) -> None:
        """Keep ``port`` quiet until its owed answer came or its guard is over."""
        owed = self._owed.get(port)
        if owed is None:
            return
        remaining = owed.until - time.monotonic()
        if remaining > 0 and not owed.answered.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(owed.answered.wait(), remaining)
        if self._owed.get(port) is owed:
            del self._owed[port]

    async def _write(self, envelope: mx4.Envelope, req: _Request | None = None) -> None:
        if self._broken is not None:
            raise self._broken
        if self._writer is None:
            raise LinkError(f"channel {self.name} is not open")
        async with self._write_lock:
            if req is not None:
                req.started = time.monotonic()
            try:
                self._writer.write(mx4.encode(envelope))
                await self._writer.drain()
            except (OSError, RuntimeError) as exc:  # RuntimeError: the transport is closing
                self._fail(LinkError(f"channel {self.name}: writing to the MX4 at {self.where} failed: {exc}"))
                raise self._broken from exc  # type: ignore[misc]

    def _fail(self, error: LinkError) -> None:
        """The connection is gone: every transaction under way fails with ``error``."""
        self._broken = error
        for req in self._waiting.values():
            if not req.answer.done():
                req.answer.set_exception(error)
        for owed in self._owed.values():
            owed.answered.set()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        decoder = mx4.StreamDecoder()
        try:
            while True:
                data = await self._reader.read(4096)
                if not data:
                    raise LinkError(f"channel {self.name}: the MX4 at {self.where} closed the connection")
                for item in decoder.feed(data):
                    if isinstance(item, FrameError):
                        self.bad_envelopes += 1
                        log.warning("channel %s: a damaged envelope from the MX4: %s", self.name, item)
                    else:
                        self._envelope(item, time.monotonic())
                if decoder.skipped > self.stray_bytes:
                    log.warning("channel %s: %d byte(s) from the MX4 were no envelope", self.name,
                                decoder.skipped - self.stray_bytes)
                    self.stray_bytes = decoder.skipped
        except LinkError as exc:
            self._fail(exc)
        except OSError as exc:
            self._fail(LinkError(f"channel {self.name}: reading from the MX4 at {self.where} failed: {exc}"))

    def _envelope(self, envelope: mx4.Envelope, now: float) -> None:
        """Who an envelope from the MX4 is for: a request awaiting it, a late answer, or nobody."""
        req = self._waiting.get(envelope.tag) if not envelope.unsolicited else None
        if req is not None and req.port == envelope.port:
            self._answer(req, envelope.payload, now)  # what came in its window is its business
            return
        owed = self._owed.get(envelope.port)
        if owed is not None and self._late_answer(owed, envelope.payload, now):
            return
        # An answer after a burst that closed the request's window (noise) comes with tag 0.
        awaiting = next((r for r in self._waiting.values() if r.port == envelope.port), None)
        if envelope.unsolicited and awaiting is not None and self._answer(awaiting, envelope.payload, now):
            return
        self._unsolicited(envelope)

    def _answer(self, req: _Request, payload: bytes, now: float) -> bool:
        """Feed ``payload`` to a waiting request; whether it took a frame as its answer."""
        try:
            for item in req.decoder.feed(payload):
                if req.answer.done():
                    log.info("channel %s: port %d: %r after the answer to tag %d", self.name, req.port, item, req.tag)
                elif isinstance(item, FrameError):
                    req.rejected.append(item)
                elif req.accept(item):
                    req.answer.set_result(Exchange(item, now - req.started, req.decoder.skipped, tuple(req.rejected)))
                else:
                    req.rejected.append(UnexpectedReply(f"unexpected reply: {item!r}"))
        except Exception as exc:  # the driver's decoder or accept failed: its own call reports it
            if not req.answer.done():
                req.answer.set_exception(exc)
        return req.answer.done() and not req.answer.cancelled() and req.answer.exception() is None

    def _late_answer(self, owed: _Owed, payload: bytes, now: float) -> bool:
        """Whether ``payload`` holds the late answer of the port's owed request (then reported)."""
        req = owed.request
        try:
            for item in req.decoder.feed(payload):
                if not isinstance(item, FrameError) and req.accept(item):
                    self._late.append(LateAnswer(req.request, item, now - req.started, now - req.started, req.timeout,
                                                 req.target))
                    del self._late[:-MAX_LATE]
                    owed.answered.set()
                    return True
        except Exception:  # the driver's decoder or accept failed: nobody's answer then
            log.exception("channel %s: judging a late answer to tag %d failed", self.name, req.tag)
        return False

    def _unsolicited(self, envelope: mx4.Envelope) -> None:
        """Report what a port heard that nobody asked for: each DL/T 645 frame in it, or the
        bytes themselves when they hold none."""
        frames = [f for f in dlt645.StreamDecoder().feed(envelope.payload) if not isinstance(f, FrameError)]
        if frames:
            reports = [report_of(f, envelope.port, envelope.tag, envelope.payload) for f in frames]
        else:
            reports = [Unsolicited("unsolicited_bytes", "", "", {"mx4_port": envelope.port, "tag": envelope.tag,
                                                                 "bytes": len(envelope.payload)},
                                   frame=envelope.payload, severity="warning")]
        for report in reports:
            if self._sink is None:
                log.warning("channel %s: %s from %r before anyone listened; dropped", self.name, report.kind,
                            report.address)
                continue
            self._sink.unsolicited(report)


@attrs.frozen
class _Towards:
    """An :class:`Mx4Channel` as one meter's driver sees it (:class:`meterhub.api.Conduit`)."""

    channel: Mx4Channel
    port: int | None  #: the meter's MX4 port; None for no meter, or one on none of the ports
    target: str | None  #: the meter's key
    address: str = ""
    hops: tuple[Hop, ...] = ()

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def settings(self) -> SerialSettings:
        return self.channel.settings

    def _port(self, settings: SerialSettings | None) -> int:
        if self.target is None:
            raise NotSupported(f"channel {self.name}: an MX4 reaches meters through one of its ports; a request to "
                               "no meter (a scan) names none")
        if self.port is None:
            raise NotSupported(f"channel {self.name}: meter {self.address} is on none of the MX4's ports; list it "
                               "under the channel's mx4_ports")
        if self.hops:
            raise NotSupported(f"channel {self.name}: meter {self.address} is behind a collector; an MX4 port "
                               "reaches only meters wired to it")
        if settings is not None and settings != self.channel.settings:
            raise NotSupported(f"channel {self.name}: the MX4's ports run at {self.channel.settings}, not {settings}")
        return self.port

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
        """``gap`` and ``wake_up`` are not ours to keep: the MX4 times each of its RS485
        ports itself, and delivers whole answers, so ``answer_within`` does not shorten the
        wait."""
        return await self.channel.transact(self._port(settings), self.target, request, decoder, timeout=timeout,
                                           accept=accept, guard=guard)

    async def send(
        self, request: bytes, *, settings: SerialSettings | None = None, gap: float | None = None, wake_up: int = 0,
    ) -> None:
        """To the meter's port; for no meter, to all four (a broadcast reaches every meter)."""
        ports = list(mx4.PORTS) if self.target is None else [self._port(settings)]
        await self.channel.send(ports, request)

    def session(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.channel.session(self._port(None))

    async def settle(self) -> list[LateAnswer]:
        return await self.channel.settle(self.port, self.target)


# --- the transport ---------------------------------------------------------------------


def _tcp_address(port: Any) -> tuple[str, int] | str:
    """``(host, port)`` of a ``tcp://host:port`` URL, or what is wrong with it."""
    if not isinstance(port, str) or not port.startswith("tcp://"):
        return f"must be the MX4's address as tcp://host:port, not {port!r}"
    try:
        url = urlsplit(port)
        number = url.port
    except ValueError as exc:
        return f"{port}: {exc}"
    if not url.hostname:
        return f"{port}: no host"
    if number is None or not 0 < number < 65536:
        return f"{port}: give the TCP port, 1..65535"
    if url.path not in ("", "/") or url.query or url.fragment:
        return f"{port}: only tcp://host:port, without a path or query"
    return url.hostname, number


def _port_number(key: Any) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        return int(key)
    return None


def port_map(options: Mapping[str, Any]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``mx4_ports`` as address -> port, and its problems as ``(key, message)`` pairs."""
    entries = options.get("mx4_ports")
    if entries is None:
        return {}, [("mx4_ports", "missing: name the meters on each MX4 port, e.g. {1: [\"000000000001\"]}")]
    if not isinstance(entries, Mapping):
        return {}, [("mx4_ports", "must map MX4 ports (1..4) to lists of meter addresses")]
    ports: dict[str, int] = {}
    problems: list[tuple[str, str]] = []
    for key, addresses in entries.items():
        where = f"mx4_ports.{key}"
        number = _port_number(key)
        if number not in mx4.PORTS:
            problems.append((where, f"the MX4 has ports {mx4.PORTS.start}..{mx4.PORTS.stop - 1}, not {key!r}"))
            continue
        if not isinstance(addresses, list):
            problems.append((where, "must be a list of meter addresses"))
            continue
        for i, address in enumerate(addresses):
            if not isinstance(address, str) or not address.strip():
                hint = "; write the address in quotes" if isinstance(address, int) else ""
                problems.append((f"{where}[{i}]", f"must be a meter address, not {address!r}{hint}"))
            elif address in ports:
                problems.append((f"{where}[{i}]", f"meter {address} is already on port {ports[address]}"))
            else:
                ports[address] = number
    return ports, problems


class Mx4Transport:
    """An ACME MX4: four RS485 ports behind one TCP connection."""

    name = "acme-mx4"
    description = "ACME MX4 gateway: four RS485 ports over TCP, a transaction on each at once"

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        address = _tcp_address(channel.port)
        if isinstance(address, str):
            problems.append(("port", address))
        settings = channel.settings
        for key, value, allowed in (("baudrate", settings.baudrate, BAUDRATES), ("bytesize", settings.bytesize, BYTESIZES),
                                    ("parity", settings.parity, PARITIES), ("stopbits", settings.stopbits, STOPBITS)):
            if value not in allowed:
                problems.append((key, f"the MX4's ports take {', '.join(map(str, allowed))}, not {value!r}"))
        for key in channel.options:
            if key not in OPTION_KEYS:
                problems.append((str(key), f"unknown key for an acme-mx4 channel (known: {', '.join(OPTION_KEYS)})"))
        problems += port_map(channel.options)[1]
        return problems

    def validate_placement(self, channel: ChannelConfig, meter: Meter) -> list[tuple[str, str]]:
        """A meter must be on one of the MX4's ports (:class:`meterhub.api.PlacementValidator`)."""
        ports, problems = port_map(channel.options)
        if problems or meter.address in ports:
            return []  # a broken map is reported on the channel
        return [("address", f"meter {meter.address} is on none of the MX4 ports of channel {channel.name}: "
                            "add it to the channel's mx4_ports")]

    def create_channel(self, channel: ChannelConfig) -> Mx4Channel:
        problems = self.validate(channel)
        if problems:
            detail = "; ".join(f"{key}: {message}" for key, message in problems)
            raise LinkError(f"channel {channel.name} ({channel.port}): {detail}")
        host, tcp_port = _tcp_address(channel.port)  # type: ignore[misc]  # valid: checked above
        return Mx4Channel(channel.name, host, tcp_port, channel.settings, port_map(channel.options)[0])
