"""The PostgreSQL store: one database shared by several head-end processes.

The same tables and columns as the SQLite store (:mod:`.sqlite`), with PostgreSQL types
where they serve better: ``timestamptz`` for times, ``bigint`` identities for ids (a
sequence never hands a value out twice, so an acknowledged outbox id is never reused),
``COLLATE "C"`` on names so they sort as Python and SQLite sort them, ``boolean`` for a
terminal being online. Values stay TEXT beside ``value_type``: NUMERIC would turn
``2.3E+2`` into ``230`` and ``-0`` into ``0``, and readings become bills. JSON stays TEXT
too: jsonb refuses ``\\u0000`` and reorders keys.

Several processes write at once, so every write is safe against the others: a reading's
key is a unique index written with ``ON CONFLICT DO NOTHING`` (re-delivered through two
nodes, it is stored and queued once); each uplink's row in ``outbox_sizes`` is locked
before its queue is touched, so sizes and the cap stay exact and a queue's ids ascend in
commit order; locks are taken in one order everywhere (readings by their key, then the
uplinks by name), so two writers never deadlock. Head-end nodes claim queued requests with
``FOR UPDATE SKIP LOCKED``: each request goes to one node, and no node waits for another's
claim. The schema's version is kept in a one-row table; it is created or upgraded under
an advisory lock, so processes starting together on an empty database build it once.

psycopg 3 is imported here only: install it with the ``meterhub[postgres]`` extra.
"""

from __future__ import annotations

import contextlib
import json
import operator
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
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
    MeterIdentity,
    StoreError,
    _store_options,
    check_command_move,
    check_request_end,
)

