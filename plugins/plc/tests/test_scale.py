"""A round over 1,024 meters through one simulated carrier module: it completes with a few
dead meters and some loss, every meter has its outcome stored, every value is the meter's,
and the round reports its success rate per relay depth and per collector."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from meterhub.model import ChannelConfig, Hop, Meter, Quality, Schedule, SerialSettings, Site
from meterhub.plugins import get_plugins
from meterhub.runtime import Concentrator
from meterhub.store import open_store
from meterhub_plc.network import CarrierNetwork, NodeKind
from meterhub_plc.sim import ModuleSim

CARRIER_METERS, COLLECTORS, PER_COLLECTOR = 768, 8, 32
DEAD = 3


@pytest.mark.slow
def test_a_round_over_1024_meters_completes_past_dead_meters_and_loss(tmp_path):
    net = CarrierNetwork.build(meters=CARRIER_METERS, collectors=COLLECTORS, meters_per_collector=PER_COLLECTOR,
                               seed=1024, hop_latency=0.002, turnaround=0.002, loss=0.01)
    meters = []
    for k, node in enumerate(n for n in net.nodes() if n.kind is NodeKind.COLLECTOR):
        hop = Hop(f"c{k + 1}", node.address, "dlt645")
        meters += [Meter(a, "dlt645", "carrier", ("1-0:1.8.0",), hops=(hop,)) for a in node.meters]
    meters += [Meter(n.address, "dlt645", "carrier", ("1-0:1.8.0",)) for n in net.nodes() if n.kind is NodeKind.METER]
    assert len(meters) == 1024
    dead = [n.address for n in net.nodes() if n.kind is NodeKind.METER][:DEAD]
    with ModuleSim(net, baudrate=115200) as sim:
        for address in dead:
            sim.drop(address, 3600)
        channel = ChannelConfig("carrier", "plc", sim.path, SerialSettings(115200, 8, "E", 1), {"hop_time": 0.05})
        site = Site(channels={"carrier": channel}, meters=tuple(meters), store=f"sqlite:///{tmp_path / 'r.db'}",
                    schedule=Schedule(retries=2))
        before = {a: net.meter(a).energy() for a in net.meter_addresses()}

        async def main():
            with open_store(site.store) as store:
                async with Concentrator(site, plugins=get_plugins(), store=store) as conc:
                    report = await conc.run_round()
                return report, store.readings()

        report, stored = asyncio.run(main())
        after = {a: net.meter(a).energy() for a in net.meter_addresses()}
    assert len(stored) == len(report.readings) == 1024
    outcome = {r.meter: r for r in stored}
    for address in dead:
        assert outcome[address].quality is Quality.TIMEOUT and outcome[address].value is None
        assert "slave not in network (12)" in outcome[address].detail
    ok = [r for r in stored if r.quality is Quality.OK]
    assert len(ok) >= 1024 - DEAD - 10  # 1 % loss per hop, two retries: only a few may stay lost
    for r in ok:
        assert isinstance(r.value, Decimal) and before[r.meter] <= r.value <= after[r.meter]
    # the operators' success rate, per relay depth and per collector
    assert {int(k) for k in report.depth_stats} >= set(range(8))
    assert {f"carrier/c{k + 1}" for k in range(COLLECTORS)} <= set(report.collector_stats)
    for stats in report.collector_stats.values():
        assert 0.9 <= stats["success_rate"] <= 1.0
