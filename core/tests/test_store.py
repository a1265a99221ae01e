"""The SQLite store: exact round-trips, filters, schema versioning and loud failures."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.model import Event, Quality, Reading
from meterhub.runtime import RoundReport
from meterhub.store import SCHEMA_VERSION, SqliteStore, StoreError, open_store
from meterhub.store import sqlite as store_module  # the backend's schema version and migrations

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
BEIJING = timezone(timedelta(hours=8))


def reading(meter: str = "000000000001", quantity: str = "1-0:1.8.0", value: Decimal | str | None = Decimal("1234.56"),
            at: datetime = T0, **kw: object) -> Reading:
    return Reading(meter=meter, quantity=quantity, value=value, unit="kWh", timestamp=at, **kw)  # type: ignore[arg-type]


@pytest.fixture
def store() -> SqliteStore:
    s = open_store("sqlite:///:memory:")
    yield s
    s.close()


# --- round-trips -----------------------------------------------------------------------------


def test_reading_round_trips_with_every_field(store: SqliteStore) -> None:
    r = reading(quality=Quality.OK, error_code=None, detail="", channel="bus1", protocol="dlt645",
                attempts=2, latency=0.123456789)
    store.add_readings([r])
    assert store.readings() == [r]


def test_decimal_keeps_its_exponent(store: SqliteStore) -> None:
    store.add_readings([reading(value=Decimal("0.10"))])
    (back,) = store.readings()
    assert str(back.value) == "0.10"
    assert back.value.as_tuple() == Decimal("0.10").as_tuple()


def test_string_value_stays_a_string(store: SqliteStore) -> None:
    store.add_readings([reading(quantity="0-0:1.0.0", value="2024-03-01T12:00:00")])
    (back,) = store.readings()
    assert back.value == "2024-03-01T12:00:00" and isinstance(back.value, str)


def test_numeric_looking_string_is_not_turned_into_a_decimal(store: SqliteStore) -> None:
    store.add_readings([reading(value="0042")])
    assert store.readings()[0].value == "0042"


def test_failed_reading_round_trips_with_none_value(store: SqliteStore) -> None:
    r = reading(value=None, quality=Quality.METER_ERROR, error_code=2, detail="no requested data",
                attempts=1, latency=None)
    store.add_readings([r])
    assert store.readings() == [r]


def test_timestamps_come_back_timezone_aware_in_utc(store: SqliteStore) -> None:
    local = datetime(2024, 3, 1, 20, 0, 0, 500, tzinfo=BEIJING)
    store.add_readings([reading(at=local)])
    (back,) = store.readings()
    assert back.timestamp == local
    assert back.timestamp.utcoffset() == timedelta(0)


def test_naive_timestamp_is_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="timezone"):
        store.add_readings([reading(at=datetime(2024, 3, 1, 12, 0))])


def test_a_bad_reading_stores_none_of_its_batch(store: SqliteStore) -> None:
    with pytest.raises(ValueError):
        store.add_readings([reading(), reading(at=datetime(2024, 3, 1))])
    assert store.readings() == []


def test_float_value_is_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="Decimal"):
        store.add_readings([reading(value=1.5)])  # type: ignore[arg-type]


values = st.one_of(
    st.none(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
readings_strategy = st.builds(
    Reading,
    meter=st.text(min_size=1, max_size=12),
    quantity=st.sampled_from(["1-0:1.8.0", "1-0:32.7.0", "0-0:1.0.0"]),
    value=values,
    unit=st.sampled_from(["kWh", "V", ""]),
    timestamp=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                           timezones=st.sampled_from([timezone.utc, BEIJING, timezone(timedelta(hours=-5))])),
    quality=st.sampled_from(list(Quality)),
    error_code=st.none() | st.integers(0, 2**31),
    detail=st.text(max_size=30),
    channel=st.text(max_size=8),
    protocol=st.sampled_from(["dlt645", "modbus"]),
    attempts=st.integers(0, 10),
    latency=st.none() | st.floats(0, 100, allow_nan=False),
)


def reading_key(r: Reading) -> tuple[object, ...]:
    """What makes two readings the same reading to the store (a second is not stored)."""
    return (r.terminal, r.channel, r.protocol, r.meter, r.quantity, r.timestamp, r.period)


@settings(max_examples=200, deadline=None)
@given(st.lists(readings_strategy, max_size=5, unique_by=reading_key))
def test_any_readings_round_trip_exactly(batch: list[Reading]) -> None:
    with open_store("sqlite:///:memory:") as s:
        s.add_readings(batch)
        back = s.readings()
    expected = sorted(batch, key=lambda r: r.timestamp)  # stable: ties keep insertion order, as the store does
    assert back == expected
    assert [str(r.value) for r in back] == [str(r.value) for r in expected]  # Decimal exponents too
    assert [type(r.value) for r in back] == [type(r.value) for r in expected]


# --- filters ---------------------------------------------------------------------------------


def test_readings_come_back_oldest_first(store: SqliteStore) -> None:
    batch = [reading(at=T0 + timedelta(minutes=m)) for m in (5, 1, 3)]
    store.add_readings(batch)
    assert [r.timestamp for r in store.readings()] == sorted(r.timestamp for r in batch)


def test_sub_second_order_is_time_order(store: SqliteStore) -> None:
    # Fixed-width timestamps: 12:00:00 must sort before 12:00:00.5 as text too.
    later = reading(at=T0 + timedelta(microseconds=500000))
    store.add_readings([later, reading(at=T0)])
    assert [r.timestamp for r in store.readings()] == [T0, later.timestamp]


def test_filter_by_meter_and_quantity(store: SqliteStore) -> None:
    store.add_readings([
        reading(meter="a", quantity="1-0:1.8.0"),
        reading(meter="a", quantity="1-0:32.7.0"),
        reading(meter="b", quantity="1-0:1.8.0"),
    ])
    assert [(r.meter, r.quantity) for r in store.readings(meter="a", quantity="1-0:1.8.0")] == [("a", "1-0:1.8.0")]
    assert len(store.readings(meter="a")) == 2
    assert len(store.readings(quantity="1-0:1.8.0")) == 2


def _same_address_on_two_protocols_and_two_buses(store: SqliteStore) -> None:
    store.add_readings([
        reading(meter="1", channel="bus1", protocol="modbus", value=Decimal("230.1")),
        reading(meter="1", channel="bus1", protocol="mbus", value=Decimal("12.5")),
        reading(meter="1", channel="bus2", protocol="modbus", value=Decimal("229.9")),
        reading(meter="2", channel="bus1", protocol="modbus", value=Decimal("231")),
    ])


def test_filter_by_protocol_and_channel_tells_meters_with_one_address_apart(store: SqliteStore) -> None:
    # Modbus unit 1 and M-Bus primary address 1 on one mixed bus, and Modbus unit 1 on another bus
    _same_address_on_two_protocols_and_two_buses(store)
    assert len(store.readings(meter="1")) == 3
    assert [r.value for r in store.readings(meter="1", protocol="mbus")] == [Decimal("12.5")]
    assert [r.value for r in store.readings(meter="1", protocol="modbus", channel="bus2")] == [Decimal("229.9")]
    assert [r.meter for r in store.readings(protocol="modbus", channel="bus1")] == ["1", "2"]


def test_meters_lists_what_an_address_may_mean(store: SqliteStore) -> None:
    _same_address_on_two_protocols_and_two_buses(store)
    assert [m.key for m in store.meters(meter="1")] == ["bus1/mbus:1", "bus1/modbus:1", "bus2/modbus:1"]
    assert [m.key for m in store.meters(meter="1", protocol="modbus")] == ["bus1/modbus:1", "bus2/modbus:1"]
    assert [m.key for m in store.meters(meter="1", protocol="modbus", channel="bus2")] == ["bus2/modbus:1"]
    assert store.meters(meter="3") == []


def test_every_reading_filter_runs_in_the_indexed_query(store: SqliteStore) -> None:
    _same_address_on_two_protocols_and_two_buses(store)
    executed: list[str] = []
    store._conn.set_trace_callback(executed.append)
    store.readings(meter="1", protocol="modbus", channel="bus2", quantity="1-0:1.8.0", since=T0)
    store._conn.set_trace_callback(None)
    (sql,) = [s for s in executed if s.startswith("SELECT")]
    assert "protocol = 'modbus'" in sql and "channel = 'bus2'" in sql and "meter = '1'" in sql
    plan = store._conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    assert any("readings_key (meter=? AND quantity=? AND timestamp>?)" in row[-1] for row in plan)


def test_since_is_inclusive_and_timezone_correct(store: SqliteStore) -> None:
    store.add_readings([reading(at=T0 + timedelta(hours=h)) for h in range(4)])
    since = (T0 + timedelta(hours=2)).astimezone(BEIJING)
    assert [r.timestamp for r in store.readings(since=since)] == [T0 + timedelta(hours=2), T0 + timedelta(hours=3)]


def test_limit_keeps_the_oldest(store: SqliteStore) -> None:
    store.add_readings([reading(at=T0 + timedelta(hours=h)) for h in range(4)])
    assert [r.timestamp for r in store.readings(limit=2)] == [T0, T0 + timedelta(hours=1)]


def test_readings_are_indexed_by_meter_quantity_time(store: SqliteStore) -> None:
    # the reading key leads with them: one index keeps readings unique and finds them
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM readings WHERE meter = ? AND quantity = ? AND timestamp >= ?",
        ("a", "b", "c"),
    ).fetchall()
    assert any("readings_key (meter=? AND quantity=? AND timestamp>?)" in row[-1] for row in plan)


def _plan_of(store: SqliteStore, query: Callable[[], object]) -> list[str]:
    """The query plan of every SELECT ``query()`` runs."""
    executed: list[str] = []
    store._conn.set_trace_callback(executed.append)
    try:
        query()
    finally:
        store._conn.set_trace_callback(None)
    selects = [sql for sql in executed if sql.startswith("SELECT")]
    assert selects
    return [row[-1] for sql in selects for row in store._conn.execute(f"EXPLAIN QUERY PLAN {sql}")]


@pytest.mark.parametrize("query, index", [
    (lambda s: s.readings(meter="1"), "readings_key (meter=?)"),
    (lambda s: s.readings(meter="1", quantity="1-0:1.8.0"), "readings_key (meter=? AND quantity=?)"),
    (lambda s: s.readings(since=T0), "readings_time (timestamp>?)"),
    (lambda s: s.readings(), "readings_time"),
    (lambda s: s.meters(), "COVERING INDEX readings_key"),
    (lambda s: s.meters(meter="1"), "COVERING INDEX readings_key (meter=?)"),
    (lambda s: s.latest(), "readings_key"),
    (lambda s: s.latest(terminal=""), "readings_key"),
    (lambda s: s.latest(meter="1"), "readings_key (meter=?)"),
    (lambda s: s.latest(meter="1", quantity="1-0:1.8.0"), "readings_key (meter=? AND quantity=?)"),
])
def test_every_lookup_uses_an_index(store: SqliteStore, query: Callable[[SqliteStore], object], index: str) -> None:
    _same_address_on_two_protocols_and_two_buses(store)
    plan = _plan_of(store, lambda: query(store))
    assert any(f"USING {index}" in step or f"USING INDEX {index}" in step for step in plan), plan
    assert not any(step == "SCAN readings" for step in plan), plan


def test_latest_sorts_only_within_a_measuring_point(store: SqliteStore) -> None:
    # the key's index gives meter and quantity in order; no sort of every stored reading
    plan = _plan_of(store, store.latest)
    assert "USE TEMP B-TREE FOR RIGHT PART OF ORDER BY" in plan


# --- events and rounds -----------------------------------------------------------------------


def test_event_round_trips(store: SqliteStore) -> None:
    event = Event("meter_dead", source="bus1/000000000001", timestamp=T0, severity="warning",
                  data={"meter": "000000000001", "failed_rounds": 3, "nested": {"ok": True}, "list": [1, 2]})
    store.add_event(event)
    assert store.events() == [event]


def test_event_decimal_data_is_kept_exactly_as_text(store: SqliteStore) -> None:
    store.add_event(Event("alarm", source="x", timestamp=T0, data={"value": Decimal("0.10")}))
    assert store.events()[0].data["value"] == "0.10"


def test_event_with_unstorable_data_raises(store: SqliteStore) -> None:
    with pytest.raises(TypeError):
        store.add_event(Event("alarm", source="x", data={"thing": object()}))
    assert store.events() == []


def test_events_filter_by_kind_source_and_since(store: SqliteStore) -> None:
    store.add_event(Event("meter_dead", source="a", timestamp=T0))
    store.add_event(Event("meter_dead", source="b", timestamp=T0 + timedelta(hours=1)))
    store.add_event(Event("round_finished", source="concentrator", timestamp=T0 + timedelta(hours=2)))
    assert [e.source for e in store.events(kind="meter_dead")] == ["a", "b"]
    assert [e.kind for e in store.events(source="concentrator")] == ["round_finished"]
    assert [e.source for e in store.events(since=T0 + timedelta(minutes=30))] == ["b", "concentrator"]
    assert [e.source for e in store.events(limit=1)] == ["a"]


def test_round_is_stored_with_its_stats(store: SqliteStore) -> None:
    ok = reading()
    failed = reading(meter="2", value=None, quality=Quality.TIMEOUT)
    stats = {"bus1/1": {"readings": 1, "latency_mean": 0.25, "success_rate": 1.0}}
    report = RoundReport(started=T0, finished=T0 + timedelta(seconds=7), readings=(ok, failed),
                         meter_stats=stats, channel_stats={"bus1": {"readings": 2}})
    store.add_round(report)
    (summary,) = store.rounds()
    assert summary["started"] == "2024-03-01T12:00:00.000000+00:00"
    assert (summary["readings"], summary["ok"], summary["failed"]) == (2, 1, 1)
    assert summary["meter_stats"] == stats
    assert summary["channel_stats"] == {"bus1": {"readings": 2}}


# --- URLs, files and the schema ----------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "mysql://localhost/meterhub", "sqlite://meterhub.db", "sqlite:///", "meterhub.db", "",
])
def test_other_urls_are_refused_by_name(url: str) -> None:
    with pytest.raises(ValueError) as info:
        open_store(url)
    assert repr(url) in str(info.value)


def test_relative_url_is_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///meterhub.db") as s:
        s.add_readings([reading()])
    assert (tmp_path / "meterhub.db").exists()


def test_absolute_url(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    with open_store(f"sqlite:///{path}") as s:
        s.add_readings([reading()])
    with open_store(f"sqlite:///{path}") as s:
        assert s.readings() == [reading()]


def test_file_store_uses_wal_and_records_its_schema_version(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'm.db'}") as s:
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.schema_version == SCHEMA_VERSION


def test_a_reader_sees_what_the_writer_committed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with open_store(url) as writer, open_store(url) as reader:
        writer.add_readings([reading()])
        assert reader.readings() == [reading()]


def test_store_from_a_newer_meterhub_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        open_store(f"sqlite:///{path}")


def test_migration_hook_upgrades_an_older_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    with open_store(f"sqlite:///{path}") as s:
        s.add_readings([reading()])

    def add_notes(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE readings ADD COLUMN note TEXT")

    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, SCHEMA_VERSION + 1, add_notes)
    with open_store(f"sqlite:///{path}") as s:
        assert s.schema_version == SCHEMA_VERSION + 1
        assert "note" in [row[1] for row in s._conn.execute("PRAGMA table_info(readings)")]
        assert s.readings() == [reading()]


def test_missing_migration_step_is_an_error_not_a_guess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    open_store(f"sqlite:///{path}").close()
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="no migration"):
        open_store(f"sqlite:///{path}")


def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        open_store(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")


def test_write_after_close_raises() -> None:
    s = open_store("sqlite:///:memory:")
    s.close()
    with pytest.raises(StoreError):
        s.add_readings([reading()])
    with pytest.raises(StoreError):
        s.add_event(Event("x", source="y"))


def test_a_failing_write_raises_and_stores_nothing(store: SqliteStore) -> None:
    store._conn.execute(
        "CREATE TRIGGER full BEFORE INSERT ON readings WHEN NEW.meter = 'bad' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(StoreError, match="disk full"):
        store.add_readings([reading(), reading(meter="bad")])
    assert store.readings() == []
    store.add_readings([reading()])  # the store is still usable afterwards
    assert len(store.readings()) == 1
