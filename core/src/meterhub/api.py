"""The interfaces plugins implement: channels and transports (collector hooks), meter
drivers (meter hooks) and uplinks (uplink hooks), and the optional capabilities a driver
may declare.

Built-in drivers implement exactly these and register through the same hooks as a
third-party plugin does; nothing here is private to the core.

**How a driver and a channel meet.** A meter driver describes each transaction (the
request's bytes, a stream decoder, ``accept``: whether a frame answers *this* request,
the time by which the answer must have begun, the character format) and hands it to a
:class:`Conduit`; the channel decides how it travels (as it is on an RS485 pair; wrapped
in Q/GDW 1376.2 AFN 13 by a carrier module and unwrapped again; relayed by a collector)
and when (one at a time on a half-duplex line, several at once on a module; held back
until a module asks for it with AFN 14). A multi-step exchange holds the channel with
:meth:`Conduit.session`. Fully sans-I/O drivers (generators yielding requests) were
weighed and not taken: the transaction description already keeps the driver ignorant of
the medium, and the four drivers and their tests stay as they are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from .errors import FrameError
from .model import (
    ChannelConfig,
    Command,
    Event,
    Measurement,
    Meter,
    OutboxItem,
    Reading,
    Schedule,
    SerialSettings,
    UplinkConfig,
)
from .quantities import Quantity


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
    """Raw byte I/O to a medium: a serial port, a carrier module's UART, a socket.

    A link knows nothing about frames or arbitration; a channel adds those
    (:class:`meterhub.channels.HalfDuplexChannel` over a serial link). ``read`` returns as
    soon as at least one byte is there, or ``b""`` when ``timeout`` seconds pass without any.
    """

    name: str
    settings: SerialSettings

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def read(self, timeout: float) -> bytes: ...

    async def reset_input(self) -> None: ...

    async def apply_settings(self, settings: SerialSettings) -> None:
        """Change speed/character format between transactions (mixed buses, IEC 62056-21's
        baud switch)."""
        ...


# --- what a channel hands back -------------------------------------------------------


@attrs.frozen
class Exchange:
    """The accepted answer of one transaction and what happened on the way."""

    frame: Any
    latency: float  #: seconds from the end of the request to the accepted answer
    skipped: int = 0  #: noise bytes skipped by the decoder
    rejected: tuple[FrameError, ...] = ()  #: candidates discarded before the answer


@attrs.frozen
class WireRecord:
    """A frame seen on the wire, for logs and the HIL bench's per-test traces."""

    direction: str  #: "tx" or "rx"
    data: bytes
    at: float  #: time.monotonic() of the first byte


@attrs.frozen
class LateAnswer:
    """An answer that arrived after its request had been given up: dropped, and reported so
    that the caller can say the meter is too slow."""

    request: bytes  #: the request it answers
    frame: Any  #: the decoded answer
    began: float  #: seconds from the start of the request until the answer's first bytes arrived
    after: float  #: seconds from the start of the request until the answer was complete
    timeout: float  #: what the request had been given
    target: str | None = None  #: the key of the meter that was asked (:attr:`Meter.key`), if known
    #: heard while the line was held after a retry was answered: that answer may have been
    #: this one's (an earlier attempt's), so it is doubtful
    held: bool = False


@attrs.frozen
class Unsolicited:
    """A frame nobody asked for, as the channel understood it: a meter's event report, a
    carrier module's active report, a value a meter pushes on its own.

    The runtime stores it as an event (``kind``, from ``address``) and, for every entry of
    ``measurements`` that a configured meter at ``address`` reads, as a reading.
    """

    kind: str  #: what it is: ``meter_event``, ``module_report``, ``push``, a transport's own word
    address: str = ""  #: the sender's address ("" for the module or channel itself)
    protocol: str = ""  #: the meter protocol of the sender, where it is a meter
    data: Mapping[str, Any] = attrs.field(factory=dict)  #: what it said, JSON-able
    measurements: Mapping[str, Measurement] = attrs.field(factory=dict)  #: OBIS code -> value it carried
    frame: bytes = b""  #: the raw frame, kept in the event for the record
    severity: str = "info"


