"""The pytest plugin as a lab engineer meets it: the bench in the report header, skips with
reasons for what a bench lacks, and each test's frames on the wire in a log."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

VIRTUAL = Path(__file__).resolve().parents[1] / "benches" / "virtual.yaml"

SUITE = '''
import pytest

@pytest.mark.hil
def test_reads_through_the_bench(bench, pair):
    from meterhub.protocols import dlt645
    master = bench.adapter(pair.master)
    meter = bench.adapter(pair.meter)
    master.write(dlt645.encode(dlt645.read_address_request()))
    assert meter.read_frame(dlt645.StreamDecoder(), 1.0).function == dlt645.Control.READ_ADDRESS

@pytest.mark.needs("real")
def test_only_on_real_hardware(bench):
    pass

def test_without_a_bench_at_all():
    pass
'''


def test_the_header_shows_the_bench_and_its_identity(pytester):
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("--bench", str(VIRTUAL), "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines([
        "meterhub bench: virtual (virtual) from *virtual.yaml; features: *monitor*pulse*",
        "  adapter-a: virtual port /dev/pts/*",
        "  pulsegen: meterhub,meterhub-pulsegen,virtual,*",
        "*bench virtual lacks real (real hardware)*",
    ])


def test_without_a_bench_the_hil_tests_are_skipped_with_the_way_to_run_them(pytester):
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["meterhub bench: none*", "*needs a bench: run with --bench FILE*"])


def test_each_tests_frames_on_the_wire_are_logged(pytester, tmp_path):
    pytester.makepyfile(test_suite=SUITE)
    logs = tmp_path / "wire"
    result = pytester.runpytest_subprocess("--bench", str(VIRTUAL), "--bench-log", str(logs), "-p", "no:cacheprovider",
                                           "-k", "reads_through")
    result.assert_outcomes(passed=1)
    (log,) = logs.glob("*reads_through_the_bench*.log")
    lines = log.read_text().splitlines()
    assert any("adapter-a tx" in line and "68 aa aa aa aa aa aa 68 13 00" in line for line in lines), lines
    assert any("adapter-b rx" in line for line in lines), lines


def test_a_bad_bench_file_stops_the_run_with_its_mistakes(pytester):
    bad = pytester.makefile(".yaml", lab="instruments:\n  a: {type: rs485-adapter}\n")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("--bench", str(bad), "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*lab.yaml:2: instruments.a: an adapter needs exactly one of*"])
