"""The head-end in-process: HeadEnd nodes on a real SQLite store file, a scripted terminal over
real TCP on 127.0.0.1 speaking the core 1376.1 codec."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from meterhub.headend.server import HeadEnd, point_units
from meterhub.model import Event, HeadEndRequest, Reading, RequestState
from meterhub.plugins import Plugins
from meterhub.protocols import gdw1376_1_data as data
from meterhub.protocols.gdw1376_1 import Afn, DataUnit, Frame
from meterhub.secrets import EnvSecrets
from meterhub.store import open_store
from meterhub.store.writer import StoreWriter
from meterhub.testing import clear_of_midnight, gdw1376
from meterhub.testing.gdw1376 import ScriptedTerminal, until

pytestmark = pytest.mark.timeout(60)

AREA, ADDRESS = "3201", 1
NAME = "32010001"
ZONE = timezone(timedelta(hours=8))  #: the terminals' local time: China Standard Time


def answer(request: Frame, afn: int, units: list[DataUnit]) -> Frame:
    return gdw1376.answer(request, afn, units)


def Terminal(port: int, respond: Callable[[Frame], list[Frame]] | None = None, *,
             address: int = ADDRESS) -> ScriptedTerminal:
    return ScriptedTerminal(port, respond, area=AREA, address=address)


@contextlib.asynccontextmanager
async def head_end(db: Path | str, **options: Any) -> AsyncIterator[HeadEnd]:
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    writer = StoreWriter(lambda: open_store(url))
    await writer.start()
    options.setdefault("realtime_s", 0)
    options.setdefault("frozen_days", 0)
    options.setdefault("frozen_months", 0)
    node = HeadEnd(writer, plugins=Plugins(load_entry_points=False), secrets=EnvSecrets({}), zone=ZONE,
                   allow=["3201/1", "3201/2"], answer_s=5.0, request_poll_s=0.05, **options)
    await node.start("127.0.0.1", 0)
    try:
        yield node
    finally:
        await node.stop()
        await writer.close()


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store several nodes share: a SQLite file, or a PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'head-end.db'}"


def test_two_nodes_on_one_store_each_carry_out_the_requests_of_the_terminal_it_holds(shared_store: str) -> None:
    def respond_as(point: int) -> Callable[[Frame], list[Frame]]:
        def respond(request: Frame) -> list[Frame]:
            if request.afn != Afn.CLASS1:
                return []
            value = data.TariffEnergy(datetime(2026, 12, 3, 16, 5), [Decimal(point)])
            return [answer(request, Afn.CLASS1, [data.unit([point], [129], [value])])]
        return respond

    async def scenario() -> dict[str, Any]:
        async with head_end(shared_store, node="a") as a, head_end(shared_store, node="b") as b, \
                Terminal(a.port, respond_as(1), address=1), Terminal(b.port, respond_as(2), address=2):
            asks = {name: HeadEndRequest(name, "read", {"points": [p], "fns": [129]})
                    for name, p in (("32010001", 1), ("32010002", 2))}
            with open_store(shared_store) as asker:
                for request in asks.values():
                    asker.add_request(request)
                done = {}
                for name, request in asks.items():
                    done[name] = await until(
                        lambda r=request: (rec := asker.request(r.id)).state is RequestState.ANSWERED and rec,
                        f"the answer for {name}")
                held = sorted((t.name, t.node, t.online) for t in asker.terminals())
                return done, held

    done, held = run(scenario)
    assert {name: r.node for name, r in done.items()} == {"32010001": "a", "32010002": "b"}
    assert [r.answer["items"][0]["value"]["values"][0] for r in done.values()] == ["1.0000", "2.0000"]
    assert held == [("32010001", "a", True), ("32010002", "b", True)]
    with open_store(shared_store) as store:  # and once the nodes stopped
        assert [t.online for t in store.terminals()] == [False, False]


def test_a_request_reaches_the_terminal_through_the_node_that_holds_it(tmp_path: Path) -> None:
    db = tmp_path / "head-end.db"
    energy = data.TariffEnergy(datetime(2026, 12, 3, 16, 5), [Decimal("12.34"), Decimal("1.00")])

    def respond(request: Frame) -> list[Frame]:
        return [answer(request, Afn.CLASS1, [data.unit([1], [129], [energy])])] if request.afn == Afn.CLASS1 else []

    async def scenario() -> tuple[Any, str, str]:
        async with head_end(db, node="a") as a, head_end(db, node="b") as b, Terminal(b.port, respond):
            request = HeadEndRequest(NAME, "read", {"points": [1], "fns": [129]})
            with open_store(f"sqlite:///{db}") as asker:
                asker.add_request(request)
                record = await until(
                    lambda: (r := asker.request(request.id)).state is RequestState.ANSWERED and r, "the answer")
                return record, a.node, b.node

    record, _a, b = run(scenario)
    assert record.node == b
    (item,) = record.answer["items"]
    assert item["value"]["values"] == ["12.3400", "1.0000"]  # A.14: four decimals
    with open_store(f"sqlite:///{db}") as store:
        stored = store.readings(terminal=NAME)
    # the answer is stored too, at its read time in the terminals' zone
    assert [(r.meter, r.quantity, r.value, r.timestamp) for r in stored] == [
        ("1", "1-0:1.8.0", Decimal("12.34"), datetime(2026, 12, 3, 8, 5, tzinfo=UTC)),
        ("1", "1-0:1.8.1", Decimal("1.00"), datetime(2026, 12, 3, 8, 5, tzinfo=UTC))]


def test_a_returning_terminal_gets_its_missing_daily_freezes_back_filled(tmp_path: Path) -> None:
    db = tmp_path / "head-end.db"
    # the scenario must not straddle the terminal's midnight (what it is asked depends on the day)
    today = clear_of_midnight(lambda: datetime.now(ZONE).replace(tzinfo=None), timedelta(seconds=30))
    have = today - timedelta(days=2)  # stored already: not asked again
    with open_store(f"sqlite:///{db}") as store:
        closing = datetime(have.year, have.month, have.day, tzinfo=ZONE) + timedelta(days=1)
        store.add_readings([Reading("1", "1-0:1.8.0", Decimal("5"), "kWh", closing.astimezone(UTC),
                                    protocol="gdw1376.1", terminal=NAME, data_time=closing.astimezone(UTC),
                                    period=1)])
    asked: list[date] = []

    def respond(request: Frame) -> list[Frame]:
        if request.afn == Afn.QUERY:
            return [gdw1376.archive_answer(request, [1])]
        if request.afn == Afn.CLASS2:
            found = data.items(request)
            day = found[0].value.day
            asked.append(day)
            read = datetime(day.year, day.month, day.day) + timedelta(days=1, minutes=5)
            value = data.DailyEnergy(day, data.TariffEnergy(read, [Decimal(day.day)]))
            return [answer(request, Afn.CLASS2, [data.unit([1], [161], [value])])]
        return []

    async def scenario() -> None:
        async with head_end(db, frozen_days=3) as node, Terminal(node.port, respond):
            await until(lambda: len(asked) >= 2, "the back-fill")
            await asyncio.sleep(0.2)

    run(scenario)
    assert sorted(asked) == [today - timedelta(days=3), today - timedelta(days=1)]
    with open_store(f"sqlite:///{db}") as store:
        frozen = [r for r in store.readings(terminal=NAME) if r.period == 1]
    assert {(r.data_time.astimezone(ZONE).date() - timedelta(days=1), r.value) for r in frozen} == {
        (have, Decimal(5)), *((d, Decimal(d.day)) for d in asked)}


def test_missing_monthly_freezes_are_back_filled_for_the_months_asked(tmp_path: Path) -> None:
    db = tmp_path / "head-end.db"
    asked: list[tuple[int, int]] = []

    def respond(request: Frame) -> list[Frame]:
        if request.afn == Afn.QUERY:
            return [gdw1376.archive_answer(request, [3])]
        if request.afn == Afn.CLASS2:
            month = data.items(request)[0].value.month
            asked.append((month.year, month.month))
            value = data.MonthlyEnergy(month, data.TariffEnergy(datetime(2026, 12, 1, 0, 5), [Decimal(month.month)]))
            return [answer(request, Afn.CLASS2, [data.unit([3], [177], [value])])]
        return []

    async def scenario() -> None:
        async with head_end(db, frozen_months=2) as node, Terminal(node.port, respond):
            await until(lambda: len(asked) >= 2, "the back-fill")
            await asyncio.sleep(0.2)

    # the scenario must not straddle the terminal's midnight (what it is asked depends on the day)
    today = clear_of_midnight(lambda: datetime.now(ZONE).replace(tzinfo=None), timedelta(seconds=30))
    run(scenario)
    last = (today.replace(day=1) - timedelta(days=1))
    before = (last.replace(day=1) - timedelta(days=1))
    assert asked == [(before.year, before.month), (last.year, last.month)]
    with open_store(f"sqlite:///{db}") as store:
        frozen = store.readings(terminal=NAME)
    closing = {r.data_time.astimezone(ZONE).replace(tzinfo=None) for r in frozen}
    # the midnight that closed each month: the 1st of the next
    assert closing == {datetime(d.year, d.month, d.day) + timedelta(days=1) for d in (before, last)}
    assert all(r.period == 1 for r in frozen)


def test_the_schedule_reads_every_point_of_the_archive(tmp_path: Path) -> None:
    db = tmp_path / "head-end.db"
    points = [1, 2, 9]

    def respond(request: Frame) -> list[Frame]:
        if request.afn == Afn.QUERY:
            return [gdw1376.archive_answer(request, points)]
        if request.afn == Afn.CLASS1:
            units = [data.unit([i.point], [129], [data.TariffEnergy(datetime(2026, 12, 3, 16, 0), [Decimal(i.point)])])
                     for i in data.items(request)]
            return [answer(request, Afn.CLASS1, units)]
        return []

    async def scenario() -> None:
        async with head_end(db, realtime_s=60) as node, Terminal(node.port, respond):
            await until(lambda: len(open_store(f"sqlite:///{db}").readings(terminal=NAME)) == 3, "the reads")

    run(scenario)
    with open_store(f"sqlite:///{db}") as store:
        assert sorted((int(r.meter), r.value) for r in store.readings(terminal=NAME)) == [(p, Decimal(p)) for p in points]


def test_an_active_reports_erc_records_are_stored_as_events(tmp_path: Path) -> None:
    db = tmp_path / "head-end.db"
    failure = data.ReadFailure(datetime(2026, 12, 3, 16, 30), data.PointFlag(7, True), None, None, None)

    async def scenario() -> None:
        async with head_end(db) as node, Terminal(node.port) as terminal:
            reply = data.EventReply(1, 0, 0, 1, [failure])
            await terminal.report(Afn.CLASS3, [DataUnit([0], [1], reply.encode())])

    run(scenario)
    with open_store(f"sqlite:///{db}") as store:
        (event,) = store.events(kind="meter_read_failure")
    assert event.source == NAME and event.severity == "warning"
    assert event.data["point"] == 7 and event.data["started"] is True
    assert event.timestamp == datetime(2026, 12, 3, 8, 30, tzinfo=UTC)


def test_a_report_that_cannot_be_stored_is_not_confirmed(tmp_path: Path) -> None:
    db = tmp_path / "head-end.db"

    async def scenario() -> int:
        async with head_end(db) as node, Terminal(node.port) as terminal:
            async def broken(*_args: Any, **_kwargs: Any) -> int:
                raise OSError("disk full")

            node.writer.add_readings = broken  # type: ignore[method-assign]
            before = len(terminal.confirms)
            energy = data.TariffEnergy(datetime(2026, 12, 3, 16, 5), [Decimal("1")])
            await terminal.report(Afn.CLASS1, [data.unit([1], [129], [energy])], wait=False)
            await asyncio.sleep(0.5)
            return len(terminal.confirms) - before

    assert run(scenario) == 0


def test_point_units_group_points_by_eights() -> None:
    units = point_units([1, 2, 9, 17, 3], (129,))
    assert [u.points for u in units] == [(1, 2, 3), (9,), (17,)]


def test_an_event_kind_is_named_for_unknown_ercs() -> None:
    from meterhub.protocols.gdw1376_1_quantities import events_of

    (event,) = events_of([data.RawEvent(99, b"\x01\x02")], terminal=NAME, zone=ZONE,
                         received=datetime(2026, 12, 3, tzinfo=UTC))
    assert isinstance(event, Event) and event.kind == "erc99" and event.data["data"] == "0102"


@pytest.mark.parametrize(("option", "value"), [
    ("realtime_s", -1), ("frozen_days", -1), ("frozen_months", -2), ("archive_span", -1), ("request_poll_s", 0),
])
def test_a_schedule_option_out_of_range_is_refused_when_the_head_end_is_built(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        HeadEnd(None, plugins=Plugins(load_entry_points=False), secrets=EnvSecrets({}),  # type: ignore[arg-type]
                **{option: value})


def test_heartbeats_are_confirmed_and_recorded_together(tmp_path: Path) -> None:
    from meterhub.protocols.gdw1376_1 import PrimaryFunction

    db = tmp_path / "head-end.db"

    async def scenario() -> int:
        async with head_end(db) as node, Terminal(node.port) as terminal:
            for _ in range(3):
                await terminal.send(terminal.frame(Afn.LINK, [data.unit([0], [3])],
                                                   function=PrimaryFunction.LINK_TEST))
            await until(lambda: len(terminal.confirms) >= 4, "the heartbeats' confirms")
            return len(terminal.confirms)

    assert run(scenario) == 4  # the login's and three heartbeats'
    with open_store(f"sqlite:///{db}") as store:  # recorded at the latest when the node stops
        (terminal,) = store.terminals()
    assert terminal.heartbeats == 3 and not terminal.online


def test_the_head_end_runs_the_sites_alarm_rules_on_what_its_terminals_send(tmp_path: Path) -> None:
    """The same alarm rules as a concentrator's, on a terminal's class 1 values: a sag on
    point 3's phase A starts with its first low report and ends with the next normal one."""
    from meterhub.alarms import BUILTIN_RULE_TYPES, rules_from_config

    db = tmp_path / "head-end.db"
    rules = rules_from_config({"voltage": {"nominal": 220}}, {t.name: t for t in BUILTIN_RULE_TYPES})

    def values(volts: str) -> data.Instantaneous:
        return data.Instantaneous(datetime(2026, 12, 3, 10, 0), [None] * 4, [None] * 4, [None] * 4,
                                  [Decimal(volts), Decimal("220.1"), Decimal("219.8")], [None] * 4, [None] * 4)

    async def scenario() -> None:
        async with head_end(db, alarms=rules) as node, Terminal(node.port) as terminal:
            for volts in ("221.0", "187.5", "182.0", "220.5"):
                await terminal.report(Afn.CLASS1, [data.unit([3], [25], [values(volts)])])

    run(scenario)
    with open_store(f"sqlite:///{db}") as store:
        start, end = store.events(kind="pq_voltage_sag")
    assert start.source == end.source == f"{NAME}/gdw1376.1:3"
    assert start.data["state"] == "start" and start.data["phase"] == "L1" and start.data["value"] == "187.5"
    assert end.data["state"] == "end" and end.data["extreme"] == "182.0"


