"""The ``plc`` transport's part of a site file: its default 9600 8E1, its keys and the
meters it can place, each problem reported at its line."""

from __future__ import annotations

import textwrap

import pytest
from meterhub.config import parse_site
from meterhub.errors import ConfigError
from meterhub.plugins import Plugins
from meterhub_plc.transport import PlcTransport

PLUGINS = Plugins()


def _parse(text: str):
    return parse_site(textwrap.dedent(text), filename="site.yaml", drivers=PLUGINS.meter_drivers(),
                      transports=PLUGINS.transports(), uplinks=PLUGINS.uplinks())


def _issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _parse(text)
    return [str(issue) for issue in caught.value.issues]


def test_the_plugin_registers_the_plc_transport():
    assert isinstance(PLUGINS.transports()["plc"], PlcTransport)


def test_a_plc_channel_defaults_to_the_modules_9600_8e1():
    site = _parse("""
        channels:
          carrier: {transport: plc, port: /dev/ttyS1}
        meters:
          - {address: "000000000101", channel: carrier, protocol: dlt645, quantities: [energy_import]}
    """)
    settings = site.channels["carrier"].settings
    assert (settings.baudrate, settings.bytesize, settings.parity, settings.stopbits) == (9600, 8, "E", 1)


def test_an_rs485_channel_keeps_the_meters_2400():
    site = _parse("""
        channels:
          bus: {transport: rs485, port: /dev/ttyUSB0}
        meters:
          - {address: "000000000101", channel: bus, protocol: dlt645, quantities: [energy_import]}
    """)
    assert site.channels["bus"].settings.baudrate == 2400


def test_options_are_checked_at_their_line():
    issues = _issues("""
        channels:
          carrier:
            transport: plc
            port: /dev/ttyS1
            reading: router
            concurrency: 0
            hop_time: -1
            main_node: "12"
            route_synch: full
        meters:
          - {address: "000000000101", channel: carrier, protocol: dlt645, quantities: [energy_import]}
    """)
    text = "\n".join(issues)
    assert "site.yaml:7" in text and "reading" in text and "concentrator, module" in text
    assert "site.yaml:8" in text and "concurrency" in text
    assert "site.yaml:9" in text and "hop_time" in text
    assert "site.yaml:10" in text and "12 hex digits" in text
    assert "did you mean 'route_sync'" in text


def test_a_module_uart_speed_that_no_module_has_is_refused():
    issues = _issues("""
        channels:
          carrier: {transport: plc, port: /dev/ttyS1, baudrate: 2400}
        meters:
          - {address: "000000000101", channel: carrier, protocol: dlt645, quantities: [energy_import]}
    """)
    assert any("baudrate" in i and "9600" in i for i in issues)


def test_a_collector_on_a_carrier_channel_needs_its_node_address():
    issues = _issues("""
        channels:
          carrier: {transport: plc, port: /dev/ttyS1}
        collectors:
          c1: {channel: carrier}
        meters:
          - {address: "000000000101", collector: c1, protocol: dlt645, quantities: [energy_import]}
    """)
    assert any("collector c1" in i and "carrier node address" in i for i in issues)


def test_a_meter_protocol_the_module_cannot_carry_is_refused():
    issues = _issues("""
        channels:
          carrier: {transport: plc, port: /dev/ttyS1}
        meters:
          - {address: "00000000000101", channel: carrier, protocol: cjt188, quantities: [water_volume]}
    """)
    assert any("cjt188" in i and "13 F1" in i for i in issues)


def test_meters_behind_a_collector_carry_their_route():
    site = _parse("""
        channels:
          carrier: {transport: plc, port: /dev/ttyS1}
        collectors:
          c1: {channel: carrier, address: "990000000001"}
        meters:
          - {address: "000000000101", collector: c1, protocol: dlt645, quantities: [energy_import]}
    """)
    (meter,) = site.meters
    assert meter.channel == "carrier"
    assert [(hop.collector, hop.address) for hop in meter.hops] == [("c1", "990000000001")]
