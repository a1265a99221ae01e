"""What the command line shows, function by function: values without exponents, round
counts that tell failures from back-offs, scan progress from the wire trace, --since and
--meter as the user writes them."""

from __future__ import annotations

import io
import os
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from rich.console import Console

from meterhub import jsonout
from meterhub.channels.halfduplex import WireRecord
from meterhub.cli import EXIT_USAGE, Failure, MeterFilter, ScanProgress, _csv_cell, _print_report, _round_line, parse_since
from meterhub.model import Quality, Reading, Schedule, Site
from meterhub.runtime import RoundReport

T0 = datetime(2026, 12, 2, 9, 22, 20, tzinfo=timezone.utc)


def _reading(meter: str, quality: Quality = Quality.OK, value: Decimal | None = Decimal("230.1"),
             quantity: str = "1-0:32.7.0") -> Reading:
    return Reading(meter=meter, quantity=quantity, value=value if quality is Quality.OK else None, unit="V",
                   timestamp=T0, quality=quality, channel="bus1", protocol="dlt645", attempts=1)


def _render(report: RoundReport) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    _print_report(report, Site(channels={}, meters=(), schedule=Schedule()), console=console)
    return console.file.getvalue()


# --- values: every digit, no exponent ----------------------------------------------------------


@pytest.mark.parametrize(("value", "shown"), [("2.3E+2", "230"), ("230.10", "230.10"), ("1E-7", "0.0000001"),
                                              ("-5E+1", "-50"), ("0.10", "0.10")])
def test_a_decimal_is_shown_with_its_digits_and_no_exponent(value, shown):
    assert jsonout.decimal_text(Decimal(value)) == shown
    assert _csv_cell(Decimal(value)) == shown
    assert jsonout.dumps({"value": Decimal(value)}) == f'{{"value": {shown}}}'


def test_the_round_table_shows_a_float_registers_value_without_an_exponent():
    report = RoundReport(started=T0, finished=T0, readings=[_reading("1", value=Decimal("2.3E+2"))])
    text = _render(report)
    assert " 230 " in text and "E+" not in text


# --- round counts --------------------------------------------------------------------------------


def test_the_round_table_tells_failures_from_back_offs():
    readings = [_reading("000000000001"), _reading("000000000002", Quality.TIMEOUT)]
    readings += [_reading("000000000002", Quality.BACKED_OFF, quantity=f"1-0:1.8.{i}") for i in range(11)]
    report = RoundReport(started=T0, finished=T0, readings=readings)
    assert report.failed_count == 12  # the runtime counts back-offs as failed; the header must not
    assert "readings (1 ok, 1 failed, 11 backed off)" in _render(report)


def test_the_run_log_line_tells_failures_from_back_offs():
    summary = {"readings": 110, "ok": 98, "failed": 12, "backed_off": 11, "meters": 10, "seconds": 3.2}
    assert _round_line(summary) == "round finished: 98 ok, 1 failed, 11 backed off"
    assert _round_line({}) == "round finished"


# --- scan progress ---------------------------------------------------------------------------------


def _wire(*directions: str) -> list[WireRecord]:
    return [WireRecord(d, b"\x68\x16", time.monotonic()) for d in directions]


def test_scan_progress_counts_queries_and_replies_from_the_wire_trace():
    progress = ScanProgress("scanning /dev/null (modbus)", enabled=False)
    with progress:
        for record in _wire("tx", "tx", "rx", "tx"):
            progress.record(record)
    assert (progress.queries, progress.replies) == (3, 1)
    assert progress.status() == "3 queries sent, 1 reply"


def test_scan_progress_draws_nothing_unless_enabled():
    out = io.StringIO()
    with ScanProgress("scanning", enabled=False, console=Console(file=out, force_terminal=True)) as progress:
        for record in _wire("tx", "rx"):
            progress.record(record)
    assert out.getvalue() == ""


