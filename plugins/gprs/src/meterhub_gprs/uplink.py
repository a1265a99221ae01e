"""The ``gdw1376.1`` uplink: the concentrator's (terminal's) side of Q/GDW 1376.1-2013,
over plain TCP or a cellular modem.

Per connection the terminal logs in (AFN 02 F1, confirmed by the master with AFN 00 F1
and RSEQ = our PSEQ), sends heartbeats (AFN 02 F3) and answers the master's requests:

* AFN 0C F2 (clock), F25 (instantaneous), F33 and F129 (forward energy) from
  :meth:`Terminal.latest`; a field without a good reading is sent as no data (EEh);
* AFN 0D F161/F177 (daily/monthly frozen forward active energy) from
  :meth:`Terminal.frozen` only (readings with a billing period): those whose freeze time
  (``data_time``) stands for the day (month) asked, a freeze at midnight standing for the
  day (and on the 1st, the month) it closes; none stored: the unit is denied;
* AFN 0A F1, F3, F10 and AFN 04 F1, F3, F10 (PW required);
* AFN 05 F1/F2 (trip / permit close of a measuring point's meter through
  :meth:`Terminal.execute`: the ``relay`` command with ``action`` ``trip`` or
  ``close_permitted``, as the DL/T 645 driver names them; it goes through the command
  policy and takes the meter's own credential from the secret store),
  F29/F37 (allow/forbid active reports), F31 (clock set: kept as an offset, the OS clock
  is not changed) — PW required.

Every setting and control of the terminal itself (AFN 04 F1 ``set_heartbeat``, F3
``set_master_station``, F10 ``set_meter_archive``; AFN 05 F31 ``set_clock``, F29/F37
``set_active_reporting``) is a command through :meth:`Terminal.command`: journalled in the
audit trail with the master as issuer, and denied, with nothing changed, when a policy hook
refuses it. What it sets is kept in the store (:meth:`Terminal.keep_settings`; the archive
by the concentrator) and put back after a restart, except where the site file was changed
since: then the file's newer value wins.
* AFN 0E F1/F2 events from :meth:`Terminal.events`, mapped to ERC records: meter_dead /
  meter_recovered -> ERC31 start / end (pn of the meter's point), line_jammed and
  link_down -> ERC21 code 4 (meter-reading port), concentrator_started -> ERC14 power-on
  (no such event exists in the core yet). The n-th mapped event has pointer n mod 256;
  all are important events (F1), F2 answers none.

Anything it cannot answer (unknown AFN or Fn, a unit whose length lies, a wrong PW) is
denied with AFN 00 F2 (or per unit with F3) and logged, never left unanswered. A read
request of which some units can be answered and some not gets the data frame(s) and then
one AFN 00 F3 frame denying the others (the last frame, FIN; RSEQ counting on). Answers
longer than ``max_frame`` bytes of user data are split over frames with FIR/FIN and
consecutive RSEQ. Requests are answered in order by one task apart from the receiver, so
the master's confirms (heartbeats, reports) are taken while a command waits for a meter.

Store and forward: while active reporting is allowed (the default), the outbox goes out
as active reports, uplink PRM = 1 with function 4 (user data; the C = C4h the protocols
README gives for a terminal's active reports) and CON = 1: readings of 1-0:1.8.x as AFN
0C F129 (one frame per point and read time), meterhub events that have an ERC as AFN 0E
F1 (one record per frame; Pm/Pn count this uplink's reported events from 0). An item is acknowledged in the outbox only when the master confirmed its frame (AFN 00
F1 with our PSEQ); what is not confirmed is offered again (after a reconnect or a
restart). A report the master denies (AFN 00 F2) is offered :data:`DENIED_TRIES` times,
then taken out of the outbox with an ``uplink_report_denied`` warning event naming it (the
readings stay in the store): the master has it and refuses it, and the rest must go on. Items that 1376.1 cannot express here (other quantities, failed readings,
readings of meters without a measuring point, events without an ERC) are acknowledged
with a debug log: they are not for this uplink.

Decisions: AFN 05 F1/F2's pn is taken as the measuring point whose meter's relay is
switched (in the standard it counts control rounds of the terminal's own relays, which
meterhub has none of); EC/ACD is never raised (events are polled or actively reported); Tp of a
request is echoed in its answers, and a request whose Tp delay (minutes, 0 = unchecked)
has run out by the terminal's clock is dropped unanswered, as the standard has it; the master's
broadcast (A2 = FFFFh with the group flag) is carried out but not answered; a point with
no meter, or an "every point" unit with no points, is denied. AFN 04 F10 maps protocol 1
to ``dlt645-1997`` and 30 to ``dlt645`` (others are denied) and puts the meter on the
channel the point's meter had, else on the site's first channel (the channel a meter
already at that point uses; the Terminal offers no list of channels, so "the first
channel" is the channel of the meter with the lowest point). A wrong PW raises the meterhub
event ``uplink_password_refused`` (and a log line at warning); the modem's signal at each
connection is an event ``modem_signal`` (``signal_dbm``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
from meterhub.errors import (
    CommandRefused,
    CredentialError,
    FrameError,
    LinkError,
    MeterhubError,
)
from meterhub.model import (
    Command,
    Event,
    Meter,
    OutboxItem,
    Reading,
    UplinkConfig,
    meter_key,
)
from meterhub.protocols import gdw1376_1 as g
from meterhub.protocols import gdw1376_1_data as d
from meterhub.protocols.gdw1376_1_quantities import (
    ACTIVE,
    APPARENT,
    CURRENT,
    POWER_FACTOR,
    Q1,
    Q4,
    REACTIVE,
    REACTIVE_1,
    TARIFF,
    VOLTAGE,
)
from meterhub.uplinks import restart_delay

from .stream import ByteStream, Connector, TcpConnector

if TYPE_CHECKING:
    from meterhub.api import Terminal

log = logging.getLogger(__name__)

# --- figures -------------------------------------------------------------------------------

#: Reconnect back-off: the first wait, doubling per failed connection up to the cap, each
#: wait jittered by ±JITTER so a fleet of concentrators does not reconnect in step.
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 300.0
JITTER = 0.25
#: How long the master gets to confirm a login or an active report, and how often a login is tried.
CONFIRM_TIMEOUT_S = 30.0
LOGIN_TRIES = 3
#: Heartbeats unconfirmed in a row after which the connection is taken for dead.
HEARTBEAT_MISSES = 3
#: The logout at cancellation is best effort: this long for the master's confirm.
LOGOUT_TIMEOUT_S = 2.0
#: A send under way when the session is cancelled gets this long to finish (see _send).
SEND_FINISH_S = 10.0
#: Outbox items taken per look, and how long an idle uplink waits before looking again anyway.
OUTBOX_BATCH = 100
#: Times a report the master denies (AFN 00 F2) is offered before it is given up: the
#: master has it and refuses it, so sending it again for ever would only hold up the rest.
DENIED_TRIES = 3
IDLE_POLL_S = 5.0
DEFAULT_MAX_FRAME = 1024
DEFAULT_HEARTBEAT_S = 60
#: A receive call's wait: scheduling only, the session's timeouts are kept by the tasks.
RECEIVE_SLICE_S = 1.0

TRANSPORTS = ("tcp", "gprs")
KEYS = frozenset({"transport", "server", "area_code", "terminal_address", "heartbeat_s", "password", "max_frame",
                  "port", "baudrate", "apn", "pin", "model", "mode", "active_report"})
MODEM_KEYS = frozenset({"port", "baudrate", "apn", "pin", "model", "mode"})

_TARIFF = TARIFF

#: AFN 04/0A F10 protocol code -> meterhub meter protocol.
F10_PROTOCOLS = {d.MeterProtocol.DLT645_1997: "dlt645-1997", d.MeterProtocol.DLT645_2007: "dlt645"}
_F10_CODES = {v: k for k, v in F10_PROTOCOLS.items()}

#: meterhub event kinds -> what an ERC record says of them.
EVENT_KINDS = ("meter_dead", "meter_recovered", "line_jammed", "link_down", "concentrator_started")

DENIED = 1  #: AFN 00 F3 error code of a denied unit


class LoginFailed(LinkError):
    """The master did not confirm the login (or the heartbeats): the connection is of no use."""


# --- settings ----------------------------------------------------------------------------


@attrs.frozen
class Settings:
    """A validated ``uplink:`` section."""

    transport: str
    host: str
    port: int
    area: str
    terminal: int
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    password: str = ""  #: 32 hex digits, a secret-store reference, or "" (AFN 04/05 always denied)
    max_frame: int = DEFAULT_MAX_FRAME
    modem: Mapping[str, Any] = attrs.field(factory=dict)
    active_report: bool = True


def _server(value: object) -> tuple[str, int]:
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server is host:port with a port 1..65535, e.g. 127.0.0.1:4001, got {value!r}")
    return host.strip("[]"), int(port)


def _problems(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key in options:
        if key not in KEYS:
            problems.append((key, f"unknown key (the gdw1376.1 uplink takes {', '.join(sorted(KEYS))})"))
    transport = options.get("transport", "tcp")
    if transport not in TRANSPORTS:
        problems.append(("transport", f"must be tcp or gprs, got {transport!r}"))
    if "server" not in options:
        problems.append(("", "missing required key server (the master station as host:port)"))
    else:
        try:
            _server(options["server"])
        except ValueError as exc:
            problems.append(("server", str(exc)))
    area = options.get("area_code")
    if area is None:
        problems.append(("", 'missing required key area_code (A1, 4 digits, e.g. "3201"; quote it)'))
    elif not isinstance(area, str) or re.fullmatch(r"[0-9]{4}", area.strip()) is None:
        problems.append(("area_code", f'must be 4 decimal digits in quotes, e.g. "3201", got {area!r}'))
    address = options.get("terminal_address")
    if address is None:
        problems.append(("", "missing required key terminal_address (A2, 1..65535)"))
    elif isinstance(address, bool) or not isinstance(address, int) or not 1 <= address <= 0xFFFE:
        problems.append(("terminal_address", f"must be a whole number 1..65534 (65535 is the broadcast address), got {address!r}"))
    heartbeat = options.get("heartbeat_s", DEFAULT_HEARTBEAT_S)
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float) or not heartbeat > 0:
        problems.append(("heartbeat_s", f"must be a number of seconds > 0, got {heartbeat!r}"))
    password = options.get("password")
    if password is not None and (not isinstance(password, str) or not password.strip()):
        problems.append(("password", "must be 32 hex digits (the 16 PW bytes) or the name of a secret-store entry"))
    max_frame = options.get("max_frame", DEFAULT_MAX_FRAME)
    if isinstance(max_frame, bool) or not isinstance(max_frame, int) or not g.MIN_USER_DATA + 64 <= max_frame <= g.MAX_USER_DATA:
        problems.append(("max_frame", f"must be bytes of user data {g.MIN_USER_DATA + 64}..{g.MAX_USER_DATA}, got {max_frame!r}"))
    if "active_report" in options and not isinstance(options["active_report"], bool):
        problems.append(("active_report", f"must be true or false, got {options['active_report']!r}"))
    if transport == "gprs":
        if not options.get("port"):
            problems.append(("", "missing required key port (the modem's serial port) for transport gprs"))
        if not options.get("apn"):
            problems.append(("", "missing required key apn (the operator's access point name) for transport gprs"))
        baud = options.get("baudrate", 115200)
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            problems.append(("baudrate", f"must be a whole number of bit/s, got {baud!r}"))
        pin = options.get("pin")
        if pin is not None and re.fullmatch(r"\d{4,8}", str(pin)) is None:
            problems.append(("pin", "must be 4 to 8 digits (quote it)"))
        mode = options.get("mode", "command")
        if mode not in ("command", "transparent"):
            problems.append(("mode", f"must be command or transparent, got {mode!r}"))
        model = options.get("model")
        if model is not None:
            from .modem import command_set_for, supported_models

            if not isinstance(model, str) or command_set_for(model) is None:
                problems.append(("model", f"unknown modem model {model!r}; supported: {supported_models()}"))
    else:
        for key in sorted(MODEM_KEYS & set(options)):
            problems.append((key, "only for transport gprs (a modem); transport tcp needs only server"))
    return problems


def settings(options: Mapping[str, Any]) -> Settings:
    """The Settings of a section that :func:`_problems` passed."""
    host, port = _server(options["server"])
    return Settings(
        transport=options.get("transport", "tcp"),
        host=host,
        port=port,
        area=str(options["area_code"]).strip(),
        terminal=int(options["terminal_address"]),
        heartbeat_s=float(options.get("heartbeat_s", DEFAULT_HEARTBEAT_S)),
        password=str(options.get("password", "")).strip(),
        max_frame=int(options.get("max_frame", DEFAULT_MAX_FRAME)),
        modem={k: options[k] for k in MODEM_KEYS if k in options},
        active_report=bool(options.get("active_report", True)),
    )


_PW_HEX = re.compile(r"[0-9A-Fa-f]{32}")


def resolve_password(value: str, secrets: Callable[[str], Mapping[str, str]] | None = None) -> bytes | None:
    """The 16 PW bytes: ``value`` itself when it is 32 hex digits, else the ``password``
    field of the secret-store entry it names (the store meter credentials come from).
    None when no password is configured; CredentialError when it cannot be had."""
    if not value:
        return None
    if _PW_HEX.fullmatch(value):
        return bytes.fromhex(value)
    if secrets is None:
        from meterhub.secrets import default_secrets

        secrets = default_secrets().get
    entry = secrets(value)
    text = str(entry.get("password", "")).strip()
    if _PW_HEX.fullmatch(text) is None:
        raise CredentialError(f"credential {value!r}: its password field must be 32 hex digits (the 16 PW bytes)")
    return bytes.fromhex(text)


# --- mapping meterhub data to 1376.1 items ---------------------------------------------------


def local_minute(when: datetime) -> datetime:
    """A stored (UTC) time as the naive local time A.15 sends, to the minute."""
    if when.tzinfo is not None:
        when = when.astimezone().replace(tzinfo=None)
    return when.replace(second=0, microsecond=0)


def _exact(fmt: d.Number, value: Decimal | str | None, scale: int = 0) -> Decimal | None:
    """``value`` if ``fmt`` carries it exactly, else None (no data): never a rounded value."""
    if not isinstance(value, Decimal):
        return None
    value = value.scaleb(scale)
    try:
        fmt.encode(value)
    except ValueError:
        log.debug("%s cannot carry %s exactly: sent as no data", fmt.name, value)
        return None
    return value


def _good(readings: Iterable[Reading]) -> dict[str, Reading]:
    """The newest good reading per quantity."""
    found: dict[str, Reading] = {}
    for r in readings:
        if r.ok and r.period is None and (r.quantity not in found or r.timestamp > found[r.quantity].timestamp):
            found[r.quantity] = r
    return found


def tariff_energy(readings: Mapping[str, Reading]) -> d.TariffEnergy | None:
    """F129 of a point's newest readings (None: it has no active energy at all)."""
    tariffs = {int(m.group(1)): r for q, r in readings.items() if (m := _TARIFF.fullmatch(q))}
    tariffs = {n: r for n, r in tariffs.items() if n <= 63}
    if not tariffs:
        return None
    count = max((n for n in tariffs if n), default=0)
    values = [_exact(d.A14, tariffs[n].value) if n in tariffs else None for n in range(count + 1)]
    when = (tariffs.get(0) or max(tariffs.values(), key=lambda r: r.timestamp)).timestamp
    return d.TariffEnergy(local_minute(when), values)


