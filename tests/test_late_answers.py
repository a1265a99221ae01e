"""A meter that answers after its timeout, on every protocol: its late answer is never
stored as a value (of any quantity, its own or a neighbour's), it is classified the same
way everywhere (``timeout``, saying how late it was), and its healthy neighbours keep
every reading.

Each protocol has its own RS485 bus (a real pyserial port on a pseudo-terminal, at the
protocol's usual format) with three simulated meters, the first of which begins its
answers ``k`` times its timeout after our request ends: 0.1 (in time), 1.1 (just late),
2 (very late) and 3.1 (later than the guard after a request: a Modbus meter answering
650 ms late at 9600 Bd, as in the field report). The meters' clocks are frozen, so every value they give is known
from a first, healthy round, and a stored ``ok`` value must equal it exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import attrs
import pytest

from meterhub.config import parse_site
from meterhub.model import Quality, Reading
from meterhub.plugins import get_plugins
from meterhub.runtime import Concentrator
from meterhub.simsite import MeterSpec, SimBus, site_text, start_bus
from meterhub.store import open_store

#: Each simulated meter starts answering this long after a request (no random spread,
#: so the lateness below is exact).
TURNAROUND = 0.030

#: Per protocol: simulator options and the quantities read, in separate transactions
#: where the protocol reads them so (Modbus: input registers 0x0000 and 0x0156, two
#: 2-register reads of the same size, as in the field report). Empty: the first two the
#: simulated meter offers (M-Bus meters of different media alternate on a bus).
PROTOCOLS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "dlt645": ({}, ("1-0:1.8.0", "1-0:32.7.0")),
    "modbus": ({"profile": "eastron-sdm630"}, ("1-0:32.7.0", "1-0:1.8.0")),
    "cjt188": ({"meter_type": "10"}, ()),
    "mbus": ({}, ()),
}
CLOCK = "0-0:1.0.0"


@pytest.fixture
def buses() -> Iterator[dict[str, SimBus]]:
    simulators = get_plugins().simulators()
    started: dict[str, SimBus] = {}
    frozen = datetime.now()
    try:
        for protocol, (options, _) in PROTOCOLS.items():
            sim = start_bus(simulators, [MeterSpec(protocol, 3, options)], seed=7)
            sim.bus.turnaround = TURNAROUND
            for device in sim.bus.devices:
                device.clock = lambda: frozen
            started[protocol] = sim
        yield started
    finally:
        for sim in started.values():
            sim.stop()


def _site(buses: dict[str, SimBus], db: str) -> Any:
    text = site_text({protocol: sim for protocol, sim in buses.items()}, store=f"sqlite:///{db}")
    plugins = get_plugins()
    site = parse_site(text, filename="<late>", drivers=plugins.meter_drivers(), transports=plugins.transports())
    meters = tuple(
        attrs.evolve(m, quantities=PROTOCOLS[m.protocol][1] or tuple(q for q in m.quantities if q != CLOCK)[:2])
        for m in site.meters
    )
    return attrs.evolve(site, meters=meters)


def _round(site: Any) -> tuple[list[Reading], list[Any]]:
    async def once() -> tuple[list[Reading], list[Any]]:
        with open_store(site.store) as store:
            async with Concentrator(site, plugins=get_plugins(), store=store) as conc:
                report = await conc.run_round()
            return list(report.readings), store.events()

    return asyncio.run(once())


@pytest.mark.parametrize("k", [0.1, 1.1, 2.0, 3.1])
def test_a_late_meter_is_a_timeout_everywhere_and_costs_nobody_else_a_reading(buses, tmp_path, k):
    site = _site(buses, str(tmp_path / "late.db"))
    reference, _ = _round(site)
    truth = {(r.channel, r.meter, r.quantity): r.value for r in reference}
    assert all(r.quality is Quality.OK for r in reference), [r for r in reference if not r.ok]

    drivers = get_plugins().meter_drivers()
    slow: dict[str, str] = {}
    for protocol, sim in buses.items():
        address = drivers[protocol].normalize_address(sim.entries[0]["address"])  # the first device's site entry
        meter = next(m for m in site.meters if m.channel == protocol and m.address == address)
        timeout = drivers[protocol].transaction_timeout(meter.settings or site.channels[protocol].settings)
        sim.bus.slow_delay = k * timeout - TURNAROUND
        sim.bus.set_fault(sim.bus.devices[0].address, "slow")
        slow[protocol] = address

    readings, events = _round(site)

    for r in readings:
        if r.quality is Quality.OK:  # whatever happened, an ok value is the meter's own
            assert r.value == truth[(r.channel, r.meter, r.quantity)], r
    for protocol, address in slow.items():
        mine = [r for r in readings if r.channel == protocol and r.meter == address]
        others = [r for r in readings if r.channel == protocol and r.meter != address]
        assert others and all(r.quality is Quality.OK for r in others), [r for r in others if not r.ok]
        if k < 1:
            assert all(r.quality is Quality.OK for r in mine), mine
            continue
        # What was asked timed out; what was not asked after that (it would only cost
        # another timeout and guard) is not tried.
        asked = [r for r in mine if r.quality is not Quality.BACKED_OFF]
        assert asked and all(r.quality is Quality.TIMEOUT for r in asked), asked
        late = [e for e in events if e.kind == "late_answer" and e.data["channel"] == protocol]
        # The timeout says how late the answer came, and an event names the meter.
        assert all("after the request and was dropped" in r.detail for r in asked), asked
        assert all("too late" in r.detail for r in mine if r.quality is Quality.BACKED_OFF), mine
        assert [e.data["meter"] for e in late] == [address], late
        # it began answering k timeouts after the request ended (after one of the identical
        # attempts: the event gives the most it can have been), give or take the host's latency
        began, timeout = late[0].data["began_after"], late[0].data["timeout"]
        assert k * timeout < began, late[0].data
