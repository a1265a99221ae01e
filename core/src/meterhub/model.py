"""Value objects shared by every layer: meters, readings, events and commands.

They are frozen and slotted; behaviour lives in drivers and the runtime, not here.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp meterhub stores is)."""
    return datetime.now(UTC)


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
class Hop:
    """One relay on the way from a channel to a meter: a collector (or a carrier node)
    that passes the meter's frames on."""

    collector: str  #: its name in the site file
    address: str = ""  #: its own address on the medium, where it has one
    protocol: str = ""  #: the protocol it is addressed in, where it is addressed at all
    #: seconds it adds to a transaction's answer time (store and forward, both ways);
    #: None = what the channel derives from the medium
    delay: float | None = None


@attrs.frozen
class Route:
    """The path of a meter's frames: concentrator → channel → relays → meter.

    ``hops`` run from the concentrator outwards; a meter wired straight to the channel
    has none. Every reading records the route it came by (:attr:`Reading.route`).
    """

    channel: str
    hops: tuple[Hop, ...] = attrs.field(default=(), converter=tuple)

    @property
    def depth(self) -> int:
        """Relays between the channel and the meter (0: wired straight to the channel)."""
        return len(self.hops)

    @property
    def collectors(self) -> tuple[str, ...]:
        return tuple(hop.collector for hop in self.hops)

    def __str__(self) -> str:
        return "/".join((self.channel, *self.collectors))


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
    #: the collectors its frames pass through, nearest the concentrator first (see :class:`Route`)
    hops: tuple[Hop, ...] = attrs.field(default=(), converter=tuple)
    #: the secret-store entry its commands use when they name none (a reference, not a secret)
    credential: str = ""
    tariff: str = ""  #: the name of the site's tariff that bills it ("" = none)
    prepaid: bool = False  #: a balance is kept for it and its supply is cut when the balance runs out

    @property
    def label(self) -> str:
        return f"{self.protocol}:{self.address}"

    @property
    def route(self) -> Route:
        return Route(self.channel, self.hops)

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
    """What a driver returns for one quantity: a value and its unit, before bookkeeping.

    ``data_time`` is the meter's own time for the value where the protocol carries one
    (a frozen value's freeze time, an M-Bus record's time point); ``period`` is the billing
    period of a frozen value (OBIS F group: 0 = the current one, 1 = the last closed, ...).
    """

    value: Decimal | str
    unit: str = ""
    data_time: datetime | None = None
    period: int | None = None
    #: the register (OBIS) where one call returns several, as a freeze record's registers
    #: (:class:`meterhub.api.FrozenReader`); "" where the call named the quantity
    quantity: str = ""


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
    #: the collectors the answer came through, nearest the concentrator first (empty: wired
    #: straight to ``channel``)
    route: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    data_time: datetime | None = None  #: the meter's own time for the value (freeze time), if it gives one
    period: int | None = None  #: billing period of a frozen value (OBIS F group), None for current values
    terminal: str = ""  #: the concentrator that read it ("" = this one); a head-end stores many
    #: relays of the medium itself before the first hop of ``route`` (a carrier network's,
    #: as the module reported them); counted in :attr:`depth`
    relays: int = 0

    @property
    def ok(self) -> bool:
        return self.quality is Quality.OK

    @property
    def collector(self) -> str:
        """The collector nearest the meter, or "" for a meter wired straight to its channel."""
        return self.route[-1] if self.route else ""

    @property
    def depth(self) -> int:
        """Relays between the channel and the meter: the medium's own and the collectors."""
        return self.relays + len(self.route)


@attrs.frozen
class Event:
    """Something worth telling observers: a meter went dead, a round finished, an alarm."""

    kind: str
    source: str
    timestamp: datetime = attrs.field(factory=utcnow)
    severity: str = "info"  #: "info", "warning" or "alarm"
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


class Origin(str, enum.Enum):
    """Where a command came from, for the audit trail."""

    CLI = "cli"
    UPLINK = "uplink"
    SCHEDULE = "schedule"
    PLUGIN = "plugin"
    API = "api"  #: the head-end's HTTP API


class CommandState(str, enum.Enum):
    """A command's life: requested → refused, or sent → answered | failed."""

    REQUESTED = "requested"
    REFUSED = "refused"  #: a policy said no, or its credentials could not be had; nothing was sent
    SENT = "sent"
    ANSWERED = "answered"
    FAILED = "failed"  #: sent, but no (good) answer: timeout, meter error, link down


def new_command_id() -> str:
    """A fresh command id: 32 hex digits, unique without coordination (uuid4)."""
    return uuid.uuid4().hex


