"""meterhub.testing.MemoryTerminal: the in-memory terminal uplink plugins test against
keeps the promises of :class:`meterhub.api.Terminal` that the concentrator's keeps."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterhub.api import Terminal
from meterhub.errors import CommandRefused, NotSupported
from meterhub.model import Command, Event, Meter, Origin, Quality, Reading, Schedule
from meterhub.testing import MemoryTerminal

T0 = datetime(2026, 3, 1, 8, 15, tzinfo=UTC)
ONE = Meter("000000000001", "dlt645", "bus1", point=1)
TWO = Meter("000000000002", "dlt645", "bus1", point=2)
LOOSE = Meter("000000000003", "dlt645", "bus1")  #: configured, but no measuring point
#: How long a test waits for something that happens within a few event-loop turns.
WAIT_S = 5.0


def reading(value: str | None, *, meter: Meter = ONE, quantity: str = "1-0:1.8.0", when: datetime = T0,
            period: int | None = None, data_time: datetime | None = None,
            quality: Quality = Quality.OK) -> Reading:
    return Reading(meter.address, quantity, None if value is None else Decimal(value), "kWh", when,
                   quality=quality, channel=meter.channel, protocol=meter.protocol, period=period,
                   data_time=data_time)


def relay(**kw: Any) -> Command:
    return Command("", "", "relay", {"action": "trip"}, **kw)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, WAIT_S))


# --- what it is ---------------------------------------------------------------------------


def test_it_is_a_terminal():
    assert isinstance(MemoryTerminal(), Terminal)


def test_its_identity_and_schedule_are_what_it_was_given():
    schedule = Schedule(interval=60.0)
    terminal = MemoryTerminal(name="master", terminal="3201/0001", schedule=schedule)
    assert (terminal.name, terminal.terminal, terminal.schedule) == ("master", "3201/0001", schedule)
    assert MemoryTerminal().schedule == Schedule()


def test_meters_in_order_and_points_only_of_meters_that_have_one():
    terminal = MemoryTerminal([TWO, LOOSE, ONE])
    assert list(terminal.meters()) == [TWO, LOOSE, ONE]
    assert dict(terminal.points()) == {1: ONE, 2: TWO}


# --- readings -----------------------------------------------------------------------------


def test_latest_is_the_newest_good_reading_per_quantity_and_period():
    terminal = MemoryTerminal([ONE, TWO])
    newest = reading("2", when=T0 + timedelta(minutes=15))
    frozen = reading("1", period=1)
    terminal.readings = [
        reading("1"), newest, reading(None, when=T0 + timedelta(hours=1), quality=Quality.TIMEOUT),
        frozen, reading("9", meter=TWO),
        reading("7", meter=Meter(ONE.address, "modbus", "bus2", point=5)),  # same address, another meter
    ]
    assert run(terminal.latest(1)) == [newest, frozen]
    assert run(terminal.latest()) == [newest, frozen, reading("9", meter=TWO)]


def test_latest_of_a_point_without_a_meter_is_a_key_error():
    with pytest.raises(KeyError, match="no meter at measuring point 3"):
        run(MemoryTerminal([ONE]).latest(3))


def test_frozen_is_the_points_good_billing_values_newest_first():
    terminal = MemoryTerminal([ONE, TWO])
    january = reading("100", period=1, data_time=datetime(2026, 1, 1, tzinfo=UTC))
    february = reading("200", period=1, data_time=datetime(2026, 2, 1, tzinfo=UTC))
    older = reading("50", period=2, data_time=datetime(2025, 12, 1, tzinfo=UTC))
    terminal.readings = [january, reading("300"), february, older, reading("9", meter=TWO, period=1),
                         reading(None, period=1, quality=Quality.TIMEOUT)]
    assert run(terminal.frozen(1)) == [february, january, older]
    assert run(terminal.frozen(1, period=2)) == [older]


def test_read_now_answers_with_the_points_readings_and_records_it():
    terminal = MemoryTerminal([ONE, TWO])
    terminal.readings = [reading("5"), reading("6", meter=TWO)]
    assert run(terminal.read_now(2)) == [reading("6", meter=TWO)]
    assert terminal.read == [2]
    with pytest.raises(KeyError):
        run(terminal.read_now(7))
    assert terminal.read == [2]


# --- the meter archive --------------------------------------------------------------------


def test_set_meter_adds_changes_and_removes_and_records_each():
    terminal = MemoryTerminal([ONE])
    other = Meter("000000000009", "dlt645-1997", "bus1")

    async def scenario() -> None:
        await terminal.set_meter(2, other)
        assert dict(terminal.points()) == {1: ONE, 2: Meter("000000000009", "dlt645-1997", "bus1", point=2)}
        await terminal.set_meter(1, TWO)
        assert [m.address for m in terminal.meters()] == [TWO.address, other.address]
        await terminal.set_meter(2, None)
        assert list(terminal.meters()) == [Meter(TWO.address, "dlt645", "bus1", point=1)]

    run(scenario())
    assert terminal.set_meters == [(2, other), (1, TWO), (2, None)]


def test_set_meter_raises_meter_archive_changed_and_wakes_the_uplink():
    terminal = MemoryTerminal([ONE])

    async def scenario() -> tuple[bool, bool]:
        before = await terminal.wait_outbox(0)
        await terminal.set_meter(1, None)
        return before, await terminal.wait_outbox(0)

    assert run(scenario()) == (False, True)
    (item,) = terminal.waiting
    assert item.item.kind == "meter_archive_changed"
    assert dict(item.item.data) == {"point": 1, "old": ONE.key, "new": None}
    assert terminal.raised == []  # the concentrator's event, not the uplink's


def test_set_meter_refuses_what_the_concentrator_refuses():
    terminal = MemoryTerminal([ONE])
    with pytest.raises(ValueError, match="measuring point 2 has no meter"):
        run(terminal.set_meter(2, None))
    with pytest.raises(ValueError, match="already at measuring point 1"):
        run(terminal.set_meter(2, Meter(ONE.address, ONE.protocol, ONE.channel)))
    assert list(terminal.meters()) == [ONE] and terminal.set_meters == [] and terminal.waiting == []


# --- events -------------------------------------------------------------------------------


def test_events_are_oldest_first_from_since_and_limited():
    first, second, third = (Event("link_down", "bus1", timestamp=T0 + timedelta(minutes=m)) for m in (0, 5, 10))
    terminal = MemoryTerminal()
    terminal.stored_events = [third, first, second]
    assert run(terminal.events()) == [first, second, third]
    assert run(terminal.events(since=second.timestamp)) == [second, third]
    assert run(terminal.events(limit=2)) == [first, second]


def test_a_raised_event_is_recorded_stored_and_queued():
    terminal = MemoryTerminal(name="master")
    event = Event("uplink_password_refused", "master", severity="warning")
    terminal.raise_event(event)
    assert terminal.raised == [event]
    assert run(terminal.events()) == [event]
    assert [(i.uplink, i.item) for i in run(terminal.outbox())] == [("master", event)]


# --- commands -----------------------------------------------------------------------------


def test_execute_carries_the_command_to_the_points_meter_as_the_uplinks():
    terminal = MemoryTerminal([ONE, TWO], name="master")
    answer = run(terminal.execute(2, relay()))
    assert answer == {"ok": True}
    ((point, command),) = terminal.executed
    assert point == 2
    assert (command.meter, command.protocol, command.channel, command.name) == (TWO.address, "dlt645", "bus1", "relay")
    assert (command.origin, command.issuer) == (Origin.UPLINK, "master")


def test_execute_keeps_the_issuer_the_uplink_named_and_takes_a_meter_itself():
    terminal = MemoryTerminal([ONE, LOOSE])
    run(terminal.execute(LOOSE, relay(issuer="bridge")))
    ((meter, command),) = terminal.executed
    assert meter == LOOSE and command.meter == LOOSE.address and command.issuer == "bridge"


def test_execute_on_no_meter_of_the_site_is_a_key_error():
    terminal = MemoryTerminal([ONE])
    with pytest.raises(KeyError):
        run(terminal.execute(2, relay()))
    with pytest.raises(KeyError, match="not one of this site's"):
        run(terminal.execute(TWO, relay()))
    assert terminal.executed == []


def test_the_answer_is_the_meters_and_may_fail_after_sending():
    terminal = MemoryTerminal([ONE])
    seen = []

    async def answer(meter: Meter, command: Command) -> dict[str, Any]:
        seen.append(meter)
        raise NotSupported(f"{meter.protocol} has no command {command.name!r}")

    terminal.answer = answer
    with pytest.raises(NotSupported):
        run(terminal.execute(1, relay()))
    assert seen == [ONE] and len(terminal.executed) == 1  # sent, then failed


def test_a_refusing_policy_refuses_with_its_reason_and_nothing_is_sent():
    terminal = MemoryTerminal([ONE])
    terminal.policy = lambda command: "relay commands are off" if command.name == "relay" else None
    carried = []

    async def carry(command: Command) -> dict[str, Any]:
        carried.append(command)
        return {}

    with pytest.raises(CommandRefused, match="relay commands are off"):
        run(terminal.execute(1, relay()))
    with pytest.raises(CommandRefused):
        run(terminal.command(relay(), carry))
    assert terminal.executed == [] and terminal.commands == [] and carried == []
    assert [(c.name, reason) for c, reason in terminal.refused] == [("relay", "relay commands are off")] * 2
    run(terminal.execute(1, Command("", "", "time_sync")))
    assert [c.name for _, c in terminal.executed] == ["time_sync"]


def test_command_on_the_terminal_is_carried_by_the_uplinks_carry():
    terminal = MemoryTerminal(name="master")

    async def carry(command: Command) -> dict[str, Any]:
        return {"set": command.args["time"]}

    answer = run(terminal.command(Command("", "", "set_clock", {"time": "2030-01-02T03:04:05"}), carry))
    assert answer == {"set": "2030-01-02T03:04:05"}
    (command,) = terminal.commands
    assert (command.name, command.meter, command.origin, command.issuer) == ("set_clock", "", Origin.UPLINK, "master")


# --- kept settings ------------------------------------------------------------------------


def test_kept_settings_come_back_as_the_store_gives_them_and_none_deletes():
    terminal = MemoryTerminal()

    async def scenario() -> dict[str, Any]:
        await terminal.keep_settings({"heartbeat_s": 300, "topics": ("a", "b"), "price": Decimal("0.52"), "apn": "x"})
        await terminal.keep_settings({"apn": None, "gone": None})
        return await terminal.settings()

    assert run(scenario()) == {"heartbeat_s": 300, "topics": ["a", "b"], "price": "0.52"}


def test_a_setting_json_cannot_hold_keeps_nothing_of_the_call():
    terminal = MemoryTerminal()
    with pytest.raises(TypeError):
        run(terminal.keep_settings({"fine": 1, "bad": object()}))
    assert terminal.kept == {}


def test_settings_are_a_copy():
    terminal = MemoryTerminal()
    terminal.kept["a"] = 1
    run(terminal.settings())["a"] = 2
    assert terminal.kept == {"a": 1}


# --- the outbox ---------------------------------------------------------------------------


def test_the_outbox_offers_items_oldest_first_until_acknowledged():
    terminal = MemoryTerminal(name="master")
    first, second, third = reading("1"), reading("2"), Event("link_down", "bus1")
    ids = terminal.enqueue(first, second, third)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [(i.id, i.uplink, i.item) for i in run(terminal.outbox())] == list(zip(ids, ["master"] * 3,
                                                                                   [first, second, third]))
    assert [i.id for i in run(terminal.outbox(limit=2))] == ids[:2]
    assert [i.id for i in run(terminal.outbox())] == ids  # offered again: nothing acknowledged
    assert run(terminal.ack([ids[1]])) == 1
    assert [i.id for i in run(terminal.outbox())] == [ids[0], ids[2]]


def test_ack_counts_what_went_and_ignores_unknown_ids():
    terminal = MemoryTerminal()
    (ident,) = terminal.enqueue(reading("1"))
    assert run(terminal.ack([ident, 999])) == 1
    assert run(terminal.ack([ident])) == 0  # gone already
    assert run(terminal.ack([])) == 0
    assert terminal.acked == [ident, 999, ident]
    assert terminal.waiting == []


def test_ids_are_never_reused_after_an_ack():
    terminal = MemoryTerminal()
    (first,) = terminal.enqueue(reading("1"))
    run(terminal.ack([first]))
    (second,) = terminal.enqueue(reading("2"))
    assert second > first


def test_wait_outbox_times_out_when_nothing_is_queued():
    terminal = MemoryTerminal()

    async def scenario() -> tuple[bool, float]:
        start = time.monotonic()
        woke = await terminal.wait_outbox(0.1)
        return woke, time.monotonic() - start

    woke, waited = run(scenario())
    assert woke is False and waited >= 0.09


def test_wait_outbox_wakes_when_something_is_queued():
    terminal = MemoryTerminal()

    async def scenario() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        loop.call_later(0.05, terminal.enqueue, reading("1"))
        woke = await terminal.wait_outbox(WAIT_S)
        return woke, time.monotonic() - start

    woke, waited = run(scenario())
    assert woke is True and waited < WAIT_S / 2


def test_wait_outbox_tells_of_news_queued_before_it_once():
    terminal = MemoryTerminal()
    terminal.enqueue(reading("1"))

    async def scenario() -> tuple[bool, bool]:
        return await terminal.wait_outbox(0), await terminal.wait_outbox(0)

    assert run(scenario()) == (True, False)