# --- channels ------------------------------------------------------------------------


@runtime_checkable
class Conduit(Protocol):
    """A channel as one meter's driver sees it: requests go to that meter, whatever lies
    between (an RS485 line, a carrier module that wraps them in Q/GDW 1376.2 AFN 13, a
    collector that relays), and its answers come back.

    A driver describes each request: the bytes, a stream decoder for the answer, ``accept``
    (does this frame answer *this* request? check everything the protocol carries: address,
    function, data identifier, length), a timeout (when the answer must have *begun*), the
    character format. The channel carries it and applies the arbitration every driver needs
    (late answers, guards, quiet line); see :mod:`meterhub.channels.halfduplex`.
    """

    name: str  #: the channel's name
    settings: SerialSettings  #: the channel's character format (a request may ask for another)

    async def transact(
        self,
        request: bytes,
        decoder: StreamDecoder,
        *,
        timeout: float,
        accept: Callable[[Any], bool] = ...,
        settings: SerialSettings | None = None,
        guard: bool = True,
        gap: float | None = None,
        wake_up: int = 0,
        answer_within: float | None = None,
    ) -> Exchange:
        """Send ``request``; return the first decoded frame that ``accept`` takes. Raise
        MeterTimeout (nothing began by ``timeout``), ChecksumError, UnexpectedReply,
        TruncatedFrame or FrameError (what came instead), LinkError (the medium failed).
        ``guard=False``: the request's late answers cannot be mistaken for another's (scan
        probes whose ``accept`` checks the address asked), so no guard is kept after it.
        ``gap``: the silence the protocol needs before its frame; None = an inter-frame gap
        of 3.5 characters (Modbus RTU's, always safe), 0 for self-delimiting frames
        (:func:`meterhub.timing.line_quiet`). ``wake_up``: how many characters at the head of
        ``request`` only wake the receiver (FEh): they may overlap the last talker's
        turnaround. A medium that does not share a line may ignore both. ``answer_within``
        (at most ``timeout``): the answer must have begun by then, for long answers whose
        ``timeout`` covers their wire time (an IEC 62056-21 readout); None = ``timeout``. A
        medium that delivers whole answers (a carrier module) may treat it as the timeout."""
        ...

    async def send(
        self, request: bytes, *, settings: SerialSettings | None = None, gap: float | None = None, wake_up: int = 0,
    ) -> None:
        """Send a frame that gets no answer (a broadcast time sync)."""
        ...

    def session(self) -> AbstractAsyncContextManager[None]:
        """Hold the line for a multi-step exchange: inside ``async with conduit.session():``
        the driver's transactions follow each other with no other meter's in between, and
        a request may change the character format (IEC 62056-21: sign-on at 300 Bd 7E1,
        acknowledgement with the baud-rate switch, readout at the new rate)."""
        ...

    async def settle(self) -> list[LateAnswer]:
        """Listen out what the last transaction left owing (the guard after an unanswered
        request) and return the late answers heard since the last call, each naming the
        meter it was for. Raise LinkError if the medium fails meanwhile."""
        ...


@runtime_checkable
class ChannelSink(Protocol):
    """What a channel tells the runtime of its own accord (the runtime implements it)."""

    def wire(self, record: WireRecord) -> None:
        """A frame went out or came in (for traces, progress and the HIL bench's logs).
        Must not block; a channel that cannot see frames never calls it."""
        ...

    def unsolicited(self, report: Unsolicited) -> None:
        """A frame nobody asked for arrived (also in the middle of a transaction). Must
        not block; the runtime stores it and tells observers."""
        ...

    def wanted(self, address: str, protocol: str = "") -> None:
        """The far end asks for a meter's request (Q/GDW 1376.2 AFN 14: the module wants
        the frame to send to meter ``address``) and none is waiting: the runtime reads
        that meter now; its driver's requests then reach :meth:`Conduit.transact` and the
        channel hands them over as the module asks."""
        ...


