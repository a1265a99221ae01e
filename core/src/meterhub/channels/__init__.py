"""Channels: how meter-protocol requests reach meters over a medium.

:mod:`.serial` is the pyserial link every serial medium sits on (an RS485 adapter, an
optical probe, a carrier module's or a modem's UART); :mod:`.halfduplex` is the channel of
a half-duplex line, with the arbitration every meter driver relies on. Transports build
their channels from these (``meterhub-rs485`` is a thin layer over both) or implement
:class:`meterhub.api.Channel` themselves.
"""

from .halfduplex import HalfDuplexChannel, transaction_error

__all__ = ["HalfDuplexChannel", "transaction_error"]
