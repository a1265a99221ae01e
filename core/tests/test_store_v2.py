"""Store schema v2: the migration of a real v1 file, the new reading columns, idempotent
writes, the outbox with its cap, the command audit trail, ``latest`` and the contract."""

from __future__ import annotations

import inspect
import sqlite3
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.model import Command, CommandRecord, CommandState, Event, Origin, Quality, Reading, RoundReport
from meterhub.store import (
    COMMAND_MOVES,
    DEFAULT_OUTBOX_MAX,
    FINAL_COMMAND_STATES,
    OUTBOX_OVERFLOW,
    SCHEMA_VERSION,
    SqliteStore,
    Store,
    StoreError,
    open_store,
)
from meterhub.store.sqlite import DUPLICATES_DROPPED

DATA = Path(__file__).parent / "data"
V1_DUMP = DATA / "store-v1.sql"
T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
BEIJING = timezone(timedelta(hours=8))
E_IMPORT = "1-0:1.8.0"


def reading(meter: str = "000000000001", quantity: str = E_IMPORT, value: Decimal | str | None = Decimal("1234.56"),
            at: datetime = T0, **kw: object) -> Reading:
    return Reading(meter=meter, quantity=quantity, value=value, unit="kWh", timestamp=at, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store() -> SqliteStore:
    s = open_store("sqlite:///:memory:")
    yield s
    s.close()


# --- the migration from a real v1 file -------------------------------------------------------


def rebuild_v1(path: Path) -> Path:
    """The v1 store of the fixture dump as a database file again."""
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_DUMP.read_text())
    conn.close()
    return path


@pytest.fixture
def v1_file(tmp_path: Path) -> Path:
    return rebuild_v1(tmp_path / "v1.db")


@pytest.fixture
def migrated(v1_file: Path) -> SqliteStore:
    s = open_store(f"sqlite:///{v1_file}")
    yield s
    s.close()


# What meterhub 6c21a9f stored (core/tests/data/store-v1.sql), by id; ids 9 and 10 repeat id 1's key.
V1_READINGS = [
    Reading("000000000001", E_IMPORT, Decimal("1234.56"), "kWh", T0, channel="bus1", protocol="dlt645",
            latency=0.123456789),
    Reading("000000000001", "1-0:32.7.0", Decimal("0.10"), "V", T0, channel="bus1", protocol="dlt645", latency=0.05),
    Reading("000000000001", "0-0:1.0.0", "2024-03-01T12:00:00", "", T0, channel="bus1", protocol="dlt645",
            latency=0.07),
    Reading("000000000002", E_IMPORT, None, "kWh", T0, quality=Quality.TIMEOUT, detail="no answer after 3 attempts",
            channel="bus1", protocol="dlt645", attempts=3),
    Reading("000000000003", E_IMPORT, None, "kWh", T0, quality=Quality.METER_ERROR, error_code=2,
            detail="no requested data", channel="bus1", protocol="dlt645", latency=0.2),
    Reading("1", "1-0:32.7.0", Decimal("2.3E+2"), "V", T0, channel="bus2", protocol="modbus", latency=0.01),
    Reading("1", "0-0:96.1.0", "0042", "", T0, channel="bus2", protocol="mbus", latency=0.3),
    Reading("000000000001", E_IMPORT, Decimal("1234.70"), "kWh", datetime(2024, 3, 1, 20, 15, tzinfo=BEIJING),
            channel="bus1", protocol="dlt645", attempts=2, latency=0.5),
]

V1_EVENTS = [
    Event("link_up", source="bus1", timestamp=T0 - timedelta(seconds=1),
          data={"channel": "bus1", "port": "/dev/ttyUSB0"}),
    Event("meter_dead", source="bus1/dlt645:000000000002", timestamp=T0 + timedelta(seconds=5), severity="warning",
          data={"meter": "000000000002", "failed_rounds": 3, "nested": {"ok": True}, "list": [1, 2]}),
    Event("alarm", source="bus2/modbus:1", timestamp=T0 + timedelta(seconds=6), severity="alarm",
          data={"value": "0.10"}),
]


def test_a_v1_file_is_migrated_to_the_current_schema_version(migrated: SqliteStore) -> None:
    assert SCHEMA_VERSION == 6  # through version 2 (test_store_v3 ... _v6 have the later steps)
    assert migrated.schema_version == SCHEMA_VERSION


