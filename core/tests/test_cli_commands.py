"""``meterhub commands``: the audited command log as people and scripts read it, from a real
SQLite file that the real command path (``Concentrator.execute``) wrote."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from meterhub import plugins as plugins_module
from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.cli import cli
from meterhub.cli.commands import commands_cmd
from meterhub.errors import CommandRefused, MeterTimeout
from meterhub.hookspecs import hookimpl
from meterhub.model import (
    ChannelConfig,
    Command,
    CommandRecord,
    CommandState,
    Meter,
    Origin,
    SerialSettings,
    Site,
)
from meterhub.plugins import STRICT_ENV, Plugins
from meterhub.runtime import Concentrator
from meterhub.secrets import EnvSecrets, env_name
from meterhub.store import open_store

SETTINGS = SerialSettings(9600, 8, "N", 1)
CREDENTIAL = "meter-000000000001"
PASSWORD = "917364"  # values no other text in the output could hold by chance
OPERATOR = "55501234"
JSON_KEYS = ["id", "meter", "protocol", "channel", "command", "args", "origin", "issuer", "credential",
             "requested", "state", "updated", "reason", "answer"]


# --- a concentrator with one meter on a fake line --------------------------------------------


class QuietLink:
    """A link nobody answers on: the toy driver's commands never use the line."""

    def __init__(self, name: str, port: str, settings: SerialSettings) -> None:
        self.name, self.port, self.settings = name, port, settings

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(self, data: bytes) -> None:
        pass

    async def read(self, timeout: float) -> bytes:
        await asyncio.sleep(min(timeout, 0.01))
        return b""

    async def reset_input(self) -> None:
        pass

    async def apply_settings(self, settings: SerialSettings) -> None:
        self.settings = settings


class QuietTransport:
    name = "quiet"
    description = "in-test links nobody answers on"

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        return []

    def create_channel(self, channel: ChannelConfig) -> HalfDuplexChannel:
        return HalfDuplexChannel(channel.name, QuietLink(channel.name, channel.port, channel.settings))


class ToyDriver:
    """Relay control and clearing need a password and an operator code, as in DL/T 645;
    ``freeze`` finds the meter silent. Its answer echoes the password, as a careless
    driver's might: the command path must keep it out of the journal."""

    name = "toy"
    description = "in-test meter commands"
    default_settings = SETTINGS

    def normalize_address(self, address: str) -> str:
        return address

    def supported_quantities(self) -> set[str]:
        return set()

    def transaction_timeout(self, settings: SerialSettings) -> float:
        return 0.05

    async def read(self, bus: Any, meter: Meter, quantity: Any, timeout: float) -> Any:
        raise MeterTimeout("no reads here")

    async def scan(self, bus: Any, timeout: float) -> list[str]:
        return []

    def command_credentials(self, name: str) -> set[str]:
        return {"password", "operator"} if name in ("relay", "clear") else set()

    async def execute(self, bus: Any, meter: Meter, command: Command, timeout: float) -> dict[str, Any]:
        if command.name == "freeze":
            raise MeterTimeout(f"meter {meter.address} did not answer within 0.2 s")
        password = command.args.get("password", "")
        return {"relay": command.args.get("action", ""), "password": password, "note": f"accepted with {password}"}


class TestPlugin:
    @hookimpl
    def meterhub_register_meter_drivers(self, register: Any) -> None:
        register(ToyDriver())

    @hookimpl
    def meterhub_register_transports(self, register: Any) -> None:
        register(QuietTransport())


class BillingLock:
    """A policy plugin: no clearing while bills are being made."""

    @hookimpl
    def meterhub_before_command(self, command: Command) -> str | None:
        return "clearing is locked during billing" if command.name == "clear" else None


METER = Meter(address="000000000001", protocol="toy", channel="bus1")


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins_module, "DEFAULT_PLUGINS", ())
    monkeypatch.delenv(STRICT_ENV, raising=False)


@pytest.fixture
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env_name(CREDENTIAL, "password"), PASSWORD)
    monkeypatch.setenv(env_name(CREDENTIAL, "operator"), OPERATOR)


