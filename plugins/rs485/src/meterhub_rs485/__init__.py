"""meterhub-rs485: the RS485 bus transport, a channel over any pyserial URL."""

from meterhub.channels.serial import (
    Rs485Options,
    SerialLink,
    is_pty_fd,
    is_pty_path,
    virtual_settings,
)

from .transport import STANDARD_BAUDRATES, Rs485Transport, rs485_options

__all__ = [
    "STANDARD_BAUDRATES",
    "Rs485Options",
    "Rs485Transport",
    "SerialLink",
    "is_pty_fd",
    "is_pty_path",
    "rs485_options",
    "virtual_settings",
]