# The row conventions both backends share, so a row means the same in either.
from ._rows import (
    _COMMAND_COLUMNS,
    _DECIMAL,
    _NO_PERIOD,
    _QUALITY_TEXT,
    _READING_COLUMNS,
    _REQUEST_COLUMNS,
    _TEXT,
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

try:
    import psycopg
    from psycopg import sql
except ImportError:  # the core runs without it; opening a PostgreSQL store says what to install
    psycopg = None  # type: ignore[assignment]

#: The URL schemes libpq takes, and so this store.
URL_SCHEMES = ("postgresql://", "postgres://")

#: The schema this code writes. Its tables are those of the SQLite schema of the same
#: number; bump it and add a step to :data:`MIGRATIONS` when they change. A database
#: written by a newer meterhub is refused rather than misread.
SCHEMA_VERSION = 6

#: The key of the advisory lock held while the schema is checked, created or upgraded:
#: "meterhub" in ASCII, as a bigint. Advisory locks are per database.
SCHEMA_LOCK = int.from_bytes(b"meterhub", "big")

#: The first of the two keys of the advisory lock ``put_settings`` holds on a scope (the
#: second is the scope's hash): "mhst" in ASCII.
SETTINGS_LOCK = int.from_bytes(b"mhst", "big")

#: Seconds a connection attempt may take before opening fails.
CONNECT_TIMEOUT_S = 10

# The largest values the integer columns hold: a larger one is refused before any write.
_INT4_MAX = 2**31 - 1
_INT8_MAX = 2**63 - 1

_C = 'text COLLATE "C" NOT NULL'  # a name: compared and sorted byte by byte, as Python and SQLite do

_VERSION_TABLE = """
CREATE TABLE meterhub_schema (
    single      boolean PRIMARY KEY DEFAULT true CHECK (single),
    version     integer NOT NULL
);
"""

# New in schema version 5: a head-end's terminals, its allowlist and its queue of requests.
# Queued requests are found by terminal and age through an index of their own: the queue
# stays short while the answered and failed requests pile up.
_HEAD_END = f"""
CREATE TABLE terminals (
    name        {_C} PRIMARY KEY,
    online      boolean NOT NULL,
    node        {_C},
    peer        text NOT NULL,
    login       timestamptz,
    seen        timestamptz,
    heartbeats  bigint NOT NULL
);
CREATE TABLE allowed_terminals (
    name        {_C} PRIMARY KEY,
    added       timestamptz NOT NULL
);
CREATE TABLE requests (
    id          {_C} PRIMARY KEY,
    terminal    {_C},
    kind        text NOT NULL,
    args        text NOT NULL,
    origin      text NOT NULL,
    issuer      text NOT NULL,
    credential  text NOT NULL,
    created     timestamptz NOT NULL,
    timeout     double precision NOT NULL,
    state       text NOT NULL,
    node        {_C},
    updated     timestamptz NOT NULL,
    reason      text NOT NULL,
    answer      text
);
CREATE INDEX requests_queued ON requests (terminal, created, id) WHERE state = 'queued';
"""

_SCHEMA = f"""
CREATE TABLE readings (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter       {_C},
    quantity    {_C},
    value       text,
    value_type  text CHECK (value_type IN ('decimal', 'text')),
    unit        text NOT NULL,
    timestamp   timestamptz NOT NULL,
    quality     text NOT NULL,
    error_code  bigint,
    detail      text NOT NULL,
    channel     {_C},
    protocol    {_C},
    attempts    integer NOT NULL,
    latency     double precision,
    terminal    {_C} DEFAULT '',
    route       text NOT NULL DEFAULT '',
    data_time   timestamptz,
    period      integer CHECK (period >= 0),
    relays      integer NOT NULL DEFAULT 0 CHECK (relays >= 0)
);
CREATE INDEX readings_time ON readings (timestamp);
CREATE UNIQUE INDEX readings_key ON readings
    (meter, quantity, timestamp, terminal, channel, protocol, coalesce(period, {_NO_PERIOD}));
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        {_C},
    source      {_C},
    timestamp   timestamptz NOT NULL,
    severity    text NOT NULL,
    data        text NOT NULL
);
CREATE INDEX events_time ON events (timestamp);
CREATE INDEX events_kind_time ON events (kind, timestamp);
CREATE TABLE rounds (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started     timestamptz NOT NULL,
    finished    timestamptz NOT NULL,
    readings    integer NOT NULL,
    ok          integer NOT NULL,
    failed      integer NOT NULL,
    stats       text NOT NULL
);
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uplink      {_C},
    kind        text NOT NULL CHECK (kind IN ('reading', 'event')),
    ref         bigint NOT NULL,
    queued      timestamptz NOT NULL
);
CREATE INDEX outbox_uplink ON outbox (uplink, id);
CREATE TABLE outbox_sizes (
    uplink      {_C} PRIMARY KEY,
    size        bigint NOT NULL
);
CREATE TABLE commands (
    id          {_C} PRIMARY KEY,
    meter       {_C},
    protocol    {_C},
    channel     {_C},
    name        text NOT NULL,
    args        text NOT NULL,
    origin      text NOT NULL,
    issuer      text NOT NULL,
    credential  text NOT NULL,
    requested   timestamptz NOT NULL,
    state       text NOT NULL,
    updated     timestamptz NOT NULL,
    reason      text NOT NULL,
    answer      text
);
CREATE INDEX commands_time ON commands (requested);
CREATE INDEX commands_meter_time ON commands (meter, requested);
CREATE TABLE settings (
    scope       {_C},
    key         {_C},
    value       text NOT NULL,
    updated     timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
{_HEAD_END}"""


#: The tables of the schema: one of them without :data:`_VERSION_TABLE` means the database
#: was not made by this store (or restored without its version), and it is refused.
TABLES = ("readings", "events", "rounds", "outbox", "outbox_sizes", "commands", "settings", "terminals",
          "allowed_terminals", "requests")


def _migrate_4_to_5(conn: psycopg.Connection[Any]) -> None:
    """Version 5: the head-end's terminals, allowlist and request queue."""
    conn.execute(_HEAD_END)


#: ``MIGRATIONS[n]`` upgrades a database from version ``n - 1`` to ``n`` (inside the opening
#: transaction, under :data:`SCHEMA_LOCK`). The first PostgreSQL schema is version 4; an
#: empty database is built at the newest version by :data:`_SCHEMA` directly.
def _migrate_5_to_6(conn: psycopg.Connection[Any]) -> None:
    """Version 6: the relays of a carrier network a reading came through."""
    conn.execute("ALTER TABLE readings ADD COLUMN relays integer NOT NULL DEFAULT 0 CHECK (relays >= 0)")


MIGRATIONS: dict[int, Callable[[psycopg.Connection[Any]], None]] = {5: _migrate_4_to_5, 6: _migrate_5_to_6}

# Reading columns (:data:`_READING_COLUMNS`) in the order rows are built, stored and read
# back (the id first on reading), and their types, as binary COPY names them.
_READING_TYPES = (
    "text", "text", "text", "text", "text", "timestamptz", "text", "int8", "text",
    "text", "text", "int4", "float8", "text", "text", "timestamptz", "int4", "int4",
)
_READING_SELECT = "id, " + ", ".join(_READING_COLUMNS)
_EVENT_SELECT = "id, kind, source, timestamp, severity, data"
_COMMAND_SELECT = ", ".join(_COMMAND_COLUMNS)
_REQUEST_SELECT = ", ".join(_REQUEST_COLUMNS)
_TERMINAL_SELECT = "name, online, node, peer, login, seen, heartbeats"

# A batch of readings goes in through a table of the connection's own, by binary COPY (the
# fastest way in: psycopg writes its rows in C), emptied by every commit.
_BATCH_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS meterhub_batch (position int4,"
    f" {', '.join(f'{column} {kind}' for column, kind in zip(_READING_COLUMNS, _READING_TYPES, strict=True))})"
    " ON COMMIT DELETE ROWS"
)
_COPY_BATCH = f"COPY pg_temp.meterhub_batch (position, {', '.join(_READING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

# From there into readings in one statement: each reading takes an id from the sequence
# (``{sequence}``, looked up once) in the order given, so readings of one time come back in
# the order they were written; they are inserted in the order of the key, so two writers
# storing the same readings wait on each other in one order and never deadlock. A reading
# stored already, or earlier in the batch (the first of a key wins), is skipped; the
# statement returns where each new one stood in the batch, and its id.
_INSERT_BATCH = f"""
WITH batch AS MATERIALIZED (
    SELECT nextval({{sequence}}) AS id, given.*
    FROM (SELECT * FROM pg_temp.meterhub_batch ORDER BY position) AS given
), stored AS (
    INSERT INTO readings (id, {", ".join(_READING_COLUMNS)}) OVERRIDING SYSTEM VALUE
    SELECT id, {", ".join(_READING_COLUMNS)} FROM batch
    ORDER BY meter, quantity, timestamp, terminal, channel, protocol, coalesce(period, {_NO_PERIOD}), position
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT batch.position, stored.id FROM stored JOIN batch USING (id)
"""

_INSERT_EVENT = "INSERT INTO events (kind, source, timestamp, severity, data) VALUES (%s, %s, %s, %s, %s) RETURNING id"
_INSERT_COMMAND = (
    f"INSERT INTO commands ({_COMMAND_SELECT}) VALUES ({', '.join(['%s'] * len(_COMMAND_COLUMNS))})"
    " ON CONFLICT (id) DO NOTHING"
)
_INSERT_REQUEST = (
    f"INSERT INTO requests ({_REQUEST_SELECT}) VALUES ({', '.join(['%s'] * len(_REQUEST_COLUMNS))})"
    " ON CONFLICT (id) DO NOTHING"
)


# --- conversions -------------------------------------------------------------------


def _aware(value: datetime, what: str) -> datetime:
    """``value`` if it is timezone-aware (PostgreSQL converts it to UTC); a ValueError if not."""
    if isinstance(value, datetime) and value.tzinfo is UTC:  # what meterhub makes
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"{what} {value!r} is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value!r} has no timezone; meterhub stores aware UTC times")
    return value


