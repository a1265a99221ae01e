"""The secret store: where meter passwords and operator codes live, apart from the site file.

A command names a credential entry (``Command.credential``, e.g. ``meter-000000000001``);
the command path looks it up here just before sending and hands its fields to the driver
alone. An entry is a few named text fields::

    meter-000000000001:
      password: "123456"     # DL/T 645: 6 hex digits, written most significant first
      operator: "00000001"   # DL/T 645: 8 hex digits
      level: "02"            # the privilege level the password belongs to

Sources, tried in this order by :func:`default_secrets`: the environment
(:class:`EnvSecrets`), a YAML file only its owner may read (:class:`FileSecrets`), and the
system keyring where the ``keyring`` package is installed (:class:`KeyringSecrets`). The
first source that has an entry gives all of it (:class:`ChainSecrets`). No message of this
module holds a secret value: they name sources, entries, fields, files and lines.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Protocol

import yaml

from .errors import ConfigIssue, CredentialError, CredentialNotFound
from .yamlnodes import compose_yaml, line_at, too_large

#: Fields of a credential entry whose values are secret: never stored, logged or shown. A
#: command's ``args`` may not carry them, and they are dropped from a driver's answer.
#: ``operator`` is the DL/T 645 operator code, which authorises like a password.
SECRET_FIELDS = frozenset({"password", "passwd", "passphrase", "pin", "key", "secret", "token"})
#: Fields an entry may carry that are part of a credential but not secret: the DL/T 645
#: privilege level (PA) that a password belongs to, and the operator code (C0..C3), which
#: says who acted (the meter logs it with each change) and proves nothing by itself, and
#: the user name a password belongs to (an MQTT broker's login). They come from the secret
#: store with the password and are refused in a command's arguments, but they are not
#: masked where they show.
PUBLIC_CREDENTIAL_FIELDS = frozenset({"level", "operator", "username"})
#: Every field a credential entry may hand a driver (sources that cannot list an entry's
#: fields, the environment and the keyring, look for these).
CREDENTIAL_FIELDS = SECRET_FIELDS | PUBLIC_CREDENTIAL_FIELDS

ENV_PREFIX = "METERHUB_SECRET_"
#: Names the secrets file (overrides the default path; a file named here must exist).
SECRETS_ENV = "METERHUB_SECRETS"
DEFAULT_SECRETS_PATH = "~/.config/meterhub/secrets.yaml"
#: The service name entries are kept under in the system keyring.
KEYRING_SERVICE = "meterhub"
#: A secrets file holds a few lines per meter: 1 MiB is tens of thousands of entries.
MAX_SECRETS_FILE_BYTES = 1 << 20
#: Permission bits a secrets file may not have: any for its group or for others.
_OTHERS_BITS = stat.S_IRWXG | stat.S_IRWXO

_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class SecretStore(Protocol):
    """Where credential entries come from."""

    def get(self, ref: str) -> Mapping[str, str]:
        """The fields of entry ``ref`` (``{"password": "123456", ...}``), all from one place.

        Raises :class:`CredentialNotFound` when this store has no such entry and
        :class:`CredentialError` when it cannot be used; neither message holds a value.
        """
        ...


def is_secret_name(name: str) -> bool:
    """Whether a key names a secret: it is, or has as one of its words, a :data:`SECRET_FIELDS`
    name (``password``, ``new_password``, ``operatorCode``, ``PIN``)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    return any(word in SECRET_FIELDS for word in re.split(r"[^a-z0-9]+", spaced))


def env_name(ref: str, field: str) -> str:
    """The environment variable holding field ``field`` of entry ``ref``:
    ``METERHUB_SECRET_<REF>_<FIELD>``, both upper-cased, every character that is not an
    ASCII letter or digit turned into ``_``. ``meter-000000000001`` / ``password`` gives
    ``METERHUB_SECRET_METER_000000000001_PASSWORD``. (So ``meter-1`` and ``meter_1`` share
    their variables: name entries so that they differ in letters or digits.)"""
    return ENV_PREFIX + _env_part(ref) + "_" + _env_part(field)


def _env_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()


def _entry(fields: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(fields))


