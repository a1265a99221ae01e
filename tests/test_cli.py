"""The command line as a user meets it: the demo, a site file, exports and bad input."""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import sys
from decimal import Decimal

from system_helpers import assert_no_traceback, meterhub, parse_json, write_site


def test_demo_reads_stores_and_prints(tmp_path):
    result = meterhub("demo", "--meters", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert (tmp_path / "meterhub.db").exists()
    assert "readings (" in result.stdout and "read statistics per meter" in result.stdout
    exported = meterhub("export", "--db", "meterhub.db", "--format", "json", cwd=tmp_path)
    rows = parse_json(exported.stdout)
    assert {"meter", "quantity", "value", "unit", "timestamp", "quality"} <= set(rows[0])
    by_meter: dict[str, set[str]] = {}
    for row in rows:
        by_meter.setdefault(row["meter"], set()).add(row["quality"])
    # two buses of two meters; the second bus has a noisy meter (still read) and a dead one
    assert by_meter["000000000001"] == {"ok"}
    assert by_meter["000000000003"] == {"ok"}
    assert by_meter["000000000004"] == {"timeout", "backed_off"}


def test_run_once_stores_every_outcome_and_exits_zero(tmp_path, sim_bus):
    site = write_site(tmp_path / "site.yaml", sim_bus.port, addresses=("000000000001", "000000000002", "000000000042"))
    result = meterhub("run", str(site), "--once", "--json")
    assert result.returncode == 0, result.stderr
    readings = parse_json(result.stdout)
    assert [(r["meter"], r["quality"]) for r in readings] == [
        ("000000000001", "ok"), ("000000000001", "ok"),
        ("000000000002", "ok"), ("000000000002", "ok"),
        ("000000000042", "timeout"), ("000000000042", "backed_off"),
    ]
    exported = meterhub("export", "--db", str(tmp_path / "site.db"), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 6
    assert Decimal(rows[0]["value"]) > 0 and rows[0]["unit"] == "kWh"


def test_scan_finds_the_single_meter_of_a_point_to_point_link(tmp_path):
    from meterhub.protocols.dlt645_sim import start_dlt645_sim

    with start_dlt645_sim(1, baudrate=9600, first_address="000000004711"):
        pass  # started and stopped: make sure start/stop is clean before the real one
    bus = start_dlt645_sim(1, baudrate=9600, first_address="000000004711")
    try:
        result = meterhub("scan", "--port", bus.port, "--protocol", "dlt645", "--baudrate", "9600", "--json")
    finally:
        bus.stop()
    assert result.returncode == 0, result.stderr
    assert parse_json(result.stdout) == ["000000004711"]


def test_a_bad_site_file_lists_every_mistake_with_file_line_and_key(tmp_path):
    site = tmp_path / "bad.yaml"
    site.write_text(
        "channels:\n"
        "  bus1: {transport: rs485, port: /dev/ttyUSB0, baudrate: 2401}\n"
        "meters:\n"
        '  - {address: "000000000001", channel: bus1, protocol: dlt646, quantities: [energy_import]}\n'
        '  - {address: "000000000002", channel: bus1, protocol: dlt645, quantities: [enrgy_import]}\n',
        encoding="utf-8",
    )
    result = meterhub("run", str(site), "--once")
    assert result.returncode == 2
    assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert any(f"{site}:2:" in line and "baudrate" in line for line in lines), lines
    assert any(f"{site}:4:" in line and "dlt646" in line for line in lines), lines
    assert any(f"{site}:5:" in line and "enrgy_import" in line for line in lines), lines


def test_a_port_that_does_not_exist_is_one_line_naming_it():
    result = meterhub("read", "--port", "/dev/ttyUSB97", "--protocol", "dlt645", "--address", "000000000001",
                      "--quantity", "energy_import")
    assert result.returncode != 0
    assert_no_traceback(result)
    assert "/dev/ttyUSB97" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unknown_protocol_is_named(sim_bus):
    result = meterhub("read", "--port", sim_bus.port, "--protocol", "dlt999", "--address", "1", "--quantity", "energy_import")
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "dlt999" in result.stderr


def test_an_unknown_quantity_is_named(sim_bus):
    result = meterhub("read", "--port", sim_bus.port, "--protocol", "dlt645", "--address", "000000000001",
                      "--quantity", "1-0:99.99.9")
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "1-0:99.99.9" in result.stderr


def test_json_goes_to_stdout_alone_and_warnings_to_stderr(sim_bus):
    result = meterhub("read", "--port", sim_bus.port, "--parity", "E", "--baudrate", "9600", "--protocol", "dlt645",
                      "--address", "000000000002", "--quantity", "voltage_l1", "--json")
    assert result.returncode == 0, result.stderr
    reading = parse_json(result.stdout)  # stdout parses as JSON: nothing else was printed there
    assert reading["unit"] == "V" and Decimal("180") < reading["value"] < Decimal("260")
    assert "pseudo-terminal" in result.stderr  # the parity warning went to stderr


def test_sim_prints_its_port_and_serves_until_interrupted(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "meterhub.cli", "sim", "dlt645", "--meters", "2", "--baudrate", "9600"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        result = meterhub("read", "--port", port, "--baudrate", "9600", "--protocol", "dlt645",
                          "--address", "000000000002", "--quantity", "energy_import", "--json")
        assert result.returncode == 0, result.stderr
        assert parse_json(result.stdout)["meter"] == "000000000002"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_export_of_a_missing_database_is_a_clear_error(tmp_path):
    result = meterhub("export", "--db", str(tmp_path / "nope.db"), "--format", "json")
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "nope.db" in result.stderr


def test_sim_bus_writes_a_site_file_that_reads_every_simulated_meter(tmp_path):
    site = tmp_path / "sim.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "meterhub.cli", "sim", "bus", "--meters", "dlt645=2",
                             "--meters", "dlt645=1:first_address=000000000099", "--baudrate", "9600",
                             "--fault", "dlt645:000000000002=silence", "--site", str(site)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        text = site.read_text()
        assert port in text
        text = text.replace("sqlite:///meterhub.db", f"sqlite:///{tmp_path / 'sim.db'}")
        site.write_text(text)
        result = meterhub("run", str(site), "--once", "--json")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert result.returncode == 0, result.stderr
    qualities: dict[str, set[str]] = {}
    for r in parse_json(result.stdout):
        qualities.setdefault(r["meter"], set()).add(r["quality"])
    assert qualities["000000000001"] == {"ok"} and qualities["000000000099"] == {"ok"}
    assert qualities["000000000002"] == {"timeout", "backed_off"}


def test_sim_bus_names_an_unknown_simulator():
    result = meterhub("sim", "bus", "--meters", "nosuch=2")
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "nosuch" in result.stderr and "dlt645" in result.stderr