def _check_text(what: str, *texts: object) -> None:
    """Text columns take str (or None, which a NOT NULL column refuses), and PostgreSQL text
    cannot hold NUL, as SQLite's can: refused before anything is written."""
    for text in texts:
        if isinstance(text, str):
            if "\x00" in text:
                raise ValueError(f"{what}: {text!r} holds a NUL character, which PostgreSQL text cannot store")
        elif text is not None:
            raise TypeError(f"{what}: {text!r} is not a string")


def _whole(what: str, value: object, low: int, high: int) -> int | None:
    """``value`` as the int an integer column takes (None stays None), checked."""
    if value is None:
        return None
    if not isinstance(value, int):  # bool is an int, and is stored as one, as SQLite does
        raise TypeError(f"{what} {value!r} is not a whole number")
    if not low <= value <= high:
        raise ValueError(f"{what} {value!r} is outside the range the store keeps ({low} to {high})")
    return int(value)


def _seconds(what: str, value: object) -> float | None:
    """``value`` as the float a double precision column takes (binary COPY writes a float8)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"{what} {value!r} is not a number of seconds")
    return float(value)


def _reading_row(r: Reading) -> tuple[Any, ...]:
    """A reading as :data:`_COPY_BATCH` takes it (after its position), checked."""
    value = r.value
    if value is None:
        text, value_type = None, None
    elif isinstance(value, Decimal):
        text, value_type = str(value), _DECIMAL
    elif isinstance(value, str):
        text, value_type = value, _TEXT
    else:
        raise ValueError(f"reading {r.meter} {r.quantity}: value {value!r} is neither Decimal, str nor None")
    what = f"reading {r.meter!r} {r.quantity!r}"
    period = r.period
    if period is not None and (not isinstance(period, int) or isinstance(period, bool) or not 0 <= period <= _INT4_MAX):
        raise ValueError(f"{what}: period {period!r} is not a whole number ≥ 0")
    try:
        quality = _QUALITY_TEXT[r.quality]
    except (KeyError, TypeError):
        quality = Quality(r.quality).value  # raises for what is no quality
    route = _route_text(r) if r.route else ""
    _check_text(what, r.meter, r.quantity, text, r.unit, r.detail, r.channel, r.protocol, r.terminal, route)
    data_time = r.data_time
    return (
        r.meter, r.quantity, text, value_type, r.unit, _aware(r.timestamp, "timestamp"), quality,
        _whole(f"{what}: error code", r.error_code, -_INT8_MAX - 1, _INT8_MAX), r.detail, r.channel, r.protocol,
        _whole(f"{what}: attempts", r.attempts, -_INT4_MAX - 1, _INT4_MAX), _seconds(f"{what}: latency", r.latency),
        r.terminal, route, None if data_time is None else _aware(data_time, "data time"), period, _relays(r),
    )


def _reading_from_row(row: Sequence[Any]) -> Reading:
    return _reading(*row)


def _event_row(event: Event) -> tuple[Any, ...]:
    _check_text(f"event {event.kind!r}", event.kind, event.source, event.severity)
    return (event.kind, event.source, _aware(event.timestamp, "timestamp"), event.severity, _to_json(dict(event.data)))


def _event_from_row(row: Sequence[Any]) -> Event:
    _, kind, source, timestamp, severity, data = row
    return Event(kind=kind, source=source, timestamp=timestamp, severity=severity, data=json.loads(data))


def _command_row(record: CommandRecord) -> tuple[Any, ...]:
    c = record.command
    args, answer = _to_json(dict(c.args)), None if record.answer is None else _to_json(dict(record.answer))
    _check_text(f"command {c.id!r}", c.id, c.meter, c.protocol, c.channel, c.name, args, c.issuer, c.credential,
                record.reason, answer)
    return (
        c.id, c.meter, c.protocol, c.channel, c.name, args, Origin(c.origin).value, c.issuer, c.credential,
        _aware(c.requested, "requested"), CommandState(record.state).value, _aware(record.updated, "updated"),
        record.reason, answer,
    )


def _command_from_row(row: Sequence[Any]) -> CommandRecord:
    return _command_record(*row)


def _request_from_row(row: Sequence[Any]) -> RequestRecord:
    return _request_record(*row)


def _request_row(request: HeadEndRequest) -> tuple[Any, ...]:
    """A request as it is queued (state QUEUED, no node yet), checked."""
    r = request
    args = _to_json(dict(r.args))
    _check_text(f"request {r.id!r}", r.id, r.terminal, r.kind, args, r.issuer, r.credential)
    created = _aware(r.created, "created")
    timeout = _seconds(f"request {r.id!r}: timeout", r.timeout)
    return (r.id, r.terminal, r.kind, args, Origin(r.origin).value, r.issuer, r.credential, created, timeout,
            RequestState.QUEUED.value, "", created, "", None)


def _limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    limit = operator.index(limit)
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    return limit


def redact(url: str) -> str:
    """``url`` with its password (``user:password@`` or ``?password=``), if it has one,
    replaced by ``***``: fit for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        parts = parts._replace(query=urllib.parse.urlencode(
            [(key, "***" if key == "password" else value) for key, value in query], safe="*"))
    return urllib.parse.urlunsplit(parts)