def test_every_v1_reading_comes_through_exactly(migrated: SqliteStore) -> None:
    back = migrated.readings()
    assert back == V1_READINGS
    assert [str(r.value) for r in back] == [str(r.value) for r in V1_READINGS]  # 0.10 and 2.3E+2 as stored
    assert [type(r.value) for r in back] == [type(r.value) for r in V1_READINGS]


def test_v1_readings_get_the_new_columns_empty(migrated: SqliteStore) -> None:
    assert {(r.terminal, r.route, r.data_time, r.period) for r in migrated.readings()} == {("", (), None, None)}


def test_v1_readings_under_one_key_keep_the_first_stored(v1_file: Path) -> None:
    with sqlite3.connect(v1_file) as conn:  # ids 1, 9 and 10 share a key; 10 has another value
        assert conn.execute("SELECT id, value FROM readings WHERE meter = '000000000001' AND quantity = ?"
                            " AND timestamp LIKE '2024-03-01T12:00:00%'", (E_IMPORT,)).fetchall() == [
            (1, "1234.56"), (9, "1234.56"), (10, "9999.99")]
    conn.close()
    with open_store(f"sqlite:///{v1_file}") as s:
        ids = [row[0] for row in s._conn.execute("SELECT id FROM readings ORDER BY id")]
        assert ids == list(range(1, 9))


def test_the_migration_tells_how_many_v1_duplicates_it_dropped(migrated: SqliteStore) -> None:
    (note,) = migrated.events(kind=DUPLICATES_DROPPED)
    assert note.severity == "warning"
    assert note.data["readings"] == 2


def test_every_v1_event_and_round_comes_through(migrated: SqliteStore) -> None:
    assert [e for e in migrated.events() if e.kind != DUPLICATES_DROPPED] == V1_EVENTS
    (summary,) = migrated.rounds()
    assert (summary["started"], summary["finished"]) == ("2024-03-01T12:00:00.000000+00:00",
                                                         "2024-03-01T12:00:07.000000+00:00")
    assert (summary["readings"], summary["ok"], summary["failed"]) == (7, 5, 2)
    assert summary["meter_stats"] == {"bus1/dlt645:000000000001": {"readings": 3, "latency_mean": 0.25,
                                                                   "success_rate": 1.0}}
    assert summary["channel_stats"] == {"bus1": {"readings": 5}, "bus2": {"readings": 2}}


def schema_of(conn: sqlite3.Connection) -> dict[str, object]:
    """Tables by their columns (ALTER TABLE rewrites a table's SQL text), indexes and
    triggers by their SQL: what the code relies on."""
    names = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {
        name: [tuple(row)[1:] for row in conn.execute(f"PRAGMA table_info({name})")] if kind == "table"
        else " ".join(sql.split())
        for kind, name, sql in names
    }


def test_a_migrated_v1_file_has_the_schema_of_a_new_file(migrated: SqliteStore, tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'new.db'}") as new:
        assert schema_of(migrated._conn) == schema_of(new._conn)


def test_a_migrated_v1_file_takes_v2_writes(migrated: SqliteStore) -> None:
    assert migrated.add_readings([V1_READINGS[0]], outbox=["hes"]) == 0  # stored by v1 already
    assert migrated.add_readings([reading(at=T0 + timedelta(hours=1), route=("c1",), period=1)], outbox=["hes"]) == 1
    assert [item.item.route for item in migrated.outbox_items("hes")] == [("c1",)]


def test_a_failing_migration_leaves_the_v1_file_as_it_was(v1_file: Path) -> None:
    with sqlite3.connect(v1_file) as conn:
        conn.execute("CREATE TABLE outbox (note TEXT)")  # in the way of the migration's own
    conn.close()
    with pytest.raises(StoreError, match="outbox already exists"):
        open_store(f"sqlite:///{v1_file}")
    with sqlite3.connect(v1_file) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "terminal" not in [row[1] for row in conn.execute("PRAGMA table_info(readings)")]
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 10
    conn.close()


def test_a_dump_restored_without_its_schema_version_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "restored.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_DUMP.read_text().replace("PRAGMA user_version = 1;", ""))
    conn.close()
    with pytest.raises(StoreError, match="no schema version"):
        open_store(f"sqlite:///{path}")


