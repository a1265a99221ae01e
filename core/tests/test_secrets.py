"""The secret store: env naming, a secrets file only its owner may read, the keyring, chain order,
and no secret value in any message."""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub import secrets as secrets_module
from meterhub.errors import CredentialError, CredentialNotFound
from meterhub.secrets import (
    SECRETS_ENV,
    ChainSecrets,
    EnvSecrets,
    FileSecrets,
    KeyringSecrets,
    default_secrets,
    env_name,
    is_secret_name,
)

REF = "meter-000000000001"
GOOD = """\
meter-000000000001:
  password: "123456"
  operator: 00000001
  level: 02
"""


def secrets_file(tmp: Path, text: str = GOOD, mode: int = 0o600, name: str = "secrets.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture(autouse=True)
def no_meterhub_secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' environment is their own: no METERHUB_SECRET_* of the shell leaks in."""
    for name in list(os.environ):
        if name.startswith("METERHUB_SECRET"):
            monkeypatch.delenv(name)


@pytest.fixture
def no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import keyring`` fails, as where the package is not installed."""
    monkeypatch.setitem(sys.modules, "keyring", None)


@pytest.fixture
def fake_keyring(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], str]:
    """A stand-in ``keyring`` module: the keyring package is not installed in this venv, so its
    ``get_password`` is stubbed in sys.modules (the real one's API: service, user → password)."""
    store: dict[tuple[str, str], str] = {}
    module = types.ModuleType("keyring")
    module.get_password = lambda service, user: store.get((service, user))  # type: ignore[attr-defined]
    errors = types.ModuleType("keyring.errors")

    class NoKeyringError(RuntimeError):
        pass

    errors.NoKeyringError = NoKeyringError  # type: ignore[attr-defined]
    module.errors = errors  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", module)
    monkeypatch.setitem(sys.modules, "keyring.errors", errors)
    return store


# --- the environment ---------------------------------------------------------------------------


def test_env_name_upper_cases_and_turns_every_other_character_into_underscores() -> None:
    assert env_name("meter-000000000001", "password") == "METERHUB_SECRET_METER_000000000001_PASSWORD"
    assert env_name("bus 1/meter.é", "operator") == "METERHUB_SECRET_BUS_1_METER___OPERATOR"


def test_env_secrets_gives_the_fields_that_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_PASSWORD", "123456")
    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_LEVEL", "02")
    monkeypatch.setenv("METERHUB_SECRET_METER_000000000001_OPERATOR", "")  # empty counts as unset
    assert dict(EnvSecrets().get(REF)) == {"password": "123456", "level": "02"}


def test_env_secrets_says_which_variables_it_looked_for() -> None:
    with pytest.raises(CredentialNotFound, match=r"METERHUB_SECRET_METER_000000000001_<FIELD>.*PASSWORD"):
        EnvSecrets(environ={}).get(REF)


def test_an_empty_reference_is_an_error() -> None:
    with pytest.raises(CredentialError, match="non-empty name"):
        EnvSecrets(environ={}).get("  ")


# --- the secrets file --------------------------------------------------------------------------


def test_a_file_only_its_owner_may_read_is_used_and_values_are_taken_as_written(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, mode=0o600)
    # unquoted 00000001 and 02 stay text: YAML would have read them as numbers 1 and 2
    assert dict(FileSecrets(path).get(REF)) == {"password": "123456", "operator": "00000001", "level": "02"}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666, 0o610])
