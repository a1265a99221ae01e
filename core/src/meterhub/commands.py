"""The command path: the one way a command reaches a meter, whoever asked for it.

Every origin (the CLI, an uplink, a schedule, a plugin) goes through :func:`run_command`.
It fails closed: a command is sent only after it was journalled, carries no secret in its
arguments, has its credential found in the secret store, and every policy hook agreed.
Each step of its life is journalled (requested → refused, or sent → answered | failed),
and no secret reaches the journal, a log or an error message: secrets go to ``send``
(the driver) alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .errors import CommandFailed, CommandRefused, CredentialError
from .model import Command, CommandRecord, CommandState, utcnow
from .secrets import (
    CREDENTIAL_FIELDS,
    PUBLIC_CREDENTIAL_FIELDS,
    SecretStore,
    is_secret_name,
)

if TYPE_CHECKING:
    from .plugins import Plugins

log = logging.getLogger(__name__)

#: What replaces a secret value wherever text might have echoed it.
REDACTED = "***"

Send = Callable[[Command], Awaitable[Mapping[str, Any]]]


class CommandJournal(Protocol):
    """Where commands' lives are recorded (the store). Both methods raise when they cannot
    record: the command path then stops a command that was not yet sent."""

    async def add_command(self, record: CommandRecord) -> None:
        """Record a new command (state ``REQUESTED``)."""
        ...

    async def update_command(
        self, id: str, state: CommandState, *, reason: str = "", answer: Mapping[str, Any] | None = None
    ) -> CommandRecord:
        """Move command ``id`` to ``state``; return its record as now stored."""
        ...


async def run_command(
    command: Command,
    *,
    plugins: Plugins,
    secrets: SecretStore,
    journal: CommandJournal,
    send: Send,
    needs: Collection[str] = (),
) -> Mapping[str, Any]:
    """Check, send and journal ``command``; return the driver's answer, secrets removed.

    ``needs`` names the credential fields the driver needs for this command (DL/T 645
    relay control: ``{"password", "operator"}``; empty: none). ``send(command)`` sends
    it: it gets ``command`` with the credential's fields added to its ``args``.

    Before anything is sent, in this order: the command is journalled as REQUESTED (a
    journal that fails stops it, its error raised); it is refused when its ``args`` carry a
    credential field (secrets come from the secret store), when it needs credentials and
    names none, when its credential cannot be had or lacks a needed field, or when a
    policy hook refuses or fails. A refusal is journalled as REFUSED with its reason and
    raised as :class:`CommandRefused`. Then SENT is journalled (a failure stops it there),
    the command is sent, and the outcome journalled: ANSWERED with the answer, or FAILED
    with the error's text, the error then raised again (as :class:`CommandFailed` if its
    text held a secret).
    """
    needs = frozenset(needs)
    await journal.add_command(CommandRecord(_without_secrets(command, needs), CommandState.REQUESTED, utcnow()))
    try:
        fields = _check(command, needs, plugins, secrets)
    except CommandRefused as exc:
        await _record_refusal(journal, command, str(exc))
        raise
    except Exception as exc:  # a check that broke refuses: it did not say yes
        reason = f"the command could not be checked: {type(exc).__name__}: {exc}"
        await _record_refusal(journal, command, reason)
        raise CommandRefused(reason) from exc
    except BaseException:  # cancelled or interrupted before anything was sent
        await _record_refusal(journal, command, "interrupted before it was sent")
        raise

    try:
        await journal.update_command(command.id, CommandState.SENT)
    except BaseException:
        await _record_refusal(journal, command, "not sent: the journal could not record it being sent")
        raise

    secret_values = [value for name, value in fields.items() if _is_secret_field(name, needs) and value]
    log.info("command %s: sending %s to %s (%s, by %s)", command.id, command.name, command.meter,
             command.origin.value, command.issuer or "?")
    try:
        answer = await send(attrs.evolve(command, args={**command.args, **fields}))
        if not isinstance(answer, Mapping):
            raise CommandFailed(f"the driver answered {type(answer).__name__}, not a mapping; the command's "
                                "outcome is unknown")
    except asyncio.CancelledError:
        await _record_outcome(journal, command, CommandState.FAILED,
                        reason="cancelled after it was sent: the meter may or may not have carried it out")
        raise
    except BaseException as exc:
        text = str(exc) or type(exc).__name__
        clean = _redact(text, secret_values, (command.meter,))
        await _record_outcome(journal, command, CommandState.FAILED, reason=clean)
        if clean != text and isinstance(exc, Exception):
            raise CommandFailed(clean) from None
        raise
    clean_answer = _scrub(answer, needs, secret_values, (command.meter,))
    await _record_outcome(journal, command, CommandState.ANSWERED, answer=clean_answer)
    return clean_answer


def local_issuer() -> str:
    """Who issues a command from this machine's command line: the user's login name, ""
    where the environment has none (a container without a user entry)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _check(command: Command, needs: frozenset[str], plugins: Plugins, secrets: SecretStore) -> dict[str, str]:
    """The credential fields to send with ``command``, or :class:`CommandRefused` saying why
    it may not be sent."""
    carried = sorted(_credential_keys(command.args, needs))
    if carried:
        raise CommandRefused(
            f"{command.name}: the arguments carry {', '.join(carried)}; secrets come from the secret store, "
            "not the command's arguments (name an entry as the command's credential)"
        )
    fields: dict[str, str] = {}
    if needs and not command.credential:
        raise CommandRefused(
            f"{command.name} needs credentials ({', '.join(sorted(needs))}) but names no secret-store entry"
        )
    if command.credential:
        try:
            entry = secrets.get(command.credential)
        except CredentialError as exc:
            raise CommandRefused(f"{command.name}: {exc}") from None
        missing = sorted(name for name in needs if not entry.get(name))
        if missing:
            raise CommandRefused(
                f"{command.name} needs {', '.join(missing)} of credential {command.credential!r}, "
                "which the secret store's entry does not have"
            )
        fields = {name: str(value) for name, value in entry.items() if _is_credential_name(name, needs)}
    refusals = plugins.ask_policies(command)
    if refusals:
        raise CommandRefused("; ".join(f"refused by policy plugin {name!r}: {reason}" for name, reason in refusals))
    return fields


