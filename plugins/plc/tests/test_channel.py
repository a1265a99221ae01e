"""The ``plc`` channel against the simulated module and carrier network, through a real
pyserial port on a pseudo-terminal: start-up and route table, both reading modes, busy and
deny answers, reports in the middle of a read, damaged frames, and what gets stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from meterhub.errors import MeterTimeout, NotAttempted
from meterhub.model import ChannelConfig, Hop, Meter, Quality, Reading, RoundReport, SerialSettings, Site
from meterhub.plugins import get_plugins
from meterhub.protocols import dlt645
from meterhub.protocols.gdw1376_2_data import DenyReason
from meterhub.runtime import Concentrator
from meterhub.store import open_store
from meterhub_plc import options
from meterhub_plc.channel import PlcChannel
from meterhub_plc.network import CarrierNetwork, NodeKind
from meterhub_plc.sim import ModuleSim

FAST = SerialSettings(115200, 8, "E", 1)
ENERGY, VOLTAGE = "1-0:1.8.0", "1-0:32.7.0"


def site_meters(net: CarrierNetwork, channel: str = "carrier", quantities: Sequence[str] = (ENERGY,)) -> list[Meter]:
    """Every meter of the network as the site file would place it: carrier meters on the
    channel, the others behind their collector."""
    meters = []
    for k, node in enumerate(net.nodes()):
        if node.kind is NodeKind.METER:
            meters.append(Meter(node.address, "dlt645", channel, tuple(quantities)))
        else:
            hop = Hop(f"c{k}", node.address, "dlt645")
            meters += [Meter(a, "dlt645", channel, tuple(quantities), hops=(hop,)) for a in node.meters]
    return meters


def channel_config(sim: ModuleSim, **opts: Any) -> ChannelConfig:
    return ChannelConfig("carrier", "plc", sim.path, FAST, {"hop_time": 0.05, **opts})


@contextmanager
def network(meters: int = 6, collectors: int = 1, per_collector: int = 3, *, concurrency: int = 5, seed: int = 7,
            **net: Any) -> Iterator[tuple[CarrierNetwork, ModuleSim]]:
    carrier = CarrierNetwork.build(meters=meters, collectors=collectors, meters_per_collector=per_collector, seed=seed,
                                   **{"hop_latency": 0.003, "turnaround": 0.002, **net})
    with ModuleSim(carrier, baudrate=FAST.baudrate, concurrency=concurrency) as sim:
        yield carrier, sim


def run_round(sim: ModuleSim, meters: Sequence[Meter], *, retries: int = 2, during: Any = None,
              **opts: Any) -> tuple[RoundReport, list[Any], PlcChannel]:
    """One round of a concentrator on the simulated module: (report, stored events, the channel)."""
    from meterhub.model import Schedule

    site = Site(channels={"carrier": channel_config(sim, **opts)}, meters=tuple(meters), store="sqlite:///:memory:",
                schedule=Schedule(retries=retries))

    async def main() -> tuple[RoundReport, list[Any], PlcChannel]:
        with open_store(site.store) as store:
            async with Concentrator(site, plugins=get_plugins(), store=store) as conc:
                task = asyncio.create_task(conc.run_round())
                if during is not None:
                    await during(conc)
                report = await task
                await conc.flush()
                channel = conc._channels["carrier"].channel
                return report, store.events(), channel

    return asyncio.run(main())


def by_meter(report: RoundReport) -> dict[str, list[Reading]]:
    out: dict[str, list[Reading]] = {}
    for r in report.readings:
        out.setdefault(r.meter, []).append(r)
    return out


def assert_values_are_the_meters(net: CarrierNetwork, readings: Sequence[Reading], before: dict[str, Decimal]) -> None:
    """Every ok energy reading is the simulated meter's register at the time (it only grows)."""
    for r in readings:
        if r.quality is Quality.OK and r.quantity == ENERGY:
            meter = net.meter(r.meter)
            assert before[r.meter] <= r.value <= meter.energy(), r