@pytest.fixture
def journal(tmp_path: Path, secrets_in_env: None) -> Path:
    """A store file holding four commands, each taken through ``Concentrator.execute``:
    answered (with credentials), refused (no credentials), refused (policy), failed."""
    path = tmp_path / "meterhub.db"
    plugins = Plugins(load_entry_points=False, extra=[("testplugin", TestPlugin()), ("billing-lock", BillingLock())])
    site = Site(channels={"bus1": ChannelConfig("bus1", "quiet", "/dev/quiet", SETTINGS)}, meters=(METER,))
    commands = [
        (Command(METER.address, "toy", "relay", {"action": "open"}, credential=CREDENTIAL, issuer="alice"), None),
        (Command(METER.address, "toy", "relay", {"action": "close"}, origin=Origin.UPLINK, issuer="master-7"),
         CommandRefused),
        (Command(METER.address, "toy", "clear", credential=CREDENTIAL, origin=Origin.SCHEDULE, issuer="nightly"),
         CommandRefused),
        (Command(METER.address, "toy", "freeze", origin=Origin.PLUGIN, issuer="autofreeze"), MeterTimeout),
    ]

    async def go() -> None:
        async with Concentrator(site, plugins=plugins, store=store, secrets=EnvSecrets()) as concentrator:
            for command, error in commands:
                if error is None:
                    await concentrator.execute(METER, command)
                else:
                    with pytest.raises(error):
                        await concentrator.execute(METER, command)

    with open_store(f"sqlite:///{path}") as store:
        asyncio.run(go())
    return path


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(commands_cmd, list(args), env={"COLUMNS": "200", **env})


