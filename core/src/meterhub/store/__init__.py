"""The reading store: what the concentrator, its uplinks and the CLI keep, and the contract
a backend fulfils (:class:`Store`). SQLite (:mod:`.sqlite`) is the one backend today.

A store keeps readings, events, round summaries, the command audit trail and an outbox
per uplink. Writes are idempotent (a reading stored twice is kept once), so a re-delivery
after a crash or a lost acknowledgement does no harm.

Outbox policy: every uplink's queue is capped at ``outbox_max`` items
(:data:`DEFAULT_OUTBOX_MAX` unless the store URL says ``?outbox_max=N``). When a write
would take a queue past its cap, that queue's oldest items are dropped, in the same
transaction, and an ``outbox_overflow`` warning event says how many: a concentrator whose
uplink is down for months fills neither its disk nor its memory, and says what it lost.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs

from ..errors import MeterhubError
from ..model import (
    CommandRecord,
    CommandState,
    Event,
    HeadEndRequest,
    Origin,
    OutboxItem,
    Reading,
    RequestRecord,
    RequestState,
    RoundReport,
    TerminalRecord,
    meter_key,
)

URL_PREFIX = "sqlite:///"
MEMORY = ":memory:"

#: Items an uplink's outbox holds at most (see the module docstring for what happens then):
#: about ten days of quarter-hourly rounds of 100 meters × 5 quantities.
DEFAULT_OUTBOX_MAX = 500_000

#: The event written (and kept for :meth:`Store.take_overflow_events`) when an outbox drops items.
OUTBOX_OVERFLOW = "outbox_overflow"

#: Where a command may go from each state; a state missing here is final.
COMMAND_MOVES: Mapping[CommandState, frozenset[CommandState]] = {
    CommandState.REQUESTED: frozenset({CommandState.REFUSED, CommandState.SENT, CommandState.FAILED}),
    CommandState.SENT: frozenset({CommandState.ANSWERED, CommandState.FAILED}),
}

#: States a command never leaves: the audit trail's last word on it.
FINAL_COMMAND_STATES = frozenset(set(CommandState) - set(COMMAND_MOVES))


class StoreError(MeterhubError):
    """The store cannot be opened, or a write to it failed (and nothing of it was written)."""


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


#: The states a head-end request may end in, and those it may end from.
REQUEST_ENDS = frozenset({RequestState.ANSWERED, RequestState.FAILED})
REQUEST_OPEN = frozenset({RequestState.QUEUED, RequestState.CLAIMED})


def check_request_end(request_id: str, current: str, new: RequestState) -> None:
    """ValueError unless ``new`` is an end (answered, failed); StoreError unless the request,
    its stored state ``current``, is still open: both backends' rule."""
    if new not in REQUEST_ENDS:
        raise ValueError(f"a request ends answered or failed, not {new.value}")
    if RequestState(current) not in REQUEST_OPEN:
        raise StoreError(f"request {request_id} is already {current}; it cannot become {new.value}")


def check_command_move(command_id: str, current: CommandState, new: CommandState) -> None:
    """Raise :class:`StoreError` unless a command may go from ``current`` to ``new``
    (:data:`COMMAND_MOVES`): the audit trail never rewrites how a command ended."""
    if new in COMMAND_MOVES.get(current, frozenset()):
        return
    if current in FINAL_COMMAND_STATES:
        raise StoreError(
            f"command {command_id} is already {current.value}, a final state; it cannot become {new.value}"
        )
    allowed = ", ".join(sorted(state.value for state in COMMAND_MOVES[current]))
    raise StoreError(f"command {command_id} cannot go from {current.value} to {new.value} (only to {allowed})")


