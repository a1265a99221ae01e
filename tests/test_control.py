"""``meterhub control relay-off|relay-on`` (the fee-control contract) against the simulated
DL/T 645 meters over a real pseudo-terminal: credentials from the secret store (here the
METERHUB_DLT645_* variables), nothing sent without them, the meter's refusal named, and
the audit trail in the store."""

from __future__ import annotations

import json

import pytest
from meterhub.protocols.dlt645_sim import start_dlt645_sim
from meterhub.secrets import Dlt645EnvSecrets
from meterhub.errors import CredentialError, CredentialNotFound
from system_helpers import assert_no_traceback, meterhub

#: PA = 02, P2 P1 P0 = 000000 (the simulated meters' level-2 password), operator 12345678
GOOD = {"METERHUB_DLT645_PASSWORD": "02000000", "METERHUB_DLT645_OPERATOR": "12345678"}


def control(action: str, bus, address: str, tmp_path, env: dict[str, str], *extra: str):
    # confirm=true: the vendor plugin the tests install has a policy that asks it of a trip
    return meterhub("control", action, "--port", bus.port, "--protocol", "dlt645", "--address", address,
                    "--db", str(tmp_path / "audit.db"), "--arg", "confirm=true", *extra, cwd=tmp_path,
                    env={"METERHUB_DLT645_PASSWORD": "", "METERHUB_DLT645_OPERATOR": "",
                         "METERHUB_SECRETS": str(tmp_path / "no-secrets.yaml"), **env})


def audit(tmp_path) -> list[dict]:
    return json.loads(meterhub("commands", "--db", str(tmp_path / "audit.db"), "--json").stdout or "[]")


def test_relay_off_then_on_trips_and_closes_the_meters_relay(tmp_path):
    with start_dlt645_sim(2) as bus:
        meter = bus.devices[1]
        off = control("relay-off", bus, meter.address, tmp_path, GOOD, "--json")
        assert off.returncode == 0, off.stderr
        assert meter.relay_open
        answer = json.loads(off.stdout)
        assert (answer["command"], answer["action"], answer["meter"]) == ("relay-off", "trip", meter.address)
        on = control("relay-on", bus, meter.address, tmp_path, GOOD)
        assert on.returncode == 0, on.stderr
        assert not meter.relay_open
        assert not bus.devices[0].relay_open  # the other meter was not touched
    log = audit(tmp_path)
    assert [(e["command"], e["state"]) for e in log] == [("relay", "answered"), ("relay", "answered")]
    assert "000000" not in json.dumps([e["args"] for e in log])


def test_without_credentials_it_exits_non_zero_and_sends_nothing(tmp_path):
    with start_dlt645_sim(1) as bus:
        before = bus.frames_in
        result = control("relay-off", bus, bus.devices[0].address, tmp_path, {}, "--json")
        assert bus.frames_in == before and not bus.devices[0].relay_open
    assert result.returncode != 0 and "refused, nothing sent" in result.stderr
    assert_no_traceback(result)
    assert json.loads(result.stdout)["error"].startswith("refused, nothing sent")
    assert [e["state"] for e in audit(tmp_path)] == ["refused"]


def test_a_wrong_password_is_the_meters_refusal_named(tmp_path):
    with start_dlt645_sim(1) as bus:
        result = control("relay-off", bus, bus.devices[0].address, tmp_path,
                         {**GOOD, "METERHUB_DLT645_PASSWORD": "02123456"})
        assert not bus.devices[0].relay_open
    assert result.returncode == 1 and "password" in result.stderr.lower()
    assert_no_traceback(result)
    assert [e["state"] for e in audit(tmp_path)] == ["failed"]


def test_the_password_variable_is_pa_then_p2_p1_p0():
    entry = Dlt645EnvSecrets({"METERHUB_DLT645_PASSWORD": "04ABCDEF", "METERHUB_DLT645_OPERATOR": "0000001F"}).get("dlt645")
    assert dict(entry) == {"level": "4", "password": "ABCDEF", "operator": "0000001F"}
    with pytest.raises(CredentialNotFound):
        Dlt645EnvSecrets({"METERHUB_DLT645_PASSWORD": "04ABCDEF"}).get("meter-7")
    with pytest.raises(CredentialError, match="8 hex digits") as caught:
        Dlt645EnvSecrets({"METERHUB_DLT645_PASSWORD": "12345"}).get("dlt645")
    assert "12345" not in str(caught.value)


def test_a_policy_hook_that_refuses_stops_the_command_before_anything_is_sent(tmp_path):
    pytest.importorskip("meterhub_acme")  # the vendor plugin's policy: a trip needs confirm: true
    with start_dlt645_sim(1) as bus:
        before = bus.frames_in
        result = meterhub("control", "relay-off", "--port", bus.port, "--protocol", "dlt645", "--address",
                          bus.devices[0].address, "--db", str(tmp_path / "audit.db"), cwd=tmp_path, env=GOOD)
        assert bus.frames_in == before and not bus.devices[0].relay_open
    assert result.returncode == 1 and "ACME policy" in result.stderr
    assert [e["state"] for e in audit(tmp_path)] == ["refused"]


def test_valve_close_then_open_on_a_water_meter_needs_no_credentials(tmp_path):
    from meterhub.protocols.cjt188_sim import start_cjt188_sim

    with start_cjt188_sim(1) as bus:
        meter = bus.devices[0]
        args = ["--port", bus.port, "--protocol", "cjt188", "--address", meter.address, "--db", str(tmp_path / "audit.db")]
        closed = meterhub("control", "valve-close", *args, "--json", cwd=tmp_path)
        assert closed.returncode == 0, closed.stderr
        assert not meter.valve_open and json.loads(closed.stdout)["command"] == "valve-close"
        opened = meterhub("control", "valve-open", *args, cwd=tmp_path)
        assert opened.returncode == 0, opened.stderr
        assert meter.valve_open
    assert [(e["command"], e["state"]) for e in audit(tmp_path)] == [("valve", "answered"), ("valve", "answered")]
