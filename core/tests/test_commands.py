"""The command path fails closed and journals every command's life; secrets reach the driver only."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from meterhub.commands import REDACTED, run_command
from meterhub.errors import CommandFailed, CommandRefused, MeterTimeout
from meterhub.hookspecs import hookimpl
from meterhub.model import Command, CommandRecord, CommandState, Origin, utcnow
from meterhub.plugins import STRICT_ENV, Plugins
from meterhub.secrets import EnvSecrets, env_name

REF = "meter-000000000001"
PASSWORD = "135799"
OPERATOR = "24680024"
CREDENTIAL = {"password": PASSWORD, "operator": OPERATOR, "level": "04"}
NEEDS = {"password", "operator"}


@pytest.fixture(autouse=True)
def lenient_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """tox runs with METERHUB_STRICT_PLUGINS=1; the tests that want strict mode set it."""
    monkeypatch.delenv(STRICT_ENV, raising=False)


# --- a journal, policies and a driver to watch --------------------------------------------------


class Journal:
    """An in-memory command journal: every record it was given, in order."""

    def __init__(self, fail_on: Collection[CommandState] = ()) -> None:
        self.current: dict[str, CommandRecord] = {}
        self.history: list[CommandRecord] = []
        self.fail_on = set(fail_on)

    async def add_command(self, record: CommandRecord) -> None:
        if record.state in self.fail_on:
            raise sqlite3.OperationalError("database is locked")
        self.current[record.command.id] = record
        self.history.append(record)

    async def update_command(self, id: str, state: CommandState, *, reason: str = "",
                       answer: Mapping[str, Any] | None = None) -> CommandRecord:
        if state in self.fail_on:
            raise sqlite3.OperationalError("disk I/O error")
        record = attrs.evolve(self.current[id], state=state, updated=utcnow(), reason=reason, answer=answer)
        self.current[id] = record
        self.history.append(record)
        return record

    def states(self, id: str) -> list[CommandState]:
        return [r.state for r in self.history if r.command.id == id]

    def everything_stored(self) -> str:
        """Every field of every record, as text."""
        return "\n".join(repr(attrs.asdict(r, recurse=True)) for r in self.history)


class Allow:
    def __init__(self) -> None:
        self.seen: list[Command] = []

    @hookimpl
    def meterhub_before_command(self, command: Command) -> str | None:
        self.seen.append(command)
        return None


class Refuse:
    def __init__(self, reason: str = "relay control is locked during billing") -> None:
        self.reason = reason
        self.seen: list[Command] = []

    @hookimpl
    def meterhub_before_command(self, command: Command) -> str | None:
        self.seen.append(command)
        return self.reason


class Broken:
    @hookimpl
    def meterhub_before_command(self, command: Command) -> str | None:
        return command.args["no such arg"]  # KeyError: a policy bug


class AnswersTrue:
    @hookimpl
    def meterhub_before_command(self, command: Command) -> Any:
        return True  # meant "allowed"; only None allows


class Async:
    @hookimpl
    async def meterhub_before_command(self, command: Command) -> None:
        return None


class Driver:
    """``send``: records what it was given and answers, or raises."""

    def __init__(self, answer: Any = None, error: BaseException | None = None) -> None:
        self.answer = {"ok": True} if answer is None else answer
        self.error = error
        self.sent: list[Command] = []

    async def __call__(self, command: Command) -> Any:
        self.sent.append(command)
        if self.error is not None:
            raise self.error
        return self.answer


def plugins(*policies: tuple[str, Any]) -> Plugins:
    return Plugins(load_entry_points=False, extra=list(policies))


def relay(**changes: Any) -> Command:
    fields: dict[str, Any] = {"meter": "000000000001", "protocol": "dlt645", "name": "relay", "args": {"action": "trip"},
                              "origin": Origin.UPLINK, "issuer": "master-1", "credential": REF, "channel": "bus1"}
    fields.update(changes)
    return Command(**fields)


def run(command: Command, *, policies: Plugins | None = None, journal: Journal | None = None,
        driver: Driver | None = None, secrets: Any = None, needs: Any = NEEDS) -> Mapping[str, Any]:
    secrets = secrets or EnvSecrets(environ={env_name(REF, k): v for k, v in CREDENTIAL.items()})
    return asyncio.run(run_command(
        command, plugins=policies or plugins(), secrets=secrets, journal=journal or Journal(),
        send=driver or Driver(), needs=needs,
    ))


# --- policies ----------------------------------------------------------------------------------


def test_a_raising_policy_refuses_and_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_ENV, "1")  # strict or not: a broken policy refuses, it does not crash
    journal, driver, command = Journal(), Driver(), relay()
    with pytest.raises(CommandRefused, match=r"policy plugin broken failed: KeyError: 'no such arg'"):
        run(command, policies=plugins(("broken", Broken())), journal=journal, driver=driver)
    assert driver.sent == []
    assert journal.states(command.id) == [CommandState.REQUESTED, CommandState.REFUSED]
    assert "policy plugin broken failed: KeyError" in journal.current[command.id].reason


def test_a_raising_policy_is_reported_against_its_plugin() -> None:
    policies = plugins(("broken", Broken()))
    assert policies.ask_policies(relay()) == [("broken", "policy plugin broken failed: KeyError: 'no such arg'")]
    assert "KeyError" in next(i for i in policies.info() if i.name == "broken").error


def test_a_refusing_policy_refuses_with_its_reason() -> None:
    journal, driver, command = Journal(), Driver(), relay()
    with pytest.raises(CommandRefused, match="refused by policy plugin 'billing': relay control is locked"):
        run(command, policies=plugins(("billing", Refuse())), journal=journal, driver=driver)
    assert driver.sent == []
    assert journal.current[command.id].state is CommandState.REFUSED
    assert journal.current[command.id].reason == "refused by policy plugin 'billing': relay control is locked during billing"


@pytest.mark.parametrize("refusing_second", [True, False])
def test_any_one_of_two_policies_refuses_and_both_are_asked(refusing_second: bool) -> None:
    allow, refuse = Allow(), Refuse("no trips on Sundays")
    order = [("allow", allow), ("refuse", refuse)] if refusing_second else [("refuse", refuse), ("allow", allow)]
    driver = Driver()
    with pytest.raises(CommandRefused, match="no trips on Sundays"):
        run(relay(), policies=plugins(*order), driver=driver)
    assert driver.sent == []
    assert len(allow.seen) == len(refuse.seen) == 1


@pytest.mark.parametrize("policy", [AnswersTrue(), Async()], ids=["answers-True", "async"])
def test_a_policy_answering_anything_but_none_or_a_reason_refuses(policy: Any) -> None:
    driver = Driver()
    with pytest.raises(CommandRefused, match="policy plugin odd"):
        run(relay(), policies=plugins(("odd", policy)), driver=driver)
    assert driver.sent == []


def test_call_each_on_the_policy_hook_also_fails_closed() -> None:
    """The runtime's older path (call_each, then refuse on any reason) refuses on a broken policy too."""
    assert plugins(("broken", Broken())).call_each("meterhub_before_command", command=relay()) == [
        "policy plugin broken failed: KeyError: 'no such arg'"
    ]


