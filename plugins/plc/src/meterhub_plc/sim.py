"""A simulated Q/GDW 1376.2-2013 local communication module (an HPLC carrier "router"
module, the CCO) on a pseudo-terminal, in front of a simulated carrier network.

:class:`ModuleSim` answers the concentrator on the master side of a pty (``sim.path`` is
the slave to open, 9600 8E1 by default) the way gdw1376-details.md §3 describes a module:
queries (03), archive upkeep (10, 11), router control (12), concentrator-led reads one at a
time (13 F1) or several at once (F1 F1, 2019), router-led reading (14 F1 ↔ 06 F2 ↔ 00 F1,
ended by 06 F3) and active reports (06 F1, 06 F5) that it repeats until confirmed. The
slave nodes are a :class:`~meterhub_plc.network.CarrierNetwork`: the module's route table
(archive) starts empty and holds what the concentrator adds with 11 F1; a read goes to the
network's node and comes back after that transaction's latency, in real time, while the
module keeps answering other frames. Every frame it writes is paced at the baud rate.

One serving thread does everything: it reads the pty and feeds a
:class:`~meterhub.protocols.gdw1376_2.StreamDecoder`, runs the timers that are due (a heap:
read answers, report repeats, router steps) and writes the output chunks that are due.

Faults, switchable at start or while running (thread-safe): :meth:`ModuleSim.busy`,
:meth:`ModuleSim.deny_next`, :meth:`ModuleSim.bad_checksum_next`, :meth:`ModuleSim.noise`,
:attr:`ModuleSim.silent`, and node drop-outs through the network (:meth:`ModuleSim.drop`).

Simplifications (what a real module does that this one does not):

* one channel, no phase-by-phase scheduling; 13 F1 and F1 F1 do not share their slots
  (one 13 F1 or 02 F1 at a time; ``concurrency`` F1 F1 at a time), and the router does
  not pause itself for them;
* a read's answer comes when the network says, capped at the monitor timeout (05 F4,
  default 90 s) with an empty frame; no 14 F3 delay correction, no 14 F2 time request;
* capacity exceeded on 11 F1 is denied with INVALID_DATA (the standard names no code);
* 01 F1 forgets reads in flight (no answer comes), stops the router and re-forms the
  network; 01 F3 drops reports not yet confirmed;
* a downlink 00 F2 to a report stops its repeats like a confirm (counted apart);
* ``silent`` makes the module ignore every frame it receives; what it had already
  scheduled still goes out.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any

import attrs

from meterhub import simulator, timing
from meterhub.errors import ChecksumError, FrameError
from meterhub.model import SerialSettings
from meterhub.protocols import dlt645
from meterhub.protocols import gdw1376_2 as link
from meterhub.protocols import gdw1376_2_data as units
from meterhub.protocols.gdw1376_2 import Addresses, Afn, CommMode, Direction, Frame, UpInfo
from meterhub.protocols.gdw1376_2_data import DenyReason, ReadFlag
from meterhub.simulator import PacedPtyServer, SimTimer

from .network import CarrierNetwork, NodeView, Outcome

log = logging.getLogger(__name__)

#: How often the serving thread wakes when nothing happens (stop() is prompt). A
#: scheduling figure of the simulator, not a protocol timing.
POLL_INTERVAL_S = 0.01
#: Output is written in pieces of about this much wire time, each when its last character
#: would have left the module's UART (the paced server's figure).
CHUNK_INTERVAL_S = simulator.CHUNK_INTERVAL_S

#: gdw1376-details.md §3.1: the module's UART runs 9600 8E1 by default.
DEFAULT_BAUDRATE = 9600

#: A factory-fresh module's main node address; the concentrator sets its own with 05 F1
#: (§3.4 identification flow).
DEFAULT_MAIN_NODE = "000000000000"

#: How long the module takes to answer a direct command (it must within 6 s, §3.1); real
#: modules take some milliseconds. A figure of the simulator.
RESPONSE_DELAY_S = 0.005

#: How long the module tries a node that is not in the network before it denies (12).
NOT_IN_NETWORK_DELAY_S = 0.1

#: §3.1: the default monitor (13 F1) timeout, s.
DEFAULT_MONITOR_TIMEOUT = 90

#: Active reports (06) unconfirmed are sent again this often, this many times [U: the
#: standard leaves it to the module; LN's concentrator expects about 2 s].
REPORT_RETRY_S = 2.0
REPORT_RESENDS = 3

#: Router-led reading: how long the module waits for the concentrator's 14 F1 answer
#: before it moves on to the next node.
ROUTER_WAIT_S = 10.0

#: The longest 1376.2 frame the module takes or sends (reported in 03 F10).
MAX_FRAME = 512
#: 10 F2 answers at most this many nodes; 06 F1 reports this many per frame.
NODE_PAGE_MAX = 32

#: What 03 F1 / 03 F10 report besides the constructor's vendor and chip codes.
VERSION_DATE = date(2026, 1, 1)
VERSION = "0100"
#: 03 F10's protocol release and filing dates [U: placeholders; nothing reads them].
PROTOCOL_RELEASE = date(2013, 1, 1)
#: 03 F10: broadcast timeout (s), file packet size, upgrade wait (s), the one HPLC rate.
BROADCAST_TIMEOUT_S = 60
MAX_FILE_PACKET = 256
UPGRADE_WAIT_S = 10
HPLC_RATE = units.Rate(1000, kbps=True)
#: HPLC has one channel; 00 F1 reports it idle.
CHANNELS = (1,)

#: 10 F4 work steps per phase (1 initial .. 8 idle).
STEP_READING, STEP_IDLE = 4, 8

#: Fn the module handles that are not commands it answers: confirms of its reports (00),
#: its reports (06) and the concentrator's answers to its 14 F1 requests.
_NOT_COMMANDS = {(0x00, 1), (0x00, 2), (0x06, 1), (0x06, 2), (0x06, 3), (0x06, 5), (0x14, 1)}


@attrs.define(slots=True)
class _Report:
    """An active report (06) waiting for the concentrator's 00 F1."""

    frame: Frame
    on_done: Callable[[bool], None] | None = None  #: called with True when confirmed
    sends: int = 0
    timer: SimTimer | None = None


