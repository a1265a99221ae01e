"""``meterhub events``: stored events and alarms, oldest first, filtered by kind, meter,
severity and time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from .. import jsonout
from ..model import meter_key
from .common import EXIT_USAGE, Failure, _user_errors, open_existing_store
from .export import MeterFilter, parse_since

if TYPE_CHECKING:
    from ..model import Event

#: Severities from the least to the most serious: ``--severity`` keeps its own and above.
SEVERITIES = ("info", "warning", "alarm")

#: What the text line shows of one value of an event's data, and of all of it.
VALUE_WIDTH = 40
DATA_WIDTH = 120


@click.command("events")
@click.option("--db", "db", default="meterhub.db", show_default=True,
              help="The store: a SQLite file written by meterhub, or its URL (sqlite:///FILE, postgresql://...).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only events of this kind (offline, outbox_overflow, ...); give it again for several.")
@click.option("--meter", default=None, metavar="[CHANNEL/][PROTOCOL:]ADDRESS",
              help="Only events of this meter: its address (every meter that has it), PROTOCOL:ADDRESS or "
                   "CHANNEL/PROTOCOL:ADDRESS, as events name their source.")
@click.option("--severity", default=None, type=click.Choice(SEVERITIES),
              help="Only events at least this serious (warning: warnings and alarms).")
@click.option("--since", default=None, metavar="TIME",
              help="Only events at or after TIME: a date (2026-12-02, from midnight), an ISO time (2026-12-02T17:22:20) "
                   "in local time unless it carries an offset (+08:00, Z), or a time ago (24h, 7d, 30m).")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only the newest N of the events that match (still listed oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def events_cmd(db: str, kinds: Sequence[str], meter: str | None, severity: str | None, since: str | None,
               limit: int | None, as_json: bool) -> None:
    """Stored events and alarms: what happened to which meter, when, and how bad.

    Oldest first, one line each: local time, severity, kind, source and the event's data.
    With --json, a list of objects with the keys kind, source, timestamp, severity and data.
    """
    since_dt = _since(since) if since is not None else None
    wanted = MeterFilter.parse(meter)
    # a meter named in full is an event source the store can filter on
    source = meter_key(wanted.channel, wanted.protocol, wanted.address) if wanted.address and wanted.protocol and wanted.channel else None
    with open_existing_store(db) as store, _user_errors():
        found: list[Event] = []
        for kind in dict.fromkeys(kinds) or [None]:
            found.extend(store.events(kind=kind, source=source, since=since_dt))
        events = [e for e in found if _at_least(e, severity) and _of_meter(e, wanted)]
        if len(kinds) > 1:
            events.sort(key=lambda e: e.timestamp)  # stable: each kind's own order is kept
        recorded = bool(events) or bool(store.events(limit=1))
    if limit is not None:
        events = events[-limit:]
    if not events:
        click.echo(f"no event in {db} matches these filters" if recorded else f"no events in {db}", err=True)
    if as_json:
        click.echo(jsonout.dumps([jsonout.event_to_dict(e) for e in events], indent=2))
    else:
        for event in events:
            click.echo(event_line(event))


def _since(text: str) -> datetime:
    """``--since``: a time ago (``24h``, ``7d``: a duration as the site file writes one) or
    what :func:`parse_since` takes."""
    from datetime import UTC, timedelta

    from ..config import parse_duration

    stripped = text.strip()
    if stripped and stripped[0].isdigit() and stripped[-1].isalpha() and "-" not in stripped and ":" not in stripped:
        try:
            seconds = parse_duration(stripped)
        except ValueError:
            pass
        else:
            return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        return parse_since(text)
    except Failure:
        raise Failure(f"--since {text!r}: expected a date or ISO time (2026-12-02, 2026-12-02T17:22:20 local, "
                      "2026-12-02T17:22:20+08:00) or a time ago (30m, 24h, 7d)", EXIT_USAGE) from None


def _at_least(event: Event, severity: str | None) -> bool:
    if severity is None:
        return True
    rank = SEVERITIES.index(event.severity) if event.severity in SEVERITIES else 0
    return rank >= SEVERITIES.index(severity)


def _of_meter(event: Event, wanted: MeterFilter) -> bool:
    """Whether an event is about the meter ``--meter`` names: its source is the meter's key
    (``channel/protocol:address``), or its data names the meter's address."""
    if wanted.address is None:
        return True
    channel, slash, rest = event.source.rpartition("/")
    protocol, colon, address = rest.rpartition(":")
    named = event.data.get("meter")
    if str(named if named is not None else address) != wanted.address:
        return False
    if not colon:  # a source that is no meter key says nothing of protocol or channel
        return wanted.protocol is None and wanted.channel is None
    return (wanted.protocol is None or protocol == wanted.protocol) and (
        wanted.channel is None or (channel if slash else "") == wanted.channel)


def event_line(event: Event) -> str:
    """One event as a line for people: local time, severity, kind, source, its data."""
    when = f"{event.timestamp.astimezone():%Y-%m-%d %H:%M:%S}"
    data = _data_text(event.data)
    return f"{when}  {event.severity:<7}  {event.kind}  {event.source}" + (f"  {data}" if data else "")


def _data_text(data: Mapping[str, Any]) -> str:
    parts = [f"{key}={_value_text(value)}" for key, value in data.items()]
    text = " ".join(parts)
    return text if len(text) <= DATA_WIDTH else text[:DATA_WIDTH - 1] + "…"


def _value_text(value: Any) -> str:
    if isinstance(value, Decimal):
        text = jsonout.decimal_text(value)
    elif isinstance(value, str):
        text = value if value and not any(c.isspace() for c in value) else jsonout.dumps(value)
    else:
        text = jsonout.dumps(value)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 1] + "…"