class Store(Protocol):
    """What the runtime, the uplinks and the CLI need from a store: the contract of a backend.

    Every write is one transaction: all of it is stored, or none of it and the method
    raises (:class:`StoreError` when the backend failed, :class:`ValueError` or
    :class:`TypeError` for a value it cannot store). Timestamps must be timezone-aware.
    Lists come back oldest first; ``since`` is inclusive and ``limit`` keeps the first N.
    """

    def add_readings(self, readings: Sequence[Reading], *, outbox: Sequence[str] = ()) -> int:
        """Store readings and return how many were new.

        A reading whose key (terminal, channel, protocol, meter, quantity, timestamp,
        period) is stored already is skipped: a re-delivery is stored once. Each new one
        is queued once for every uplink named in ``outbox``, in the same transaction.
        """

    def add_reading_batches(self, batches: Sequence[tuple[Sequence[Reading], Sequence[str]]]) -> list[int]:
        """Store several ``(readings, outbox)`` batches in one transaction, as
        :meth:`add_readings` would one by one; return each batch's count of new readings.
        A group commit: many callers' writes for the price of one."""

    def add_event(self, event: Event, *, outbox: Sequence[str] = ()) -> None:
        """Store an event (``data`` as JSON, Decimals as exact strings), queued for each
        uplink in ``outbox`` in the same transaction."""

    def add_round(self, report: RoundReport) -> None:
        """Store a round's summary and its per-meter and per-channel statistics."""

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
        """Stored readings, oldest first, with every filter applied in the query.

        ``meter`` is an address alone; ``protocol``, ``channel`` and ``terminal`` tell
        apart meters that share an address.
        """

    def latest(
        self, *, meter: str | None = None, quantity: str | None = None, terminal: str | None = None
    ) -> list[Reading]:
        """The newest OK reading per (terminal, channel, protocol, meter, quantity, period):
        the latest value of every measuring point, as an uplink's terminal answers it."""

    def meters(
        self, *, meter: str | None = None, protocol: str | None = None, channel: str | None = None
    ) -> list[MeterIdentity]:
        """The distinct meters with stored readings, sorted: what a bare address may mean."""

    def events(
        self,
        *,
        kind: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Stored events, oldest first."""

    def rounds(self) -> list[dict[str, Any]]:
        """Round summaries, oldest first, as JSON-able dicts (timestamps as ISO text)."""

    def outbox_items(self, uplink: str, *, limit: int | None = None) -> list[OutboxItem]:
        """What ``uplink`` has not acknowledged yet, oldest first, each reading or event
        rebuilt from its row."""

    def outbox_size(self, uplink: str) -> int:
        """How many items wait for ``uplink``."""

    def ack(self, uplink: str, ids: Sequence[int]) -> int:
        """Remove items ``uplink`` has acknowledged and return how many went; ids that are
        unknown or queued for another uplink are ignored."""

    def take_overflow_events(self) -> list[Event]:
        """The ``outbox_overflow`` events written since the last call (they are stored
        too), so the runtime can pass them on to observers; the list is cleared."""

    def add_command(self, record: CommandRecord) -> None:
        """Start a command's audit trail; a second record with the same id is a StoreError."""

    def update_command(
        self,
        id: str,
        state: CommandState,
        *,
        reason: str = "",
        answer: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> CommandRecord:
        """Move a command to ``state`` (at ``at``, default now) and return its new record.

        Only the moves in :data:`COMMAND_MOVES` are allowed; an unknown id or any other
        move (out of a final state above all) is a StoreError.
        """

    def command(self, id: str) -> CommandRecord | None:
        """The command's record, or None if there is none with that id."""

    def commands(
        self,
        *,
        meter: str | None = None,
        state: CommandState | None = None,
        origin: Origin | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[CommandRecord]:
        """Command records, oldest request first; ``since`` filters on the request time."""

    def settings(self, scope: str) -> dict[str, Any]:
        """The settings kept for ``scope`` (an uplink's name; ``archive``): key -> JSON
        value (Decimals and times as text); empty when none are kept."""

    def put_settings(self, scope: str, values: Mapping[str, Any]) -> None:
        """Keep JSON-able ``values`` for ``scope`` in one transaction, replacing what the
        keys held; a value of None deletes its key."""

    def close(self) -> None:
        """Release the store; using it afterwards raises StoreError."""


class HeadEndStore(Store, Protocol):
    """What a head-end needs besides a store: its terminals, their allowlist and the queue
    of requests that reach a terminal through whichever node holds its connection. Both
    backends have it; several head-end processes may share one (PostgreSQL)."""

    def allow_terminals(self, names: Sequence[str], *, allowed: bool = True) -> None:
        """Add terminals (``32010001``) to the allowlist, or with ``allowed=False`` take them off."""

    def allowed_terminals(self) -> list[str]:
        """The allowlist, sorted."""

    def terminal_seen(self, name: str, *, node: str, peer: str, at: datetime, online: bool = True,
                      login: bool = False, heartbeat: bool = False) -> None:
        """Record a terminal's valid frame on ``node`` (``login``: its login, which zeroes
        the heartbeat count; ``heartbeat``: one more), or with ``online=False`` the end of
        its connection there (ignored if another node holds it since)."""

    def record_heartbeats(self, node: str, beats: Mapping[str, tuple[datetime, int]]) -> None:
        """Record in one transaction the heartbeats that came on ``node``: terminal name ->
        (the last one's time, how many); a terminal another node holds since is left alone."""

    def terminals_offline(self, node: str) -> int:
        """Mark offline every terminal ``node`` held (a node starting again after a crash)."""

    def terminals(self, *, online: bool | None = None) -> list[TerminalRecord]:
        """The terminals seen, by name."""

    def add_request(self, request: HeadEndRequest) -> None:
        """Queue a request (state QUEUED); a second with the same id is a StoreError."""

    def claim_requests(self, terminals: Collection[str], node: str, *, at: datetime | None = None,
                       limit: int = 100) -> list[RequestRecord]:
        """Claim for ``node`` the queued requests of ``terminals``, oldest first: each
        request is claimed by one node only, also with several nodes on one database. A
        queued request older than its timeout is FAILED instead ("not taken within its
        timeout")."""

    def finish_request(self, id: str, state: RequestState, *, reason: str = "",
                       answer: Mapping[str, Any] | None = None) -> RequestRecord:
        """End a queued or claimed request, ANSWERED or FAILED; anything else is a StoreError."""

    def request(self, id: str) -> RequestRecord | None:
        """A request's record, or None."""


def _store_options(url: str, query: str) -> dict[str, int]:
    """The options a store URL's query sets (``outbox_max=10000``), checked by name."""
    options: dict[str, int] = {}
    for item in query.split("&"):
        key, sep, value = item.partition("=")
        if key != "outbox_max":
            raise ValueError(f"store URL {url!r}: unknown option {key!r} (known: outbox_max)")
        if not sep or not value.isdigit() or int(value) < 1:
            raise ValueError(f"store URL {url!r}: outbox_max must be a whole number of items ≥ 1, got {value!r}")
        if key in options:
            raise ValueError(f"store URL {url!r}: option {key!r} is given twice")
        options[key] = int(value)
    return options


#: The URL schemes of a PostgreSQL store (meterhub[postgres]: psycopg 3).
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_store(url: str) -> HeadEndStore:
    """Open (creating if needed) the store at ``url``.

    ``sqlite:///meterhub.db`` is relative to the working directory,
    ``sqlite:////var/lib/meterhub.db`` absolute, ``sqlite:///:memory:`` in memory;
    ``postgresql://user@host:port/database`` a PostgreSQL database (the ``postgres`` extra:
    ``pip install 'meterhub[postgres]'``), which several processes may share.
    A query sets options: ``sqlite:///meterhub.db?outbox_max=10000``. Any other URL, an
    unknown option or a bad value raises :class:`ValueError` naming it.
    """
    if isinstance(url, str) and url.startswith(POSTGRES_PREFIXES):
        from .postgres import open_postgres_store

        return open_postgres_store(url)
    if not isinstance(url, str) or not url.startswith(URL_PREFIX):
        raise ValueError(
            f"unsupported store URL {url!r}: expected sqlite:///relative.db, "
            "sqlite:////absolute/path.db, sqlite:///:memory: or postgresql://user@host/database"
        )
    path, has_query, query = url[len(URL_PREFIX):].partition("?")
    if not path:
        raise ValueError(f"store URL {url!r} names no file: expected sqlite:///relative.db or sqlite:///:memory:")
    options = _store_options(url, query) if has_query else {}
    return SqliteStore(path, url=url, **options)


# The backend implements the contract above and imports it from here, so it comes last.
from .sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore

__all__ = [
    "COMMAND_MOVES", "DEFAULT_OUTBOX_MAX", "REQUEST_ENDS", "REQUEST_OPEN", "check_request_end", "FINAL_COMMAND_STATES", "HeadEndStore", "MEMORY", "MIGRATIONS", "OUTBOX_OVERFLOW",
    "SCHEMA_VERSION", "URL_PREFIX", "MeterIdentity", "SqliteStore", "Store", "StoreError", "check_command_move",
    "open_store",
]
