"""``meterhub prepay``: recharges, balances and ledgers against a real SQLite file, as people
and scripts read them; bad amounts and ambiguous meters refused before anything is written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from meterhub import commands as commands_module
from meterhub import prepay
from meterhub.cli import cli
from meterhub.cli.prepay import prepay_cmd
from meterhub.model import Event, Reading
from meterhub.store import open_store

ADDRESS = "000000000001"
KEY = "bus1/dlt645:000000000001"
OTHER = "bus2/dlt645:000000000001"  # the same address on another bus
WATER = "water/cjt188:10000000000007"
T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def issuer(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(commands_module, "local_issuer", lambda: "cashier")
    return "cashier"


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store with readings of the DL/T 645 meter on bus1 and of the water meter."""
    path = str(tmp_path / "m.db")
    with open_store("sqlite:///" + path) as store:
        store.add_readings([
            Reading(ADDRESS, "1-0:1.8.0", D("1000.00"), "kWh", T0, channel="bus1", protocol="dlt645"),
            Reading("10000000000007", "8-0:1.0.0", D("12.345"), "m³", T0, channel="water", protocol="cjt188"),
        ])
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(prepay_cmd, list(args))


def events(db: str) -> list[Event]:
    with open_store("sqlite:///" + db) as store:
        return [e for kind in (prepay.RECHARGE, prepay.CHARGE) for e in store.events(kind=kind)]


def charge(db: str, key: str, amount: str, at: datetime) -> None:
    c = prepay.Charge(D(amount), D("2.5"), "kWh", "by hand", {"1-0:1.8.0": D("1002.50")}, at - timedelta(hours=1), at)
    with open_store("sqlite:///" + db) as store:
        store.add_event(prepay.charge_event(key, key.rpartition(":")[2], c, at=at))


# --- recharge ---------------------------------------------------------------------------


def test_recharge_by_address_books_it_on_the_meters_key(db: str) -> None:
    result = run("recharge", "--meter", ADDRESS, "--amount", "100", "--reference", "R-42", "--db", db)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{KEY}: recharged 100.00, balance 100.00\n"
    (event,) = events(db)
    assert (event.kind, event.source) == ("prepay_recharge", KEY)
    assert dict(event.data) == {"meter": ADDRESS, "amount": "100.00", "reference": "R-42", "issuer": "cashier"}


def test_recharge_prints_the_balance_after_charges_and_the_opening_balance(db: str) -> None:
    with open_store("sqlite:///" + db) as store:
        store.put_settings("prepayment", {"opening_balance": "5.00"})
    charge(db, KEY, "7.25", T0)
    result = run("recharge", "--meter", ADDRESS, "--amount", "20.5", "--db", db)
    assert result.stdout == f"{KEY}: recharged 20.50, balance 18.25\n"  # 5.00 − 7.25 + 20.50


def test_recharge_json_is_exact_and_alone_on_stdout(db: str) -> None:
    result = run("recharge", "--meter", KEY, "--amount", "0.10", "--db", db, "--json")
    assert result.exit_code == 0
    assert result.stderr == ""
    out = json.loads(result.stdout, parse_float=D)
    assert {k: out[k] for k in ("meter", "key", "amount", "reference", "issuer", "balance")} == {
        "meter": ADDRESS, "key": KEY, "amount": D("0.10"), "reference": "", "issuer": "cashier", "balance": D("0.10")}
    assert datetime.fromisoformat(out["at"]).tzinfo is not None


@pytest.mark.parametrize(("amount", "why"), [
    ("0", "more than 0"),
    ("-5", "more than 0"),
    ("1.005", "at most 2 decimal places"),
    ("ten", "not an amount of money"),
    ("1e3", "not an amount of money"),
    ("NaN", "not an amount of money"),
    ("1000000", "below 1000000"),
])
def test_bad_amounts_exit_2_and_write_nothing(db: str, amount: str, why: str) -> None:
    result = run("recharge", "--meter", ADDRESS, "--amount", amount, "--db", db)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --amount {amount!r}: ")
    assert why in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert events(db) == []


def test_an_address_on_two_buses_is_ambiguous(db: str) -> None:
    with open_store("sqlite:///" + db) as store:
        store.add_readings([Reading(ADDRESS, "1-0:1.8.0", D("5.00"), "kWh", T0, channel="bus2", protocol="dlt645")])
    result = run("recharge", "--meter", ADDRESS, "--amount", "10", "--db", db)
    assert result.exit_code == 1
    assert result.stderr == (f"error: --meter '{ADDRESS}' names 2 meters in {db}: {KEY}, {OTHER}; "
                             "give one of them as CHANNEL/PROTOCOL:ADDRESS\n")
    assert events(db) == []


def test_a_meter_known_only_by_its_ledger_is_ambiguous_too(db: str) -> None:
    charge(db, OTHER, "1.00", T0)  # no readings on bus2: only its ledger knows it
    result = run("balance", "--meter", ADDRESS, "--db", db)
    assert result.exit_code == 1
    assert f"{KEY}, {OTHER}" in result.stderr


def test_protocol_and_address_name_the_meter_on_its_bus(db: str) -> None:
    result = run("recharge", "--meter", "cjt188:10000000000007", "--amount", "8", "--db", db)
    assert result.stdout == f"{WATER}: recharged 8.00, balance 8.00\n"


