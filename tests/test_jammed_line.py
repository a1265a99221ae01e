"""A device that jams the RS485 pair with garbage: the line is blamed (a channel-level
event, readings recorded as link_error), not the healthy meters, which are neither
recorded as frame errors nor backed off, and are read again as soon as the line clears.
Real path: a pyserial port on a pseudo-terminal, simulated DL/T 645 meters, a SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import attrs
import pytest

from meterhub.config import parse_site
from meterhub.model import Quality
from meterhub.plugins import get_plugins
from meterhub.runtime import Concentrator
from meterhub.simsite import MeterSpec, SimBus, site_text, start_bus
from meterhub.store import open_store


@pytest.fixture
def line() -> Iterator[SimBus]:
    sim = start_bus(get_plugins().simulators(), [MeterSpec("dlt645", 4)], seed=11)
    yield sim
    sim.stop()


def test_a_jammed_line_is_the_lines_fault_and_the_meters_are_read_once_it_clears(line, tmp_path):
    plugins = get_plugins()
    text = site_text({"bus1": line}, store=f"sqlite:///{tmp_path / 'jam.db'}")
    site = parse_site(text, filename="<jam>", drivers=plugins.meter_drivers(), transports=plugins.transports())
    site = attrs.evolve(site, meters=tuple(attrs.evolve(m, quantities=("1-0:1.8.0",)) for m in site.meters))
    babbler = line.bus.devices[3]

    async def rounds() -> tuple[list, list, list, list]:
        with open_store(site.store) as store:
            async with Concentrator(site, plugins=plugins, store=store) as conc:
                line.bus.set_fault(babbler.address, "jam")
                jammed = await conc.run_round()
                down = [conc.channel_errors()]  # what run --once reports (and exits 3 for)
                line.bus.set_fault(babbler.address, None)
                clear = await conc.run_round()
                down.append(conc.channel_errors())
            return list(jammed.readings), list(clear.readings), store.events(), down

    jammed, clear, events, down = asyncio.run(rounds())

    assert {r.quality for r in jammed} == {Quality.LINK_ERROR}, jammed
    assert "jammed" in jammed[0].detail and all("jammed" in r.detail for r in jammed), jammed
    kinds = [e.kind for e in events]
    assert kinds.count("line_jammed") == 1 and "line_clear" in kinds, kinds
    assert "meter_dead" not in kinds, kinds  # no meter was blamed
    assert "jammed" in down[0]["bus1"] and down[1] == {}, down
    # nobody was backed off: every meter is read in the next round, once the line is clear
    assert [r.quality for r in clear] == [Quality.OK] * 4, clear
