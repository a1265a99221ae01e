"""Store schema v3: the migration of a real v2 file (nothing lost, nothing counted twice),
and the write path it is for: readings inserted many rows a statement, each batch's new
ones (never a duplicate) queued, the outbox sizes kept once per transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.model import Event, Quality, Reading
from meterhub.store import OUTBOX_OVERFLOW, SCHEMA_VERSION, SqliteStore, StoreError, open_store
from meterhub.store import sqlite as store_module

T0 = datetime(2024, 6, 1, 0, 15, tzinfo=timezone.utc)
BEIJING = timezone(timedelta(hours=8))
E_IMPORT = "1-0:1.8.0"

# What meterhub 4d78fc7 (schema version 2) wrote through its SqliteStore(path, outbox_max=4):
# readings with every v2 column used, one re-delivered; an event and readings queued for
# "hes" and "mqtt", both past the cap once; two "mqtt" items acknowledged, the newest
# among them (so AUTOINCREMENT's memory, 12, is above every id left); a command answered;
# a round. Dumped by sqlite3's iterdump, with the file's user_version.
V2_DUMP = """
BEGIN TRANSACTION;
CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    meter       TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    name        TEXT NOT NULL,
    args        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    credential  TEXT NOT NULL,
    requested   TEXT NOT NULL,
    state       TEXT NOT NULL,
    updated     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    answer      TEXT
);
INSERT INTO "commands" VALUES('c1','000000000001','dlt645','bus1','relay','{"action": "open"}','cli','alice','meter-000000000001','2024-06-01T00:15:00.000000+00:00','answered','2024-06-01T00:15:02.000000+00:00','','{"energy": "0.10", "relay": "open"}');
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    source      TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    severity    TEXT NOT NULL,
    data        TEXT NOT NULL
);
INSERT INTO "events" VALUES(1,'meter_dead','bus1/dlt645:000000000002','2024-06-01T00:15:05.000000+00:00','warning','{"failed_rounds": 3}');
INSERT INTO "events" VALUES(2,'outbox_overflow','hes','2026-12-03T06:05:02.405587+00:00','warning','{"dropped": 1, "limit": 4, "uplink": "hes"}');
INSERT INTO "events" VALUES(3,'outbox_overflow','hes','2026-12-03T06:05:02.406057+00:00','warning','{"dropped": 2, "limit": 4, "uplink": "hes"}');
INSERT INTO "events" VALUES(4,'outbox_overflow','mqtt','2026-12-03T06:05:02.406570+00:00','warning','{"dropped": 1, "limit": 4, "uplink": "mqtt"}');
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uplink      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('reading', 'event')),
    ref         INTEGER NOT NULL,
    queued      TEXT NOT NULL
);
INSERT INTO "outbox" VALUES(4,'hes','reading',4,'2026-12-03T06:05:02.404799+00:00');
INSERT INTO "outbox" VALUES(7,'mqtt','reading',3,'2026-12-03T06:05:02.404799+00:00');
INSERT INTO "outbox" VALUES(8,'mqtt','reading',4,'2026-12-03T06:05:02.404799+00:00');
INSERT INTO "outbox" VALUES(9,'hes','event',1,'2026-12-03T06:05:02.405587+00:00');
INSERT INTO "outbox" VALUES(10,'hes','reading',5,'2026-12-03T06:05:02.406057+00:00');
INSERT INTO "outbox" VALUES(11,'hes','reading',6,'2026-12-03T06:05:02.406057+00:00');
CREATE TABLE outbox_sizes (
    uplink      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL
);
INSERT INTO "outbox_sizes" VALUES('hes',4);
INSERT INTO "outbox_sizes" VALUES('mqtt',2);
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY,
    meter       TEXT NOT NULL,
    quantity    TEXT NOT NULL,
    value       TEXT,
    value_type  TEXT CHECK (value_type IN ('decimal', 'text')),
    unit        TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    quality     TEXT NOT NULL,
    error_code  INTEGER,
    detail      TEXT NOT NULL,
    channel     TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    latency     REAL,
    terminal    TEXT NOT NULL DEFAULT '',
    route       TEXT NOT NULL DEFAULT '',
    data_time   TEXT,
    period      INTEGER
);
INSERT INTO "readings" VALUES(1,'000000000001','1-0:1.8.0','1234.56','decimal','kWh','2024-06-01T00:15:00.000000+00:00','ok',NULL,'','bus1','dlt645',1,0.123456789,'','',NULL,NULL);
INSERT INTO "readings" VALUES(2,'000000000001','1-0:32.7.0','0.10','decimal','V','2024-06-01T00:15:00.000000+00:00','ok',NULL,'','bus1','dlt645',1,0.05,'','',NULL,NULL);
INSERT INTO "readings" VALUES(3,'000000000001','1-0:1.8.0','1200.00','decimal','kWh','2024-06-01T00:15:00.000000+00:00','ok',NULL,'','bus1','dlt645',1,NULL,'','','2024-05-31T16:00:00.000000+00:00',1);
INSERT INTO "readings" VALUES(4,'000000000002','1-0:1.8.0',NULL,NULL,'kWh','2024-06-01T00:15:00.000000+00:00','timeout',NULL,'no answer after 3 attempts','bus1','dlt645',3,NULL,'','',NULL,NULL);
INSERT INTO "readings" VALUES(5,'7','1-0:1.8.0','2.3E+2','decimal','kWh','2024-06-01T00:15:00.000000+00:00','ok',NULL,'','bus2','modbus',1,0.3,'','hub-3/plc-17',NULL,NULL);
INSERT INTO "readings" VALUES(6,'7','1-0:1.8.0','42.000','decimal','kWh','2024-06-01T00:15:00.000000+00:00','ok',NULL,'','bus2','mbus',1,NULL,'T-0042','',NULL,NULL);
INSERT INTO "readings" VALUES(7,'000000000001','1-0:1.8.0','1234.70','decimal','kWh','2024-06-01T00:30:00.000000+00:00','ok',NULL,'','bus1','dlt645',2,0.5,'','',NULL,NULL);
CREATE TABLE rounds (
    id          INTEGER PRIMARY KEY,
    started     TEXT NOT NULL,
    finished    TEXT NOT NULL,
    readings    INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    stats       TEXT NOT NULL
);
INSERT INTO "rounds" VALUES(1,'2024-06-01T00:15:00.000000+00:00','2024-06-01T00:15:07.000000+00:00',4,3,1,'{"channels": {"bus1": {"readings": 4}}, "collectors": {}, "depths": {}, "meters": {"bus1/dlt645:000000000001": {"readings": 3}}}');
CREATE INDEX readings_meter_quantity_time ON readings (meter, quantity, timestamp);
CREATE INDEX readings_time ON readings (timestamp);
CREATE UNIQUE INDEX readings_key ON readings (terminal, channel, protocol, meter, quantity, timestamp, coalesce(period, -1));
CREATE INDEX events_time ON events (timestamp);
CREATE INDEX events_kind_time ON events (kind, timestamp);
CREATE INDEX outbox_uplink ON outbox (uplink, id);
CREATE TRIGGER outbox_counted AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_sizes (uplink, size) VALUES (NEW.uplink, 1)
        ON CONFLICT (uplink) DO UPDATE SET size = size + 1;