def test_a_restarted_head_end_does_not_raise_a_condition_that_is_still_on_again(tmp_path: Path) -> None:
    """The rules' memory is kept in the store: a sag that began before the node restarted
    ends after it, once, and is not started twice."""
    from meterhub.alarms import BUILTIN_RULE_TYPES, rules_from_config

    db = tmp_path / "head-end.db"
    low = data.Instantaneous(datetime(2026, 12, 3, 10, 0), [None] * 4, [None] * 4, [None] * 4,
                             [Decimal("187.5"), None, None], [None] * 4, [None] * 4)
    normal = attrs.evolve(low, voltage=(Decimal("221.0"), None, None))

    async def visit(value: data.Instantaneous) -> None:
        rules = rules_from_config({"voltage": {"nominal": 220}}, {t.name: t for t in BUILTIN_RULE_TYPES})
        async with head_end(db, alarms=rules, node="node-a") as node, Terminal(node.port) as terminal:
            await terminal.report(Afn.CLASS1, [data.unit([3], [25], [value])])

    run(lambda: visit(low))
    run(lambda: visit(low))  # restarted: the sag goes on
    run(lambda: visit(normal))
    with open_store(f"sqlite:///{db}") as store:
        states = [e.data["state"] for e in store.events(kind="pq_voltage_sag")]
    assert states == ["start", "end"]