def _check_ref(ref: str) -> None:
    if not isinstance(ref, str) or not ref.strip():
        raise CredentialError(f"a credential reference must be a non-empty name, got {type(ref).__name__} {ref!r}")


class EnvSecrets:
    """Entries from environment variables named by :func:`env_name`.

    The environment cannot list an entry's fields, so the ``fields`` names are looked for
    (:data:`CREDENTIAL_FIELDS` unless told). The entry exists when at least one is set; a
    variable set to the empty string counts as unset.
    """

    def __init__(self, fields: Iterable[str] = CREDENTIAL_FIELDS, environ: Mapping[str, str] | None = None) -> None:
        self.fields = tuple(sorted(set(fields)))
        self._environ = environ

    def get(self, ref: str) -> Mapping[str, str]:
        _check_ref(ref)
        environ = os.environ if self._environ is None else self._environ
        found = {field: environ[env_name(ref, field)] for field in self.fields if environ.get(env_name(ref, field))}
        if not found:
            pattern = env_name(ref, "FIELD").removesuffix("FIELD") + "<FIELD>"
            raise CredentialNotFound(ref, [f"environment (no {pattern} variable; FIELD one of {', '.join(f.upper() for f in self.fields)})"])
        return _entry(found)


#: The DL/T 645 credential of scripts and CI (``meterhub control``): its reference, and the
#: variables that hold it. The password variable is 8 hex digits, PA (the privilege level)
#: then P2 P1 P0, high to low as the standard writes them (they are sent low byte first);
#: the operator code is 8 hex digits, C3 ... C0.
DLT645_REF = "dlt645"
DLT645_PASSWORD_ENV = "METERHUB_DLT645_PASSWORD"
DLT645_OPERATOR_ENV = "METERHUB_DLT645_OPERATOR"
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")


