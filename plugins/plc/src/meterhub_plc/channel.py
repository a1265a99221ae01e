"""The ``plc`` channel: meters reached through a Q/GDW 1376.2 local communication module
(a narrowband or broadband power-line carrier "router" module on the concentrator's UART).

Opening the channel runs the standard's start-up flows (Q/GDW 1376.2 appendix A): read the
module's identity (03 F1, 03 F10) and main node address (03 F4, set with 05 F1 when the
site file names another), learn whether it reads several meters at once (03 F11 for AFN
F1), and synchronise its route table with the meters the site places on the channel: read
it (10 F1, 10 F2 pages), add what is missing (11 F1), delete what the site no longer has
(11 F2, with ``route_sync: full``), read it again to verify.

Meters are then read one of two ways (``reading:``):

* ``concentrator`` (default): the concentrator leads. The router is paused (12 F2) and
  each DL/T 645 request travels in a 13 F1 "monitor" to its node, one at a time; where
  the module offers concurrent reading (AFN F1 F1) up to ``concurrency`` requests travel
  at once. A module that says it is busy, that too many reads are under way or that the
  meter is being read (deny 9, 109, 111) is asked again after a wait; those are not the
  meter's failures. A node missing from the table (deny 7) is added and asked again.
* ``module``: the module leads (the router-led reading of appendix A). A meter's request
  waits until the module asks for that node's frame (14 F1); it goes out in the answer and
  the meter's reply comes back as an 06 F2 report, which is confirmed. When the module
  asks for a node nobody is reading, the runtime is told (:meth:`ChannelSink.wanted`) and
  reads that meter then.

Either way, whatever the module reports of its own accord (AFN 06: a meter's event, nodes
it found, the reading task's status) is confirmed and handed to the runtime as it
arrives, also in the middle of a transaction.

A meter behind a collector on the carrier network is reached through the collector's
node: the collector's address is the destination and the meter's address is the 13 F1's
attached node; the carried DL/T 645 frame names the meter. The collector's address is
what goes in the route table.

The answer time of a meter grows with its node's relay level, as the module last reported
it (10 F2, then every answer's R1); until the module has said, the deepest level allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
from meterhub import timing
from meterhub.api import ChannelSink, Exchange, LateAnswer, StreamDecoder, Unsolicited
from meterhub.channels.serial import SerialLink
from meterhub.errors import FrameError, LinkError, MeterTimeout, NotAttempted, TruncatedFrame, UnexpectedReply
from meterhub.model import ChannelConfig, Meter, SerialSettings
from meterhub.protocols import dlt645
from meterhub.protocols import gdw1376_2_data as units
from meterhub.protocols.gdw1376_2 import Addresses, Afn, Frame
from meterhub.protocols.gdw1376_2_data import DenyReason, ReadFlag

from .module import ModuleDenied, ModuleLink, deny_text
from .options import PlcOptions

log = logging.getLogger(__name__)

#: The protocol byte a 13 F1 / 11 F1 carries for each meter protocol (2019 text table 98).
PROTOCOL_CODES = {"dlt645-1997": 1, "dlt645": 2}
TRANSPARENT = 0

#: Per relay hop, each way, what a transaction may take, by the module's communication type
#: (03 F10 byte 1). Our estimates from vendors' figures for one hop's store-and-forward
#: (narrowband: a 645 read at the carrier's few hundred bit/s; HPLC: tens of ms, plus the
#: network's retransmissions); ``hop_time:`` overrides them.
HOP_TIME_S = {1: 2.0, 2: 0.4, 3: 1.0}
DEFAULT_HOP_TIME_S = 1.0

#: A collector's own RS485 side, when its ``relay_delay:`` gives none: a 645 request and
#: answer at 2400 Bd plus the meter's turnaround (up to 500 ms, §1.6).
COLLECTOR_DELAY_S = 0.8

#: The UART bytes of a 13 F1 around the meter's frame, both ways (head, R, addresses,
#: AFN, DT, unit header, CS, end): what the wrap adds to a transaction's wire time.
WRAP_BYTES = 2 * 34

#: Nodes per 11 F1 / 11 F2 frame and per 10 F2 page: well inside any module's frame size.
NODES_PER_FRAME = 16
NODES_PER_PAGE = 16

#: Busy answers: the wait before asking again grows from this to BUSY_WAIT_MAX_S.
BUSY_WAIT_S = 0.2
BUSY_WAIT_MAX_S = 2.0

#: Module-led reading: after a meter's request was answered, how long to wait for the next
#: one of that meter (the driver reads quantity after quantity) before saying it is done.
FOLLOW_UP_S = 0.3


@attrs.define
class NodeState:
    """What the channel knows of one node of the carrier network."""

    address: str
    protocol: int
    relay_level: int | None = None  #: as the module last reported it; None: not yet
    phase: int = 0
    quality: int = 0
    reads: int = 0  #: transactions that got the meter's answer
    failures: int = 0  #: transactions that did not (lost, silent, not in network)


@attrs.define
class _Queued:
    """A request waiting for the module to ask for its node (module-led reading)."""

    frame: bytes
    future: asyncio.Future[bytes]
    meter: str
    attached: tuple[str, ...] = ()  #: the meter's address when it is behind a collector node
    started: float = 0.0  #: when it went out in a 14 F1 answer


@attrs.define
class ChannelCounters:
    busy: int = 0  #: busy / concurrency denials answered with a wait and another try
    readded: int = 0  #: nodes the module had lost, added again before a read
    reports: int = 0  #: AFN 06 reports confirmed
    unknown_reports: int = 0  #: reports from nodes not on this channel
    asked: int = 0  #: 14 F1 requests answered
    late: int = 0  #: meter answers that came after their read was given up


class _Limiter:
    """At most ``limit`` reads in flight; a module that denies 109 (too many) lowers it."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.in_use = 0
        self._turn = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._turn:
            await self._turn.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1
        try:
            yield
        finally:
            async with self._turn:
                self.in_use -= 1
                self._turn.notify_all()

    def lower(self) -> None:
        """The module refused one more than those still in flight: keep to that many (at
        least one). Called after the refused read left its slot."""
        self.limit = max(1, min(self.limit, self.in_use))


