"""The ``plc`` transport: a channel through a Q/GDW 1376.2 carrier module on a serial port.

A channel in a site file::

    carrier:
      transport: plc
      port: /dev/ttyS1          # the module's UART: any pyserial URL; 9600 8E1 unless given
      reading: concentrator     # or module (router-led, AFN 14)
      concurrency: 5            # reads in flight where the module offers AFN F1 F1
      route_sync: full          # full, add or off

Meters on it are DL/T 645 meters with carrier modules of their own (``channel: carrier``)
or meters behind collectors that sit on it (``collector: c1``, the collector with
``channel: carrier`` and its own ``address:``).
"""

from __future__ import annotations

from meterhub.errors import LinkError
from meterhub.model import PARITIES, ChannelConfig, Meter, SerialSettings

from . import options as plc_options
from .channel import PROTOCOL_CODES, PlcChannel

#: Q/GDW 1376.2 §5.2: the module's UART runs at 9600 bit/s or faster, 8 data bits, even parity, 1 stop bit.
MODULE_SETTINGS = SerialSettings(9600, 8, "E", 1)
BAUDRATES = (9600, 19200, 38400, 57600, 115200)


class PlcTransport:
    """Power-line carrier (narrowband PLC or HPLC) through a Q/GDW 1376.2 module."""

    name = "plc"
    description = "power-line carrier network through a Q/GDW 1376.2 module on a serial port (9600 8E1)"
    default_settings = MODULE_SETTINGS

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not isinstance(channel.port, str) or not channel.port.strip():
            problems.append(("port", "must be the module's serial port (a device path or pyserial URL), not empty"))
        settings = channel.settings
        if settings.baudrate not in BAUDRATES:
            problems.append(("baudrate", f"a Q/GDW 1376.2 module's UART runs at {', '.join(map(str, BAUDRATES))}, "
                                         f"not {settings.baudrate!r}"))
        if settings.parity not in PARITIES:
            problems.append(("parity", f"must be one of {', '.join(PARITIES)}, not {settings.parity!r}"))
        if settings.bytesize != 8:
            problems.append(("bytesize", f"a module's frames are 8-bit bytes, not {settings.bytesize!r} data bits"))
        problems += plc_options.problems(channel.options)
        return problems

    def validate_placement(self, channel: ChannelConfig, meter: Meter) -> list[tuple[str, str]]:
        """A meter on a carrier channel needs a node address the module can hold: its own
        (12 digits) or its collector's; and a protocol the module can carry."""
        problems: list[tuple[str, str]] = []
        if meter.hops:
            hop = meter.hops[0]
            if not _node_address(hop.address):
                problems.append(("collector", f"collector {hop.collector} on carrier channel {channel.name} needs "
                                              f"address: its own 12-digit carrier node address"))
        elif not _node_address(meter.address):
            problems.append(("address", f"a meter on carrier channel {channel.name} is a carrier node: its address "
                                        f"must be 12 digits, not {meter.address!r}"))
        if meter.protocol not in PROTOCOL_CODES:
            problems.append(("protocol", f"carrier channel {channel.name} carries {', '.join(PROTOCOL_CODES)} meters "
                                         f"(13 F1 protocol codes), not {meter.protocol!r}"))
        return problems

    def create_channel(self, channel: ChannelConfig) -> PlcChannel:
        problems = self.validate(channel)
        if problems:
            detail = "; ".join(f"{key}: {message}" for key, message in problems)
            raise LinkError(f"channel {channel.name} ({channel.port}): {detail}")
        return PlcChannel(channel, plc_options.parse(channel.options))


def _node_address(address: str) -> bool:
    return len(address) == 12 and all(c in "0123456789abcdefABCDEF" for c in address)