# --- the new reading columns ------------------------------------------------------------------


def test_terminal_route_data_time_and_period_round_trip(store: SqliteStore) -> None:
    r = reading(terminal="T-0042", route=("hub-3", "plc-17"), data_time=datetime(2024, 3, 1, 0, 0, tzinfo=BEIJING),
                period=1)
    store.add_readings([r])
    assert store.readings() == [r]


def test_route_is_stored_as_collector_names_nearest_the_concentrator_first(store: SqliteStore) -> None:
    store.add_readings([reading(route=("hub-3", "plc-17"))])
    assert store._conn.execute("SELECT route FROM readings").fetchone()[0] == "hub-3/plc-17"


def test_data_time_is_stored_as_fixed_width_utc_like_the_timestamp(store: SqliteStore) -> None:
    store.add_readings([reading(data_time=datetime(2024, 3, 1, 8, 0, tzinfo=BEIJING))])
    assert store._conn.execute("SELECT data_time FROM readings").fetchone()[0] == "2024-03-01T00:00:00.000000+00:00"


@pytest.mark.parametrize("name", ["hub/3", ""])
def test_a_collector_name_the_route_column_cannot_hold_is_refused(store: SqliteStore, name: str) -> None:
    with pytest.raises(ValueError, match="collector name"):
        store.add_readings([reading(route=("hub-1", name))])
    assert store.readings() == []


def test_a_negative_period_is_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="period"):
        store.add_readings([reading(period=-1)])


def test_a_naive_data_time_is_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="timezone"):
        store.add_readings([reading(data_time=datetime(2024, 3, 1))])


def test_readings_filter_by_terminal(store: SqliteStore) -> None:
    store.add_readings([reading(terminal="A"), reading(terminal="B"), reading(terminal="")])
    assert [r.terminal for r in store.readings(terminal="B")] == ["B"]
    assert [r.terminal for r in store.readings(terminal="")] == [""]


collector_names = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1,
                          max_size=6)
v2_readings = st.builds(
    Reading,
    meter=st.text(min_size=1, max_size=12),
    quantity=st.sampled_from([E_IMPORT, "1-0:32.7.0", "0-0:1.0.0"]),
    value=st.none() | st.decimals(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    unit=st.sampled_from(["kWh", "V", ""]),
    timestamp=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                           timezones=st.sampled_from([timezone.utc, BEIJING])),
    quality=st.sampled_from(list(Quality)),
    channel=st.sampled_from(["", "bus1"]),
    protocol=st.sampled_from(["dlt645", "modbus"]),
    route=st.lists(collector_names, max_size=3),
    data_time=st.none() | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                                       timezones=st.just(timezone.utc)),
    period=st.none() | st.integers(0, 99),
    terminal=st.sampled_from(["", "T1"]),
)


def key(r: Reading) -> tuple[object, ...]:
    return (r.terminal, r.channel, r.protocol, r.meter, r.quantity, r.timestamp, r.period)


@settings(max_examples=100, deadline=None)
@given(st.lists(v2_readings, max_size=6, unique_by=key))
def test_any_v2_readings_round_trip_exactly(batch: list[Reading]) -> None:
    with open_store("sqlite:///:memory:") as s:
        assert s.add_readings(batch) == len(batch)
        back = s.readings()
    assert back == sorted(batch, key=lambda r: r.timestamp)


# --- idempotent writes ------------------------------------------------------------------------


def test_the_same_reading_twice_is_stored_once(store: SqliteStore) -> None:
    assert store.add_readings([reading()]) == 1
    assert store.add_readings([reading()]) == 0
    assert store.readings() == [reading()]


def test_add_readings_counts_only_the_rows_it_stored(store: SqliteStore) -> None:
    store.add_readings([reading()])
    assert store.add_readings([reading(), reading(at=T0 + timedelta(minutes=15)), reading(meter="2")]) == 2


def test_the_first_stored_value_wins_over_a_later_one_under_the_same_key(store: SqliteStore) -> None:
    store.add_readings([reading(value=Decimal("1"))])
    store.add_readings([reading(value=Decimal("2"))])
    assert [r.value for r in store.readings()] == [Decimal("1")]


def test_readings_without_a_period_are_the_same_reading(store: SqliteStore) -> None:
    assert store.add_readings([reading(period=None), reading(period=None)]) == 1


