"""The ``gdw1376.1`` uplink against a small master station in the test: a real asyncio TCP
server on 127.0.0.1 that speaks 1376.1 through meterhub's codec, and a terminal held in
memory (readings, frozen values, events, an outbox that keeps what is not acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Self

import attrs
import pytest
from meterhub.model import Command, Event, Meter, OutboxItem, Reading, UplinkConfig
from meterhub.protocols import gdw1376_1 as g
from meterhub.protocols import gdw1376_1_data as d
from meterhub.testing import MemoryTerminal
from meterhub_gprs import uplink as up

pytestmark = pytest.mark.timeout(60)

AREA = "3201"
TERMINAL = 1
PW = bytes(range(16))
#: How long the test waits for something that should come within a few loop turns.
WAIT_S = 5.0
T0 = datetime(2026, 3, 1, 8, 15, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(up, "BACKOFF_INITIAL_S", 0.05)
    monkeypatch.setattr(up, "BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(up, "IDLE_POLL_S", 0.1)
    monkeypatch.setattr(up, "LOGOUT_TIMEOUT_S", 0.3)


# --- the terminal ---------------------------------------------------------------------------


def reading(quantity: str, value: str, *, meter: str = "000000000001", when: datetime = T0,
            period: int | None = None, data_time: datetime | None = None, unit: str = "kWh") -> Reading:
    return Reading(meter, quantity, Decimal(value), unit, when, channel="bus1", protocol="dlt645",
                   period=period, data_time=data_time)


#: The site the tests' terminal serves: two DL/T 645 meters on bus1, at points 1 and 2.
METERS = (Meter("000000000001", "dlt645", "bus1", point=1), Meter("000000000002", "dlt645", "bus1", point=2))


def memory_terminal(meters: Sequence[Meter] = METERS) -> MemoryTerminal:
    """The concentrator's terminal, in memory (:class:`meterhub.testing.MemoryTerminal`)."""
    return MemoryTerminal(meters, name="master", terminal="t1")


def refuse(command: Command) -> str:
    """A command policy that refuses everything."""
    return "policy says no"


# --- the master station ---------------------------------------------------------------------