def test_policies_see_the_command_without_its_secrets() -> None:
    allow = Allow()
    run(relay(), policies=plugins(("allow", allow)))
    (seen,) = allow.seen
    assert dict(seen.args) == {"action": "trip"}
    assert seen.credential == REF


# --- credentials ---------------------------------------------------------------------------------


def test_a_command_needing_credentials_that_names_none_is_refused_and_journalled() -> None:
    journal, driver, command = Journal(), Driver(), relay(credential="")
    with pytest.raises(CommandRefused, match=r"needs credentials \(operator, password\) but names no secret-store entry"):
        run(command, journal=journal, driver=driver)
    assert driver.sent == []
    record = journal.current[command.id]
    assert record.state is CommandState.REFUSED
    assert "names no secret-store entry" in record.reason


def test_a_credential_the_store_does_not_have_is_refused_saying_where_it_looked() -> None:
    journal, driver, command = Journal(), Driver(), relay(credential="meter-unknown")
    with pytest.raises(CommandRefused, match=r"no credential entry 'meter-unknown'.*METERHUB_SECRET_METER_UNKNOWN_<FIELD>"):
        run(command, journal=journal, driver=driver)
    assert driver.sent == []
    assert journal.current[command.id].state is CommandState.REFUSED


def test_an_entry_without_a_needed_field_is_refused_naming_the_field() -> None:
    secrets = EnvSecrets(environ={env_name(REF, "password"): PASSWORD})
    driver = Driver()
    with pytest.raises(CommandRefused, match=rf"needs operator of credential '{REF}'"):
        run(relay(), secrets=secrets, driver=driver)
    assert driver.sent == []


