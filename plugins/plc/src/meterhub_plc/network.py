"""A simulated power-line carrier network: the slave nodes behind a local communication
module (Q/GDW 1376.2), as a pure model with no I/O.

The network holds the physical nodes: meters with their own carrier module and
collectors (采集器) that relay, on their RS-485 side, to the meters wired behind them.
Every meter is a :class:`~meterhub.protocols.dlt645_sim.SimulatedMeter`, so what comes
back through the network is the meter's real DL/T 645 answer. A node sits at a relay
depth 0..7 (0: the main node hears it directly; depth d: d relays in between, d + 1 hops
each way), on a phase 1-3, and has a listen quality 1..15.

:meth:`CarrierNetwork.exchange` carries one frame to a node and back and says how long
that took and whether it came back. Everything is drawn from random streams seeded per
node (``seed`` and the node's address), so a node's n-th transaction gives the same
result whatever order concurrent reads of other nodes happen in. Time (network formation,
drop-outs) comes from the injected ``clock``.

Simplifications, as a model of HPLC rather than of its physical layer:

* a hop takes ``hop_latency`` × uniform(1 - jitter, 1 + jitter) and is lost with
  probability ``loss``, independently of the others; routes never change;
* a lost transaction takes as long as a good one (the module gives up when the answer
  would have come), and a loss on the way down means the meter never saw the frame,
  a loss on the way up that it acted on it but the answer was lost;
* a meter's own carrier module hands the frame to the meter with no UART time of its
  own, the meter only adds its turnaround; a collector adds the RS-485 time of the
  request and the answer (2400 8E1 by default) and the meter's turnaround;
* a node that rejoins after a drop-out is back at once, on its old route.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from meterhub import timing
from meterhub.errors import FrameError
from meterhub.model import SerialSettings
from meterhub.protocols import dlt645
from meterhub.protocols.dlt645_sim import DEFAULT_TURNAROUND, SimulatedMeter, make_meters

logger = logging.getLogger(__name__)

#: Relay depths an HPLC network is modelled with (0 = heard directly by the main node).
MAX_DEPTH = 7

#: A node at depth d joins ``formation_time × (d + 1) / FORMATION_LEVELS × uniform(0.5, 1)``
#: after power-up: the deepest level needs about the whole formation time.
FORMATION_LEVELS = MAX_DEPTH + 1

#: How a built network spreads its nodes over depths 0..7: most within two relays, a thin
#: tail to the deepest level (a typical district of a few hundred to a few thousand meters).
DEPTH_SHAPE = (0.30, 0.28, 0.18, 0.10, 0.06, 0.04, 0.02, 0.02)

#: The RS-485 side of a collector: DL/T 645's 2400 8E1.
COLLECTOR_RS485 = SerialSettings(baudrate=2400, bytesize=8, parity="E", stopbits=1)

#: How long a meter's carrier module or a collector waits for a meter that does not
#: answer before it gives up: DL/T 645-2007's longest response delay (500 ms).
METER_WAIT_S = dlt645.MAX_RESPONSE_DELAY

#: Default seconds a random drop-out lasts, drawn uniformly from this range.
DEFAULT_DROPOUT_DURATION = (30.0, 300.0)

#: Where :meth:`CarrierNetwork.build` numbers its collectors from.
DEFAULT_COLLECTOR_ADDRESS = "880000000001"

SECONDS_PER_HOUR = 3600.0


class NodeKind(enum.Enum):
    """What a carrier node is."""

    METER = "meter"  #: a meter with its own carrier module
    COLLECTOR = "collector"  #: a collector relaying to meters on its RS-485 side


class Reason(enum.Enum):
    """Why a transaction ended as it did (``Outcome.reason`` holds the value)."""

    OK = "ok"  #: the meter answered and the answer came back
    LOST = "lost"  #: a hop lost the frame on the way down or up
    SILENT = "silent"  #: the frame arrived, the meter did not answer
    NOT_IN_NETWORK = "not in network"  #: the node has not joined yet, or dropped out
    NO_SUCH_NODE = "no such node"  #: no node and no meter behind a collector has this address
    NO_SUCH_METER = "no such meter"  #: the collector has no meter the frame is addressed to
    BAD_FRAME = "bad frame"  #: the carried frame is no DL/T 645 frame


@attrs.frozen
class Outcome:
    """One transaction through the network: how long it took (s, request sent to answer
    back at the main node), the meter's encoded answer (None: lost, node out, meter
    silent), the carrier node's depth and why (a :class:`Reason` value)."""

    latency: float
    answer: bytes | None
    depth: int
    reason: str