@attrs.define(slots=True)
class _Router:
    """Router-led reading (AFN 14): the archive as it was at 12 F1, where the router is."""

    order: list[str]
    index: int = 0  #: the node in hand, into ``order``
    running: bool = True  #: 12 F2 clears it, 12 F3 sets it
    busy: bool = False  #: a node is in hand (asked, being read or reported)
    ask_seq: int | None = None  #: R6 of the 14 F1 request awaiting its answer
    ask_timer: SimTimer | None = None
    read: set[str] = attrs.field(factory=set)  #: nodes whose meter answered this round
    relay_read: int = 0  #: of those, how many through relays
    finished: bool = False  #: 06 F3 sent


@attrs.define(slots=True)
class _Faults:
    busy: int = 0  #: deny the next n commands BUSY
    deny: collections.deque[int] = attrs.field(factory=collections.deque)  #: deny codes for the next commands
    bad_checksum: int = 0  #: send the next n frames with a wrong CS
    noise: bytes | None = None  #: garbage put on the wire before every frame
    silent: bool = False  #: ignore every frame


Answer = tuple[int, int, Any]  # (AFN, Fn, unit) of an answer to send now


def _fit(answer: bytes | None) -> bytes:
    """A meter's answer as a 1-byte-length unit carries it: the FE wake-up bytes go first
    when it is too long; an answer that still does not fit is not sent (logged)."""
    if not answer:
        return b""
    if len(answer) > units.MAX_CARRIED:
        answer = answer.lstrip(b"\xfe")
    if len(answer) > units.MAX_CARRIED:
        log.warning("module sim: a %d-byte meter answer does not fit a 1376.2 unit; sent as no answer", len(answer))
        return b""
    return answer


