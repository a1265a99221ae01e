"""A :class:`meterhub.api.Terminal` held in memory, for tests of uplink plugins.

An uplink talks to the running concentrator only through its terminal, so a test can
hand it a :class:`MemoryTerminal` instead: the meters, stored readings and events are
lists the test fills, the outbox offers what the test queued until the uplink
acknowledges it (as the store's does), and what the uplink asked for (commands, meter
changes, events, acknowledgements) is recorded for the test to assert on. Plain Python,
no pytest, no store.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from ..errors import CommandRefused
from ..model import (
    Command,
    Event,
    Meter,
    Origin,
    OutboxItem,
    Reading,
    Schedule,
    meter_key,
    place_meter,
    utcnow,
)
from ..uplinks import take_news

#: A command policy: the reason a command is refused, or None to let it through.
Policy = Callable[[Command], str | None]
#: What a meter does with a command that passed the policy: its answer, or it raises.
Answer = Callable[[Meter, Command], Awaitable[Mapping[str, Any]]]


def agree(command: Command) -> str | None:
    """The default policy: every command goes through."""
    return None


async def answer_ok(meter: Meter, command: Command) -> Mapping[str, Any]:
    """The default meter: it carries out every command and answers ``{"ok": True}``."""
    return {"ok": True}


class MemoryTerminal:
    """A concentrator's terminal over lists, for one uplink named ``name``.

    What the test sets up (plain attributes, change them at will):

    * :attr:`readings` and :attr:`stored_events`: the store, which :meth:`latest`,
      :meth:`frozen`, :meth:`read_now` and :meth:`events` answer from;
    * :attr:`policy`: refuses a command (CommandRefused, nothing sent) when it returns a reason;
    * :attr:`answer`: what a meter does with a command that was let through;
    * :attr:`kept`: the uplink's kept settings, as :meth:`settings` returns them;
    * :meth:`enqueue`: readings and events for the outbox (:attr:`waiting` until
      acknowledged; :attr:`queued` keeps them all).

    What the uplink did, in the order it did it:

    * :attr:`executed`: ``(point or meter as given, command as carried)`` of each meter
      command let through; :attr:`commands`: each command on the terminal itself let
      through; :attr:`refused`: ``(command, reason)`` of each one the policy refused;
    * :attr:`set_meters`: ``(point, meter or None)`` of each :meth:`set_meter` that took;
    * :attr:`raised`: the uplink's own events (:meth:`raise_event`);
    * :attr:`read`: the points read with :meth:`read_now`;
    * :attr:`acked`: every id given to :meth:`ack`, unknown ones too.
    """

    def __init__(self, meters: Iterable[Meter] = (), *, name: str = "uplink", terminal: str = "",
                 schedule: Schedule | None = None) -> None:
        self.name = name
        self.terminal = terminal
        self.schedule = schedule if schedule is not None else Schedule()
        self._meters = tuple(meters)
        self.readings: list[Reading] = []
        self.stored_events: list[Event] = []
        self.policy: Policy = agree
        self.answer: Answer = answer_ok
        self.kept: dict[str, Any] = {}
        #: outbox items not acknowledged yet, oldest first (what :meth:`outbox` offers)
        self.waiting: list[OutboxItem] = []
        #: every outbox item ever queued, acknowledged or not (to find an event's id)
        self.queued: list[OutboxItem] = []
        self.executed: list[tuple[int | Meter, Command]] = []
        self.commands: list[Command] = []
        self.refused: list[tuple[Command, str]] = []
        self.set_meters: list[tuple[int, Meter | None]] = []
        self.raised: list[Event] = []
        self.read: list[int] = []
        self.acked: list[int] = []
        self._ids = itertools.count(1)
        self._news = asyncio.Event()

    # -- set up by the test ------------------------------------------------------------

    def enqueue(self, *items: Reading | Event) -> list[int]:
        """Queue readings or events for the uplink, as a round or an event does; their
        outbox ids, ascending. Wakes :meth:`wait_outbox`."""
        ids = []
        for item in items:
            ident = next(self._ids)
            queued = OutboxItem(ident, self.name, item, utcnow())
            self.waiting.append(queued)
            self.queued.append(queued)
            ids.append(ident)
        self._news.set()
        return ids

    # -- the meters ----------------------------------------------------------------------

    def meters(self) -> Sequence[Meter]:
        return self._meters

    def points(self) -> Mapping[int, Meter]:
        return {m.point: m for m in self._meters if m.point is not None}

    def _meter(self, point: int) -> Meter:
        meter = self.points().get(point)
        if meter is None:
            raise KeyError(f"no meter at measuring point {point}")
        return meter

    async def set_meter(self, point: int, meter: Meter | None) -> None:
        """Put ``meter`` at ``point`` (replacing the meter there) or take the point's meter
        out, and raise ``meter_archive_changed`` as the concentrator does: queued, so a
        waiting uplink wakes and sees the new :meth:`meters`. ValueError for taking out a
        meter that is not there or putting in one another point has (same channel,
        protocol and address); the site's channels and drivers are not checked."""
        placed = None if meter is None else attrs.evolve(meter, point=point)
        if placed is not None:
            clash = next((m for m in self._meters if m.key == placed.key and m.point != point), None)
            if clash is not None:
                raise ValueError(f"meter {placed.key} is already at measuring point {clash.point}")
        self._meters, old = place_meter(self._meters, point, placed)
        self.set_meters.append((point, meter))
        self._store_event(Event("meter_archive_changed", source="concentrator", data={
            "point": point, "old": old.key if old else None, "new": meter.key if meter else None}))

    # -- readings and events -------------------------------------------------------------

    async def latest(self, point: int | None = None) -> list[Reading]:
        """The newest good reading per meter, quantity and period of :attr:`readings`, of
        one point's meter or of every point's."""
        meters = [self._meter(point)] if point is not None else list(self.points().values())
        wanted = {m.key for m in meters}
        newest: dict[tuple[str, str, int | None], Reading] = {}
        for r in self.readings:
            key = (_key(r), r.quantity, r.period)
            if r.ok and key[0] in wanted and (key not in newest or r.timestamp >= newest[key].timestamp):
                newest[key] = r
        return [newest[k] for k in sorted(newest, key=lambda k: (k[0], k[1], k[2] is not None, k[2] or 0))]

    async def frozen(self, point: int, *, period: int | None = None) -> list[Reading]:
        """Good readings of the point's meter with a billing period (that ``period``), newest first."""
        key = self._meter(point).key
        found = [r for r in self.readings
                 if r.ok and _key(r) == key and r.period is not None and (period is None or r.period == period)]
        return sorted(found, key=lambda r: r.data_time or r.timestamp, reverse=True)

    async def read_now(self, point: int) -> list[Reading]:
        """The point's meter "answers" with its :meth:`latest` readings; the point is recorded in :attr:`read`."""
        self._meter(point)
        self.read.append(point)
        return await self.latest(point)

    async def events(self, *, since: datetime | None = None, limit: int | None = None) -> list[Event]:
        """:attr:`stored_events` from ``since`` (inclusive), oldest first, the first ``limit``."""
        found = sorted((e for e in self.stored_events if since is None or e.timestamp >= since),
                       key=lambda e: e.timestamp)
        return found if limit is None else found[:limit]

    def raise_event(self, event: Event) -> None:
        """Recorded in :attr:`raised`, stored and queued for the uplink, like the concentrator's events."""
        self.raised.append(event)
        self._store_event(event)

    def _store_event(self, event: Event) -> None:
        self.stored_events.append(event)
        self.enqueue(event)

    # -- commands ------------------------------------------------------------------------

    def _check(self, command: Command) -> None:
        reason = self.policy(command)
        if reason:
            self.refused.append((command, reason))
            raise CommandRefused(reason)

    async def execute(self, point: int | Meter, command: Command) -> Mapping[str, Any]:
        """The command, addressed to the meter and marked as the uplink's (as the command
        path does), goes through :attr:`policy`; then :attr:`answer` carries it out."""
        if isinstance(point, Meter):
            if point not in self._meters:
                raise KeyError(f"meter {point.label} on channel {point.channel} is not one of this site's")
            meter = point
        else:
            meter = self._meter(point)
        command = attrs.evolve(command, meter=meter.address, protocol=meter.protocol, channel=meter.channel,
                               origin=Origin.UPLINK, issuer=command.issuer or self.name)
        self._check(command)
        self.executed.append((point, command))
        return await self.answer(meter, command)

    async def command(self, command: Command,
                      carry: Callable[[Command], Awaitable[Mapping[str, Any]]]) -> Mapping[str, Any]:
        """Through :attr:`policy` like :meth:`execute`; then ``carry(command)`` does it."""
        command = attrs.evolve(command, origin=Origin.UPLINK, issuer=command.issuer or self.name)
        self._check(command)
        self.commands.append(command)
        return await carry(command)

    # -- kept settings ---------------------------------------------------------------------

    async def settings(self) -> dict[str, Any]:
        return dict(self.kept)

    async def keep_settings(self, values: Mapping[str, Any]) -> None:
        """Kept in :attr:`kept` as the store gives them back (through its JSON: tuples come
        back as lists, Decimals as text); None deletes a key; a value JSON cannot hold is a
        TypeError and nothing is kept."""
        from ..store._rows import (
            _to_json,  # the store's own encoding; imported late: the store is heavy
        )

        encoded = {str(key): None if value is None else json.loads(_to_json(value)) for key, value in values.items()}
        for key, value in encoded.items():
            if value is None:
                self.kept.pop(key, None)
            else:
                self.kept[key] = value

    # -- the outbox ------------------------------------------------------------------------

    async def outbox(self, limit: int = 100) -> list[OutboxItem]:
        return self.waiting[:limit]

    async def ack(self, ids: Collection[int]) -> int:
        """Remove these items; how many went (ids not waiting are ignored). Every id given is recorded in :attr:`acked`."""
        given = list(ids)
        self.acked.extend(given)
        before = len(self.waiting)
        self.waiting = [item for item in self.waiting if item.id not in given]
        return before - len(self.waiting)

    async def wait_outbox(self, timeout: float | None = None) -> bool:
        return await take_news(self._news, timeout)


def _key(reading: Reading) -> str:
    return meter_key(reading.channel, reading.protocol, reading.meter)