@attrs.frozen
class NodeView:
    """What :meth:`CarrierNetwork.node` tells of an address: ``depth`` (relay level),
    ``phase`` (1-3), ``quality`` (listen quality 1..15), ``kind``, whether it has
    ``joined`` the network now, and ``via``: for a meter behind a collector, the
    collector (the carrier node that reaches it; depth, phase, quality and joined are the
    collector's); ``meters``: for a collector, the addresses behind it."""

    address: str
    kind: NodeKind
    depth: int
    phase: int
    quality: int
    joined: bool
    via: str | None = None
    meters: tuple[str, ...] = ()


@attrs.frozen
class NetworkStats:
    """Counts over every :meth:`CarrierNetwork.exchange` so far. ``by_depth`` counts
    transactions per carrier node depth, ``latency_by_depth`` sums their latencies."""

    transactions: int
    answered: int
    lost: int
    silent: int
    unreachable: int
    total_latency: float
    by_depth: Mapping[int, int]
    latency_by_depth: Mapping[int, float]

    def ideal_round_time(self, concurrency: int = 1) -> float:
        """The shortest time these transactions could take with ``concurrency`` of them
        in flight at once and no other cost: a benchmark's yardstick."""
        return self.total_latency / max(1, concurrency)


@attrs.define(slots=True)
class _Node:
    """A carrier node's state (mutable; guarded by the network's lock)."""

    address: str
    kind: NodeKind
    depth: int
    phase: int
    quality: int
    rng: random.Random  #: its transactions' stream
    meter: SimulatedMeter | None = None  #: a meter node's meter
    behind: dict[str, SimulatedMeter] = attrs.field(factory=dict)  #: a collector's meters
    join_at: float = 0.0
    out_until: float = -math.inf
    next_dropout: float | None = None
    dropout_rng: random.Random | None = None


def _check_depth(depth: int) -> int:
    if not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"a carrier node's relay depth is 0..{MAX_DEPTH}, got {depth!r}")
    return depth


def _check_address(address: str) -> str:
    text = str(address).strip().upper()
    if len(text) != 12 or any(c not in "0123456789ABCDEF" for c in text):
        raise ValueError(f"a carrier node address is 12 hex digits, got {address!r}")
    return text


def spread_depths(count: int, max_depth: int, rng: random.Random) -> list[int]:
    """Depths for ``count`` nodes in the shape of :data:`DEPTH_SHAPE` cut at
    ``max_depth`` (largest-remainder quotas, at least one node at ``max_depth`` when
    there are enough nodes), shuffled by ``rng``."""
    _check_depth(max_depth)
    shape = DEPTH_SHAPE[: max_depth + 1]
    total = sum(shape)
    exact = [count * w / total for w in shape]
    quotas = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(shape)), key=lambda d: exact[d] - quotas[d], reverse=True)
    for d in by_remainder[: count - sum(quotas)]:
        quotas[d] += 1
    if count > max_depth and quotas[max_depth] == 0:  # the tail reaches the deepest level
        quotas[max_depth] = 1
        quotas[quotas.index(max(quotas))] -= 1
    depths = [d for d, n in enumerate(quotas) for _ in range(n)]
    rng.shuffle(depths)
    return depths


