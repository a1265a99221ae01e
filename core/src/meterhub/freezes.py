"""Freezes: which register values stand for which boundary (sans-I/O: no store, no clock).

A freeze is a register's value at a boundary. The daily freeze is taken at the site's
``freeze.daily`` local time; the monthly freeze is the daily freeze of the settlement day
(the value at the boundary that opens a billing month), so one stored reading serves both.
A frozen value is stored as a :class:`~meterhub.model.Reading` with ``period``
:data:`FROZEN_PERIOD`, ``timestamp`` the boundary and ``data_time`` the instant the value
really belongs to:

* the meter's own freeze record (DL/T 645 05 06 xx NN): ``data_time`` is the record's
  freeze time, the boundary itself, even when read days later (``detail`` then says it was
  back-filled from the meter's record);
* a value the concentrator read after the boundary: ``data_time`` is when it was read.
  Read within :data:`PROMPT` of the boundary it is the concentrator's freeze; later it
  is marked back-filled in ``detail``, with how long after the boundary it was read.

A meter without freeze records that was unreachable over several boundaries cannot have
the older ones filled truthfully (its value at those instants is unknown): only the latest
boundary gets the first value read after it, and the older ones are reported missed
(:func:`split_missed`). Interpolated values are never stored as readings: they would be
bills without a meter's word behind them.

Load-profile points are register values at each ``profile.interval`` boundary, stored with
``period`` :data:`PROFILE_PERIOD` (0) and ``timestamp`` the boundary, from the first value
read at most one interval after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta, tzinfo

#: ``period`` of a daily or monthly frozen value (OBIS F group: the last closed period), as a
#: head-end stores the frozen values its terminals send (gdw1376_1_quantities).
FROZEN_PERIOD = 1
#: ``period`` of a load-profile point: the value at the end of an interval.
PROFILE_PERIOD = 0
#: A value read this soon after its boundary is the concentrator's freeze, not a back-fill.
PROMPT = timedelta(minutes=15)
#: A meter's freeze record stands for a boundary when its time is this close to it: the
#: meter freezes by its own clock, which may be a little off (time sync corrects drift of
#: minutes, not hours).
RECORD_SLACK = timedelta(minutes=30)

#: Registers frozen by default: energy and volume totals that only grow.
FROZEN_BY_DEFAULT = (
    "1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4",
    "1-0:2.8.0", "1-0:2.8.1", "1-0:2.8.2", "1-0:2.8.3", "1-0:2.8.4",
    "8-0:1.0.0", "9-0:1.0.0", "7-0:3.0.0", "6-0:1.0.0",
)  # fmt: skip


def boundary_on(day: date, daily: time, zone: tzinfo) -> datetime:
    """The daily freeze of local ``day`` as an aware UTC instant."""
    return datetime.combine(day, daily, tzinfo=zone).astimezone(UTC)


def daily_boundaries(after: datetime | None, until: datetime, daily: time, zone: tzinfo, *, limit: int) -> list[datetime]:
    """Daily freeze instants in (``after``, ``until``], oldest first, at most the latest
    ``limit`` of them (``after`` None: only the latest one)."""
    local_until = until.astimezone(zone)
    day = local_until.date()
    found: list[datetime] = []
    while len(found) < max(limit, 1):
        at = boundary_on(day, daily, zone)
        if at <= until:
            if after is not None and at <= after:
                break
            found.append(at)
            if after is None:
                break
        day -= timedelta(days=1)
    return sorted(found)


def monthly_boundary(year: int, month: int, daily: time, settlement_day: int, zone: tzinfo) -> datetime:
    """The monthly freeze that opens billing month ``year-month``."""
    return boundary_on(date(year, month, settlement_day), daily, zone)


def profile_boundaries(after: datetime | None, until: datetime, interval: float) -> list[datetime]:
    """Load-profile instants (multiples of ``interval`` seconds since the epoch, UTC, which
    in every zone with whole-quarter-hour offsets are the local quarter hours too) in
    (``after``, ``until``]; ``after`` None: only the latest."""
    step = timedelta(seconds=interval)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    latest = epoch + step * ((until - epoch) // step)
    if after is None:
        return [latest]
    found = []
    at = latest
    while at > after:
        found.append(at)
        at -= step
    return sorted(found)


def split_missed(boundaries: Iterable[datetime]) -> tuple[list[datetime], datetime | None]:
    """For a meter without freeze records: the boundaries that can no longer be filled
    (all but the latest) and the one the first value read now may stand for."""
    ordered = sorted(boundaries)
    if not ordered:
        return [], None
    return ordered[:-1], ordered[-1]


def record_boundary(freeze_time: datetime, wanted: Iterable[datetime], zone: tzinfo) -> datetime | None:
    """The boundary among ``wanted`` that a meter's freeze record taken at ``freeze_time``
    (naive local time by the meter's clock) stands for, or None."""
    at = freeze_time.replace(tzinfo=zone).astimezone(UTC) if freeze_time.tzinfo is None else freeze_time
    best = min(wanted, key=lambda b: abs(b - at), default=None)
    if best is None or abs(best - at) > RECORD_SLACK:
        return None
    return best


def lateness(boundary: datetime, read_at: datetime) -> str:
    """``read 5 h 12 min after the boundary`` (or "" when read promptly)."""
    late = read_at - boundary
    if late <= PROMPT:
        return ""
    minutes = int(late.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes or not (days or hours))
    return f"read {' '.join(parts)} after the boundary"