@pytest.mark.parametrize("other", [
    {"period": 0}, {"period": 1}, {"terminal": "T2"}, {"channel": "bus2"}, {"protocol": "modbus"},
    {"quantity": "1-0:2.8.0"}, {"at": T0 + timedelta(microseconds=1)},
])
def test_a_reading_differing_in_one_key_field_is_another_reading(store: SqliteStore, other: dict) -> None:
    assert store.add_readings([reading(), reading(**other)]) == 2


def test_a_reading_breaking_a_not_null_column_fails_rather_than_being_skipped(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="NOT NULL"):
        store.add_readings([reading(meter=None)])  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(st.lists(v2_readings, max_size=6), st.integers(0, 6))
def test_storing_anything_again_stores_nothing_new(batch: list[Reading], split: int) -> None:
    with open_store("sqlite:///:memory:") as s:
        s.add_readings(batch[:split])
        s.add_readings(batch[split:])
        once = s.readings()
        assert s.add_readings(batch) == 0
        assert s.readings() == once
        assert len(once) == len({key(r) for r in batch})


# --- the outbox -------------------------------------------------------------------------------


def test_a_new_reading_is_queued_once_per_uplink(store: SqliteStore) -> None:
    store.add_readings([reading()], outbox=["hes", "mqtt", "hes"])
    assert [item.item for item in store.outbox_items("hes")] == [reading()]
    assert [item.item for item in store.outbox_items("mqtt")] == [reading()]
    assert store.outbox_items("other") == []


def test_a_redelivered_reading_is_not_queued_again(store: SqliteStore) -> None:
    store.add_readings([reading()], outbox=["hes"])
    store.add_readings([reading()], outbox=["hes"])
    assert store.outbox_size("hes") == 1


def test_outbox_items_come_oldest_first_with_their_reading_or_event(store: SqliteStore) -> None:
    event = Event("meter_dead", source="bus1/dlt645:1", timestamp=T0, severity="warning", data={"rounds": 3})
    store.add_readings([reading()], outbox=["hes"])
    store.add_event(event, outbox=["hes"])
    store.add_readings([reading(at=T0 + timedelta(minutes=15))], outbox=["hes"])
    items = store.outbox_items("hes")
    assert [item.item for item in items] == [reading(), event, reading(at=T0 + timedelta(minutes=15))]
    assert [item.id for item in items] == sorted(item.id for item in items)
    assert {item.uplink for item in items} == {"hes"}
    assert all(item.queued.tzinfo is not None for item in items)


def test_outbox_items_limit_keeps_the_oldest(store: SqliteStore) -> None:
    store.add_readings([reading(at=T0 + timedelta(minutes=m)) for m in range(3)], outbox=["hes"])
    assert [item.item.timestamp for item in store.outbox_items("hes", limit=2)] == [T0, T0 + timedelta(minutes=1)]


def test_ack_removes_only_that_uplinks_items_and_says_how_many(store: SqliteStore) -> None:
    store.add_readings([reading(), reading(meter="2")], outbox=["hes", "mqtt"])
    hes = [item.id for item in store.outbox_items("hes")]
    mqtt = [item.id for item in store.outbox_items("mqtt")]
    assert store.ack("hes", [hes[0], mqtt[1], 999_999]) == 1
    assert [item.id for item in store.outbox_items("hes")] == hes[1:]
    assert [item.id for item in store.outbox_items("mqtt")] == mqtt


def test_ack_of_nothing_removes_nothing(store: SqliteStore) -> None:
    store.add_readings([reading()], outbox=["hes"])
    assert store.ack("hes", []) == 0
    assert store.outbox_size("hes") == 1


def test_an_acknowledged_id_is_never_handed_out_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with open_store(url) as s:
        s.add_readings([reading()], outbox=["hes"])
        (first,) = s.outbox_items("hes")
        s.ack("hes", [first.id])
    with open_store(url) as s:  # AUTOINCREMENT remembers across opening too
        s.add_readings([reading(meter="2")], outbox=["hes"])
        (second,) = s.outbox_items("hes")
    assert second.id > first.id


