"""The one error hierarchy of meterhub.

Codecs raise :class:`FrameError` (or a subclass) and nothing else; the bus turns a
missing answer into :class:`MeterTimeout`; a meter that answers "abnormal" raises
:class:`MeterError` with its own error code; configuration problems are collected into
one :class:`ConfigError` so a user sees every mistake at once.
"""

from __future__ import annotations

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
    """A policy hook vetoed a command before it was sent."""


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