# --- the PostgreSQL store ----------------------------------------------------------


class PostgresStore:
    """A store in a PostgreSQL database, shared with other meterhub processes.

    One connection, used by one thread at a time (a :class:`~meterhub.store.writer.StoreWriter`
    gives async code one). ``url`` is a libpq URL (``postgresql://user@host:5432/meterhub``);
    ``outbox_max`` caps each uplink's outbox (see :mod:`meterhub.store`); ``commits`` counts
    the write transactions committed.
    """

    def __init__(self, url: str, *, outbox_max: int = DEFAULT_OUTBOX_MAX) -> None:
        if isinstance(outbox_max, bool) or not isinstance(outbox_max, int) or outbox_max < 1:
            raise ValueError(f"outbox_max must be a whole number of items ≥ 1, got {outbox_max!r}")
        self.url = redact(url)
        self.outbox_max = outbox_max
        self.commits = 0
        self._overflow: list[Event] = []
        if psycopg is None:
            raise StoreError(
                f"cannot open store {self.url}: the PostgreSQL store needs psycopg 3;"
                " install it with: pip install 'meterhub[postgres]'"
            )
        try:
            # Autocommit: each write below is one explicit transaction (conn.transaction()),
            # and a read is a statement of its own.
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open store {self.url}: {exc}") from exc
        try:
            # Times come back in UTC, as meterhub keeps them.
            self._conn.execute("SET TIME ZONE 'UTC'")
            self._migrate()
            self._conn.execute(_BATCH_TABLE)
            (sequence,) = self._conn.execute("SELECT pg_get_serial_sequence('readings', 'id')").fetchone()
            self._insert_batch = _INSERT_BATCH.format(sequence=sql.Literal(sequence).as_string(self._conn))
        except psycopg.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open store {self.url}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    # -- schema -----------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        row = self._query_one("the schema version", "SELECT version FROM meterhub_schema")
        return int(row[0])

    def _migrate(self) -> None:
        with self._transaction("upgrade the schema of"):
            # Processes opening one database at once take turns here: the first builds or
            # upgrades it, the others find it done.
            self._conn.execute("SELECT pg_advisory_xact_lock(%s::bigint)", (SCHEMA_LOCK,))
            if self._conn.execute("SELECT to_regclass('meterhub_schema')").fetchone()[0] is None:
                found = [name for name in TABLES
                         if self._conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None]
                if found:
                    raise StoreError(
                        f"store {self.url} has meterhub's tables ({', '.join(found)}) but no schema version"
                        " (table meterhub_schema), as a database restored without it; insert the version"
                        " that wrote it"
                    )
                self._conn.execute(_VERSION_TABLE + _SCHEMA)
                self._conn.execute("INSERT INTO meterhub_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
                return
            (version,) = self._conn.execute("SELECT version FROM meterhub_schema").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.url} has schema version {version}, newer than this meterhub "
                    f"understands ({SCHEMA_VERSION}); upgrade meterhub"
                )
            while version < SCHEMA_VERSION:
                step = MIGRATIONS.get(version + 1)
                if step is None:
                    raise StoreError(f"store {self.url}: no migration from schema version {version}")
                step(self._conn)
                version += 1
            self._conn.execute("UPDATE meterhub_schema SET version = %s", (version,))

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        """One transaction: committed whole, or rolled back and the error raised (a
        backend's as :class:`StoreError`)."""
        try:
            with self._conn.transaction():
                yield
        except psycopg.Error as exc:
            raise StoreError(f"cannot {what} store {self.url}: {exc}") from exc
        self.commits += 1

    def _query(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"cannot read {what} from store {self.url}: {exc}") from exc

    def _query_one(self, what: str, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        rows = self._query(what, sql, params)
        if not rows:
            raise StoreError(f"store {self.url}: no {what}")
        return rows[0]

    # -- writing ----------------------------------------------------------------------

    def add_readings(self, readings: Sequence[Reading], *, outbox: Sequence[str] = ()) -> int:
        """Store readings in one transaction and return how many were new (a reading
        stored already, by this process or another, is skipped); queue each new one for
        every uplink in ``outbox``."""
        return self.add_reading_batches([(readings, outbox)])[0]

    def add_reading_batches(self, batches: Sequence[tuple[Sequence[Reading], Sequence[str]]]) -> list[int]:
        """Store ``(readings, outbox)`` batches in one transaction, each as
        :meth:`add_readings` would; return each batch's count of new readings."""
        # Check every reading before writing any.
        prepared = [([_reading_row(r) for r in readings], _uplinks(outbox)) for readings, outbox in batches]
        rows = [row for batch_rows, _ in prepared for row in batch_rows]
        if not rows:
            return [0] * len(prepared)
        counts: list[int] = []
        with self._transaction("write readings to"):
            queued = utcnow()
            with self._conn.cursor().copy(_COPY_BATCH) as copy:
                copy.set_types(["int4", *_READING_TYPES])
                for position, row in enumerate(rows, 1):
                    copy.write_row((position, *row))
            new = dict(self._conn.execute(self._insert_batch).fetchall())  # position -> id
            refs: dict[str, list[int]] = {}  # what each uplink gets, in the order of the batches
            position = 1
            for batch_rows, uplinks in prepared:
                ids = [new[p] for p in range(position, position + len(batch_rows)) if p in new]
                position += len(batch_rows)
                counts.append(len(ids))
                if ids:
                    for uplink in uplinks:
                        refs.setdefault(uplink, []).extend(ids)
            overflow = self._queue("reading", refs, queued)
        self._overflow.extend(overflow)
        return counts

    def _queue(self, kind: str, refs: Mapping[str, Sequence[int]], queued: datetime) -> list[Event]:
        """Queue ``refs[uplink]`` (ids of ``kind``) for each uplink, in that order, holding
        each queue to ``outbox_max``; the ``outbox_overflow`` events written.

        Each uplink's size row is locked (by its upsert) before its queue is written: writers
        to one queue take turns, so the size and the cap are exact and the queue's ids ascend
        in the order the writes commit. The rows are locked in the order of the uplinks'
        names, so no two writers wait on each other in opposite orders."""
        _check_text("outbox", *refs)
        sizes = {}
        for uplink in sorted(refs):
            ((sizes[uplink],),) = self._conn.execute(
                "INSERT INTO outbox_sizes (uplink, size) VALUES (%s, %s)"
                " ON CONFLICT (uplink) DO UPDATE SET size = outbox_sizes.size + excluded.size RETURNING size",
                (uplink, len(refs[uplink])),
            ).fetchall()
        events = []
        for uplink, ids in refs.items():
            self._conn.execute(
                "INSERT INTO outbox (uplink, kind, ref, queued)"
                " SELECT %s, %s, ref, %s FROM unnest(%b::bigint[]) WITH ORDINALITY AS given (ref, position)"
                " ORDER BY position",
                (uplink, kind, queued, list(ids)),
            )
            excess = sizes[uplink] - self.outbox_max
            if excess > 0:
                events.append(self._drop_oldest(uplink, excess, queued))
        return events

    def _drop_oldest(self, uplink: str, excess: int, at: datetime) -> Event:
        """Drop the ``excess`` oldest items of ``uplink``'s queue (its size row locked by the
        caller) and store an ``outbox_overflow`` event saying so (not queued itself)."""
        dropped = self._conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE uplink = %s ORDER BY id LIMIT %s)",
            (uplink, excess),
        ).rowcount
        self._conn.execute("UPDATE outbox_sizes SET size = size - %s WHERE uplink = %s", (dropped, uplink))
        event = Event(OUTBOX_OVERFLOW, source=uplink, timestamp=at, severity="warning",
                      data={"uplink": uplink, "dropped": excess, "limit": self.outbox_max})
        self._conn.execute(_INSERT_EVENT, _event_row(event)).fetchall()
        return event

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
            _aware(report.started, "started"), _aware(report.finished, "finished"), len(report.readings),
            report.ok_count, report.failed_count, stats,
        )
        with self._transaction("write a round to"):
            self._conn.execute(
                "INSERT INTO rounds (started, finished, readings, ok, failed, stats) VALUES (%s, %s, %s, %s, %s, %s)",
                row,
            )

    def take_overflow_events(self) -> list[Event]:
        """The ``outbox_overflow`` events this store wrote since the last call; the list is cleared."""
        events, self._overflow = self._overflow, []
        return events

    # -- the outbox -------------------------------------------------------------------

    def outbox_size(self, uplink: str) -> int:
        """How many items wait for ``uplink``."""
        rows = self._query(f"the outbox of {uplink!r}", "SELECT size FROM outbox_sizes WHERE uplink = %s", (uplink,))
        return int(rows[0][0]) if rows else 0

    def _rows_by_id(self, table: str, select: str, ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        if not ids:
            return {}
        rows = self._query(table, f"SELECT {select} FROM {table} WHERE id = ANY(%b::bigint[])", (list(ids),))
        return {row[0]: row for row in rows}

    def outbox_items(self, uplink: str, *, limit: int | None = None) -> list[OutboxItem]:
        """What ``uplink`` has not acknowledged yet, oldest first, readings and events rebuilt."""
        queue = self._query(f"the outbox of {uplink!r}",
                            "SELECT id, kind, ref, queued FROM outbox WHERE uplink = %s ORDER BY id LIMIT %s",
                            (uplink, _limit(limit)))
        # Stored readings and events are never deleted, and an item is committed with its row,
        # so reading them in a statement of their own is safe.
        refs = {kind: [ref for _, of_kind, ref, _ in queue if of_kind == kind] for kind in ("reading", "event")}
        readings = self._rows_by_id("readings", _READING_SELECT, refs["reading"])
        events = self._rows_by_id("events", _EVENT_SELECT, refs["event"])
        items = []
        for id_, kind, ref, queued in queue:
            row = (readings if kind == "reading" else events).get(ref)
            if row is None:
                raise StoreError(f"store {self.url}: outbox item {id_} of {uplink!r} refers to {kind} {ref},"
                                 " which is not stored")
            item = _reading_from_row(row) if kind == "reading" else _event_from_row(row)
            items.append(OutboxItem(id=id_, uplink=uplink, item=item, queued=queued))
        return items

    def ack(self, uplink: str, ids: Sequence[int]) -> int:
        """Remove the items ``uplink`` acknowledged; return how many went (unknown ids and
        ids of another uplink's items are ignored)."""
        keys = [operator.index(i) for i in ids]  # refuses str and float ids
        keys = [key for key in keys if 0 < key <= _INT8_MAX]  # no item has another
        if not keys:
            return 0
        with self._transaction(f"acknowledge outbox items of {uplink!r} in"):
            # The size row first, as every writer to this queue takes it (see _queue).
            if not self._conn.execute("SELECT 1 FROM outbox_sizes WHERE uplink = %s FOR UPDATE", (uplink,)).fetchall():
                return 0
            removed = self._conn.execute("DELETE FROM outbox WHERE uplink = %s AND id = ANY(%b::bigint[])",
                                         (uplink, keys)).rowcount
            if removed:
                self._conn.execute("UPDATE outbox_sizes SET size = size - %s WHERE uplink = %s", (removed, uplink))
        return int(removed)

    # -- commands ---------------------------------------------------------------------

    def add_command(self, record: CommandRecord) -> None:
        """Start a command's audit trail; a record with the same id stored already is a StoreError."""
        row = _command_row(record)
        with self._transaction("write a command to"):
            if self._conn.execute(_INSERT_COMMAND, row).rowcount == 0:
                raise StoreError(f"command {record.command.id} is already in store {self.url}")

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
        updated = utcnow() if at is None else _aware(at, "at")
        answer_text = None if answer is None else _to_json(dict(answer))
        _check_text(f"command {id!r}", reason, answer_text)
        with self._transaction("update a command in"):
            # Locked: two nodes moving one command take turns, and the second sees the first's move.
            row = self._conn.execute(f"SELECT {_COMMAND_SELECT} FROM commands WHERE id = %s FOR UPDATE",
                                     (id,)).fetchone()
            if row is None:
                raise StoreError(f"no command {id!r} in store {self.url}")
            check_command_move(id, _command_from_row(row).state, state)
            row = self._conn.execute(
                f"UPDATE commands SET state = %s, updated = %s, reason = %s, answer = %s WHERE id = %s"
                f" RETURNING {_COMMAND_SELECT}",
                (state.value, updated, reason, answer_text, id),
            ).fetchone()
        return _command_from_row(row)  # as stored: what command(id) will say

    def command(self, id: str) -> CommandRecord | None:
        """The command's record, or None if there is none with that id."""
        rows = self._query("a command", f"SELECT {_COMMAND_SELECT} FROM commands WHERE id = %s", (id,))
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
            "commands", _COMMAND_SELECT, time_column="requested", order="requested, id", since=since, limit=limit,
            meter=meter,
            state=None if state is None else CommandState(state).value,
            origin=None if origin is None else Origin(origin).value,
        )
        return [_command_from_row(row) for row in rows]

    # -- settings ---------------------------------------------------------------------

    def settings(self, scope: str) -> dict[str, Any]:
        """The settings kept for ``scope``: key -> value as stored (JSON: Decimals and
        times come back as text); empty when there are none."""
        rows = self._query("settings", "SELECT key, value FROM settings WHERE scope = %s ORDER BY key", (scope,))
        return {key: json.loads(value) for key, value in rows}

    def put_settings(self, scope: str, values: Mapping[str, Any]) -> None:
        """Keep ``values`` for ``scope`` in one transaction; a value of None deletes its key.
        A value JSON cannot hold is a TypeError, and nothing of the call is stored."""
        texts = {str(key): None if value is None else _to_json(value) for key, value in values.items()}
        _check_text(f"settings of {scope!r}", scope, *texts)
        kept = {key: text for key, text in texts.items() if text is not None}
        gone = [key for key, text in texts.items() if text is None]
        if not texts:
            return
        with self._transaction("write settings to"):
            # Writers of one scope take turns: a call's deletes and upserts touch its keys in
            # two statements, which two calls could otherwise lock in opposite orders.
            self._conn.execute("SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))", (SETTINGS_LOCK, scope))
            if gone:
                self._conn.execute("DELETE FROM settings WHERE scope = %s AND key = ANY(%s::text[])", (scope, gone))
            if kept:
                self._conn.execute(
                    "INSERT INTO settings (scope, key, value, updated)"
                    " SELECT %s, key, value, %s FROM unnest(%s::text[], %s::text[]) AS given (key, value)"
                    " ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, updated = excluded.updated",
                    (scope, utcnow(), list(kept), list(kept.values())),
                )

    # -- the head-end: terminals, allowlist, requests ---------------------------------------

    def allow_terminals(self, names: Sequence[str], *, allowed: bool = True) -> None:
        """Add terminals to the allowlist (``allowed``) or take them off it."""
        # Sorted: two nodes adding the same names wait on each other in one order, never in a circle.
        given = sorted(set(names))
        _check_text("the allowlist", *given)
        with self._transaction("write the allowlist of"):
            if allowed:
                self._conn.execute("INSERT INTO allowed_terminals (name, added)"
                                   " SELECT name, %s FROM unnest(%s::text[]) AS given (name)"
                                   " ORDER BY name ON CONFLICT (name) DO NOTHING", (utcnow(), given))
            else:
                self._conn.execute("DELETE FROM allowed_terminals WHERE name = ANY(%s::text[])", (given,))

    def allowed_terminals(self) -> list[str]:
        """The allowlist, sorted."""
        return [name for (name,) in self._query("the allowlist", "SELECT name FROM allowed_terminals ORDER BY name")]

    def terminal_seen(self, name: str, *, node: str, peer: str, at: datetime, online: bool = True,
                      login: bool = False, heartbeat: bool = False) -> None:
        """Record a terminal's frame (``login``: its login, which zeroes its heartbeats;
        ``heartbeat``: one more) or, ``online=False``, the end of its connection on ``node``
        (ignored when another node holds it since)."""
        _check_text(f"terminal {name!r}", name, node, peer)
        when = _aware(at, "at")
        with self._transaction("write a terminal to"):
            if not online:
                # Under the row's lock: a login on another node committed meanwhile is seen, and kept.
                self._conn.execute("UPDATE terminals SET online = false, seen = %s WHERE name = %s AND node = %s",
                                   (when, name, node))
                return
            self._conn.execute(
                "INSERT INTO terminals (name, online, node, peer, login, seen, heartbeats)"
                " VALUES (%s, true, %s, %s, %s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET online = true, node = excluded.node, peer = excluded.peer,"
                " login = coalesce(excluded.login, terminals.login), seen = excluded.seen,"
                " heartbeats = CASE WHEN excluded.login IS NOT NULL THEN excluded.heartbeats"
                " ELSE terminals.heartbeats + excluded.heartbeats END",
                (name, node, peer, when if login else None, when, int(heartbeat)))

    def record_heartbeats(self, node: str, beats: Mapping[str, tuple[datetime, int]]) -> None:
        """Record the heartbeats that came on ``node`` (name -> (last time, count)) in one
        transaction, in name order (no deadlock between nodes); a terminal another node
        holds since is left alone."""
        rows = [(_aware(at, "heartbeat time"), int(count), name, node) for name, (at, count) in sorted(beats.items())]
        if not rows:
            return
        with self._transaction("write heartbeats to"), self._conn.cursor() as cursor:
            cursor.executemany("UPDATE terminals SET seen = %s, heartbeats = heartbeats + %s"
                               " WHERE name = %s AND node = %s", rows)

    def terminals_offline(self, node: str) -> int:
        """Mark every terminal ``node`` held as offline (the node starting afresh after a
        crash); returns how many. Terminals other nodes hold are left alone."""
        with self._transaction("write terminals to"):
            return int(self._conn.execute("UPDATE terminals SET online = false WHERE node = %s AND online",
                                          (node,)).rowcount)

    def terminals(self, *, online: bool | None = None) -> list[TerminalRecord]:
        """Every terminal the head-end has seen, by name."""
        where, params = ("", []) if online is None else (" WHERE online = %s", [bool(online)])
        rows = self._query("terminals", f"SELECT {_TERMINAL_SELECT} FROM terminals{where} ORDER BY name", params)
        return [TerminalRecord(*row) for row in rows]

    def add_request(self, request: HeadEndRequest) -> None:
        """Queue a request; a second one with the same id (from any node) is a StoreError."""
        row = _request_row(request)
        with self._transaction("queue a request in"):
            if self._conn.execute(_INSERT_REQUEST, row).rowcount == 0:
                raise StoreError(f"request {request.id} is already in store {self.url}")

    def claim_requests(self, terminals: Collection[str], node: str, *, at: datetime | None = None,
                       limit: int = 100) -> list[RequestRecord]:
        """Take the queued requests for ``terminals`` (those ``node`` holds), oldest first,
        as CLAIMED by ``node``: each is claimed by one node only. A request past its
        timeout is failed instead, never claimed.

        The requests are locked as they are read, skipping those another node's claim has
        locked already (``FOR UPDATE SKIP LOCKED``): two nodes claiming at once take
        different requests, and neither waits for the other. A request claimed and
        committed meanwhile is no longer queued when its lock is taken, so it is passed over.
        """
        _check_text(f"node {node!r}", node)
        if not terminals:
            return []
        # A node holding thousands of terminals asks often, and the queue is mostly empty:
        # which terminals have queued requests is one read of the (partial) index, and only
        # those are named in the claim.
        waiting = self._query("queued requests",
                              "SELECT DISTINCT terminal FROM requests WHERE state = %s", (RequestState.QUEUED.value,))
        held = set(terminals)
        names = sorted(row[0] for row in waiting if row[0] in held)
        if not names:
            return []
        now = utcnow() if at is None else _aware(at, "at")
        with self._transaction("claim requests in"):
            rows = self._conn.execute(
                f"SELECT {_REQUEST_SELECT} FROM requests WHERE state = %s AND terminal = ANY(%s::text[])"
                " ORDER BY created, id LIMIT %s FOR UPDATE SKIP LOCKED",
                (RequestState.QUEUED.value, names, _limit(limit))).fetchall()
            late: list[RequestRecord] = []
            claimed: list[RequestRecord] = []
            for record in map(_request_from_row, rows):
                overdue = (now - record.request.created).total_seconds() > record.request.timeout
                (late if overdue else claimed).append(record)
            for state, reason, records in ((RequestState.FAILED, "not taken within its timeout", late),
                                           (RequestState.CLAIMED, "", claimed)):
                if records:
                    self._conn.execute("UPDATE requests SET state = %s, node = %s, updated = %s, reason = %s"
                                       " WHERE id = ANY(%s::text[])",
                                       (state.value, node, now, reason, [r.request.id for r in records]))
        return [attrs.evolve(r, state=RequestState.CLAIMED, node=node, updated=now) for r in claimed]

    def finish_request(self, id: str, state: RequestState, *, reason: str = "",
                       answer: Mapping[str, Any] | None = None) -> RequestRecord:
        """End a request: ANSWERED (with ``answer``) or FAILED (with ``reason``). Only a
        queued or claimed request can end; an unknown id or an ended one is a StoreError."""
        state = RequestState(state)
        check_request_end(id, RequestState.QUEUED.value, state)  # a bad end state: before any I/O
        answer_text = None if answer is None else _to_json(dict(answer))
        _check_text(f"request {id!r}", reason, answer_text)
        with self._transaction("end a request in"):
            # Locked: two nodes ending one request take turns, and the second sees the first's end.
            row = self._conn.execute("SELECT state FROM requests WHERE id = %s FOR UPDATE", (id,)).fetchone()
            if row is None:
                raise StoreError(f"no request {id!r} in store {self.url}")
            check_request_end(id, row[0], state)
            row = self._conn.execute(
                f"UPDATE requests SET state = %s, updated = %s, reason = %s, answer = %s WHERE id = %s"
                f" RETURNING {_REQUEST_SELECT}", (state.value, utcnow(), reason, answer_text, id)).fetchone()
        return _request_from_row(row)

    def request(self, id: str) -> RequestRecord | None:
        """The request's record, or None."""
        rows = self._query("a request", f"SELECT {_REQUEST_SELECT} FROM requests WHERE id = %s", (id,))
        return _request_from_row(rows[0]) if rows else None

    # -- reading ----------------------------------------------------------------------

    def _select(self, table: str, columns: str, *, since: datetime | None, limit: int | None,
                time_column: str = "timestamp", order: str = "timestamp, id", **equal: Any) -> list[tuple[Any, ...]]:
        # Column names come from our own keyword arguments, never from the caller's data.
        where = [(f"{column} = %s", value) for column, value in equal.items() if value is not None]
        if since is not None:
            where.append((f"{time_column} >= %s", _aware(since, "since")))
        sql = f"SELECT {columns} FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(clause for clause, _ in where)
        sql += f" ORDER BY {order} LIMIT %s"
        return self._query(table, sql, [*(value for _, value in where), _limit(limit)])

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

        ``meter`` is an address alone; ``protocol``, ``channel`` and ``terminal`` tell apart
        meters that share an address. Every filter runs in the query.
        """
        rows = self._select("readings", _READING_SELECT, since=since, limit=limit, meter=meter, quantity=quantity,
                            protocol=protocol, channel=channel, terminal=terminal)
        return [_reading_from_row(row) for row in rows]

    def latest(
        self, *, meter: str | None = None, quantity: str | None = None, terminal: str | None = None
    ) -> list[Reading]:
        """The newest OK reading per (terminal, channel, protocol, meter, quantity, period),
        sorted by that key (no period first): the latest value of every measuring point."""
        equal = [(column, value) for column, value in (("meter", meter), ("quantity", quantity), ("terminal", terminal))
                 if value is not None]
        where = " AND ".join(["quality = %s", *(f"{column} = %s" for column, _ in equal)])
        sql = (
            f"SELECT {_READING_SELECT} FROM (SELECT DISTINCT ON (meter, quantity, terminal, channel, protocol, period)"
            f" {_READING_SELECT} FROM readings WHERE {where}"
            " ORDER BY meter, quantity, terminal, channel, protocol, period, timestamp DESC, id DESC) AS newest"
            " ORDER BY terminal, channel, protocol, meter, quantity, period NULLS FIRST"
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
            sql += " WHERE " + " AND ".join(f"{column} = %s" for column, _ in equal)
        sql += " ORDER BY channel, protocol, meter"
        rows = self._query("meters", sql, [value for _, value in equal])
        return [MeterIdentity(channel, protocol, meter_) for channel, protocol, meter_ in rows]

    def events(
        self,
        *,
        kind: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Stored events, oldest first, filtered like :meth:`readings`."""
        rows = self._select("events", _EVENT_SELECT, since=since, limit=limit, kind=kind, source=source)
        return [_event_from_row(row) for row in rows]

    def rounds(self) -> list[dict[str, Any]]:
        """Round summaries, oldest first, as JSON-able dicts (timestamps as ISO text)."""
        rows = self._query("rounds", "SELECT id, started, finished, readings, ok, failed, stats FROM rounds"
                                     " ORDER BY started, id")
        return [_round(id_, _ts(started), _ts(finished), *rest) for id_, started, finished, *rest in rows]

    # -- life cycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; further use raises :class:`StoreError`."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"


