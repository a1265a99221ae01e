"""The ``gdw1376.1`` uplink over core's own terminal facade: a real Concentrator with a
SQLite store file and :class:`meterhub.uplinks.ConcentratorTerminal`, against the
in-test master of ``test_uplink`` (no rounds run: readings are written to the store as a
round writes them, with the uplink's outbox)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from meterhub.model import ChannelConfig, Meter, Reading, Site
from meterhub.plugins import Plugins
from meterhub.protocols import gdw1376_1 as g
from meterhub.protocols import gdw1376_1_data as d
from meterhub.runtime import Concentrator
from meterhub.store import open_store
from meterhub.uplinks import ConcentratorTerminal

from meterhub_gprs import uplink as up

pytestmark = pytest.mark.timeout(60)

WAIT_S = 5.0
T0 = datetime(2026, 3, 1, 8, 15, tzinfo=UTC)
METER = Meter("000000000001", "dlt645", "bus1", ("1-0:1.8.0", "1-0:1.8.1"), point=1)


def reading(quantity: str, value: str) -> Reading:
    return Reading(METER.address, quantity, Decimal(value), "kWh", T0, channel="bus1", protocol="dlt645")


async def frames_until(reader: asyncio.StreamReader, decoder: g.StreamDecoder, wanted) -> g.Frame:
    while True:
        for frame in decoder.feed(await asyncio.wait_for(reader.read(4096), WAIT_S)):
            if not isinstance(frame, Exception) and wanted(frame):
                return frame


def confirm(frame: g.Frame) -> bytes:
    return g.encode(g.Frame(g.Direction.DOWN, False, g.SecondaryFunction.CONFIRM, frame.area, frame.terminal,
                            g.Afn.CONFIRM, g.pack_units([d.unit([0], [1])]), seq=frame.seq))


def test_store_readings_answer_f129_and_the_outbox_is_acked_on_confirm(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    site = Site(channels={"bus1": ChannelConfig("bus1", "rs485", "/dev/null")}, meters=(METER,), store=url)
    store = open_store(url)
    connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def scenario():
        server = await asyncio.start_server(lambda r, w: connections.put_nowait((r, w)), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with Concentrator(site, plugins=Plugins(), store=store) as conc:
            await conc.store_call(lambda s: s.add_readings([reading("1-0:1.8.0", "321.09"),
                                                             reading("1-0:1.8.1", "21.09")], outbox=["master"]))
            terminal = ConcentratorTerminal("master", conc)
            config = {"server": f"127.0.0.1:{port}", "area_code": "3201", "terminal_address": 1}
            task = asyncio.get_running_loop().create_task(
                up.Gdw1376Uplink(up.settings(config), terminal, confirm_timeout=0.5).run())
            try:
                reader, writer = await asyncio.wait_for(connections.get(), WAIT_S)
                decoder = g.StreamDecoder()
                login = await frames_until(reader, decoder, lambda f: f.afn == g.Afn.LINK)
                writer.write(confirm(login))
                report = await frames_until(reader, decoder, lambda f: f.prm and f.afn == g.Afn.CLASS1)
                queued_before = await conc.store_call(lambda s: s.outbox_size("master"))
                writer.write(confirm(report))
                request = g.Frame(g.Direction.DOWN, True, g.PrimaryFunction.REQUEST_CLASS2, "3201", 1, g.Afn.CLASS1,
                                  g.pack_units([d.unit([1], [129])]), seq=7)
                writer.write(g.encode(request))
                answer = await frames_until(reader, decoder, lambda f: not f.prm and f.seq == 7)
                for _ in range(200):
                    if not await conc.store_call(lambda s: s.outbox_size("master")):
                        break
                    await asyncio.sleep(0.02)
                queued_after = await conc.store_call(lambda s: s.outbox_size("master"))
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                server.close()
            return report, queued_before, answer, queued_after

    try:
        report, before, answer, after = asyncio.run(scenario())
    finally:
        store.close()
    (reported,) = d.items(report)
    assert reported.point == 1 and reported.value.values == (Decimal("321.09"), Decimal("21.09"))
    assert before >= 2 and after == 0
    (answered,) = d.items(answer)
    assert answered.value.values == (Decimal("321.09"), Decimal("21.09"))
