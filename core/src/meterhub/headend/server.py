"""The head-end: a master station that keeps what its terminals send in the store, reads
them on a schedule, and carries out requests and commands queued in the store.

Several head-end processes ("nodes") may share one store (PostgreSQL; SQLite on one box):
each serves the connections a load balancer gives it, records in the ``terminals`` table
which terminal it holds, and claims from the ``requests`` table the requests for those
terminals alone. Whoever asks (``meterhub head-end request``, ``... command``) queues a
request and waits for its answer in the store: it reaches the terminal through whichever
node holds it, with no other channel between the nodes.

What is stored: readings keyed by terminal and measuring point
(:mod:`meterhub.protocols.gdw1376_1_quantities`) from active reports, scheduled reads
(AFN 0C F129 every ``realtime_s``; AFN 0D F161 for each of the last ``frozen_days`` days and
F177 for each of the last ``frozen_months`` months whose freeze is not stored yet, checked at
login and then daily: gaps are back-filled when a terminal comes back) and the answers to requests; ERC records as events; every
login, heartbeat and disconnection in ``terminals``; commands in the audit trail.

Commands (``kind`` command) go through :func:`meterhub.commands.run_command` on the node
that sends them: policy hooks, the terminal's password (PW, 32 hex digits) from the secret
store entry the request names as its ``credential``, never from the queue; a command
without one is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from ..commands import run_command
from ..errors import CommandRefused, MeterhubError
from ..alarms import AlarmEngine, MeterView, Rule
from ..model import (
    Command,
    CommandRecord,
    CommandState,
    Event,
    Meter,
    Reading,
    RequestRecord,
    RequestState,
    meter_key,
    utcnow,
)
from ..protocols import gdw1376_1_data as data
from ..protocols.gdw1376_1 import Afn, DataUnit
from ..protocols.gdw1376_1_quantities import (
    ENERGY_TOTAL,
    FROZEN_PERIOD,
    PROTOCOL,
    events_of,
    readings_of,
)
from .station import (
    MasterStation,
    RequestDenied,
    TerminalId,
    parse_terminal,
    terminal_name,
)

if TYPE_CHECKING:
    from ..plugins import Plugins
    from ..secrets import SecretStore
    from ..store.writer import StoreWriter

log = logging.getLogger(__name__)

#: How often a node looks in the store for requests for its terminals, in seconds.
DEFAULT_REQUEST_POLL_S = 0.5
#: The scheduled real-time read (AFN 0C F129 of every point), in seconds; 0: none.
DEFAULT_REALTIME_S = 900.0
#: Days back a terminal's daily freezes (AFN 0D F161) are back-filled; 0: none.
DEFAULT_FROZEN_DAYS = 7
#: Months back its monthly freezes (AFN 0D F177) are back-filled; 0: none.
DEFAULT_FROZEN_MONTHS = 3
#: Measuring points (F10 serials) asked for when a terminal's archive is learnt.
DEFAULT_ARCHIVE_SPAN = 256
#: Serials per AFN 0A F10 query.
ARCHIVE_QUERY_SPAN = 32
#: How often the heartbeats that came are recorded in the store, in seconds: all of them in
#: one transaction (a confirm never waits for it).
HEARTBEATS_S = 5.0
#: How often the freezes are looked at again, once a terminal's are back-filled.
FROZEN_EVERY_S = 86400.0
#: Units per scheduled request (each up to 8 points of one DA group).
UNITS_PER_REQUEST = 8

#: What the ``command`` kind of request may ask, and the AFN 05 Fn it sends.
COMMAND_ACTIONS = ("set_time", "trip", "permit_close", "allow_reports", "forbid_reports")


def default_node(port: int) -> str:
    """A node's name unless given: host name and listening port, the same across restarts
    (so a restarted node finds the terminals it held)."""
    return f"{socket.gethostname()}:{port}"


def jsonable(value: Any) -> Any:
    """An item's value as JSON: attrs classes as dicts, Decimals as exact text, times as ISO."""
    if attrs.has(type(value)):
        return {f.name: jsonable(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, int | str | float | bool) or value is None:
        return value
    return str(value)


def point_units(points: Sequence[int], fns: Sequence[int], values: Sequence[Any] | None = None) -> list[DataUnit]:
    """Data units asking for ``fns`` of ``points``: one unit per DA group of 8 points
    (``values``: each point's value, for every Fn, e.g. a class 2 time tag)."""
    groups: dict[int, list[int]] = {}
    for p in sorted(set(points)):
        groups.setdefault((p - 1) // 8 if p else -1, []).append(p)
    units = []
    for group in groups.values():
        if values is None:
            units.append(data.unit(group, fns))
        else:
            units.append(data.unit(group, fns, [values[0]] * (len(group) * len(fns))))
    return units


class _Journal:
    """The command path's journal over the head-end's store writer."""

    def __init__(self, writer: StoreWriter) -> None:
        self._w = writer

    async def add_command(self, record: CommandRecord) -> None:
        await self._w.call(lambda store: store.add_command(record))

    async def update_command(self, id: str, state: CommandState, *, reason: str = "",
                             answer: Mapping[str, Any] | None = None) -> CommandRecord:
        return await self._w.call(lambda store: store.update_command(id, state, reason=reason, answer=answer))


@attrs.define
class _Schedule:
    """One terminal's schedule on this node."""

    points: tuple[int, ...] | None = None  #: its archive's measuring points, once learnt
    next_realtime: float = 0.0
    next_frozen: float = 0.0


def _alarm_scope(terminal: str) -> str:
    """Where the alarm rules' memory of a terminal's points is kept in the store: per
    terminal, so the node that holds it next (after a restart or a move) takes it up, and
    a report writes that terminal's memory only."""
    return f"head-end/alarms/{terminal}"


def _points_of(terminal: str) -> Callable[[str], bool]:
    """Whether an alarm source (``TERMINAL/gdw1376.1:POINT``) is one of ``terminal``'s points."""
    prefix = f"{terminal}/"
    return lambda source: source.startswith(prefix)


class HeadEnd(MasterStation):
    """A master station node that stores what it gets (see the module docstring).

    ``writer`` runs the store (a :class:`~meterhub.store.HeadEndStore`); ``allow`` is the
    allowlist given on the command line (``--allow FILE``), added to the store's
    (``allowed_terminals``); ``allow_any`` lets every terminal log in (a lab). ``zone``:
    the terminals' local time zone. The remaining keywords are :class:`MasterStation`'s.
    """

    def __init__(
        self,
        writer: StoreWriter,
        *,
        plugins: Plugins,
        secrets: SecretStore,
        node: str | None = None,
        zone: tzinfo | None = None,
        allow: Iterable[TerminalId | str] | None = None,
        allow_any: bool = False,
        realtime_s: float = DEFAULT_REALTIME_S,
        frozen_days: int = DEFAULT_FROZEN_DAYS,
        frozen_months: int = DEFAULT_FROZEN_MONTHS,
        archive_span: int = DEFAULT_ARCHIVE_SPAN,
        request_poll_s: float = DEFAULT_REQUEST_POLL_S,
        alarms: Sequence[Rule] = (),
        **station: Any,
    ) -> None:
        super().__init__(**station)
        for name, value, low in (("realtime_s", realtime_s, 0), ("frozen_days", frozen_days, 0),
                                 ("frozen_months", frozen_months, 0), ("archive_span", archive_span, 0)):
            if not value >= low:
                raise ValueError(f"{name} must be ≥ {low}, got {value!r}")
        if not request_poll_s > 0:
            raise ValueError(f"request_poll_s must be > 0, got {request_poll_s!r}")
        self.writer = writer
        self.plugins = plugins
        self.secrets = secrets
        self.node = node or ""  #: set by start() from the port when not given
        self.zone = zone or datetime.now().astimezone().tzinfo or UTC
        self.allow_names = frozenset(terminal_name(parse_terminal(t)) for t in (allow or ()))
        self.allow_any = allow_any
        self.realtime_s = realtime_s
        self.frozen_days = frozen_days
        self.frozen_months = frozen_months
        self.archive_span = archive_span
        self.request_poll_s = request_poll_s
        #: the same alarm rules a concentrator runs, on the values its terminals send
        self.alarms = AlarmEngine(alarms) if alarms else None
        self._schedules: dict[TerminalId, _Schedule] = {}
        #: (due time, tie-break, terminal, its schedule): when a terminal's schedule is looked at
        self._due_heap: list[tuple[float, int, TerminalId, _Schedule]] = []
        self._due_counter = itertools.count()
        self._due_changed = asyncio.Event()
        self._held: set[str] = set()  #: names of the terminals logged in on this node
        self._held_frozen: frozenset[str] = frozenset()  #: a copy the store's thread may read
        #: heartbeats not yet recorded: name -> (last one's time, how many)
        self._beats: dict[str, tuple[datetime, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []

    # --- life cycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> HeadEnd:
        await super().start(host, port)
        self.node = self.node or default_node(self.port)
        # before any login of this run is written: the store's writer keeps the order
        stale = await self.writer.call(lambda store: store.terminals_offline(self.node))
        if stale:
            log.info("node %s: %d terminal(s) it held before a restart marked offline", self.node, stale)
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._serve_requests(), name="head-end requests"),
                       loop.create_task(self._run_schedules(), name="head-end schedules"),
                       loop.create_task(self._record_heartbeats(), name="head-end heartbeats")]
        return self

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        self._loops = []
        await super().stop()
        await self._flush_heartbeats()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the sessions' hooks ----------------------------------------------------------------

    async def _allows(self, terminal: TerminalId) -> bool:
        if self.allow_any or terminal_name(terminal) in self.allow_names:
            return True
        allowed = await self.writer.call(lambda store: store.allowed_terminals())
        return terminal_name(terminal) in allowed

    async def _seen(self, terminal: TerminalId, peer: str, *, login: bool, heartbeat: bool) -> None:
        name = terminal_name(terminal)
        now = utcnow()
        if not login:
            if heartbeat:  # recorded with the others every HEARTBEATS_S: one transaction, not one each
                _, count = self._beats.get(name, (now, 0))
                self._beats[name] = (now, count + 1)
            return
        self._beats.pop(name, None)
        await self.writer.call(lambda store: store.terminal_seen(name, node=self.node, peer=peer, at=now, login=True,
                                                                 heartbeat=heartbeat))
        self._hold(name, True)
        if self.alarms is not None:
            # what the rules remember of this terminal's points, wherever it was last held: a
            # condition still on when it left (a node restart, a move) is not raised again
            kept = await self.writer.call(lambda store: store.settings(_alarm_scope(name)))
            self.alarms.restore(kept.get("memory") or {}, of=_points_of(name))
        schedule = self._schedules[terminal] = _Schedule()  # learn its archive, read it, back-fill its freezes
        self._due(terminal, schedule, asyncio.get_running_loop().time())

    async def _gone(self, terminal: TerminalId, peer: str) -> None:
        name = terminal_name(terminal)
        self._schedules.pop(terminal, None)
        self._hold(name, False)
        await self._flush_heartbeats()
        now = utcnow()
        await self.writer.call(lambda store: store.terminal_seen(name, node=self.node, peer=peer, at=now, online=False))

    def _hold(self, name: str, held: bool) -> None:
        (self._held.add if held else self._held.discard)(name)
        self._held_frozen = frozenset(self._held)

    async def _record_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEATS_S)
            await self._flush_heartbeats()

    async def _flush_heartbeats(self) -> None:
        beats, self._beats = self._beats, {}
        if not beats:
            return
        try:
            await self.writer.call(lambda store: store.record_heartbeats(self.node, beats))
        except MeterhubError:
            log.exception("node %s: %d terminal(s)' heartbeats could not be recorded", self.node, len(beats))

    async def _store(self, terminal: TerminalId, afn: int, found: Iterable[data.Item]) -> None:
        await self._keep(terminal, tuple(found))

    async def _keep(self, terminal: TerminalId, found: Sequence[data.Item]) -> int:
        """Store the readings and events of ``found``; how many readings were new."""
        name = terminal_name(terminal)
        now = utcnow()
        readings = []
        events = []
        for item in found:
            if isinstance(item.value, data.EventReply):
                events.extend(events_of(item.value.records, terminal=name, zone=self.zone, received=now))
            else:
                readings.extend(readings_of(item, terminal=name, zone=self.zone, received=now))
        new = await self.writer.add_readings(readings) if readings else 0
        events += self._alarms(name, readings, now)
        for event in events:
            await self.writer.add_event(event)
        if self.alarms is not None and readings:
            memory = self.alarms.memory(of=_points_of(name))
            await self.writer.call(lambda store: store.put_settings(_alarm_scope(name), {"memory": memory}))
        log.debug("%s: %d item(s): %d reading(s), %d new; %d event(s)", name, len(found), len(readings), new,
                  len(events))
        return new

    def _alarms(self, terminal: str, readings: Sequence[Reading], now: datetime) -> list[Event]:
        """The alarm rules' events for the current values of each measuring point a report
        carried (frozen values are history, not a visit). A point is named like a meter of
        the terminal: ``TERMINAL/gdw1376.1:POINT``."""
        if self.alarms is None:
            return []
        by_point: dict[tuple[str, str], list[Reading]] = {}
        for reading in readings:
            if reading.period is None:
                by_point.setdefault((reading.protocol, reading.meter), []).append(reading)
        found: list[Event] = []
        for (protocol, point), values in by_point.items():
            meter = Meter(address=point, protocol=protocol, channel="",
                          quantities=tuple(dict.fromkeys(r.quantity for r in values)))
            view = MeterView(f"{terminal}/{meter_key('', protocol, point)}", meter, tuple(values), now, self.zone)
            found += self.alarms.check(view)
        return found

    # --- requests queued in the store ---------------------------------------------------------

    async def _serve_requests(self) -> None:
        while True:
            held = self._held_frozen
            if held:
                try:
                    claimed = await self.writer.call(lambda store, held=held: store.claim_requests(held, self.node))
                except MeterhubError:
                    log.exception("node %s: cannot take requests from the store", self.node)
                    claimed = []
                for record in claimed:
                    self._spawn(self._carry_out(record), f"request {record.request.id}")
            await asyncio.sleep(self.request_poll_s)

    async def _carry_out(self, record: RequestRecord) -> None:
        request = record.request
        try:
            if request.kind == "read":
                answer = await self._read(request.terminal, request.args, request.timeout)
            elif request.kind == "command":
                answer = await self._command(record)
            else:
                raise ValueError(f"unknown request kind {request.kind!r} (read or command)")
        except (MeterhubError, ValueError, KeyError, TypeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            extra = {"items": [_item_json(i) for i in exc.items]} if isinstance(exc, RequestDenied) else None
            log.info("request %s for %s failed: %s", request.id, request.terminal, reason)
            await self._finish(request.id, RequestState.FAILED, reason=reason, answer=extra)
            return
        await self._finish(request.id, RequestState.ANSWERED, answer=answer)

    async def _finish(self, id: str, state: RequestState, *, reason: str = "",
                      answer: Mapping[str, Any] | None = None) -> None:
        try:
            await self.writer.call(lambda store: store.finish_request(id, state, reason=reason, answer=answer))
        except MeterhubError:
            log.exception("request %s: its end (%s) could not be stored", id, state.value)

    async def _read(self, name: str, args: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """A read request: ``afn`` (default 0Ch), ``points`` (default [0]), ``fns``, and for
        class 2 data ``day`` (YYYY-MM-DD) or ``month`` (YYYY-MM)."""
        afn = int(args.get("afn", Afn.CLASS1))
        points = [int(p) for p in args.get("points", [0])]
        fns = [int(f) for f in args["fns"]]
        value: Any = None
        if "day" in args:
            value = data.DayTag(date.fromisoformat(str(args["day"])))
        elif "month" in args:
            year, month = (int(x) for x in str(args["month"]).split("-"))
            value = data.MonthTag(data.PartialTime(year=year, month=month))
        units = point_units(points, fns, None if value is None else [value])
        terminal = parse_terminal(name)
        found = await self.request(terminal, afn, units, timeout=timeout)
        new = await self._keep(terminal, found)
        return {"items": [_item_json(i) for i in found], "stored": new}

    async def _command(self, record: RequestRecord) -> dict[str, Any]:
        request = record.request
        action = str(request.args.get("action", ""))
        if action not in COMMAND_ACTIONS:
            raise ValueError(f"unknown command {action!r} (one of {', '.join(COMMAND_ACTIONS)})")
        point = int(request.args.get("point", 0))
        if action in ("trip", "permit_close") and not point:
            raise ValueError(f"{action} needs the measuring point whose meter's relay it switches")
        terminal = parse_terminal(request.terminal)
        command = Command(meter=str(point) if point else "", protocol=PROTOCOL, name=action,
                          args={k: v for k, v in request.args.items() if k != "action"}, id=request.id,
                          origin=request.origin, issuer=request.issuer, credential=request.credential,
                          channel=request.terminal)

        async def send(ready: Command) -> Mapping[str, Any]:
            pw = bytes.fromhex(str(ready.args["password"]))
            await self.request(terminal, Afn.CONTROL, [_control_unit(action, point, ready.args, self.zone)], pw=pw,
                               timeout=request.timeout)
            return {"confirmed": True}

        try:
            answer = await run_command(command, plugins=self.plugins, secrets=self.secrets,
                                       journal=_Journal(self.writer), send=send, needs=("password",))
        except CommandRefused as exc:
            await self.writer.add_event(Event("command_refused", source=request.terminal, severity="warning",
                                              data={"command": action, "id": request.id, "reason": str(exc)}))
            raise
        await self.writer.add_event(Event("command_executed", source=request.terminal,
                                          data={"command": action, "id": request.id, "issuer": request.issuer}))
        return dict(answer)

    # --- the schedule ----------------------------------------------------------------------

    def _due(self, terminal: TerminalId, schedule: _Schedule, at: float) -> None:
        """Look at ``terminal``'s schedule again at ``at`` (event-loop time)."""
        heapq.heappush(self._due_heap, (at, next(self._due_counter), terminal, schedule))
        self._due_changed.set()

    async def _run_schedules(self) -> None:
        """Carry out each terminal's schedule when it is due: one heap of due times, so ten
        thousand terminals with nothing due cost nothing."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._due_heap and self._due_heap[0][0] <= now:
                _, _, terminal, schedule = heapq.heappop(self._due_heap)
                self._visit(terminal, schedule, now)
            self._due_changed.clear()
            wait = self._due_heap[0][0] - now if self._due_heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due_changed.wait(), wait)

    def _visit(self, terminal: TerminalId, schedule: _Schedule, now: float) -> None:
        session = self._sessions.get(terminal)
        if self._schedules.get(terminal) is not schedule or session is None or session.closed:
            return  # logged out or in again since: that schedule lapses
        if schedule.points is None:
            schedule.points = ()  # asked once per login, whatever the answer
            self._spawn(self._learn(terminal, schedule), f"archive of {terminal_name(terminal)}")
            return
        if not schedule.points:
            return  # nothing to read until it logs in again
        due = []
        if self.realtime_s:
            if now >= schedule.next_realtime:
                schedule.next_realtime = now + self.realtime_s
                self._spawn(self._scheduled_read(terminal, schedule.points), f"read {terminal_name(terminal)}")
            due.append(schedule.next_realtime)
        if self.frozen_days or self.frozen_months:
            if now >= schedule.next_frozen:
                schedule.next_frozen = now + FROZEN_EVERY_S
                self._spawn(self._back_fill(terminal, schedule.points), f"back-fill {terminal_name(terminal)}")
            due.append(schedule.next_frozen)
        if due:
            self._due(terminal, schedule, min(due))

    async def _learn(self, terminal: TerminalId, schedule: _Schedule) -> None:
        """Learn a terminal's measuring points from its meter archive (AFN 0A F10)."""
        points: set[int] = set()
        try:
            for first in range(1, self.archive_span + 1, ARCHIVE_QUERY_SPAN):
                serials = range(first, min(first + ARCHIVE_QUERY_SPAN, self.archive_span + 1))
                unit = data.unit((0,), (10,), [data.ArchiveQuery(tuple(serials))])
                for item in await self.request(terminal, Afn.QUERY, [unit]):
                    if item.fn == 10:
                        points.update(r.point for r in item.value.records if r.point and r.protocol)
        except MeterhubError as exc:
            log.info("%s: its meter archive could not be read (%s); scheduled reads wait for the next login",
                     terminal_name(terminal), exc)
        schedule.points = tuple(sorted(points))
        log.info("%s: %d measuring point(s) in its archive", terminal_name(terminal), len(points))
        self._due(terminal, schedule, asyncio.get_running_loop().time())

    async def _scheduled_read(self, terminal: TerminalId, points: Sequence[int]) -> None:
        units = point_units(points, (129,))
        asked = answered = 0
        for start in range(0, len(units), UNITS_PER_REQUEST):
            chunk = units[start:start + UNITS_PER_REQUEST]
            asked += sum(len(u.points) for u in chunk)
            try:
                found = await self.request(terminal, Afn.CLASS1, chunk)
            except RequestDenied as exc:
                found = exc.items  # the points it has data of
            except MeterhubError as exc:
                log.info("%s: scheduled read failed: %s", terminal_name(terminal), exc)
                break
            answered += len(_energy_points(found))
            await self._keep(terminal, found)
        await self._count_reads(terminal, asked, answered)

    async def _count_reads(self, terminal: TerminalId, asked: int, answered: int) -> None:
        """Add a scheduled read's points asked and answered to the terminal's counts, kept
        in the store's settings (:func:`reads_scope`) where any node's HTTP API finds them."""
        scope = reads_scope(terminal_name(terminal))
        now = utcnow().isoformat()

        def add(store: Any) -> None:
            kept = store.settings(scope).get("reads")
            kept = kept if isinstance(kept, Mapping) else {}
            store.put_settings(scope, {"reads": {"asked": int(kept.get("asked", 0)) + asked,
                                                 "answered": int(kept.get("answered", 0)) + answered,
                                                 "since": kept.get("since") or now}})

        try:
            await self.writer.call(add)
        except MeterhubError as exc:
            log.warning("%s: its read counts could not be stored: %s", terminal_name(terminal), exc)

    async def _back_fill(self, terminal: TerminalId, points: Sequence[int]) -> None:
        """Ask for the daily freezes (F161) of the last ``frozen_days`` days and the monthly
        ones (F177) of the last ``frozen_months`` months that are not stored yet."""
        name = terminal_name(terminal)
        today = datetime.now(self.zone).date()
        days = [today - timedelta(days=n) for n in range(self.frozen_days, 0, -1)]
        months = []
        year, month = today.year, today.month
        for _ in range(self.frozen_months):
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
            months.insert(0, (year, month))
        first = min([*days, *(date(y, m, 1) for y, m in months)], default=today)
        since = datetime(first.year, first.month, first.day, tzinfo=self.zone).astimezone(UTC)
        stored = await self.writer.call(lambda store: store.readings(terminal=name, quantity=ENERGY_TOTAL,
                                                                     protocol=PROTOCOL, since=since))
        closed: dict[int, set[date]] = {}  # point -> the days its stored freezes closed
        for r in stored:
            if r.period == FROZEN_PERIOD and r.data_time is not None and r.meter.isdigit():
                closed.setdefault(int(r.meter), set()).add((r.data_time.astimezone(self.zone) - timedelta(days=1)).date())
        wanted: list[tuple[int, Any, Callable[[set[date]], bool]]] = [
            (161, data.DayTag(day), lambda have, day=day: day in have) for day in days]
        wanted += [(177, data.MonthTag(data.PartialTime(year=y, month=m)),
                    lambda have, y=y, m=m: any((d.year, d.month) == (y, m) and (d + timedelta(days=1)).day == 1
                                               for d in have)) for y, m in months]
        for fn, tag, stored_already in wanted:
            missing = [p for p in points if not stored_already(closed.get(p, set()))]
            units = point_units(missing, (fn,), [tag])
            for start in range(0, len(units), UNITS_PER_REQUEST):
                try:
                    found = await self.request(terminal, Afn.CLASS2, units[start:start + UNITS_PER_REQUEST])
                except RequestDenied as exc:
                    found = exc.items  # what the terminal has; the rest it has not frozen
                except MeterhubError as exc:
                    log.info("%s: back-fill of F%d %s failed: %s", name, fn, jsonable(tag), exc)
                    return
                await self._keep(terminal, found)


def _control_unit(action: str, point: int, args: Mapping[str, Any], zone: tzinfo) -> DataUnit:
    if action == "set_time":
        # the terminal's local time: the time given (an aware one converted), else now
        when = args.get("time")
        moment = datetime.fromisoformat(str(when)) if when else datetime.now(zone)
        if moment.tzinfo is not None:
            moment = moment.astimezone(zone).replace(tzinfo=None)
        return data.unit((0,), (31,), [data.ClockSet(data.Clock.at(moment.replace(microsecond=0)))])
    if action == "trip":
        return data.unit((point,), (1,), [data.RemoteTrip()])  # at once, until released
    if action == "permit_close":
        return data.unit((point,), (2,))
    return data.unit((0,), (29 if action == "allow_reports" else 37,))


def reads_scope(name: str) -> str:
    """The settings scope of a terminal's scheduled-read counts: ``reads`` holds the points
    asked and answered since ``since`` (ISO time, UTC)."""
    return f"head-end/{name}"


def _energy_points(found: Iterable[data.Item]) -> set[int]:
    """The points an answer to AFN 0C F129 gave a total energy for."""
    return {i.point for i in found if i.fn == 129 and isinstance(i.value, data.TariffEnergy)
            and i.value.values and i.value.values[0] is not None}


def _item_json(item: data.Item) -> dict[str, Any]:
    return {"point": item.point, "fn": item.fn, "value": jsonable(item.value)}


__all__ = ["COMMAND_ACTIONS", "HeadEnd", "default_node", "jsonable", "point_units", "reads_scope"]