def forward_indications(readings: Mapping[str, Reading]) -> d.ForwardIndications | None:
    energy = tariff_energy(readings)
    if energy is None:
        return None
    blocks = len(energy.values)

    def block(total: str) -> list[Decimal | None]:
        return [_exact(d.A11, readings[total].value) if total in readings else None] + [None] * (blocks - 1)

    return d.ForwardIndications(energy.read_time, energy.values, block(REACTIVE_1), block(Q1), block(Q4))


def instantaneous(readings: Mapping[str, Reading]) -> d.Instantaneous | None:
    used = [readings[q] for q in (*ACTIVE, *REACTIVE, *POWER_FACTOR, *VOLTAGE, *CURRENT, *APPARENT) if q in readings]
    if not used:
        return None

    def values(quantities: Sequence[str], fmt: d.Number, scale: int = 0) -> list[Decimal | None]:
        return [_exact(fmt, readings[q].value, scale) if q in readings else None for q in quantities]

    return d.Instantaneous(
        local_minute(max(r.timestamp for r in used)),
        values(ACTIVE, d.A9),
        values(REACTIVE, d.A9),
        values(POWER_FACTOR, d.A5, 2),  # meterhub keeps a ratio (0.95), A.5 is percent (95.0)
        values(VOLTAGE, d.A7),
        values(CURRENT, d.A25),
        values(APPARENT, d.A9),
    )


