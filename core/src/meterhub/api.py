"""The interfaces plugins implement: links and transports (collector hooks), meter
drivers (meter hooks) and uplinks (uplink hooks).

Built-in drivers implement exactly these and register through the same hooks as a
third-party plugin does; nothing here is private to the core.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .model import ChannelConfig, Command, Measurement, Meter, Reading, SerialSettings
from .quantities import Quantity

if TYPE_CHECKING:
    from .bus import Bus


@runtime_checkable
class StreamDecoder(Protocol):
    """A sans-I/O decoder fed with whatever bytes arrive; it finds frames in the stream.

    ``feed`` returns, in order, the complete frames it found and a
    :class:`~meterhub.errors.FrameError` *instance* (not raised) for each candidate it
    rejected, e.g. a checksum mismatch. Noise between frames is skipped and counted.
    """

    skipped: int  #: noise bytes discarded so far

    def feed(self, data: bytes) -> list[Any]: ...

    @property
    def pending(self) -> int:
        """Bytes held back because they may still become a frame."""
        ...


@runtime_checkable
class Link(Protocol):
    """Raw byte I/O to a medium: a serial port, a carrier module, a socket.

    A link knows nothing about frames or arbitration; :class:`~meterhub.bus.Bus` adds
    those. ``read`` returns as soon as at least one byte is there, or ``b""`` when
    ``timeout`` seconds pass without any.
    """

    name: str
    settings: SerialSettings

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def read(self, timeout: float) -> bytes: ...

    async def reset_input(self) -> None: ...

    async def apply_settings(self, settings: SerialSettings) -> None:
        """Change speed/character format between transactions (mixed buses)."""
        ...


@runtime_checkable
class Transport(Protocol):
    """A collector/channel driver: turns a configured channel into a :class:`Link`."""

    name: str  #: what a site file writes as ``transport:`` (``rs485``)
    description: str

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        """Problems with the channel's settings as ``(key, message)`` pairs; empty if fine."""
        ...

    def create_link(self, channel: ChannelConfig) -> Link:
        """A link for the channel, not yet opened."""
        ...


@runtime_checkable
class MeterDriver(Protocol):
    """A meter protocol (``dlt645``, ``modbus``, a vendor's own) spoken over a bus."""

    name: str  #: what a site file writes as ``protocol:``
    description: str
    default_settings: SerialSettings  #: the protocol's usual serial format

    def normalize_address(self, address: str) -> str:
        """The canonical form of ``address``; raise ``ValueError`` saying why it is invalid."""
        ...

    def supported_quantities(self) -> Collection[str]:
        """OBIS codes this driver can read."""
        ...

    def transaction_timeout(self, settings: SerialSettings) -> float:
        """Default seconds from the start of a request by which its answer must have begun
        at these settings (an answer under way by then is heard to its end); see
        :func:`meterhub.timing.answer_deadline`."""
        ...

    async def read(self, bus: Bus, meter: Meter, quantity: Quantity, timeout: float) -> Measurement:
        """Read one quantity; raise MeterTimeout, FrameError, MeterError or NotSupported."""
        ...

    async def scan(self, bus: Bus, timeout: float) -> list[str]:
        """Addresses of the meters answering on the bus (raise NotSupported if it cannot)."""
        ...

    async def execute(self, bus: Bus, meter: Meter, command: Command, timeout: float) -> Mapping[str, Any]:
        """Carry out a command (relay, time sync, ...); raise NotSupported for unknown ones."""
        ...


async def read_one(driver: Any, bus: Bus, meter: Meter, quantity: Quantity | str, timeout: float) -> Measurement:
    """:meth:`MeterDriver.read` for a driver whose ``read_many`` does the work (one outcome
    per quantity, errors returned): the one outcome, raised if it is an error."""
    (outcome,) = await driver.read_many(bus, meter, [quantity], timeout)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@runtime_checkable
class MeterSimulator(Protocol):
    """Makes simulated meters of one protocol for a :class:`meterhub.simulator.PtyBus`."""

    protocol: str  #: the meter driver that reads them (``dlt645``, ``modbus``)
    description: str
    default_settings: SerialSettings  #: the serial format its meters answer at

    def make(self, count: int, *, seed: int = 0, options: Mapping[str, str] | None = None) -> list[Any]:
        """``count`` devices implementing :class:`meterhub.simulator.SimDevice`, with distinct
        addresses; ``options`` are the protocol's own (``profile``, ``meter_type``); raise
        ``ValueError`` saying what is wrong with them."""
        ...

    def site_entry(self, device: Any) -> Mapping[str, Any]:
        """The site-file meter entry that reads ``device``: ``address``, ``protocol``,
        ``quantities`` and, where needed, ``options`` (the channel is filled in by the caller)."""
        ...


@runtime_checkable
class Uplink(Protocol):
    """An uplink to a master station (``gdw1376.1`` over GPRS or TCP)."""

    name: str
    description: str

    async def start(self) -> None: ...

    async def publish(self, readings: list[Reading]) -> None: ...

    async def stop(self) -> None: ...