@runtime_checkable
class Channel(Protocol):
    """A medium that carries meter-protocol requests to meters, from a transport.

    The runtime opens it, reads up to ``in_flight`` of its meters at once, gives each
    meter's driver the channel's :meth:`towards` that meter, and asks :meth:`answer_time`
    how long answers may take along the meter's route. A transport may build its channel
    on :class:`meterhub.channels.HalfDuplexChannel` (a serial line) or implement this
    Protocol itself (a carrier module, a multiplexer, a TCP gateway).
    """

    name: str
    settings: SerialSettings  #: the default character format (for meters that give none)
    #: transactions it can have under way at once: 1 on a half-duplex line; a carrier
    #: module that reads several meters concurrently says how many
    in_flight: int

    async def open(self) -> None:
        """Open the medium; raise LinkError saying why it cannot be."""
        ...

    async def close(self) -> None: ...

    def lane(self, meter: Meter) -> Hashable:
        """What ``meter`` shares with other meters of the channel that cannot be read at the
        same time (a half-duplex segment: the one RS485 line, one port of a multiplexer).
        The runtime reads at most one meter per lane at once, up to ``in_flight`` lanes."""
        ...

    def towards(self, meter: Meter | None) -> Conduit:
        """The channel for requests to ``meter`` (along its :attr:`Meter.route`); ``None``
        for requests to no configured meter (a scan, a broadcast)."""
        ...

    def answer_time(self, meter: Meter, base: float) -> float:
        """Seconds by which ``meter``'s answer must have begun, given ``base``: what its
        protocol needs at its character format on a direct line. The channel adds what
        its medium and the route cost (relays, a carrier network's hops, a TCP round trip)."""
        ...

    def listen(self, sink: ChannelSink) -> None:
        """Where to deliver unsolicited frames and far-end requests; called once after
        :meth:`open`. A channel that never has any may ignore it."""
        ...


@runtime_checkable
class Transport(Protocol):
    """A collector/channel driver: turns a configured channel into a :class:`Channel`."""

    name: str  #: what a site file writes as ``transport:`` (``rs485``)
    description: str

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        """Problems with the channel's settings as ``(key, message)`` pairs; empty if fine."""
        ...

    def create_channel(self, channel: ChannelConfig) -> Channel:
        """A channel for the configuration, not yet opened; raise LinkError if it cannot be
        made (the runtime reports the channel as down and tries again next round)."""
        ...


@runtime_checkable
class MeterDriver(Protocol):
    """A meter protocol (``dlt645``, ``modbus``, a vendor's own), spoken through a :class:`Conduit`."""

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

    async def read(self, bus: Conduit, meter: Meter, quantity: Quantity, timeout: float) -> Measurement:
        """Read one quantity; raise MeterTimeout, FrameError, MeterError or NotSupported."""
        ...

    async def scan(self, bus: Conduit, timeout: float) -> list[str]:
        """Addresses of the meters answering on the bus (raise NotSupported if it cannot)."""
        ...

    async def execute(self, bus: Conduit, meter: Meter, command: Command, timeout: float) -> Mapping[str, Any]:
        """Carry out a command (relay, time sync, ...); raise NotSupported for unknown ones."""
        ...


# --- what a meter driver may offer besides --------------------------------------------
# Optional capabilities: the core checks for them with ``isinstance`` against these
# Protocols (they are runtime-checkable), never by probing attribute names.