def _is_credential_name(name: str, needs: frozenset[str]) -> bool:
    """A field only a credential may give: a secret, the privilege level, or one ``needs`` names."""
    return name in CREDENTIAL_FIELDS or name in needs or is_secret_name(name)


def _is_secret_field(name: str, needs: frozenset[str]) -> bool:
    return _is_credential_name(name, needs) and name not in PUBLIC_CREDENTIAL_FIELDS


def _credential_keys(value: Any, needs: frozenset[str], path: str = "") -> list[str]:
    """The keys, at any depth, that name credential fields."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _is_credential_name(str(key), needs):
                found.append(where)
            else:
                found.extend(_credential_keys(item, needs, where))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found.extend(_credential_keys(item, needs, f"{path}[{i}]"))
    return found


def _mask_args(value: Any, needs: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        return {key: REDACTED if _is_secret_field(str(key), needs) else _mask_args(item, needs) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_args(item, needs) for item in value]
    return value


def _without_secrets(command: Command, needs: frozenset[str]) -> Command:
    """The command as journalled: a secret its arguments carry (it is about to be refused
    for that) is masked."""
    if not _credential_keys(command.args, needs):
        return command
    return attrs.evolve(command, args=_mask_args(command.args, needs))


def _redact(text: str, secret_values: Collection[str], keep: Collection[str] = ()) -> str:
    """``text`` with every secret value masked, except inside the ``keep`` strings (the
    meter's address: a factory password 000000 is not what address 000000000001 shows)."""
    kept = [k for k in keep if k]
    # A secret that no kept string contains is masked everywhere, also where it contains a
    # kept string itself (a password "#000000000001%" around the address).
    inside = [v for v in secret_values if any(v in k for k in kept)]
    text = _mask(text, [v for v in secret_values if v not in inside])
    if inside:
        pattern = "|".join(re.escape(k) for k in sorted(kept, key=len, reverse=True))
        parts = re.split(f"({pattern})", text)
        return "".join(part if i % 2 else _mask(part, inside) for i, part in enumerate(parts))
    return text


def _mask(text: str, secret_values: Collection[str]) -> str:
    for value in sorted(secret_values, key=len, reverse=True):  # a longer secret may contain a shorter
        text = text.replace(value, REDACTED)
    return text


def _scrub(value: Any, needs: frozenset[str], secret_values: Collection[str], keep: Collection[str] = ()) -> Any:
    """An answer fit for the journal: keys named like secret fields dropped, secret values
    masked in its text, at any depth."""
    if isinstance(value, Mapping):
        return {
            key: _scrub(item, needs, secret_values, keep)
            for key, item in value.items()
            if not _is_secret_field(str(key), needs)
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(item, needs, secret_values, keep) for item in value]
    if isinstance(value, str):
        return _redact(value, secret_values, keep)
    if isinstance(value, (bytes, bytearray)) and any(s.encode() in value for s in secret_values):
        return REDACTED
    return value


async def _record_refusal(journal: CommandJournal, command: Command, reason: str) -> None:
    log.warning("command %s: %s to %s refused: %s", command.id, command.name, command.meter, reason)
    await _record_outcome(journal, command, CommandState.REFUSED, reason=reason)


async def _record_outcome(journal: CommandJournal, command: Command, state: CommandState, *, reason: str = "",
                    answer: Mapping[str, Any] | None = None) -> None:
    """Journal how a command ended. A journal failing here is logged, not raised: the
    outcome it could not record (a refusal, a meter's answer) is what the caller must hear."""
    try:
        await journal.update_command(command.id, state, reason=reason, answer=answer)
    except Exception:
        log.exception("command %s: the journal could not record it as %s", command.id, state.value)