def test_scan_progress_draws_its_counts_on_the_console_it_is_given():
    out = io.StringIO()
    with ScanProgress("scanning /dev/pts/9 (dlt645)", enabled=True,
                      console=Console(file=out, force_terminal=True, width=100)) as progress:
        for record in _wire("tx", "rx", "tx"):
            progress.record(record)
    assert "scanning /dev/pts/9 (dlt645)" in out.getvalue()
    assert "2 queries sent, 1 reply" in out.getvalue()


# --- export filters --------------------------------------------------------------------------------


def test_since_takes_a_date_as_local_midnight(monkeypatch):
    original = os.environ.get("TZ")
    monkeypatch.setenv("TZ", "CST-8")  # POSIX for UTC+8 (Beijing), no tz database needed
    time.tzset()
    try:
        assert parse_since("2026-12-02") == datetime(2026, 12, 1, 16, 0, tzinfo=timezone.utc)
        assert parse_since("2026-12-02T17:22:20") == datetime(2026, 12, 2, 9, 22, 20, tzinfo=timezone.utc)
    finally:  # the zone the run started with, for the C library too (monkeypatch restores only the variable)
        if original is None:
            monkeypatch.delenv("TZ")
        else:
            monkeypatch.setenv("TZ", original)
        time.tzset()


def test_since_keeps_an_explicit_offset():
    assert parse_since("2026-12-02T17:22:20+08:00") == datetime(2026, 12, 2, 9, 22, 20, tzinfo=timezone.utc)
    assert parse_since("2026-12-02T09:22:20Z") == datetime(2026, 12, 2, 9, 22, 20, tzinfo=timezone.utc)
    assert parse_since("2026-12-02T09:22:20Z").utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "", "0001-01-01T00:00:00+08:00", "2026-12-02T25:00"])
def test_since_refuses_nonsense_as_a_usage_error(text):
    with pytest.raises(Failure) as caught:
        parse_since(text)
    assert caught.value.exit_code == EXIT_USAGE and "--since" in caught.value.format_message()


@pytest.mark.parametrize(("spelled", "expected"), [
    ("1", MeterFilter("1", None, None, "1")),
    ("modbus:1", MeterFilter("1", "modbus", None, "modbus:1")),
    ("bus1/modbus:1", MeterFilter("1", "modbus", "bus1", "bus1/modbus:1")),
    ("lines/north/mbus:1", MeterFilter("1", "mbus", "lines/north", "lines/north/mbus:1")),
])
def test_a_meter_is_named_as_read_statistics_name_it(spelled, expected):
    assert MeterFilter.parse(spelled) == expected


@pytest.mark.parametrize(("spelled", "options"), [
    ("modbus:", {}), (":1", {}), ("/modbus:1", {}), ("", {}),
    ("modbus:1", {"protocol": "mbus"}), ("bus1/modbus:1", {"channel": "bus2"}),
])
def test_a_meter_named_wrongly_or_contradicted_is_a_usage_error(spelled, options):
    with pytest.raises(Failure) as caught:
        MeterFilter.parse(spelled, **options)
    assert caught.value.exit_code == EXIT_USAGE


def test_a_bare_address_shared_by_several_meters_is_refused_with_the_candidates():
    from meterhub.store import open_store

    with open_store("sqlite:///:memory:") as store:
        store.add_readings([
            Reading(meter="1", quantity="1-0:32.7.0", value=Decimal("230"), unit="V", timestamp=T0,
                    channel="bus1", protocol=protocol)
            for protocol in ("modbus", "mbus")
        ])
        with pytest.raises(Failure, match="bus1/mbus:1, bus1/modbus:1") as caught:
            MeterFilter.parse("1").resolve(store)
        assert caught.value.exit_code == EXIT_USAGE
        assert MeterFilter.parse("modbus:1").resolve(store) == MeterFilter("1", "modbus", "bus1", "modbus:1")
        assert MeterFilter.parse("1", protocol="mbus").resolve(store).protocol == "mbus"
        assert MeterFilter.parse("7").resolve(store) == MeterFilter("7", None, None, "7")  # nothing stored: no rows

