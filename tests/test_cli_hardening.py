"""Issue 7, hardening of the command line as scripts and field engineers use it: export
filters and times, site files of any size, output shapes and exit statuses scripts can rely
on, values without exponents, and scans that say they are alive."""

from __future__ import annotations

import csv
import io
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from meterhub.config import POINT_RANGE, load_site
from meterhub.model import Reading
from meterhub.plugins import get_plugins
from meterhub.simsite import MeterSpec, SimBus, site_text, start_bus
from meterhub.store import open_store
from system_helpers import assert_no_traceback, meterhub, parse_json, write_site

T0 = datetime(2026, 12, 2, 9, 0, 0, tzinfo=timezone.utc)
#: POSIX spelling of UTC+8 (Beijing), so local-time tests need no tz database
BEIJING_TZ = "CST-8"


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- item 7: export --since ------------------------------------------------------------------------


@pytest.fixture
def hourly_db(tmp_path: Path) -> Path:
    """Readings of one meter every hour from 2026-12-01T12:00Z to 2026-12-02T12:00Z."""
    db = tmp_path / "hourly.db"
    with open_store(f"sqlite:///{db}") as store:
        store.add_readings([
            Reading(meter="000000000001", quantity="1-0:1.8.0", value=Decimal(100 + h), unit="kWh",
                    timestamp=T0 - timedelta(hours=21) + timedelta(hours=h), channel="bus1", protocol="dlt645")
            for h in range(25)
        ])
    return db


def _exported_times(result: subprocess.CompletedProcess[str]) -> list[datetime]:
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    return [datetime.fromisoformat(row["timestamp"]) for row in parse_json(result.stdout)]


def test_export_since_a_date_starts_at_local_midnight(hourly_db):
    result = meterhub("export", "--db", str(hourly_db), "--format", "json", "--since", "2026-12-02",
                      env={"TZ": BEIJING_TZ})
    times = _exported_times(result)
    assert times[0] == datetime(2026, 12, 1, 16, 0, tzinfo=timezone.utc)  # 00:00 in Beijing
    assert times[-1] == datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


def test_export_since_a_naive_time_is_local_time(hourly_db):
    result = meterhub("export", "--db", str(hourly_db), "--format", "json", "--since", "2026-12-02T17:22:20",
                      env={"TZ": BEIJING_TZ})
    assert _exported_times(result)[0] == datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc)  # first after 09:22:20Z


def test_export_since_an_aware_time_keeps_its_offset(hourly_db):
    result = meterhub("export", "--db", str(hourly_db), "--format", "csv", "--since", "2026-12-02T05:00:00-05:00")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.returncode == 0, result.stderr
    assert [datetime.fromisoformat(r["timestamp"]) for r in rows] == [
        datetime(2026, 12, 2, 10, 0, tzinfo=timezone.utc), datetime(2026, 12, 2, 11, 0, tzinfo=timezone.utc),
        datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)]


@pytest.mark.parametrize("since", ["yesterday", "2026-13-02", "0001-01-01T00:00:00+08:00"])
def test_export_since_nonsense_is_one_line_and_exit_2(hourly_db, since):
    result = meterhub("export", "--db", str(hourly_db), "--format", "json", "--since", since)
    assert result.returncode == 2
    assert "--since" in _one_line(result)
    assert result.stdout == ""


def test_export_help_says_naive_times_are_local():
    result = meterhub("export", "--help")
    assert "local time" in " ".join(result.stdout.split())


# --- item 7: export --meter, --protocol, --channel -------------------------------------------------


@pytest.fixture
def shared_address_db(tmp_path: Path) -> Path:
    """Modbus unit 1 and M-Bus primary address 1 on bus1, Modbus unit 1 on bus2."""
    db = tmp_path / "shared.db"
    meters = [("bus1", "modbus", "230.1"), ("bus1", "mbus", "12.5"), ("bus2", "modbus", "229.9")]
    with open_store(f"sqlite:///{db}") as store:
        store.add_readings([
            Reading(meter="1", quantity="1-0:32.7.0", value=Decimal(v), unit="V", timestamp=T0, channel=ch, protocol=p)
            for ch, p, v in meters
        ])
    return db