def test_an_unknown_address_is_an_error(db: str) -> None:
    result = run("recharge", "--meter", "999999999999", "--amount", "10", "--db", db)
    assert result.exit_code == 1
    assert "no meter with that address" in result.stderr
    assert events(db) == []


def test_a_new_meter_is_recharged_by_its_full_key_and_found_by_address_after(db: str) -> None:
    assert run("recharge", "--meter", "bus3/dlt645:000000000099", "--amount", "30", "--db", db).exit_code == 0
    result = run("balance", "--meter", "000000000099", "--db", db)
    assert result.exit_code == 0
    assert result.stdout.startswith("bus3/dlt645:000000000099  ")
    assert "30.00" in result.stdout


def test_a_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    result = run("recharge", "--meter", KEY, "--amount", "10", "--db", str(tmp_path / "nope.db"))
    assert result.exit_code == 2
    assert "no such file" in result.stderr
    assert not (tmp_path / "nope.db").exists()


# --- balance ----------------------------------------------------------------------------


def test_balance_of_every_meter_with_ledger_entries(db: str) -> None:
    run("recharge", "--meter", KEY, "--amount", "50", "--db", db)
    charge(db, KEY, "12.34", T0)
    run("recharge", "--meter", WATER, "--amount", "8", "--db", db)
    result = run("balance", "--db", db, "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout, parse_float=D)
    assert [(r["key"], r["meter"], r["balance"], r["recharged"], r["charged"], r["entries"]) for r in rows] == [
        (KEY, ADDRESS, D("37.66"), D("50.00"), D("12.34"), 2),  # 50.00 − 12.34
        (WATER, "10000000000007", D("8.00"), D("8.00"), D("0.00"), 1),
    ]


def test_balance_table_has_a_line_per_meter(db: str) -> None:
    run("recharge", "--meter", KEY, "--amount", "50", "--db", db)
    run("recharge", "--meter", WATER, "--amount", "8", "--db", db)
    lines = run("balance", "--db", db).stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [[KEY, "50.00"], [WATER, "8.00"]]


def test_balance_of_a_meter_without_entries_is_its_opening_balance(db: str) -> None:
    with open_store("sqlite:///" + db) as store:
        store.put_settings("prepayment", {"opening_balance": "3.50"})
    result = run("balance", "--meter", ADDRESS, "--db", db, "--json")
    (row,) = json.loads(result.stdout, parse_float=D)
    assert (row["key"], row["balance"], row["entries"], row["last"]) == (KEY, D("3.50"), 0, None)


def test_balance_with_no_ledger_at_all_says_so(db: str) -> None:
    result = run("balance", "--db", db, "--json")
    assert result.exit_code == 0
    assert result.stdout.strip() == "[]"
    assert "no meter" in result.stderr


def test_a_damaged_opening_balance_setting_is_an_error(db: str) -> None:
    with open_store("sqlite:///" + db) as store:
        store.put_settings("prepayment", {"opening_balance": "lots"})
    result = run("recharge", "--meter", KEY, "--amount", "10", "--db", db)
    assert result.exit_code == 1
    assert result.stderr == "error: the store's prepayment setting opening_balance is 'lots', not an amount\n"
    assert events(db) == []


# --- ledger -----------------------------------------------------------------------------


def test_ledger_shows_each_entry_with_the_running_balance(db: str) -> None:
    with open_store("sqlite:///" + db) as store:
        store.put_settings("prepayment", {"opening_balance": "1.00"})
        store.add_event(prepay.recharge_event(KEY, ADDRESS, D(40), reference="R-1", issuer="cashier", at=T0))
    charge(db, KEY, "15.50", T0 + timedelta(hours=2))
    charge(db, KEY, "30.00", T0 + timedelta(hours=3))
    result = run("ledger", "--meter", ADDRESS, "--db", db, "--json")
    assert result.exit_code == 0
    out = json.loads(result.stdout, parse_float=D)
    assert (out["key"], out["meter"], out["opening"], out["balance"]) == (KEY, ADDRESS, D("1.00"), D("-4.50"))
    assert [(e["kind"], e["amount"], e["balance"]) for e in out["entries"]] == [
        ("recharge", D("40.00"), D("41.00")),   # 1.00 + 40.00
        ("charge", D("-15.50"), D("25.50")),
        ("charge", D("-30.00"), D("-4.50")),
    ]
    assert out["entries"][0]["data"]["reference"] == "R-1"
    assert datetime.fromisoformat(out["entries"][1]["at"]) == T0 + timedelta(hours=2)


def test_ledger_table_for_people(db: str) -> None:
    with open_store("sqlite:///" + db) as store:
        store.add_event(prepay.recharge_event(KEY, ADDRESS, D(40), reference="R-1", issuer="cashier", at=T0))
    charge(db, KEY, "15.50", T0 + timedelta(hours=2))
    lines = run("ledger", "--meter", KEY, "--db", db).stdout.splitlines()
    assert lines[0] == f"{KEY}: opening balance 0.00"
    assert lines[1].split()[2:5] == ["recharge", "+40.00", "40.00"]
    assert lines[1].endswith("reference R-1; by cashier")
    assert lines[2].split()[2:5] == ["charge", "-15.50", "24.50"]
    assert "2.5 kWh from " in lines[2]
    assert lines[3] == f"{KEY}: balance 24.50"


def test_the_root_command_has_prepay(db: str) -> None:
    result = CliRunner().invoke(cli, ["prepay", "recharge", "--meter", KEY, "--amount", "1", "--db", db])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{KEY}: recharged 1.00, balance 1.00\n"