def test_a_row_and_its_outbox_items_are_stored_together_or_not_at_all(store: SqliteStore) -> None:
    store._conn.execute("CREATE TRIGGER full BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(StoreError, match="disk full"):
        store.add_readings([reading()], outbox=["hes"])
    with pytest.raises(StoreError, match="disk full"):
        store.add_event(Event("alarm", source="x", timestamp=T0), outbox=["hes"])
    assert store.readings() == [] and store.events() == []


def test_outbox_as_one_string_is_refused(store: SqliteStore) -> None:
    with pytest.raises(TypeError, match="sequence of uplink names"):
        store.add_readings([reading()], outbox="hes")


def test_an_event_without_outbox_is_not_queued(store: SqliteStore) -> None:
    store.add_event(Event("alarm", source="x", timestamp=T0))
    assert store.outbox_size("hes") == 0


@pytest.fixture
def small() -> SqliteStore:
    s = open_store("sqlite:///:memory:?outbox_max=3")
    yield s
    s.close()


def test_a_full_outbox_drops_its_oldest_items(small: SqliteStore) -> None:
    batch = [reading(at=T0 + timedelta(minutes=m)) for m in range(5)]
    small.add_readings(batch, outbox=["hes"])
    assert [item.item for item in small.outbox_items("hes")] == batch[2:]
    assert small.readings() == batch  # the readings themselves stay


def test_a_dropping_outbox_stores_an_overflow_warning(small: SqliteStore) -> None:
    small.add_readings([reading(at=T0 + timedelta(minutes=m)) for m in range(5)], outbox=["hes"])
    (event,) = small.events(kind=OUTBOX_OVERFLOW)
    assert event.severity == "warning"
    assert dict(event.data) == {"uplink": "hes", "dropped": 2, "limit": 3}


def test_the_overflow_warning_is_not_queued_itself(small: SqliteStore) -> None:
    small.add_readings([reading(at=T0 + timedelta(minutes=m)) for m in range(5)], outbox=["hes"])
    assert all(isinstance(item.item, Reading) for item in small.outbox_items("hes"))


def test_overflow_events_are_handed_to_the_caller_once(small: SqliteStore) -> None:
    small.add_readings([reading(at=T0 + timedelta(minutes=m)) for m in range(4)], outbox=["hes"])
    (event,) = small.take_overflow_events()
    assert event == small.events(kind=OUTBOX_OVERFLOW)[0]
    assert small.take_overflow_events() == []


def test_the_cap_is_per_uplink(small: SqliteStore) -> None:
    small.add_readings([reading(at=T0 + timedelta(minutes=m)) for m in range(3)], outbox=["hes"])
    small.add_readings([reading(meter="2", at=T0 + timedelta(minutes=m)) for m in range(3)], outbox=["mqtt"])
    assert (small.outbox_size("hes"), small.outbox_size("mqtt")) == (3, 3)
    assert small.take_overflow_events() == []


def test_the_default_cap(store: SqliteStore) -> None:
    assert store.outbox_max == DEFAULT_OUTBOX_MAX == 500_000


@pytest.mark.parametrize("query, message", [
    ("outbox_max=0", "outbox_max"), ("outbox_max=ten", "outbox_max"), ("outbox_max=-1", "outbox_max"),
    ("outbox_max=", "outbox_max"), ("outbox_max", "outbox_max"), ("outbox_max=5&outbox_max=6", "outbox_max"),
    ("journal=off", "journal"), ("", "''"),
])
def test_a_bad_store_url_option_is_refused_by_name(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(f"sqlite:///:memory:?{query}")


OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 4), st.sampled_from([("a",), ("b",), ("a", "b")])),
    st.tuples(st.just("ack"), st.sampled_from(["a", "b"]), st.integers(0, 3)),
), max_size=12)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_every_outbox_stays_within_its_cap_and_knows_its_size(ops: list[tuple]) -> None:
    cap = 5
    with open_store(f"sqlite:///:memory:?outbox_max={cap}") as s:
        minute = 0
        for op in ops:
            if op[0] == "add":
                _, n, uplinks = op
                s.add_readings([reading(at=T0 + timedelta(minutes=minute + i)) for i in range(n)], outbox=uplinks)
                minute += n
            else:
                _, uplink, n = op
                s.ack(uplink, [item.id for item in s.outbox_items(uplink, limit=n)])
        for uplink in ("a", "b"):
            items = s.outbox_items(uplink)
            assert s.outbox_size(uplink) == len(items) <= cap
            assert [item.item.timestamp for item in items] == sorted(item.item.timestamp for item in items)


