"""meterhub.testing.clear_of_midnight: a test's rounds never straddle midnight."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from meterhub.testing import clear_of_midnight


def test_far_from_midnight_it_is_today_at_once() -> None:
    times = iter([datetime(2026, 12, 3, 12, 0), datetime(2026, 12, 3, 12, 0)])
    assert clear_of_midnight(lambda: next(times)) == date(2026, 12, 3)


def test_just_before_midnight_it_waits_for_the_new_day(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("meterhub.testing.clock.time.sleep", slept.append)
    times = iter([datetime(2026, 12, 31, 23, 59, 30), datetime(2027, 1, 1, 0, 0, 1)])
    assert clear_of_midnight(lambda: next(times), timedelta(minutes=1)) == date(2027, 1, 1)
    assert slept == [31.0]
