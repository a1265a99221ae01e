"""The reading store: every reading, event and round summary, in SQLite.

Values are kept as TEXT so a :class:`~decimal.Decimal` comes back with its exact digits
and exponent (``0.10`` stays ``0.10``: readings become bills); timestamps are ISO 8601
in UTC with a fixed width, so text order is time order. Nothing is dropped quietly: a
write that fails raises :class:`StoreError` and the transaction is rolled back whole.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import attrs

from .errors import MeterhubError
from .model import Event, Quality, Reading, RoundReport, meter_key

URL_PREFIX = "sqlite:///"
MEMORY = ":memory:"

#: The schema this code writes. Bump it and add a step to :data:`MIGRATIONS` when the
#: tables change; a store written by a newer meterhub is refused rather than misread.
SCHEMA_VERSION = 1

#: ``MIGRATIONS[n]`` upgrades a store from version ``n - 1`` to ``n`` (inside the
#: opening transaction). Version 0 is an empty file, built by :func:`_create_schema`.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}

#: Seconds a writer waits for another process's lock (``meterhub export`` reading the
#: file while the concentrator writes) before the write fails loudly.
BUSY_TIMEOUT_S = 10.0

_DECIMAL = "decimal"
_TEXT = "text"

_SCHEMA = """
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
    latency     REAL
);
CREATE INDEX readings_meter_quantity_time ON readings (meter, quantity, timestamp);
CREATE INDEX readings_time ON readings (timestamp);
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
"""

_READING_COLUMNS = (
    "meter, quantity, value, value_type, unit, timestamp, quality,"
    " error_code, detail, channel, protocol, attempts, latency"
)


class StoreError(MeterhubError):
    """The store cannot be opened or a write to it failed (nothing was written)."""


@attrs.frozen
class MeterIdentity:
    """What tells a stored meter apart: its channel, protocol and address."""

    channel: str
    protocol: str
    meter: str

    @property
    def key(self) -> str:
        """``channel/protocol:address``, as read statistics name a meter (model.meter_key)."""
        return meter_key(self.channel, self.protocol, self.meter)


class Store(Protocol):
    """What the concentrator and the CLI need from a store (SQLite today)."""

    def add_readings(self, readings: Sequence[Reading]) -> None: ...

    def add_event(self, event: Event) -> None: ...

    def add_round(self, report: RoundReport) -> None: ...

    def readings(
        self,
        *,
        meter: str | None = None,
        quantity: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        protocol: str | None = None,
        channel: str | None = None,
    ) -> list[Reading]: ...

    def meters(
        self, *, meter: str | None = None, protocol: str | None = None, channel: str | None = None
    ) -> list[MeterIdentity]: ...

    def events(
        self,
        *,
        kind: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Event]: ...

    def rounds(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def open_store(url: str) -> SqliteStore:
    """Open (creating if needed) the store at ``url``.

    ``sqlite:///meterhub.db`` is relative to the working directory,
    ``sqlite:////var/lib/meterhub.db`` absolute, ``sqlite:///:memory:`` in memory.
    Any other URL raises :class:`ValueError` naming it.
    """
    if not isinstance(url, str) or not url.startswith(URL_PREFIX) or not url[len(URL_PREFIX):]:
        raise ValueError(
            f"unsupported store URL {url!r}: expected sqlite:///relative.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )
    return SqliteStore(url[len(URL_PREFIX):], url=url)


# --- conversions -------------------------------------------------------------------


def _ts(value: datetime) -> str:
    """A timestamp as fixed-width ISO 8601 UTC text (microseconds always present)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"timestamp {value!r} has no timezone; meterhub stores aware UTC times")
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)  # exact digits; JSON floats would round
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    raise TypeError(f"cannot store {type(obj).__name__} {obj!r} as JSON")


def _to_json(data: Any) -> str:
    return json.dumps(data, default=_json_default, ensure_ascii=False, sort_keys=True, allow_nan=False)


def _reading_row(r: Reading) -> tuple[Any, ...]:
    if r.value is None:
        value, value_type = None, None
    elif isinstance(r.value, Decimal):
        value, value_type = str(r.value), _DECIMAL
    elif isinstance(r.value, str):
        value, value_type = r.value, _TEXT
    else:
        raise ValueError(f"reading {r.meter} {r.quantity}: value {r.value!r} is neither Decimal, str nor None")
    return (
        r.meter, r.quantity, value, value_type, r.unit, _ts(r.timestamp), Quality(r.quality).value,
        r.error_code, r.detail, r.channel, r.protocol, r.attempts, r.latency,
    )


