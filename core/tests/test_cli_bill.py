"""``meterhub bill``: from the settings ``run`` keeps in the store, from a site file, and from
a tariffs file for a head-end's terminal; exact JSON; one-line errors and their exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from meterhub.billing import BILLING_SCOPE, billing_settings
from meterhub.cli.bill import bill_cmd
from meterhub.model import Meter, Reading, Site
from meterhub.store import open_store

SHANGHAI = ZoneInfo("Asia/Shanghai")
GAS = {"commodity": "gas", "price": "2.61", "fixed": [{"description": "service fee", "amount": "5"}]}
BUSINESS_GAS = {"commodity": "gas", "price": "3.45"}
GAS_METER = "000000000007"  # a DL/T 645 address as the site file normalises it


def local(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=SHANGHAI).astimezone(UTC)


def frozen(meter: str, quantity: str, value: str, at: datetime, **kw: Any) -> Reading:
    kw.setdefault("channel", "b")
    kw.setdefault("protocol", "dlt645")
    return Reading(meter, quantity, D(value), "m3", at, data_time=at, period=1, **kw)


def make_store(path: Path, *, settings: dict[str, Any] | None = None, readings: list[Reading] | None = None) -> str:
    store = open_store("sqlite:///" + str(path))
    try:
        store.add_readings(readings if readings is not None else [
            frozen(GAS_METER, "7-0:3.0.0", "100.125", local(2026, 10, 1)),
            frozen(GAS_METER, "7-0:3.0.0", "123.456", local(2026, 11, 1)),
        ])
        if settings is not None:
            store.put_settings(BILLING_SCOPE, settings)
    finally:
        store.close()
    return str(path)


def run_settings(tariff: str = "gas") -> dict[str, Any]:
    """What ``meterhub run`` keeps for a site with the gas meter on ``tariff``."""
    site = Site(meters=(Meter(GAS_METER, "dlt645", "b", tariff=tariff),), timezone="Asia/Shanghai",
                tariff_sources={"gas": GAS, "business": BUSINESS_GAS})
    return billing_settings(site)


def bill(*args: str) -> Result:
    return CliRunner().invoke(bill_cmd, list(args))


def one_line_error(result: Result) -> str:
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr


# -- from the store's settings ------------------------------------------------------------------


def test_the_tariff_zone_and_freeze_times_come_from_the_store(tmp_path: Path) -> None:
    db = make_store(tmp_path / "m.db", settings=run_settings())
    result = bill("--db", db, "--meter", GAS_METER, "--period", "2026-10")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.startswith("Bill 2026-10 for b/dlt645:000000000007: tariff gas (gas)")
    assert "start 2026-10-01 00:00  7-0:3.0.0         100.125 m3" in text
    assert "23.331 m³ × 2.61" in text and "60.89 CNY" in text  # 23.331 × 2.61 = 60.89391
    assert text.rstrip().endswith("65.89 CNY")  # + 5 service fee


def test_json_is_exact_and_alone_on_stdout(tmp_path: Path) -> None:
    db = make_store(tmp_path / "m.db", settings=run_settings())
    result = bill("--db", db, "--meter", "b/dlt645:" + GAS_METER, "--period", "2026-10", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    data = json.loads(result.stdout, parse_float=D)
    assert data["total"] == D("65.89") and '"total": 65.89' in result.stdout
    assert [line["amount"] for line in data["lines"]] == [D("60.89"), D("5.00")]
    assert [(r["edge"], r["value"], r["boundary"]) for r in data["registers"]] == [
        ("start", D("100.125"), "2026-10-01T00:00:00+08:00"), ("end", D("123.456"), "2026-11-01T00:00:00+08:00")]


def test_tariff_overrides_the_meters_assignment(tmp_path: Path) -> None:
    db = make_store(tmp_path / "m.db", settings=run_settings())
    result = bill("--db", db, "--meter", GAS_METER, "--period", "2026-10", "--tariff", "business", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout, parse_float=D)["total"] == D("80.49")  # 23.331 × 3.45 = 80.49195


def test_a_meter_without_a_tariff_asks_for_one(tmp_path: Path) -> None:
    db = make_store(tmp_path / "m.db", settings=run_settings(tariff=""))
    result = bill("--db", db, "--meter", GAS_METER, "--period", "2026-10")
    assert result.exit_code == 1
    assert one_line_error(result) == (
        "error: meter b/dlt645:000000000007 has no tariff assigned; give --tariff NAME (known: business, gas)\n")


def test_a_store_without_billing_settings_asks_for_a_site_or_tariffs(tmp_path: Path) -> None:
    db = make_store(tmp_path / "m.db")
    result = bill("--db", db, "--meter", GAS_METER, "--period", "2026-10")
    assert result.exit_code == 1
    assert "keeps no billing settings" in one_line_error(result) and "--site" in result.stderr


def test_a_missing_freeze_is_one_line_naming_it(tmp_path: Path) -> None:
    db = make_store(tmp_path / "m.db", settings=run_settings(),
                    readings=[frozen(GAS_METER, "7-0:3.0.0", "100.125", local(2026, 10, 1))])
    result = bill("--db", db, "--meter", GAS_METER, "--period", "2026-10")
    assert result.exit_code == 1
    assert one_line_error(result) == (
        "error: no frozen 7-0:3.0.0 of meter b/dlt645:000000000007 at 2026-11-01 00:00 (the end of 2026-10); "
        "nearest frozen: 2026-10-01 00:00 = 100.125\n")


def test_a_meter_not_in_the_store_is_one_line(tmp_path: Path) -> None:
    db = make_store(tmp_path / "m.db", settings=run_settings())
    result = bill("--db", db, "--meter", "8", "--period", "2026-10")
    assert result.exit_code == 1 and one_line_error(result) == "error: meter 8: no readings of it in the store\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--period", "2026-13"], "--period: a billing period is a month written YYYY-MM, not '2026-13'"),
    (["--period", "2026-10", "--timezone", "Mars/Olympus"], "--timezone: unknown time zone 'Mars/Olympus'"),
    (["--period", "2026-10", "--tariff", "steam"], "no tariff 'steam' (known: business, gas)"),
    (["--period", "2026-10", "--tariffs", "t.yaml"], "--tariffs t.yaml: name the tariff to bill with (--tariff NAME)"),
    (["--period", "2026-10", "--site", "s.yaml", "--tariffs", "t.yaml"], "give --site or --tariffs, not both"),
    (["--period", "2026-10", "--rollover", "-5"], "--rollover '-5': expected a positive number"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    db = make_store(tmp_path / "m.db", settings=run_settings())
    result = bill("--db", db, "--meter", GAS_METER, *args)
    assert result.exit_code == 2 and message in one_line_error(result)


def test_a_missing_store_file_is_a_usage_error(tmp_path: Path) -> None:
    result = bill("--db", str(tmp_path / "none.db"), "--meter", GAS_METER, "--period", "2026-10")
    assert result.exit_code == 2 and "no such file" in one_line_error(result)


# -- from a site file ---------------------------------------------------------------------------


SITE = """\
channels: {{b: {{transport: rs485, port: /dev/ttyUSB9}}}}
store: sqlite:///{db}
timezone: Asia/Shanghai
tariffs:
  gas:
    commodity: gas
    price: "2.61"
    fixed: [{{description: service fee, amount: "5"}}]
