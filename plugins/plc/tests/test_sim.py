"""The carrier network model and the simulated 1376.2 module on its pty, talked to with
plain os.read/os.write and the 1376.2 codec (no driver)."""

from __future__ import annotations

import os
import random
import select
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from meterhub.errors import ChecksumError
from meterhub.protocols import dlt645
from meterhub.protocols import gdw1376_2 as link
from meterhub.protocols import gdw1376_2_data as units
from meterhub.protocols.bcd import bcd_to_int
from meterhub.protocols.dlt645_sim import make_meters
from meterhub.protocols.gdw1376_2 import Addresses, Afn, Direction, DownInfo, Frame
from meterhub.protocols.gdw1376_2_data import DenyReason, ReadFlag
from meterhub_plc.network import CarrierNetwork, NodeKind, Reason
from meterhub_plc.sim import ModuleSim

pytestmark = pytest.mark.timeout(30)

ENERGY = 0x00010000  #: DL/T 645-2007: forward active energy, total
FAST = {"hop_latency": 0.005, "turnaround": 0.002}  #: a network quick enough for tests
BAUD = 115200
WAIT = 2.0  #: the longest a test waits for one frame


def read_energy(address: str) -> bytes:
    return dlt645.encode(dlt645.read_request(address, ENERGY))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def network_with_depths(depths: list[int], **options: object) -> CarrierNetwork:
    """Meters 000000000001.. at these depths."""
    net = CarrierNetwork(seed=1, **{**FAST, **options})
    for meter, depth in zip(make_meters(len(depths)), depths, strict=True):
        net.add_meter(meter, depth)
    return net


# --- the network ---------------------------------------------------------------------------


def transcript(seed: int) -> list[tuple[float, bytes | None, str]]:
    net = CarrierNetwork.build(meters=30, collectors=2, meters_per_collector=4, seed=seed, loss=0.1)
    return [(o.latency, o.answer is not None, o.reason) for o in (net.exchange(a, read_energy(a)) for a in net.meter_addresses())]


def test_network_is_deterministic_from_its_seed() -> None:
    assert transcript(7) == transcript(7)
    assert transcript(7) != transcript(8)
    depths = [v.depth for v in CarrierNetwork.build(meters=50, seed=3).nodes()]
    assert depths == [v.depth for v in CarrierNetwork.build(meters=50, seed=3).nodes()]


def test_a_nodes_transactions_do_not_depend_on_other_nodes_traffic() -> None:
    a = network_with_depths([2, 3], jitter=0.5)
    b = network_with_depths([2, 3], jitter=0.5)
    a.exchange("000000000002", read_energy("000000000002"))
    assert a.exchange("000000000001", read_energy("000000000001")).latency == b.exchange("000000000001", read_energy("000000000001")).latency


def test_build_spreads_nodes_mostly_shallow_with_a_tail_to_max_depth() -> None:
    net = CarrierNetwork.build(meters=1024, collectors=4, meters_per_collector=32, max_depth=7, seed=0)
    depths = [v.depth for v in net.nodes()]
    assert len(depths) == 1028 and len(net.meter_addresses()) == 1024 + 128
    assert sum(d <= 2 for d in depths) > 0.7 * len(depths)
    assert max(depths) == 7
    assert {v.kind for v in net.nodes()} == {NodeKind.METER, NodeKind.COLLECTOR}


def test_latency_is_two_hops_per_level_plus_the_meter_turnaround() -> None:
    net = network_with_depths([0, 3, 7], hop_latency=0.05, jitter=0.0, turnaround=0.04)
    for address, depth in (("000000000001", 0), ("000000000002", 3), ("000000000003", 7)):
        outcome = net.exchange(address, read_energy(address))
        assert outcome.reason == Reason.OK.value and outcome.depth == depth
        assert outcome.latency == pytest.approx(2 * (depth + 1) * 0.05 + 0.04)
    stats = net.stats()
    assert stats.transactions == 3 and stats.by_depth == {0: 1, 3: 1, 7: 1}
    assert stats.total_latency == pytest.approx(2 * (1 + 4 + 8) * 0.05 + 3 * 0.04)
    assert stats.ideal_round_time(5) == pytest.approx(stats.total_latency / 5)