END;
CREATE TRIGGER outbox_uncounted AFTER DELETE ON outbox BEGIN
    UPDATE outbox_sizes SET size = size - 1 WHERE uplink = OLD.uplink;
END;
CREATE INDEX commands_time ON commands (requested);
CREATE INDEX commands_meter_time ON commands (meter, requested);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('outbox',12);
COMMIT;
PRAGMA user_version = 2;
"""

# The dump's readings, by id, as the store hands them out.
V2_READINGS = [
    Reading("000000000001", E_IMPORT, Decimal("1234.56"), "kWh", T0, channel="bus1", protocol="dlt645",
            latency=0.123456789),
    Reading("000000000001", "1-0:32.7.0", Decimal("0.10"), "V", T0, channel="bus1", protocol="dlt645", latency=0.05),
    Reading("000000000001", E_IMPORT, Decimal("1200.00"), "kWh", T0, channel="bus1", protocol="dlt645", period=1,
            data_time=datetime(2024, 6, 1, 0, 0, tzinfo=BEIJING)),
    Reading("000000000002", E_IMPORT, None, "kWh", T0, quality=Quality.TIMEOUT, detail="no answer after 3 attempts",
            channel="bus1", protocol="dlt645", attempts=3),
    Reading("7", E_IMPORT, Decimal("2.3E+2"), "kWh", T0, channel="bus2", protocol="modbus",
            route=("hub-3", "plc-17"), latency=0.3),
    Reading("7", E_IMPORT, Decimal("42.000"), "kWh", T0, channel="bus2", protocol="mbus", terminal="T-0042"),
    Reading("000000000001", E_IMPORT, Decimal("1234.70"), "kWh", T0 + timedelta(minutes=15), channel="bus1",
            protocol="dlt645", attempts=2, latency=0.5),
]

TABLES = ("readings", "events", "rounds", "commands", "outbox", "outbox_sizes", "sqlite_sequence")


def rebuild_v2(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(V2_DUMP)
    conn.close()
    return path


def rows_of(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, as stored."""
    conn = sqlite3.connect(path)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in TABLES}
    finally:
        conn.close()