meters:
  - {{address: '7', channel: b, protocol: dlt645, name: kitchen, tariff: gas}}
"""


def test_a_site_file_gives_the_tariff_the_store_and_the_meters_name(tmp_path: Path) -> None:
    pytest.importorskip("meterhub_rs485", reason="the site file's channel is an RS485 bus")
    db = make_store(tmp_path / "m.db")  # no settings kept: the site file has them
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(db=db), encoding="utf-8")
    result = bill("--site", str(site), "--meter", "kitchen", "--period", "2026-10")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Bill 2026-10 for kitchen: tariff gas (gas)")
    assert result.stdout.rstrip().endswith("65.89 CNY")


# -- a head-end: a tariffs file, a terminal and its measuring point --------------------------------


TARIFFS = """\
tariffs:
  residential:
    commodity: electricity
    price: "0.5283"
  water: {commodity: water, price: "3.45"}
"""


def test_a_head_end_bills_a_terminals_point_with_a_tariffs_file(tmp_path: Path) -> None:
    point = {"channel": "", "protocol": "gdw1376.1"}
    readings = [Reading("3", "1-0:1.8.0", D(value), "kWh", at, data_time=at, period=1, terminal=terminal, **point)
                for terminal, start, end in (("32010001", "100.00", "300.00"), ("32010002", "10.00", "20.00"))
                for value, at in ((start, local(2026, 10, 1)), (end, local(2026, 11, 1)))]
    db = make_store(tmp_path / "h.db", readings=readings)
    tariffs = tmp_path / "tariffs.yaml"
    tariffs.write_text(TARIFFS, encoding="utf-8")
    result = bill("--db", db, "--tariffs", str(tariffs), "--tariff", "residential", "--terminal", "32010001",
                  "--meter", "3", "--period", "2026-10", "--timezone", "Asia/Shanghai", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout, parse_float=D)
    assert data["meter"] == "gdw1376.1:3 of terminal 32010001"
    assert [(line["quantity"], line["amount"]) for line in data["lines"]] == [(D("200.00"), D("105.66"))]  # × 0.5283


def test_a_head_end_point_without_its_terminal_is_ambiguous(tmp_path: Path) -> None:
    point = {"channel": "", "protocol": "gdw1376.1"}
    readings = [Reading("3", "1-0:1.8.0", D("1"), "kWh", local(2026, 10, 1), period=1, terminal=t, **point)
                for t in ("32010001", "32010002")]
    db = make_store(tmp_path / "h.db", readings=readings)
    tariffs = tmp_path / "tariffs.yaml"
    tariffs.write_text(TARIFFS, encoding="utf-8")
    result = bill("--db", db, "--tariffs", str(tariffs), "--tariff", "residential", "--meter", "3",
                  "--period", "2026-10", "--timezone", "Asia/Shanghai")
    assert result.exit_code == 1 and "name the terminal" in one_line_error(result)


def test_a_broken_tariffs_file_names_the_key(tmp_path: Path) -> None:
    db = make_store(tmp_path / "m.db")
    tariffs = tmp_path / "tariffs.yaml"
    tariffs.write_text("tariffs:\n  gas: {commodity: gas, price: cheap}\n", encoding="utf-8")
    result = bill("--db", db, "--tariffs", str(tariffs), "--tariff", "gas", "--meter", GAS_METER, "--period", "2026-10")
    assert result.exit_code == 2
    assert one_line_error(result) == f"error: {tariffs}: tariffs.gas.price: must be a number, not 'cheap'\n"