def test_the_answer_is_the_meters_own() -> None:
    net = network_with_depths([1])
    outcome = net.exchange("000000000001", read_energy("000000000001"))
    reply = dlt645.decode(outcome.answer)
    assert reply.address == "000000000001" and reply.is_reply
    assert dlt645.parse_read_reply(reply)[0] == ENERGY


def test_a_collector_relays_to_its_meters_over_rs485() -> None:
    meters = make_meters(3, first_address="000000000101")
    net = CarrierNetwork(seed=1, hop_latency=0.05, jitter=0.0, turnaround=0.04)
    net.add_collector("880000000001", 1, meters)
    by_frame = net.exchange("880000000001", read_energy("000000000102"))
    assert dlt645.decode(by_frame.answer).address == "000000000102"
    rs485 = by_frame.latency - (4 * 0.05 + 0.04)
    assert 2 * len(read_energy("000000000102")) * 11 / 2400 < rs485 < 0.35  # request + answer at 2400 8E1
    by_attached = net.exchange("880000000001", read_energy("000000000103"), attached=["000000000103"])
    assert dlt645.decode(by_attached.answer).address == "000000000103"
    direct = net.exchange("000000000101", read_energy("000000000101"))  # the module knows the collector
    assert dlt645.decode(direct.answer).address == "000000000101"
    view = net.node("000000000101")
    assert view.via == "880000000001" and view.depth == 1
    assert net.exchange("880000000001", read_energy("000000000999")).reason == Reason.NO_SUCH_METER.value


def test_a_lost_hop_loses_the_answer() -> None:
    net = network_with_depths([0], loss=1.0)
    outcome = net.exchange("000000000001", read_energy("000000000001"))
    assert outcome.answer is None and outcome.reason == Reason.LOST.value and outcome.latency > 0
    assert net.stats().lost == 1


def test_loss_rate_compounds_over_hops() -> None:
    net = network_with_depths([0, 3], loss=0.05)
    deep = [net.exchange("000000000002", read_energy("000000000002")).answer is None for _ in range(400)]
    shallow = [net.exchange("000000000001", read_energy("000000000001")).answer is None for _ in range(400)]
    # 1 - 0.95^8 = 0.34 at depth 3, 1 - 0.95^2 = 0.10 at depth 0
    assert 0.25 < sum(deep) / 400 < 0.43
    assert 0.05 < sum(shallow) / 400 < 0.16


def test_nodes_join_as_the_network_forms() -> None:
    clock = FakeClock()
    net = network_with_depths([0, 7], formation_time=8.0, clock=clock)
    net.power_up()
    assert not net.node("000000000001").joined and not net.reachable("000000000002")
    outcome = net.exchange("000000000001", read_energy("000000000001"))
    assert outcome.answer is None and outcome.reason == Reason.NOT_IN_NETWORK.value
    clock.now += 1.0  # depth 0 joins within 8 × 1/8 s
    assert net.node("000000000001").joined and not net.node("000000000002").joined
    clock.now += 7.0  # depth 7 within 8 s
    assert net.node("000000000002").joined


def test_a_dropped_node_is_out_then_rejoins() -> None:
    clock = FakeClock()
    net = network_with_depths([1], clock=clock)
    net.drop("000000000001", 5.0)
    assert net.exchange("000000000001", read_energy("000000000001")).reason == Reason.NOT_IN_NETWORK.value
    clock.now += 5.0
    assert net.exchange("000000000001", read_energy("000000000001")).answer is not None


def test_random_dropouts_take_nodes_out_for_a_while() -> None:
    clock = FakeClock()
    net = network_with_depths([1] * 20, clock=clock, dropout_rate=1.0, dropout_duration=(60.0, 60.0))
    out = 0
    for _ in range(200):  # 200 samples over 10 h: each node drops about 10 times for a minute
        clock.now += 180.0
        out += sum(not v.joined for v in net.nodes())
    assert 0 < out < 0.2 * 200 * 20


# --- the module on its pty -------------------------------------------------------------------