# --- commands ---------------------------------------------------------------------------------


def command_record(**kw: object) -> CommandRecord:
    command = Command(meter="000000000001", protocol="dlt645", name="relay", args={"action": "open"},
                      id=str(kw.pop("id", "c1")), origin=kw.pop("origin", Origin.CLI),  # type: ignore[arg-type]
                      issuer="alice", credential="meter-000000000001", channel="bus1",
                      requested=kw.pop("requested", T0))  # type: ignore[arg-type]
    return CommandRecord(command, state=CommandState.REQUESTED, updated=command.requested, **kw)  # type: ignore[arg-type]


def test_a_command_record_round_trips(store: SqliteStore) -> None:
    store.add_command(command_record())
    assert store.command("c1") == command_record()


def test_an_unknown_command_is_none(store: SqliteStore) -> None:
    assert store.command("nope") is None


def test_a_second_command_with_the_same_id_is_refused(store: SqliteStore) -> None:
    store.add_command(command_record())
    with pytest.raises(StoreError, match="c1 is already"):
        store.add_command(command_record())


def test_command_args_and_answer_keep_decimals_exact_as_text(store: SqliteStore) -> None:
    store.add_command(CommandRecord(Command(meter="1", protocol="modbus", name="set", id="c2",
                                            args={"limit": Decimal("0.10")}, requested=T0),
                                    CommandState.REQUESTED, T0))
    store.update_command("c2", CommandState.SENT, at=T0)
    store.update_command("c2", CommandState.ANSWERED, answer={"energy": Decimal("1234.50")}, at=T0)
    back = store.command("c2")
    assert back is not None
    assert back.command.args["limit"] == "0.10"
    assert back.answer == {"energy": "1234.50"}


def test_a_command_goes_requested_sent_answered(store: SqliteStore) -> None:
    store.add_command(command_record())
    store.update_command("c1", CommandState.SENT, at=T0 + timedelta(seconds=1))
    done = store.update_command("c1", CommandState.ANSWERED, answer={"relay": "open"}, at=T0 + timedelta(seconds=2))
    assert (done.state, done.updated, dict(done.answer or {})) == (CommandState.ANSWERED, T0 + timedelta(seconds=2),
                                                                   {"relay": "open"})
    assert store.command("c1") == done


def test_update_command_returns_the_record_as_stored(store: SqliteStore) -> None:
    store.add_command(command_record())
    store.update_command("c1", CommandState.SENT, at=T0)
    done = store.update_command("c1", CommandState.ANSWERED, answer={"energy": Decimal("0.10")},
                                at=T0.astimezone(BEIJING))
    assert done == store.command("c1")
    assert done.answer == {"energy": "0.10"}


def test_a_refusal_keeps_its_reason(store: SqliteStore) -> None:
    store.add_command(command_record())
    store.update_command("c1", CommandState.REFUSED, reason="relay commands are off on this site", at=T0)
    back = store.command("c1")
    assert back is not None
    assert (back.state, back.reason) == (CommandState.REFUSED, "relay commands are off on this site")


def test_updating_an_unknown_command_is_an_error(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="no command 'nope'"):
        store.update_command("nope", CommandState.SENT)


@pytest.mark.parametrize("final", sorted(FINAL_COMMAND_STATES, key=str))
@pytest.mark.parametrize("target", list(CommandState))
def test_a_final_state_is_never_left(store: SqliteStore, final: CommandState, target: CommandState) -> None:
    store.add_command(CommandRecord(command_record().command, final, T0))
    with pytest.raises(StoreError, match="final"):
        store.update_command("c1", target)
    assert store.command("c1").state is final  # type: ignore[union-attr]


@pytest.mark.parametrize("current, target", [
    (current, target) for current in COMMAND_MOVES for target in CommandState if target not in COMMAND_MOVES[current]
])
def test_a_move_outside_the_table_is_refused(store: SqliteStore, current: CommandState, target: CommandState) -> None:
    store.add_command(CommandRecord(command_record().command, current, T0))
    with pytest.raises(StoreError, match=f"cannot go from {current.value} to {target.value}"):
        store.update_command("c1", target)


