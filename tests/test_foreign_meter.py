"""`meterhub read` against a DL/T 645 meter this project did not write: the ``dlt645``
package's MeterServerService on a pseudo-terminal, reached over the real RS485 path."""

from __future__ import annotations

from decimal import Decimal

from system_helpers import assert_no_traceback, meterhub, parse_json


def test_read_energy_from_the_foreign_meter(foreign_meter):
    foreign_meter.service.set_00(0x00010000, 123456.78)  # forward active energy, total
    result = meterhub("read", "--port", foreign_meter.port, "--parity", "E", "--protocol", "dlt645",
                      "--address", foreign_meter.address, "--quantity", "1-0:1.8.0", "--json")
    assert result.returncode == 0, result.stderr
    reading = parse_json(result.stdout)
    assert reading["meter"] == "123456789012"
    assert reading["quantity"] == "1-0:1.8.0"
    assert reading["value"] == Decimal("123456.78")
    assert reading["unit"] == "kWh"
    assert set(reading) >= {"meter", "quantity", "value", "unit", "timestamp"}
    assert foreign_meter.requests >= 1


def test_read_a_tariff_register_from_the_foreign_meter(foreign_meter):
    foreign_meter.service.set_00(0x00010200, 2345.67)  # forward active energy, tariff 2
    result = meterhub("read", "--port", foreign_meter.port, "--protocol", "dlt645",
                      "--address", foreign_meter.address, "--quantity", "energy_import_t2", "--json")
    assert result.returncode == 0, result.stderr
    assert parse_json(result.stdout)["value"] == Decimal("2345.67")


def test_read_voltage_and_frequency_from_the_foreign_meter(foreign_meter):
    foreign_meter.service.set_02(0x02010100, 231.4)  # phase A voltage, XXX.X V
    foreign_meter.service.set_02(0x02800002, 49.98)  # grid frequency, XX.XX Hz
    result = meterhub("read", "--port", foreign_meter.port, "--protocol", "dlt645", "--address", foreign_meter.address,
                      "--quantity", "voltage_l1", "--quantity", "frequency", "--json")
    assert result.returncode == 0, result.stderr
    values = {r["quantity"]: (r["value"], r["unit"]) for r in parse_json(result.stdout)}
    assert values == {"1-0:32.7.0": (Decimal("231.4"), "V"), "1-0:14.7.0": (Decimal("49.98"), "Hz")}


def test_another_address_gets_no_answer_from_the_foreign_meter(foreign_meter):
    foreign_meter.service.set_00(0x00010000, 1.0)
    result = meterhub("read", "--port", foreign_meter.port, "--protocol", "dlt645", "--address", "000000000099",
                      "--quantity", "energy_import", "--retries", "0", "--timeout", "0.5")
    assert result.returncode == 1
    assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert any("000000000099" in line and foreign_meter.port in line for line in lines)