class Dlt645EnvSecrets:
    """The entry ``dlt645`` from ``METERHUB_DLT645_PASSWORD`` and ``METERHUB_DLT645_OPERATOR``:
    ``level`` (PA, as a number), ``password`` (P2 P1 P0) and ``operator`` (C3 ... C0). Other
    references are not here. A variable that is not 8 hex digits is a CredentialError
    naming the variable, never its value."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def get(self, ref: str) -> Mapping[str, str]:
        _check_ref(ref)
        environ = os.environ if self._environ is None else self._environ
        password, operator = environ.get(DLT645_PASSWORD_ENV, ""), environ.get(DLT645_OPERATOR_ENV, "")
        if ref != DLT645_REF or not (password or operator):
            raise CredentialNotFound(ref, [f"{DLT645_PASSWORD_ENV}/{DLT645_OPERATOR_ENV} (entry {DLT645_REF!r} only)"])
        found: dict[str, str] = {}
        if password:
            if not _HEX8.fullmatch(password.strip()):
                raise CredentialError(f"{DLT645_PASSWORD_ENV} must be 8 hex digits: PA then P2 P1 P0")
            text = password.strip()
            found["level"], found["password"] = str(int(text[:2], 16)), text[2:]
        if operator:
            if not _HEX8.fullmatch(operator.strip()):
                raise CredentialError(f"{DLT645_OPERATOR_ENV} must be 8 hex digits: C3 C2 C1 C0")
            found["operator"] = operator.strip()
        return _entry(found)


class FileSecrets:
    """Entries from a YAML file that maps entry name → field → text, readable by its owner only.

    The file is read at every :meth:`get` (edits apply at once) and refused unless it is a
    regular file without permission bits for group or others (``chmod 600``) owned by the
    user of this process; root may use a file of any owner, but not one others may read.
    Values are taken as written: ``level: 02`` is the text ``02``, not the number 2.

    A file that does not exist holds no entries when ``required`` is false (the default
    path, which need not exist); a path somebody configured must exist.
    """

    def __init__(self, path: str | os.PathLike[str], *, required: bool = True) -> None:
        self.path = os.fspath(path)
        self.required = required

    def get(self, ref: str) -> Mapping[str, str]:
        _check_ref(ref)
        entries = self.entries()
        if entries is None:
            raise CredentialNotFound(ref, [f"file {self.path} (does not exist)"])
        if ref not in entries:
            raise CredentialNotFound(ref, [f"file {self.path} (no entry {ref!r})"])
        return entries[ref]

    def entries(self) -> dict[str, Mapping[str, str]] | None:
        """Every entry of the file; None when an optional file does not exist."""
        text = self._read()
        return None if text is None else self._parse(text)

    def _refuse(self, message: str, line: int | None = None) -> CredentialError:
        where = self.path if line is None else f"{self.path}:{line}"
        return CredentialError(f"secrets file {where}: {message}")

    def _read(self) -> str | None:
        # Checked on the open file, not the name: the file checked is the file read.
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        except FileNotFoundError:
            if self.required:
                raise self._refuse("does not exist") from None
            return None
        except OSError as exc:
            raise self._refuse(f"cannot be opened: {exc.strerror or exc}") from None
        except ValueError:  # a NUL in the name
            raise self._refuse("cannot be opened: its name holds a NUL character") from None
        try:
            status = os.fstat(fd)
            self._check_status(status)
            if status.st_size > MAX_SECRETS_FILE_BYTES:
                raise self._refuse(too_large(status.st_size, MAX_SECRETS_FILE_BYTES, "bytes", "a secrets file"))
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_SECRETS_FILE_BYTES:  # the size said may be wrong, or have grown
                chunk = os.read(fd, MAX_SECRETS_FILE_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise self._refuse(f"cannot be read: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > MAX_SECRETS_FILE_BYTES:
            raise self._refuse(too_large(len(data), MAX_SECRETS_FILE_BYTES, "bytes", "a secrets file"))
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            valid = exc.object[: exc.start].decode("utf-8-sig")
            raise self._refuse(f"not UTF-8 text ({exc.reason})", line_at(valid, len(valid))) from None

    def _check_status(self, status: os.stat_result) -> None:
        if not stat.S_ISREG(status.st_mode):
            raise self._refuse("is not a regular file")
        if os.name != "posix":  # pragma: no cover - permission bits and owners are POSIX
            return
        quoted = shlex.quote(self.path)
        mode = stat.S_IMODE(status.st_mode)
        if mode & _OTHERS_BITS:
            raise self._refuse(
                f"has mode {mode:04o}, so others than its owner may read or change it; "
                f"allow its owner alone: chmod 600 {quoted}"
            )
        uid = os.geteuid()
        if uid != 0 and status.st_uid != uid:
            raise self._refuse(
                f"is owned by uid {status.st_uid}, not by this process's user (uid {uid}); "
                f"it must be this user's own file (chown {uid} {quoted}; chmod 600 {quoted})"
            )

    def _parse(self, text: str) -> dict[str, Mapping[str, str]]:
        """The entries of the file's text; scalars are taken as written, never constructed,
        so no value is turned into a number and none is quoted in a message."""
        issues: list[ConfigIssue] = []
        loader, root = compose_yaml(text, self.path, issues)
        if issues:  # YAML syntax: PyYAML's words name characters and tokens, never a value
            raise CredentialError("secrets file " + "; ".join(str(issue) for issue in issues))
        try:
            if root is None or _is_null(root):
                return {}
            if not isinstance(root, yaml.MappingNode):
                raise self._refuse("must map entry names to their fields", _line(root))
            entries: dict[str, Mapping[str, str]] = {}
            first: dict[str, int] = {}
            for key, value in self._pairs(root, "an entry name"):
                ref = key.value
                if ref in first:
                    raise self._refuse(f"entry {ref!r} is written twice (first on line {first[ref]})", _line(key))
                first[ref] = _line(key)
                if not isinstance(value, yaml.MappingNode):
                    raise self._refuse(f"entry {ref!r} must map field names to text (password: \"...\")", _line(key))
                fields: dict[str, str] = {}
                for field_key, field_value in self._pairs(value, "a field name"):
                    field = field_key.value
                    where = f"entry {ref!r} field {field!r}"
                    if field in fields:
                        raise self._refuse(f"{where} is written twice", _line(field_key))
                    if not isinstance(field_value, yaml.ScalarNode):
                        kind = "a list" if isinstance(field_value, yaml.SequenceNode) else "a mapping"
                        raise self._refuse(f"{where} must be text, not {kind}", _line(field_key))
                    if _is_null(field_value):
                        raise self._refuse(f"{where} has no value", _line(field_key))
                    fields[field] = field_value.value
                entries[ref] = _entry(fields)
            return entries
        finally:
            if loader is not None:
                loader.dispose()

    def _pairs(self, node: yaml.MappingNode, what: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        pairs = []
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                raise self._refuse("merge keys (<<) are not supported in a secrets file: write each entry out", _line(key))
            if not isinstance(key, yaml.ScalarNode) or _is_null(key) or not key.value.strip():
                raise self._refuse(f"{what} must be a plain name", _line(key))
            pairs.append((key, value))
        return pairs


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _is_null(node: yaml.Node) -> bool:
    """A plain scalar YAML reads as null (nothing, ``~``, ``null``); a quoted one is text."""
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG and not node.style


class KeyringSecrets:
    """Entries from the system keyring (the ``keyring`` package, where it is installed).

    Field ``f`` of entry ``ref`` is the password stored for service ``meterhub`` and user
    ``ref/f`` (``keyring set meterhub meter-000000000001/password``). The keyring cannot
    list an entry's fields, so the ``fields`` names are looked for. Without the package, or
    without a usable keyring backend, this source has no entries and says so.
    """

    def __init__(self, fields: Iterable[str] = CREDENTIAL_FIELDS) -> None:
        self.fields = tuple(sorted(set(fields)))

    def get(self, ref: str) -> Mapping[str, str]:
        _check_ref(ref)
        try:
            import keyring
        except ImportError:
            raise CredentialNotFound(ref, ["keyring (not used: the keyring package is not installed)"]) from None
        try:
            from keyring.errors import NoKeyringError
        except ImportError:  # a keyring without its errors module (very old, or a stand-in)
            NoKeyringError = ()  # type: ignore[assignment]
        found: dict[str, str] = {}
        for field in self.fields:
            try:
                value = keyring.get_password(KEYRING_SERVICE, f"{ref}/{field}")
            except NoKeyringError:
                raise CredentialNotFound(ref, ["keyring (not used: no keyring backend is available)"]) from None
            except Exception as exc:
                # Backends word their own errors; the type says enough and cannot hold a value.
                raise CredentialError(f"keyring: looking up entry {ref!r} field {field!r} failed: {type(exc).__name__}") from None
            if value:
                found[field] = str(value)
        if not found:
            raise CredentialNotFound(ref, [f"keyring (service {KEYRING_SERVICE!r}: no user {ref}/<field> for any of {', '.join(self.fields)})"])
        return _entry(found)


class ChainSecrets:
    """Several sources; the first that has an entry gives all of it.

    An entry is never pieced together from several sources: an entry in the environment
    hides one of the same name in the file. A source that is broken (a secrets file others
    may read) stops the look-up with its error rather than being passed over.
    """

    def __init__(self, sources: Iterable[SecretStore]) -> None:
        self.sources = tuple(sources)

    def get(self, ref: str) -> Mapping[str, str]:
        _check_ref(ref)
        tried: list[str] = []
        for source in self.sources:
            try:
                return source.get(ref)
            except CredentialNotFound as exc:
                tried.extend(exc.tried)
        raise CredentialNotFound(ref, tried or ["no sources configured"])


def default_secrets(path: str | os.PathLike[str] | None = None, *, fields: Collection[str] = CREDENTIAL_FIELDS) -> ChainSecrets:
    """The secret store a gateway uses: the environment (``METERHUB_SECRET_<REF>_<FIELD>``,
    and for the entry ``dlt645`` the ``METERHUB_DLT645_*`` variables), then the secrets file (``path``,
    else ``$METERHUB_SECRETS``, else ``~/.config/meterhub/secrets.yaml``, which alone may be
    missing), then the keyring. ``fields`` are the field names the environment and the
    keyring are searched for (a plugin's driver may need others than the built-in ones)."""
    configured = os.fspath(path) if path is not None else (os.environ.get(SECRETS_ENV) or None)
    if configured is not None:
        file = FileSecrets(configured, required=True)
    else:
        file = FileSecrets(os.path.expanduser(DEFAULT_SECRETS_PATH), required=False)
    return ChainSecrets([EnvSecrets(fields), Dlt645EnvSecrets(), file, KeyringSecrets(fields)])