@attrs.frozen
class Command:
    """An action on a meter (relay trip, time sync, freeze, ...), checked by policy hooks first.

    ``args`` are what the command says (``{"action": "open"}``) and are stored in the audit
    trail; secrets never go there. ``credential`` names an entry of the secret store
    (``meter-000000000001``) whose fields (``password``, ``operator``, ``level``) the command
    path resolves just before sending and hands to the driver alone.
    """

    meter: str
    protocol: str
    name: str
    args: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    id: str = attrs.field(factory=new_command_id)
    origin: Origin = attrs.field(default=Origin.CLI, converter=Origin)
    issuer: str = ""  #: who asked: a user name, an uplink's master address, a plugin's name
    credential: str = ""  #: secret-store reference; "" = the command needs none
    channel: str = ""  #: where the meter is (the meter's key is channel/protocol:address)
    requested: datetime = attrs.field(factory=utcnow)


@attrs.frozen
class CommandRecord:
    """A command's row in the audit trail: the command and where its life has got to."""

    command: Command
    state: CommandState
    updated: datetime
    reason: str = ""  #: why it was refused or failed
    answer: Mapping[str, Any] | None = attrs.field(default=None, converter=attrs.converters.optional(_freeze_mapping))


class RequestState(str, enum.Enum):
    """A head-end request's life: queued → claimed (by the node holding the terminal's
    connection) → answered | failed; or failed while queued (no node took it in time)."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    ANSWERED = "answered"
    FAILED = "failed"


@attrs.frozen
class TerminalRecord:
    """What a head-end knows of one terminal (concentrator): ``name`` is A1 and A2 as the
    vendors print them (``32010001``); ``node`` the head-end process holding its connection."""

    name: str
    online: bool = False
    node: str = ""
    peer: str = ""  #: the connection's far end, host:port
    login: datetime | None = None  #: its last login
    seen: datetime | None = None  #: its last valid frame
    heartbeats: int = 0  #: since its last login


@attrs.frozen
class HeadEndRequest:
    """A read or a command for a terminal, put in the store's queue by whoever asks (the
    CLI, a schedule) and carried out by the head-end node that holds the terminal's
    connection. ``kind`` is ``read`` or ``command``; ``args`` say what (JSON, no secret:
    a command names its ``credential``, a secret-store reference)."""

    terminal: str
    kind: str
    args: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    id: str = attrs.field(factory=new_command_id)
    origin: Origin = attrs.field(default=Origin.CLI, converter=Origin)
    issuer: str = ""
    credential: str = ""
    created: datetime = attrs.field(factory=utcnow)
    timeout: float = 60.0  #: seconds from ``created`` after which nobody may take it any more


@attrs.frozen
class RequestRecord:
    """A head-end request and where its life has got to."""

    request: HeadEndRequest
    state: RequestState
    updated: datetime
    node: str = ""  #: the node that claimed it
    reason: str = ""  #: why it failed
    answer: Mapping[str, Any] | None = attrs.field(default=None, converter=attrs.converters.optional(_freeze_mapping))


DEFAULT_STORE = "sqlite:///meterhub.db"


@attrs.frozen
class Collector:
    """A collector between meters and the concentrator (RS485 hub, pulse collector, PLC node).

    ``via`` names the collector it is itself reached through (a relay chain), "" if it sits
    on ``channel`` directly.
    """

    name: str
    channel: str
    address: str = ""
    protocol: str = ""
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    via: str = ""
    delay: float | None = None  #: seconds it adds to an answer (``relay_delay:``); None = derived


@attrs.frozen
class UplinkConfig:
    """A configured uplink: which uplink driver (``protocol:``) and its own settings."""

    name: str  #: unique per site; the outbox keeps a queue per name
    protocol: str
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


@attrs.frozen
class OutboxItem:
    """A reading or event waiting for an uplink to acknowledge it (by ``id``)."""

    id: int  #: the store's; ascending in the order the items were queued
    uplink: str
    item: Reading | Event
    queued: datetime


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
class FreezeConfig:
    """``freeze:``: the daily and monthly freezes the concentrator keeps and its load profile.

    A freeze is a register's value at a boundary, stored with ``period`` 1 and ``timestamp``
    the boundary. The monthly freeze is the daily freeze of the settlement day."""

    daily: time = time(0, 0)  #: local time of day of the daily freeze
    monthly_day: int = 1  #: the settlement day of the month (1..28)
    quantities: tuple[str, ...] = ()  #: registers frozen; () = each meter's energy/volume registers it reads
    profile_interval: float | None = None  #: seconds between load-profile points; None = no profile
    profile_quantities: tuple[str, ...] = ()  #: () = the frozen registers
    backfill_days: int = 62  #: how far back a meter's missed freezes are filled when it answers again


@attrs.frozen
class PrepayConfig:
    """``prepayment:``: what happens to a prepaid meter's supply as its balance moves."""

    disconnect: bool = True  #: cut the supply (relay trip, valve close) when the balance runs out
    reconnect: bool = True  #: restore it when a recharge lifts the balance above zero
    credential: str = "dlt645"  #: secret-store entry for relay control (valves need none)
    opening_balance: Decimal = Decimal(0)  #: a new meter's balance before any recharge