def schema_of(conn: sqlite3.Connection) -> dict[str, object]:
    names = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {
        name: [tuple(row)[1:] for row in conn.execute(f"PRAGMA table_info({name})")] if kind == "table"
        else " ".join(sql.split())
        for kind, name, sql in names
    }


@pytest.fixture
def v2_file(tmp_path: Path) -> Path:
    return rebuild_v2(tmp_path / "v2.db")


@pytest.fixture
def migrated(v2_file: Path) -> SqliteStore:
    s = open_store(f"sqlite:///{v2_file}?outbox_max=4")
    yield s
    s.close()


# --- the migration from a real v2 file -------------------------------------------------------


def test_the_fixture_is_a_v2_file_with_its_triggers(v2_file: Path) -> None:
    with sqlite3.connect(v2_file) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")} == {
            "outbox_counted", "outbox_uncounted"}
    conn.close()


def test_a_v2_file_is_migrated_to_the_current_version(migrated: SqliteStore) -> None:
    assert migrated.schema_version == SCHEMA_VERSION


def test_the_migration_changes_no_stored_row(v2_file: Path) -> None:
    before = rows_of(v2_file)
    open_store(f"sqlite:///{v2_file}").close()
    after = rows_of(v2_file)
    # version 6 adds a reading's carrier relays: 0 for every reading stored before
    assert {row[-1] for row in after["readings"]} == {0}
    after["readings"] = [row[:-1] for row in after["readings"]]
    assert after == before


def test_a_migrated_v2_file_has_the_schema_of_a_new_file(migrated: SqliteStore, tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'new.db'}") as new:
        assert schema_of(migrated._conn) == schema_of(new._conn)
    names = {name for (name,) in migrated._conn.execute("SELECT name FROM sqlite_master")}
    assert not names & {"outbox_counted", "outbox_uncounted", "readings_meter_quantity_time"}


def test_every_v2_reading_event_and_command_comes_through(migrated: SqliteStore) -> None:
    assert migrated.readings() == sorted(V2_READINGS, key=lambda r: r.timestamp)
    assert [str(r.value) for r in migrated.readings(meter="7")] == ["2.3E+2", "42.000"]
    first = migrated.events()[0]
    assert (first.kind, first.source, dict(first.data)) == ("meter_dead", "bus1/dlt645:000000000002",
                                                           {"failed_rounds": 3})
    assert [dict(e.data)["dropped"] for e in migrated.events(kind=OUTBOX_OVERFLOW)] == [1, 2, 1]
    command = migrated.command("c1")
    assert command is not None and command.answer == {"relay": "open", "energy": "0.10"}
    assert [r["readings"] for r in migrated.rounds()] == [4]


