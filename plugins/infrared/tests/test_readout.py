"""What a field technician runs, against the simulated optical meter on a pseudo-terminal:
``meterhub read --transport infrared`` (IEC 62056-21, and DL/T 645 at 1200 8E1),
``meterhub ir readout``, the faults, and a site round reading meters over infrared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from meterhub.protocols.dlt645_sim import start_dlt645_sim
from meterhub_infrared.sim import OpticalMeter


def meterhub(*args: str, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "meterhub.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def value(meter: OpticalMeter, obis: str) -> Decimal:
    return Decimal(meter.register(obis)[0])


def test_read_one_quantity_through_the_probe_with_the_baud_switch():
    with OpticalMeter(baud_char="5") as meter:
        before = value(meter, "1.8.0")
        result = meterhub("read", "--transport", "infrared", "--port", meter.path, "--protocol", "iec62056-21",
                          "--quantity", "1-0:1.8.0", "--json")
        after = value(meter, "1.8.0")
        assert result.returncode == 0, result.stderr
        reading = json.loads(result.stdout, parse_float=Decimal)
        assert reading["quantity"] == "1-0:1.8.0" and reading["unit"] == "kWh" and reading["quality"] == "ok"
        assert before <= reading["value"] <= after
        assert meter.sessions >= 1


def test_the_whole_readout_as_json():
    with OpticalMeter(baud_char="4") as meter:
        result = meterhub("ir", "readout", "--port", meter.path, "--json")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout, parse_float=Decimal)
        lines = meter.readout_lines()
    by_quantity = {row["quantity"]: row for row in rows}
    assert len(rows) >= 8
    assert {"1-0:1.8.0", "1-0:32.7.0"} <= set(by_quantity)
    assert by_quantity["1-0:32.7.0"]["unit"] == "V"
    assert all(set(row) <= {"quantity", "value", "unit", "timestamp"} for row in rows)
    assert any("timestamp" in row for row in rows)  # the max-demand line carries its time
    assert len(lines) == len(rows)


def test_dlt645_over_infrared_at_1200_8e1_with_an_echoing_probe():
    with start_dlt645_sim(2, baudrate=1200, echo=True) as bus:
        address = bus.devices[1].address
        before = bus.devices[1].energy()
        result = meterhub("read", "--transport", "infrared", "--port", bus.port, "--protocol", "dlt645",
                          "--baudrate", "1200", "--parity", "E", "--address", address, "--quantity", "energy_import",
                          "--json")
        assert result.returncode == 0, result.stderr
        reading = json.loads(result.stdout, parse_float=Decimal)
        assert reading["meter"] == address and before <= reading["value"] <= bus.devices[1].energy()


@pytest.mark.parametrize(("fault", "quality"), [("bad_bcc", "checksum_error"), ("garbled_identification", None),
                                                 ("no_answer_at_new_baud", "timeout"), ("silent", "timeout")])
def test_a_faulty_meter_gives_a_clear_error_and_no_value(fault, quality):
    with OpticalMeter() as meter:
        setattr(meter, fault, True)
        result = meterhub("read", "--transport", "infrared", "--port", meter.path, "--protocol", "iec62056-21",
                          "--quantity", "1-0:1.8.0", "--json", "--retries", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    out = json.loads(result.stdout)
    reading = out if "error" not in out else out["readings"][0]
    assert reading["value"] is None
    if quality:
        assert reading["quality"] == quality
    assert meter.path in result.stderr or "meter" in result.stderr


def test_a_site_reads_meters_over_infrared_in_a_round(tmp_path):
    with OpticalMeter(baud_char="5", address="12345678") as optical, start_dlt645_sim(1, baudrate=1200, echo=True) as bus:
        site = tmp_path / "site.yaml"
        site.write_text(
            "channels:\n"
            f"  probe1: {{transport: infrared, port: {optical.path}}}\n"
            f"  probe2: {{transport: infrared, port: {bus.port}}}\n"
            "meters:\n"
            '  - {address: "12345678", channel: probe1, protocol: iec62056-21, quantities: [energy_import, voltage_l1]}\n'
            f'  - {{address: "{bus.devices[0].address}", channel: probe2, protocol: dlt645, quantities: [energy_import]}}\n'
            "store: sqlite:///ir.db\n",
            encoding="utf-8",
        )
        result = meterhub("run", str(site), "--once", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    exported = json.loads(meterhub("export", "--db", str(tmp_path / "ir.db"), "--format", "json").stdout)
    assert len(exported) == 3 and all(r["quality"] == "ok" for r in exported)
    assert optical.sessions == 1  # one readout served both quantities


@pytest.mark.parametrize(("mode", "char"), [("B", "E"), ("A", "J")])
def test_mode_b_and_mode_a_meters_are_read_out_too(mode, char):
    with OpticalMeter(mode=mode, baud_char=char) as meter:
        before = value(meter, "1.8.0")
        result = meterhub("ir", "readout", "--port", meter.path, "--json")
        after = value(meter, "1.8.0")
    assert result.returncode == 0, result.stderr
    rows = {row["quantity"]: row for row in json.loads(result.stdout, parse_float=Decimal)}
    assert before <= rows["1-0:1.8.0"]["value"] <= after


def test_a_battery_meter_is_woken_up_first():
    with OpticalMeter() as meter:
        result = meterhub("ir", "readout", "--port", meter.path, "--wake-up", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)


def test_ir_sim_prints_its_port_serves_a_readout_and_stops_on_a_signal():
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "meterhub.cli", "ir", "sim", "--baud-char", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        result = meterhub("ir", "readout", "--port", port, "--json")
        assert result.returncode == 0, result.stderr
        assert any(row["quantity"] == "1-0:1.8.0" for row in json.loads(result.stdout))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