def test_a_file_others_may_read_or_change_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = secrets_file(tmp_path, mode=mode)
    with pytest.raises(CredentialError) as caught:
        FileSecrets(path).get(REF)
    message = str(caught.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert f"chmod 600 {path}" in message


def test_a_file_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as root here, the process is pretended to be uid 4242 (the file is root's)."""
    path = secrets_file(tmp_path)
    owner = path.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)
    with pytest.raises(CredentialError, match=rf"owned by uid {owner}, not by this process's user"):
        FileSecrets(path).get(REF)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_root_may_use_a_file_of_another_owner_but_not_one_others_may_read(tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    os.chown(path, 4242, 4242)
    assert FileSecrets(path).get(REF)["password"] == "123456"
    path.chmod(0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        FileSecrets(path).get(REF)


def test_a_configured_file_must_exist_but_the_default_one_may_not(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(CredentialError, match=rf"{missing}: does not exist") as caught:
        FileSecrets(missing).get(REF)
    assert not isinstance(caught.value, CredentialNotFound)
    with pytest.raises(CredentialNotFound, match="does not exist"):
        FileSecrets(missing, required=False).get(REF)


def test_a_directory_is_not_a_secrets_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="not a regular file"):
        FileSecrets(tmp_path).get(REF)


def test_an_empty_file_has_no_entries(tmp_path: Path) -> None:
    path = secrets_file(tmp_path, "# nothing yet\n")
    with pytest.raises(CredentialNotFound, match=rf"file {path} \(no entry"):
        FileSecrets(path).get(REF)


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("meter-1:\n  password: [\"123456\"]\n", 2, "entry 'meter-1' field 'password' must be text, not a list"),
        ("meter-1:\n  password:\n", 2, "entry 'meter-1' field 'password' has no value"),
        ("meter-1: \"123456\"\n", 1, "entry 'meter-1' must map field names to text"),
        ("- meter-1\n", 1, "must map entry names to their fields"),
        ("meter-1:\n  password: \"1\"\nmeter-1:\n  password: \"2\"\n", 3, "written twice (first on line 1)"),
        ("meter-1:\n  password: \"1\"\n  password: \"2\"\n", 3, "field 'password' is written twice"),
        ("base: &b\n  password: \"1\"\nmeter-1:\n  <<: *b\n", 4, "merge keys (<<) are not supported"),
        ("meter-1:\n  password: \"123456\n", 3, "invalid YAML"),
        ("meter-1:\n\tpassword: x\n", 2, "invalid YAML"),
    ],
)
def test_malformed_content_names_the_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = secrets_file(tmp_path, text)
    with pytest.raises(CredentialError) as caught:
        FileSecrets(path).get("meter-1")
    message = str(caught.value)
    assert f"{path}:{line}" in message
    assert words in message


def test_a_file_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_bytes(b"meter-1:\n  password: \"\xff\xfe\"\n")
    path.chmod(0o600)
    with pytest.raises(CredentialError, match=rf"{path}:2: not UTF-8"):
        FileSecrets(path).get("meter-1")


# --- the keyring --------------------------------------------------------------------------------


def test_without_the_keyring_package_the_keyring_is_not_used_and_says_so(no_keyring: None) -> None:
    with pytest.raises(CredentialNotFound, match="keyring package is not installed"):
        KeyringSecrets().get(REF)


def test_keyring_entries_are_service_meterhub_user_ref_slash_field(fake_keyring: dict) -> None:
    fake_keyring[("meterhub", f"{REF}/password")] = "123456"
    fake_keyring[("meterhub", f"{REF}/operator")] = "00000001"
    assert dict(KeyringSecrets().get(REF)) == {"password": "123456", "operator": "00000001"}
    with pytest.raises(CredentialNotFound, match=r"service 'meterhub': no user other/<field>"):
        KeyringSecrets().get("other")


def test_a_keyring_without_a_backend_is_not_used(fake_keyring: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = sys.modules["keyring"]

    def no_backend(service: str, user: str) -> str:
        raise keyring.errors.NoKeyringError("No recommended backend was available")

    monkeypatch.setattr(keyring, "get_password", no_backend)
    with pytest.raises(CredentialNotFound, match="no keyring backend"):
        KeyringSecrets().get(REF)


def test_a_failing_keyring_is_an_error_not_an_absence(fake_keyring: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(service: str, user: str) -> str:
        raise PermissionError("the collection is locked")

    monkeypatch.setattr(sys.modules["keyring"], "get_password", locked)
    with pytest.raises(CredentialError, match="PermissionError") as caught:
        KeyringSecrets().get(REF)
    assert not isinstance(caught.value, CredentialNotFound)


# --- the chain ----------------------------------------------------------------------------------


def test_the_first_source_with_the_entry_gives_all_of_it(tmp_path: Path) -> None:
    env = EnvSecrets(environ={env_name(REF, "password"): "654321"})
    chain = ChainSecrets([env, FileSecrets(secrets_file(tmp_path))])
    # the file's operator and level are not mixed in: an entry is all from one source
    assert dict(chain.get(REF)) == {"password": "654321"}


def test_the_chain_falls_through_to_the_next_source(tmp_path: Path) -> None:
    chain = ChainSecrets([EnvSecrets(environ={}), FileSecrets(secrets_file(tmp_path))])
    assert chain.get(REF)["operator"] == "00000001"


def test_a_broken_source_stops_the_chain(tmp_path: Path, fake_keyring: dict) -> None:
    fake_keyring[("meterhub", f"{REF}/password")] = "123456"
    chain = ChainSecrets([EnvSecrets(environ={}), FileSecrets(secrets_file(tmp_path, mode=0o644)), KeyringSecrets()])
    with pytest.raises(CredentialError, match="chmod 600"):
        chain.get(REF)


def test_an_entry_nowhere_says_every_source_tried(tmp_path: Path, no_keyring: None) -> None:
    chain = ChainSecrets([EnvSecrets(environ={}), FileSecrets(tmp_path / "none.yaml", required=False), KeyringSecrets()])
    with pytest.raises(CredentialNotFound) as caught:
        chain.get(REF)
    message = str(caught.value)
    assert "METERHUB_SECRET_METER_000000000001_<FIELD>" in message
    assert f"file {tmp_path / 'none.yaml'} (does not exist)" in message
    assert "keyring (not used: the keyring package is not installed)" in message


def test_default_secrets_is_env_then_default_file_then_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_keyring: dict
) -> None:
    monkeypatch.delenv(SECRETS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    fake_keyring[("meterhub", f"{REF}/password")] = "from-keyring"
    store = default_secrets()
    assert store.get(REF)["password"] == "from-keyring"  # the default file may be missing
    config = tmp_path / ".config" / "meterhub"
    config.mkdir(parents=True)
    secrets_file(config)
    assert store.get(REF)["password"] == "123456"
    monkeypatch.setenv(env_name(REF, "password"), "from-env")
    assert dict(store.get(REF)) == {"password": "from-env"}


def test_a_secrets_file_named_by_the_environment_or_the_caller_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_keyring: None
) -> None:
    monkeypatch.setenv(SECRETS_ENV, str(tmp_path / "gone.yaml"))
    with pytest.raises(CredentialError, match="gone.yaml: does not exist"):
        default_secrets().get(REF)
    monkeypatch.delenv(SECRETS_ENV)
    with pytest.raises(CredentialError, match="also-gone.yaml: does not exist"):
        default_secrets(tmp_path / "also-gone.yaml").get(REF)


# --- names and messages -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["password", "PIN", "new_password", "newPassword", "auth-key", "api_token"])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["action", "level", "di", "valid_until", "baudrate", "address", "keyboard"])
def test_names_that_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


#: Secret values as a user might write them: long enough not to occur by chance in a message.
secret_values = st.text(alphabet="0123456789abcdefABCDEF#%+", min_size=8, max_size=24)

#: Secrets files that are wrong in every way this module reports, each holding SECRET.
BROKEN_FILES = [
    "{ref}:\n  password: [\"SECRET\"]\n",
    "{ref}:\n  password: {{a: \"SECRET\"}}\n",
    "{ref}: \"SECRET\"\n",
    "- \"SECRET\"\n",
    "{ref}:\n  password: \"SECRET\"\n  password: \"SECRET\"\n",
    "{ref}:\n  password: \"SECRET\n",
    "{ref}:\n  password: SECRET: SECRET\n",
    "{ref}:\n  password: 'SECRET' x\n",
    "{ref}:\n\tpassword: SECRET\n",
    "{ref}:\n  password: !!int SECRET\n  operator: SECRET\n  operator: SECRET\n",
    "? [SECRET]\n: x\n",
]


@settings(max_examples=40, deadline=None)
@given(secret=secret_values)
def test_no_secret_value_appears_in_any_error_message(secret: str) -> None:
    ref = "meter-1"
    messages: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, template in enumerate(BROKEN_FILES):
            path = secrets_file(Path(tmp), template.format(ref=ref).replace("SECRET", secret), name=f"broken{i}.yaml")
            with pytest.raises(CredentialError) as caught:
                FileSecrets(path).get(ref)
            messages.append(str(caught.value))
        readable = secrets_file(Path(tmp), f"{ref}:\n  password: \"{secret}\"\n", mode=0o644, name="readable.yaml")
        with pytest.raises(CredentialError) as caught:
            FileSecrets(readable).get(ref)
        messages.append(str(caught.value))
        good = secrets_file(Path(tmp), f"{ref}:\n  password: \"{secret}\"\n", name="good.yaml")
        with pytest.raises(CredentialNotFound) as caught:  # another entry than the one there
            ChainSecrets([EnvSecrets(environ={env_name(ref, "pin"): secret}), FileSecrets(good)]).get("meter-2")
        messages.append(str(caught.value))
    for message in messages:
        assert secret not in message, message


def test_module_messages_never_format_a_value() -> None:
    """The module's own error texts name entries, fields, files and lines; a reviewer's check
    that no f-string in it interpolates a field's value."""
    source = Path(secrets_module.__file__).read_text()
    for forbidden in ("{value}", "{value!r}", "{found", "{entry}", "{fields}"):
        assert forbidden not in source
