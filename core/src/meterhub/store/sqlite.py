"""The SQLite store: one file, WAL journal, every write one transaction.

Values are kept as TEXT so a :class:`~decimal.Decimal` comes back with its exact digits
and exponent (``0.10`` stays ``0.10``: readings become bills); timestamps are ISO 8601
in UTC with a fixed width, so text order is time order. Nothing is dropped quietly: a
write that fails raises :class:`StoreError` and the transaction is rolled back whole.
The schema carries its version (``PRAGMA user_version``); an older file is upgraded in
place by :data:`MIGRATIONS` when it is opened.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import operator
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Self

import attrs

from ..model import (
    CommandRecord,
    CommandState,
    Event,
    HeadEndRequest,
    Origin,
    OutboxItem,
    Quality,
    Reading,
    RequestRecord,
    RequestState,
    RoundReport,
    TerminalRecord,
    utcnow,
)
from . import (
    DEFAULT_OUTBOX_MAX,
    OUTBOX_OVERFLOW,
    URL_PREFIX,
    MeterIdentity,
    StoreError,
    check_command_move,
    check_request_end,
)

# The row conventions both backends share (and names tests and other modules know from here).
from ._rows import (
    _COMMAND_COLUMNS,
    _DECIMAL,
    _NO_PERIOD,
    _QUALITY_TEXT,
    _READING_COLUMNS,
    _REQUEST_COLUMNS,
    _TEXT,
    ROUTE_SEPARATOR,  # noqa: F401  (public here before the shared module)
    _command_record,
    _reading,
    _relays,
    _request_record,
    _round,
    _round_stats,
    _route_text,
    _to_json,
    _ts,
    _uplinks,
)

#: The schema this code writes. Bump it and add a step to :data:`MIGRATIONS` when the
#: tables change; a store written by a newer meterhub is refused rather than misread.
SCHEMA_VERSION = 6

#: Seconds a writer waits for another process's lock (``meterhub export`` reading the
#: file while the concentrator writes) before the write fails loudly.
BUSY_TIMEOUT_S = 10.0

# One row per reading key. Meter, quantity and time lead, so the key is also the index the
# lookups use (readings of a meter, since a time; latest; meters), and a reading written
# costs one index besides its row and the time index.
_READINGS_KEY = (
    "CREATE UNIQUE INDEX readings_key ON readings"
    f" (meter, quantity, timestamp, terminal, channel, protocol, coalesce(period, {_NO_PERIOD}))"
)

# Tables new in schema version 2 (as version 3 has them, without version 2's triggers).
# outbox ids are AUTOINCREMENT: an id an uplink acknowledged is never handed out again.
# outbox_sizes keeps each queue's length, so the cap is checked without counting rows; the
# writes keep it, once per transaction and uplink (every write to outbox goes through
# SqliteStore._queue, _cap_outboxes or ack).
_OUTBOX_AND_COMMANDS = """
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uplink      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('reading', 'event')),
    ref         INTEGER NOT NULL,
    queued      TEXT NOT NULL
);
CREATE INDEX outbox_uplink ON outbox (uplink, id);
CREATE TABLE outbox_sizes (
    uplink      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL
);
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
CREATE INDEX commands_time ON commands (requested);
CREATE INDEX commands_meter_time ON commands (meter, requested);
"""

# New in schema version 4: settings made while running (a master station's parameters and
# meter archive) that outlive a restart. ``value`` is JSON.
_SETTINGS = """
CREATE TABLE settings (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated     TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
"""

# New in schema version 5: a head-end's terminals, its allowlist and its queue of requests
# (what a head-end node holding a terminal's connection carries out for whoever asked).
_HEAD_END = """
CREATE TABLE terminals (
    name        TEXT PRIMARY KEY,
    online      INTEGER NOT NULL,
    node        TEXT NOT NULL,
    peer        TEXT NOT NULL,
    login       TEXT,
    seen        TEXT,
    heartbeats  INTEGER NOT NULL
);
CREATE TABLE allowed_terminals (
    name        TEXT PRIMARY KEY,
    added       TEXT NOT NULL
);
CREATE TABLE requests (
    id          TEXT PRIMARY KEY,
    terminal    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    args        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    credential  TEXT NOT NULL,
    created     TEXT NOT NULL,
    timeout     REAL NOT NULL,
    state       TEXT NOT NULL,
    node        TEXT NOT NULL,
    updated     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    answer      TEXT
);
CREATE INDEX requests_waiting ON requests (state, terminal, created);
"""

_SCHEMA = f"""
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
    period      INTEGER,
    relays      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX readings_time ON readings (timestamp);
{_READINGS_KEY};
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    source      TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    severity    TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX events_time ON events (timestamp);
CREATE INDEX events_kind_time ON events (kind, timestamp);
CREATE TABLE rounds (
    id          INTEGER PRIMARY KEY,
    started     TEXT NOT NULL,
    finished    TEXT NOT NULL,
    readings    INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    stats       TEXT NOT NULL
);
{_OUTBOX_AND_COMMANDS}{_SETTINGS}{_HEAD_END}
"""

# What version 2 had and version 3 has not, for the migration from 1 to build version 2
# exactly (the step from 2 to 3 then takes it away, with the index by meter, quantity and
# time that version 1 had already): its reading key, and a trigger per outbox row keeping
# the sizes.
_V2_READINGS_KEY = (
    "CREATE UNIQUE INDEX readings_key ON readings"
    f" (terminal, channel, protocol, meter, quantity, timestamp, coalesce(period, {_NO_PERIOD}))"
)
_V2_OUTBOX_TRIGGERS = """
CREATE TRIGGER outbox_counted AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_sizes (uplink, size) VALUES (NEW.uplink, 1)
        ON CONFLICT (uplink) DO UPDATE SET size = size + 1;
END;
CREATE TRIGGER outbox_uncounted AFTER DELETE ON outbox BEGIN
    UPDATE outbox_sizes SET size = size - 1 WHERE uplink = OLD.uplink;
END;
"""

_EVENT_COLUMNS = ("kind", "source", "timestamp", "severity", "data")


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


#: Rows one INSERT of readings takes at most (fewer when the connection's limit on SQL
#: variables says so: SQLite builds before 3.32 allow 999).
_READINGS_PER_INSERT = 256


#: What a reading row holds for None in the columns that may be NULL, turned back into NULL
#: by the INSERT (``nullif(?, x'')``): sqlite3 binds None only after looking for an adapter
#: (half a microsecond, three times a reading), an empty bytearray at once. No field of a
#: reading is a blob, so no value is mistaken for it.
_NULL = bytearray()
_NULLABLE = frozenset({"value", "value_type", "error_code", "latency", "data_time", "period"})

#: The largest rowid there is. Below it SQLite gives a new row the id one past the largest
#: in its table (https://sqlite.org/autoinc.html), so the rows one INSERT stores get the ids
#: that follow; once a table holds it, SQLite picks new ids at random.
_MAX_ROWID = 2**63 - 1


@functools.lru_cache(maxsize=64)
def _insert_readings_sql(rows: int, *, returning: bool) -> str:
    """One INSERT of ``rows`` readings. A reading already stored under its key (or earlier
    in the same INSERT: rows go in in order, so the first wins) is skipped: not counted, and
    with ``returning``, no id returned for it. Not INSERT OR IGNORE: that would also skip,
    silently, a row breaking a NOT NULL or CHECK constraint."""
    values = "(" + ", ".join("nullif(?, x'')" if column in _NULLABLE else "?" for column in _READING_COLUMNS) + ")"
    return (f"INSERT INTO readings ({', '.join(_READING_COLUMNS)}) VALUES {', '.join([values] * rows)}"
            f" ON CONFLICT DO NOTHING{' RETURNING id' if returning else ''}")


_INSERT_EVENT = _insert_sql("events", _EVENT_COLUMNS) + " RETURNING id"
_INSERT_COMMAND = _insert_sql("commands", _COMMAND_COLUMNS)

#: The migration's note when v1 held one reading twice (v1 had no key): what it dropped.
DUPLICATES_DROPPED = "store_duplicates_dropped"


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, each whole (a trigger's body has semicolons of its own).
    Not ``executescript``: that commits first, and a migration must stay in its transaction."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    for statement in _statements(script):
        conn.execute(statement)


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Version 2: where a reading came from (terminal, route) and what it is (data_time,
    period); one row per reading key; the outbox; the command audit trail."""
    for column in ("terminal TEXT NOT NULL DEFAULT ''", "route TEXT NOT NULL DEFAULT ''", "data_time TEXT",
                   "period INTEGER"):
        conn.execute(f"ALTER TABLE readings ADD COLUMN {column}")
    # Version 1 had no key, so a re-delivered reading was stored twice; the key needs one
    # row per reading. The first stored is kept, and an event says how many went.
    dropped = conn.execute(
        "DELETE FROM readings WHERE id NOT IN (SELECT min(id) FROM readings GROUP BY terminal, channel,"
        f" protocol, meter, quantity, timestamp, coalesce(period, {_NO_PERIOD}))"
    ).rowcount
    _run_script(conn, f"{_V2_READINGS_KEY};{_OUTBOX_AND_COMMANDS}{_V2_OUTBOX_TRIGGERS}")
    if dropped:
        note = Event(DUPLICATES_DROPPED, source="store", severity="warning",
                     data={"schema_version": 2, "readings": dropped, "kept": "the first stored of each"})
        conn.execute(_INSERT_EVENT, _event_row(note)).fetchall()


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Version 3: cheaper writes, nothing stored differently. The reading key leads with
    meter, quantity and time, so it serves the lookups ``readings_meter_quantity_time`` did
    and that index goes; the outbox sizes are kept by the writes, once per transaction,
    instead of by a trigger per outbox row."""
    conn.execute("DROP TRIGGER outbox_counted")
    conn.execute("DROP TRIGGER outbox_uncounted")
    # The triggers kept the sizes exact; counted afresh all the same, from the rows themselves.
    conn.execute("DELETE FROM outbox_sizes")
    conn.execute("INSERT INTO outbox_sizes (uplink, size) SELECT uplink, count(*) FROM outbox GROUP BY uplink")
    conn.execute("DROP INDEX readings_meter_quantity_time")
    # The same columns in another order: every stored row fits the new key as it fitted the old.
    conn.execute("DROP INDEX readings_key")
    conn.execute(_READINGS_KEY)


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """Version 4: the settings table."""
    _run_script(conn, _SETTINGS)


def _migrate_4_to_5(conn: sqlite3.Connection) -> None:
    """Version 5: the head-end's terminals, allowlist and request queue."""
    _run_script(conn, _HEAD_END)


def _migrate_5_to_6(conn: sqlite3.Connection) -> None:
    """Version 6: the relays of a carrier network a reading came through (``relays``);
    readings stored before were all read without one."""
    conn.execute("ALTER TABLE readings ADD COLUMN relays INTEGER NOT NULL DEFAULT 0")


#: ``MIGRATIONS[n]`` upgrades a store from version ``n - 1`` to ``n`` (inside the
#: opening transaction). Version 0 is an empty file, built by :data:`_SCHEMA` directly.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    2: _migrate_1_to_2, 3: _migrate_2_to_3, 4: _migrate_3_to_4, 5: _migrate_4_to_5, 6: _migrate_5_to_6,
}