def open_postgres_store(url: str, *, outbox_max: int = DEFAULT_OUTBOX_MAX) -> PostgresStore:
    """Open the store in the PostgreSQL database at ``url`` (``postgresql://user@host/db``,
    any libpq URL), creating its tables if the database has none. The query may set the
    store's options as :func:`~meterhub.store.open_store` takes them (``?outbox_max=10000``,
    which wins over the keyword); they are taken out of the URL, and any other parameter
    (``sslmode=require``) goes to libpq. Any other URL or a bad option raises
    :class:`ValueError`; a database that cannot be reached or used, :class:`StoreError`."""
    if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
        raise ValueError(f"unsupported store URL {url!r}: expected postgresql://user@host:port/database")
    libpq_url, options = _split_options(url)
    return PostgresStore(libpq_url, **{"outbox_max": outbox_max, **options})


#: The query parameters that are the store's own, not libpq's.
STORE_OPTIONS = frozenset({"outbox_max"})


def _split_options(url: str) -> tuple[str, dict[str, int]]:
    """``url`` without the store's own options, and those options, checked as
    :func:`~meterhub.store.open_store` checks them (the error quotes the URL, password redacted).
    The rest of the URL is left as it was written: libpq reads forms (``postgresql:///db?host=/run``)
    that a round trip through urllib would change."""
    base, has_query, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    ours, libpq = [], []
    for item in query.split("&") if has_query else []:
        (ours if item.partition("=")[0] in STORE_OPTIONS else libpq).append(item)
    if not ours:
        return url, {}
    options = _store_options(redact(url), "&".join(ours))
    return base + ("?" + "&".join(libpq) if libpq else "") + hash_ + fragment, options
