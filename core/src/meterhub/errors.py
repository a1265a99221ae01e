"""The one error hierarchy of meterhub.

Codecs raise :class:`FrameError` (or a subclass) and nothing else; the bus turns a
missing answer into :class:`MeterTimeout`; a meter that answers "abnormal" raises
:class:`MeterError` with its own error code; configuration problems are collected into
one :class:`ConfigError` so a user sees every mistake at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import attrs


class MeterhubError(Exception):
    """Base class of every error meterhub raises on purpose."""


class FrameError(MeterhubError):
    """Bytes that are not a valid frame of the protocol being decoded."""


class ChecksumError(FrameError):
    """A frame whose structure is right but whose checksum is wrong."""


class TruncatedFrame(FrameError):
    """A frame start was seen but the rest never arrived."""


class UnexpectedReply(FrameError):
    """A valid frame that does not answer the request (wrong address or function)."""


class LinkError(MeterhubError):
    """A link (serial port, socket, module) cannot be opened or has failed."""


class LineJammed(LinkError):
    """The line never fell quiet long enough to send: something keeps transmitting (a
    babbling device, a transceiver stuck in transmit, a wiring fault). The line is to
    blame, not the meter that was about to be asked."""


class MeterTimeout(MeterhubError):
    """The meter did not answer within its timeout."""


class NotAttempted(MeterhubError):
    """A request a driver did not send because the meter left an earlier one of the same
    call unanswered (a batching driver reading several blocks). The runtime tries it again
    with the meter's retries, and records it as not tried if the meter stays silent."""


class MeterError(MeterhubError):
    """The meter answered with an abnormal (error) reply.

    ``code`` is the protocol's own error word or exception code, ``reason`` its meaning.
    """

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class NotSupported(MeterhubError):
    """The protocol or meter cannot provide the requested quantity or command."""


class UnknownQuantity(MeterhubError, KeyError):
    """A name that is neither an OBIS code nor an alias of the quantity vocabulary."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class PluginError(MeterhubError):
    """A plugin failed to load or its hook raised (fatal only in strict mode)."""


class CommandRefused(MeterhubError):
    """A command that was not sent: a policy hook vetoed it, or its credentials could not be
    had, or it carried secrets in its arguments. Nothing reached the meter."""


class CommandFailed(MeterhubError):
    """A command that was sent but got no good answer, where the driver's own error could
    not be passed on as it was (its text held a secret, or the driver answered nonsense)."""


class CredentialError(MeterhubError):
    """A credential cannot be had from the secret store: a source is unusable (a secrets
    file others may read, malformed content) or the entry lacks a field. Messages say which
    sources were tried and never hold a secret value."""


class CredentialNotFound(CredentialError):
    """No source of the secret store has the entry. ``tried`` says where it was looked for,
    one phrase per source, so a chain of sources can report them all."""

    def __init__(self, ref: str, tried: tuple[str, ...] | list[str]) -> None:
        self.ref = ref
        self.tried = tuple(tried)
        super().__init__(f"no credential entry {ref!r} in the secret store; tried: " + "; ".join(self.tried))


@attrs.frozen
class ConfigIssue:
    """One problem in a configuration file, located by file, line and key path."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(MeterhubError):
    """A configuration that cannot be used; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the choice closest to a misspelt ``word`` (difflib's
    usual 0.6 cutoff), or "": the tail of an "unknown key" message, config's and plugins'."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""