def frozen_for(when: datetime) -> datetime:
    """The local time a frozen value stands for: a freeze at midnight closes the day (and on
    the 1st, the month) before it, so 2026-02-01 00:00 is January's and 31 January's value;
    any other freeze time stands for the day and month it falls in."""
    local = local_minute(when)
    return local - timedelta(minutes=1) if (local.hour, local.minute) == (0, 0) else local


def frozen_energy(readings: Sequence[Reading], matches: Callable[[datetime], bool]) -> d.TariffEnergy | None:
    """F161/F177's reading from frozen readings (newest first) whose :func:`frozen_for`
    time ``matches``; the freeze time is ``data_time``, else when it was read."""
    chosen: dict[str, Reading] = {}
    for r in readings:
        when = r.data_time or r.timestamp
        if r.ok and _TARIFF.fullmatch(r.quantity) and matches(frozen_for(when)) and r.quantity not in chosen:
            chosen[r.quantity] = r
    return tariff_energy(chosen) if chosen else None


def event_record(event: Event, point: int | None) -> d.Event | None:
    """The ERC record of a meterhub event, None when 1376.1 has no record for it here."""
    when = local_minute(event.timestamp)
    if event.kind in ("meter_dead", "meter_recovered") and point is not None:
        return d.ReadFailure(when, d.PointFlag(point % 0x1000, event.kind == "meter_dead"), None, None, None)
    if event.kind in ("line_jammed", "link_down"):
        return d.TerminalFault(when, d.TerminalFaultCode.METER_READING_PORT)
    if event.kind == "concentrator_started":
        return d.PowerEvent(None, when)
    return None


# --- the session -------------------------------------------------------------------------------


@attrs.frozen
class _Answer:
    """What one request gets: data units (or units confirmed), and units denied."""

    units: tuple[g.DataUnit, ...] = ()
    denied: tuple[tuple[tuple[int, ...] | None, tuple[int, ...]], ...] = ()
    confirmed: tuple[tuple[tuple[int, ...] | None, tuple[int, ...]], ...] = ()