@runtime_checkable
class BatchReader(Protocol):
    """A driver that reads several quantities of a meter in as few requests as it can (one
    Modbus request for neighbouring registers, one M-Bus telegram for all records). The
    runtime then calls :meth:`read_many` instead of :meth:`MeterDriver.read` per quantity,
    and retries only the quantities that failed with silence or a damaged frame."""

    async def read_many(
        self, bus: Conduit, meter: Meter, quantities: Sequence[Quantity], timeout: float
    ) -> Sequence[Measurement | Exception]:
        """One outcome per quantity, in order: a Measurement or the error it failed with
        (returned, not raised). A request not sent because the meter was silent before it
        is :class:`~meterhub.errors.NotAttempted`."""
        ...


@runtime_checkable
class FrozenReader(Protocol):
    """A driver that reads a meter's own freeze records (DL/T 645 daily freezes 05 06 xx NN),
    so the concentrator back-fills the freezes it missed with the values the meter froze
    at the boundary, instead of values it read later."""

    #: how many daily freeze records back the meter keeps (DL/T 645: 62)
    frozen_depth: int

    async def read_frozen(self, bus: Conduit, meter: Meter, back: int, timeout: float) -> Sequence[Measurement]:
        """The meter's daily freeze ``back`` records ago (1 = the most recent): one
        Measurement per register it froze (OBIS of the register, e.g. ``1-0:1.8.0`` and its
        tariffs), each with ``data_time`` the freeze time by the meter's clock (naive local
        time) and ``period`` 1. Raise MeterTimeout, FrameError or MeterError like
        :meth:`MeterDriver.read`, and NotSupported when the meter keeps no such record."""
        ...


@runtime_checkable
class DeviceIdentity(Protocol):
    """A driver that knows a configured meter's make and model (a Modbus meter's device
    profile), so dashboards and master stations can name the device, not just its protocol."""

    def device_identity(self, meter: Meter) -> Mapping[str, str]:
        """``{"manufacturer": ..., "model": ...}`` of ``meter``; empty (or without a key)
        where it is not known. Never raises for a meter the driver accepted."""
        ...


@runtime_checkable
class MeterValidator(Protocol):
    """A driver that checks a configured meter beyond its address (a Modbus profile that
    exists and has the quantities asked for)."""

    def validate_meter(self, meter: Meter) -> list[tuple[str, str]]:
        """Problems as ``(key, message)`` pairs, ``key`` a path under the meter's entry
        (``options.profile``, ``quantities``); empty if fine. Reported at the key's line."""
        ...


@runtime_checkable
class ProfileSettings(Protocol):
    """A driver whose device profiles carry a serial format (a Modbus meter model's own
    9600 8N1): ``meterhub read`` uses it when no ``--baudrate`` is given."""

    def profile_settings(self, options: Mapping[str, Any]) -> SerialSettings | None:
        """The serial format of the profile ``options`` name, or None when it gives none."""
        ...


@runtime_checkable
class ProfileTaker(Protocol):
    """A driver that takes device profiles from the profile hook
    (:func:`meterhub.hookspecs.meterhub_register_profiles`)."""

    def add_profile(self, name: str, profile: Mapping[str, Any], source: str = "") -> None:
        """Add profile ``name``; ValueError saying what is wrong with it. ``source`` names
        where it came from (a plugin, a file) for messages."""
        ...


@runtime_checkable
class ProfileFolders(Protocol):
    """A driver that loads device profiles from a folder of YAML files (a site file's
    ``profiles:``)."""

    def load_profile_dir(self, path: str) -> list[str]:
        """Load every profile in the folder; the names loaded. ValueError naming the file
        and what is wrong."""
        ...


@runtime_checkable
class ScanTiming(Protocol):
    """A driver whose scan asks many addresses that are mostly not there: it knows a
    shorter wait per address than a read's (``meterhub scan`` uses it)."""

    def scan_timeout(self, settings: SerialSettings) -> float:
        """Seconds to wait for one scan probe's answer at ``settings``."""
        ...


