"""Which boundaries a freeze stands for, and how a late value is marked (meterhub.freezes)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from meterhub import freezes

SHANGHAI = ZoneInfo("Asia/Shanghai")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_boundary_is_local_midnight_in_utc() -> None:
    # 2026-10-02 00:00 in Shanghai (UTC+8) is 2026-10-01 16:00 UTC
    assert freezes.boundary_on(datetime(2026, 10, 2).date(), time(0), SHANGHAI) == utc(2026, 10, 1, 16)


def test_first_visit_freezes_only_the_latest_boundary() -> None:
    now = utc(2026, 10, 5, 3)  # 11:00 in Shanghai on the 5th
    assert freezes.daily_boundaries(None, now, time(0), SHANGHAI, limit=62) == [utc(2026, 10, 4, 16)]


def test_boundaries_since_the_last_freeze_oldest_first() -> None:
    last = utc(2026, 10, 1, 16)  # the 2nd's midnight, frozen already
    now = utc(2026, 10, 4, 17)  # just after the 5th's midnight
    assert freezes.daily_boundaries(last, now, time(0), SHANGHAI, limit=62) == [
        utc(2026, 10, 2, 16), utc(2026, 10, 3, 16), utc(2026, 10, 4, 16)]


def test_a_boundary_exactly_now_is_due_and_one_frozen_is_not_again() -> None:
    boundary = utc(2026, 10, 4, 16)
    assert freezes.daily_boundaries(None, boundary, time(0), SHANGHAI, limit=1) == [boundary]
    assert freezes.daily_boundaries(boundary, boundary + timedelta(hours=5), time(0), SHANGHAI, limit=62) == []


def test_backfill_is_limited_to_the_latest_days() -> None:
    last = utc(2026, 1, 1)
    now = utc(2026, 10, 4, 17)
    due = freezes.daily_boundaries(last, now, time(0), SHANGHAI, limit=3)
    assert due == [utc(2026, 10, 2, 16), utc(2026, 10, 3, 16), utc(2026, 10, 4, 16)]


def test_daily_time_other_than_midnight() -> None:
    now = utc(2026, 10, 5, 0, 30)  # 08:30 local
    assert freezes.daily_boundaries(None, now, time(8, 0), SHANGHAI, limit=1) == [utc(2026, 10, 5, 0)]
    assert freezes.daily_boundaries(None, utc(2026, 10, 4, 23, 30), time(8, 0), SHANGHAI, limit=1) == [
        utc(2026, 10, 4, 0)]


def test_monthly_boundary_is_the_settlement_days_daily_freeze() -> None:
    assert freezes.monthly_boundary(2026, 11, time(0), 1, SHANGHAI) == utc(2026, 10, 31, 16)
    assert freezes.monthly_boundary(2026, 11, time(0), 25, SHANGHAI) == utc(2026, 11, 24, 16)


def test_profile_boundaries_on_the_interval_grid() -> None:
    now = utc(2026, 10, 5, 10, 37, 12)
    assert freezes.profile_boundaries(None, now, 900) == [utc(2026, 10, 5, 10, 30)]
    assert freezes.profile_boundaries(utc(2026, 10, 5, 10), now, 900) == [
        utc(2026, 10, 5, 10, 15), utc(2026, 10, 5, 10, 30)]


def test_without_records_only_the_latest_boundary_is_filled() -> None:
    due = [utc(2026, 10, 2, 16), utc(2026, 10, 3, 16), utc(2026, 10, 4, 16)]
    assert freezes.split_missed(due) == (due[:2], due[2])
    assert freezes.split_missed([]) == ([], None)


def test_a_record_stands_for_the_boundary_its_meter_clock_froze_at() -> None:
    wanted = [utc(2026, 10, 2, 16), utc(2026, 10, 3, 16)]
    # the meter froze at its own midnight of the 4th, 2 minutes fast
    assert freezes.record_boundary(datetime(2026, 10, 4, 0, 2), wanted, SHANGHAI) == utc(2026, 10, 3, 16)
    # a record of a day nobody wants
    assert freezes.record_boundary(datetime(2026, 10, 1, 0, 0), wanted, SHANGHAI) is None
    # a clock an hour off is not trusted to stand for the boundary
    assert freezes.record_boundary(datetime(2026, 10, 4, 1, 0), wanted, SHANGHAI) is None


def test_lateness_words() -> None:
    boundary = utc(2026, 10, 4, 16)
    assert freezes.lateness(boundary, boundary + timedelta(minutes=14)) == ""
    assert freezes.lateness(boundary, boundary + timedelta(hours=5, minutes=12)) == "read 5 h 12 min after the boundary"
    assert freezes.lateness(boundary, boundary + timedelta(days=2, minutes=3)) == "read 2 d 3 min after the boundary"
    assert freezes.lateness(boundary, boundary + timedelta(hours=3)) == "read 3 h after the boundary"


# --- the machine's zone, with its daylight-saving rules -----------------------------------


@pytest.fixture
def machine_zone(monkeypatch):
    """Set the machine's zone (TZ) for local_zone(""); the run's own zone afterwards."""
    import os
    import time as clock

    original = os.environ.get("TZ")

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        clock.tzset()

    yield set_zone
    if original is None:
        monkeypatch.delenv("TZ", raising=False)
    else:
        monkeypatch.setenv("TZ", original)
    clock.tzset()


def test_the_machines_zone_keeps_its_daylight_saving_rules(machine_zone) -> None:
    """A site without ``timezone:`` in Berlin: the freeze before the spring change is at
    local midnight, 23:00 UTC, not 22:00 as today's fixed summer offset would put it."""
    from meterhub.model import local_zone

    machine_zone("Europe/Berlin")
    zone = local_zone("")
    assert freezes.boundary_on(date(2026, 3, 28), time(0, 0), zone) == datetime(2026, 3, 27, 23, 0, tzinfo=UTC)
    assert freezes.boundary_on(date(2026, 3, 30), time(0, 0), zone) == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)


def test_a_posix_zone_without_a_name_is_its_offset(machine_zone) -> None:
    from meterhub.model import local_zone

    machine_zone("CST-8")
    assert local_zone("").utcoffset(datetime(2026, 12, 3)) == timedelta(hours=8)
