"""Programming mode through the probe: a register read (R1), a register write (P1 with the
password from the secret store, then W1) through the command path and its audit trail, and
what happens with a wrong or missing password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

from meterhub_infrared.sim import OpticalMeter


def meterhub(*args: str, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "meterhub.cli", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120)


def test_a_register_is_read_in_programming_mode():
    with OpticalMeter(baud_char="5") as meter:
        before = Decimal(meter.register("1.8.0")[0])
        result = meterhub("ir", "register", "--port", meter.path, "--register", "1.8.0", "--json")
        after = Decimal(meter.register("1.8.0")[0])
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout, parse_float=Decimal)
    assert got["register"] == "1.8.0" and got["unit"] == "kWh"
    assert before <= Decimal(got["value"]) <= after


def test_an_unknown_register_is_the_meters_error_not_a_value():
    with OpticalMeter() as meter:
        result = meterhub("ir", "register", "--port", meter.path, "--register", "99.99.99", "--json")
    assert result.returncode == 1 and result.stdout == "" and "answered reading 99.99.99" in result.stderr


def test_a_write_goes_through_the_command_path_with_the_password_from_the_secret_store(tmp_path):
    with OpticalMeter(password="12345678") as meter:
        result = meterhub("ir", "write", "--port", meter.path, "--register", "1.8.2", "--value", "000123.456",
                          "--credential", "ir-meter", "--db", str(tmp_path / "m.db"),
                          env={"METERHUB_SECRET_IR_METER_PASSWORD": "12345678"})
        assert result.returncode == 0, result.stderr
        assert Decimal(meter.register("1.8.2")[0]) == Decimal("123.456")
    log = json.loads(meterhub("commands", "--db", str(tmp_path / "m.db"), "--json").stdout)
    (entry,) = log
    assert entry["command"] == "write_register" and entry["state"] == "answered"
    assert "12345678" not in json.dumps(log)  # the password is never journalled


def test_a_wrong_password_fails_the_command_and_writes_nothing(tmp_path):
    with OpticalMeter(password="12345678") as meter:
        before = meter.register("1.8.2")[0]
        result = meterhub("ir", "write", "--port", meter.path, "--register", "1.8.2", "--value", "000999.000",
                          "--credential", "ir-meter", "--db", str(tmp_path / "m.db"),
                          env={"METERHUB_SECRET_IR_METER_PASSWORD": "00000000"})
        assert meter.register("1.8.2")[0] == before
    assert result.returncode == 1 and "refused the password" in result.stderr
    (entry,) = json.loads(meterhub("commands", "--db", str(tmp_path / "m.db"), "--json").stdout)
    assert entry["state"] == "failed"


def test_without_a_password_in_the_secret_store_nothing_is_sent(tmp_path):
    with OpticalMeter(password="12345678") as meter:
        result = meterhub("ir", "write", "--port", meter.path, "--register", "1.8.2", "--value", "000999.000",
                          "--credential", "nowhere", "--db", str(tmp_path / "m.db"),
                          env={"METERHUB_SECRETS": str(tmp_path / "none.yaml")})
        assert meter.frames_in == 0
    assert result.returncode == 1 and "refused, nothing sent" in result.stderr
    (entry,) = json.loads(meterhub("commands", "--db", str(tmp_path / "m.db"), "--json").stdout)
    assert entry["state"] == "refused"
