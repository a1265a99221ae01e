"""``meterhub bench check``: each instrument with its identity and self-test, pass or fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHES = Path(__file__).resolve().parents[1] / "benches"


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meterhub.cli", "bench", "check", *args],
                          capture_output=True, text=True, timeout=120)


def test_every_instrument_of_the_virtual_bench_passes_its_self_test():
    result = _check(str(BENCHES / "virtual.yaml"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    found = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(found) == {"adapter-a", "adapter-b", "adapter-c", "adapter-d", "pulsegen"}
    assert all(r["ok"] for r in found.values())
    assert len(found["pulsegen"]["identity"].split(",")) == 4
    assert any("burst" in d and "exactly" in d for d in found["pulsegen"]["details"])
    assert any("intact" in d for d in found["adapter-b"]["details"])  # heard adapter-a across the pair


def test_the_lab_example_runs_virtualised_with_one_switch():
    result = _check(str(BENCHES / "lab-example.yaml"), "--virtual")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 5 and "FAIL" not in result.stdout


def test_a_real_bench_without_its_hardware_fails_per_instrument_without_a_traceback(tmp_path):
    bench = tmp_path / "lab.yaml"
    bench.write_text(
        "instruments:\n"
        "  adapter-a: {type: rs485-adapter, resource: 'ASRL/dev/ttyUSB97::INSTR'}\n"
        "  pulsegen: {type: pulse-generator, resource: 'TCPIP::127.0.0.1::9::SOCKET'}\n"
    )
    result = _check(str(bench))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(lines) == 2 and all(line.startswith("FAIL") for line in lines)
    assert "/dev/ttyUSB97" in result.stdout


def test_a_bad_bench_file_is_refused_with_file_line_and_key(tmp_path):
    bench = tmp_path / "bad.yaml"
    bench.write_text("instruments:\n  a: {type: oscilloscope, resource: x}\n")
    result = _check(str(bench))
    assert result.returncode == 2
    assert f"{bench}:2: instruments.a.type: unknown instrument type 'oscilloscope'" in result.stderr