def test_the_v2_outboxes_come_through_with_their_sizes(migrated: SqliteStore) -> None:
    hes, mqtt = migrated.outbox_items("hes"), migrated.outbox_items("mqtt")
    assert [item.id for item in hes] == [4, 9, 10, 11]
    assert [item.item for item in hes] == [V2_READINGS[3], migrated.events()[0], V2_READINGS[4], V2_READINGS[5]]
    assert [item.item for item in mqtt] == [V2_READINGS[2], V2_READINGS[3]]
    assert (migrated.outbox_size("hes"), migrated.outbox_size("mqtt")) == (4, 2)


def test_a_migrated_file_knows_its_v2_readings(migrated: SqliteStore) -> None:
    assert migrated.add_readings(V2_READINGS, outbox=["hes"]) == 0  # every one stored already, under the new key
    assert migrated.outbox_size("hes") == 4
    assert migrated.take_overflow_events() == []


def test_a_migrated_file_keeps_its_sizes_through_writes_acks_and_the_cap(migrated: SqliteStore) -> None:
    new = [Reading("9", E_IMPORT, Decimal(m), "kWh", T0 + timedelta(minutes=m)) for m in range(3)]
    assert migrated.add_readings(new, outbox=["hes", "mqtt"]) == 3
    (hes_drop, mqtt_drop) = migrated.take_overflow_events()
    assert (hes_drop.data["dropped"], mqtt_drop.data["dropped"]) == (3, 1)
    mqtt = migrated.outbox_items("mqtt")
    assert [item.item for item in mqtt] == [V2_READINGS[3], *new]
    assert migrated.ack("mqtt", [mqtt[0].id, 999]) == 1
    for uplink in ("hes", "mqtt"):
        assert migrated.outbox_size(uplink) == len(migrated.outbox_items(uplink))


def test_an_id_acknowledged_before_the_migration_is_never_handed_out_again(migrated: SqliteStore) -> None:
    migrated.add_event(Event("alarm", source="x", timestamp=T0), outbox=["other"])
    (item,) = migrated.outbox_items("other")
    assert item.id == 13  # 12 went to "mqtt" and was acknowledged under version 2


def test_a_failing_migration_leaves_the_v2_file_as_it_was(v2_file: Path) -> None:
    with sqlite3.connect(v2_file) as conn:
        conn.execute("DROP TRIGGER outbox_uncounted")  # a file someone edited: the step fails on it
    conn.close()
    before = rows_of(v2_file)
    with pytest.raises(StoreError, match="outbox_uncounted"):
        open_store(f"sqlite:///{v2_file}")
    with sqlite3.connect(v2_file) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "readings_meter_quantity_time" in indexes
        triggers = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert triggers == {"outbox_counted"}
    conn.close()
    assert rows_of(v2_file) == before


def test_a_v2_file_whose_sizes_went_wrong_is_counted_afresh(v2_file: Path) -> None:
    with sqlite3.connect(v2_file) as conn:
        conn.execute("UPDATE outbox_sizes SET size = 99")
    conn.close()
    with open_store(f"sqlite:///{v2_file}") as s:
        assert (s.outbox_size("hes"), s.outbox_size("mqtt")) == (4, 2)


# --- many readings a statement ----------------------------------------------------------------


def reading(meter: str = "1", minute: int = 0, value: str = "1.5", **kw: object) -> Reading:
    return Reading(meter=meter, quantity=E_IMPORT, value=Decimal(value), unit="kWh",  # type: ignore[arg-type]
                   timestamp=T0 + timedelta(minutes=minute), **kw)