class Concentrator:
    """The concentrator's end of the module's pty: writes frames, reads frames."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.decoder = link.StreamDecoder()
        self.backlog: list[Frame | ChecksumError] = []
        self.seq = 0

    def close(self) -> None:
        os.close(self.fd)

    def send(self, afn: int, fn: int, unit: object = None, *, to: str | None = None, seq: int | None = None) -> int:
        """A downlink frame (with an address field when ``to``); returns its R6."""
        if seq is None:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        addresses = Addresses("000000000000", to) if to else None
        self.write(link.encode(units.unit_frame(afn, fn, unit, info=DownInfo(seq=seq, module=to is not None), addresses=addresses)))
        return seq

    def confirm(self, seq: int) -> None:
        self.send(Afn.CONFIRM, 1, units.Confirm(), seq=seq)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def receive(self, match: Callable[[Frame], bool] = lambda f: True, timeout: float = WAIT) -> Frame:
        """The first frame (kept back or arriving within ``timeout``) that ``match``es."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.backlog:
                if isinstance(item, Frame) and match(item):
                    self.backlog.remove(item)
                    return item
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching frame within {timeout} s; got {self.backlog}")
            if select.select([self.fd], [], [], left)[0]:
                self.backlog.extend(self.decoder.feed(os.read(self.fd, 4096)))

    def silence(self, timeout: float = 0.3) -> list[Frame | ChecksumError]:
        """Everything that arrives within ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                self.backlog.extend(self.decoder.feed(os.read(self.fd, 4096)))
        out, self.backlog = self.backlog, []
        return out

    def answer(self, seq: int, timeout: float = WAIT) -> tuple[Frame, object]:
        """The answer echoing R6 ``seq`` and its unit."""
        frame = self.receive(lambda f: f.prm is False and f.info.seq == seq, timeout)
        return frame, units.decode_unit(frame)

    def command(self, afn: int, fn: int, unit: object = None, **options: object) -> object:
        return self.answer(self.send(afn, fn, unit, **options))[1]

    def add(self, addresses: list[str]) -> object:
        return self.command(Afn.ROUTE_SET, 1, units.AddNodes([units.Node(a, 2) for a in addresses]))


@pytest.fixture
def module() -> Iterator[Callable[..., tuple[ModuleSim, Concentrator]]]:
    """Start a module on a network; returns (sim, concentrator)."""
    opened: list[tuple[ModuleSim, Concentrator]] = []

    def start(network: CarrierNetwork | None = None, **options: object) -> tuple[ModuleSim, Concentrator]:
        net = network or CarrierNetwork.build(meters=8, seed=1, **FAST)
        sim = ModuleSim(net, **{"baudrate": BAUD, **options}).start()
        pair = (sim, Concentrator(sim.path))
        opened.append(pair)
        return pair

    yield start
    for sim, conc in opened:
        conc.close()
        sim.stop()


def is_deny(unit: object, reason: DenyReason) -> bool:
    return isinstance(unit, units.Deny) and unit.reason == reason


def test_queries_answer_with_the_modules_identity(module) -> None:
    _, conc = module(main_node="123456789012", vendor=("XY", "C2"), capacity=1000)
    frame, version = conc.answer(conc.send(Afn.QUERY, 1))
    assert frame.direction is Direction.UP and frame.prm is False and frame.mode == link.CommMode.HPLC
    assert (version.vendor, version.chip) == ("XY", "C2")
    assert conc.command(Afn.QUERY, 4) == units.MainNode("123456789012")
    mode = conc.command(Afn.QUERY, 10)
    assert (mode.comm_type, mode.routing, mode.read_mode) == (2, True, 3)
    assert (mode.main_node, mode.max_nodes, mode.nodes, mode.monitor_timeout) == ("123456789012", 1000, 0, 90)
    assert mode.vendor == version and len(mode.rates) == 1


def test_afn_index_lists_concurrent_reading_only_with_concurrency(module) -> None:
    _, conc = module(concurrency=5)
    assert conc.command(Afn.QUERY, 11, units.AfnIndexQuery(0xF1)).functions == (1,)
    assert conc.command(Afn.QUERY, 11, units.AfnIndexQuery(0x13)).functions == (1,)
    _, single = module(concurrency=1)
    assert single.command(Afn.QUERY, 11, units.AfnIndexQuery(0xF1)).functions == ()
    assert is_deny(single.command(Afn.CONCURRENT, 1, units.ConcurrentRead(2, read_energy("000000000001")), to="000000000001"), DenyReason.NO_SUCH_FN)


def test_main_node_is_set_with_05_f1(module) -> None:
    sim, conc = module()
    assert isinstance(conc.command(Afn.CONTROL, 1, units.MainNode("000000009999")), units.Confirm)
    assert conc.command(Afn.QUERY, 4).address == "000000009999" and sim.main_node == "000000009999"


def test_added_nodes_are_listed_in_order(module) -> None:
    sim, conc = module()
    addresses = sim.network.meter_addresses()[:5] + ["000000555555"]  # the last one does not exist
    assert conc.add(addresses) == units.Confirm(True, (1,), 0)
    assert conc.command(Afn.ROUTE_QUERY, 1) == units.NodeCount(6, 2048)
    page = conc.command(Afn.ROUTE_QUERY, 2, units.NodeQuery(2, 10))
    assert page.total == 6 and [n.address for n in page.nodes] == addresses[1:]
    first = page.nodes[0]
    view = sim.network.node(addresses[1])
    assert (first.relay_level, first.phases, first.protocol) == (view.depth, 1 << (view.phase - 1), 2)
    assert 1 <= first.quality <= 15
    assert page.nodes[-1] == units.NodeInfo("000000555555", protocol=2)
    assert sim.archive == dict.fromkeys(addresses, 2)


def test_adding_a_node_twice_is_denied_duplicate(module) -> None:
    sim, conc = module()
    conc.add(["000000000001"])
    assert is_deny(conc.add(["000000000002", "000000000001"]), DenyReason.DUPLICATE_METER)
    assert list(sim.archive) == ["000000000001"]  # all or nothing
    assert sim.denied == 1


def test_adding_beyond_capacity_is_denied(module) -> None:
    sim, conc = module(capacity=2)
    assert isinstance(conc.add(["000000000001", "000000000002", "000000000003"]), units.Deny)
    assert sim.archive == {}


def test_deleting_nodes_and_an_unknown_one(module) -> None:
    sim, conc = module()
    conc.add(["000000000001", "000000000002", "000000000003"])
    assert isinstance(conc.command(Afn.ROUTE_SET, 2, units.DeleteNodes(["000000000002"])), units.Confirm)
    assert list(sim.archive) == ["000000000001", "000000000003"]
    assert is_deny(conc.command(Afn.ROUTE_SET, 2, units.DeleteNodes(["000000000003", "000000000009"])), DenyReason.METER_NOT_FOUND)
    assert [n.address for n in conc.command(Afn.ROUTE_QUERY, 2, units.NodeQuery(1, 5)).nodes] == ["000000000001", "000000000003"]


def test_parameter_init_clears_the_archive(module) -> None:
    sim, conc = module()
    conc.add(["000000000001"])
    assert isinstance(conc.command(Afn.INIT, 2), units.Confirm)
    assert sim.archive == {} and conc.command(Afn.ROUTE_QUERY, 1).count == 0


def test_monitor_read_returns_the_meters_real_answer(module) -> None:
    sim, conc = module()
    conc.add(["000000000003"])
    seq = conc.send(Afn.ROUTE_FORWARD, 1, units.Monitor(2, read_energy("000000000003")), to="000000000003")
    frame, reply = conc.answer(seq)
    assert (frame.afn, frame.fn) == (0x13, 1)
    assert frame.addresses == Addresses("000000000003", sim.main_node)
    view = sim.network.node("000000000003")
    assert (frame.info.relay_level, frame.info.phase) == (view.depth, view.phase)
    assert reply.protocol == 2 and reply.duration == 0
    meter_reply = dlt645.decode(reply.frame)
    assert meter_reply.address == "000000000003"
    di, payload = dlt645.parse_read_reply(meter_reply)
    assert di == ENERGY
    energy = Decimal(bcd_to_int(payload)) / 100
    assert abs(energy - sim.network.meter("000000000003").energy()) < 1


def test_monitor_read_of_a_node_not_in_the_archive_is_denied(module) -> None:
    _, conc = module()
    reply = conc.command(Afn.ROUTE_FORWARD, 1, units.Monitor(2, read_energy("000000000003")), to="000000000003")
    assert is_deny(reply, DenyReason.METER_NOT_FOUND)


def test_monitor_read_of_a_dropped_node_is_denied_not_in_network(module) -> None:
    sim, conc = module()
    conc.add(["000000000003"])
    sim.drop("000000000003", 60)
    reply = conc.command(Afn.ROUTE_FORWARD, 1, units.Monitor(2, read_energy("000000000003")), to="000000000003")
    assert is_deny(reply, DenyReason.SLAVE_NOT_IN_NETWORK)


def test_a_second_monitor_read_while_one_is_in_flight_is_denied_busy(module) -> None:
    _, conc = module(network_with_depths([7, 0], hop_latency=0.05, jitter=0.0))
    conc.add(["000000000001", "000000000002"])
    first = conc.send(Afn.ROUTE_FORWARD, 1, units.Monitor(2, read_energy("000000000001")), to="000000000001")
    second = conc.send(Afn.ROUTE_FORWARD, 1, units.Monitor(2, read_energy("000000000002")), to="000000000002")
    assert is_deny(conc.answer(second)[1], DenyReason.BUSY)
    assert isinstance(conc.answer(first)[1], units.MonitorReply)


def test_the_latency_really_elapses(module) -> None:
    _, conc = module(network_with_depths([4], hop_latency=0.05, jitter=0.0))  # 10 hops: 0.5 s
    conc.add(["000000000001"])
    started = time.monotonic()
    conc.command(Afn.ROUTE_FORWARD, 1, units.Monitor(2, read_energy("000000000001")), to="000000000001")
    assert 0.5 <= time.monotonic() - started < 1.2


def test_busy_fault_denies_the_next_commands(module) -> None:
    sim, conc = module()
    sim.busy(2)
    assert is_deny(conc.command(Afn.QUERY, 1), DenyReason.BUSY)
    assert is_deny(conc.command(Afn.QUERY, 4), DenyReason.BUSY)
    assert isinstance(conc.command(Afn.QUERY, 1), units.VendorVersion)
    sim.deny_next(DenyReason.UNSUPPORTED)
    assert is_deny(conc.command(Afn.QUERY, 1), DenyReason.UNSUPPORTED)


def test_unknown_function_is_denied(module) -> None:
    _, conc = module()
    assert is_deny(conc.command(Afn.QUERY, 2), DenyReason.NO_SUCH_FN)
    assert is_deny(conc.command(0x15, 1), DenyReason.NO_SUCH_FN)


def test_concurrent_reads_answer_out_of_order_up_to_the_limit(module) -> None:
    _, conc = module(network_with_depths([7, 3, 0, 0], hop_latency=0.02, jitter=0.0), concurrency=3)
    conc.add(["000000000001", "000000000002", "000000000003", "000000000004"])
    seqs = {}
    for address in ("000000000001", "000000000002", "000000000003"):
        seqs[address] = conc.send(Afn.CONCURRENT, 1, units.ConcurrentRead(2, read_energy(address)), to=address)
    over = conc.send(Afn.CONCURRENT, 1, units.ConcurrentRead(2, read_energy("000000000004")), to="000000000004")
    again = conc.send(Afn.CONCURRENT, 1, units.ConcurrentRead(2, read_energy("000000000001")), to="000000000001")
    assert is_deny(conc.answer(over)[1], DenyReason.CONCURRENCY_LIMIT)
    assert is_deny(conc.answer(again)[1], DenyReason.METER_BUSY)
    order = []
    for _ in range(3):
        frame = conc.receive(lambda f: (f.afn, f.fn) == (0xF1, 1))
        reply = units.decode_unit(frame)
        order.append(frame.addresses.source)
        assert frame.info.seq == seqs[frame.addresses.source]
        assert dlt645.decode(reply.frame).address == frame.addresses.source
    assert order == ["000000000003", "000000000002", "000000000001"]  # shallowest first
    # the slots are free again
    seq = conc.send(Afn.CONCURRENT, 1, units.ConcurrentRead(2, read_energy("000000000004")), to="000000000004")
    assert isinstance(conc.answer(seq)[1], units.ConcurrentRead)


def test_router_led_reading_flow(module) -> None:
    sim, conc = module()
    nodes = ["000000000001", "000000000002", "000000000003"]
    conc.add(nodes)
    assert isinstance(conc.command(Afn.ROUTE_CONTROL, 1), units.Confirm)
    assert sim.router_running
    # node 1: read once, then done
    ask = conc.receive(lambda f: (f.afn, f.fn) == (0x14, 1))
    assert ask.prm and units.decode_unit(ask) == units.ReadRequest(ask.info.phase, "000000000001", 1)
    assert ask.addresses == Addresses("000000000001", sim.main_node)
    conc.send(Afn.ROUTE_READ, 1, units.ReadAnswer(ReadFlag.MAY_READ, read_energy("000000000001")), to="000000000001", seq=ask.info.seq)
    data = conc.receive(lambda f: (f.afn, f.fn) == (0x06, 2))
    read = units.decode_unit(data)
    assert read.seq == 1 and read.protocol == 2
    assert dlt645.parse_read_reply(dlt645.decode(read.frame))[0] == ENERGY
    conc.confirm(data.info.seq)
    ask = conc.receive(lambda f: (f.afn, f.fn) == (0x14, 1))  # the same node again
    assert units.decode_unit(ask).address == "000000000001"
    conc.send(Afn.ROUTE_READ, 1, units.ReadAnswer(ReadFlag.DONE), to="000000000001", seq=ask.info.seq)
    # node 2 failed, node 3 done
    for expected, flag in (("000000000002", ReadFlag.FAILED), ("000000000003", ReadFlag.DONE)):
        ask = conc.receive(lambda f: (f.afn, f.fn) == (0x14, 1))
        assert units.decode_unit(ask).address == expected
        conc.send(Afn.ROUTE_READ, 1, units.ReadAnswer(flag), to=expected, seq=ask.info.seq)
    done = conc.receive(lambda f: (f.afn, f.fn) == (0x06, 3))
    assert units.decode_unit(done) == units.TaskChange(units.TaskStatus.READ_DONE)
    conc.confirm(done.info.seq)
    assert conc.silence(0.2) == []
    assert not sim.router_running
    assert sim.reports_sent == 2 and sim.reports_confirmed == 2


def test_router_moves_on_when_the_concentrator_does_not_answer(module) -> None:
    _, conc = module(router_wait=0.1)
    conc.add(["000000000001", "000000000002"])
    conc.command(Afn.ROUTE_CONTROL, 1)
    first = conc.receive(lambda f: (f.afn, f.fn) == (0x14, 1))
    second = conc.receive(lambda f: (f.afn, f.fn) == (0x14, 1))
    assert [units.decode_unit(f).address for f in (first, second)] == ["000000000001", "000000000002"]
    assert isinstance(units.decode_unit(conc.receive(lambda f: (f.afn, f.fn) == (0x06, 3))), units.TaskChange)


def test_router_pause_stops_after_the_node_in_hand(module) -> None:
    sim, conc = module()
    conc.add(["000000000001", "000000000002"])
    conc.command(Afn.ROUTE_CONTROL, 1)
    ask = conc.receive(lambda f: (f.afn, f.fn) == (0x14, 1))
    conc.command(Afn.ROUTE_CONTROL, 2)
    conc.send(Afn.ROUTE_READ, 1, units.ReadAnswer(ReadFlag.DONE), to="000000000001", seq=ask.info.seq)
    assert conc.silence(0.3) == []
    assert not sim.router_running
    conc.command(Afn.ROUTE_CONTROL, 3)
    assert units.decode_unit(conc.receive(lambda f: (f.afn, f.fn) == (0x14, 1))).address == "000000000002"


def test_an_event_report_arrives_while_a_monitor_read_is_pending(module) -> None:
    sim, conc = module(network_with_depths([4], hop_latency=0.05, jitter=0.0))  # 0.5 s read
    conc.add(["000000000001"])
    seq = conc.send(Afn.ROUTE_FORWARD, 1, units.Monitor(2, read_energy("000000000001")), to="000000000001")
    time.sleep(0.1)
    event = bytes.fromhex("68 01 00 00 00 00 00 68 91 04 34 48 33 37 00 16".replace(" ", ""))
    assert sim.report_event("000000000001", event)
    first = conc.receive(lambda f: f.prm)
    assert (first.afn, first.fn) == (0x06, 5)
    assert units.decode_unit(first) == units.MeterEvent(1, 2, event)
    assert first.addresses == Addresses("000000000001", sim.main_node)
    conc.confirm(first.info.seq)
    frame, reply = conc.answer(seq)
    assert (frame.afn, frame.fn) == (0x13, 1) and reply.frame
    assert sim.reports_sent == 1 and sim.reports_confirmed == 1


def test_an_unconfirmed_report_is_repeated_then_abandoned(module) -> None:
    sim, conc = module(report_retry=0.05)
    sim.report_nodes(["000000000001", "000000000002"])
    frames = [f for f in conc.silence(0.6) if isinstance(f, Frame)]
    assert len(frames) == 4 and len({f.info.seq for f in frames}) == 1  # sent, then 3 repeats
    assert units.decode_unit(frames[0]) == units.SlaveNodes([units.SlaveNode("000000000001", 2, 1), units.SlaveNode("000000000002", 2, 2)])
    assert (sim.report_repeats, sim.reports_abandoned, sim.reports_confirmed) == (3, 1, 0)


def test_events_forbidden_are_not_reported(module) -> None:
    sim, conc = module()
    conc.command(Afn.CONTROL, 2, units.EventReporting(False))
    assert not sim.report_event("000000000001", b"\x68")
    assert conc.silence(0.2) == []


def test_a_damaged_frame_is_dropped_and_counted(module) -> None:
    sim, conc = module()
    raw = bytearray(link.encode(units.unit_frame(Afn.QUERY, 1, info=DownInfo(seq=9))))
    raw[-2] ^= 0xFF
    conc.write(bytes(raw))
    assert conc.silence(0.3) == []
    assert sim.damaged_in == 1 and sim.frames_in == 0
    assert isinstance(conc.command(Afn.QUERY, 1), units.VendorVersion)


def test_bad_checksum_fault_damages_the_next_answer(module) -> None:
    sim, conc = module()
    sim.bad_checksum_next()
    conc.send(Afn.QUERY, 1)
    received = conc.silence(0.3)
    assert len(received) == 1 and isinstance(received[0], ChecksumError)
    assert isinstance(conc.command(Afn.QUERY, 1), units.VendorVersion)


def test_noise_goes_on_the_wire_between_frames(module) -> None:
    sim, conc = module()
    sim.noise(b"\x00\x11\x22")
    assert isinstance(conc.command(Afn.QUERY, 1), units.VendorVersion)
    assert conc.decoder.skipped >= 3


def test_garbage_on_the_line_does_not_stop_the_module(module) -> None:
    sim, conc = module()
    rng = random.Random(5)
    for _ in range(20):
        conc.write(bytes(rng.randrange(256) for _ in range(rng.randint(1, 60))))
    conc.write(b"\x68\x0f\x00")  # a truncated header, then a whole frame
    conc.silence(0.2)
    assert sim.running
    assert isinstance(conc.command(Afn.QUERY, 1), units.VendorVersion)


def test_a_silent_module_answers_nothing(module) -> None:
    sim, conc = module()
    sim.silent = True
    conc.send(Afn.QUERY, 1)
    assert conc.silence(0.3) == []
    sim.silent = False
    assert isinstance(conc.command(Afn.QUERY, 1), units.VendorVersion)


def spread(meters: list) -> timedelta:
    """How far apart the meters' clocks are."""
    return max(m.now() for m in meters) - min(m.now() for m in meters)


