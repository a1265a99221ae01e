"""meterhub-rs485: the RS485 bus transport, a channel over any pyserial URL.

The names below are imported on first use: loading the plugin (``meterhub_rs485.plugin``, at
every start of the command line) imports this package, and should not open the serial stack."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Where each public name lives.
_HOMES = {
    "Rs485Options": "meterhub.channels.serial",
    "SerialLink": "meterhub.channels.serial",
    "is_pty_fd": "meterhub.channels.serial",
    "is_pty_path": "meterhub.channels.serial",
    "virtual_settings": "meterhub.channels.serial",
    "STANDARD_BAUDRATES": f"{__name__}.transport",
    "Rs485Transport": f"{__name__}.transport",
    "rs485_options": f"{__name__}.transport",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
