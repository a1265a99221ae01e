"""The ``rs485`` transport: checks a channel's serial settings and options, and turns the
channel into the core's half-duplex channel over a serial link
(:class:`meterhub.channels.HalfDuplexChannel` on :class:`meterhub.channels.serial.SerialLink`).

A channel in a site file::

    bus1:
      transport: rs485
      port: /dev/ttyUSB0            # or /dev/pts/N, rfc2217://host:port, socket://host:port
      baudrate: 2400
      parity: E
      rs485: {mode: rts, delay_before_rx: 0.001}
      exclusive: true               # lock the port against a second program (default)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from meterhub.channels import HalfDuplexChannel
from meterhub.channels.serial import MODES, Rs485Options, SerialLink
from meterhub.errors import LinkError, did_you_mean
from meterhub.model import PARITIES, ChannelConfig, SerialSettings

#: The termios speeds (POSIX B300 ... Linux B921600) that UARTs and USB adapters all
#: support; meter protocols use 300 (IEC 62056-21 sign-on) to 115200. Anything else is a
#: typo (2401) rather than a rate a meter could be set to.
STANDARD_BAUDRATES = (300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
BYTESIZES = (5, 6, 7, 8)
STOPBITS = (1, 1.5, 2)

#: Channel keys beyond the serial settings that this transport understands.
OPTION_KEYS = ("rs485", "exclusive")
RS485_KEYS = tuple(attrs.fields_dict(Rs485Options))
_LEVEL_KEYS = ("rts_level_for_tx", "rts_level_for_rx")
_DELAY_KEYS = ("delay_before_tx", "delay_before_rx")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unknown(key: str, known: tuple[str, ...]) -> str:
    return f"unknown key{did_you_mean(key, known)} (known: {', '.join(known)})"


def settings_problems(settings: SerialSettings) -> list[tuple[str, str]]:
    """What is impossible about a serial format, as ``(key, message)`` pairs."""
    problems = []
    baud = settings.baudrate
    if not _is_int(baud):
        problems.append(("baudrate", f"must be a whole number of bits per second, not {baud!r}"))
    elif baud not in STANDARD_BAUDRATES:
        rates = ", ".join(str(r) for r in STANDARD_BAUDRATES)
        problems.append(("baudrate", f"impossible baud rate {baud} (standard rates: {rates})"))
    if not _is_int(settings.bytesize) or settings.bytesize not in BYTESIZES:
        problems.append(("bytesize", f"data bits must be 5, 6, 7 or 8, not {settings.bytesize!r}"))
    if settings.parity not in PARITIES:
        problems.append(("parity", f"must be one of {', '.join(PARITIES)}, not {settings.parity!r}"))
    if not _is_number(settings.stopbits) or settings.stopbits not in STOPBITS:
        problems.append(("stopbits", f"must be 1, 1.5 or 2, not {settings.stopbits!r}"))
    return problems


def options_problems(options: Mapping[str, Any], port: str = "") -> list[tuple[str, str]]:
    """What is wrong with a channel's transport options, with the key path of each."""
    problems = []
    for key in options:
        if key not in OPTION_KEYS:
            problems.append((str(key), _unknown(str(key), OPTION_KEYS)))
    if "exclusive" in options and not isinstance(options["exclusive"], bool):
        problems.append(("exclusive", "must be true or false"))
    rs485 = options.get("rs485")
    if rs485 is None:
        return problems
    if not isinstance(rs485, Mapping):
        problems.append(("rs485", "must be a mapping such as {mode: rts}"))
        return problems
    for key in rs485:
        if key not in RS485_KEYS:
            problems.append((f"rs485.{key}", _unknown(str(key), RS485_KEYS)))
    mode = rs485.get("mode", "none")
    if mode not in MODES:
        problems.append(("rs485.mode", f"must be one of {', '.join(MODES)}"))
    elif mode == "kernel" and "://" in str(port):
        problems.append(("rs485.mode", f"kernel direction control needs a local serial device, not {port}"))
    for key in _LEVEL_KEYS:
        if key in rs485 and not isinstance(rs485[key], bool):
            problems.append((f"rs485.{key}", "must be true or false (the RTS level)"))
    for key in _DELAY_KEYS:
        if key in rs485 and not (_is_number(rs485[key]) and rs485[key] >= 0):
            problems.append((f"rs485.{key}", f"must be a number of seconds >= 0, not {rs485[key]!r}"))
    return problems


def rs485_options(mapping: Mapping[str, Any] | None) -> Rs485Options:
    """The ``rs485:`` mapping of a channel as options; ValueError/TypeError if invalid."""
    return Rs485Options(**dict(mapping or {}))


class Rs485Transport:
    """An RS485 bus (or any serial line) reached through pyserial."""

    name = "rs485"
    description = "RS485 bus over a serial port or any pyserial URL (tty, pty, rfc2217://, socket://)"

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        problems = []
        if not isinstance(channel.port, str) or not channel.port.strip():
            problems.append(("port", "must be a device path or pyserial URL, not empty"))
        problems += settings_problems(channel.settings)
        problems += options_problems(channel.options, channel.port if isinstance(channel.port, str) else "")
        return problems

    def create_channel(self, channel: ChannelConfig) -> HalfDuplexChannel:
        """One transaction at a time on the line; meters behind collectors are reached
        through them (their relay time added to answers: ``relay_delay:``)."""
        return HalfDuplexChannel(channel.name, self.create_link(channel))

    def create_link(self, channel: ChannelConfig) -> SerialLink:
        """The serial link alone (LinkError if the settings are impossible)."""
        problems = self.validate(channel)
        if problems:
            detail = "; ".join(f"{key}: {message}" for key, message in problems)
            raise LinkError(f"channel {channel.name} ({channel.port}): {detail}")
        return SerialLink(
            channel.name,
            channel.port,
            channel.settings,
            rs485=rs485_options(channel.options.get("rs485")),
            exclusive=channel.options.get("exclusive", True),
        )
