"""The concentrator's scheduled time sync on a carrier channel: the DL/T 645 broadcast time
goes to every node through the module (1376.2 AFN 05 F3), meters behind collectors too, each
clock read before and after over the carrier (13 F1)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from meterhub.config import parse_site
from meterhub.plugins import Plugins
from meterhub.runtime import Concentrator
from meterhub.store import open_store
from meterhub_plc.cli import site_text
from meterhub_plc.network import CarrierNetwork
from meterhub_plc.sim import ModuleSim


def test_a_broadcast_through_the_module_sets_every_meters_clock(tmp_path: Path) -> None:
    # three carrier meters and two behind a collector (which passes the broadcast on)
    net = CarrierNetwork.build(meters=3, collectors=1, meters_per_collector=2, seed=11, hop_latency=0.005,
                               turnaround=0.002)
    fast, slow, _, behind, _ = net.meter_addresses()
    net.meter(fast).clock_offset = timedelta(seconds=120)
    net.meter(slow).clock_offset = timedelta(seconds=-75)
    net.meter(behind).clock_offset = timedelta(seconds=90)
    plugins = Plugins()
    with ModuleSim(net, baudrate=9600) as sim:
        text = site_text(net, sim.path, 9600) + f"store: sqlite:///{tmp_path / 'plc.db'}\ntime_sync: true\n"
        site = parse_site(text, filename="<test>", drivers=plugins.meter_drivers(), transports=plugins.transports())

        async def sync() -> list:
            with open_store(site.store) as store:
                async with Concentrator(site, plugins=plugins, store=store) as concentrator:
                    assert concentrator.services is not None
                    return await concentrator.services.time_sync()

        events = asyncio.run(sync())
    drift = {e.data["meter"]: (int(e.data["drift_before"]), int(e.data["drift_after"])) for e in events}
    assert set(drift) == set(net.meter_addresses())
    assert 117 <= drift[fast][0] <= 121 and -78 <= drift[slow][0] <= -74  # read over the carrier, to the second
    assert 87 <= drift[behind][0] <= 91  # through the collector too
    assert all(abs(after) <= 2 for _, after in drift.values())
    assert all(abs(net.meter(a).clock_offset.total_seconds()) <= 2 for a in net.meter_addresses())
