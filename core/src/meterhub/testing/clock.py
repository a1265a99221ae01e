"""Tests that check what was frozen "today" against the wall clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime, timedelta


def clear_of_midnight(now: Callable[[], datetime], margin: timedelta = timedelta(minutes=2)) -> date:
    """The day ``now()`` (a naive local clock) is in, once it is at least ``margin`` before
    the next midnight (sleeping past midnight when it is not): a test whose rounds freeze
    at midnight and whose checks name today must not have its rounds straddle one (they
    would rightly freeze the new day too)."""
    at = now()
    midnight = datetime.combine(at.date() + timedelta(days=1), datetime.min.time())
    if midnight - at < margin:
        time.sleep((midnight - at).total_seconds() + 1)
    return now().date()