def energies(net: CarrierNetwork) -> dict[str, Decimal]:
    return {a: net.meter(a).energy() for a in net.meter_addresses()}


# --- start-up and the route table -----------------------------------------------------------------


def test_a_round_adds_every_node_to_the_route_table_and_stores_the_meters_values():
    with network() as (net, sim):
        meters = site_meters(net)
        before = energies(net)
        report, events, channel = run_round(sim, meters)
        assert report.ok_count == len(meters)
        assert_values_are_the_meters(net, report.readings, before)
        nodes = {n.address for n in net.nodes()}
        assert set(sim.archive) == nodes
        (sync,) = [e for e in events if e.kind == "plc_route_sync"]
        assert set(sync.data["added"]) == nodes and sync.data["missing"] == []
        (module,) = [e for e in events if e.kind == "plc_module"]
        assert module.data["vendor"] == "MH" and module.data["concurrent"] is True and module.data["in_flight"] == 5


def test_readings_record_the_relays_and_the_collector_they_came_through():
    with network() as (net, sim):
        report, _, _ = run_round(sim, site_meters(net))
        depth = {n.address: n.depth for n in net.nodes()}
        for node in net.nodes():
            for address in node.meters if node.kind is NodeKind.COLLECTOR else (node.address,):
                (r,) = by_meter(report)[address]
                assert r.relays == depth[node.address]
                assert r.route == (() if node.kind is NodeKind.METER else (r.route[0],))
                assert r.depth == depth[node.address] + (node.kind is NodeKind.COLLECTOR)
        assert sum(s["readings"] for s in report.depth_stats.values()) == len(report.readings)


def test_a_second_start_finds_the_table_in_line_and_changes_nothing():
    with network() as (net, sim):
        meters = site_meters(net)
        run_round(sim, meters)
        _, events, _ = run_round(sim, meters)
        (sync,) = [e for e in events if e.kind == "plc_route_sync"]
        assert sync.data["added"] == [] and sync.data["deleted"] == []


def test_full_sync_deletes_the_nodes_no_meter_uses_and_add_keeps_them():
    with network() as (net, sim):
        meters = site_meters(net)
        run_round(sim, meters)
        fewer = [m for m in meters if m.address != meters[0].address]
        _, events, _ = run_round(sim, fewer, route_sync="add")
        assert meters[0].address in sim.archive
        _, events, _ = run_round(sim, fewer)
        (sync,) = [e for e in events if e.kind == "plc_route_sync"]
        assert sync.data["deleted"] == [meters[0].address]
        assert meters[0].address not in sim.archive


def test_the_main_node_address_the_site_names_is_set():
    with network() as (net, sim):
        run_round(sim, site_meters(net)[:1], main_node="320100000042")
        assert sim.main_node == "320100000042"


# --- busy, deny, damaged --------------------------------------------------------------------------


class Sink:
    """What the runtime would get from the channel: reports and the meters it is asked for."""

    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.asked: list[str] = []

    def wire(self, record: Any) -> None:
        pass

    def unsolicited(self, report: Any) -> None:
        self.reports.append(report)

    def wanted(self, address: str, protocol: str = "") -> None:
        self.asked.append(address)


def read_request(meter: Meter) -> bytes:
    return dlt645.encode_read_request(dlt645.address_to_wire(meter.address), 0x00010000)


def with_channel(sim: ModuleSim, meters: Sequence[Meter], work: Any, **opts: Any) -> Any:
    """Open a channel on the simulated module (its meters placed, a recording sink) and
    run ``await work(channel, sink)``."""

    async def main() -> Any:
        channel = PlcChannel(channel_config(sim, **opts), options.parse({"hop_time": 0.05, **opts}))
        channel.place(meters)
        await channel.open()
        sink = Sink()
        channel.listen(sink)
        try:
            return await work(channel, sink)
        finally:
            await channel.close()

    return asyncio.run(main())