def test_broadcast_reaches_every_joined_meter(module) -> None:
    sim, conc = module()
    meters = [sim.network.meter(a) for a in sim.network.meter_addresses()]
    sim.drop("000000000008", 60)
    dropped_offset = meters[7].clock_offset
    assert spread(meters[:7]).total_seconds() > 10  # make_meters sets clocks ±90 s apart
    frame = dlt645.encode(dlt645.broadcast_time(meters[0].now().replace(microsecond=0)))
    assert isinstance(conc.command(Afn.CONTROL, 3, units.Carried(2, frame)), units.Confirm)
    assert spread(meters[:7]).total_seconds() < 2  # every joined meter took the time
    assert meters[7].clock_offset == dropped_offset  # the dropped one did not hear it


def test_frames_out_are_paced_at_the_baud_rate(module) -> None:
    _, conc = module(baudrate=2400)
    started = time.monotonic()
    conc.command(Afn.QUERY, 10)  # 03 F10 answer: 15 + 43 bytes at 2400 8E1 take 0.27 s
    assert time.monotonic() - started >= 58 * 11 / 2400


def test_stats_combine_the_networks(module) -> None:
    sim, conc = module()
    conc.add(["000000000001"])
    conc.command(Afn.ROUTE_FORWARD, 1, units.Monitor(2, read_energy("000000000001")), to="000000000001")
    stats = sim.stats()
    assert stats["frames_in"] == 2 and stats["frames_out"] >= 1 and stats["archive"] == 1
    assert stats["network"].transactions == 1 and stats["network"].answered == 1
