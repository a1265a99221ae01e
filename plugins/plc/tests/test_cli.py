"""What a user runs: ``meterhub run SITE --once`` on a carrier channel (the contract),
``meterhub plc info|nodes`` against a module and ``meterhub plc sim``, as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from meterhub.config import load_site
from meterhub.plugins import Plugins
from meterhub_plc.cli import site_text
from meterhub_plc.network import CarrierNetwork, NodeKind
from meterhub_plc.sim import ModuleSim


def meterhub(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "meterhub.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_run_once_reads_the_meters_on_a_carrier_channel_adding_them_to_the_route_table(tmp_path):
    net = CarrierNetwork.build(meters=6, collectors=1, meters_per_collector=4, seed=11, hop_latency=0.005,
                               turnaround=0.002)
    with ModuleSim(net, baudrate=9600) as sim:
        site = tmp_path / "site.yaml"
        # the contract's minimal form: transport and port, nothing else
        text = site_text(net, sim.path, 9600).replace(f"port: {sim.path}, baudrate: 9600, reading: concentrator",
                                                      f"port: {sim.path}")
        site.write_text(text + "store: sqlite:///plc.db\n", encoding="utf-8")
        before = {a: net.meter(a).energy() for a in net.meter_addresses()}
        result = meterhub("run", str(site), "--once", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        after = {a: net.meter(a).energy() for a in net.meter_addresses()}
        assert set(sim.archive) == {n.address for n in net.nodes()}
    exported = meterhub("export", "--db", str(tmp_path / "plc.db"), "--format", "json", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    readings = json.loads(exported.stdout, parse_float=Decimal)
    energy = {r["meter"]: r for r in readings if r["quantity"] == "1-0:1.8.0"}
    assert set(energy) == set(net.meter_addresses())
    for address, r in energy.items():
        assert r["quality"] == "ok"
        assert before[address] <= r["value"] <= after[address]
    depth = {n.address: n.depth for n in net.nodes()}
    for node in net.nodes():
        if node.kind is NodeKind.COLLECTOR:
            for address in node.meters:
                assert energy[address]["route"] == "c1" and energy[address]["relays"] == depth[node.address]
        else:
            assert energy[node.address]["route"] == "" and energy[node.address]["relays"] == depth[node.address]


def test_the_site_file_the_simulator_writes_loads(tmp_path):
    net = CarrierNetwork.build(meters=3, collectors=2, meters_per_collector=2, seed=1)
    plugins = Plugins()
    path = tmp_path / "site.yaml"
    path.write_text(site_text(net, "/dev/ttyS9", 9600, "module"), encoding="utf-8")
    site = load_site(path, drivers=plugins.meter_drivers(), transports=plugins.transports(), uplinks=plugins.uplinks())
    assert len(site.meters) == 3 + 2 * 2 and set(site.collectors) == {"c1", "c2"}
    assert site.channels["carrier"].options["reading"] == "module"


def test_plc_info_and_nodes_print_the_module_and_its_route_table(tmp_path):
    net = CarrierNetwork.build(meters=3, collectors=0, seed=2, hop_latency=0.002, turnaround=0.002)
    with ModuleSim(net, baudrate=9600) as sim:
        info = meterhub("plc", "info", "--port", sim.path, "--json")
        assert info.returncode == 0, info.stderr
        data = json.loads(info.stdout)
        assert (data["vendor"], data["chip"], data["concurrent"]) == ("MH", "01", True)
        empty = meterhub("plc", "nodes", "--port", sim.path, "--json")
        assert json.loads(empty.stdout) == []
        site = tmp_path / "site.yaml"
        site.write_text(site_text(net, sim.path, 9600) + "store: sqlite:///plc.db\n", encoding="utf-8")
        assert meterhub("run", str(site), "--once", cwd=tmp_path).returncode == 0
        nodes = json.loads(meterhub("plc", "nodes", "--port", sim.path, "--json").stdout)
        assert {n["address"]: n["relay_level"] for n in nodes} == {n.address: n.depth for n in net.nodes()}
        table = meterhub("plc", "nodes", "--port", sim.path)
        assert "relay level" in table.stdout and "3 node(s)" in table.stderr


def test_plc_info_names_the_port_when_no_module_answers(tmp_path):
    net = CarrierNetwork.build(meters=1, seed=2)
    with ModuleSim(net) as sim:
        sim.silent = True
        result = meterhub("plc", "info", "--port", sim.path, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert sim.path in result.stderr and "no Q/GDW 1376.2 module answers" in result.stderr


def test_plc_sim_prints_its_port_writes_a_site_and_stops_on_a_signal(tmp_path):
    site = tmp_path / "site.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "meterhub.cli", "plc", "sim", "--meters", "4", "--collectors", "1",
                             "--per-collector", "2", "--site", str(site)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        assert f"port: {port}" in site.read_text(encoding="utf-8")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "carrier module on" in err


def test_plc_router_pauses_and_resumes_the_modules_router(tmp_path):
    net = CarrierNetwork.build(meters=2, collectors=0, seed=2, hop_latency=0.002, turnaround=0.002)
    with ModuleSim(net, baudrate=9600) as sim:
        site = tmp_path / "site.yaml"
        site.write_text(site_text(net, sim.path, 9600) + "store: sqlite:///plc.db\n", encoding="utf-8")
        assert meterhub("run", str(site), "--once", cwd=tmp_path).returncode == 0
        assert not sim.router_running
        resumed = meterhub("plc", "router", "resume", "--port", sim.path)
        assert resumed.returncode == 0, resumed.stderr
        assert sim.router_running and "confirmed" in resumed.stderr
        assert meterhub("plc", "router", "pause", "--port", sim.path).returncode == 0
        assert not sim.router_running