def test_busy_answers_are_waited_out_and_not_the_meters_failure():
    with network(meters=1, collectors=0) as (net, sim):
        (meter,) = site_meters(net)

        async def work(channel: PlcChannel, _sink: Sink) -> bytes:
            sim.busy(3)
            answer, _ = await channel.read_node(meter, read_request(meter), 2.0)
            assert channel.counters.busy == 3
            return answer

        answer = with_channel(sim, [meter], work)
        assert dlt645.decode(answer.lstrip(b"\xfe")).address == meter.address


def test_a_module_that_stays_busy_leaves_the_meter_not_tried_not_dead():
    with network(meters=1, collectors=0) as (net, sim):
        (meter,) = site_meters(net)

        async def work(channel: PlcChannel, _sink: Sink) -> None:
            sim.busy(100)
            with pytest.raises(NotAttempted, match="busy"):
                await channel.read_node(meter, read_request(meter), 2.0)

        with_channel(sim, [meter], work, busy_retries=1)


def test_a_node_the_module_lost_is_added_again_and_read():
    with network(meters=1, collectors=0) as (net, sim):
        (meter,) = site_meters(net)

        async def work(channel: PlcChannel, _sink: Sink) -> bytes:
            sim.deny_next(DenyReason.METER_NOT_FOUND)
            answer, _ = await channel.read_node(meter, read_request(meter), 2.0)
            assert channel.counters.readded == 1
            return answer

        assert with_channel(sim, [meter], work)


@pytest.mark.parametrize("reason", [DenyReason.SLAVE_NOT_IN_NETWORK, DenyReason.SLAVE_SILENT, DenyReason.METER_SILENT])
def test_a_node_the_module_cannot_reach_is_a_timeout_of_that_meter(reason):
    with network(meters=1, collectors=0) as (net, sim):
        (meter,) = site_meters(net)

        async def work(channel: PlcChannel, _sink: Sink) -> None:
            sim.deny_next(reason)
            with pytest.raises(MeterTimeout, match=str(int(reason))):
                await channel.read_node(meter, read_request(meter), 2.0)

        with_channel(sim, [meter], work)


def test_a_damaged_answer_is_dropped_and_counted_and_the_next_read_gets_the_meter():
    with network(meters=1, collectors=0) as (net, sim):
        (meter,) = site_meters(net)

        async def work(channel: PlcChannel, _sink: Sink) -> bytes:
            sim.bad_checksum_next(1)
            with pytest.raises(MeterTimeout):
                await channel.read_node(meter, read_request(meter), 0.5)
            assert channel.module.counters.damaged == 1
            answer, _ = await channel.read_node(meter, read_request(meter), 2.0)
            return answer

        assert with_channel(sim, [meter], work)


def test_noise_between_frames_is_skipped():
    with network(meters=3, collectors=0) as (net, sim):
        sim.noise(b"\x00\xff\x68\x01\x02\x16garbage")
        report, _, channel = run_round(sim, site_meters(net))
        assert report.ok_count == 3 and channel.module.counters.noise_bytes > 0


def test_a_module_allowing_fewer_concurrent_reads_is_kept_to_its_number():
    with network(meters=12, collectors=0, concurrency=3) as (net, sim):
        before = energies(net)
        report, _, channel = run_round(sim, site_meters(net), concurrency=8)
        assert report.ok_count == 12
        assert_values_are_the_meters(net, report.readings, before)
        assert channel.report()["concurrency"] <= 3 and channel.counters.busy >= 1


def test_without_concurrent_reading_meters_are_read_one_at_a_time_with_13_f1():
    with network(meters=4, collectors=1, concurrency=1) as (net, sim):
        report, events, channel = run_round(sim, site_meters(net))
        assert report.ok_count == 7 and channel.in_flight == 1
        (module,) = [e for e in events if e.kind == "plc_module"]
        assert module.data["concurrent"] is False


# --- the network ----------------------------------------------------------------------------------


def test_a_node_out_of_the_network_is_a_timeout_and_read_again_when_back():
    with network(meters=2, collectors=0) as (net, sim):
        gone = net.nodes()[0].address
        sim.drop(gone, 2.0)
        report, _, _ = run_round(sim, site_meters(net), retries=0)
        assert by_meter(report)[gone][0].quality is Quality.TIMEOUT
        time.sleep(2.1)
        report, _, _ = run_round(sim, site_meters(net), retries=0)
        assert by_meter(report)[gone][0].quality is Quality.OK


