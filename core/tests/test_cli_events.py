"""``meterhub events``: stored events filtered by kind, meter, severity, time and count, as
lines for people and as exact JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from meterhub.cli.events import events_cmd
from meterhub.model import Event
from meterhub.store import open_store

OFFLINE_1 = Event("offline", "bus1/dlt645:000000000001", datetime(2026, 10, 1, 8, 0, tzinfo=UTC), "warning",
                  {"meter": "000000000001", "misses": 3})
REVERSE_2 = Event("reverse_energy", "bus1/dlt645:000000000002", datetime(2026, 10, 2, 8, 0, tzinfo=UTC), "alarm",
                  {"meter": "000000000002", "power": D("-1.250")})
ROUND = Event("round", "runtime", datetime(2026, 10, 3, 8, 0, tzinfo=UTC), "info", {"readings": 10})
OFFLINE_MODBUS_1 = Event("offline", "bus2/modbus:1", datetime(2026, 10, 4, 8, 0, tzinfo=UTC), "warning",
                         {"meter": "1", "reason": "no answer"})
ALL = [OFFLINE_1, REVERSE_2, ROUND, OFFLINE_MODBUS_1]


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "m.db"
    store = open_store("sqlite:///" + str(path))
    try:
        for event in ALL:
            store.add_event(event)
    finally:
        store.close()
    return str(path)


def events(db: str, *args: str) -> Result:
    return CliRunner().invoke(events_cmd, ["--db", db, "--json", *args])


def kinds_and_sources(result: Result) -> list[tuple[str, str]]:
    assert result.exit_code == 0, result.stderr
    return [(e["kind"], e["source"]) for e in json.loads(result.stdout, parse_float=D)]


def pairs(*chosen: Event) -> list[tuple[str, str]]:
    return [(e.kind, e.source) for e in chosen]


def test_every_event_oldest_first_as_json(db: str) -> None:
    result = events(db)
    data = json.loads(result.stdout, parse_float=D)
    assert [e["kind"] for e in data] == ["offline", "reverse_energy", "round", "offline"]
    assert data[1] == {"kind": "reverse_energy", "source": "bus1/dlt645:000000000002",
                       "timestamp": "2026-10-02T08:00:00+00:00", "severity": "alarm",
                       "data": {"meter": "000000000002", "power": "-1.250"}}  # the store keeps Decimals as text


def test_text_is_one_line_per_event_in_local_time(db: str) -> None:
    result = CliRunner().invoke(events_cmd, ["--db", db, "--kind", "reverse_energy"])
    when = datetime(2026, 10, 2, 8, 0, tzinfo=UTC).astimezone()
    assert result.exit_code == 0
    assert result.stdout == (f"{when:%Y-%m-%d %H:%M:%S}  alarm    reverse_energy  bus1/dlt645:000000000002"
                             "  meter=000000000002 power=-1.250\n")


def test_text_quotes_data_with_spaces(db: str) -> None:
    result = CliRunner().invoke(events_cmd, ["--db", db, "--meter", "modbus:1"])
    assert result.stdout.rstrip().endswith('meter=1 reason="no answer"')


def test_kind_is_repeatable(db: str) -> None:
    assert kinds_and_sources(events(db, "--kind", "round", "--kind", "offline")) == pairs(
        OFFLINE_1, ROUND, OFFLINE_MODBUS_1)


@pytest.mark.parametrize(("severity", "kept"), [
    ("info", ALL), ("warning", [OFFLINE_1, REVERSE_2, OFFLINE_MODBUS_1]), ("alarm", [REVERSE_2])])
def test_severity_keeps_that_and_worse(db: str, severity: str, kept: list[Event]) -> None:
    assert kinds_and_sources(events(db, "--severity", severity)) == pairs(*kept)


@pytest.mark.parametrize(("meter", "kept"), [
    ("1", [OFFLINE_MODBUS_1]),  # the address alone: 000000000001 is another meter
    ("000000000001", [OFFLINE_1]),
    ("modbus:1", [OFFLINE_MODBUS_1]),
    ("dlt645:1", []),
    ("bus1/dlt645:000000000002", [REVERSE_2]),
    ("bus2/dlt645:000000000002", []),
])
def test_meter_matches_the_source_and_the_data(db: str, meter: str, kept: list[Event]) -> None:
    assert kinds_and_sources(events(db, "--meter", meter)) == pairs(*kept)


def test_since_a_date_or_an_iso_time(db: str) -> None:
    assert kinds_and_sources(events(db, "--since", "2026-10-03T08:00:00Z")) == pairs(ROUND, OFFLINE_MODBUS_1)


def test_since_a_time_ago(tmp_path: Path, db: str) -> None:
    recent = Event("offline", "bus1/dlt645:000000000003", datetime.now(UTC) - timedelta(hours=1), "warning", {})
    store = open_store("sqlite:///" + db)
    store.add_event(recent)
    store.close()
    assert kinds_and_sources(events(db, "--since", "24h")) == pairs(recent)


def test_limit_keeps_the_newest_still_oldest_first(db: str) -> None:
    assert kinds_and_sources(events(db, "--limit", "2")) == pairs(ROUND, OFFLINE_MODBUS_1)


def test_filters_combine(db: str) -> None:
    assert kinds_and_sources(events(db, "--kind", "offline", "--severity", "warning", "--meter", "1")) == pairs(
        OFFLINE_MODBUS_1)


def test_nothing_matching_is_said_on_stderr_and_json_is_an_empty_list(db: str) -> None:
    result = events(db, "--kind", "tamper")
    assert result.exit_code == 0 and result.stdout == "[]\n"
    assert result.stderr == f"no event in {db} matches these filters\n"


def test_a_bad_since_is_a_usage_error(db: str) -> None:
    result = events(db, "--since", "yesterday")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --since 'yesterday': expected a date or ISO time")
    assert "a time ago (30m, 24h, 7d)" in result.stderr and result.stderr.count("\n") == 1