# --- conversions -------------------------------------------------------------------


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


#: A reading's columns as its row is read back: its id, then those it is written with.
_READING_ROW = ("id", *_READING_COLUMNS)


def _reading_row(r: Reading) -> tuple[Any, ...]:
    """A reading as the INSERT of readings binds it (None as :data:`_NULL` where NULL may go)."""
    # On the writer's path for every reading: each field read once, the usual case first.
    value = r.value
    if value is None:
        text, value_type = _NULL, _NULL
    elif isinstance(value, Decimal):
        text, value_type = str(value), _DECIMAL
    elif isinstance(value, str):
        text, value_type = value, _TEXT
    else:
        raise ValueError(f"reading {r.meter} {r.quantity}: value {value!r} is neither Decimal, str nor None")
    period = r.period
    if period is None:
        period = _NULL
    elif not isinstance(period, int) or isinstance(period, bool) or period < 0:
        raise ValueError(f"reading {r.meter} {r.quantity}: period {period!r} is not a whole number ≥ 0")
    try:
        quality = _QUALITY_TEXT[r.quality]
    except (KeyError, TypeError):
        quality = Quality(r.quality).value  # raises for what is no quality
    error_code, latency, data_time = r.error_code, r.latency, r.data_time
    return (
        r.meter, r.quantity, text, value_type, r.unit, _ts(r.timestamp), quality,
        _NULL if error_code is None else error_code, r.detail, r.channel, r.protocol, r.attempts,
        _NULL if latency is None else latency, r.terminal, _route_text(r) if r.route else "",
        _NULL if data_time is None else _ts(data_time), period, _relays(r),
    )