def _reading_from_row(row: sqlite3.Row) -> Reading:
    text, value_type = row["value"], row["value_type"]
    value: Decimal | str | None
    if text is None:
        value = None
    elif value_type == _DECIMAL:
        try:
            value = Decimal(text)
        except InvalidOperation as exc:  # only a hand-edited file gets here
            raise StoreError(f"reading {row['id']}: stored value {text!r} is not a decimal") from exc
    else:
        value = text
    return Reading(
        meter=row["meter"],
        quantity=row["quantity"],
        value=value,
        unit=row["unit"],
        timestamp=_parse_ts(row["timestamp"]),
        quality=Quality(row["quality"]),
        error_code=row["error_code"],
        detail=row["detail"],
        channel=row["channel"],
        protocol=row["protocol"],
        attempts=row["attempts"],
        latency=row["latency"],
    )


def _event_from_row(row: sqlite3.Row) -> Event:
    return Event(
        kind=row["kind"],
        source=row["source"],
        timestamp=_parse_ts(row["timestamp"]),
        severity=row["severity"],
        data=json.loads(row["data"]),
    )


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


# --- the SQLite store --------------------------------------------------------------


class SqliteStore:
    """A store in one SQLite file (WAL journal, so readers never block the concentrator)."""

    def __init__(self, path: str, *, url: str | None = None) -> None:
        self.path = path
        self.url = url or URL_PREFIX + path
        try:
            # Autocommit mode: every write below runs in an explicit BEGIN IMMEDIATE
            # transaction, so a batch is stored whole or not at all.
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
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
                _create_schema(self._conn)
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

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    # -- writing ----------------------------------------------------------------------

    def add_readings(self, readings: Sequence[Reading]) -> None:
        """Store readings in one transaction: all of them, or none and an exception."""
        rows = [_reading_row(r) for r in readings]  # validate every one before writing any
        if not rows:
            return
        with self._transaction("write readings to"):
            self._conn.executemany(
                f"INSERT INTO readings ({_READING_COLUMNS}) VALUES ({', '.join('?' * 13)})", rows
            )

    def add_event(self, event: Event) -> None:
        """Store one event; ``event.data`` is kept as JSON (Decimals as strings)."""
        row = (event.kind, event.source, _ts(event.timestamp), event.severity, _to_json(dict(event.data)))
        with self._transaction("write an event to"):
            self._conn.execute(
                "INSERT INTO events (kind, source, timestamp, severity, data) VALUES (?, ?, ?, ?, ?)", row
            )

    def add_round(self, report: RoundReport) -> None:
        """Store a round's summary and its per-meter and per-channel statistics."""
        stats = _to_json({"meters": dict(report.meter_stats), "channels": dict(report.channel_stats)})
        row = (
            _ts(report.started), _ts(report.finished), len(report.readings),
            report.ok_count, report.failed_count, stats,
        )
        with self._transaction("write a round to"):
            self._conn.execute(
                "INSERT INTO rounds (started, finished, readings, ok, failed, stats) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

    # -- reading ----------------------------------------------------------------------

    def _select(self, table: str, *, since: datetime | None, limit: int | None, **equal: Any) -> list[sqlite3.Row]:
        # Column names come from our own keyword arguments, never from the caller's data.
        where = [(f"{column} = ?", value) for column, value in equal.items() if value is not None]
        if since is not None:
            where.append(("timestamp >= ?", _ts(since)))
        sql = f"SELECT * FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(clause for clause, _ in where)
        sql += " ORDER BY timestamp, id"
        params = [value for _, value in where]
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must not be negative, got {limit}")
            sql += " LIMIT ?"
            params.append(int(limit))
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {table} from store {self.url}: {exc}") from exc

    def readings(
        self,
        *,
        meter: str | None = None,
        quantity: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        protocol: str | None = None,
        channel: str | None = None,
    ) -> list[Reading]:
        """Stored readings, oldest first; ``since`` is inclusive, ``limit`` keeps the first N.

        ``meter`` is an address alone; the same address can name several meters (Modbus
        unit 1 and M-Bus primary address 1 on one bus, unit 1 on two buses), which
        ``protocol`` and ``channel`` tell apart. Every filter runs in the query.
        """
        rows = self._select("readings", since=since, limit=limit, meter=meter, quantity=quantity,
                            protocol=protocol, channel=channel)
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
        try:
            rows = self._conn.execute(sql, [value for _, value in equal]).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read meters from store {self.url}: {exc}") from exc
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
        try:
            rows = self._conn.execute("SELECT * FROM rounds ORDER BY started, id").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read rounds from store {self.url}: {exc}") from exc
        out = []
        for row in rows:
            stats = json.loads(row["stats"])
            out.append(
                {
                    "id": row["id"],
                    "started": row["started"],
                    "finished": row["finished"],
                    "readings": row["readings"],
                    "ok": row["ok"],
                    "failed": row["failed"],
                    "meter_stats": stats.get("meters", {}),
                    "channel_stats": stats.get("channels", {}),
                }
            )
        return out

    # -- life cycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; further use raises :class:`StoreError`."""
        self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"