@pytest.mark.parametrize("args, secret", [
    ({"action": "trip", "password": "123456"}, "123456"),
    ({"action": "trip", "pin": "87654321"}, "87654321"),
    ({"action": "trip", "auth": {"newPassword": "999999"}}, "999999"),
    ({"action": "trip", "steps": [{"pin": "4711"}]}, "4711"),
])
def test_secrets_in_the_arguments_are_refused_and_not_journalled(args: dict[str, Any], secret: str) -> None:
    journal, driver, command = Journal(), Driver(), relay(args=args)
    with pytest.raises(CommandRefused, match="secrets come from the secret store, not the command's arguments"):
        run(command, journal=journal, driver=driver)
    assert driver.sent == []
    assert journal.states(command.id) == [CommandState.REQUESTED, CommandState.REFUSED]
    assert secret not in journal.everything_stored()
    assert REDACTED in repr(journal.current[command.id].command.args)


def test_a_privilege_level_in_the_arguments_is_refused_too() -> None:
    """The level goes with the password: both come from the credential entry."""
    with pytest.raises(CommandRefused, match="the arguments carry level"):
        run(relay(args={"action": "trip", "level": 4}))


def test_a_command_needing_no_credentials_is_sent_without_any() -> None:
    driver = Driver()
    run(relay(name="freeze", args={}, credential=""), driver=driver, needs=())
    assert dict(driver.sent[0].args) == {}


# --- sending and the journal -------------------------------------------------------------------


def test_secrets_reach_the_driver_but_never_the_journal() -> None:
    echo = {
        "command": "relay", "ok": True, "password": PASSWORD, "operatorCode": OPERATOR,
        "auth": {"pin": PASSWORD, "note": f"authorised with {PASSWORD}/{OPERATOR}"},
        "frames": [f"68 ... {OPERATOR} ... 16"], "raw": PASSWORD.encode(),
    }
    journal, driver, command = Journal(), Driver(answer=echo), relay()
    answer = run(command, journal=journal, driver=driver)
    (sent,) = driver.sent
    assert dict(sent.args) == {"action": "trip", "password": PASSWORD, "operator": OPERATOR, "level": "04"}
    assert sent.id == command.id
    stored = journal.everything_stored()
    assert PASSWORD not in stored and PASSWORD not in repr(answer)
    # the operator code says who acted: it is kept (the audit trail wants it), not masked
    assert OPERATOR in stored
    assert answer["auth"] == {"note": f"authorised with {REDACTED}/{OPERATOR}"}
    assert dict(journal.current[command.id].answer) == answer


def test_an_answered_command_is_journalled_requested_sent_answered() -> None:
    journal, command = Journal(), relay()
    answer = run(command, journal=journal, driver=Driver(answer={"action": "trip", "ok": True}))
    assert answer == {"action": "trip", "ok": True}
    assert journal.states(command.id) == [CommandState.REQUESTED, CommandState.SENT, CommandState.ANSWERED]
    record = journal.current[command.id]
    assert dict(record.answer) == {"action": "trip", "ok": True}
    assert record.command == command  # origin, issuer, credential reference and all


def test_a_failed_command_is_journalled_with_the_error_and_raised_again() -> None:
    journal, command = Journal(), relay()
    with pytest.raises(MeterTimeout, match="no answer within 2.1 s"):
        run(command, journal=journal, driver=Driver(error=MeterTimeout("meter 000000000001: no answer within 2.1 s")))
    assert journal.states(command.id) == [CommandState.REQUESTED, CommandState.SENT, CommandState.FAILED]
    assert journal.current[command.id].reason == "meter 000000000001: no answer within 2.1 s"