def _reading_from_row(row: sqlite3.Row) -> Reading:
    return _reading(*_values(row, _READING_ROW, ("timestamp", "data_time")))


def _event_row(event: Event) -> tuple[Any, ...]:
    return (event.kind, event.source, _ts(event.timestamp), event.severity, _to_json(dict(event.data)))


def _event_from_row(row: sqlite3.Row) -> Event:
    return Event(
        kind=row["kind"],
        source=row["source"],
        timestamp=_parse_ts(row["timestamp"]),
        severity=row["severity"],
        data=json.loads(row["data"]),
    )


def _command_row(record: CommandRecord) -> tuple[Any, ...]:
    c = record.command
    return (
        c.id, c.meter, c.protocol, c.channel, c.name, _to_json(dict(c.args)), Origin(c.origin).value,
        c.issuer, c.credential, _ts(c.requested), CommandState(record.state).value, _ts(record.updated),
        record.reason, None if record.answer is None else _to_json(dict(record.answer)),
    )


def _command_from_row(row: sqlite3.Row) -> CommandRecord:
    return _command_record(*_values(row, _COMMAND_COLUMNS, ("requested", "updated")))


def _opt_ts(text: str | None) -> datetime | None:
    return None if text is None else _parse_ts(text)


def _values(row: sqlite3.Row, columns: Sequence[str], times: Collection[str]) -> list[Any]:
    """A row's ``columns`` in that order, the ISO text of its ``times`` as datetimes: what the
    shared records (:mod:`._rows`) are built from."""
    return [_opt_ts(row[column]) if column in times else row[column] for column in columns]


def _terminal_from_row(row: sqlite3.Row) -> TerminalRecord:
    return TerminalRecord(row["name"], bool(row["online"]), row["node"], row["peer"], _opt_ts(row["login"]),
                          _opt_ts(row["seen"]), row["heartbeats"])


def _request_from_row(row: sqlite3.Row) -> RequestRecord:
    return _request_record(*_values(row, _REQUEST_COLUMNS, ("created", "updated")))


def _limit_clause(limit: int | None, params: list[Any]) -> str:
    if limit is None:
        return ""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    params.append(int(limit))
    return " LIMIT ?"


# --- the SQLite store --------------------------------------------------------------