@pytest.fixture
def store() -> SqliteStore:
    s = open_store("sqlite:///:memory:")
    yield s
    s.close()


def queue_of(store: SqliteStore, uplink: str) -> list[object]:
    return [item.item for item in store.outbox_items(uplink)]


def test_duplicates_mixed_with_new_readings_in_one_batch_are_neither_counted_nor_queued(store: SqliteStore) -> None:
    a, b, c, d, e = (reading(minute=m) for m in range(5))
    assert store.add_readings([a, c, e]) == 3
    assert store.add_readings([a, b, c, d, e], outbox=["hes"]) == 2
    assert queue_of(store, "hes") == [b, d]
    assert store.readings() == [a, b, c, d, e]


def test_each_merged_batch_gets_its_own_new_readings_and_uplinks(store: SqliteStore) -> None:
    a, b, c, d, e, f = (reading(minute=m) for m in range(6))
    store.add_readings([a, c])
    counts = store.add_reading_batches([
        ([a, b], ["x"]),  # a is stored already
        ([c], ["x", "y"]),  # nothing new
        ([], ["y"]),
        ([d, b, e], ["y"]),  # b, just now, by the first batch
        ([f, e, d], ["x", "y"]),  # e and d by the batch before
    ])
    assert counts == [1, 0, 0, 2, 1]
    assert queue_of(store, "x") == [b, f]
    assert queue_of(store, "y") == [d, e, f]
    assert (store.outbox_size("x"), store.outbox_size("y")) == (2, 3)


def test_the_first_of_two_readings_under_one_key_in_a_batch_is_stored(store: SqliteStore) -> None:
    first, second = reading(value="1"), reading(value="2")
    assert store.add_readings([first, second, reading(minute=1)], outbox=["hes"]) == 2
    assert [r.value for r in store.readings()] == [Decimal("1"), Decimal("1.5")]
    assert queue_of(store, "hes") == [first, reading(minute=1)]


def test_none_is_stored_as_null_and_nothing_else_is(store: SqliteStore) -> None:
    empty = Reading("1", E_IMPORT, None, "kWh", T0, quality=Quality.TIMEOUT)
    zeros = Reading("1", E_IMPORT, "", "", T0 + timedelta(minutes=1), error_code=0, latency=0.0, period=0,
                    data_time=T0)
    store.add_readings([empty, zeros])
    types = store._conn.execute("SELECT typeof(value), typeof(value_type), typeof(error_code), typeof(latency),"
                                " typeof(data_time), typeof(period) FROM readings ORDER BY id").fetchall()
    assert [tuple(row) for row in types] == [("null",) * 6, ("text", "text", "integer", "real", "text", "integer")]
    assert store.readings() == [empty, zeros]


def _inserts(store: SqliteStore, write: object) -> list[str]:
    executed: list[str] = []
    store._conn.set_trace_callback(executed.append)
    try:
        write()  # type: ignore[operator]
    finally:
        store._conn.set_trace_callback(None)
    return [sql for sql in executed if sql.startswith("INSERT INTO readings")]


def test_one_statement_inserts_a_batch(store: SqliteStore) -> None:
    batch = [reading(minute=m) for m in range(8)]
    assert len(_inserts(store, lambda: store.add_readings(batch, outbox=["hes"]))) == 1


def test_a_batch_past_the_connections_variable_limit_is_split(store: SqliteStore) -> None:
    columns = len(store_module._READING_COLUMNS)
    store._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 3 * columns + columns // 2)  # 3 rows a statement
    old = [reading(minute=m) for m in range(0, 10, 3)]  # 0, 3, 6, 9
    store.add_readings(old)
    batch = [reading(minute=m) for m in range(10)]
    counts: list[int] = []
    inserts = _inserts(store, lambda: counts.append(store.add_readings(batch, outbox=["hes"])))
    assert len(inserts) == 4  # 3 + 3 + 3 + 1
    assert counts == [6]
    assert queue_of(store, "hes") == [r for r in batch if r not in old]