class CarrierNetwork:
    """The slave nodes of one carrier network, and how frames travel to them.

    ``hop_latency`` (s) and ``jitter`` (a fraction) set each hop's time, ``loss`` the
    probability a hop loses the frame; ``formation_time`` (s) how long the network takes
    to form after :meth:`power_up`; ``dropout_rate`` random drop-outs per node per hour,
    each lasting uniform(``dropout_duration``) seconds; ``turnaround`` (s, a value or a
    range) a meter's answer delay; ``rs485`` a collector's RS-485 format. ``clock``
    (monotonic seconds) is the time formation and drop-outs are measured in.

    Thread-safe: a module simulator's serving thread calls :meth:`exchange` while a test
    calls :meth:`drop`.
    """

    def __init__(
        self,
        seed: int | str = 0,
        hop_latency: float = 0.05,
        jitter: float = 0.5,
        loss: float = 0.0,
        formation_time: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        dropout_rate: float = 0.0,
        dropout_duration: tuple[float, float] = DEFAULT_DROPOUT_DURATION,
        turnaround: float | tuple[float, float] = DEFAULT_TURNAROUND,
        rs485: SerialSettings = COLLECTOR_RS485,
    ) -> None:
        if hop_latency < 0 or not 0 <= jitter <= 1 or not 0 <= loss <= 1 or formation_time < 0 or dropout_rate < 0:
            raise ValueError(
                f"need hop_latency >= 0, 0 <= jitter <= 1, 0 <= loss <= 1, formation_time >= 0, dropout_rate >= 0; "
                f"got {hop_latency}, {jitter}, {loss}, {formation_time}, {dropout_rate}"
            )
        self.seed = seed
        self.hop_latency = hop_latency
        self.jitter = jitter
        self.loss = loss
        self.formation_time = formation_time
        self.clock = clock
        self.dropout_rate = dropout_rate
        self.dropout_duration = dropout_duration
        self.turnaround = turnaround
        self.rs485 = rs485
        self._lock = threading.RLock()
        self._nodes: dict[str, _Node] = {}  # carrier nodes, in the order added
        self._behind: dict[str, str] = {}  # meter behind a collector -> the collector
        self._power_ups = 0
        self._powered_at = clock()
        self._stats = _Counters()

    # -- building ------------------------------------------------------------------------

    def add_meter(self, meter: SimulatedMeter, depth: int) -> None:
        """A meter with its own carrier module at relay ``depth`` (0..7)."""
        node = self._new_node(meter.address, NodeKind.METER, depth)
        node.meter = meter
        self._insert(node, ())

    def add_collector(self, address: str, depth: int, meters: Sequence[SimulatedMeter]) -> None:
        """A collector node with its own ``address`` at relay ``depth``, relaying on its
        RS-485 side to ``meters``."""
        node = self._new_node(address, NodeKind.COLLECTOR, depth)
        node.behind = {m.address: m for m in meters}
        self._insert(node, node.behind)

    def _new_node(self, address: str, kind: NodeKind, depth: int) -> _Node:
        address = _check_address(address)
        rng = random.Random(f"carrier-node:{self.seed}:{address}")
        return _Node(address, kind, _check_depth(depth), phase=rng.randint(1, 3), quality=rng.randint(1, 15), rng=rng)

    def _insert(self, node: _Node, meters: Iterable[str]) -> None:
        with self._lock:
            taken = [a for a in (node.address, *meters) if a in self._nodes or a in self._behind]
            if taken:
                raise ValueError(f"address {taken[0]} is already in the carrier network")
            self._form(node)
            self._nodes[node.address] = node
            for meter in meters:
                self._behind[meter] = node.address

    @classmethod
    def build(
        cls,
        meters: int = 0,
        collectors: int = 0,
        meters_per_collector: int = 32,
        max_depth: int = MAX_DEPTH,
        seed: int | str = 0,
        first_address: str = "000000000001",
        *,
        first_collector: str = DEFAULT_COLLECTOR_ADDRESS,
        meter_clock: Callable[[], datetime] = datetime.now,
        meter_options: Mapping[str, Any] | None = None,
        **network: Any,
    ) -> CarrierNetwork:
        """A network of ``meters`` carrier meters and ``collectors`` collectors with
        ``meters_per_collector`` meters each, spread over depths 0..``max_depth`` as
        :func:`spread_depths` does, all deterministic in ``seed``.

        Meters are numbered from ``first_address`` (the carrier meters first, then the
        collectors' meters, collector by collector), collectors from ``first_collector``.
        ``meter_clock`` and ``meter_options`` go to :func:`make_meters`; the other
        keywords to the constructor.
        """
        net = cls(seed=seed, **network)
        total = meters + collectors * meters_per_collector
        sims = make_meters(total, first_address=first_address, seed=seed, clock=meter_clock, **dict(meter_options or {}))
        depths = spread_depths(meters + collectors, max_depth, random.Random(f"carrier-build:{seed}"))
        for meter, depth in zip(sims[:meters], depths, strict=False):
            net.add_meter(meter, depth)
        base = int(_check_address(first_collector), 16)
        for k in range(collectors):
            group = sims[meters + k * meters_per_collector : meters + (k + 1) * meters_per_collector]
            net.add_collector(f"{base + k:012X}", depths[meters + k], group)
        return net

    # -- formation and drop-outs --------------------------------------------------------------

    def power_up(self) -> None:
        """The main node (re)starts: the network forms again, each node joining
        ``formation_time × (depth + 1) / 8 × uniform(0.5, 1)`` seconds from now."""
        with self._lock:
            self._power_ups += 1
            self._powered_at = self.clock()
            for node in self._nodes.values():
                self._form(node)

    def _form(self, node: _Node) -> None:
        rng = random.Random(f"carrier-join:{self.seed}:{node.address}:{self._power_ups}")
        delay = self.formation_time * (node.depth + 1) / FORMATION_LEVELS * rng.uniform(0.5, 1.0)
        node.join_at = self._powered_at + delay
        node.out_until = -math.inf
        node.next_dropout = None

    def drop(self, address: str, seconds: float) -> None:
        """Take a node out of the network for ``seconds`` (it then rejoins). A meter
        behind a collector takes its collector out."""
        with self._lock:
            node = self._carrier(address)
            if node is None:
                raise KeyError(f"no carrier node {address!r} in the network")
            node.out_until = max(node.out_until, self.clock() + seconds)

    def _in_network(self, node: _Node, now: float) -> bool:
        """Whether ``node`` is joined at ``now``, after the random drop-outs due by then."""
        if now < node.join_at:
            return False
        if self.dropout_rate > 0:
            self._random_dropouts(node, now)
        return now >= node.out_until

    def _random_dropouts(self, node: _Node, now: float) -> None:
        if node.dropout_rng is None:
            node.dropout_rng = random.Random(f"carrier-dropout:{self.seed}:{node.address}")
        rng = node.dropout_rng
        rate = self.dropout_rate / SECONDS_PER_HOUR
        if node.next_dropout is None:
            node.next_dropout = max(node.join_at, node.out_until) + rng.expovariate(rate)
        while node.next_dropout <= now:
            node.out_until = max(node.out_until, node.next_dropout + rng.uniform(*self.dropout_duration))
            node.next_dropout = node.out_until + rng.expovariate(rate)

    # -- queries ---------------------------------------------------------------------------

    def _carrier(self, address: str) -> _Node | None:
        """The carrier node that reaches ``address`` (itself, or its collector)."""
        address = str(address).upper()
        node = self._nodes.get(address)
        if node is None and address in self._behind:
            node = self._nodes[self._behind[address]]
        return node

    def node(self, address: str) -> NodeView | None:
        """What the network knows of ``address`` (a carrier node or a meter behind a
        collector), or None when nothing has that address."""
        address = str(address).upper()
        with self._lock:
            node = self._carrier(address)
            if node is None:
                return None
            joined = self._in_network(node, self.clock())
            if node.address != address:
                return NodeView(address, NodeKind.METER, node.depth, node.phase, node.quality, joined, via=node.address)
            return NodeView(node.address, node.kind, node.depth, node.phase, node.quality, joined, meters=tuple(node.behind))

    def nodes(self) -> list[NodeView]:
        """Every carrier node (meters and collectors, not the meters behind collectors),
        in the order added."""
        with self._lock:
            return [view for view in (self.node(a) for a in self._nodes) if view is not None]

    def reachable(self, address: str) -> bool:
        """Whether a frame to ``address`` can reach its carrier node now (it exists and
        has joined)."""
        with self._lock:
            node = self._carrier(address)
            return node is not None and self._in_network(node, self.clock())

    def meter(self, address: str) -> SimulatedMeter | None:
        """The simulated meter with this address (a carrier meter or one behind a collector)."""
        with self._lock:
            node = self._carrier(address)
            if node is None:
                return None
            return node.meter if node.kind is NodeKind.METER else node.behind.get(str(address).upper())

    def meter_addresses(self) -> list[str]:
        """Every meter's address: carrier meters and meters behind collectors, in the order added."""
        with self._lock:
            out: list[str] = []
            for node in self._nodes.values():
                out.extend([node.address] if node.kind is NodeKind.METER else node.behind)
            return out

    def __len__(self) -> int:
        return len(self._nodes)

    # -- traffic ---------------------------------------------------------------------------

    def exchange(self, destination: str, frame: bytes, attached: Sequence[str] = ()) -> Outcome:
        """Carry ``frame`` (an encoded DL/T 645 frame) to ``destination`` and back.

        ``destination`` is a carrier node: a meter, or a collector; for a collector the
        meter is the first of ``attached`` behind it, else the one the frame itself is
        addressed to. A meter behind a collector may also be named directly (the module
        knows which collector reaches it). Draws the hops' times and losses from the
        node's stream and asks the meter's ``handle`` for the answer.
        """
        with self._lock:
            node = self._carrier(destination)
            if node is None:
                return self._record(Outcome(0.0, None, 0, Reason.NO_SUCH_NODE.value))
            if not self._in_network(node, self.clock()):
                return self._record(Outcome(0.0, None, node.depth, Reason.NOT_IN_NETWORK.value))
            hops = [self._hop(node.rng) for _ in range(2 * (node.depth + 1))]
            turnaround = self._turnaround(node.rng)
            down, up = hops[: node.depth + 1], hops[node.depth + 1 :]
            latency = sum(t for t, _ in hops) + turnaround
            try:
                request = dlt645.decode(bytes(frame))
            except FrameError as exc:
                logger.debug("carrier node %s: %s", node.address, exc)
                return self._record(Outcome(latency, None, node.depth, Reason.BAD_FRAME.value))
            meter = self._target(node, destination, request, attached)
            if meter is None:
                return self._record(Outcome(latency + METER_WAIT_S, None, node.depth, Reason.NO_SUCH_METER.value))
            if any(lost for _, lost in down):
                return self._record(Outcome(latency, None, node.depth, Reason.LOST.value))
            answer = b"".join(meter.handle(request))
            if node.kind is NodeKind.COLLECTOR:
                latency += timing.frame_time(len(frame) + len(answer), self.rs485) + 2 * timing.turnaround(self.rs485)
            if not answer:
                return self._record(Outcome(latency + METER_WAIT_S, None, node.depth, Reason.SILENT.value))
            if any(lost for _, lost in up):
                return self._record(Outcome(latency, None, node.depth, Reason.LOST.value))
            return self._record(Outcome(latency, answer, node.depth, Reason.OK.value))

    def broadcast(self, frame: bytes) -> int:
        """Deliver ``frame`` (a DL/T 645 broadcast, 05 F3) to every meter whose carrier
        node has joined, ignoring what they answer; returns how many got it."""
        try:
            request = dlt645.decode(bytes(frame))
        except FrameError as exc:
            logger.debug("broadcast of no DL/T 645 frame dropped: %s", exc)
            return 0
        with self._lock:
            now = self.clock()
            reached = 0
            for node in self._nodes.values():
                if not self._in_network(node, now):
                    continue
                for meter in [node.meter] if node.meter is not None else node.behind.values():
                    meter.handle(request)
                    reached += 1
            return reached

    def _target(self, node: _Node, destination: str, request: dlt645.Frame, attached: Sequence[str]) -> SimulatedMeter | None:
        if node.kind is NodeKind.METER:
            return node.meter
        for address in (*attached, str(destination).upper(), request.address):
            meter = node.behind.get(str(address).upper())
            if meter is not None:
                return meter
        return None

    def _hop(self, rng: random.Random) -> tuple[float, bool]:
        latency = self.hop_latency * rng.uniform(1 - self.jitter, 1 + self.jitter)
        return latency, rng.random() < self.loss

    def _turnaround(self, rng: random.Random) -> float:
        if isinstance(self.turnaround, (int, float)):
            return float(self.turnaround)
        return rng.uniform(*self.turnaround)

    def _record(self, outcome: Outcome) -> Outcome:
        self._stats.add(outcome)
        return outcome

    def stats(self) -> NetworkStats:
        """The counts of every transaction so far."""
        with self._lock:
            return self._stats.freeze()

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = _Counters()


@attrs.define(slots=True)
class _Counters:
    transactions: int = 0
    answered: int = 0
    lost: int = 0
    silent: int = 0
    unreachable: int = 0
    total_latency: float = 0.0
    by_depth: dict[int, int] = attrs.field(factory=dict)
    latency_by_depth: dict[int, float] = attrs.field(factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.transactions += 1
        reason = outcome.reason
        if reason == Reason.OK.value:
            self.answered += 1
        elif reason == Reason.LOST.value:
            self.lost += 1
        elif reason in (Reason.NOT_IN_NETWORK.value, Reason.NO_SUCH_NODE.value):
            self.unreachable += 1
        else:
            self.silent += 1
        self.total_latency += outcome.latency
        self.by_depth[outcome.depth] = self.by_depth.get(outcome.depth, 0) + 1
        self.latency_by_depth[outcome.depth] = self.latency_by_depth.get(outcome.depth, 0.0) + outcome.latency

    def freeze(self) -> NetworkStats:
        return NetworkStats(
            self.transactions,
            self.answered,
            self.lost,
            self.silent,
            self.unreachable,
            self.total_latency,
            dict(self.by_depth),
            dict(self.latency_by_depth),
        )