def test_a_terminal_that_moves_to_another_node_takes_its_alarm_memory_along(tmp_path: Path) -> None:
    """The memory is kept per terminal: node B, taking the terminal over while a sag is on,
    neither starts it again nor misses its end; node A, taking it back, knows it has ended."""
    from meterhub.alarms import BUILTIN_RULE_TYPES, rules_from_config

    db = tmp_path / "head-end.db"
    low = data.Instantaneous(datetime(2026, 12, 3, 10, 0), [None] * 4, [None] * 4, [None] * 4,
                             [Decimal("187.5"), None, None], [None] * 4, [None] * 4)
    normal = attrs.evolve(low, voltage=(Decimal("221.0"), None, None))

    async def both() -> None:
        def rules() -> Any:
            return rules_from_config({"voltage": {"nominal": 220}}, {t.name: t for t in BUILTIN_RULE_TYPES})

        async with head_end(db, alarms=rules(), node="node-a") as a, head_end(db, alarms=rules(), node="node-b") as b:
            for node, value in ((a, low), (b, low), (b, normal), (a, low), (a, normal)):
                async with Terminal(node.port) as terminal:
                    await terminal.report(Afn.CLASS1, [data.unit([3], [25], [value])])

    run(both)
    with open_store(f"sqlite:///{db}") as store:
        states = [e.data["state"] for e in store.events(kind="pq_voltage_sag")]
        kept = store.settings(f"head-end/alarms/{NAME}")["memory"]["rules"]
    assert states == ["start", "end", "start", "end"]
    assert {source for memory in kept.values() for source in memory} == {f"{NAME}/gdw1376.1:3"}