def test_a_batch_larger_than_one_statement_takes_is_stored_whole(store: SqliteStore) -> None:
    size = 2 * store_module._READINGS_PER_INSERT + 7
    batch = [reading(meter=f"{n % 50}", minute=n) for n in range(size)]
    store.add_readings(batch[::3])
    assert store.add_readings(batch, outbox=["hes"]) == size - len(batch[::3])
    assert queue_of(store, "hes") == [r for n, r in enumerate(batch) if n % 3]
    assert len(store.readings()) == size


def test_a_bad_reading_in_a_later_statement_leaves_nothing_of_the_batch(store: SqliteStore) -> None:
    store._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, len(store_module._READING_COLUMNS))  # 1 row each
    with pytest.raises(StoreError, match="NOT NULL"):
        store.add_readings([reading(minute=0), reading(minute=1), reading(meter=None)], outbox=["hes"])  # type: ignore[arg-type]
    assert store.readings() == [] and store.outbox_size("hes") == 0


def test_new_readings_take_the_ids_after_the_largest_without_returning_them(store: SqliteStore) -> None:
    store.add_readings([reading(minute=m) for m in range(3)])
    (sql,) = _inserts(store, lambda: store.add_readings([reading(minute=m) for m in range(5)], outbox=["hes"]))
    assert "RETURNING" not in sql
    assert [item.item for item in store.outbox_items("hes")] == [reading(minute=3), reading(minute=4)]
    assert [row[0] for row in store._conn.execute("SELECT ref FROM outbox")] == [4, 5]


def test_once_sqlite_picks_ids_at_random_the_insert_returns_them(store: SqliteStore) -> None:
    store.add_readings([reading(meter="top")])
    store._conn.execute("UPDATE readings SET id = ? WHERE meter = 'top'", (store_module._MAX_ROWID,))
    store.add_readings([reading(minute=m) for m in range(0, 10, 2)])
    batch = [reading(minute=m) for m in range(10)]
    counts: list[int] = []
    inserts = _inserts(store, lambda: counts.append(store.add_readings(batch, outbox=["hes"])))
    assert all("RETURNING id" in sql for sql in inserts)
    assert counts == [5]
    queued = store.outbox_items("hes")
    assert sorted(item.item.timestamp for item in queued) == [T0 + timedelta(minutes=m) for m in range(1, 10, 2)]
    refs = [row[0] for row in store._conn.execute("SELECT ref FROM outbox ORDER BY id")]
    assert refs == sorted(refs) and len(set(refs)) == 5


def test_ids_other_than_the_ones_after_the_largest_fail_the_write(store: SqliteStore) -> None:
    # a trigger storing a twin of each reading takes every other id: the outbox items of the
    # readings could not be told, so nothing is stored
    columns = ", ".join(store_module._READING_COLUMNS)
    twin = ", ".join("'twin'" if c == "meter" else f"NEW.{c}" for c in store_module._READING_COLUMNS)
    store._conn.execute(f"CREATE TRIGGER twin AFTER INSERT ON readings WHEN NEW.meter = 'x' BEGIN"
                        f" INSERT INTO readings ({columns}) VALUES ({twin}); END")
    with pytest.raises(StoreError, match="outbox items cannot be told"):
        store.add_readings([reading("x", minute=0), reading("x", minute=1)], outbox=["hes"])
    assert store.readings() == [] and store.outbox_size("hes") == 0


# --- the outbox sizes, once per transaction ---------------------------------------------------


def test_sizes_are_written_once_per_uplink_and_transaction(store: SqliteStore) -> None:
    executed: list[str] = []
    store._conn.set_trace_callback(executed.append)
    store.add_reading_batches([([reading(f"{n}", minute=m) for m in range(8)], ["hes", "mqtt"]) for n in range(8)])
    store._conn.set_trace_callback(None)
    assert len([sql for sql in executed if "outbox_sizes" in sql]) == 2
    assert len([sql for sql in executed if sql.startswith("INSERT INTO outbox ")]) == 2
    assert (store.outbox_size("hes"), store.outbox_size("mqtt")) == (64, 64)


