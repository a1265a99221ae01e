"""The example files in examples/ are valid for the drivers a user installs, not only for stand-ins."""

from __future__ import annotations

from pathlib import Path

from meterhub.config import load_site
from meterhub.plugins import get_plugins

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_example_site_file_is_valid_for_the_installed_drivers():
    plugins = get_plugins()
    site = load_site(EXAMPLES / "site.yaml", drivers=plugins.meter_drivers(), transports=plugins.transports(),
                     uplinks=plugins.uplinks())
    assert {m.protocol for m in site.meters} == {"dlt645", "modbus", "cjt188", "mbus"}
    # the vendor profile beside the site file was loaded through profiles: [profiles]
    assert "acme-em100" in plugins.meter_drivers()["modbus"].profiles
    by_name = {m.name: m for m in site.meters}
    assert by_name["heat pump"].settings is not None and by_name["heat pump"].settings.parity == "N"
    assert by_name["cold water, flat 1"].address == "12345678901234"


def test_the_example_carrier_site_file_is_valid_with_the_plc_transport():
    plugins = get_plugins()
    site = load_site(EXAMPLES / "plc-site.yaml", drivers=plugins.meter_drivers(), transports=plugins.transports(),
                     uplinks=plugins.uplinks())
    carrier = site.channels["carrier"]
    assert carrier.transport == "plc" and carrier.settings.baudrate == 9600 and carrier.settings.parity == "E"
    behind = [m for m in site.meters if m.hops]
    assert [hop.address for m in behind for hop in m.hops] == ["880000000003", "880000000003"]