def test_deeper_nodes_get_longer_answer_times():
    with network(meters=8, collectors=0) as (net, sim):
        _, _, channel = run_round(sim, site_meters(net))
        depth = {n.address: n.depth for n in net.nodes()}
        meters = sorted(site_meters(net), key=lambda m: depth[m.address])
        shallow, deep = meters[0], meters[-1]
        assert depth[deep.address] > depth[shallow.address]
        assert channel.answer_time(deep, 0.5) > channel.answer_time(shallow, 0.5)
        unknown = Meter("999999000001", "dlt645", "carrier")
        assert channel.answer_time(unknown, 0.5) >= channel.answer_time(deep, 0.5)


def test_a_round_with_loss_stores_failures_as_failures_and_every_value_is_the_meters():
    with network(meters=60, collectors=2, per_collector=12, loss=0.08, seed=3) as (net, sim):
        meters = site_meters(net)
        before = energies(net)
        report, _, _ = run_round(sim, meters, retries=2)
        ok = [r for r in report.readings if r.quality is Quality.OK]
        failed = [r for r in report.readings if r.quality is not Quality.OK]
        assert len(ok) + len(failed) == len(meters)
        assert ok and all(r.value is None for r in failed)
        assert all(r.quality in (Quality.TIMEOUT, Quality.BACKED_OFF) for r in failed)
        assert sum(r.attempts > 1 for r in ok) > 0  # the retries did work
        assert_values_are_the_meters(net, report.readings, before)
        rates = {int(k): v["success_rate"] for k, v in report.depth_stats.items()}
        assert rates  # per relay depth, as operators count it


# --- reports --------------------------------------------------------------------------------------


def _event_frame(address: str) -> bytes:
    """A DL/T 645 active report of the status word 04001501 from ``address``."""
    return dlt645.encode(dlt645.Frame(address, 0x91, bytes.fromhex("01150004") + bytes(12)))


def test_an_event_report_in_the_middle_of_a_read_is_confirmed_and_stored():
    with network(meters=2, collectors=0, hop_latency=0.15, jitter=0.0) as (net, sim):
        meters = site_meters(net)
        reporter = meters[1].address

        async def report_event(_conc: Concentrator) -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sim.stats()["network"].transactions == 0:
                await asyncio.sleep(0.01)
            while time.monotonic() < deadline and not sim._concurrent and sim._monitor is None:
                await asyncio.sleep(0.005)
            assert sim.report_event(reporter, _event_frame(reporter))

        report, events, channel = run_round(sim, meters, during=report_event)
        assert report.ok_count == 2
        (event,) = [e for e in events if e.kind == "meter_event"]
        assert event.source.endswith(reporter) or event.data.get("meter") == reporter
        assert event.data["known"] is True
        assert sim.stats()["reports_confirmed"] == 1 and channel.counters.reports == 1


def test_a_report_from_a_node_no_meter_uses_is_stored_and_counted():
    with network(meters=2, collectors=0) as (net, sim):
        meters = site_meters(net)[:1]
        stranger = site_meters(net)[1].address

        async def report_event(_conc: Concentrator) -> None:
            await asyncio.sleep(0.3)
            sim.report_event(stranger, _event_frame(stranger))
            await asyncio.sleep(0.3)

        _, events, channel = run_round(sim, meters, during=report_event)
        (event,) = [e for e in events if e.kind == "meter_event"]
        assert event.data["known"] is False
        assert channel.counters.unknown_reports == 1


# --- module-led reading ---------------------------------------------------------------------------


def test_module_led_reading_reads_every_meter_through_14_f1():
    with network(meters=5, collectors=1, per_collector=3) as (net, sim):
        meters = site_meters(net, quantities=(ENERGY, VOLTAGE))
        before = energies(net)
        report, events, channel = run_round(sim, meters, reading="module")
        assert report.ok_count == 2 * len(meters)
        assert_values_are_the_meters(net, report.readings, before)
        assert channel.counters.asked >= len(meters)
        assert sim.stats()["reports_confirmed"] >= 2 * len(meters)  # each answer an 06 F2