@runtime_checkable
class CommandCredentials(Protocol):
    """A driver whose commands need credentials (DL/T 645: password and operator code for
    relay control, clearing, writing). The command path refuses such a command, with
    nothing sent, unless its credential reference resolves in the secret store to every
    field named here."""

    def command_credentials(self, name: str) -> Collection[str]:
        """The credential fields command ``name`` needs (``{"password", "operator"}``);
        empty when it needs none."""
        ...


@runtime_checkable
class ChannelArchive(Protocol):
    """A channel that keeps its own list of the meters it reaches (a carrier module's
    route table, Q/GDW 1376.2 AFN 11): the runtime tells it which meters the site places
    on it before :meth:`Channel.open`, and again whenever that changes (a master station
    adding a meter); the channel brings its medium in line (adds what is missing, deletes
    what is not there any more)."""

    def place(self, meters: Sequence[Meter]) -> None:
        """The meters on this channel now, in site order (each with its route). Must not
        block: a channel that is open brings its medium in line before its next transaction."""
        ...


@runtime_checkable
class TransportDefaults(Protocol):
    """A transport whose medium has its own usual character format (a carrier module's
    UART: 9600 8E1): a channel that gives no ``baudrate:``/``parity:`` gets it, instead of
    the meters' 2400 8E1."""

    default_settings: SerialSettings


@runtime_checkable
class RouteReporter(Protocol):
    """A conduit whose medium finds its own way to the meter: a carrier network's relays
    change as the network heals, and the module says how many an answer came through
    (Q/GDW 1376.2: R1 relay level). The runtime records it on the meter's readings
    (:attr:`meterhub.model.Reading.relays`), so success rates can be grouped per relay
    depth."""

    def relays(self) -> int | None:
        """Relays between the channel and the meter's first configured hop (the meter
        itself, or its collector) as the medium last saw them; None when not known."""
        ...


@runtime_checkable
class PlacementValidator(Protocol):
    """A transport that checks each meter placed on one of its channels when the site file
    is loaded (a multiplexer whose port map must name the meter, a carrier module with a
    limit on relay depth), so that a meter it cannot reach is a file:line error, not a
    failure at the first round."""

    def validate_placement(self, channel: ChannelConfig, meter: Meter) -> list[tuple[str, str]]:
        """Problems as ``(key, message)`` pairs, ``key`` a path under the meter's entry
        (``address``, ``collector``) or "" for the entry itself; empty if fine."""
        ...


@runtime_checkable
class SimulatorSettings(Protocol):
    """A meter simulator whose devices' serial format depends on their options (a Modbus
    profile's own rate), for the site file it writes and the pace of its answers."""

    def settings_for(self, options: Mapping[str, str]) -> SerialSettings:
        ...


