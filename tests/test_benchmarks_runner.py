"""The benchmark runner as a user runs it: figures with their goals, as a table and as JSON.

Only the cheapest scenario runs here (the store's, about 3 s); what the figures are is the
benchmarks' business, not the tests' (no speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (REPO / "benchmarks" / "__main__.py").exists(),
                                reason="benchmarks/ is not beside this source tree")


def test_the_runner_writes_each_figure_with_its_goal_and_the_machine(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "store", "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["quick"] is True and document["machine"]["cpus"] >= 1
    ingest = document["figures"]["store_ingest_readings_per_s"]
    assert (ingest["scenario"], ingest["unit"], ingest["goal"], ingest["better"]) == (
        "store", "readings/s", 100_000.0, "higher")
    assert ingest["value"] > 0 and ingest["met"] is (ingest["value"] >= ingest["goal"])
    assert "store_ingest_readings_per_s" in result.stdout  # the table, on stdout


def test_an_unknown_scenario_is_refused_by_name():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "warp"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "warp" in result.stderr