def test_the_allowed_moves_are_the_documented_ones() -> None:
    assert COMMAND_MOVES == {
        CommandState.REQUESTED: {CommandState.REFUSED, CommandState.SENT, CommandState.FAILED},
        CommandState.SENT: {CommandState.ANSWERED, CommandState.FAILED},
    }
    assert FINAL_COMMAND_STATES == {CommandState.REFUSED, CommandState.ANSWERED, CommandState.FAILED}


def test_commands_filter_and_come_oldest_first(store: SqliteStore) -> None:
    store.add_command(command_record(id="late", requested=T0 + timedelta(hours=1), origin=Origin.UPLINK))
    store.add_command(command_record(id="early", requested=T0))
    store.add_command(command_record(id="mid", requested=T0 + timedelta(minutes=30), origin=Origin.SCHEDULE))
    store.update_command("mid", CommandState.SENT)
    assert [r.command.id for r in store.commands()] == ["early", "mid", "late"]
    assert [r.command.id for r in store.commands(state=CommandState.SENT)] == ["mid"]
    assert [r.command.id for r in store.commands(origin=Origin.UPLINK)] == ["late"]
    assert [r.command.id for r in store.commands(since=T0 + timedelta(minutes=30))] == ["mid", "late"]
    assert [r.command.id for r in store.commands(meter="000000000001", limit=1)] == ["early"]
    assert store.commands(meter="other") == []


# --- latest -----------------------------------------------------------------------------------


def test_latest_is_the_newest_ok_reading_per_measuring_point(store: SqliteStore) -> None:
    store.add_readings([
        reading(value=Decimal("1"), at=T0),
        reading(value=Decimal("2"), at=T0 + timedelta(minutes=15)),
        reading(value=None, quality=Quality.TIMEOUT, at=T0 + timedelta(minutes=30)),
        reading(meter="2", value=Decimal("7"), at=T0),
    ])
    assert [(r.meter, r.value) for r in store.latest()] == [("000000000001", Decimal("2")), ("2", Decimal("7"))]


def test_latest_keeps_frozen_periods_and_terminals_apart(store: SqliteStore) -> None:
    store.add_readings([
        reading(value=Decimal("10"), period=None),
        reading(value=Decimal("9"), period=1, data_time=T0 - timedelta(days=1)),
        reading(value=Decimal("8"), period=1, at=T0 - timedelta(days=1)),
        reading(value=Decimal("5"), terminal="T2"),
    ])
    assert [(r.terminal, r.period, r.value) for r in store.latest()] == [
        ("", None, Decimal("10")), ("", 1, Decimal("9")), ("T2", None, Decimal("5"))]


def test_latest_filters_by_meter_quantity_and_terminal(store: SqliteStore) -> None:
    store.add_readings([reading(), reading(meter="2"), reading(quantity="1-0:32.7.0"), reading(terminal="T2")])
    assert [r.meter for r in store.latest(meter="2")] == ["2"]
    assert [r.quantity for r in store.latest(quantity="1-0:32.7.0")] == ["1-0:32.7.0"]
    assert [r.terminal for r in store.latest(terminal="T2")] == ["T2"]


# --- the contract -----------------------------------------------------------------------------


CONTRACT = [name for name, member in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")]


def test_the_contract_lists_what_the_runtime_cli_and_uplinks_use() -> None:
    assert set(CONTRACT) >= {
        "add_readings", "add_reading_batches", "add_event", "add_round", "readings", "latest", "meters", "events",
        "rounds", "outbox_items", "outbox_size", "ack", "take_overflow_events", "add_command", "update_command",
        "command", "commands", "close",
    }


@pytest.mark.parametrize("name", CONTRACT)
def test_every_contract_method_says_what_it_does(name: str) -> None:
    assert inspect.getdoc(getattr(Store, name))


@pytest.mark.parametrize("name", CONTRACT)
def test_the_sqlite_store_fulfils_the_contract(name: str) -> None:
    assert inspect.signature(getattr(SqliteStore, name)) == inspect.signature(getattr(Store, name))


def test_a_round_is_still_stored(store: SqliteStore) -> None:
    store.add_round(RoundReport(started=T0, finished=T0 + timedelta(seconds=3), readings=(reading(),)))
    assert [(r["readings"], r["ok"]) for r in store.rounds()] == [(1, 1)]
