"""What a benchmark scenario reports: named figures, each against its goal.

A scenario is a function ``run(quick: bool) -> list[Figure]``; ``quick`` asks for fewer
repetitions (the whole quick set must stay under two minutes on a 2-core machine).
Figures are ratios where a ratio says more than a time (the machines we measure on are
shared and noisy: two things timed in one run drift together).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import attrs


@attrs.frozen
class Figure:
    """One measured number: ``name`` is stable (the JSON key), ``goal`` the number it is held
    to, ``better`` which way is better ("lower" or "higher")."""

    name: str
    value: float
    unit: str
    goal: float | None = None
    better: str = "lower"
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value <= self.goal if self.better == "lower" else self.value >= self.goal

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "goal": self.goal, "better": self.better, "met": self.met,
                "note": self.note}


def best_rate(work: Callable[[], int], *, seconds: float, rounds: int) -> float:
    """Items per second of ``work()`` (which does some and returns how many), the best of
    ``rounds`` runs of about ``seconds`` each: the least disturbed run on a shared machine."""
    rates = []
    for _ in range(rounds):
        done, started = 0, time.perf_counter()
        while True:
            done += work()
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
        rates.append(done / elapsed)
    return max(rates)


def median_time(work: Callable[[], object], *, runs: int) -> float:
    """Median wall seconds of ``runs`` calls of ``work``."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