@attrs.frozen
class TimeSyncConfig:
    """``time_sync:``: DL/T 645 broadcast time on a schedule, drift measured before and after."""

    at: time = time(3, 0)  #: local time of day (meters refuse broadcasts around midnight)
    every: float = 86400.0  #: seconds between syncs
    #: meters accept a broadcast only this close to their clock (DL/T 645 §1.5: ±5 min)
    window: float = 300.0


def local_zone(name: str = "") -> tzinfo:
    """The time zone named ``name`` (IANA, ``Asia/Shanghai``), or the machine's own for "",
    with its daylight-saving rules (tzlocal reads ``TZ`` and the system's setting): a
    fixed offset would put every freeze boundary before a DST change an hour off. Where the
    machine's zone has no IANA name (``TZ=CST-8``), its current offset."""
    if name:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    try:
        import tzlocal

        return tzlocal.reload_localzone()  # as it is now: TZ may have changed since the last look
    except Exception:  # noqa: BLE001 - a POSIX TZ string or no zone configured: the offset in force
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone


def place_meter(meters: Sequence[Meter], point: int, meter: Meter | None) -> tuple[tuple[Meter, ...], Meter | None]:
    """``meters`` with ``meter`` at measuring point ``point`` (replacing the point's meter,
    else added last), or with the point's meter taken out (``meter`` None); and the meter
    that was there. ValueError for taking out a point that has no meter. Checks nothing
    else: the caller says whether ``meter`` may go there."""
    placed = list(meters)
    at = next((i for i, m in enumerate(placed) if m.point == point), None)
    old = placed[at] if at is not None else None
    if meter is None:
        if at is None:
            raise ValueError(f"measuring point {point} has no meter")
        del placed[at]
    elif at is None:
        placed.append(meter)
    else:
        placed[at] = meter
    return tuple(placed), old

@attrs.frozen
class Site:
    """A validated site file: everything the concentrator needs to run."""

    channels: Mapping[str, ChannelConfig] = attrs.field(factory=dict, converter=_freeze_mapping)
    meters: tuple[Meter, ...] = ()
    collectors: Mapping[str, Collector] = attrs.field(factory=dict, converter=_freeze_mapping)
    schedule: Schedule = Schedule()
    store: str = DEFAULT_STORE
    uplink: Mapping[str, Any] | None = None  #: the ``uplink:`` section as written (see ``uplinks``)
    source: str = ""  #: the file it was loaded from, for messages
    uplinks: tuple[UplinkConfig, ...] = attrs.field(default=(), converter=tuple)  #: validated, started by ``meterhub run``
    terminal: str = ""  #: this concentrator's identity (``terminal:``), stamped on what it stores and sends
    #: the IANA zone of the meters' clocks, freezes and tariffs (``timezone:``); "" = the machine's
    timezone: str = ""
    #: priced tariffs by name (``tariffs:``), each made by its :class:`meterhub.tariffs.TariffScheme`
    tariffs: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    #: the ``tariffs:`` entries as written (plain data), kept in the store for ``meterhub bill``
    tariff_sources: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    #: the ``alarms:`` section as written and validated: rule name -> its options
    alarms: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    freeze: FreezeConfig | None = None
    prepayment: PrepayConfig | None = None
    time_sync: TimeSyncConfig | None = None


@attrs.frozen
class RoundReport:
    """What one reading round did: every reading and the round's own statistics."""

    started: datetime
    finished: datetime
    readings: tuple[Reading, ...] = attrs.field(converter=tuple)
    #: this round's numbers per meter (``channel/protocol:address``) and per channel; see ReadStats.snapshot
    meter_stats: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, converter=_freeze_mapping)
    channel_stats: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, converter=_freeze_mapping)
    #: per collector (``channel/collector``; ``channel`` for meters wired straight) and per relay depth ("0", "1", ...)
    collector_stats: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, converter=_freeze_mapping)
    depth_stats: Mapping[str, dict[str, Any]] = attrs.field(factory=dict, converter=_freeze_mapping)

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