class PlcChannel:
    """A :class:`meterhub.api.Channel` (and :class:`~meterhub.api.ChannelArchive`) through a
    Q/GDW 1376.2 module on a serial port."""

    def __init__(self, config: ChannelConfig, options: PlcOptions, *, link: Any = None) -> None:
        self.name = config.name
        self.config = config
        self.settings: SerialSettings = config.settings
        self.options = options
        self.link = link or SerialLink(config.name, config.port, config.settings, exclusive=options.exclusive)
        self.module = ModuleLink(self.link, self._from_module, command_timeout=options.command_timeout,
                                 on_late=self._late_answer)
        self.counters = ChannelCounters()
        self.identity: dict[str, Any] = {}
        self.concurrent = False  #: the module reads several meters at once (AFN F1 F1)
        self.nodes: dict[str, NodeState] = {}  #: carrier nodes (meters and collectors) by address
        self.in_flight = 1
        self._meters: list[Meter] = []
        self._by_address: dict[str, Meter] = {}
        self._sink: ChannelSink | None = None
        self._held: list[Unsolicited] = []  # reports before listen()
        self._limiter = _Limiter(1)
        self._sync_needed = True
        self._sync_lock = asyncio.Lock()
        self._hop_time = options.hop_time if options.hop_time is not None else DEFAULT_HOP_TIME_S
        self._late: dict[str, list[LateAnswer]] = {}
        self._node_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # module-led reading
        self._queues: dict[str, deque[_Queued]] = {}
        self._in_hand: _Queued | None = None
        self._router_running = False
        self._cycle_read: set[str] = set()  # nodes that had a request served this cycle
        self._recent: dict[str, float] = {}  # node -> when its last request was answered
        self._arrived = asyncio.Event()

    def __repr__(self) -> str:
        return f"PlcChannel({self.name!r}, {self.config.port!r})"

    # -- the site's meters -----------------------------------------------------------------------

    def place(self, meters: Sequence[Meter]) -> None:
        self._meters = list(meters)
        self._by_address = {m.address.upper(): m for m in self._meters}
        self._sync_needed = True
        if self.options.reading == "module":
            self.in_flight = max(1, len(self._meters))

    def wanted_nodes(self) -> dict[str, int]:
        """The route table the site asks for: each meter's node (its own address, or its
        nearest collector's) with the protocol byte it is added with."""
        wanted: dict[str, int] = {}
        for meter in self._meters:
            node, _ = self._node_of(meter)
            if meter.hops:
                hop = meter.hops[0]
                wanted.setdefault(node, PROTOCOL_CODES.get(hop.protocol or meter.protocol, TRANSPARENT))
            else:
                wanted.setdefault(node, PROTOCOL_CODES.get(meter.protocol, TRANSPARENT))
        return wanted

    @staticmethod
    def _node_of(meter: Meter) -> tuple[str, tuple[str, ...]]:
        """The carrier node that reaches ``meter`` and the attached addresses for 13 F1:
        the meter itself, or the collector next to the concentrator with the meter attached."""
        if meter.hops:
            return meter.hops[0].address.upper(), (meter.address.upper(),)
        return meter.address.upper(), ()

    # -- open / close ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.module.open()
        try:
            await self._start_up()
        except BaseException:
            await self.module.close()
            raise

    async def probe(self) -> dict[str, Any]:
        """Open the port and read the module's identity, changing nothing (``meterhub plc
        info``); the channel stays open for :meth:`read_table`, :meth:`close` ends it."""
        await self.module.open()
        try:
            await self.identify()
        except BaseException:
            await self.module.close()
            raise
        return self.identity

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._fail_queued(LinkError(f"channel {self.name}: closed"))
        await self.module.close()

    async def _start_up(self) -> None:
        opts = self.options
        if opts.init != "none":
            await self.identify()  # a module that answers at all before it is initialised
            await self._command(Afn.INIT, {"hardware": 1, "parameters": 2, "data": 3}[opts.init])
        await self.identify()
        if opts.main_node and opts.main_node != self.identity["main_node"]:
            await self._command(Afn.CONTROL, 1, units.MainNode(opts.main_node))
            self._note("plc_main_node_set", {"old": self.identity["main_node"], "new": opts.main_node})
            self.identity["main_node"] = opts.main_node
        if opts.reading == "concentrator":
            self.in_flight = min(opts.concurrency, 255) if self.concurrent else 1
            self._limiter = _Limiter(self.in_flight)
            await self.router("pause")  # we lead (appendix A: pause, then 13 F1 spot reads)
        await self.synchronise()
        self._note("plc_module", {**self.identity, "nodes": len(self.nodes), "in_flight": self.in_flight,
                                  "reading": opts.reading, "hop_time": self._hop_time})

    async def identify(self) -> None:
        """03 F1 vendor and version, 03 F10 running mode, 03 F4 main node, 03 F11 for AFN F1."""
        opts = self.options
        silent = (f"channel {self.name}: no Q/GDW 1376.2 module answers on {self.config.port} at {self.settings} "
                  f"(03 F1 unanswered for {opts.command_timeout:g} s)")
        try:
            vendor = units.decode_unit(await self._command(Afn.QUERY, 1, silent=silent))
        except ModuleDenied as exc:
            raise LinkError(f"channel {self.name}: {exc}") from None
        mode = await self._run_mode()
        main = units.decode_unit(await self._command(Afn.QUERY, 4)).address
        self.concurrent = await self._supports_concurrency()
        self.identity = {
            "vendor": vendor.vendor, "chip": vendor.chip, "version": vendor.version,
            "version_date": vendor.version_date.isoformat(), "main_node": main,
            "comm_type": mode.comm_type if mode else None, "read_mode": mode.read_mode if mode else None,
            "capacity": mode.max_nodes if mode else None, "concurrent": self.concurrent,
        }
        if opts.hop_time is None and mode is not None:
            self._hop_time = HOP_TIME_S.get(mode.comm_type, DEFAULT_HOP_TIME_S)

    async def _run_mode(self) -> units.RunMode | None:
        try:
            return units.decode_unit(await self._command(Afn.QUERY, 10))
        except (ModuleDenied, FrameError) as exc:
            log.warning("channel %s: the module's running mode (03 F10) is not known: %s", self.name, exc)
            return None

    async def _supports_concurrency(self) -> bool:
        if self.options.concurrency <= 1 or self.options.reading != "concentrator":
            return False
        try:
            index = units.decode_unit(await self._command(Afn.QUERY, 11, units.AfnIndexQuery(Afn.CONCURRENT)))
        except (ModuleDenied, FrameError, TimeoutError) as exc:
            log.info("channel %s: no concurrent reading (03 F11 for AFN F1: %s); one meter at a time", self.name, exc)
            return False
        return 1 in index.functions

    async def _command(self, afn: int, fn: int, unit: Any = None, *, silent: str = "", **kw: Any) -> Frame:
        """A command that must be confirmed or answered; busy answers are waited out.
        LinkError when the module does not answer (``silent`` says it, if given)."""
        wait = BUSY_WAIT_S
        for _ in range(self.options.busy_retries + 1):
            try:
                return await self.module.command(afn, fn, unit, **kw)
            except ModuleDenied as exc:
                if exc.reason != DenyReason.BUSY:
                    raise
                self.counters.busy += 1
                await asyncio.sleep(wait)
                wait = min(2 * wait, BUSY_WAIT_MAX_S)
            except TimeoutError:
                raise LinkError(silent or f"channel {self.name}: the module did not answer AFN {afn:02X} F{fn} within "
                                          f"{self.options.command_timeout:g} s") from None
        raise LinkError(f"channel {self.name}: the module stayed busy through {self.options.busy_retries + 1} tries of AFN {afn:02X} F{fn}")

    # -- the route table ---------------------------------------------------------------------------

    async def read_table(self) -> dict[str, units.NodeInfo]:
        """The module's route table: 10 F1 for the count, then 10 F2 pages."""
        count = units.decode_unit(await self._command(Afn.ROUTE_QUERY, 1)).count
        table: dict[str, units.NodeInfo] = {}
        start = 1
        while len(table) < count:
            page = units.decode_unit(await self._command(Afn.ROUTE_QUERY, 2, units.NodeQuery(start, NODES_PER_PAGE)))
            if not page.nodes:
                break
            for node in page.nodes:
                table[node.address] = node
            start += len(page.nodes)
        return table

    async def synchronise(self) -> dict[str, list[str]]:
        """Bring the module's route table in line with the site (see the module docstring);
        returns what was ``added``, ``deleted`` and what is still ``missing`` after."""
        async with self._sync_lock:
            wanted = self.wanted_nodes()
            result: dict[str, list[str]] = {"added": [], "deleted": [], "missing": [], "extra": []}
            if self.options.route_sync == "off":
                self._learn({}, wanted)
                self._sync_needed = False
                return result
            table = await self.read_table()
            missing = [a for a in wanted if a not in table]
            extra = [a for a in table if a not in wanted]
            if self.options.route_sync == "full" and extra:
                for batch in _batches(extra, NODES_PER_FRAME):
                    await self._command(Afn.ROUTE_SET, 2, units.DeleteNodes(batch))
                result["deleted"] = extra
            for batch in _batches(missing, NODES_PER_FRAME):
                await self._add(batch, wanted)
            result["added"] = missing
            if missing or (extra and self.options.route_sync == "full"):
                table = await self.read_table()  # verify
            result["missing"] = [a for a in wanted if a not in table]
            result["extra"] = [a for a in table if a not in wanted]
            self._learn(table, wanted)
            self._sync_needed = False
            self._note("plc_route_sync", {k: v for k, v in result.items()} | {"nodes": len(table)},
                       severity="warning" if result["missing"] else "info")
            if result["missing"]:
                log.warning("channel %s: the module's route table still lacks %d node(s) after adding them: %s",
                            self.name, len(result["missing"]), ", ".join(result["missing"][:10]))
            return result

    async def _add(self, batch: Sequence[str], wanted: Mapping[str, int]) -> None:
        try:
            await self._command(Afn.ROUTE_SET, 1, units.AddNodes([units.Node(a, wanted.get(a, 2)) for a in batch]))
        except ModuleDenied as exc:
            if exc.reason != DenyReason.DUPLICATE_METER or len(batch) == 1:
                if exc.reason == DenyReason.DUPLICATE_METER:
                    return  # someone added it meanwhile: it is there
                raise
            for address in batch:  # one of them is there already: add the others one by one
                await self._add([address], wanted)

    def _learn(self, table: Mapping[str, units.NodeInfo], wanted: Mapping[str, int]) -> None:
        nodes: dict[str, NodeState] = {}
        for address, protocol in wanted.items():
            state = self.nodes.get(address) or NodeState(address, protocol)
            info = table.get(address)
            if info is not None:
                state.relay_level, state.quality = info.relay_level, info.quality
                state.phase = info.phases.bit_length()
            nodes[address] = state
        self.nodes = nodes

    # -- Channel ----------------------------------------------------------------------------------

    def lane(self, meter: Meter) -> Hashable:
        """A collector's RS485 side is one line: its meters one at a time. Every other
        node is its own lane (the module decides how many travel at once)."""
        return self._node_of(meter)[0]

    def towards(self, meter: Meter | None) -> NodeConduit:
        return NodeConduit(self, meter)

    def answer_time(self, meter: Meter, base: float) -> float:
        node = self.nodes.get(self._node_of(meter)[0])
        level = node.relay_level if node is not None and node.relay_level is not None else self.options.max_depth
        collectors = sum(COLLECTOR_DELAY_S if hop.delay is None else hop.delay for hop in meter.hops)
        uart = timing.frame_time(WRAP_BYTES, self.settings)
        return base + uart + 2 * (level + 1) * self._hop_time + collectors

    def listen(self, sink: ChannelSink) -> None:
        self._sink = sink
        held, self._held = self._held, []
        for report in held:
            sink.unsolicited(report)

    def relay_level(self, meter: Meter) -> int | None:
        node = self.nodes.get(self._node_of(meter)[0])
        return None if node is None else node.relay_level

    def report(self) -> dict[str, Any]:
        """Reads per relay level and per collector node, as the channel saw them since it
        opened (``meterhub plc`` and the benchmark print it)."""
        by_depth: dict[str, dict[str, int]] = {}
        for node in self.nodes.values():
            key = "?" if node.relay_level is None else str(node.relay_level)
            row = by_depth.setdefault(key, {"nodes": 0, "reads": 0, "failures": 0})
            row["nodes"] += 1
            row["reads"] += node.reads
            row["failures"] += node.failures
        return {"identity": self.identity, "in_flight": self.in_flight, "concurrency": self._limiter.limit,
                "by_relay_level": dict(sorted(by_depth.items())), "counters": attrs.asdict(self.counters),
                "link": attrs.asdict(self.module.counters)}

    # -- reading a meter ---------------------------------------------------------------------------

    async def read_node(self, meter: Meter, request: bytes, timeout: float) -> tuple[bytes, float]:
        """Carry ``request`` to ``meter`` and return the meter's answer frame (bytes as the
        module delivered them) with the seconds it took. MeterTimeout when the network or
        the meter did not answer; NotAttempted when the module stayed busy."""
        if self._sync_needed:
            await self.synchronise()
        node, attached = self._node_of(meter)
        if self.options.reading == "module":
            return await self._read_module_led(node, meter, request, timeout)
        readded = False
        wait = BUSY_WAIT_S
        for _ in range(self.options.busy_retries + 1):
            async with self._limiter.slot():
                started = time.monotonic()
                try:
                    answer, level = await self._monitor(node, attached, meter, request, timeout)
                except ModuleDenied as exc:
                    reason = exc.reason
                else:
                    self._heard(node, level, bool(answer))
                    return answer, time.monotonic() - started
            if reason in (DenyReason.BUSY, DenyReason.CONCURRENCY_LIMIT, DenyReason.METER_BUSY):
                self.counters.busy += 1
                if reason == DenyReason.CONCURRENCY_LIMIT:
                    self._limiter.lower()
                    log.info("channel %s: the module reads at most %d meters at once", self.name, self._limiter.limit)
                await asyncio.sleep(wait)
                wait = min(2 * wait, BUSY_WAIT_MAX_S)
                continue
            if reason == DenyReason.METER_NOT_FOUND and not readded:
                readded = True
                self.counters.readded += 1
                log.warning("channel %s: node %s was not in the module's route table; adding it", self.name, node)
                await self._add([node], self.wanted_nodes())
                continue
            self._heard(node, None, False)
            if reason in (DenyReason.SLAVE_NOT_IN_NETWORK, DenyReason.SLAVE_SILENT, DenyReason.METER_SILENT,
                          DenyReason.TIMEOUT, DenyReason.METER_NOT_FOUND):
                raise MeterTimeout(f"meter {meter.address}: the carrier module says {deny_text(reason)} "
                                   f"(node {node}, relay level {self._level_text(node)})")
            raise FrameError(f"meter {meter.address}: the carrier module refused the read: {deny_text(reason)}")
        raise NotAttempted(f"the carrier module stayed busy through {self.options.busy_retries + 1} tries")

    async def _monitor(self, node: str, attached: tuple[str, ...], meter: Meter, request: bytes,
                       timeout: float) -> tuple[bytes, int | None]:
        main = self.identity.get("main_node") or "000000000000"
        protocol = PROTOCOL_CODES.get(meter.protocol, TRANSPARENT)
        if self.concurrent:
            unit: Any = units.ConcurrentRead(protocol, request)
            afn = Afn.CONCURRENT
        else:
            unit = units.Monitor(protocol, request, attached=attached)
            afn = Afn.ROUTE_FORWARD
        try:
            answer = await self.module.command(afn, 1, unit, addresses=Addresses(main, node), timeout=timeout)
        except TimeoutError:
            self._heard(node, None, False)
            raise MeterTimeout(f"meter {meter.address}: no answer through the carrier network within {timeout:.2f} s "
                               f"(node {node}, relay level {self._level_text(node)})") from None
        data = units.decode_unit(answer)
        if not isinstance(data, (units.MonitorReply, units.ConcurrentRead)):
            raise FrameError(f"the module answered a read of {meter.address} with {type(data).__name__}")
        return bytes(data.frame), answer.info.relay_level if answer.info.module else None

    def _heard(self, node: str, level: int | None, answered: bool) -> None:
        state = self.nodes.get(node)
        if state is None:
            return
        if level is not None and level <= self.options.max_depth:
            state.relay_level = level
        if answered:
            state.reads += 1
        else:
            state.failures += 1

    def _level_text(self, node: str) -> str:
        state = self.nodes.get(node)
        return "unknown" if state is None or state.relay_level is None else str(state.relay_level)

    # -- module-led reading -------------------------------------------------------------------------

    async def _read_module_led(self, node: str, meter: Meter, request: bytes, timeout: float) -> tuple[bytes, float]:
        queued = _Queued(request, asyncio.get_running_loop().create_future(), meter.key, self._node_of(meter)[1])
        self._queues.setdefault(node, deque()).append(queued)
        self._arrived.set()
        if not self._router_running:
            self._router_running = True
            self._cycle_read.clear()
            await self.router("restart")  # a new reading cycle
        try:
            answer = await asyncio.wait_for(asyncio.shield(queued.future), self.options.cycle_timeout)
        except TimeoutError:
            self._unqueue(node, queued)
            self._heard(node, None, False)
            raise MeterTimeout(f"meter {meter.address}: the module did not ask for node {node} within "
                               f"{self.options.cycle_timeout:g} s of router-led reading") from None
        finally:
            if not queued.future.done():
                queued.future.cancel()
        self._heard(node, None, bool(answer))
        return answer, time.monotonic() - queued.started

    def _unqueue(self, node: str, queued: _Queued) -> None:
        queue = self._queues.get(node)
        if queue and queued in queue:
            queue.remove(queued)

    async def _answer_ask(self, frame: Frame, ask: units.ReadRequest) -> None:
        """14 F1: the module asks what to send to a node."""
        node = ask.address
        self.counters.asked += 1
        main = self.identity.get("main_node") or "000000000000"
        addresses = Addresses(main, node)
        if self.options.reading != "module":
            # The concentrator leads: its reads go as 13 F1; a module reading on its own
            # (before the pause, or resumed by a technician) is told the node is done.
            await self.module.answer(frame, Afn.ROUTE_READ, 1, units.ReadAnswer(ReadFlag.DONE), addresses=addresses)
            return
        self._router_running = True  # it asks: its reading cycle is under way, whoever started it
        queued = await self._next_for(node)
        if queued is None:
            flag = ReadFlag.DONE if node in self._cycle_read or node in self.nodes else ReadFlag.FAILED
            if node not in self.nodes:
                self.counters.unknown_reports += 1
                log.warning("channel %s: the module asks for node %s, which no meter of the site uses", self.name, node)
            await self.module.answer(frame, Afn.ROUTE_READ, 1, units.ReadAnswer(flag), addresses=addresses)
            return
        self._in_hand = queued
        self._cycle_read.add(node)
        queued.started = time.monotonic()
        await self.module.answer(frame, Afn.ROUTE_READ, 1, units.ReadAnswer(ReadFlag.MAY_READ, queued.frame, attached=queued.attached),
                                 addresses=addresses)

    async def _next_for(self, node: str) -> _Queued | None:
        """The next request for ``node``: one queued, or one that comes shortly (the driver's
        next quantity), or — for a node nobody is reading this cycle — the runtime's read."""
        queue = self._queues.get(node)
        if queue:
            return queue.popleft()
        recently = time.monotonic() - self._recent.get(node, -1e9) < FOLLOW_UP_S
        if not recently and node not in self._cycle_read and self._sink is not None:
            meters = [m for m in self._meters if self._node_of(m)[0] == node]
            for meter in meters:
                self._sink.wanted(meter.address, meter.protocol)
            if not meters:
                return None
        deadline = time.monotonic() + (FOLLOW_UP_S if recently else self.options.command_timeout / 2)
        while time.monotonic() < deadline:
            self._arrived.clear()
            queue = self._queues.get(node)
            if queue:
                return queue.popleft()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
        return None

    def _read_data(self, frame: Frame, data: units.ReadData) -> None:
        """06 F2: the answer of the node in hand."""
        queued, self._in_hand = self._in_hand, None
        if queued is None or queued.future.done():
            self.counters.late += 1
            log.warning("channel %s: an 06 F2 answer came for no read in hand; dropped", self.name)
            return
        node = frame.addresses.source if frame.addresses is not None else ""
        if node:
            self._recent[node] = time.monotonic()
        queued.future.set_result(bytes(data.frame))

    def _fail_queued(self, error: Exception) -> None:
        for queue in self._queues.values():
            while queue:
                queued = queue.popleft()
                if not queued.future.done():
                    queued.future.set_exception(error)
        self._queues.clear()

    def _cycle_done(self) -> None:
        """06 F3: the module finished its reading cycle. Requests it never asked for fail now
        (their nodes are out of the network); requests still coming start a new cycle."""
        self._router_running = False
        for node, queue in list(self._queues.items()):
            while queue:
                queued = queue.popleft()
                if not queued.future.done():
                    queued.future.set_exception(MeterTimeout(
                        f"the module's reading cycle ended without asking for node {node}"))

    # -- what the module says of its own accord -------------------------------------------------------

    def _from_module(self, frame: Frame) -> None:
        if not frame.prm:  # an answer to no command: counted by the link, nothing to do
            return
        task = asyncio.get_running_loop().create_task(self._handle_report(frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle_report(self, frame: Frame) -> None:
        try:
            data = units.decode_unit(frame)
        except FrameError as exc:
            log.warning("channel %s: AFN %02X F%d from the module not understood: %s", self.name, frame.afn, frame.fn, exc)
            if frame.afn == Afn.REPORT:
                await self._confirm(frame)
            return
        try:
            if frame.afn == Afn.ROUTE_READ and frame.fn == 1:
                await self._answer_ask(frame, data)
            elif frame.afn == Afn.ROUTE_READ and frame.fn == 2:
                await self.module.answer(frame, Afn.ROUTE_READ, 2, units.ConcentratorTime(datetime.now().replace(microsecond=0)))
            elif frame.afn == Afn.ROUTE_READ and frame.fn == 3:
                # DL/T 645 reads do not depend on the delay: the frame goes as it is
                await self.module.answer(frame, Afn.ROUTE_READ, 3, units.CorrectedFrame(data.frame))
            elif frame.afn == Afn.REPORT:
                await self._confirm(frame)
                self._report(frame, data)
            else:
                log.warning("channel %s: the module sent AFN %02X F%d unasked; ignored", self.name, frame.afn, frame.fn)
        except LinkError as exc:
            log.warning("channel %s: could not answer the module: %s", self.name, exc)

    async def _confirm(self, frame: Frame) -> None:
        self.counters.reports += 1
        addresses = None
        if frame.addresses is not None:  # as captured: the confirm names the main node and the reporting node
            addresses = Addresses(frame.addresses.destination, frame.addresses.source)
        await self.module.answer(frame, Afn.CONFIRM, 1, units.Confirm(True), addresses=addresses)

    def _report(self, frame: Frame, data: Any) -> None:
        source = frame.addresses.source if frame.addresses is not None else ""
        if frame.fn == 2:
            self._read_data(frame, data)
        elif frame.fn == 3:
            status = data.status.name.lower() if hasattr(data.status, "name") else int(data.status)
            self._note("plc_task_status", {"status": status})
            if data.status == units.TaskStatus.READ_DONE:
                self._cycle_done()
        elif frame.fn == 5:
            self._meter_event(source, data)
        elif frame.fn in (1, 4):
            found = [n.address for n in data.nodes]
            unknown = [a for a in found if a not in self.nodes]
            self.counters.unknown_reports += bool(unknown)
            self._note("plc_nodes_found", {"nodes": found, "not_in_site": unknown})

    def _meter_event(self, node: str, event: units.MeterEvent) -> None:
        address = node
        try:
            carried = dlt645.decode(_strip_wake_up(event.frame))
            address = carried.address
        except FrameError as exc:
            log.warning("channel %s: node %s reported an event whose frame is not DL/T 645: %s", self.name, node, exc)
        meter = self._by_address.get(address.upper())
        if meter is None:
            self.counters.unknown_reports += 1
            log.warning("channel %s: an event report from %s, which is not a meter of this channel", self.name, address)
        self._deliver(Unsolicited(
            "meter_event", address=address, protocol=meter.protocol if meter else "dlt645",
            data={"node": node, "device_type": event.device_type, "protocol_code": event.protocol,
                  "frame": event.frame.hex(" "), "known": meter is not None},
            frame=bytes(event.frame), severity="warning",
        ))

    def _late_answer(self, frame: Frame, after: float, timeout: float) -> None:
        """A read's answer after the read was given up: reported by :meth:`take_late` as a
        late answer of that meter (the runtime then says it needs a longer timeout)."""
        if frame.afn not in (Afn.ROUTE_FORWARD, Afn.CONCURRENT) or frame.addresses is None:
            return
        self.counters.late += 1
        node = frame.addresses.source
        try:
            data = units.decode_unit(frame)
        except FrameError:
            return
        if not data.frame:
            return
        meter = self._by_address.get(node) or next((m for m in self._meters if self._node_of(m)[0] == node), None)
        if meter is None:
            return
        self._late.setdefault(meter.key, []).append(
            LateAnswer(request=b"", frame=data.frame, began=after, after=after, timeout=timeout, target=meter.key))

    def take_late(self, meter: Meter | None) -> list[LateAnswer]:
        if meter is None:
            return []
        return self._late.pop(meter.key, [])

    def _note(self, kind: str, data: Mapping[str, Any], severity: str = "info") -> None:
        self._deliver(Unsolicited(kind, data=dict(data), severity=severity))

    def _deliver(self, report: Unsolicited) -> None:
        if self._sink is None:
            self._held.append(report)
        else:
            self._sink.unsolicited(report)

    def lock_for(self, meter: Meter | None) -> asyncio.Lock:
        key = "" if meter is None else self._node_of(meter)[0]
        return self._node_locks.setdefault(key, asyncio.Lock())

    async def router(self, action: str) -> None:
        """Restart (12 F1), pause (12 F2) or resume (12 F3) the module's router."""
        fn = {"restart": 1, "pause": 2, "resume": 3}[action]
        await self._command(Afn.ROUTE_CONTROL, fn)
        self._router_running = action != "pause"

    async def broadcast(self, request: bytes, protocol: int) -> None:
        """05 F3: the module sends the frame to every node (a DL/T 645 broadcast time set)."""
        await self._command(Afn.CONTROL, 3, units.Carried(protocol, request))


class NodeConduit:
    """The channel as one meter's driver sees it (:class:`meterhub.api.Conduit`)."""

    def __init__(self, channel: PlcChannel, meter: Meter | None) -> None:
        self.channel = channel
        self.meter = meter
        self.name = channel.name
        self.settings = channel.settings

    async def transact(
        self,
        request: bytes,
        decoder: StreamDecoder,
        *,
        timeout: float,
        accept: Callable[[Any], bool] = lambda _frame: True,
        settings: SerialSettings | None = None,
        guard: bool = True,
        gap: float | None = None,
        wake_up: int = 0,
        answer_within: float | None = None,
    ) -> Exchange:
        """Carry the request through the module (the UART's format is the channel's:
        ``settings``, ``gap`` and ``wake_up`` concern a meter's own line and are the
        collector's or the meter's module's business; the module delivers whole answers, so
        ``answer_within`` does not shorten the wait: ``timeout`` is what the node is given)."""
        meter = self.meter
        if meter is None:
            raise NotAttempted("a carrier module reads configured meters only: scanning goes through its route "
                               "table (meterhub plc nodes)")
        answer, latency = await self.channel.read_node(meter, request, timeout)
        if not answer:
            raise MeterTimeout(f"meter {meter.address} did not answer through the carrier network "
                               f"(relay level {self.channel._level_text(self.channel._node_of(meter)[0])})")
        rejected: list[FrameError] = []
        other: Any = None
        for found in decoder.feed(answer):
            if isinstance(found, FrameError):
                rejected.append(found)
            elif accept(found):
                return Exchange(found, latency, decoder.skipped, tuple(rejected))
            else:
                other = found
        if other is not None:
            raise UnexpectedReply(f"meter {meter.address}: the carrier module delivered an answer to another request")
        if rejected:
            raise rejected[-1]
        raise TruncatedFrame(f"meter {meter.address}: the carrier module delivered {len(answer)} byte(s), not a whole frame")

    async def send(self, request: bytes, *, settings: SerialSettings | None = None, gap: float | None = None,
                   wake_up: int = 0) -> None:
        """A frame that gets no answer: a broadcast goes to every node (05 F3)."""
        protocol = PROTOCOL_CODES.get(self.meter.protocol, TRANSPARENT) if self.meter else PROTOCOL_CODES["dlt645"]
        await self.channel.broadcast(request, protocol)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        async with self.channel.lock_for(self.meter):
            yield

    async def settle(self) -> list[LateAnswer]:
        return self.channel.take_late(self.meter)

    def relays(self) -> int | None:
        """:class:`meterhub.api.RouteReporter`: the node's relay level as the module last said."""
        return None if self.meter is None else self.channel.relay_level(self.meter)


def _batches(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _strip_wake_up(frame: bytes) -> bytes:
    return bytes(frame).lstrip(b"\xfe")
