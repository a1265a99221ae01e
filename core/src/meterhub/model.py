"""Value objects shared by every layer: meters, readings, events and commands.

They are frozen and slotted; behaviour lives in drivers and the runtime, not here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp meterhub stores is)."""
    return datetime.now(timezone.utc)


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


class Quality(str, enum.Enum):
    """How a reading came about (OpenMUC-style flags). Only ``OK`` carries a value."""

    OK = "ok"
    TIMEOUT = "timeout"  #: the meter did not answer in time, after every retry
    CHECKSUM_ERROR = "checksum_error"  #: an answer came but its checksum was wrong
    FRAME_ERROR = "frame_error"  #: an answer came but was truncated or malformed
    UNEXPECTED_REPLY = "unexpected_reply"  #: a valid frame from another address/function
    METER_ERROR = "meter_error"  #: the meter answered with an error; see ``error_code``
    NOT_SUPPORTED = "not_supported"  #: the meter or protocol has no such quantity
    LINK_ERROR = "link_error"  #: the channel could not be opened or failed
    BACKED_OFF = "backed_off"  #: not tried: the meter is dead and waiting out its back-off
    DRIVER_ERROR = "driver_error"  #: a driver raised something unexpected (a bug, reported)


PARITIES = ("N", "E", "O", "M", "S")


@attrs.frozen
class SerialSettings:
    """Character format and speed of a serial link (RS485, infrared, module UART)."""

    baudrate: int = 2400
    bytesize: int = 8
    parity: str = "E"
    stopbits: float = 1

    @property
    def bits_per_char(self) -> int:
        """Bits on the wire per character: start + data + parity + stop (8E1 = 11)."""
        parity_bits = 0 if self.parity == "N" else 1
        return int(1 + self.bytesize + parity_bits + self.stopbits + 0.5)

    def __str__(self) -> str:
        stop = int(self.stopbits) if self.stopbits == int(self.stopbits) else self.stopbits
        return f"{self.baudrate} {self.bytesize}{self.parity}{stop}"


@attrs.frozen
class ChannelConfig:
    """A channel: one medium (a bus, a module, a probe) reached through a transport."""

    name: str
    transport: str
    port: str
    settings: SerialSettings = SerialSettings()
    #: transport-specific keys (e.g. ``rs485: {rts_level_for_tx: true}``), validated by the transport
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


@attrs.frozen
class Meter:
    """A meter as configured: where it is, how to talk to it and what to read."""

    address: str
    protocol: str
    channel: str
    quantities: tuple[str, ...] = ()  #: OBIS codes (aliases are resolved at the edge)
    point: int | None = None  #: measuring point number on the uplink (pn)
    name: str = ""
    timeout: float | None = None  #: seconds; None = derived from baud rate and protocol
    retries: int | None = None  #: None = the site default
    settings: SerialSettings | None = None  #: per-meter serial settings on a mixed bus
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)

    @property
    def label(self) -> str:
        return f"{self.protocol}:{self.address}"

    @property
    def key(self) -> str:
        """``channel/protocol:address``: see :func:`meter_key`."""
        return meter_key(self.channel, self.protocol, self.address)


def meter_key(channel: str, protocol: str, address: str) -> str:
    """How statistics, events and export name a meter: ``channel/protocol:address``.
    Addresses repeat across buses (Modbus unit 1 on two RS485 lines) and across protocols
    on one mixed bus (Modbus unit 1 next to M-Bus primary address 1)."""
    name = f"{protocol}:{address}" if protocol else address
    return f"{channel}/{name}" if channel else name


@attrs.frozen
class Measurement:
    """What a driver returns for one quantity: a value and its unit, before bookkeeping."""

    value: Decimal | str
    unit: str = ""


@attrs.frozen
class Reading:
    """One outcome of reading one quantity of one meter, successful or not.

    ``value`` is a :class:`~decimal.Decimal` (never a float: readings become bills), a
    string for non-numeric quantities such as the meter clock (ISO 8601), or ``None`` when
    ``quality`` is not ``OK``.
    """

    meter: str
    quantity: str
    value: Decimal | str | None
    unit: str
    timestamp: datetime
    quality: Quality = Quality.OK
    error_code: int | None = None  #: the protocol's error word / exception code
    detail: str = ""  #: human-readable reason for a non-OK quality
    channel: str = ""
    protocol: str = ""
    attempts: int = 1  #: transactions tried (1 = no retry)
    latency: float | None = None  #: seconds from request to accepted answer

    @property
    def ok(self) -> bool:
        return self.quality is Quality.OK


@attrs.frozen
class Event:
    """Something worth telling observers: a meter went dead, a round finished, an alarm."""

    kind: str
    source: str
    timestamp: datetime = attrs.field(factory=utcnow)
    severity: str = "info"  #: "info", "warning" or "alarm"
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


@attrs.frozen
class Command:
    """An action on a meter (relay trip, time sync, freeze, ...), checked by policy hooks first."""

    meter: str
    protocol: str
    name: str
    args: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


DEFAULT_STORE = "sqlite:///meterhub.db"


@attrs.frozen
class Collector:
    """A collector between meters and the concentrator (RS485 hub, pulse collector, PLC node)."""

    name: str
    channel: str
    address: str = ""
    protocol: str = ""
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


@attrs.frozen
class Schedule:
    """When rounds run and how hard a failing meter is tried."""

    interval: float = 900.0  #: seconds between the starts of two reading rounds
    retries: int = 2  #: extra attempts per quantity after the first (bounded)
    #: a meter that failed a whole round is skipped for backoff_initial seconds, doubling
    #: on each further failed round up to backoff_max, so a dead meter cannot stall its bus
    backoff_initial: float = 900.0
    backoff_max: float = 86400.0


@attrs.frozen
class Site:
    """A validated site file: everything the concentrator needs to run."""

    channels: Mapping[str, ChannelConfig] = attrs.field(factory=dict, converter=_freeze_mapping)
    meters: tuple[Meter, ...] = ()
    collectors: Mapping[str, Collector] = attrs.field(factory=dict, converter=_freeze_mapping)
    schedule: Schedule = Schedule()
    store: str = DEFAULT_STORE
    uplink: Mapping[str, Any] | None = None
    source: str = ""  #: the file it was loaded from, for messages


@attrs.frozen
class RoundReport:
    """What one reading round did: every reading and the round's own statistics."""

    started: datetime
    finished: datetime
    readings: tuple[Reading, ...] = attrs.field(converter=tuple)
    #: this round's numbers per meter (``channel/protocol:address``) and per channel; see ReadStats.snapshot
    meter_stats: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, converter=_freeze_mapping)
    channel_stats: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, converter=_freeze_mapping)

    @property
    def ok_count(self) -> int:
        return sum(1 for r in self.readings if r.quality is Quality.OK)

    @property
    def failed_count(self) -> int:
        """Readings without a value, back-off included (``ok_count + failed_count`` = all)."""
        return len(self.readings) - self.ok_count

    @property
    def backed_off_count(self) -> int:
        return sum(1 for r in self.readings if r.quality is Quality.BACKED_OFF)

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()