async def read_one(driver: Any, bus: Conduit, meter: Meter, quantity: Quantity | str, timeout: float) -> Measurement:
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
class Terminal(Protocol):
    """What a running concentrator offers its uplinks: the terminal a master station talks
    to (Q/GDW 1376.1 calls the concentrator a terminal). Every uplink gets its own.

    Readings and events bound for the uplink wait in a durable outbox (written in the same
    transaction as the readings themselves): the uplink takes them with :meth:`outbox`,
    sends them, and acknowledges what the far end confirmed with :meth:`ack`. What is not
    acknowledged is offered again, after a restart too: nothing is lost, and an uplink that
    acknowledges by id sends nothing twice once acknowledged.
    """

    name: str  #: the uplink's name (its outbox queue)
    terminal: str  #: the concentrator's identity (``terminal:`` in the site file)

    def points(self) -> Mapping[int, Meter]:
        """The meter archive: measuring point number -> meter, for meters that have one."""
        ...

    def meters(self) -> Sequence[Meter]:
        """Every configured meter, measuring point or not, in the site file's order."""
        ...

    #: the site's reading schedule (how often a value is renewed: a dashboard's expiry)
    schedule: Schedule

    async def latest(self, point: int | None = None) -> list[Reading]:
        """The newest good reading of every quantity (of one point, or of all)."""
        ...

    async def frozen(self, point: int, *, period: int | None = None) -> list[Reading]:
        """Stored frozen values of a point (readings with a billing ``period``), newest first."""
        ...

    async def read_now(self, point: int) -> list[Reading]:
        """Read a point's meter at once (stored, like a round's readings) and return the readings."""
        ...

    async def set_meter(self, point: int, meter: Meter | None) -> None:
        """Add, change (``meter``) or remove (``None``) the meter of a point in the running
        concentrator; ValueError saying why a meter cannot be taken (unknown channel,
        protocol or address)."""
        ...

    async def events(self, *, since: datetime | None = None, limit: int | None = None) -> list[Event]:
        """Stored events, oldest first."""
        ...

    def raise_event(self, event: Event) -> None:
        """Raise an event of the uplink's own (a master that sent a wrong password, a
        modem's signal quality): stored, queued for every uplink and told to observers,
        like the concentrator's events. Returns at once; the store writes it."""
        ...

    async def execute(self, point: int | Meter, command: Command) -> Mapping[str, Any]:
        """Carry out a command on a point's meter (or on one of :meth:`meters`, given
        itself) through the command path every origin uses (policy hooks, credentials from the secret store, the audit trail); raise
        CommandRefused with the reason when it is refused, with nothing sent."""
        ...

    async def command(self, command: Command,
                      carry: Callable[[Command], Awaitable[Mapping[str, Any]]]) -> Mapping[str, Any]:
        """Carry out a command on the concentrator itself, one that names no meter (a
        master station setting the terminal's clock or the uplink's parameters), through
        the same command path as :meth:`execute`: journalled, and refused with
        CommandRefused (nothing done) unless every policy hook agrees; then
        ``carry(command)`` does it, and what it returns is journalled as the answer."""
        ...

    async def settings(self) -> dict[str, Any]:
        """What this uplink kept with :meth:`keep_settings` (JSON values), across restarts."""
        ...

    async def keep_settings(self, values: Mapping[str, Any]) -> None:
        """Keep JSON-able ``values`` for this uplink in the store (None deletes a key):
        what a master station set outlives a restart."""
        ...

    async def outbox(self, limit: int = 100) -> list[OutboxItem]:
        """Readings and events waiting for this uplink, oldest first."""
        ...

    async def ack(self, ids: Collection[int]) -> int:
        """The far end has them: remove these outbox items; returns how many were removed."""
        ...

    async def wait_outbox(self, timeout: float | None = None) -> bool:
        """Wait until something new is queued for this uplink (``True``) or ``timeout``
        seconds pass (``False``)."""
        ...


@runtime_checkable
class Uplink(Protocol):
    """A running uplink to a master station: made by its :class:`UplinkDriver` for one
    configured ``uplink:`` section and handed the concentrator's :class:`Terminal`."""

    async def run(self) -> None:
        """Talk to the master station until cancelled. Returning or raising is a failure:
        the concentrator logs it, raises an ``uplink_failed`` event and runs the uplink
        again after a back-off, never stopping the readings."""
        ...


@runtime_checkable
class UplinkDriver(Protocol):
    """An uplink protocol (``gdw1376.1`` over GPRS or TCP, ``mqtt``), from the uplink hooks."""

    name: str  #: what a site file writes as the uplink's ``protocol:``
    description: str

    def validate(self, config: UplinkConfig) -> list[tuple[str, str]]:
        """Problems with the section's keys as ``(key, message)`` pairs; empty if fine.
        Called when the site file is loaded, so a bad section stops ``meterhub run``."""
        ...

    def create(self, config: UplinkConfig, terminal: Terminal) -> Uplink:
        """The uplink for a validated section, not yet running."""
        ...