def test_when_the_module_asks_for_a_meter_the_concentrator_reads_it():
    with network(meters=2, collectors=0) as (net, sim):
        meters = site_meters(net)
        site = Site(channels={"carrier": channel_config(sim, reading="module")}, meters=tuple(meters),
                    store="sqlite:///:memory:")

        async def main() -> list[Reading]:
            with open_store(site.store) as store:
                async with Concentrator(site, plugins=get_plugins(), store=store) as conc:
                    await conc.open()
                    channel = conc._channels["carrier"].channel
                    if channel is None:
                        await conc._open_channel(conc._channels["carrier"])
                        channel = conc._channels["carrier"].channel
                    await channel.router("restart")  # the module starts a reading cycle
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and len(store.readings()) < 2:
                        await asyncio.sleep(0.05)
                    return store.readings()

        stored = asyncio.run(main())
        assert {r.meter for r in stored if r.quality is Quality.OK} == {m.address for m in meters}, [(r.meter, r.quality, r.detail) for r in stored]


def test_an_answer_after_the_read_was_given_up_is_reported_late_not_taken():
    with network(meters=1, collectors=0, hop_latency=0.2, jitter=0.0) as (net, sim):
        (meter,) = site_meters(net)

        async def work(channel: PlcChannel, _sink: Sink) -> list[Any]:
            with pytest.raises(MeterTimeout):
                await channel.read_node(meter, read_request(meter), 0.1)
            await asyncio.sleep(1.0)
            return await channel.towards(meter).settle()

        (late,) = with_channel(sim, [meter], work)
        assert late.target == meter.key and late.timeout == pytest.approx(0.1)
        assert late.after > late.timeout
        assert dlt645.decode(late.frame.lstrip(b"\xfe")).address == meter.address


def test_a_concentrator_led_channel_pauses_the_router_and_tells_a_module_reading_on_its_own_done():
    with network(meters=3, collectors=0) as (net, sim):
        meters = site_meters(net)

        async def work(channel: PlcChannel, sink: Sink) -> None:
            assert not sim.router_running  # paused at open
            await channel.router("resume")  # a technician hands reading back to the module
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and channel.counters.asked < len(meters):
                await asyncio.sleep(0.02)
            assert channel.counters.asked >= len(meters)
            assert sink.asked == [] and sim.stats()["network"].transactions == 0  # nothing read behind our back

        with_channel(sim, meters, work)


def test_init_parameters_clears_the_route_table_and_the_sync_fills_it_again():
    with network(meters=3, collectors=0) as (net, sim):
        meters = site_meters(net)
        run_round(sim, meters[:1])
        stranger = meters[0].address
        report, events, _ = run_round(sim, meters[1:], init="parameters", route_sync="add")
        assert report.ok_count == 2
        # 01 F2 emptied the table, so even `add` leaves no stranger behind
        assert set(sim.archive) == {m.address for m in meters[1:]} and stranger not in sim.archive
        (sync,) = [e for e in events if e.kind == "plc_route_sync"]
        assert sorted(sync.data["added"]) == sorted(m.address for m in meters[1:])


def test_a_broadcast_goes_to_every_meter_through_05_f3():
    from datetime import datetime, timedelta

    with network(meters=3, collectors=0) as (net, sim):
        meters = site_meters(net)
        shift = timedelta(minutes=3)  # a broadcast time set may move a clock by 5 minutes at most

        async def work(channel: PlcChannel, _sink: Sink) -> None:
            await channel.towards(None).send(dlt645.encode(dlt645.broadcast_time(datetime.now() + shift)))

        with_channel(sim, meters, work)
        for meter in meters:
            ahead = net.meter(meter.address).now() - datetime.now()
            assert abs((ahead - shift).total_seconds()) < 5, meter.address