class Master:
    """A 1376.1 master on 127.0.0.1: confirms logins and heartbeats (unless told not to),
    records every frame, and sends requests."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[g.Frame] = asyncio.Queue()
        self.connections = 0
        self.confirm_link = True
        self.confirm_reports = True
        self.deny: Callable[[g.Frame], bool] = lambda frame: False  #: reports answered AFN 00 F2
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.logins = 0
        self.link_fns: list[int] = []  #: AFN 02 Fn in the order they came (1 login, 2 logout, 3 heartbeat)
        self._server: asyncio.Server | None = None
        self._pseq = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self.writer is not None:
            self.writer.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writer = writer
        decoder = g.StreamDecoder()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                for frame in decoder.feed(data):
                    if isinstance(frame, Exception):
                        continue
                    await self._on_frame(frame, writer)

    async def _on_frame(self, frame: g.Frame, writer: asyncio.StreamWriter) -> None:
        if frame.prm and frame.afn == g.Afn.LINK:
            fn = d.units(frame)[0].functions[0]
            self.link_fns.append(fn)
            if fn == 1:
                self.logins += 1
                self.connected.set()
            if self.confirm_link:
                writer.write(g.encode(self.confirm(frame, g.SecondaryFunction.LINK_STATUS)))
        elif frame.prm and frame.con:
            await self.frames.put(frame)
            if self.deny(frame):
                writer.write(g.encode(self.confirm(frame, g.SecondaryFunction.CONFIRM, fn=2)))
            elif self.confirm_reports:
                writer.write(g.encode(self.confirm(frame, g.SecondaryFunction.CONFIRM)))
        else:
            await self.frames.put(frame)

    @staticmethod
    def confirm(frame: g.Frame, function: int, fn: int = 1) -> g.Frame:
        return g.Frame(g.Direction.DOWN, False, function, frame.area, frame.terminal, g.Afn.CONFIRM,
                       g.pack_units([d.unit([0], [fn])]), seq=frame.seq)

    def request(self, afn: int, units: list[g.DataUnit], *, pw: bytes | None = None, terminal: int = TERMINAL,
                area: str = AREA, group: bool = False) -> g.Frame:
        seq = self._pseq
        self._pseq = (self._pseq + 1) % 16
        function = g.PrimaryFunction.REQUEST_CLASS2 if afn in (0x0A, 0x0D, 0x0E) else g.PrimaryFunction.REQUEST_CLASS1
        if pw is None and g.carries_pw(g.Direction.DOWN, afn):
            pw = PW
        return g.Frame(g.Direction.DOWN, True, function, area, terminal, afn, g.pack_units(units), master=5,
                       seq=seq, con=afn in (0x04, 0x05), pw=pw, group=group)

    async def send(self, data: bytes | g.Frame) -> None:
        await asyncio.wait_for(self.connected.wait(), WAIT_S)
        assert self.writer is not None
        self.writer.write(g.encode(data) if isinstance(data, g.Frame) else data)
        await self.writer.drain()

    async def ask(self, frame: g.Frame) -> g.Frame:
        """Send a request; the answer frame that carries its sequence."""
        await self.send(frame)
        return await self.next(lambda f: not f.prm and f.seq == frame.seq)

    async def next(self, wanted: Any = lambda f: True) -> g.Frame:
        while True:
            frame = await asyncio.wait_for(self.frames.get(), WAIT_S)
            if wanted(frame):
                return frame

    async def hang_up(self) -> None:
        assert self.writer is not None
        self.connected.clear()
        self.writer.close()


@contextlib.asynccontextmanager
async def session(terminal: MemoryTerminal | None = None, *, confirm_timeout: float = 0.5,
                  **options: Any) -> AsyncIterator[tuple[Master, up.Gdw1376Uplink, MemoryTerminal]]:
    terminal = terminal or memory_terminal()
    async with Master() as master:
        config = {"server": f"127.0.0.1:{master.port}", "area_code": AREA, "terminal_address": TERMINAL,
                  "heartbeat_s": 60, "password": PW.hex(), **options}
        assert up._problems(config) == []
        uplink = up.Gdw1376Uplink(up.settings(config), terminal, confirm_timeout=confirm_timeout)
        task = asyncio.get_running_loop().create_task(uplink.run())
        try:
            await asyncio.wait_for(master.connected.wait(), WAIT_S)
            yield master, uplink, terminal
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def one_item(frame: g.Frame) -> Any:
    (item,) = d.items(frame)
    return item.value


# --- the link ----------------------------------------------------------------------------------


def test_login_is_confirmed_and_heartbeats_follow():
    async def scenario():
        async with session(heartbeat_s=0.1) as (master, uplink, _terminal):
            await asyncio.sleep(0.5)
            return master.logins, uplink.connections, master.connections

    logins, connections, tcp = run(scenario())
    assert (logins, connections, tcp) == (1, 1, 1)


def test_heartbeats_carry_function_9_and_con(caplog):
    async def scenario():
        async with session(heartbeat_s=0.1) as (master, _uplink, _terminal):
            seen: list[g.Frame] = []
            original = master._on_frame

            async def spy(frame, writer):
                seen.append(frame)
                await original(frame, writer)

            master._on_frame = spy  # type: ignore[method-assign]
            await asyncio.sleep(0.45)
            return seen

    seen = run(scenario())
    beats = [f for f in seen if f.afn == g.Afn.LINK and d.units(f)[0].functions == (3,)]
    assert len(beats) >= 2
    assert all(f.prm and f.function == g.PrimaryFunction.LINK_TEST and f.con and f.direction is g.Direction.UP
               for f in beats)
    assert len({f.seq for f in beats}) == len(beats)  # PSEQ counts on


def test_unconfirmed_heartbeats_drop_the_connection_and_it_logs_in_again():
    async def scenario():
        async with session(heartbeat_s=0.1, confirm_timeout=0.1) as (master, _uplink, _terminal):
            master.confirm_link = False  # the login is in; now the heartbeats go unanswered
            for _ in range(100):  # 3 heartbeats of 0.1 s, each given 0.1 s
                if master.connections >= 2:
                    break
                await asyncio.sleep(0.05)
            master.confirm_link = True
            for _ in range(100):
                if master.logins >= 2:
                    break
                await asyncio.sleep(0.05)
            return master.logins, master.connections

    logins, connections = run(scenario())
    assert logins >= 2 and connections >= 2


def test_reconnects_after_the_master_hangs_up():
    async def scenario():
        async with session() as (master, uplink, _terminal):
            await master.hang_up()
            await asyncio.wait_for(master.connected.wait(), WAIT_S)
            answer = await master.ask(master.request(g.Afn.CLASS1, [d.unit([0], [2])]))
            return master.connections, uplink.connections, answer

    connections, logged_in, answer = run(scenario())
    assert connections == 2 and logged_in == 2
    assert answer.afn == g.Afn.CLASS1


def test_cancelling_logs_out():
    async def scenario():
        async with session() as (master, _uplink, _terminal):
            pass
        return master.link_fns

    assert run(scenario())[-1] == 2


def test_login_unconfirmed_is_tried_three_times_then_reconnects():
    async def scenario():
        async with Master() as master:
            master.confirm_link = False
            config = {"server": f"127.0.0.1:{master.port}", "area_code": AREA, "terminal_address": TERMINAL}
            uplink = up.Gdw1376Uplink(up.settings(config), memory_terminal(), confirm_timeout=0.05)
            task = asyncio.get_running_loop().create_task(uplink.run())
            for _ in range(100):
                if master.connections >= 2:
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return master.logins, master.connections, uplink.connections

    logins, connections, logged_in = run(scenario())
    assert connections >= 2 and logins >= 4 and logged_in == 0


# --- class 1 -------------------------------------------------------------------------------------


def test_f129_answer_is_the_stored_reading_exactly():
    terminal = memory_terminal()
    terminal.readings = [reading("1-0:1.8.0", "12345.67"), reading("1-0:1.8.1", "100.01"),
                         reading("1-0:1.8.2", "200.02"), reading("1-0:1.8.3", "300.03"), reading("1-0:1.8.4", "0")]

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            return await master.ask(master.request(g.Afn.CLASS1, [d.unit([1], [129])]))

    answer = run(scenario())
    assert answer.afn == g.Afn.CLASS1 and not answer.prm and answer.function == g.SecondaryFunction.USER_DATA
    value = one_item(answer)
    assert value.values == (Decimal("12345.67"), Decimal("100.01"), Decimal("200.02"), Decimal("300.03"), Decimal(0))
    assert value.read_time == T0.astimezone().replace(tzinfo=None, second=0)


def test_quantities_without_a_reading_are_sent_as_no_data():
    terminal = memory_terminal()
    terminal.readings = [reading("1-0:1.8.0", "5.5"), reading("1-0:32.7.0", "229.9", unit="V")]

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            return await master.ask(master.request(g.Afn.CLASS1, [d.unit([1], [25]), d.unit([1], [129])]))

    answer = run(scenario())
    values = {item.fn: item.value for item in d.items(answer)}
    assert values[129].values == (Decimal("5.5"),)
    assert values[25].voltage == (Decimal("229.9"), None, None)
    assert values[25].active == (None,) * 4 and values[25].current == (None,) * 4
    raw = answer.payload
    assert b"\xee\xee\xee" in raw  # no data is EE on the wire, not zeros


def test_a_point_without_a_meter_or_data_is_denied():
    terminal = memory_terminal()
    terminal.readings = [reading("1-0:1.8.0", "5.5")]

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            none = await master.ask(master.request(g.Afn.CLASS1, [d.unit([7], [129])]))
            mixed = master.request(g.Afn.CLASS1, [d.unit([1, 2], [129])])
            await master.send(mixed)
            first = await master.next(lambda f: not f.prm)
            second = await master.next(lambda f: not f.prm)
            return none, first, second

    none, first, second = run(scenario())
    assert none.afn == g.Afn.CONFIRM and d.units(none)[0].functions == (2,)
    assert first.afn == g.Afn.CLASS1 and [i.point for i in d.items(first)] == [1] and not first.fin
    assert second.afn == g.Afn.CONFIRM and second.fin
    results = one_item(second)
    assert [(r.points, r.error) for r in results.results] == [((2,), 1)]


def test_terminal_clock_follows_a_clock_set():
    async def scenario():
        async with session() as (master, _uplink, _terminal):
            target = datetime(2030, 1, 2, 3, 4, 5)
            set_ = await master.ask(master.request(g.Afn.CONTROL, [d.unit([0], [31], [d.ClockSet(d.Clock.at(target))])]))
            clock = await master.ask(master.request(g.Afn.CLASS1, [d.unit([0], [2])]))
            return set_, one_item(clock), target

    set_, clock, target = run(scenario())
    assert d.units(set_)[0].functions == (1,)
    assert abs((clock.time - target).total_seconds()) < 5


# --- class 2 -------------------------------------------------------------------------------------


def test_daily_frozen_energy_comes_from_frozen_readings_only():
    terminal = memory_terminal()
    day = date(2026, 2, 27)
    frozen_at = datetime(2026, 2, 27, 23, 59).astimezone(UTC)  # local 23:59 on the day, stored in UTC
    midnight = datetime(2026, 2, 27, 0, 0).astimezone(UTC)  # closes 26 February
    terminal.readings = [reading("1-0:1.8.0", "999.99"),  # a current value: never a frozen one
                         reading("1-0:1.8.0", "900.5", period=1, data_time=frozen_at),
                         reading("1-0:1.8.0", "890.5", period=1, data_time=midnight)]

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            found = await master.ask(master.request(g.Afn.CLASS2, [d.unit([1], [161], [d.DayTag(day)])]))
            before = await master.ask(master.request(g.Afn.CLASS2, [d.unit([1], [161], [d.DayTag(date(2026, 2, 26))])]))
            missing = await master.ask(master.request(g.Afn.CLASS2, [d.unit([1], [161], [d.DayTag(date(2026, 2, 1))])]))
            return found, before, missing

    found, before, missing = run(scenario())
    value = one_item(found)
    assert value.day == day and value.reading.values == (Decimal("900.5"),)
    assert one_item(before).reading.values == (Decimal("890.5"),)
    assert missing.afn == g.Afn.CONFIRM and d.units(missing)[0].functions == (2,)


# --- denials ---------------------------------------------------------------------------------------


def test_unknown_afn_is_denied():
    async def scenario():
        async with session() as (master, _uplink, _terminal):
            return await master.ask(master.request(0x0B, [d.unit([0], [1])]))

    answer = run(scenario())
    assert answer.afn == g.Afn.CONFIRM and d.units(answer)[0].functions == (2,)


def test_bad_pw_on_control_is_denied_and_nothing_is_executed(caplog):
    async def scenario():
        async with session() as (master, _uplink, terminal):
            trip = master.request(g.Afn.CONTROL, [d.unit([1], [1], [d.RemoteTrip()])], pw=bytes(16))
            answer = await master.ask(trip)
            return answer, terminal.executed, terminal.raised

    with caplog.at_level(logging.WARNING):
        answer, executed, raised = run(scenario())
    assert answer.afn == g.Afn.CONFIRM and d.units(answer)[0].functions == (2,)
    assert executed == []
    assert "wrong PW" in caplog.text
    assert [(e.kind, e.severity, e.data["afn"], e.data["reason"]) for e in raised] == [
        ("uplink_password_refused", "warning", g.Afn.CONTROL, "wrong PW")]


def test_bad_pw_on_set_is_denied_and_nothing_is_set():
    async def scenario():
        async with session() as (master, _uplink, terminal):
            record = d.MeterRecord(1, 3, 1, None, d.MeterProtocol.DLT645_2007, "000000000003")
            answer = await master.ask(master.request(g.Afn.SET, [d.unit([0], [10], [d.MeterArchive([record])])],
                                                     pw=b"\x01" * 16))
            return answer, terminal.set_meters

    answer, set_meters = run(scenario())
    assert d.units(answer)[0].functions == (2,) and set_meters == []


def test_good_pw_trips_the_points_meter_through_the_terminal():
    async def scenario():
        async with session() as (master, _uplink, terminal):
            answer = await master.ask(master.request(g.Afn.CONTROL, [d.unit([1], [1], [d.RemoteTrip()])]))
            return answer, terminal.executed

    answer, executed = run(scenario())
    assert d.units(answer)[0].functions == (1,)
    ((point, command),) = executed
    assert point == 1 and command.name == "relay" and dict(command.args) == {"action": "trip"}


def test_permit_close_is_dlt645s_close_permitted():
    async def scenario():
        async with session() as (master, _uplink, terminal):
            answer = await master.ask(master.request(g.Afn.CONTROL, [d.unit([2], [2])]))
            return answer, terminal.executed

    answer, executed = run(scenario())
    assert d.units(answer)[0].functions == (1,)
    assert [(p, dict(c.args)) for p, c in executed] == [(2, {"action": "close_permitted"})]


def test_a_refused_command_is_a_deny():
    terminal = memory_terminal()
    terminal.policy = refuse

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            return await master.ask(master.request(g.Afn.CONTROL, [d.unit([1], [2])]))

    assert d.units(run(scenario()))[0].functions == (2,)


def test_f10_set_maps_the_protocol_and_keeps_the_points_channel():
    async def scenario():
        async with session() as (master, _uplink, terminal):
            record = d.MeterRecord(1, 2, 1, None, d.MeterProtocol.DLT645_1997, "000000000009")
            answer = await master.ask(master.request(g.Afn.SET, [d.unit([0], [10], [d.MeterArchive([record])])]))
            return answer, terminal.set_meters

    answer, set_meters = run(scenario())
    assert d.units(answer)[0].functions == (1,)
    ((point, meter),) = set_meters
    assert point == 2 and meter.protocol == "dlt645-1997" and meter.address == "000000000009" and meter.channel == "bus1"


def test_damaged_frames_are_ignored_and_the_session_goes_on():
    async def scenario():
        async with session() as (master, _uplink, _terminal):
            good = master.request(g.Afn.CLASS1, [d.unit([0], [2])])
            bad_cs = bytearray(g.encode(good))
            bad_cs[-2] ^= 0xFF
            await master.send(bytes(bad_cs))
            # a lying unit: F10 says two records, carries one
            record = d.MeterRecord(1, 3, 1, None, 30, "000000000003").encode()
            lying = master.request(g.Afn.QUERY, [g.DataUnit([0], [1], b"")])
            lying = g.Frame(**{**{a: getattr(lying, a) for a in (
                "direction", "prm", "function", "area", "terminal", "afn", "master", "seq", "con")},
                "payload": g.unit_id_to_wire([0], [10]) + b"\x02\x00" + record + b"\x01\x00"})
            denied = await master.ask(lying)
            answer = await master.ask(good)
            return denied, answer

    denied, answer = run(scenario())
    assert denied.afn == g.Afn.CONFIRM and d.units(denied)[0].functions == (2,)
    assert answer.afn == g.Afn.CLASS1


def test_frames_for_another_terminal_are_ignored():
    async def scenario():
        async with session() as (master, _uplink, _terminal):
            await master.send(master.request(g.Afn.CLASS1, [d.unit([0], [2])], terminal=2))
            mine = master.request(g.Afn.CLASS1, [d.unit([0], [2])])
            answer = await master.ask(mine)
            return answer, master.frames.qsize()

    answer, left = run(scenario())
    assert answer.terminal == TERMINAL and left == 0


# --- events and store-and-forward -------------------------------------------------------------------


def test_events_are_answered_as_erc_records():
    terminal = memory_terminal()
    terminal.stored_events = [
        Event("meter_dead", source="bus1/dlt645:000000000002", timestamp=T0),
        Event("round_finished", source="concentrator", timestamp=T0),  # no ERC: not counted
        Event("link_down", source="bus1", timestamp=T0),
        Event("meter_recovered", source="bus1/dlt645:000000000002", timestamp=T0),
    ]

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            return await master.ask(master.request(g.Afn.CLASS3, [d.unit([0], [1], [d.EventRequest(0, 3)])]))

    reply = one_item(run(scenario()))
    assert (reply.important, reply.start, reply.end) == (3, 0, 3)
    dead, fault, back = reply.records
    assert isinstance(dead, d.ReadFailure) and dead.point == d.PointFlag(2, True)
    assert isinstance(fault, d.TerminalFault) and fault.code == d.TerminalFaultCode.METER_READING_PORT
    assert back.point == d.PointFlag(2, False)


def test_outbox_is_acked_only_after_the_masters_confirm():
    terminal = memory_terminal()
    ids = terminal.enqueue(reading("1-0:1.8.0", "42.42"), reading("1-0:32.7.0", "230", unit="V"))

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            report = await master.next(lambda f: f.prm and f.afn == g.Afn.CLASS1)
            for _ in range(100):
                if not terminal.waiting:
                    break
                await asyncio.sleep(0.02)
            return report

    report = run(scenario())
    assert report.function == g.PrimaryFunction.USER_DATA and report.con
    assert one_item(report).values == (Decimal("42.42"),)
    assert sorted(terminal.acked) == ids  # the voltage was not expressible: acked unsent


def test_unconfirmed_reports_stay_queued_and_are_sent_again_after_a_reconnect():
    terminal = memory_terminal()
    (ident,) = terminal.enqueue(reading("1-0:1.8.0", "7.07"))

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            master.confirm_reports = False
            first = await master.next(lambda f: f.prm and f.afn == g.Afn.CLASS1)
            await asyncio.sleep(0.2)
            still = [i.id for i in terminal.waiting]
            master.confirm_reports = True
            await master.hang_up()
            second = await master.next(lambda f: f.prm and f.afn == g.Afn.CLASS1)
            for _ in range(100):
                if not terminal.waiting:
                    break
                await asyncio.sleep(0.02)
            return first, still, second, master.connections

    first, still, second, connections = run(scenario())
    assert still == [ident]
    assert one_item(first).values == one_item(second).values == (Decimal("7.07"),)
    assert terminal.acked == [ident] and connections >= 2


def test_forbidden_reporting_holds_the_outbox():
    terminal = memory_terminal()

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            answer = await master.ask(master.request(g.Afn.CONTROL, [d.unit([0], [37])]))
            terminal.enqueue(reading("1-0:1.8.0", "1"))
            await asyncio.sleep(0.3)
            held = len(terminal.waiting)
            await master.ask(master.request(g.Afn.CONTROL, [d.unit([0], [29])]))
            report = await master.next(lambda f: f.prm and f.afn == g.Afn.CLASS1)
            return answer, held, report

    answer, held, report = run(scenario())
    assert d.units(answer)[0].functions == (1,) and held == 1 and report.afn == g.Afn.CLASS1


def test_long_answers_are_split_with_fir_fin_and_consecutive_rseq():
    terminal = memory_terminal([Meter(f"{p:012d}", "dlt645", "bus1", point=p) for p in range(1, 9)])
    terminal.readings = [reading("1-0:1.8.0", "1.5", meter=f"{p:012d}") for p in range(1, 9)]

    async def scenario():
        async with session(terminal, max_frame=100) as (master, _uplink, _terminal):
            request = master.request(g.Afn.CLASS1, [d.unit(range(1, 9), [129])])
            await master.send(request)
            frames = [await master.next(lambda f: not f.prm)]
            while not frames[-1].fin:
                frames.append(await master.next(lambda f: not f.prm))
            return request, frames

    request, frames = run(scenario())
    assert len(frames) > 1
    assert frames[0].fir and not any(f.fir for f in frames[1:]) and frames[-1].fin
    assert [f.seq for f in frames] == [(request.seq + i) % 16 for i in range(len(frames))]
    assert all(f.user_data_length <= 100 for f in frames)
    assert sorted(i.point for f in frames for i in d.items(f)) == list(range(1, 9))


# --- configuration ----------------------------------------------------------------------------------


def test_validate_names_every_bad_key():
    driver = up.Gdw1376UplinkDriver()
    problems = dict(driver.validate(UplinkConfig("m", "gdw1376.1", {
        "transport": "tcp", "server": "nowhere", "area_code": 3201, "terminal_address": 0,
        "heartbeat_s": -1, "colour": "red", "apn": "cmnet"})))
    assert set(problems) == {"server", "area_code", "terminal_address", "heartbeat_s", "colour", "apn"}
    assert "host:port" in problems["server"] and "quotes" in problems["area_code"]
    missing = driver.validate(UplinkConfig("m", "gdw1376.1", {"transport": "gprs", "model": "nokia 3310"}))
    text = " ".join(m for _k, m in missing)
    for word in ("server", "area_code", "terminal_address", "port", "apn", "unknown modem model"):
        assert word in text


def test_a_good_section_passes_and_makes_an_uplink():
    driver = up.Gdw1376UplinkDriver()
    config = UplinkConfig("m", "gdw1376.1", {"transport": "tcp", "server": "127.0.0.1:4001", "area_code": "3201",
                                            "terminal_address": 1, "heartbeat_s": 60, "password": "master-pw"})
    assert driver.validate(config) == []
    assert isinstance(driver.create(config, memory_terminal()), up.Gdw1376Uplink)


def test_password_from_the_secret_store():
    assert up.resolve_password(PW.hex()) == PW
    assert up.resolve_password("master-pw", lambda ref: {"password": PW.hex()}) == PW
    with pytest.raises(up.CredentialError):
        up.resolve_password("master-pw", lambda ref: {"password": "123456"})


# --- more of the protocol ------------------------------------------------------------------------


def test_broadcast_is_carried_out_but_not_answered():
    async def scenario():
        async with session() as (master, uplink, _terminal):
            forbid = master.request(g.Afn.CONTROL, [d.unit([0], [37])], terminal=g.BROADCAST_TERMINAL, group=True)
            await master.send(forbid)
            clock = await master.ask(master.request(g.Afn.CLASS1, [d.unit([0], [2])]))
            return uplink.reporting, clock, master.frames.qsize()

    reporting, clock, left = run(scenario())
    assert reporting is False and clock.afn == g.Afn.CLASS1 and left == 0


def test_a_request_later_than_its_tp_allows_is_dropped():
    async def scenario():
        async with session() as (master, uplink, _terminal):
            old = uplink.now() - timedelta(minutes=10)
            sent = g.PartialTime(day=old.day, hour=old.hour, minute=old.minute, second=old.second)
            late = attrs.evolve(master.request(g.Afn.CLASS1, [d.unit([0], [2])]), tp=g.TimeTag(1, sent, 5))
            await master.send(late)
            fresh = attrs.evolve(master.request(g.Afn.CLASS1, [d.unit([0], [2])]), tp=g.TimeTag(2, sent, 15))
            answer = await master.ask(fresh)
            return late, answer, master.frames.qsize()

    late, answer, left = run(scenario())
    assert answer.seq != late.seq and left == 0
    assert answer.tp is not None and answer.tp.pfc == 2  # Tp is echoed


def test_master_station_query_and_set():
    async def scenario():
        async with session() as (master, uplink, _terminal):
            before = one_item(await master.ask(master.request(g.Afn.QUERY, [d.unit([0], [3])])))
            station = d.MasterStation("10.1.2.3", 7000, "10.1.2.4", 7001, "cmnet")
            answer = await master.ask(master.request(g.Afn.SET, [d.unit([0], [3], [station])]))
            after = one_item(await master.ask(master.request(g.Afn.QUERY, [d.unit([0], [3])])))
            return before, answer, after, uplink.server

    before, answer, after, server = run(scenario())
    assert str(before.main) == "127.0.0.1"
    assert d.units(answer)[0].functions == (1,)
    assert (str(after.main), after.main_port, after.apn) == ("10.1.2.3", 7000, "cmnet")
    assert server == ("10.1.2.3", 7000)


def test_uplink_params_set_the_heartbeat_at_once():
    async def scenario():
        async with session() as (master, uplink, _terminal):
            params = d.UplinkParams(0, 0, 30, 1, (True, False, False), 5)
            answer = await master.ask(master.request(g.Afn.SET, [d.unit([0], [1], [params])]))
            query = one_item(await master.ask(master.request(g.Afn.QUERY, [d.unit([0], [1])])))
            return answer, uplink.heartbeat_s, query

    answer, heartbeat, query = run(scenario())
    assert d.units(answer)[0].functions == (1,) and heartbeat == 300 and query.heartbeat == 5


def test_meter_archive_query_lists_the_points():
    async def scenario():
        async with session() as (master, _uplink, _terminal):
            return one_item(await master.ask(master.request(g.Afn.QUERY, [d.unit([0], [10], [d.ArchiveQuery([])])])))

    archive = run(scenario())
    assert [(r.point, r.address, r.protocol) for r in archive.records] == [
        (1, "000000000001", d.MeterProtocol.DLT645_2007), (2, "000000000002", d.MeterProtocol.DLT645_2007)]


def test_f33_carries_the_active_tariffs_and_no_data_for_reactive():
    terminal = memory_terminal()
    terminal.readings = [reading("1-0:1.8.0", "10.5"), reading("1-0:1.8.1", "4.25"), reading("1-0:1.8.2", "6.25")]

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            return one_item(await master.ask(master.request(g.Afn.CLASS1, [d.unit([1], [33])])))

    value = run(scenario())
    assert value.active == (Decimal("10.5"), Decimal("4.25"), Decimal("6.25"))
    assert value.reactive == value.q1 == value.q4 == (None, None, None)


def test_a_slow_command_does_not_hold_up_the_heartbeats():
    terminal = memory_terminal()
    slow = asyncio.Event()

    async def answer(meter, command):  # a meter that takes its time
        await slow.wait()
        return {"ok": True}

    terminal.answer = answer

    async def scenario():
        async with session(terminal, heartbeat_s=0.1, confirm_timeout=0.2) as (master, _uplink, _terminal):
            await master.send(master.request(g.Afn.CONTROL, [d.unit([1], [1], [d.RemoteTrip()])]))
            await asyncio.sleep(1.0)  # 3 unconfirmed heartbeats would have dropped the connection
            slow.set()
            answer = await master.next(lambda f: not f.prm)
            return answer, master.connections

    answer, connections = run(scenario())
    assert d.units(answer)[0].functions == (1,) and connections == 1


def test_monthly_frozen_energy_for_the_month_asked():
    terminal = memory_terminal()
    frozen_at = datetime(2026, 2, 1, 0, 0)  # local: the end of January is stamped 1 February 00:00
    stamped = frozen_at.astimezone(UTC)
    terminal.readings = [reading("1-0:1.8.0", "800.25", period=1, data_time=stamped),
                         reading("1-0:1.8.1", "300.25", period=1, data_time=stamped)]

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            month = d.MonthTag(g.PartialTime(year=2026, month=1))
            return await master.ask(master.request(g.Afn.CLASS2, [d.unit([1], [177], [month])]))

    value = one_item(run(scenario()))
    assert value.month == g.PartialTime(year=2026, month=1)
    assert value.reading.values == (Decimal("800.25"), Decimal("300.25"))


def test_gprs_transport_brings_the_modem_up_with_the_sections_settings():
    from meterhub_gprs.modem import ModemConnector

    config = {"transport": "gprs", "server": "10.0.0.1:4001", "area_code": "3201", "terminal_address": 1,
              "port": "/dev/ttyUSB2", "apn": "cmnet", "baudrate": 9600, "pin": "1234", "mode": "transparent"}
    assert up._problems(config) == []
    connector = up.Gdw1376Uplink(up.settings(config), memory_terminal())._connect_with()
    assert isinstance(connector, ModemConnector)
    assert (connector.url, connector.apn, connector.server, connector.baudrate, connector.pin, connector.mode) == (
        "/dev/ttyUSB2", "cmnet", ("10.0.0.1", 4001), 9600, "1234", "transparent")


def test_an_unreachable_master_is_retried_and_logged_once(caplog):
    async def scenario():
        async with Master() as master:
            port = master.port
        config = {"server": f"127.0.0.1:{port}", "area_code": AREA, "terminal_address": TERMINAL}
        uplink = up.Gdw1376Uplink(up.settings(config), memory_terminal())
        task = asyncio.get_running_loop().create_task(uplink.run())
        await asyncio.sleep(0.8)  # back-off 0.05 s doubling to 0.2 s: several tries
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task

    with caplog.at_level(logging.DEBUG, logger="meterhub_gprs.uplink"):
        run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    tries = [r for r in caplog.records if "still down" in r.getMessage()]
    assert len(warnings) == 1 and len(tries) >= 2


def test_a_failing_terminal_ends_the_run_for_the_runner_to_restart():
    terminal = memory_terminal()

    async def broken(limit: int = 100):
        raise RuntimeError("store is gone")

    terminal.outbox = broken  # type: ignore[method-assign]

    async def scenario():
        async with Master() as master:
            config = {"server": f"127.0.0.1:{master.port}", "area_code": AREA, "terminal_address": TERMINAL}
            await asyncio.wait_for(up.Gdw1376Uplink(up.settings(config), terminal).run(), WAIT_S)

    with pytest.raises(RuntimeError, match="store is gone"):
        run(scenario())


def _items(*readings_: Reading) -> list[OutboxItem]:
    return [OutboxItem(i, "master", r, T0) for i, r in enumerate(readings_, start=1)]


def _f129_totals(frames: list[tuple[int, list[g.DataUnit], list[int]]]) -> list[tuple[list[int], bytes]]:
    return [(ids, units[0].data) for afn, units, ids in frames if afn == g.Afn.CLASS1]


def _offline_uplink() -> up.Gdw1376Uplink:
    config = {"server": "127.0.0.1:9", "area_code": AREA, "terminal_address": TERMINAL}
    return up.Gdw1376Uplink(up.settings(config), memory_terminal())


def test_two_visits_in_one_minute_are_two_reports_never_one_mixed():
    uplink = _offline_uplink()
    second = T0 + timedelta(seconds=20)
    items = _items(reading("1-0:1.8.0", "10.00"), reading("1-0:1.8.1", "4.00"),
                   reading("1-0:1.8.0", "10.01", when=second), reading("1-0:1.8.1", "4.01", when=second))
    frames = _f129_totals(uplink._report_frames(items))
    assert [ids for ids, _ in frames] == [[1, 2], [3, 4]]
    assert [d.TariffEnergy.decode(data).values[:2] for _, data in frames] == [
        (Decimal("10.00"), Decimal("4.00")), (Decimal("10.01"), Decimal("4.01"))]


def test_a_visit_cut_by_the_batch_waits_for_the_next_batch_whole():
    uplink = _offline_uplink()
    items = _items(reading("1-0:1.8.0", "10.00"), reading("1-0:1.8.1", "4.00"),
                   reading("1-0:1.8.0", "20.00", meter="000000000002"))  # point 2's tariffs are past the batch
    frames = uplink._report_frames(items, more=True)
    assert [ids for _afn, _units, ids in frames] == [[1, 2]]
    assert [ids for _afn, _units, ids in uplink._report_frames(items[2:], more=False)] == [[3]]


# --- the master's settings and controls of the terminal itself ---------------------------------------


def test_a_clock_set_is_a_command_on_the_terminal_and_is_kept():
    async def scenario():
        async with session() as (master, uplink, terminal):
            target = datetime(2030, 1, 2, 3, 4, 5)
            await master.ask(master.request(g.Afn.CONTROL, [d.unit([0], [31], [d.ClockSet(d.Clock.at(target))])]))
            return terminal, uplink.clock_offset

    terminal, offset = run(scenario())
    (command,) = terminal.commands
    assert command.name == "set_clock" and command.args == {"time": "2030-01-02T03:04:05"}
    assert command.meter == "" and command.issuer.startswith("gdw1376.1 master")
    assert terminal.kept["clock_offset_s"] == {"value": offset.total_seconds(), "given": 0.0}


def test_a_refused_clock_set_is_denied_and_changes_nothing():
    terminal = memory_terminal()
    terminal.policy = refuse

    async def scenario():
        async with session(terminal) as (master, uplink, _terminal):
            target = datetime(2030, 1, 2, 3, 4, 5)
            answer = await master.ask(master.request(
                g.Afn.CONTROL, [d.unit([0], [31], [d.ClockSet(d.Clock.at(target))])]))
            return answer, uplink.clock_offset

    answer, offset = run(scenario())
    assert d.units(answer)[0].functions == (2,)
    assert offset == timedelta(0) and terminal.kept == {}


def test_settings_the_master_made_outlive_a_restart():
    terminal = memory_terminal()

    async def scenario():
        async with session(terminal) as (master, _uplink, _terminal):
            params = d.UplinkParams(0, 0, 30, 1, (True, False, False), 5)
            await master.ask(master.request(g.Afn.SET, [d.unit([0], [1], [params])]))
            await master.ask(master.request(g.Afn.CONTROL, [d.unit([0], [37])]))  # forbid active reports
        async with session(terminal) as (_master, uplink, _terminal):
            await asyncio.sleep(0.05)  # restore() runs first thing in run()
            return uplink.heartbeat_s, uplink.reporting

    assert run(scenario()) == (300, False)
    assert [c.name for c in terminal.commands] == ["set_heartbeat", "set_active_reporting"]


def test_a_setting_the_site_file_changed_since_is_dropped_for_the_files():
    terminal = memory_terminal()
    terminal.kept["heartbeat_s"] = {"value": 300.0, "given": 120.0}  # the file said 120 s then; it says 60 now
    terminal.kept["apn"] = {"value": "cmiot", "given": ""}

    async def scenario():
        async with session(terminal) as (_master, uplink, _terminal):
            await asyncio.sleep(0.05)
            return uplink.heartbeat_s, uplink.apn

    assert run(scenario()) == (60, "cmiot")
    assert set(terminal.kept) == {"apn"}


def test_a_kept_setting_that_cannot_be_used_is_dropped(caplog):
    terminal = memory_terminal()
    terminal.kept["heartbeat_s"] = {"value": "soon", "given": 60.0}

    async def scenario():
        async with session(terminal) as (_master, uplink, _terminal):
            await asyncio.sleep(0.05)
            return uplink.heartbeat_s

    with caplog.at_level(logging.WARNING):
        assert run(scenario()) == 60
    assert terminal.kept == {} and "heartbeat_s cannot be used" in caplog.text


def test_a_heartbeat_of_zero_minutes_is_denied():
    async def scenario():
        async with session() as (master, uplink, terminal):
            params = d.UplinkParams(0, 0, 30, 1, (True, False, False), 0)
            answer = await master.ask(master.request(g.Afn.SET, [d.unit([0], [1], [params])]))
            return answer, uplink.heartbeat_s, terminal.kept

    answer, heartbeat, kept = run(scenario())
    assert d.units(answer)[0].functions == (2,) and heartbeat == 60 and kept == {}


def test_the_meter_archive_set_is_one_command_with_its_records():
    async def scenario():
        async with session() as (master, _uplink, terminal):
            record = d.MeterRecord(1, 2, 1, None, d.MeterProtocol.DLT645_2007, "000000000009")
            await master.ask(master.request(g.Afn.SET, [d.unit([0], [10], [d.MeterArchive([record])])]))
            return terminal.commands

    (command,) = run(scenario())
    assert command.name == "set_meter_archive"
    assert command.args == {"records": [{"point": 2, "protocol": 30, "address": "000000000009"}]}


def test_a_report_the_master_keeps_denying_is_given_up_and_the_rest_goes_on():
    terminal = memory_terminal()
    refused, fine = terminal.enqueue(reading("1-0:1.8.0", "6.66", meter="000000000001"),
                                     reading("1-0:1.8.0", "7.77", meter="000000000002"))

    async def scenario():
        async with session(terminal, confirm_timeout=0.05) as (master, _uplink, _terminal):
            master.deny = lambda frame: frame.afn == g.Afn.CLASS1 and d.units(frame)[0].points == (1,)
            for _ in range(200):
                if not terminal.waiting:
                    break
                await asyncio.sleep(0.02)
            sent = []
            while not master.frames.empty():
                frame = master.frames.get_nowait()
                if frame.prm and frame.afn == g.Afn.CLASS1:
                    sent.append(d.units(frame)[0].points)
            return sent

    sent = run(scenario())
    assert sent.count((1,)) == up.DENIED_TRIES and sent[-1] == (2,)
    (event,) = [e for e in terminal.raised if e.kind == "uplink_report_denied"]
    assert event.data["outbox_ids"] == [refused] and event.data["units"] == ["pn 1 F129"]
    # the event is queued for the uplink too, as the concentrator's are: 1376.1 has no ERC for it
    (denial,) = [i.id for i in terminal.queued if i.item is event]
    assert sorted(terminal.acked) == [refused, fine, denial]


def test_a_report_denied_once_then_confirmed_is_not_given_up():
    terminal = memory_terminal()
    (ident,) = terminal.enqueue(reading("1-0:1.8.0", "6.66"))
    denials = []

    def deny_once(frame):
        if frame.afn == g.Afn.CLASS1 and not denials:
            denials.append(frame)
            return True
        return False

    async def scenario():
        async with session(terminal, confirm_timeout=0.05) as (master, _uplink, _terminal):
            master.deny = deny_once
            for _ in range(200):
                if not terminal.waiting:
                    break
                await asyncio.sleep(0.02)

    run(scenario())
    assert terminal.acked == [ident] and len(denials) == 1
    assert not [e for e in terminal.raised if e.kind == "uplink_report_denied"]
