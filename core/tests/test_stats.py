"""Read statistics: the numbers a field engineer looks at first."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from meterhub.model import Quality, Reading
from meterhub.stats import ReadStats, StatsBook, meter_key

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def reading(quality: Quality = Quality.OK, *, attempts: int = 1, latency: float | None = None,
            meter: str = "01", channel: str = "bus1", protocol: str = "") -> Reading:
    value = Decimal("1.00") if quality is Quality.OK else None
    return Reading(meter, "1-0:1.8.0", value, "kWh", T0, quality=quality, attempts=attempts, latency=latency,
                   channel=channel, protocol=protocol)


def test_empty_stats_have_no_rates_or_latencies() -> None:
    snap = ReadStats().snapshot()
    assert snap["readings"] == 0
    assert (snap["success_rate"], snap["latency_min"], snap["latency_mean"], snap["latency_max"]) == (None,) * 4


def test_successes_and_failures_by_quality() -> None:
    stats = ReadStats()
    for r in (reading(), reading(), reading(Quality.TIMEOUT, attempts=3), reading(Quality.METER_ERROR),
              reading(Quality.TIMEOUT, attempts=3)):
        stats.record(r)
    snap = stats.snapshot()
    assert snap["successes"] == 2
    assert snap["failures"] == {"meter_error": 1, "timeout": 2}
    assert snap["failed"] == 3
    assert snap["success_rate"] == pytest.approx(0.4)


def test_transactions_and_retries_count_every_attempt() -> None:
    stats = ReadStats()
    for attempts in (1, 3, 2):
        stats.record(reading(attempts=attempts))
    assert (stats.transactions, stats.retries) == (6, 3)


def test_backed_off_readings_are_counted_apart_and_not_in_the_rate() -> None:
    stats = ReadStats()
    stats.record(reading())
    stats.record(reading(Quality.BACKED_OFF, attempts=0))
    stats.record(reading(Quality.BACKED_OFF, attempts=0))
    snap = stats.snapshot()
    assert (snap["readings"], snap["tried"], snap["backed_off"], snap["transactions"]) == (3, 1, 2, 1)
    assert snap["failures"] == {}
    assert snap["success_rate"] == 1.0


def test_latency_min_mean_max() -> None:
    stats = ReadStats()
    for latency in (0.2, 0.1, 0.6):
        stats.record(reading(latency=latency))
    stats.record(reading(Quality.TIMEOUT, latency=None))
    assert stats.latency_min == pytest.approx(0.1)
    assert stats.latency_mean == pytest.approx(0.3)
    assert stats.latency_max == pytest.approx(0.6)


def test_snapshot_is_json_able() -> None:
    stats = ReadStats()
    stats.record(reading(latency=0.05))
    stats.record(reading(Quality.CHECKSUM_ERROR, attempts=3))
    assert json.loads(json.dumps(stats.snapshot())) == stats.snapshot()


def test_meter_key_names_the_channel_since_addresses_repeat_across_buses() -> None:
    assert meter_key(reading(meter="1", channel="bus1")) != meter_key(reading(meter="1", channel="bus2"))


def test_meter_key_names_the_protocol_since_addresses_repeat_on_a_mixed_bus() -> None:
    modbus = reading(meter="1", channel="bus2", protocol="modbus")
    mbus = reading(meter="1", channel="bus2", protocol="mbus")
    assert (meter_key(modbus), meter_key(mbus)) == ("bus2/modbus:1", "bus2/mbus:1")


def test_book_keeps_meters_and_channels_apart() -> None:
    book = StatsBook()
    book.record(reading(meter="01", channel="bus1"))
    book.record(reading(Quality.TIMEOUT, meter="02", channel="bus1"))
    book.record(reading(meter="01", channel="bus2"))
    snap = book.snapshot()
    assert sorted(snap["meters"]) == ["bus1/01", "bus1/02", "bus2/01"]
    assert snap["channels"]["bus1"]["readings"] == 2
    assert snap["channels"]["bus1"]["failures"] == {"timeout": 1}
    assert snap["channels"]["bus2"]["successes"] == 1