class SqliteStore:
    """A store in one SQLite file (WAL journal, so readers never block the concentrator).

    One connection, to be used from one thread (:class:`~meterhub.store.writer.StoreWriter`
    gives async code one). ``outbox_max`` caps each uplink's outbox (see :mod:`meterhub.store`);
    ``commits`` counts the write transactions committed.
    """

    def __init__(self, path: str, *, url: str | None = None, outbox_max: int = DEFAULT_OUTBOX_MAX) -> None:
        if isinstance(outbox_max, bool) or not isinstance(outbox_max, int) or outbox_max < 1:
            raise ValueError(f"outbox_max must be a whole number of items ≥ 1, got {outbox_max!r}")
        self.path = path
        self.url = url or URL_PREFIX + path
        self.outbox_max = outbox_max
        self.commits = 0
        self._overflow: list[Event] = []
        try:
            # Autocommit mode: every write below runs in an explicit BEGIN IMMEDIATE
            # transaction, so a batch is stored whole or not at all.
            # Not tied to the opening thread: a StoreWriter may run it on its own thread.
            # One thread at a time uses it (the writer's, or its owner's once it is closed).
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.url}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed round survives a power cut of the gateway.
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open store {self.url}: {exc}") from exc
        except StoreError:
            self._conn.close()
            raise

    # -- schema -----------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._transaction("upgrade the schema of"):
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.url} has schema version {version}, newer than this meterhub "
                    f"understands ({SCHEMA_VERSION}); upgrade meterhub"
                )
            if version == 0:
                if self._conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]:
                    raise StoreError(
                        f"store {self.url} has tables but no schema version (PRAGMA user_version is 0),"
                        " as a file restored from a dump without its user_version; set it to the"
                        " version that wrote the file"
                    )
                _run_script(self._conn, _SCHEMA)
                version = SCHEMA_VERSION
            while version < SCHEMA_VERSION:
                step = MIGRATIONS.get(version + 1)
                if step is None:
                    raise StoreError(f"store {self.url}: no migration from schema version {version}")
                step(self._conn)
                version += 1
            # PRAGMA does not take parameters; version is an int we computed.
            self._conn.execute(f"PRAGMA user_version = {int(version)}")

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {what} store {self.url}: {exc}") from exc
        try:
            yield
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot {what} store {self.url}: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot {what} store {self.url}: commit failed: {exc}") from exc
        self.commits += 1

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _query(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {what} from store {self.url}: {exc}") from exc

    # -- writing ----------------------------------------------------------------------

    def add_readings(self, readings: Sequence[Reading], *, outbox: Sequence[str] = ()) -> int:
        """Store readings in one transaction and return how many were new (a reading
        stored already is skipped); queue each new one for every uplink in ``outbox``."""
        return self.add_reading_batches([(readings, outbox)])[0]

    def add_reading_batches(self, batches: Sequence[tuple[Sequence[Reading], Sequence[str]]]) -> list[int]:
        """Store ``(readings, outbox)`` batches in one transaction, each as
        :meth:`add_readings` would; return each batch's count of new readings."""
        # Check every reading before writing any.
        prepared = [([_reading_row(r) for r in readings], _uplinks(outbox)) for readings, outbox in batches]
        if not any(rows for rows, _ in prepared):
            return [0] * len(prepared)
        counts: list[int] = []
        with self._transaction("write readings to"):
            queued = utcnow()
            refs: dict[str, list[int]] = {}  # what each uplink gets, in the order of the batches
            (last_id,) = self._conn.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()
            for rows, uplinks in prepared:
                new_ids, last_id = self._insert_readings(rows, last_id)
                counts.append(len(new_ids))
                if new_ids:
                    for uplink in uplinks:
                        refs.setdefault(uplink, []).extend(new_ids)
            overflow = self._queue("reading", refs, queued)
        self._overflow.extend(overflow)
        return counts

    def _insert_readings(self, rows: Sequence[tuple[Any, ...]], last_id: int) -> tuple[list[int], int]:
        """Insert rows, skipping those stored already; the ids of the new ones, ascending (a
        duplicate gets none, so it is neither counted nor queued), and the largest id now.
        ``last_id`` is the largest id before: in this transaction no one else writes readings."""
        per_insert = max(1, min(_READINGS_PER_INSERT,
                                self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(_READING_COLUMNS)))
        new_ids: list[int] = []
        for start in range(0, len(rows), per_insert):
            chunk = rows[start:start + per_insert]
            params = list(itertools.chain.from_iterable(chunk))
            if last_id + len(chunk) < _MAX_ROWID:
                # The rows stored took the ids after last_id, one each (see _MAX_ROWID): no
                # RETURNING, which would cost a sixth of the write. The last id tells if not.
                cursor = self._conn.execute(_insert_readings_sql(len(chunk), returning=False), params)
                stored = cursor.rowcount
                if stored and cursor.lastrowid != last_id + stored:
                    raise StoreError(f"store {self.url}: {stored} readings stored after id {last_id} got ids up"
                                     f" to {cursor.lastrowid}; their outbox items cannot be told")
                new_ids += range(last_id + 1, last_id + stored + 1)
                last_id += stored
            else:
                # Random ids: as the INSERT returns them (read to the end, so it ran whole),
                # in no promised order; sorted, as the others come.
                cursor = self._conn.execute(_insert_readings_sql(len(chunk), returning=True), params)
                new_ids += sorted(id_ for (id_,) in cursor)
                last_id = max([last_id, *new_ids])
        return new_ids, last_id

    def _queue(self, kind: str, refs: Mapping[str, Sequence[int]], queued: datetime) -> list[Event]:
        """Queue ``refs[uplink]`` (ids of ``kind``) for each uplink, in that order; keep the
        queues' sizes, and hold each to ``outbox_max`` (:meth:`_cap_outboxes`)."""
        at = _ts(queued)
        sizes = {}
        for uplink, ids in refs.items():
            added = self._conn.execute(
                "INSERT INTO outbox (uplink, kind, ref, queued) SELECT ?, ?, value, ? FROM json_each(?) ORDER BY key",
                (uplink, kind, at, json.dumps(ids)),
            ).rowcount
            ((sizes[uplink],),) = self._conn.execute(
                "INSERT INTO outbox_sizes (uplink, size) VALUES (?, ?)"
                " ON CONFLICT (uplink) DO UPDATE SET size = size + excluded.size RETURNING size",
                (uplink, added),
            ).fetchall()
        return self._cap_outboxes(sizes, queued)

    def _cap_outboxes(self, sizes: Mapping[str, int], at: datetime) -> list[Event]:
        """Drop the oldest items of every queue past ``outbox_max`` (``sizes``: the queues
        written to, by their size now), each drop told by a stored ``outbox_overflow`` event
        (not queued itself); the events, for observers."""
        events = []
        for uplink, size in sizes.items():
            excess = size - self.outbox_max
            if excess <= 0:
                continue
            dropped = self._conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE uplink = ? ORDER BY id LIMIT ?)",
                (uplink, excess),
            ).rowcount
            self._count_out(uplink, dropped)
            event = Event(OUTBOX_OVERFLOW, source=uplink, timestamp=at, severity="warning",
                          data={"uplink": uplink, "dropped": excess, "limit": self.outbox_max})
            self._conn.execute(_INSERT_EVENT, _event_row(event)).fetchall()
            events.append(event)
        return events

    def _count_out(self, uplink: str, removed: int) -> None:
        if removed:
            self._conn.execute("UPDATE outbox_sizes SET size = size - ? WHERE uplink = ?", (removed, uplink))

    def add_event(self, event: Event, *, outbox: Sequence[str] = ()) -> None:
        """Store one event (``data`` as JSON, Decimals as strings), queued for every
        uplink in ``outbox`` in the same transaction."""
        row, uplinks = _event_row(event), _uplinks(outbox)
        with self._transaction("write an event to"):
            ((event_id,),) = self._conn.execute(_INSERT_EVENT, row).fetchall()
            overflow = self._queue("event", {uplink: [event_id] for uplink in uplinks}, utcnow())
        self._overflow.extend(overflow)

    def add_round(self, report: RoundReport) -> None:
        """Store a round's summary and its statistics per meter, channel, collector and relay depth."""
        stats = _round_stats(report)
        row = (
            _ts(report.started), _ts(report.finished), len(report.readings),
            report.ok_count, report.failed_count, stats,
        )
        with self._transaction("write a round to"):
            self._conn.execute(
                "INSERT INTO rounds (started, finished, readings, ok, failed, stats) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

    def take_overflow_events(self) -> list[Event]:
        """The ``outbox_overflow`` events written since the last call; the list is cleared."""
        events, self._overflow = self._overflow, []
        return events

    # -- the outbox -------------------------------------------------------------------

    def _outbox_size(self, uplink: str) -> int:
        row = self._conn.execute("SELECT size FROM outbox_sizes WHERE uplink = ?", (uplink,)).fetchone()
        return 0 if row is None else int(row[0])

    def outbox_size(self, uplink: str) -> int:
        """How many items wait for ``uplink``."""
        try:
            return self._outbox_size(uplink)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the outbox of {uplink!r} from store {self.url}: {exc}") from exc

    def _rows_by_id(self, table: str, ids: Sequence[int]) -> dict[int, sqlite3.Row]:
        if not ids:
            return {}
        rows = self._query(table, f"SELECT * FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                           (json.dumps(list(ids)),))
        return {row["id"]: row for row in rows}

    def outbox_items(self, uplink: str, *, limit: int | None = None) -> list[OutboxItem]:
        """What ``uplink`` has not acknowledged yet, oldest first, readings and events rebuilt."""
        params: list[Any] = [uplink]
        sql = "SELECT id, kind, ref, queued FROM outbox WHERE uplink = ? ORDER BY id" + _limit_clause(limit, params)
        queue = self._query(f"the outbox of {uplink!r}", sql, params)
        # Stored readings and events are never deleted, so reading them afterwards is safe.
        readings = self._rows_by_id("readings", [q["ref"] for q in queue if q["kind"] == "reading"])
        events = self._rows_by_id("events", [q["ref"] for q in queue if q["kind"] == "event"])
        items = []
        for q in queue:
            row = (readings if q["kind"] == "reading" else events).get(q["ref"])
            if row is None:
                raise StoreError(f"store {self.url}: outbox item {q['id']} of {uplink!r} refers to"
                                 f" {q['kind']} {q['ref']}, which is not stored")
            item = _reading_from_row(row) if q["kind"] == "reading" else _event_from_row(row)
            items.append(OutboxItem(id=q["id"], uplink=uplink, item=item, queued=_parse_ts(q["queued"])))
        return items

    def ack(self, uplink: str, ids: Sequence[int]) -> int:
        """Remove the items ``uplink`` acknowledged; return how many went (unknown ids and
        ids of another uplink's items are ignored)."""
        keys = [operator.index(i) for i in ids]  # refuses str and float ids
        if not keys:
            return 0
        with self._transaction(f"acknowledge outbox items of {uplink!r} in"):
            removed = self._conn.execute(
                "DELETE FROM outbox WHERE uplink = ? AND id IN (SELECT value FROM json_each(?))",
                (uplink, json.dumps(keys)),
            ).rowcount
            self._count_out(uplink, removed)
        return int(removed)

    # -- commands ---------------------------------------------------------------------

    def add_command(self, record: CommandRecord) -> None:
        """Start a command's audit trail; a record with the same id stored already is a StoreError."""
        row = _command_row(record)
        with self._transaction("write a command to"):
            if self._conn.execute("SELECT 1 FROM commands WHERE id = ?", (record.command.id,)).fetchone():
                raise StoreError(f"command {record.command.id} is already in store {self.url}")
            self._conn.execute(_INSERT_COMMAND, row)

    def update_command(
        self,
        id: str,
        state: CommandState,
        *,
        reason: str = "",
        answer: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> CommandRecord:
        """Move a command to ``state`` (at ``at``, default now) and return its new record;
        an unknown id or a move :data:`~meterhub.store.COMMAND_MOVES` forbids is a StoreError.
        The record comes back as stored (Decimals in ``answer`` as exact strings)."""
        state = CommandState(state)
        updated = utcnow() if at is None else at
        values = (state.value, _ts(updated), reason, None if answer is None else _to_json(dict(answer)), id)
        with self._transaction("update a command in"):
            row = self._conn.execute("SELECT * FROM commands WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise StoreError(f"no command {id!r} in store {self.url}")
            current = _command_from_row(row)
            check_command_move(id, current.state, state)
            self._conn.execute("UPDATE commands SET state = ?, updated = ?, reason = ?, answer = ? WHERE id = ?",
                               values)
            row = self._conn.execute("SELECT * FROM commands WHERE id = ?", (id,)).fetchone()
        return _command_from_row(row)  # as stored: what command(id) will say

    def command(self, id: str) -> CommandRecord | None:
        """The command's record, or None if there is none with that id."""
        rows = self._query("a command", "SELECT * FROM commands WHERE id = ?", (id,))
        return _command_from_row(rows[0]) if rows else None

    def commands(
        self,
        *,
        meter: str | None = None,
        state: CommandState | None = None,
        origin: Origin | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[CommandRecord]:
        """Command records, oldest request first; ``since`` (inclusive) filters on the request time."""
        rows = self._select(
            "commands", time_column="requested", order="requested, rowid", since=since, limit=limit,
            meter=meter,
            state=None if state is None else CommandState(state).value,
            origin=None if origin is None else Origin(origin).value,
        )
        return [_command_from_row(row) for row in rows]

    # -- settings ---------------------------------------------------------------------

    def settings(self, scope: str) -> dict[str, Any]:
        """The settings kept for ``scope``: key -> value as stored (JSON: Decimals and
        times come back as text); empty when there are none."""
        rows = self._query("settings", "SELECT key, value FROM settings WHERE scope = ? ORDER BY key", (scope,))
        return {row["key"]: json.loads(row["value"]) for row in rows}

    def put_settings(self, scope: str, values: Mapping[str, Any]) -> None:
        """Keep ``values`` for ``scope`` in one transaction; a value of None deletes its key.
        A value JSON cannot hold is a TypeError, and nothing of the call is stored."""
        rows = [(scope, str(key), None if value is None else _to_json(value)) for key, value in values.items()]
        updated = _ts(utcnow())
        with self._transaction("write settings to"):
            for scope_, key, text in rows:
                if text is None:
                    self._conn.execute("DELETE FROM settings WHERE scope = ? AND key = ?", (scope_, key))
                else:
                    self._conn.execute(
                        "INSERT INTO settings (scope, key, value, updated) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                        (scope_, key, text, updated))

    # -- the head-end: terminals, allowlist, requests ---------------------------------------

    def allow_terminals(self, names: Sequence[str], *, allowed: bool = True) -> None:
        """Add terminals to the allowlist (``allowed``) or take them off it."""
        at = _ts(utcnow())
        with self._transaction("write the allowlist of"):
            for name in names:
                if allowed:
                    self._conn.execute("INSERT INTO allowed_terminals (name, added) VALUES (?, ?)"
                                       " ON CONFLICT (name) DO NOTHING", (name, at))
                else:
                    self._conn.execute("DELETE FROM allowed_terminals WHERE name = ?", (name,))

    def allowed_terminals(self) -> list[str]:
        """The allowlist, sorted."""
        return [row["name"] for row in self._query("the allowlist", "SELECT name FROM allowed_terminals ORDER BY name")]

    def terminal_seen(self, name: str, *, node: str, peer: str, at: datetime, online: bool = True,
                      login: bool = False, heartbeat: bool = False) -> None:
        """Record a terminal's frame (``login``: its login, which zeroes its heartbeats;
        ``heartbeat``: one more) or, ``online=False``, the end of its connection on ``node``
        (ignored when another node holds it since)."""
        when = _ts(at)
        with self._transaction("write a terminal to"):
            if not online:
                self._conn.execute("UPDATE terminals SET online = 0, seen = ? WHERE name = ? AND node = ?",
                                   (when, name, node))
                return
            self._conn.execute(
                "INSERT INTO terminals (name, online, node, peer, login, seen, heartbeats) VALUES (?, 1, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET online = 1, node = excluded.node, peer = excluded.peer,"
                " login = coalesce(excluded.login, login), seen = excluded.seen,"
                " heartbeats = CASE WHEN excluded.login IS NOT NULL THEN excluded.heartbeats"
                " ELSE heartbeats + excluded.heartbeats END",
                (name, node, peer, when if login else None, when, int(heartbeat)))

    def record_heartbeats(self, node: str, beats: Mapping[str, tuple[datetime, int]]) -> None:
        """Record the heartbeats that came on ``node`` (name -> (last time, count)) in one
        transaction; a terminal another node holds since is left alone."""
        rows = [(_ts(at), int(count), name, node) for name, (at, count) in beats.items()]
        with self._transaction("write heartbeats to"):
            self._conn.executemany("UPDATE terminals SET seen = ?, heartbeats = heartbeats + ? WHERE name = ? AND node = ?",
                                   rows)

    def terminals_offline(self, node: str) -> int:
        """Mark every terminal ``node`` held as offline (the node starting afresh after a
        crash); returns how many."""
        with self._transaction("write terminals to"):
            return int(self._conn.execute("UPDATE terminals SET online = 0 WHERE node = ? AND online = 1",
                                          (node,)).rowcount)

    def terminals(self, *, online: bool | None = None) -> list[TerminalRecord]:
        """Every terminal the head-end has seen, by name."""
        sql, params = "SELECT * FROM terminals", []
        if online is not None:
            sql += " WHERE online = ?"
            params.append(int(online))
        return [_terminal_from_row(row) for row in self._query("terminals", sql + " ORDER BY name", params)]

    def add_request(self, request: HeadEndRequest) -> None:
        """Queue a request; a second one with the same id is a StoreError."""
        row = (request.id, request.terminal, request.kind, _to_json(dict(request.args)), Origin(request.origin).value,
               request.issuer, request.credential, _ts(request.created), float(request.timeout),
               RequestState.QUEUED.value, "", _ts(request.created), "", None)
        with self._transaction("queue a request in"):
            if self._conn.execute("SELECT 1 FROM requests WHERE id = ?", (request.id,)).fetchone():
                raise StoreError(f"request {request.id} is already in store {self.url}")
            self._conn.execute(_insert_sql("requests", _REQUEST_COLUMNS), row)

    def claim_requests(self, terminals: Collection[str], node: str, *, at: datetime | None = None,
                       limit: int = 100) -> list[RequestRecord]:
        """Take the queued requests for ``terminals`` (those ``node`` holds), oldest first,
        as CLAIMED by ``node``: each is claimed by one node only. A request past its
        timeout is failed instead, never claimed."""
        if not terminals:
            return []
        now = at or utcnow()
        # A node holding thousands of terminals asks often, and the queue is mostly empty:
        # which terminals have queued requests is one read of the index, and only those
        # are named in the claim.
        held = set(terminals)
        query = "SELECT DISTINCT terminal FROM requests WHERE state = 'queued'"
        if not any(row["terminal"] in held for row in self._query("queued requests", query)):
            return []  # no write lock taken: the usual case
        claimed: list[RequestRecord] = []
        with self._transaction("claim requests in"):
            names = [row["terminal"] for row in self._conn.execute(query).fetchall() if row["terminal"] in held]
            rows: list[sqlite3.Row] = []
            for start in range(0, len(names), 500):
                chunk = names[start:start + 500]
                rows += self._conn.execute(
                    f"SELECT * FROM requests WHERE state = 'queued' AND terminal IN ({', '.join('?' * len(chunk))})"
                    " ORDER BY created LIMIT ?", (*chunk, limit)).fetchall()
            records = sorted(map(_request_from_row, rows), key=lambda r: r.request.created)[:limit]
            for record in records:
                late = (now - record.request.created).total_seconds() > record.request.timeout
                state, reason = ((RequestState.FAILED, "not taken within its timeout") if late
                                 else (RequestState.CLAIMED, ""))
                self._conn.execute("UPDATE requests SET state = ?, node = ?, updated = ?, reason = ? WHERE id = ?",
                                   (state.value, node, _ts(now), reason, record.request.id))
                if not late:
                    claimed.append(attrs.evolve(record, state=state, node=node, updated=now))
        return claimed

    def finish_request(self, id: str, state: RequestState, *, reason: str = "",
                       answer: Mapping[str, Any] | None = None) -> RequestRecord:
        """End a request: ANSWERED (with ``answer``) or FAILED (with ``reason``). Only a
        queued or claimed request can end; an unknown id or an ended one is a StoreError."""
        state = RequestState(state)
        check_request_end(id, RequestState.QUEUED.value, state)  # a bad end state: before any I/O
        values = (state.value, _ts(utcnow()), reason, None if answer is None else _to_json(dict(answer)), id)
        with self._transaction("end a request in"):
            row = self._conn.execute("SELECT state FROM requests WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise StoreError(f"no request {id!r} in store {self.url}")
            check_request_end(id, row["state"], state)
            self._conn.execute("UPDATE requests SET state = ?, updated = ?, reason = ?, answer = ? WHERE id = ?",
                               values)
            row = self._conn.execute("SELECT * FROM requests WHERE id = ?", (id,)).fetchone()
        return _request_from_row(row)

    def request(self, id: str) -> RequestRecord | None:
        """The request's record, or None."""
        rows = self._query("a request", "SELECT * FROM requests WHERE id = ?", (id,))
        return _request_from_row(rows[0]) if rows else None

    # -- reading ----------------------------------------------------------------------

    def _select(self, table: str, *, since: datetime | None, limit: int | None, time_column: str = "timestamp",
                order: str = "timestamp, id", **equal: Any) -> list[sqlite3.Row]:
        # Column names come from our own keyword arguments, never from the caller's data.
        where = [(f"{column} = ?", value) for column, value in equal.items() if value is not None]
        if since is not None:
            where.append((f"{time_column} >= ?", _ts(since)))
        sql = f"SELECT * FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(clause for clause, _ in where)
        sql += f" ORDER BY {order}"
        params = [value for _, value in where]
        sql += _limit_clause(limit, params)
        return self._query(table, sql, params)

    def readings(
        self,
        *,
        meter: str | None = None,
        quantity: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        protocol: str | None = None,
        channel: str | None = None,
        terminal: str | None = None,
    ) -> list[Reading]:
        """Stored readings, oldest first; ``since`` is inclusive, ``limit`` keeps the first N.

        ``meter`` is an address alone; the same address can name several meters (Modbus
        unit 1 and M-Bus primary address 1 on one bus, unit 1 on two buses, two
        concentrators' meters in a head-end), which ``protocol``, ``channel`` and
        ``terminal`` tell apart. Every filter runs in the query.
        """
        rows = self._select("readings", since=since, limit=limit, meter=meter, quantity=quantity,
                            protocol=protocol, channel=channel, terminal=terminal)
        return [_reading_from_row(row) for row in rows]

    def latest(
        self, *, meter: str | None = None, quantity: str | None = None, terminal: str | None = None
    ) -> list[Reading]:
        """The newest OK reading per (terminal, channel, protocol, meter, quantity, period),
        sorted by that key: the latest value of every measuring point."""
        equal = [(column, value) for column, value in (("meter", meter), ("quantity", quantity), ("terminal", terminal))
                 if value is not None]
        where = " AND ".join(["quality = ?", *(f"{column} = ?" for column, _ in equal)])
        # Partitioned meter and quantity first, as the reading key leads: the key's index
        # gives the rows in that order, and only each measuring point's few are sorted.
        sql = (
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY meter, quantity, terminal, channel, protocol,"
            f" period ORDER BY timestamp DESC, id DESC) AS newness FROM readings WHERE {where})"
            " WHERE newness = 1 ORDER BY terminal, channel, protocol, meter, quantity, period"
        )
        rows = self._query("the latest readings", sql, [Quality.OK.value, *(value for _, value in equal)])
        return [_reading_from_row(row) for row in rows]

    def meters(
        self, *, meter: str | None = None, protocol: str | None = None, channel: str | None = None
    ) -> list[MeterIdentity]:
        """The distinct meters with stored readings, sorted, filtered like :meth:`readings`:
        what a bare address may mean before it is used as a filter."""
        equal = [(column, value) for column, value in (("meter", meter), ("protocol", protocol), ("channel", channel))
                 if value is not None]
        sql = "SELECT DISTINCT channel, protocol, meter FROM readings"
        if equal:
            sql += " WHERE " + " AND ".join(f"{column} = ?" for column, _ in equal)
        sql += " ORDER BY channel, protocol, meter"
        rows = self._query("meters", sql, [value for _, value in equal])
        return [MeterIdentity(row["channel"], row["protocol"], row["meter"]) for row in rows]

    def events(
        self,
        *,
        kind: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Stored events, oldest first, filtered like :meth:`readings`."""
        return [_event_from_row(row) for row in self._select("events", since=since, limit=limit, kind=kind, source=source)]

    def rounds(self) -> list[dict[str, Any]]:
        """Round summaries, oldest first, as JSON-able dicts (timestamps as ISO text)."""
        rows = self._query("rounds", "SELECT id, started, finished, readings, ok, failed, stats FROM rounds"
                                     " ORDER BY started, id")
        return [_round(*row) for row in rows]

    # -- life cycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; further use raises :class:`StoreError`."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"