class ModuleSim(PacedPtyServer):
    """A 1376.2 local communication module on a pty, serving ``network``.

    ``baudrate`` of the UART (8E1); ``main_node`` its own address; ``concurrency`` how
    many F1 F1 reads it takes at once (1: F1 F1 unsupported); ``mode`` the C byte's
    communication mode; ``capacity`` the archive's size; ``vendor`` the vendor and chip
    codes of 03 F1; ``router_led`` whether 12 F1 starts router-led reading; ``seed`` the
    first R6 of the module's own frames (everything random is the network's).
    ``response_delay``, ``report_retry`` and ``router_wait`` (s) are the module's own
    timings (see the constants). Use as a context manager, or :meth:`start` /
    :meth:`stop`.
    """

    POLL_S = POLL_INTERVAL_S
    _logger = log
    LABEL = "module sim"

    def __init__(
        self,
        network: CarrierNetwork,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        main_node: str = DEFAULT_MAIN_NODE,
        concurrency: int = 5,
        mode: int = CommMode.HPLC,
        capacity: int = 2048,
        vendor: tuple[str, str] = ("MH", "01"),
        router_led: bool = True,
        seed: int = 0,
        response_delay: float = RESPONSE_DELAY_S,
        report_retry: float = REPORT_RETRY_S,
        router_wait: float = ROUTER_WAIT_S,
    ) -> None:
        super().__init__()
        if concurrency < 1 or not 0 < capacity <= 0xFFFF:
            raise ValueError(f"concurrency must be >= 1 and capacity 1..65535, got {concurrency}, {capacity}")
        self.network = network
        self.settings = SerialSettings(baudrate=baudrate, bytesize=8, parity="E", stopbits=1)
        self.main_node = units.MainNode(main_node).address
        self.concurrency = concurrency
        self.mode = int(mode)
        self.capacity = capacity
        self.vendor = units.VendorVersion(vendor[0], vendor[1], VERSION_DATE, VERSION)
        self.router_led = router_led
        self.seed = seed
        self.response_delay = response_delay
        self.report_retry = report_retry
        self.router_wait = router_wait
        self.monitor_timeout = DEFAULT_MONITOR_TIMEOUT
        self.events_allowed = True
        # counters
        self.frames_in = 0  #: valid frames received
        # frames_out (frames completely written) and bytes_out (noise included): PacedPtyServer
        self.damaged_in = 0  #: frames dropped for a wrong checksum
        self.bytes_in = 0  #: bytes received (noise included)
        self.denied = 0  #: 00 F2 sent
        self.reports_sent = 0  #: active reports (06) sent, repeats not counted
        self.reports_confirmed = 0  #: of those, confirmed with 00 F1
        self.reports_denied = 0  #: of those, answered with 00 F2
        self.report_repeats = 0  #: repeats of unconfirmed reports
        self.reports_abandoned = 0  #: reports never confirmed
        # state
        self._archive: dict[str, int] = {}  # address -> protocol, in insertion order
        self._order: list[str] = []  # the archive's addresses in order (10 F2 pages)
        self._monitor: str | None = None  # the node a 13 F1 / 02 F1 is reading
        self._concurrent: dict[str, int] = {}  # node -> R6 of its F1 F1
        self._reports: dict[int, _Report] = {}  # R6 -> report awaiting its confirm
        self._router: _Router | None = None
        self._faults = _Faults()
        # self._epoch (PacedPtyServer) is bumped by 01 F1: reads of an earlier epoch are forgotten
        self._seq = itertools.count(seed & 0xFF)
        self._handlers = self._dispatch_table()
        self._decoder = link.StreamDecoder(max_length=MAX_FRAME)  # a fresh one at every start

    def _dispatch_table(self) -> dict[tuple[int, int], Callable[[Frame, Any], Answer | None]]:
        """(AFN, Fn) -> the handler of a downlink command; the handler returns the answer
        to send now, or None when it answers later (or not at all)."""
        confirm = self._just_confirm
        table: dict[tuple[int, int], Callable[[Frame, Any], Answer | None]] = {
            (Afn.INIT, 1): self._hardware_init,
            (Afn.INIT, 2): self._parameter_init,
            (Afn.INIT, 3): self._data_init,
            (Afn.FORWARD, 1): self._forward,
            (Afn.QUERY, 1): lambda _f, _u: (Afn.QUERY, 1, self.vendor),
            (Afn.QUERY, 4): lambda _f, _u: (Afn.QUERY, 4, units.MainNode(self.main_node)),
            (Afn.QUERY, 10): self._run_mode,
            (Afn.QUERY, 11): self._afn_index,
            (Afn.LINK_TEST, 1): confirm,
            (Afn.LINK_TEST, 2): confirm,
            (Afn.LINK_TEST, 3): confirm,
            (Afn.CONTROL, 1): self._set_main_node,
            (Afn.CONTROL, 2): self._event_reporting,
            (Afn.CONTROL, 3): self._broadcast,
            (Afn.CONTROL, 4): self._set_monitor_timeout,
            (Afn.ROUTE_QUERY, 1): lambda _f, _u: (Afn.ROUTE_QUERY, 1, units.NodeCount(len(self._archive), self.capacity)),
            (Afn.ROUTE_QUERY, 2): self._node_page,
            (Afn.ROUTE_QUERY, 4): self._route_status,
            (Afn.ROUTE_SET, 1): self._add_nodes,
            (Afn.ROUTE_SET, 2): self._delete_nodes,
            (Afn.ROUTE_SET, 3): confirm,
            (Afn.ROUTE_SET, 4): confirm,
            (Afn.ROUTE_SET, 5): confirm,
            (Afn.ROUTE_SET, 6): confirm,
            (Afn.ROUTE_CONTROL, 1): self._router_restart,
            (Afn.ROUTE_CONTROL, 2): self._router_pause,
            (Afn.ROUTE_CONTROL, 3): self._router_resume,
            (Afn.ROUTE_FORWARD, 1): self._monitor_read,
        }
        if self.concurrency > 1:
            table[(Afn.CONCURRENT, 1)] = self._concurrent_read
        return table

    # -- lifecycle -----------------------------------------------------------------------

    def _starting(self) -> None:
        self._decoder = link.StreamDecoder(max_length=MAX_FRAME)
        self.network.power_up()

    def __repr__(self) -> str:
        return f"<ModuleSim {self.path or '(not started)'} {len(self._archive)} nodes>"

    # -- control and state (thread-safe) ----------------------------------------------------

    def busy(self, n: int = 1) -> None:
        """Deny the next ``n`` commands with BUSY (9)."""
        with self._lock:
            self._faults.busy += n

    def deny_next(self, reason: int, n: int = 1) -> None:
        """Deny the next ``n`` commands with ``reason`` (a :class:`DenyReason` code)."""
        with self._lock:
            self._faults.deny.extend([int(reason)] * n)

    def bad_checksum_next(self, n: int = 1) -> None:
        """Send the next ``n`` frames (answers or reports) with a wrong CS."""
        with self._lock:
            self._faults.bad_checksum += n

    def noise(self, data: bytes | None) -> None:
        """Put ``data`` on the wire before every frame from now on (None: stop)."""
        with self._lock:
            self._faults.noise = None if data is None else bytes(data)

    @property
    def silent(self) -> bool:
        """Whether the module ignores everything it receives."""
        return self._faults.silent

    @silent.setter
    def silent(self, value: bool) -> None:
        with self._lock:
            self._faults.silent = bool(value)

    def drop(self, address: str, seconds: float) -> None:
        """Take a node out of the network for ``seconds`` (:meth:`CarrierNetwork.drop`)."""
        self.network.drop(address, seconds)

    @property
    def archive(self) -> dict[str, int]:
        """The route table: address -> protocol, in the order added (a copy)."""
        with self._lock:
            return dict(self._archive)

    @property
    def router_running(self) -> bool:
        """Whether router-led reading is under way (12 F1/F3 and not yet paused or done)."""
        with self._lock:
            return self._router is not None and self._router.running and not self._router.finished

    def stats(self) -> dict[str, Any]:
        """The module's counters, with the network's :class:`NetworkStats` under
        ``network`` and ``uart_busy``: the seconds the busier direction of the UART was
        sending, the floor a round's time cannot go below however many reads are in flight."""
        with self._lock:
            names = ("frames_in", "frames_out", "damaged_in", "bytes_in", "bytes_out", "denied", "reports_sent",
                     "reports_confirmed", "reports_denied", "report_repeats", "reports_abandoned")  # fmt: skip
            out: dict[str, Any] = {name: getattr(self, name) for name in names}
            out["archive"] = len(self._archive)
            out["uart_busy"] = timing.frame_time(max(self.bytes_in, self.bytes_out), self.settings)
            out["network"] = self.network.stats()
            return out

    def report_event(self, address: str, frame: bytes) -> bool:
        """Report a meter's event frame as 06 F5 (device type 1, protocol 2) from node
        ``address``, at once, repeated until confirmed; False when 05 F2 forbade events."""
        with self._lock:
            if not self.events_allowed:
                return False
            self._now = time.monotonic()
            view = self.network.node(address)
            info = self._node_info(view, self._next_seq())
            unit = units.MeterEvent(1, units.MeterProtocol.DLT645_2007, frame)
            self._report(units.unit_frame(Afn.REPORT, 5, unit, info=info, addresses=Addresses(address, self.main_node), prm=True, mode=self.mode))
            return True

    def report_nodes(self, addresses: Iterable[str] | None = None, protocol: int = units.MeterProtocol.DLT645_2007) -> int:
        """Report slave nodes found (06 F1), :data:`NODE_PAGE_MAX` a frame; by default
        every meter of the network not in the archive. Returns how many frames."""
        with self._lock:
            self._now = time.monotonic()
            found = list(addresses) if addresses is not None else [a for a in self.network.meter_addresses() if a not in self._archive]
            nodes = [units.SlaveNode(a, protocol, i + 1) for i, a in enumerate(found)]
            pages = [nodes[i : i + NODE_PAGE_MAX] for i in range(0, len(nodes), NODE_PAGE_MAX)]
            for page in pages:
                self._report(units.unit_frame(Afn.REPORT, 1, units.SlaveNodes(page), info=UpInfo(seq=self._next_seq()), prm=True, mode=self.mode))
            return len(pages)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued for the wire has been written; False on timeout."""
        return self._wait_idle(timeout, POLL_INTERVAL_S / 2)

    # -- serving thread ----------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        now = time.monotonic()
        self.bytes_in += len(data)
        self._arrived(len(data), now, self.settings)
        for item in self._decoder.feed(data):
            self._now = self._rx_end
            if isinstance(item, ChecksumError):
                self.damaged_in += 1
                log.debug("module sim %s: damaged frame dropped: %s", self.path, item)
                continue
            if isinstance(item, FrameError):
                continue
            self.frames_in += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("module sim %s: in  %s", self.path, link.encode(item).hex(" ").upper())
            self._guarded("handling", item, self._on_frame, item)

    # -- output ---------------------------------------------------------------------------

    def _send(self, frame: Frame, delay: float = 0.0) -> float:
        """Put ``frame`` on the wire ``delay`` s after the event being handled, with the
        faults switched on; returns when it has been sent."""
        raw = bytearray(link.encode(frame))
        if self._faults.bad_checksum > 0:
            self._faults.bad_checksum -= 1
            raw[-2] = (raw[-2] + 1) & 0xFF  # CS is the byte before the final 16h
        log.debug("module sim %s: out %s", self.path, raw.hex(" ").upper())
        at = self._now + delay
        if self._faults.noise:
            at = self._emit(self._faults.noise, at, self.settings, frame=False)
        return self._emit(bytes(raw), at, self.settings, frame=True)

    def _reply(self, request: Frame, afn: int, fn: int, unit: Any, *, info: UpInfo | None = None,
               addresses: Addresses | None = None, delay: float | None = None) -> None:  # fmt: skip
        """Answer ``request`` (uplink, PRM = 0, echoing its R6)."""
        info = info or UpInfo(seq=request.info.seq)
        frame = units.unit_frame(afn, fn, unit, info=info, addresses=addresses, prm=False, mode=self.mode)
        self._send(frame, self.response_delay if delay is None else delay)

    def _deny(self, request: Frame, reason: int, *, delay: float | None = None) -> None:
        self.denied += 1
        self._reply(request, Afn.CONFIRM, 2, units.Deny(reason), delay=delay)

    def _next_seq(self) -> int:
        return next(self._seq) & 0xFF

    def _node_info(self, view: NodeView | None, seq: int) -> UpInfo:
        """R of a frame from a slave node: its relay level, phase and signal quality."""
        if view is None:
            return UpInfo(seq=seq, module=True)
        return UpInfo(seq=seq, module=True, relay_level=view.depth, phase=view.phase,
                      command_quality=view.quality, reply_quality=view.quality)  # fmt: skip

    # -- reports (06) --------------------------------------------------------------------------

    def _report(self, frame: Frame, on_done: Callable[[bool], None] | None = None) -> None:
        """Send an active report and repeat it until the concentrator confirms it."""
        report = _Report(frame, on_done)
        self._reports[frame.info.seq] = report
        self.reports_sent += 1
        self._send_report(frame.info.seq, report)

    def _send_report(self, seq: int, report: _Report) -> None:
        if self._reports.get(seq) is not report:
            return
        if report.sends > REPORT_RESENDS:
            del self._reports[seq]
            self.reports_abandoned += 1
            log.debug("module sim %s: report R6=%d never confirmed", self.path, seq)
            if report.on_done is not None:
                report.on_done(False)
            return
        if report.sends:
            self.report_repeats += 1
        report.sends += 1
        sent = self._send(report.frame, self.response_delay)
        report.timer = self._after(sent - self._now + self.report_retry, lambda: self._send_report(seq, report))

    def _on_confirm(self, frame: Frame) -> None:
        """A downlink 00 F1 / F2: the concentrator's answer to one of our reports."""
        report = self._reports.pop(frame.info.seq, None)
        if report is None:
            log.debug("module sim %s: confirm R6=%d matches no report", self.path, frame.info.seq)
            return
        if report.timer is not None:
            report.timer.cancelled = True
        if frame.fn == 1:
            self.reports_confirmed += 1
        else:
            self.reports_denied += 1
        if report.on_done is not None:
            report.on_done(frame.fn == 1)

    # -- frames in -----------------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if self._faults.silent:
            return
        if frame.direction is not Direction.DOWN:
            log.debug("module sim %s: uplink frame ignored", self.path)
            return
        key = (frame.afn, frame.fn)
        if frame.afn == Afn.CONFIRM:
            self._on_confirm(frame)
            return
        if key == (Afn.ROUTE_READ, 1):
            self._on_read_answer(frame)
            return
        handler = self._handlers.get(key)
        if handler is None:
            self._deny(frame, DenyReason.NO_SUCH_FN)
            return
        if self._faults.busy > 0:
            self._faults.busy -= 1
            self._deny(frame, DenyReason.BUSY)
            return
        if self._faults.deny:
            self._deny(frame, self._faults.deny.popleft())
            return
        try:
            unit = units.decode_unit(frame)
        except FrameError as exc:
            log.debug("module sim %s: malformed AFN %02X F%d: %s", self.path, frame.afn, frame.fn, exc)
            self._deny(frame, DenyReason.FORMAT)
            return
        answer = handler(frame, unit)
        if answer is not None:
            afn, fn, value = answer
            if afn == Afn.CONFIRM and fn == 2:
                self._deny(frame, value.reason)
            else:
                self._reply(frame, afn, fn, value)

    @staticmethod
    def _confirm() -> Answer:
        return (Afn.CONFIRM, 1, units.Confirm(processed=True, idle_channels=CHANNELS, wait=0))

    @staticmethod
    def _refuse(reason: DenyReason) -> Answer:
        return (Afn.CONFIRM, 2, units.Deny(reason))

    def _just_confirm(self, _frame: Frame, _unit: Any) -> Answer:
        return self._confirm()

    # -- AFN 01: initialisation -------------------------------------------------------------------

    def _hardware_init(self, _frame: Frame, _unit: Any) -> Answer:
        """01 F1: the module restarts: reads in flight are forgotten, the router stops,
        the network forms again."""
        self._epoch += 1
        self._monitor = None
        self._concurrent.clear()
        self._stop_router()
        self.network.power_up()
        return self._confirm()

    def _parameter_init(self, _frame: Frame, _unit: Any) -> Answer:
        """01 F2: the parameter area, the route table with it, is cleared."""
        self._archive.clear()
        self._order.clear()
        self._stop_router()
        return self._confirm()

    def _data_init(self, _frame: Frame, _unit: Any) -> Answer:
        """01 F3: the data area (reports still waiting) is cleared."""
        for report in self._reports.values():
            if report.timer is not None:
                report.timer.cancelled = True
        self._reports.clear()
        return self._confirm()

    # -- AFN 03: queries -----------------------------------------------------------------------

    def _run_mode(self, _frame: Frame, _unit: Any) -> Answer:
        """03 F10 (§3.3): broadband, routing, both reading modes, this module's figures."""
        mode = units.RunMode(
            comm_type=2,
            routing=True,
            node_info_needed=False,
            read_mode=3,
            delay_support=0,
            failed_switch=1,
            broadcast_confirm=False,
            broadcast_channel=0,
            channels=len(CHANNELS),
            outage=0,
            monitor_timeout=self.monitor_timeout,
            broadcast_timeout=BROADCAST_TIMEOUT_S,
            max_frame=MAX_FRAME,
            max_file_packet=MAX_FILE_PACKET,
            upgrade_wait=UPGRADE_WAIT_S,
            main_node=self.main_node,
            max_nodes=self.capacity,
            nodes=len(self._archive),
            release_date=PROTOCOL_RELEASE,
            filing_date=PROTOCOL_RELEASE,
            vendor=self.vendor,
            rates=(HPLC_RATE,),
        )
        return (Afn.QUERY, 10, mode)

    def _afn_index(self, _frame: Frame, unit: units.AfnIndexQuery) -> Answer:
        """03 F11: the Fn of ``unit.afn`` this module supports."""
        supported = set(self._handlers) | _NOT_COMMANDS
        return (Afn.QUERY, 11, units.AfnIndex(unit.afn, [fn for afn, fn in supported if afn == unit.afn]))

    # -- AFN 05: control --------------------------------------------------------------------------

    def _set_main_node(self, _frame: Frame, unit: units.MainNode) -> Answer:
        self.main_node = unit.address
        return self._confirm()

    def _event_reporting(self, _frame: Frame, unit: units.EventReporting) -> Answer:
        self.events_allowed = unit.allowed
        return self._confirm()

    def _broadcast(self, _frame: Frame, unit: units.Carried) -> Answer:
        """05 F3: the frame goes to every meter in the network; nobody answers."""
        reached = self.network.broadcast(unit.frame)
        log.debug("module sim %s: broadcast reached %d meters", self.path, reached)
        return self._confirm()

    def _set_monitor_timeout(self, _frame: Frame, unit: units.MonitorTimeout) -> Answer:
        self.monitor_timeout = unit.seconds
        return self._confirm()

    # -- AFN 10 / 11: the route table -------------------------------------------------------------

    def _node_page(self, _frame: Frame, unit: units.NodeQuery) -> Answer:
        """10 F2: archive entries ``start``.. (from 1, in the order added), at most 32."""
        first = max(unit.start, 1) - 1
        page = self._order[first : first + min(unit.count, NODE_PAGE_MAX)]
        return (Afn.ROUTE_QUERY, 2, units.NodePage(len(self._order), [self._node_entry(a) for a in page]))

    def _node_entry(self, address: str) -> units.NodeInfo:
        view = self.network.node(address)
        protocol = self._archive[address] & 0x07
        if view is None or not view.joined:
            return units.NodeInfo(address, protocol=protocol)
        return units.NodeInfo(address, view.depth, view.quality, 1 << (view.phase - 1), protocol)

    def _route_status(self, _frame: Frame, _unit: Any) -> Answer:
        """10 F4: working while router-led reading runs; the round's read counts."""
        router = self._router
        working = self.router_running
        levels = [0, 0, 0]
        for view in self.network.nodes():
            levels[view.phase - 1] = max(levels[view.phase - 1], view.depth)
        step = STEP_READING if working else STEP_IDLE
        status = units.RouteStatus(
            learned=True,
            working=working,
            event_pending=any(r.frame.fn == 5 for r in self._reports.values()),
            total=len(self._archive),
            read=len(router.read) if router else 0,
            relay_read=router.relay_read if router else 0,
            switch=int(working),
            rate=HPLC_RATE,
            relay_levels=levels,
            steps=(step, step, step),
        )
        return (Afn.ROUTE_QUERY, 4, status)

    def _add_nodes(self, _frame: Frame, unit: units.AddNodes) -> Answer:
        """11 F1: all or nothing: a node already there denies 6, too many for the
        capacity denies 1."""
        seen: set[str] = set()
        for node in unit.nodes:
            if node.address in self._archive or node.address in seen:
                return self._refuse(DenyReason.DUPLICATE_METER)
            seen.add(node.address)
        if len(self._archive) + len(unit.nodes) > self.capacity:
            return self._refuse(DenyReason.INVALID_DATA)
        for node in unit.nodes:
            self._archive[node.address] = node.protocol
            self._order.append(node.address)
        return self._confirm()

    def _delete_nodes(self, _frame: Frame, unit: units.DeleteNodes) -> Answer:
        """11 F2: all or nothing: an address not in the archive denies 7."""
        if any(a not in self._archive for a in unit.addresses):
            return self._refuse(DenyReason.METER_NOT_FOUND)
        for address in unit.addresses:
            del self._archive[address]
        self._order = [a for a in self._order if a in self._archive]
        return self._confirm()

    # -- reads through the network (02 F1, 13 F1, F1 F1) ------------------------------------------

    def _start_read(self, request: Frame, node: str, payload: bytes, attached: Sequence[str],
                    finish: Callable[[Outcome], None], release: Callable[[], None]) -> None:  # fmt: skip
        """Send ``payload`` to ``node`` through the network; ``finish`` with the outcome
        when its latency has elapsed (capped at the monitor timeout), ``release`` the
        read's slot then. A node not in the network is denied 12 after a short try."""
        if not self.network.reachable(node):

            def not_in_network() -> None:
                release()
                self._deny(request, DenyReason.SLAVE_NOT_IN_NETWORK, delay=0.0)

            self._after(NOT_IN_NETWORK_DELAY_S, self._in_epoch(not_in_network))
            return
        outcome = self.network.exchange(node, payload, attached)
        if outcome.latency > self.monitor_timeout:
            outcome = attrs.evolve(outcome, latency=float(self.monitor_timeout), answer=None)

        def done() -> None:
            release()
            finish(outcome)

        self._after(outcome.latency, self._in_epoch(done))

    def _node_reply(self, request: Frame, node: str, afn: int, fn: int, unit: Any) -> None:
        """An answer from a slave node: address field source = node, destination = main node."""
        info = self._node_info(self.network.node(node), request.info.seq)
        self._reply(request, afn, fn, unit, info=info, addresses=Addresses(node, self.main_node), delay=0.0)

    @staticmethod
    def _destination(frame: Frame) -> str | None:
        return frame.addresses.destination if frame.addresses is not None else None

    def _monitor_read(self, frame: Frame, unit: units.Monitor) -> Answer | None:
        """13 F1: read one node, one read at a time; the answer carries the meter's frame
        (empty: it did not answer) and the uplink duration in seconds."""
        node = self._destination(frame)
        if node is None:
            return self._refuse(DenyReason.FORMAT)
        if node not in self._archive:
            return self._refuse(DenyReason.METER_NOT_FOUND)
        if self._monitor is not None:
            return self._refuse(DenyReason.BUSY)
        self._monitor = node

        def finish(outcome: Outcome) -> None:
            reply = units.MonitorReply(round(outcome.latency), unit.protocol, _fit(outcome.answer))
            self._node_reply(frame, node, Afn.ROUTE_FORWARD, 1, reply)

        self._start_read(frame, node, unit.frame, unit.attached, finish, self._release_monitor)
        return None

    def _release_monitor(self) -> None:
        self._monitor = None

    def _forward(self, frame: Frame, unit: units.Carried) -> Answer | None:
        """02 F1: forward a frame to the node the address field (else the frame itself)
        names, sharing 13 F1's slot; the answer is 02 F1 with what it said, or deny 11."""
        node = self._destination(frame)
        if node is None:
            try:
                node = dlt645.decode(unit.frame).address
            except FrameError:
                return self._refuse(DenyReason.FORMAT)
        if self._monitor is not None:
            return self._refuse(DenyReason.BUSY)
        if self.network.node(node) is None:
            return self._refuse(DenyReason.SLAVE_SILENT)
        self._monitor = node

        def finish(outcome: Outcome) -> None:
            answer = _fit(outcome.answer)
            if answer:
                self._reply(frame, Afn.FORWARD, 1, units.Carried(unit.protocol, answer), delay=0.0)
            else:
                self._deny(frame, DenyReason.SLAVE_SILENT, delay=0.0)

        self._start_read(frame, node, unit.frame, (), finish, self._release_monitor)
        return None

    def _concurrent_read(self, frame: Frame, unit: units.ConcurrentRead) -> Answer | None:
        """F1 F1 (2019): up to ``concurrency`` reads in flight, one per node; each
        answer comes when its node's latency elapses, so answers come out of order."""
        node = self._destination(frame)
        if node is None:
            return self._refuse(DenyReason.FORMAT)
        if node not in self._archive:
            return self._refuse(DenyReason.METER_NOT_FOUND)
        if node in self._concurrent:
            return self._refuse(DenyReason.METER_BUSY)
        if len(self._concurrent) >= self.concurrency:
            return self._refuse(DenyReason.CONCURRENCY_LIMIT)
        self._concurrent[node] = frame.info.seq

        def finish(outcome: Outcome) -> None:
            self._node_reply(frame, node, Afn.CONCURRENT, 1, units.ConcurrentRead(unit.protocol, outcome.answer or b""))

        self._start_read(frame, node, unit.frame, (), finish, lambda: self._concurrent.pop(node, None))
        return None

    # -- AFN 12 / 14: router-led reading ------------------------------------------------------------

    def _router_restart(self, _frame: Frame, _unit: Any) -> Answer:
        """12 F1: start a reading round from the archive's first node."""
        self._stop_router()
        if self.router_led:
            self._router = _Router(list(self._order))
            self._after(self.response_delay, self._in_epoch(self._router_step))
        return self._confirm()

    def _router_pause(self, _frame: Frame, _unit: Any) -> Answer:
        """12 F2: stop after the node in hand."""
        if self._router is not None:
            self._router.running = False
        return self._confirm()

    def _router_resume(self, _frame: Frame, _unit: Any) -> Answer:
        """12 F3: go on where the round stopped (or start one, if none ran)."""
        router = self._router
        if router is None or router.finished:
            return self._router_restart(_frame, _unit)
        if self.router_led:
            router.running = True
            if not router.busy:
                self._after(self.response_delay, self._in_epoch(self._router_step))
        return self._confirm()

    def _stop_router(self) -> None:
        router, self._router = self._router, None
        if router is not None and router.ask_timer is not None:
            router.ask_timer.cancelled = True

    def _router_step(self) -> None:
        """Ask the concentrator (14 F1) what to send to the next joined archive node; at
        the end of the archive report 06 F3 read done."""
        router = self._router
        if router is None or not router.running or router.busy or router.finished:
            return
        while router.index < len(router.order):
            address = router.order[router.index]
            if address in self._archive and self.network.reachable(address):
                break
            router.index += 1
        else:
            router.finished = True
            router.running = False
            self._report(units.unit_frame(Afn.REPORT, 3, units.TaskChange(units.TaskStatus.READ_DONE),
                                          info=UpInfo(seq=self._next_seq()), prm=True, mode=self.mode))  # fmt: skip
            return
        address = router.order[router.index]
        view = self.network.node(address)
        router.busy = True
        router.ask_seq = self._next_seq()
        info = self._node_info(view, router.ask_seq)
        request = units.ReadRequest(view.phase if view else 0, address, router.index + 1)
        self._send(units.unit_frame(Afn.ROUTE_READ, 1, request, info=info, addresses=Addresses(address, self.main_node),
                                    prm=True, mode=self.mode), self.response_delay)  # fmt: skip
        router.ask_timer = self._after(self.router_wait, self._in_epoch(self._ask_timed_out))

    def _ask_timed_out(self) -> None:
        router = self._router
        if router is None:
            return
        log.debug("module sim %s: no 14 F1 answer for node %d; next node", self.path, router.index + 1)
        router.ask_seq = None
        self._next_node(router)

    def _next_node(self, router: _Router) -> None:
        router.index += 1
        router.busy = False
        self._router_step()

    def _on_read_answer(self, frame: Frame) -> None:
        """A downlink 14 F1: the concentrator's answer to our request (matched by R6)."""
        router = self._router
        if router is None or router.ask_seq is None or frame.info.seq != router.ask_seq:
            log.debug("module sim %s: 14 F1 answer R6=%d matches no request", self.path, frame.info.seq)
            return
        try:
            answer = units.decode_unit(frame)
        except FrameError as exc:
            log.debug("module sim %s: malformed 14 F1 answer: %s", self.path, exc)
            return
        router.ask_seq = None
        if router.ask_timer is not None:
            router.ask_timer.cancelled = True
        address = router.order[router.index]
        if answer.flag != ReadFlag.MAY_READ or not answer.frame:
            self._next_node(router)
            return
        outcome = self.network.exchange(address, answer.frame, answer.attached)
        self._after(outcome.latency, self._in_epoch(lambda: self._read_data(router, address, outcome)))

    def _read_data(self, router: _Router, address: str, outcome: Outcome) -> None:
        """06 F2 with the node's answer; once confirmed (or given up), ask again for the
        same node: the concentrator may have more for it."""
        if outcome.answer:
            if address not in router.read and outcome.depth > 0:
                router.relay_read += 1
            router.read.add(address)
        unit = units.ReadData(router.index + 1, self._archive.get(address, units.MeterProtocol.DLT645_2007),
                              round(outcome.latency), _fit(outcome.answer))  # fmt: skip
        frame = units.unit_frame(Afn.REPORT, 2, unit, info=self._node_info(self.network.node(address), self._next_seq()),
                                 addresses=Addresses(address, self.main_node), prm=True, mode=self.mode)  # fmt: skip

        def reported(_confirmed: bool) -> None:
            if self._router is router:
                router.busy = False
                self._router_step()

        self._report(frame, reported)
