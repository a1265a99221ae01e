"""The ``infrared`` transport: meters read through an optical probe on a serial port.

A channel in a site file::

    probe:
      transport: infrared
      port: /dev/ttyUSB0        # the optical head's USB serial port, or any pyserial URL
      echo: auto                # auto (learn it), on, off: whether the head hears itself

The line is half-duplex (the core's :class:`~meterhub.channels.HalfDuplexChannel`), and its
character format is switched per request: IEC 62056-21 signs on at 300 7E1 and reads out at
the rate the meter offers; DL/T 645 over infrared runs at 1200 8E1 (the channel's default
here), or what the meter's ``baudrate:`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meterhub.channels import HalfDuplexChannel
from meterhub.channels.serial import SerialLink
from meterhub.errors import LinkError
from meterhub.model import ChannelConfig, SerialSettings

from .probe import ECHO_MODES, ProbeLink

#: DL/T 645 over an optical port: 1200 Bd 8E1 (protocols README §1.6 and §5.4). IEC
#: 62056-21 ignores it: it always signs on at 300 7E1.
INFRARED_SETTINGS = SerialSettings(1200, 8, "E", 1)
BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 19200)
OPTION_KEYS = ("echo", "exclusive")


def options_problems(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    for key in options:
        if key not in OPTION_KEYS:
            problems.append((str(key), f"unknown key (known: {', '.join(OPTION_KEYS)})"))
    if "echo" in options and options["echo"] not in ECHO_MODES:
        problems.append(("echo", f"must be one of {', '.join(ECHO_MODES)}, not {options['echo']!r}"))
    if "exclusive" in options and not isinstance(options["exclusive"], bool):
        problems.append(("exclusive", "must be true or false"))
    return problems


class InfraredTransport:
    """An optical (infrared) probe on a serial port."""

    name = "infrared"
    description = "optical probe on a serial port: IEC 62056-21 (300 Bd sign-on, baud switch) and DL/T 645 at 1200 8E1"
    default_settings = INFRARED_SETTINGS

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not isinstance(channel.port, str) or not channel.port.strip():
            problems.append(("port", "must be the optical probe's serial port (a device path or pyserial URL)"))
        settings = channel.settings
        if settings.baudrate not in BAUDRATES:
            problems.append(("baudrate", f"an optical port runs at {', '.join(map(str, BAUDRATES))} Bd, not {settings.baudrate!r}"))
        if settings.bytesize not in (7, 8):
            problems.append(("bytesize", f"must be 7 (IEC 62056-21) or 8 (DL/T 645), not {settings.bytesize!r}"))
        problems += options_problems(channel.options)
        return problems

    def create_channel(self, channel: ChannelConfig) -> HalfDuplexChannel:
        problems = self.validate(channel)
        if problems:
            raise LinkError(f"channel {channel.name} ({channel.port}): " + "; ".join(f"{k}: {m}" for k, m in problems))
        serial = SerialLink(channel.name, channel.port, channel.settings, exclusive=channel.options.get("exclusive", True))
        return HalfDuplexChannel(channel.name, ProbeLink(serial, channel.options.get("echo", "auto")))
