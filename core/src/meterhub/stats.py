"""Read statistics per meter and per channel: how hard a bus is working and how well.

A field engineer's first questions about a site are "which meters fail, how often do we
retry, how slow are the answers"; these accumulators answer them from the readings
themselves, across rounds, without touching the store.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .model import Quality, Reading
from .model import meter_key as model_meter_key


class ReadStats:
    """Running totals over the readings of one meter or one channel.

    ``transactions`` counts every request sent (a reading tried three times counts three);
    back-off readings were never tried, so they are counted apart and left out of the
    success rate.
    """

    def __init__(self) -> None:
        self.readings = 0  #: readings recorded, whatever their quality
        self.transactions = 0  #: requests sent, retries included
        self.successes = 0  #: readings with quality OK
        self.retries = 0  #: extra attempts beyond the first
        self.backed_off = 0  #: readings not tried because the meter was backed off
        self.failures: Counter[str] = Counter()  #: failed readings by quality value
        self.latency_min: float | None = None
        self.latency_max: float | None = None
        self._latency_sum = 0.0
        self._latency_count = 0

    def record(self, reading: Reading) -> None:
        """Count one reading."""
        self.readings += 1
        self.transactions += reading.attempts
        self.retries += max(reading.attempts - 1, 0)
        if reading.quality is Quality.OK:
            self.successes += 1
        elif reading.quality is Quality.BACKED_OFF:
            self.backed_off += 1
        else:
            self.failures[Quality(reading.quality).value] += 1
        if reading.latency is not None:
            latency = float(reading.latency)
            self._latency_sum += latency
            self._latency_count += 1
            self.latency_min = latency if self.latency_min is None else min(self.latency_min, latency)
            self.latency_max = latency if self.latency_max is None else max(self.latency_max, latency)

    @property
    def tried(self) -> int:
        """Readings actually attempted (everything but back-off)."""
        return self.readings - self.backed_off

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def success_rate(self) -> float | None:
        """Share of tried readings that succeeded, 0..1; ``None`` before anything was tried."""
        return self.successes / self.tried if self.tried else None

    @property
    def latency_mean(self) -> float | None:
        return self._latency_sum / self._latency_count if self._latency_count else None

    def snapshot(self) -> dict[str, Any]:
        """The numbers as a JSON-able dict (latencies in seconds)."""
        return {
            "readings": self.readings,
            "tried": self.tried,
            "transactions": self.transactions,
            "successes": self.successes,
            "failed": self.failed,
            "failures": dict(sorted(self.failures.items())),
            "backed_off": self.backed_off,
            "retries": self.retries,
            "latency_min": self.latency_min,
            "latency_mean": self.latency_mean,
            "latency_max": self.latency_max,
            "success_rate": self.success_rate,
        }

    def __repr__(self) -> str:
        return f"ReadStats({self.snapshot()!r})"


def meter_key(reading: Reading) -> str:
    """How statistics name a reading's meter: ``channel/protocol:address`` (:func:`meterhub.model.meter_key`)."""
    return model_meter_key(reading.channel, reading.protocol, reading.meter)


def collector_key(reading: Reading) -> str:
    """How statistics name the collector a reading came through: ``channel/collector``,
    or ``channel`` for meters wired straight to it (collector names are per site, but a
    ``channel/`` prefix keeps the grouping readable next to the channel's own)."""
    return f"{reading.channel}/{reading.collector}" if reading.collector else reading.channel


class StatsBook:
    """:class:`ReadStats` for every meter, channel, collector and relay depth seen."""

    def __init__(self) -> None:
        self.meters: dict[str, ReadStats] = {}
        self.channels: dict[str, ReadStats] = {}
        self.collectors: dict[str, ReadStats] = {}  #: by :func:`collector_key`
        self.depths: dict[int, ReadStats] = {}  #: by relays between channel and meter (0 = wired straight)

    def record(self, reading: Reading) -> None:
        """Count a reading against its meter, its channel, its collector and its route's depth."""
        self.meters.setdefault(meter_key(reading), ReadStats()).record(reading)
        self.channels.setdefault(reading.channel, ReadStats()).record(reading)
        self.collectors.setdefault(collector_key(reading), ReadStats()).record(reading)
        self.depths.setdefault(reading.depth, ReadStats()).record(reading)

    def collector_snapshot(self) -> dict[str, dict[str, Any]]:
        return {key: stats.snapshot() for key, stats in sorted(self.collectors.items())}

    def depth_snapshot(self) -> dict[str, dict[str, Any]]:
        """Keyed by the depth as text (JSON object keys are strings)."""
        return {str(depth): stats.snapshot() for depth, stats in sorted(self.depths.items())}

    def meter_snapshot(self) -> dict[str, dict[str, Any]]:
        return {key: stats.snapshot() for key, stats in sorted(self.meters.items())}

    def channel_snapshot(self) -> dict[str, dict[str, Any]]:
        return {key: stats.snapshot() for key, stats in sorted(self.channels.items())}

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{"meters": ..., "channels": ..., "collectors": ..., "depths": ...}``, each
        ``{key: numbers}``, JSON-able."""
        return {"meters": self.meter_snapshot(), "channels": self.channel_snapshot(),
                "collectors": self.collector_snapshot(), "depths": self.depth_snapshot()}