def test_a_merged_write_past_the_cap_drops_once_and_says_so_once() -> None:
    with open_store("sqlite:///:memory:?outbox_max=5") as s:
        batches = [([reading(f"{n}", minute=m) for m in range(3)], ["hes"]) for n in range(3)]
        assert s.add_reading_batches(batches) == [3, 3, 3]
        (event,) = s.take_overflow_events()
        assert dict(event.data) == {"uplink": "hes", "dropped": 4, "limit": 5}
        assert s.events(kind=OUTBOX_OVERFLOW) == [event]
        assert queue_of(s, "hes") == [r for readings, _ in batches for r in readings][4:]
        assert s.outbox_size("hes") == 5


CAP = 4
UPLINKS = st.lists(st.sampled_from(["a", "b", "c"]), max_size=3)
BATCH = st.tuples(st.lists(st.integers(0, 11), max_size=5), UPLINKS)
OPS = st.lists(st.one_of(
    st.tuples(st.just("batches"), st.lists(BATCH, min_size=1, max_size=4)),
    st.tuples(st.just("event"), UPLINKS),
    st.tuples(st.just("ack"), st.sampled_from(["a", "b", "c"]), st.integers(0, 3)),
), max_size=10)


class Model:
    """What the outboxes hold, by the policy in meterhub.store's docstring, kept in Python."""

    def __init__(self) -> None:
        self.stored: set[int] = set()
        self.queues: dict[str, list[object]] = {}
        self.overflow: list[tuple[str, int]] = []

    def queue(self, refs: dict[str, list[object]]) -> None:
        for uplink, items in refs.items():
            queue = self.queues.setdefault(uplink, [])
            queue += items
            if len(queue) > CAP:
                self.overflow.append((uplink, len(queue) - CAP))
                del queue[:len(queue) - CAP]

    def batches(self, batches: Sequence[tuple[list[int], list[str]]]) -> list[int]:
        counts, refs = [], {}
        for minutes, uplinks in batches:
            new = [m for m in dict.fromkeys(minutes) if m not in self.stored]
            self.stored.update(new)
            counts.append(len(new))
            if new:
                for uplink in dict.fromkeys(uplinks):
                    refs.setdefault(uplink, []).extend(("reading", m) for m in new)
        self.queue(refs)
        return counts


@settings(max_examples=80, deadline=None)
@given(OPS)
def test_outboxes_follow_the_policy_through_merged_writes_events_and_acks(ops: list[tuple]) -> None:
    model = Model()
    with open_store(f"sqlite:///:memory:?outbox_max={CAP}") as s:
        events = 0
        for op in ops:
            if op[0] == "batches":
                batches = [([reading(minute=m) for m in minutes], uplinks) for minutes, uplinks in op[1]]
                assert s.add_reading_batches(batches) == model.batches(op[1])
            elif op[0] == "event":
                events += 1
                s.add_event(Event("alarm", source=f"{events}", timestamp=T0), outbox=op[1])
                model.queue({uplink: [("event", f"{events}")] for uplink in dict.fromkeys(op[1])})
            else:
                _, uplink, n = op
                s.ack(uplink, [item.id for item in s.outbox_items(uplink, limit=n)])
                del model.queues.setdefault(uplink, [])[:n]
        for uplink in ("a", "b", "c"):
            items = s.outbox_items(uplink)
            assert s.outbox_size(uplink) == len(items) <= CAP
            assert [("reading", round((i.item.timestamp - T0).total_seconds() / 60)) if isinstance(i.item, Reading)
                    else ("event", i.item.source) for i in items] == model.queues.get(uplink, [])
        assert [(e.data["uplink"], e.data["dropped"]) for e in s.take_overflow_events()] == model.overflow
