"""The bench file: what a good one becomes, and every mistake with its file, line and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meterhub.errors import ConfigError
from meterhub_hil.bench import ADAPTER, PULSE_GENERATOR, load_bench, parse_bench, visa_serial_path, visa_socket

BENCHES = Path(__file__).resolve().parents[1] / "benches"


def test_the_virtual_bench_file_loads_with_its_wiring():
    spec = load_bench(BENCHES / "virtual.yaml")
    assert spec.virtual
    assert [i.name for i in spec.of_type(ADAPTER)] == ["adapter-a", "adapter-b", "adapter-c", "adapter-d"]
    assert [i.name for i in spec.of_type(PULSE_GENERATOR)] == ["pulsegen"]
    assert spec.buses["pair-1"].settings.baudrate == 9600
    collector = spec.devices["collector-1"]
    assert collector.inputs[1].constant == 1000 and collector.inputs[1].unit == "kWh"
    assert collector.inputs[2].kind == "reed" and collector.inputs[2].debounce == pytest.approx(0.0001)
    assert spec.wire_to("collector-1", 2).channel == 2


def test_the_lab_example_is_the_same_bench_on_real_hardware():
    lab = load_bench(BENCHES / "lab-example.yaml")
    virtual = load_bench(BENCHES / "virtual.yaml")
    assert not lab.virtual
    assert set(lab.instruments) == set(virtual.instruments)
    assert lab.instruments["adapter-a"].serial_number  # found again after a re-plug
    assert load_bench(BENCHES / "lab-example.yaml", virtual=True).virtual  # the same file, virtualised


def test_every_mistake_is_reported_with_file_line_and_key():
    text = (
        "instruments:\n"
        "  a: {type: rs485-adaptr, resource: x}\n"
        "  b: {type: rs485-adapter}\n"
        "  g: {type: pulse-generator, resource: 'TCPIP::pi::5025::SOCKET'}\n"
        "buses:\n"
        "  p: {adapters: [b, zz], baudrate: 2401}\n"
        "devices:\n"
        "  c: {type: pulse-collector, protocol: dlt645-pulse, address: '1', bus: nope, inputs: {1: {kind: s1}}}\n"
        "wiring:\n"
        "  - {from: 'g:3', to: 'c:1'}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_bench(text, filename="bad.yaml")
    found = [(i.file, i.line, i.key) for i in caught.value.issues]
    assert found == [
        ("bad.yaml", 2, "instruments.a.type"),
        ("bad.yaml", 3, "instruments.b"),
        ("bad.yaml", 6, "buses.p.adapters[1]"),
        ("bad.yaml", 6, "buses.p.baudrate"),
        ("bad.yaml", 8, "devices.c.bus"),
        ("bad.yaml", 8, "devices.c.inputs.1.kind"),
        ("bad.yaml", 10, "wiring[0].from"),
    ]
    messages = [i.message for i in caught.value.issues]
    assert "unknown instrument type 'rs485-adaptr'" in messages[0]
    assert "2401 is not a standard baud rate" in messages[3]


def test_yaml_syntax_errors_are_located():
    with pytest.raises(ConfigError) as caught:
        parse_bench("instruments:\n  a: {type: [\n", filename="broken.yaml")
    assert caught.value.issues[0].file == "broken.yaml" and caught.value.issues[0].line is not None


def test_a_missing_bench_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read the file: No such file"):
        load_bench(tmp_path / "nope.yaml")


def test_a_bench_file_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "bench.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="it is a FIFO"):
        load_bench(fifo)


def test_visa_resource_names_are_taken_apart():
    assert visa_serial_path("ASRL/dev/ttyUSB0::INSTR") == "/dev/ttyUSB0"
    assert visa_serial_path("asrl/dev/serial/by-id/usb-FTDI-if00::INSTR") == "/dev/serial/by-id/usb-FTDI-if00"
    assert visa_serial_path("TCPIP::pi::5025::SOCKET") is None
    assert visa_socket("TCPIP::raspberrypi.local::5025::SOCKET") == ("raspberrypi.local", 5025)
    assert visa_socket("TCPIP0::10.0.0.2::5025::SOCKET") == ("10.0.0.2", 5025)


def test_a_virtual_bench_simulates_meters_of_every_protocol_at_their_bench_addresses():
    from meterhub_hil.virtual import VirtualBench

    spec = parse_bench(
        "virtual: true\n"
        "instruments: {a: {type: rs485-adapter, resource: 'ASRL/dev/ttyUSB0::INSTR'}}\n"
        "buses: {p: {adapters: [a], baudrate: 9600}}\n"
        "devices:\n"
        "  e: {type: meter, protocol: dlt645, address: '000000000042', bus: p}\n"
        "  m: {type: meter, protocol: modbus, address: '17', bus: p}\n"
        "  w: {type: meter, protocol: cjt188, address: '00000000000033', bus: p}\n"
        "  h: {type: meter, protocol: mbus, address: '9', bus: p}\n",
        filename="mixed.yaml",
    )
    with VirtualBench(spec) as virtual:
        made = {name: [d.address for d in devices] for name, devices in virtual.meters.items()}
        primary = virtual.meters["h"][0].primary
    assert made["e"] == ["000000000042"] and made["m"] == ["17"] and made["w"] == ["00000000000033"]
    assert primary == 9