class Gdw1376Uplink:
    """A running ``gdw1376.1`` uplink (:class:`meterhub.api.Uplink`).

    ``connector`` (tests: any :class:`~meterhub_gprs.stream.Connector`), ``confirm_timeout``
    and ``secrets`` (a ``get(ref)`` callable) are injectable.
    """

    def __init__(
        self,
        config: Settings,
        terminal: Terminal,
        *,
        connector: Connector | None = None,
        confirm_timeout: float = CONFIRM_TIMEOUT_S,
        secrets: Callable[[str], Mapping[str, str]] | None = None,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.config = config
        self.terminal = terminal
        self.heartbeat_s = config.heartbeat_s
        self.server = (config.host, config.port)
        self.apn = str(config.modem.get("apn", ""))
        self.confirm_timeout = confirm_timeout
        self.reporting = config.active_report
        self.clock_offset = timedelta(0)  #: what AFN 05 F31 set, added to the OS clock
        self._connector = connector
        self._secrets = secrets
        self._now = clock
        self._pseq = 0
        self._pfc = 0
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._denials: dict[int, int] = {}  #: times a report was denied, by its first outbox id
        self._send_lock = asyncio.Lock()
        self._stream: ByteStream | None = None
        self._lost: LinkError | None = None  #: why the current connection ended
        self._logged_in = False
        self._requests: asyncio.Queue[g.Frame] = asyncio.Queue()
        self._heartbeat_changed = asyncio.Event()
        self._reporting_changed = asyncio.Event()
        self.connections = 0  #: sessions that got past the login

    # -- time and identity ----------------------------------------------------------------------

    def now(self) -> datetime:
        """The terminal's clock: the OS clock (local, naive) plus what the master set."""
        return (self._now() + self.clock_offset).replace(microsecond=0)

    def _connect_with(self) -> Connector:
        if self._connector is not None:
            return self._connector
        if self.config.transport == "gprs":
            from .modem import ModemConnector

            modem = self.config.modem
            return ModemConnector(str(modem["port"]), apn=self.apn, server=self.server,
                                  baudrate=int(modem.get("baudrate", 115200)),
                                  pin=None if modem.get("pin") is None else str(modem["pin"]),
                                  model=modem.get("model"), mode=str(modem.get("mode", "command")),
                                  metrics=self._modem_metric)
        return TcpConnector(*self.server)

    def _modem_metric(self, name: str, value: float) -> None:
        """The modem's signal quality at each connection, as an event the store keeps (and
        every uplink carries): a field technician's first question about a silent site."""
        log.debug("modem %s = %s", name, value)
        if name == "signal_dbm":
            self.terminal.raise_event(Event("modem_signal", source=self.terminal.name,
                                            data={"signal_dbm": value}))

    # -- the outer loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        await self.restore()
        failures = 0
        outage = False
        while True:
            connector = self._connect_with()
            try:
                stream = await connector.connect()
            except LinkError as exc:
                reason: LinkError | None = exc
            else:
                self._logged_in = False
                try:
                    await self._session(stream)
                    reason = None
                except LinkError as exc:
                    reason = exc
                finally:
                    await stream.close()
                if self._logged_in:  # it worked for a while: a new outage starts
                    failures = 0
                    outage = False
            failures += 1
            if not outage:
                outage = True
                log.warning("gdw1376.1 uplink: %s: %s; reconnecting with back-off", connector.describe(),
                            reason or "the session ended")
            else:
                log.debug("gdw1376.1 uplink: still down: %s", reason)
            await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        base = restart_delay(failures, initial=BACKOFF_INITIAL_S, maximum=BACKOFF_MAX_S)
        return base * random.uniform(1 - JITTER, 1 + JITTER)

    async def _session(self, stream: ByteStream) -> None:
        self._stream = stream
        self._lost = None
        self._pending.clear()
        self._requests = asyncio.Queue()
        reader = asyncio.get_running_loop().create_task(self._receive(stream))
        try:
            try:
                await self._login()
                self._logged_in = True
                self.connections += 1
                log.info("gdw1376.1 uplink: logged in as %s/%d", self.config.area, self.config.terminal)
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._heartbeats())
                    group.create_task(self._reports())
                    group.create_task(self._serve())
                    group.create_task(self._watch(reader))
            except* LinkError as errors:
                raise errors.exceptions[0] from None
            except* Exception as errors:  # noqa: BLE001 - re-raised unwrapped, for the runner's log
                raise errors.exceptions[0] from None
        except asyncio.CancelledError:
            if self._lost is None:
                await self._logout()
            raise
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._stream = None

    async def _watch(self, reader: asyncio.Task[None]) -> None:
        """End the session with the reader's LinkError (the connection is gone)."""
        await asyncio.shield(reader)

    # -- frames we start ---------------------------------------------------------------------------

    def _next_pseq(self) -> int:
        seq = self._pseq
        self._pseq = (self._pseq + 1) % (g.SEQ_MASK + 1)
        return seq

    def _frame(self, afn: int, units: Sequence[g.DataUnit], *, prm: bool, function: int, seq: int,
               master: int = 0, con: bool = False, fir: bool = True, fin: bool = True,
               tp: g.TimeTag | None = None) -> g.Frame:
        return g.Frame(direction=g.Direction.UP, prm=prm, function=function, area=self.config.area,
                       terminal=self.config.terminal, afn=afn, payload=g.pack_units(units), master=master,
                       seq=seq, con=con, fir=fir, fin=fin, tp=tp)

    async def _send(self, frame: g.Frame) -> None:
        if self._stream is None:
            raise LinkError("no connection")
        if self._lost is not None:
            raise self._lost
        async with self._send_lock:
            # A send is not cut by a cancellation (the session ending, the uplink stopping):
            # through a modem it is a command, a '>' prompt and then the data, and a modem
            # left waiting for the data takes the next commands (the logout, AT+QICLOSE) as
            # data, so closing the connection then hangs for the modem driver's timeouts
            # (over a minute). The send runs to its end (bounded) and the cancellation is
            # taken after it.
            send = asyncio.ensure_future(self._stream.send(g.encode(frame)))
            try:
                await asyncio.shield(send)
            except asyncio.CancelledError:
                done, _ = await asyncio.wait([send], timeout=SEND_FINISH_S)
                if not done:
                    send.cancel()
                elif not send.cancelled():
                    send.exception()  # retrieved: the cancellation is what is raised
                raise

    async def _confirmed(self, afn: int, units: Sequence[g.DataUnit], *, function: int, timeout: float) -> int | None:
        """Send a frame with CON = 1 and wait for the master's AFN 00 answer: its Fn (1
        confirmed, 2 denied), or None after ``timeout``."""
        seq = self._next_pseq()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            await self._send(self._frame(afn, units, prm=True, function=function, seq=seq, con=True))
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result and
            # swallows a cancellation that comes as the confirm arrives, and the session's
            # TaskGroup then waits forever for a task that goes on reporting
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return None
        finally:
            if self._pending.get(seq) is future:
                del self._pending[seq]

    async def _login(self) -> None:
        for attempt in range(1, LOGIN_TRIES + 1):
            answer = await self._confirmed(g.Afn.LINK, [d.unit([0], [1])], function=g.PrimaryFunction.LINK_TEST,
                                           timeout=self.confirm_timeout)
            if answer == 1:
                return
            log.info("gdw1376.1 uplink: login %s (try %d of %d)", "denied" if answer else "not confirmed",
                     attempt, LOGIN_TRIES)
        raise LoginFailed(f"the master did not confirm the login after {LOGIN_TRIES} tries")

    async def _logout(self) -> None:
        try:
            await asyncio.wait_for(
                self._confirmed(g.Afn.LINK, [d.unit([0], [2])], function=g.PrimaryFunction.LINK_TEST,
                                timeout=LOGOUT_TIMEOUT_S), LOGOUT_TIMEOUT_S)
        except (LinkError, TimeoutError, asyncio.CancelledError) as exc:
            log.debug("gdw1376.1 uplink: logout not confirmed: %r", exc)

    async def _heartbeats(self) -> None:
        misses = 0
        while True:
            try:
                await asyncio.wait_for(self._heartbeat_changed.wait(), self.heartbeat_s)
            except TimeoutError:
                pass
            if self._heartbeat_changed.is_set():
                self._heartbeat_changed.clear()
                continue  # a new period: wait it out from now
            answer = await self._confirmed(g.Afn.LINK, [d.unit([0], [3])], function=g.PrimaryFunction.LINK_TEST,
                                           timeout=min(self.heartbeat_s, self.confirm_timeout))
            misses = 0 if answer == 1 else misses + 1
            if misses:
                log.info("gdw1376.1 uplink: heartbeat not confirmed (%d in a row)", misses)
            if misses >= HEARTBEAT_MISSES:
                raise LoginFailed(f"{HEARTBEAT_MISSES} heartbeats in a row were not confirmed")

    # -- store and forward -----------------------------------------------------------------------------

    async def _reports(self) -> None:
        while True:
            if not self.reporting:
                self._reporting_changed.clear()
                await self._reporting_changed.wait()
                continue
            items = await self.terminal.outbox(OUTBOX_BATCH)
            if not items:
                await self.terminal.wait_outbox(IDLE_POLL_S)
                continue
            sent_all = True
            for afn, units, ids in self._report_frames(items, more=len(items) == OUTBOX_BATCH):
                if not units:
                    log.debug("gdw1376.1 uplink: outbox items %s cannot be expressed in 1376.1; acknowledged", ids)
                    await self.terminal.ack(ids)
                    continue
                answer = await self._confirmed(afn, units, function=g.PrimaryFunction.USER_DATA,
                                               timeout=self.confirm_timeout)
                if answer == 1:
                    self._denials.pop(ids[0], None)
                    await self.terminal.ack(ids)
                    continue
                if answer == 2:
                    denials = self._denials[ids[0]] = self._denials.get(ids[0], 0) + 1
                    if denials >= DENIED_TRIES:
                        await self._give_up(afn, units, ids, denials)
                        continue
                log.info("gdw1376.1 uplink: active report %s; kept for later", "denied" if answer else "not confirmed")
                sent_all = False
                break
            if not sent_all:
                await asyncio.sleep(self.confirm_timeout)

    async def _give_up(self, afn: int, units: Sequence[g.DataUnit], ids: Sequence[int], denials: int) -> None:
        """Take a report the master keeps denying out of the outbox, saying so: the readings
        and events stay in the store, and the ``uplink_report_denied`` event (queued for
        every uplink, this one included) names what the master refused."""
        self._denials.pop(ids[0], None)
        what = [f"pn {p} F{f}" for unit in units for p in unit.points for f in unit.functions]
        log.warning("gdw1376.1 uplink: the master denied the AFN %02X report (%s) %d times; given up, the "
                    "outbox goes on (outbox ids %s stay in the store)", afn, ", ".join(what), denials, list(ids))
        self.terminal.raise_event(Event("uplink_report_denied", source=self.terminal.name, severity="warning",
                                        data={"afn": afn, "units": what, "outbox_ids": list(ids),
                                              "denials": denials}))
        await self.terminal.ack(ids)

    def _point_of(self) -> dict[str, int]:
        return {m.key: p for p, m in self.terminal.points().items()}

    def _report_frames(
        self, items: Sequence[OutboxItem], *, more: bool = False,
    ) -> list[tuple[int, list[g.DataUnit], list[int]]]:
        """(AFN, units, outbox ids) per frame; no units: ids to acknowledge unsent.

        One F129 report is one visit of a meter: its registers, all from the same reading
        (a quantity seen again for the point starts the next visit, so two rounds within
        one minute are never mixed into one report). ``more``: the outbox holds items past
        these; the last visit may continue there, so it waits for the next batch rather than
        go out without some of its tariffs (unless it is all there is)."""
        points = self._point_of()
        out: list[tuple[int, list[g.DataUnit], list[int]]] = []
        skipped: list[int] = []
        visits: list[tuple[int, list[tuple[int, Reading]]]] = []  # (point, readings), in outbox order
        current: dict[int, tuple[datetime, list[tuple[int, Reading]]]] = {}  # point -> its open visit
        for item in items:
            thing = item.item
            if isinstance(thing, Reading):
                point = points.get(meter_key(thing.channel, thing.protocol, thing.meter))
                if point is None or not thing.ok or thing.period is not None or not _TARIFF.fullmatch(thing.quantity):
                    skipped.append(item.id)
                    continue
                minute = local_minute(thing.timestamp)
                visit = current.get(point)
                if visit is None or visit[0] != minute or any(r.quantity == thing.quantity for _i, r in visit[1]):
                    visit = current[point] = (minute, [])
                    visits.append((point, visit[1]))
                visit[1].append((item.id, thing))
            else:
                point = points.get(thing.source)
                record = event_record(thing, point)
                if record is None:
                    skipped.append(item.id)
                    continue
                seq = self._pfc
                self._pfc = (self._pfc + 1) % 256
                # pointers count this uplink's reported events (restarting at 0 with the uplink)
                reply = d.EventReply((seq + 1) % 256, 0, seq, (seq + 1) % 256, [record])
                out.append((g.Afn.CLASS3, [g.DataUnit([0], [1], reply.encode())], [item.id]))
        if more and len(visits) > 1:
            last = {i for i, _r in visits[-1][1]}
            visits.pop()
            # Everything from the held visit on waits: the next batch starts there (a meter's
            # readings of one visit are stored in one transaction, so their ids run together).
            cut = min(last)
            skipped = [i for i in skipped if i < cut]
            out = [frame for frame in out if all(i < cut for i in frame[2])]
        for point, group in visits:
            energy = tariff_energy({r.quantity: r for _id, r in group})
            if energy is None:
                skipped.extend(i for i, _r in group)
                continue
            out.append((g.Afn.CLASS1, [g.DataUnit([point], [129], energy.encode())], [i for i, _r in group]))
        if skipped:
            out.insert(0, (0, [], skipped))
        return out

    # -- receiving ----------------------------------------------------------------------------------

    async def _receive(self, stream: ByteStream) -> None:
        decoder = g.StreamDecoder()
        while True:
            try:
                data = await stream.receive(RECEIVE_SLICE_S)
            except LinkError as exc:
                self._lost = exc
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(exc)
                raise
            if not data:
                continue
            for found in decoder.feed(data):
                if isinstance(found, FrameError):
                    log.info("gdw1376.1 uplink: damaged frame ignored: %s", found)
                    continue
                try:
                    await self._on_frame(found)
                except LinkError:
                    raise
                except Exception:  # one request's bug must not end the session
                    log.exception("gdw1376.1 uplink: handling AFN %02X failed", found.afn)

    async def _on_frame(self, frame: g.Frame) -> None:
        if frame.direction is not g.Direction.DOWN or frame.area.upper() != self.config.area.upper():
            return
        broadcast = frame.group and frame.terminal == g.BROADCAST_TERMINAL
        if not broadcast and (frame.group or frame.terminal != self.config.terminal):
            return
        if not frame.prm:
            if frame.afn == g.Afn.CONFIRM:
                future = self._pending.get(frame.seq)
                if future is not None and not future.done():
                    future.set_result(self._verdict(frame))
            return
        if self._stale(frame):
            return
        # answered by _serve, so that the master's confirms keep coming in while a
        # request waits for a meter (a relay command takes seconds)
        self._requests.put_nowait(frame)

    def _stale(self, frame: g.Frame) -> bool:
        """Whether a request came later than its Tp allows (delay 0: not checked). Tp says
        day, hour, minute and second: the latest such time not after our clock is taken."""
        if frame.tp is None or not frame.tp.delay:
            return False
        sent, now = frame.tp.sent, self.now()
        candidates = []
        for months_back in (0, 1):
            year, month = now.year, now.month - months_back
            if month < 1:
                year, month = year - 1, 12
            try:
                candidates.append(datetime(year, month, sent.day or 0, sent.hour or 0, sent.minute or 0,
                                           sent.second or 0))
            except ValueError:
                continue
        past = [t for t in candidates if t <= now + timedelta(minutes=frame.tp.delay)]
        if not past:
            return False  # a Tp that names no time near ours: not ours to judge
        late = now - max(past)
        if late > timedelta(minutes=frame.tp.delay):
            log.info("gdw1376.1 uplink: AFN %02X request sent %s ago, later than its %d min allow: dropped",
                     frame.afn, late, frame.tp.delay)
            return True
        return False

    async def _serve(self) -> None:
        while True:
            frame = await self._requests.get()
            try:
                answer = await self._answer(frame)
                if not (frame.group and frame.terminal == g.BROADCAST_TERMINAL):
                    await self._reply(frame, answer)
            except LinkError:
                raise
            except Exception:  # one request's bug must not end the session
                log.exception("gdw1376.1 uplink: answering AFN %02X failed", frame.afn)

    @staticmethod
    def _verdict(frame: g.Frame) -> int:
        """1 when the master's AFN 00 answer confirms everything (F1, or F3 with every unit
        confirmed), else 2."""
        try:
            found = d.items(frame)
        except FrameError:
            return 2
        if [i.fn for i in found] == [1]:
            return 1
        if [i.fn for i in found] == [3] and all(r.confirmed for r in found[0].value.results):
            return 1
        return 2

    async def _answer(self, frame: g.Frame) -> _Answer:
        handlers = {
            g.Afn.CLASS1: self._class1,
            g.Afn.CLASS2: self._class2,
            g.Afn.CLASS3: self._class3,
            g.Afn.QUERY: self._query,
            g.Afn.SET: self._set,
            g.Afn.CONTROL: self._control,
        }
        handler = handlers.get(frame.afn)
        try:
            request_units = d.units(frame)
        except FrameError as exc:
            log.info("gdw1376.1 uplink: AFN %02X request not understood, denied: %s", frame.afn, exc)
            return _Answer(denied=((None, (1,)),))
        everything = tuple((u.points, u.functions) for u in request_units)
        if handler is None:
            log.info("gdw1376.1 uplink: AFN %02X is not supported here, denied", frame.afn)
            return _Answer(denied=everything)
        if g.carries_pw(frame.direction, frame.afn) and not self._pw_ok(frame):
            return _Answer(denied=everything)
        try:
            items = [item for u in request_units for item in d.decode_unit(frame.afn, frame.direction, u)]
        except FrameError as exc:
            log.info("gdw1376.1 uplink: AFN %02X request malformed, denied: %s", frame.afn, exc)
            return _Answer(denied=everything)
        return await handler(items, frame)

    def _pw_ok(self, frame: g.Frame) -> bool:
        try:
            expected = resolve_password(self.config.password, self._secrets)
        except (CredentialError, LookupError) as exc:
            log.warning("gdw1376.1 uplink: AFN %02X from master %d denied: the PW cannot be checked: %s",
                        frame.afn, frame.master, exc)
            return False
        if expected is None or not hmac.compare_digest(frame.pw or b"", expected):
            why = "no password is configured" if expected is None else "wrong PW"
            log.warning("gdw1376.1 uplink: AFN %02X from master %d denied: %s", frame.afn, frame.master, why)
            # (a full terminal would also count an ERC20, message authentication error)
            self.terminal.raise_event(Event("uplink_password_refused", source=self.terminal.name, severity="warning",
                                            data={"afn": frame.afn, "master": frame.master, "reason": why}))
            return False
        return True

    # -- answering ----------------------------------------------------------------------------------

    async def _reply(self, request: g.Frame, answer: _Answer) -> None:
        master, tp = request.master, request.tp
        if request.afn in (g.Afn.SET, g.Afn.CONTROL) or (answer.confirmed and not answer.units):
            results = [d.UnitResult(p, f, 0) for p, f in answer.confirmed]
            results += [d.UnitResult(p, f, DENIED) for p, f in answer.denied]
            if not answer.denied:
                units = [d.unit([0], [1])]
            elif not answer.confirmed:
                units = [d.unit([0], [2])]
            else:
                units = [g.DataUnit([0], [3], d.UnitResults(request.afn, results).encode())]
            await self._send(self._frame(g.Afn.CONFIRM, units, prm=False, function=g.SecondaryFunction.CONFIRM,
                                         seq=request.seq, master=master, tp=tp))
            return
        if not answer.units:
            await self._send(self._frame(g.Afn.CONFIRM, [d.unit([0], [2])], prm=False,
                                         function=g.SecondaryFunction.DENY, seq=request.seq, master=master, tp=tp))
            return
        frames = self._split(list(answer.units), tp)
        seq = request.seq
        for i, units in enumerate(frames):
            await self._send(self._frame(request.afn, units, prm=False, function=g.SecondaryFunction.USER_DATA,
                                         seq=seq, master=master, fir=i == 0,
                                         fin=i == len(frames) - 1 and not answer.denied, tp=tp))
            seq = (seq + 1) % (g.SEQ_MASK + 1)
        if answer.denied:
            results = [d.UnitResult(p, f, DENIED) for p, f in answer.denied]
            await self._send(self._frame(g.Afn.CONFIRM, [g.DataUnit([0], [3], d.UnitResults(request.afn, results).encode())],
                                         prm=False, function=g.SecondaryFunction.CONFIRM, seq=seq, master=master,
                                         fir=False, fin=True, tp=tp))

    def _split(self, units: list[g.DataUnit], tp: g.TimeTag | None) -> list[list[g.DataUnit]]:
        """The units in frames of at most ``max_frame`` bytes of user data (a unit too big
        for one goes alone)."""
        overhead = g.FIXED_LEN + (g.TP_SIZE if tp else 0)
        frames: list[list[g.DataUnit]] = [[]]
        size = overhead
        for u in units:
            need = g.UNIT_ID_LEN + len(u.data)
            if frames[-1] and size + need > self.config.max_frame:
                frames.append([])
                size = overhead
            frames[-1].append(u)
            size += need
        return frames

    def _expand(self, point: int | None) -> list[int]:
        return sorted(self.terminal.points()) if point is None else [point]

    async def _class1(self, items: Sequence[d.Item], frame: g.Frame) -> _Answer:
        units: list[g.DataUnit] = []
        denied: list[tuple[tuple[int, ...] | None, tuple[int, ...]]] = []
        latest: dict[int, dict[str, Reading]] = {}
        for item in items:
            if item.fn == 2 and item.point in (0, None):
                units.append(d.unit([0], [2], [d.Clock.at(self.now())]))
                continue
            if item.fn not in (25, 33, 129):
                log.info("gdw1376.1 uplink: AFN 0C F%d is not supported here, denied", item.fn)
                denied.append((None if item.point is None else (item.point,), (item.fn,)))
                continue
            points = self._expand(item.point)
            if not points:
                denied.append((None, (item.fn,)))
            for point in points:
                if point not in self.terminal.points():
                    denied.append(((point,), (item.fn,)))
                    continue
                if point not in latest:
                    latest[point] = _good(await self.terminal.latest(point))
                value: Any = {129: tariff_energy, 33: forward_indications, 25: instantaneous}[item.fn](latest[point])
                if value is None:
                    denied.append(((point,), (item.fn,)))
                else:
                    units.append(d.unit([point], [item.fn], [value]))
        return _Answer(tuple(units), tuple(denied))

    async def _class2(self, items: Sequence[d.Item], frame: g.Frame) -> _Answer:
        units: list[g.DataUnit] = []
        denied: list[tuple[tuple[int, ...] | None, tuple[int, ...]]] = []
        for item in items:
            tag = item.value
            if item.fn not in (161, 177) or tag is None:
                denied.append((None if item.point is None else (item.point,), (item.fn,)))
                continue
            for point in self._expand(item.point) or [None]:
                if point is None or point not in self.terminal.points():
                    denied.append((None if point is None else (point,), (item.fn,)))
                    continue
                stored = await self.terminal.frozen(point)
                value: Any = None
                if item.fn == 161 and tag.day is not None:
                    day = tag.day
                    energy = frozen_energy(stored, lambda t, day=day: t.date() == day)
                    value = None if energy is None else d.DailyEnergy(day, energy)
                elif item.fn == 177 and tag.month is not None and tag.month.month:
                    month = tag.month
                    energy = frozen_energy(stored, lambda t, m=month: (t.year, t.month) == (m.year, m.month))
                    value = None if energy is None else d.MonthlyEnergy(month, energy)
                if value is None:
                    denied.append(((point,), (item.fn,)))
                else:
                    units.append(d.unit([point], [item.fn], [value]))
        return _Answer(tuple(units), tuple(denied))

    async def _mapped_events(self) -> list[d.Event]:
        points = self._point_of()
        found = []
        for event in await self.terminal.events():
            record = event_record(event, points.get(event.source))
            if record is not None:
                found.append(record)
        return found

    async def _class3(self, items: Sequence[d.Item], frame: g.Frame) -> _Answer:
        units: list[g.DataUnit] = []
        denied: list[tuple[tuple[int, ...] | None, tuple[int, ...]]] = []
        records = await self._mapped_events()
        total = len(records)
        for item in items:
            if item.fn not in (1, 2) or item.point not in (0, None):
                denied.append((None if item.point is None else (item.point,), (item.fn,)))
                continue
            request: d.EventRequest = item.value
            chosen: list[d.Event] = []
            if item.fn == 1:  # every mapped record is an important event; F2 (normal) has none
                # record i has pointer i mod 256; the newest 256 are in the ring
                ring = {i % 256: records[i] for i in range(max(total - 256, 0), total)}
                for offset in range((request.end - request.start) % 256):
                    record = ring.get((request.start + offset) % 256)
                    if record is None:
                        break
                    chosen.append(record)
            reply = d.EventReply(total % 256, 0, request.start, (request.start + len(chosen)) % 256, chosen)
            units.append(g.DataUnit([0], [item.fn], reply.encode()))
        return _Answer(tuple(units), tuple(denied))

    async def _query(self, items: Sequence[d.Item], frame: g.Frame) -> _Answer:
        units: list[g.DataUnit] = []
        denied: list[tuple[tuple[int, ...] | None, tuple[int, ...]]] = []
        for item in items:
            if item.fn == 1:
                minutes = max(1, min(255, round(self.heartbeat_s / 60)))
                units.append(d.unit([0], [1], [d.UplinkParams(0, 0, int(min(self.confirm_timeout, 0xFFF)), 0,
                                                              (True, True, True), minutes)]))
            elif item.fn == 3:
                try:
                    main = ipaddress.IPv4Address(self.server[0])
                except ValueError:
                    main = ipaddress.IPv4Address(0)  # a host name: 1376.1 F3 carries IPv4 addresses only
                units.append(d.unit([0], [3], [d.MasterStation(main, self.server[1], ipaddress.IPv4Address(0), 0,
                                                               self.apn[:16])]))
            elif item.fn == 10:
                records = self._archive(item.value.serials if item.value is not None else ())
                units.append(d.unit([0], [10], [d.MeterArchive(records)]))
            else:
                denied.append(((0,), (item.fn,)))
        return _Answer(tuple(units), tuple(denied))

    def _archive(self, serials: Sequence[int]) -> list[d.MeterRecord]:
        records = []
        for point, meter in sorted(self.terminal.points().items()):
            if serials and point not in serials:
                continue  # the serial of a record is its measuring point here
            code = _F10_CODES.get(meter.protocol, 0)
            address = meter.address.rjust(12, "0")[-12:]
            try:
                records.append(d.MeterRecord(point, point, 1, None, code, address))
            except ValueError:
                log.debug("meter %s cannot be described in an F10 record", meter.key)
        return records

    async def _set(self, items: Sequence[d.Item], frame: g.Frame) -> _Answer:
        confirmed: list[tuple[tuple[int, ...] | None, tuple[int, ...]]] = []
        denied: list[tuple[tuple[int, ...] | None, tuple[int, ...]]] = []
        for item in items:
            where = (None if item.point is None else (item.point,), (item.fn,))
            if item.fn == 1:
                params: d.UplinkParams = item.value
                ok = await self._local(frame, "set_heartbeat", {"heartbeat_s": params.heartbeat * 60},
                                       self._carry_setting)
            elif item.fn == 3:
                station: d.MasterStation = item.value
                args = {"server": f"{station.main}:{station.main_port}", "apn": station.apn or self.apn}
                ok = await self._local(frame, "set_master_station", args, self._carry_setting)
            elif item.fn == 10:
                records = [{"point": r.point, "protocol": int(r.protocol), "address": r.address}
                           for r in item.value.records if r.point != 0]
                ok = await self._local(frame, "set_meter_archive", {"records": records}, self._carry_archive)
            else:
                log.info("gdw1376.1 uplink: AFN 04 F%d is not supported here, denied", item.fn)
                ok = False
            (confirmed if ok else denied).append(where)
        return _Answer((), tuple(denied), tuple(confirmed))

    async def _local(self, frame: g.Frame, name: str, args: Mapping[str, Any],
                     carry: Callable[[Command], Awaitable[Mapping[str, Any]]]) -> bool:
        """Carry out a master's setting or control of the terminal itself through the
        command path (policy hooks, the audit trail); whether it was done."""
        command = Command(meter="", protocol="", name=name, args=args, issuer=f"gdw1376.1 master {frame.master}")
        try:
            await self.terminal.command(command, carry)
        except CommandRefused as exc:
            log.warning("gdw1376.1 uplink: %s refused: %s", name, exc)
            return False
        except (MeterhubError, LookupError, ValueError) as exc:
            log.warning("gdw1376.1 uplink: %s failed: %s: %s", name, type(exc).__name__, exc)
            return False
        return True

    # -- what the master may set, kept across restarts ----------------------------------------------

    def _given(self) -> dict[str, Any]:
        """The settings as the site file gives them, by the names they are kept under."""
        return {"heartbeat_s": self.config.heartbeat_s,
                "server": f"{self.config.host}:{self.config.port}",
                "apn": str(self.config.modem.get("apn", "")),
                "active_report": self.config.active_report,
                "clock_offset_s": 0.0}

    def _apply(self, key: str, value: Any) -> None:
        """Put one setting in force (ValueError for a value it cannot take)."""
        if key == "heartbeat_s":
            seconds = float(value)
            if not seconds >= 60:
                raise ValueError(f"a heartbeat period of {value!r} s (1376.1 sets whole minutes, at least 1)")
            self.heartbeat_s = seconds
            self._heartbeat_changed.set()
        elif key == "server":
            self.server = _server(value)
        elif key == "apn":
            self.apn = str(value)
        elif key == "active_report":
            self.reporting = bool(value)
            self._reporting_changed.set()
        elif key == "clock_offset_s":
            self.clock_offset = timedelta(seconds=float(value))
        else:
            raise ValueError(f"unknown setting {key!r}")

    async def _keep(self, values: Mapping[str, Any]) -> None:
        """Put ``values`` in force and keep them, with the site file's values they replace:
        a restart keeps them unless the site file has changed those since."""
        given = self._given()
        for key, value in values.items():
            self._apply(key, value)
        await self.terminal.keep_settings({key: {"value": value, "given": given[key]} for key, value in values.items()})

    async def restore(self) -> None:
        """Put back what a master set before a restart (kept in the store), except where
        the site file was changed since: then the file's newer word wins."""
        given = self._given()
        stale: dict[str, None] = {}
        for key, entry in (await self.terminal.settings()).items():
            try:
                if not isinstance(entry, Mapping) or entry.get("given") != given.get(key, ...):
                    log.info("gdw1376.1 uplink: %s: the site file changed since a master set it; the file's %r stays",
                             key, given.get(key))
                    stale[key] = None
                    continue
                self._apply(key, entry["value"])
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("gdw1376.1 uplink: kept setting %s cannot be used (%s); dropped", key, exc)
                stale[key] = None
            else:
                log.info("gdw1376.1 uplink: %s = %r, as a master set it (kept in the store)", key, entry["value"])
        if stale:
            await self.terminal.keep_settings(stale)

    async def _carry_setting(self, command: Command) -> Mapping[str, Any]:
        args = command.args
        if command.name == "set_heartbeat":
            values: dict[str, Any] = {"heartbeat_s": float(args["heartbeat_s"])}
        elif command.name == "set_master_station":
            _server(args["server"])  # checked before anything is changed
            values = {"server": args["server"], "apn": args["apn"]}
        elif command.name == "set_clock":
            target = datetime.fromisoformat(args["time"])
            values = {"clock_offset_s": (target - self._now().replace(microsecond=0)).total_seconds()}
        elif command.name == "set_active_reporting":
            values = {"active_report": bool(args["allowed"])}
        else:
            raise ValueError(f"no such setting command {command.name!r}")
        await self._keep(values)
        if command.name == "set_master_station":
            log.info("gdw1376.1 uplink: master station set to %s (used from the next connection)", args["server"])
        elif command.name == "set_clock":
            log.info("gdw1376.1 uplink: clock set by a master (offset %s; the OS clock is not changed)",
                     self.clock_offset)
        return values

    async def _carry_archive(self, command: Command) -> Mapping[str, Any]:
        points = self.terminal.points()
        first = points[min(points)].channel if points else None
        changed = []
        for record in command.args["records"]:
            point = int(record["point"])
            if record["protocol"] == d.MeterProtocol.NONE:
                await self.terminal.set_meter(point, None)
                changed.append(point)
                continue
            protocol = F10_PROTOCOLS.get(record["protocol"])
            if protocol is None:
                raise ValueError(f"F10 protocol {record['protocol']} has no meterhub driver here")
            old = points.get(point)
            channel = old.channel if old is not None else first
            if channel is None:
                raise ValueError("no channel to put the meter on (the site has no meter with a measuring point)")
            quantities = old.quantities if old is not None else ()
            await self.terminal.set_meter(point, Meter(record["address"], protocol, channel, quantities, point=point))
            changed.append(point)
        return {"points": changed}

    async def _control(self, items: Sequence[d.Item], frame: g.Frame) -> _Answer:
        confirmed: list[tuple[tuple[int, ...] | None, tuple[int, ...]]] = []
        denied: list[tuple[tuple[int, ...] | None, tuple[int, ...]]] = []
        for item in items:
            where = (None if item.point is None else (item.point,), (item.fn,))
            if item.fn == 31:
                target: datetime = item.value.clock.time
                ok = await self._local(frame, "set_clock", {"time": target.isoformat()}, self._carry_setting)
            elif item.fn in (29, 37):
                ok = await self._local(frame, "set_active_reporting", {"allowed": item.fn == 29},
                                       self._carry_setting)
            elif item.fn in (1, 2) and item.point:
                # F2 is "permit close" (允许合闸): DL/T 645's close_permitted (1Bh), which lets
                # the customer close the relay, not a direct close (1Ch)
                ok = await self._relay(item.point, "trip" if item.fn == 1 else "close_permitted", frame)
            else:
                log.info("gdw1376.1 uplink: AFN 05 F%d is not supported here, denied", item.fn)
                ok = False
            (confirmed if ok else denied).append(where)
        return _Answer((), tuple(denied), tuple(confirmed))

    async def _relay(self, point: int, action: str, frame: g.Frame) -> bool:
        meter = self.terminal.points().get(point)
        if meter is None:
            log.info("gdw1376.1 uplink: relay %s for point %d denied: no meter there", action, point)
            return False
        command = Command(meter=meter.address, protocol=meter.protocol, name="relay", args={"action": action},
                          issuer=f"gdw1376.1 master {frame.master}", channel=meter.channel)
        try:
            await self.terminal.execute(point, command)
        except CommandRefused as exc:
            log.warning("gdw1376.1 uplink: relay %s for point %d refused: %s", action, point, exc)
            return False
        except (MeterhubError, LookupError, ValueError) as exc:  # the meter's or the driver's failure
            log.warning("gdw1376.1 uplink: relay %s for point %d failed: %s: %s", action, point, type(exc).__name__, exc)
            return False
        return True


class Gdw1376UplinkDriver:
    """Makes ``gdw1376.1`` uplinks (:class:`meterhub.api.UplinkDriver`)."""

    name = "gdw1376.1"
    description = "Q/GDW 1376.1 terminal side towards a master station, over TCP or a GPRS/LTE modem"

    def validate(self, config: UplinkConfig) -> list[tuple[str, str]]:
        return _problems(config.options)

    def create(self, config: UplinkConfig, terminal: Terminal) -> Gdw1376Uplink:
        return Gdw1376Uplink(settings(config.options), terminal)


__all__ = ["Gdw1376Uplink", "Gdw1376UplinkDriver", "Settings", "resolve_password", "settings"]