def listed(path: Path, *args: str) -> list[dict[str, Any]]:
    result = run("--db", str(path), "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# --- what the log says -----------------------------------------------------------------------------


def test_json_gives_every_command_with_its_origin_issuer_state_and_outcome(journal: Path) -> None:
    rows = listed(journal)
    assert [list(row) for row in rows] == [JSON_KEYS] * 4
    assert [(r["command"], r["origin"], r["issuer"], r["state"]) for r in rows] == [
        ("relay", "cli", "alice", "answered"),
        ("relay", "uplink", "master-7", "refused"),
        ("clear", "schedule", "nightly", "refused"),
        ("freeze", "plugin", "autofreeze", "failed"),
    ]
    answered, no_credential, by_policy, silent = rows
    assert answered["answer"] == {"relay": "open", "note": "accepted with ***"} and answered["reason"] == ""
    assert no_credential["reason"] == "relay needs credentials (operator, password) but names no secret-store entry"
    assert by_policy["reason"] == "refused by policy plugin 'billing-lock': clearing is locked during billing"
    assert silent["reason"] == "meter 000000000001 did not answer within 0.2 s"
    assert no_credential["answer"] is None and silent["answer"] is None


def test_json_names_the_meter_and_the_credential_reference(journal: Path) -> None:
    first = listed(journal)[0]
    assert (first["meter"], first["protocol"], first["channel"]) == ("000000000001", "toy", "bus1")
    assert (first["args"], first["credential"]) == ({"action": "open"}, CREDENTIAL)
    assert len(first["id"]) == 32
    requested, updated = datetime.fromisoformat(first["requested"]), datetime.fromisoformat(first["updated"])
    assert requested.utcoffset() == timedelta(0) and requested <= updated


def test_no_secret_value_appears_in_the_table_or_the_json(journal: Path) -> None:
    table, as_json = run("--db", str(journal)), run("--db", str(journal), "--json")
    assert CREDENTIAL in as_json.stdout  # the reference is shown; what it refers to is not
    for result in (table, as_json):
        assert result.exit_code == 0, result.stderr
        for secret in (PASSWORD, OPERATOR):
            assert secret not in result.stdout and secret not in result.stderr
    assert PASSWORD.encode() not in journal.read_bytes() and OPERATOR.encode() not in journal.read_bytes()


def test_the_table_shows_each_command_oldest_first(journal: Path) -> None:
    result = run("--db", str(journal))
    assert result.exit_code == 0 and result.stderr == ""
    ids = [row["id"][:8] for row in listed(journal)]
    lines = result.stdout.splitlines()
    assert "commands (2 refused, 1 answered, 1 failed)" in lines[0]
    rows = [next(line for line in lines if short in line) for short in ids]
    assert [lines.index(row) for row in rows] == sorted(lines.index(row) for row in rows)
    assert all("bus1/toy:000000000001" in row for row in rows)
    assert "alice" in rows[0] and "answered" in rows[0] and "note=accepted with ***, relay=open" in rows[0]
    assert "master-7" in rows[1] and "needs credentials" in rows[1]
    assert "nightly" in rows[2] and "refused by policy plugin 'billing-lock'" in rows[2]
    assert "autofreeze" in rows[3] and "failed" in rows[3] and "did not answer" in rows[3]


def test_an_80_column_terminal_gets_every_field_in_pairs(journal: Path) -> None:
    result = run("--db", str(journal), COLUMNS="80")
    assert result.exit_code == 0
    assert max(len(line.rstrip()) for line in result.stdout.splitlines()) <= 80
    words = " ".join(result.stdout.split())
    for row in listed(journal):
        assert row["id"][:8] in words and row["issuer"] in words and row["state"] in words
    for part in ("requested / id", "meter / command", "origin / issuer", "state / outcome",
                 "needs credentials (operator, password) but names no secret-store entry",
                 "refused by policy plugin 'billing-lock': clearing is locked during billing"):
        assert part in words


def test_the_real_command_prints_json_on_stdout_alone(journal: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "meterhub.cli", "commands", "--db", str(journal), "--json",
                             "--state", "refused"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = json.loads(result.stdout)
    assert [(r["command"], r["origin"]) for r in rows] == [("relay", "uplink"), ("clear", "schedule")]
    assert PASSWORD not in result.stdout and OPERATOR not in result.stdout


def test_the_command_is_registered() -> None:
    assert cli.get_command(click.Context(cli), "commands") is commands_cmd


# --- filters -----------------------------------------------------------------------------------------

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

#: (address, protocol, channel, origin, state): two meters share address 1 on bus1, a third has it on bus2
LOG = [
    ("1", "modbus", "bus1", Origin.CLI, CommandState.ANSWERED),
    ("1", "mbus", "bus1", Origin.UPLINK, CommandState.REFUSED),
    ("000000000001", "dlt645", "bus2", Origin.SCHEDULE, CommandState.FAILED),
    ("1", "modbus", "bus2", Origin.PLUGIN, CommandState.SENT),
    ("000000000001", "dlt645", "bus2", Origin.CLI, CommandState.REQUESTED),
]


def command_id(index: int) -> str:
    return f"{index:x}" * 32


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Five commands an hour apart, written through the store, one in each state."""
    path = tmp_path / "log.db"
    with open_store(f"sqlite:///{path}") as store:
        for i, (address, protocol, channel, origin, state) in enumerate(LOG):
            requested = T0 + timedelta(hours=i)
            command = Command(address, protocol, "relay", {"action": "open"}, id=command_id(i), origin=origin,
                              channel=channel, requested=requested, issuer=f"issuer-{i}")
            store.add_command(CommandRecord(command, CommandState.REQUESTED, requested))
            at = requested + timedelta(seconds=1)
            if state is CommandState.REFUSED:
                store.update_command(command.id, state, reason="refused by policy plugin 'lock': locked", at=at)
            elif state is not CommandState.REQUESTED:
                store.update_command(command.id, CommandState.SENT, at=at)
                if state is CommandState.ANSWERED:
                    store.update_command(command.id, state, answer={"relay": "open"}, at=at)
                elif state is CommandState.FAILED:
                    store.update_command(command.id, state, reason="no answer", at=at)
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), [0, 1, 2, 3, 4]),
        (("--state", "refused"), [1]),
        (("--state", "sent"), [3]),
        (("--origin", "cli"), [0, 4]),
        (("--meter", "1"), [0, 1, 3]),
        (("--meter", "modbus:1"), [0, 3]),
        (("--meter", "bus2/modbus:1"), [3]),
        (("--meter", "000000000001"), [2, 4]),
        (("--since", "2026-12-02T11:00:00Z"), [2, 3, 4]),
        (("--since", "2026-12-02T19:00:00+08:00"), [2, 3, 4]),
        (("--meter", "1", "--origin", "uplink"), [1]),
        (("--limit", "2"), [3, 4]),
        (("--meter", "modbus:1", "--limit", "1"), [3]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_filters(log: Path, args: tuple[str, ...], expected: list[int]) -> None:
    assert [row["id"] for row in listed(log, *args)] == [command_id(i) for i in expected]


def test_the_filtered_states_reasons_and_answers_are_as_stored(log: Path) -> None:
    rows = {row["id"]: row for row in listed(log)}
    assert rows[command_id(0)]["answer"] == {"relay": "open"}
    assert rows[command_id(1)]["reason"] == "refused by policy plugin 'lock': locked"
    assert rows[command_id(2)]["reason"] == "no answer"
    assert rows[command_id(4)]["state"] == "requested" and rows[command_id(4)]["answer"] is None


def test_filters_that_match_nothing_say_so_on_stderr(log: Path) -> None:
    result = run("--db", str(log), "--state", "refused", "--origin", "cli")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == f"no command in {log} matches these filters\n"


# --- errors and the empty log ---------------------------------------------------------------------------


def test_a_missing_file_is_an_error_naming_it_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.db"
    result = run("--db", str(path), "--json")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"error: {path}: no such file\n"
    assert not path.exists()


def test_db_defaults_to_meterhub_db_in_the_working_directory(
        journal: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert journal == tmp_path / "meterhub.db"
    result = run("--json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 4
    journal.unlink()
    result = run()
    assert (result.exit_code, result.stderr) == (2, "error: meterhub.db: no such file\n")
    assert not journal.exists()


def test_an_empty_log_says_so_on_stderr_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    open_store(f"sqlite:///{path}").close()
    result = run("--db", str(path))
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == f"no commands in {path}: the log is empty\n"


def test_an_empty_log_in_json_is_an_empty_list(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    open_store(f"sqlite:///{path}").close()
    result = run("--db", str(path), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "error: --since 'yesterday': expected a date or ISO time"),
        (("--meter", "bus1/"), "error: --meter 'bus1/': expected ADDRESS, PROTOCOL:ADDRESS or CHANNEL/PROTOCOL:ADDRESS"),
        (("--state", "done"), "Error: Invalid value for '--state': 'done' is not one of"),
        (("--limit", "0"), "Error: Invalid value for '--limit': 0 is not in the range x>=1"),
    ],
    ids=["since", "meter", "state", "limit"],
)
def test_a_bad_argument_is_one_clear_line_and_status_2(log: Path, args: tuple[str, ...], message: str) -> None:
    result = run("--db", str(log), "--json", *args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
    assert line.startswith(message)


# --- text the log holds is shown, never obeyed --------------------------------------------------------------


def _one_command(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "one.db"
    command = Command("1", "modbus", "relay", channel="bus1", requested=T0, **fields)
    with open_store(f"sqlite:///{path}") as store:
        store.add_command(CommandRecord(command, CommandState.REQUESTED, T0))
    return path


def test_the_table_shows_markup_and_control_characters_literally(tmp_path: Path) -> None:
    path = _one_command(tmp_path, issuer="[red]mallory\x1b[2J", origin=Origin.UPLINK)
    result = run("--db", str(path))
    assert result.exit_code == 0
    assert "[red]mallory\\x1b[2J" in result.stdout and "\x1b" not in result.stdout


def test_a_secret_named_argument_written_around_the_command_path_is_masked(tmp_path: Path) -> None:
    path = _one_command(tmp_path, args={"action": "open", "password": PASSWORD, "extra": {"pin": "0000"}})
    row = listed(path)[0]
    assert row["args"] == {"action": "open", "password": "***", "extra": {"pin": "***"}}


def test_a_command_on_the_concentrator_itself_is_shown_as_such(tmp_path: Path) -> None:
    path = tmp_path / "one.db"
    command = Command("", "", "set_clock", {"time": "2030-01-02T03:04:05"}, origin=Origin.UPLINK,
                      issuer="gdw1376.1 master 1", requested=T0)
    with open_store(f"sqlite:///{path}") as store:
        store.add_command(CommandRecord(command, CommandState.REQUESTED, T0))
    result = run("--db", str(path))
    assert result.exit_code == 0 and "(concentrator)" in result.stdout and "set_clock" in result.stdout
    assert listed(path)[0]["meter"] == ""