def _export(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return meterhub("export", "--db", str(db), "--format", "json", *args)


def _keys(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [f"{r['channel']}/{r['protocol']}:{r['meter']}" for r in parse_json(result.stdout)]


def test_a_bare_address_of_several_meters_is_refused_with_the_candidates(shared_address_db):
    result = _export(shared_address_db, "--meter", "1")
    assert result.returncode == 2
    line = _one_line(result)
    assert "bus1/mbus:1" in line and "bus1/modbus:1" in line and "bus2/modbus:1" in line
    assert result.stdout == ""


def test_a_meter_is_named_by_protocol_or_channel_and_protocol(shared_address_db):
    assert _keys(_export(shared_address_db, "--meter", "mbus:1")) == ["bus1/mbus:1"]
    assert _keys(_export(shared_address_db, "--meter", "bus2/modbus:1")) == ["bus2/modbus:1"]
    narrowed = _export(shared_address_db, "--meter", "1", "--protocol", "modbus", "--channel", "bus1")
    assert _keys(narrowed) == ["bus1/modbus:1"]
    assert _export(shared_address_db, "--meter", "modbus:1").returncode == 2  # unit 1 on two buses


def test_protocol_and_channel_filter_without_a_meter(shared_address_db):
    assert _keys(_export(shared_address_db, "--protocol", "modbus")) == ["bus1/modbus:1", "bus2/modbus:1"]
    assert _keys(_export(shared_address_db, "--channel", "bus1")) == ["bus1/modbus:1", "bus1/mbus:1"]


@pytest.fixture(scope="module")
def modbus_and_mbus_unit_1() -> Iterator[SimBus]:
    bus = start_bus(get_plugins().simulators(), [MeterSpec("modbus", 1), MeterSpec("mbus", 1)], seed=5, baudrate=9600)
    yield bus
    bus.stop()


def test_export_after_reading_a_mixed_bus_does_not_mix_modbus_1_and_mbus_1(modbus_and_mbus_unit_1, tmp_path):
    assert [e["address"] for e in modbus_and_mbus_unit_1.entries] == ["1", "1"]
    site = tmp_path / "mixed.yaml"
    db = tmp_path / "mixed.db"
    site.write_text(site_text({"bus1": modbus_and_mbus_unit_1}, store=f"sqlite:///{db}"))
    assert meterhub("run", str(site), "--once", "--json").returncode == 0
    assert _export(db, "--meter", "1").returncode == 2
    modbus = parse_json(_export(db, "--meter", "modbus:1").stdout)
    mbus = parse_json(_export(db, "--meter", "bus1/mbus:1").stdout)
    assert modbus and {r["protocol"] for r in modbus} == {"modbus"}
    assert mbus and {r["protocol"] for r in mbus} == {"mbus"}


# --- item 9: a generated site file always loads -------------------------------------------------


def test_sim_bus_site_file_for_2048_meters_loads(tmp_path):
    site = tmp_path / "big.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "meterhub.cli", "sim", "bus", "--meters", "dlt645=2048",
                             "--site", str(site)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip().startswith("/dev/")
        text = site.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    plugins = get_plugins()
    loaded = load_site(site, drivers=plugins.meter_drivers(), transports=plugins.transports())
    assert len(loaded.meters) == 2048
    points = [m.point for m in loaded.meters]
    assert points[:POINT_RANGE[1]] == list(range(1, POINT_RANGE[1] + 1))
    assert points[POINT_RANGE[1]:] == [None] * (2048 - POINT_RANGE[1])
    assert "the other 8 have none" in text  # the file says why the last meters have no point


# --- item 11a: read --json has one shape per command line ------------------------------------------


def _read(port: str, address: str, *quantities: str, json: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["read", "--port", port, "--baudrate", "9600", "--protocol", "dlt645", "--address", address]
    for q in quantities:
        args += ["--quantity", q]
    return meterhub(*args, *(["--json"] if json else []))


def test_read_json_of_several_quantities_is_a_list_in_the_order_asked(sim_bus):
    result = _read(sim_bus.port, "000000000001", "voltage_l1", "energy_import")
    assert result.returncode == 0, result.stderr
    rows = parse_json(result.stdout)
    assert [(r["quantity"], r["quality"]) for r in rows] == [("1-0:32.7.0", "ok"), ("1-0:1.8.0", "ok")]


def test_read_json_shows_a_failed_quantity_with_null_value_and_exits_1(tmp_path):
    from meterhub_rs485.modbus_sim import start_modbus_sim

    nan = [0x7FC0, 0x0000]  # the meter has no value for L2 voltage right now
    bus = start_modbus_sim(1, profiles="eastron-sdm630", overrides={"1-0:52.7.0": nan})
    try:
        result = meterhub("read", "--port", bus.port, "--protocol", "modbus", "--profile", "eastron-sdm630",
                          "--address", "1", "--quantity", "voltage_l1", "--quantity", "voltage_l2",
                          "--quantity", "energy_import", "--json")
    finally:
        bus.stop()
    assert result.returncode == 1
    rows = parse_json(result.stdout)
    assert [(r["quantity"], r["quality"]) for r in rows] == [
        ("1-0:32.7.0", "ok"), ("1-0:52.7.0", "not_supported"), ("1-0:1.8.0", "ok")]
    assert rows[1]["value"] is None and "nan" in rows[1]["detail"]
    assert "1-0:52.7.0" in _one_line(result)


def test_read_json_of_a_silent_meter_is_an_error_object(sim_bus):
    result = _read(sim_bus.port, "000000000042", "energy_import", "voltage_l1")
    assert result.returncode == 1
    error = parse_json(result.stdout)
    assert error["error"] in result.stderr and "000000000042" in error["error"]
    assert (error["meter"], error["protocol"], error["port"], error["quality"]) == (
        "000000000042", "dlt645", sim_bus.port, "timeout")
    assert [(r["quantity"], r["value"]) for r in error["readings"]] == [("1-0:1.8.0", None), ("1-0:32.7.0", None)]


def test_read_json_of_a_missing_port_is_an_error_object_and_one_line():
    result = meterhub("read", "--port", "/dev/ttyUSB97", "--protocol", "dlt645", "--address", "000000000001",
                      "--quantity", "energy_import", "--json")
    assert result.returncode == 1
    error = parse_json(result.stdout)
    assert error["quality"] == "link_error" and "/dev/ttyUSB97" in error["error"]
    assert error["error"] in _one_line(result)


# --- item 11b: run --once with a channel that cannot be opened --------------------------------------


def test_run_once_with_a_missing_port_exits_3_and_stores_link_errors(tmp_path):
    site = write_site(tmp_path / "site.yaml", "/dev/ttyUSB97")
    result = meterhub("run", str(site), "--once", "--json")
    assert result.returncode == 3
    assert {r["quality"] for r in parse_json(result.stdout)} == {"link_error"}
    line = _one_line(result)
    assert "bus1" in line and "/dev/ttyUSB97" in line
    stored = parse_json(meterhub("export", "--db", str(tmp_path / "site.db"), "--format", "json").stdout)
    assert len(stored) == 4 and {r["quality"] for r in stored} == {"link_error"}


def test_run_once_help_documents_the_channel_down_status():
    assert "3 when a channel could not be opened" in " ".join(meterhub("run", "--help").stdout.split())


# --- item 11c: a float register's whole value ------------------------------------------------------


def test_a_float_register_of_230_volts_reads_as_230(tmp_path):
    from meterhub_rs485.modbus_sim import start_modbus_sim

    bus = start_modbus_sim(1, profiles="eastron-sdm630", overrides={"1-0:32.7.0": Decimal("230")})
    try:
        result = meterhub("read", "--port", bus.port, "--protocol", "modbus", "--profile", "eastron-sdm630",
                          "--address", "1", "--quantity", "voltage_l1")
    finally:
        bus.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 1-0:32.7.0 230 V"


def test_export_csv_of_a_stored_exponent_value_has_plain_digits(tmp_path):
    db = tmp_path / "old.db"
    with open_store(f"sqlite:///{db}") as store:  # as an earlier meterhub stored a float register's 230.0
        store.add_readings([Reading(meter="1", quantity="1-0:32.7.0", value=Decimal("2.3E+2"), unit="V",
                                    timestamp=T0, channel="bus1", protocol="modbus")])
    rows = list(csv.DictReader(io.StringIO(meterhub("export", "--db", str(db), "--format", "csv").stdout)))
    assert rows[0]["value"] == "230"
    assert meterhub("export", "--db", str(db), "--format", "json").stdout.count('"value": 230,') == 1


# --- item 11d: failures and back-offs apart ---------------------------------------------------------


def test_run_once_table_header_tells_failed_from_backed_off(tmp_path, sim_bus):
    site = write_site(tmp_path / "site.yaml", sim_bus.port, addresses=("000000000001", "000000000042"))
    result = meterhub("run", str(site), "--once")
    assert result.returncode == 0, result.stderr
    assert "readings (2 ok, 1 failed, 1 backed off)" in result.stdout


def test_run_logs_each_round_with_failed_and_backed_off_apart(tmp_path, sim_bus):
    site = write_site(tmp_path / "site.yaml", sim_bus.port, addresses=("000000000001", "000000000042"))
    proc = subprocess.Popen([sys.executable, "-m", "meterhub.cli", "run", str(site)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        line = ""
        while "round finished" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert line.rstrip().endswith("round finished: 2 ok, 1 failed, 1 backed off"), line


# --- item 12: scan progress on a terminal only -----------------------------------------------------


def _scan_with_stderr_on_a_pty(port: str) -> tuple[int, str, str]:
    """Run ``meterhub scan --json`` with stderr on a pseudo-terminal, as in a user's shell;
    stdout stays a pipe, as in ``meterhub scan --json | jq``."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "meterhub.cli", "scan", "--port", port, "--protocol", "dlt645",
                             "--baudrate", "9600", "--json"], stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
    os.close(slave)
    seen = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the last writer closed the pty
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return proc.returncode, out.decode(), seen.decode(errors="replace")


@pytest.fixture
def one_meter() -> Iterator[str]:
    """A point-to-point line: one simulated DL/T 645 meter at 9600 Bd; yields its port."""
    from meterhub.protocols.dlt645_sim import start_dlt645_sim

    bus = start_dlt645_sim(1, baudrate=9600, first_address="000000004711")
    yield bus.port
    bus.stop()


def test_scan_shows_progress_on_a_terminal_and_keeps_json_stdout_clean(one_meter):
    code, out, err = _scan_with_stderr_on_a_pty(one_meter)
    assert code == 0, err
    assert f"scanning {one_meter} (dlt645)" in err and "1 query sent, 1 reply" in err
    assert parse_json(out) == ["000000004711"]


def test_scan_prints_no_progress_when_stderr_is_not_a_terminal(one_meter):
    result = meterhub("scan", "--port", one_meter, "--protocol", "dlt645", "--baudrate", "9600", "--json")
    assert result.returncode == 0, result.stderr
    assert parse_json(result.stdout) == ["000000004711"]
    assert "quer" not in result.stderr and "\x1b[" not in result.stderr