def test_a_driver_error_quoting_a_secret_is_masked_in_the_journal_and_the_error() -> None:
    journal, command = Journal(), relay()
    error = ValueError(f"password must be 6 hex digits, got {PASSWORD + 'z'!r}")  # as _hex_field words it
    with pytest.raises(CommandFailed) as caught:
        run(command, journal=journal, driver=Driver(error=error))
    assert PASSWORD not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert journal.current[command.id].reason == f"password must be 6 hex digits, got '{REDACTED}z'"


def test_an_answer_that_is_not_a_mapping_fails() -> None:
    journal, command = Journal(), relay()
    with pytest.raises(CommandFailed, match="answered list, not a mapping"):
        run(command, journal=journal, driver=Driver(answer=["ok"]))
    assert journal.current[command.id].state is CommandState.FAILED


def test_a_command_cancelled_while_sent_is_journalled_as_failed() -> None:
    journal, command = Journal(), relay()
    with pytest.raises(asyncio.CancelledError):
        run(command, journal=journal, driver=Driver(error=asyncio.CancelledError()))
    record = journal.current[command.id]
    assert record.state is CommandState.FAILED
    assert "may or may not have carried it out" in record.reason


@pytest.mark.parametrize("failing", [CommandState.REQUESTED, CommandState.SENT])
def test_a_journal_that_cannot_record_stops_the_command_before_it_is_sent(failing: CommandState) -> None:
    journal, driver, allow = Journal(fail_on={failing}), Driver(), Allow()
    with pytest.raises(sqlite3.OperationalError):
        run(relay(), journal=journal, driver=driver, policies=plugins(("allow", allow)))
    assert driver.sent == []
    if failing is CommandState.REQUESTED:
        assert journal.history == [] and allow.seen == []  # not even checked


def test_a_journal_failing_on_the_refusal_still_refuses() -> None:
    journal, driver = Journal(fail_on={CommandState.REFUSED}), Driver()
    with pytest.raises(CommandRefused):
        run(relay(), journal=journal, driver=driver, policies=plugins(("billing", Refuse())))
    assert driver.sent == []


def test_a_secret_store_that_breaks_refuses() -> None:
    class Exploding:
        def get(self, ref: str) -> Mapping[str, str]:
            raise OSError("keychain daemon gone")

    journal, driver, command = Journal(), Driver(), relay()
    with pytest.raises(CommandRefused, match="could not be checked: OSError: keychain daemon gone"):
        run(command, journal=journal, driver=driver, secrets=Exploding())
    assert driver.sent == []
    assert journal.current[command.id].state is CommandState.REFUSED


# --- no secret anywhere, whatever it is ------------------------------------------------------------


#: Secrets with a marker, so they cannot turn up by chance in an id, an address or a time.
secrets_st = st.text(alphabet="0123456789ABCDEF", min_size=4, max_size=16).map(lambda s: f"#{s}%")


@settings(max_examples=40, deadline=None)
@given(password=secrets_st, operator=secrets_st)
@example(password="#000000000001%", operator="#0000%")  # a password that contains the meter's address
def test_no_secret_value_is_journalled_or_raised_whatever_happens(password: str, operator: str) -> None:
    # (the operator code is a credential field but not a secret: it may show; the password never)
    environ = {env_name(REF, "password"): password, env_name(REF, "operator"): operator}
    secrets = EnvSecrets(environ=environ)
    journal = Journal()
    texts: list[str] = []
    scenarios: list[dict[str, Any]] = [
        {"driver": Driver(answer={"password": password, "echo": f"{password}{operator}", "nested": [{"pin": password}]})},
        {"driver": Driver(error=ValueError(f"password must be 6 hex digits, got {password!r}"))},
        {"driver": Driver(error=MeterTimeout(f"{password} timed out"))},
        {"policies": plugins(("broken", Broken()))},
        {"policies": plugins(("billing", Refuse()))},
        {"secrets": EnvSecrets(environ={env_name(REF, "password"): password})},  # operator missing
        {"command": relay(args={"action": "trip", "password": password})},
    ]
    for scenario in scenarios:
        command = scenario.pop("command", relay())
        try:
            texts.append(repr(run(command, journal=journal, secrets=scenario.pop("secrets", secrets), **scenario)))
        except Exception as exc:
            texts.append(f"{type(exc).__name__}: {exc}")
    texts.append(journal.everything_stored())
    for text in texts:
        assert password not in text, text
