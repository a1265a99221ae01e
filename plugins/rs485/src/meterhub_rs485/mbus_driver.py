"""The wired M-Bus meter driver: the :mod:`meterhub_rs485.mbus` codec over a :class:`~meterhub.api.Conduit`.

One REQ_UD2 answers every quantity of a meter, so :meth:`MbusDriver.read_many` reads a
meter in one transaction a round (plus follow-up telegrams, FCB toggled, while the meter
ends its records with DIF 1Fh). Records map onto OBIS codes by the meter's medium; only
instantaneous, storage 0, tariff 0, subunit 0 records (or tariff 1..4 for electricity
energy) count as the plain quantities.

Addresses (what a site file writes as ``address:``):

* primary: ``"0"`` .. ``"250"`` as decimal text (0 is the factory default);
* secondary: 16 hex digits, ID (8, as printed) + manufacturer (4, the two header bytes
  in wire order) + version (2) + medium (2), libmbus's order, e.g. ``1234567824400107``;
  F nibbles in the ID and FFFF/FF in the other fields are wildcards, so
  ``12345678FFFFFFFF`` reads the meter whose ID is 12345678 whatever its manufacturer.

Meter ``options:`` (all optional): ``medium`` (``water``, ``hot_water``, ``gas``, ``heat``,
``electricity`` or a code such as ``0x07``) overrides the medium in the meter's header for
the OBIS mapping; ``reset`` (``first`` = SND_NKE before the first read and after a failure,
``always``, ``never``); ``max_telegrams`` (follow-up telegrams allowed, default 16);
``profile`` (a device profile, see :meth:`MbusDriver.add_profile`).

A device profile maps further OBIS codes onto records the built-in table does not cover,
e.g. the per-phase values a meter marks with manufacturer VIFEs::

    medium: electricity                 # optional: the medium for meters using the profile
    quantities:
      "1-0:32.7.0": {vib: "FD C9 FF 01"}               # the record whose VIB is exactly this
      "1-0:1.7.0":  {quantity: power, unit: kW}        # or by fields (W -> kW converted exactly)
      "1-0:2.8.0":  {quantity: energy, subunit: 1, unit: kWh}

Record fields a selector may name: ``vib``/``dib`` (hex), ``quantity``, ``storage``,
``tariff``, ``subunit`` (default 0) and ``function`` (default ``instantaneous``); ``unit``
is the unit to report (one the record's unit converts to exactly, or the record's own).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

import attrs
from meterhub.api import read_one
from meterhub.errors import (
    FrameError,
    LinkError,
    MeterError,
    MeterTimeout,
    NotSupported,
    UnknownQuantity,
)
from meterhub.model import Command, Measurement, Meter, SerialSettings
from meterhub.quantities import resolve
from meterhub.timing import answer_deadline, at_least, response_timeout

from . import mbus
from .mbus import Ack, Function, LongFrame, LongHeader, Record, StreamDecoder, Telegram

if TYPE_CHECKING:
    from meterhub.api import Conduit
    from meterhub.quantities import Quantity

log = logging.getLogger(__name__)

#: EN 13757-2 answer window (protocols README §6.4, [U]): a slave starts its answer
#: within 330 bit times + 50 ms after the end of the request.
RESPONSE_BITS = 330
RESPONSE_EXTRA_S = 0.050
#: ... and no sooner than 11 bit times: the least a scan request must wait.
MIN_RESPONSE_BITS = 11
#: The longest request: a selection, 17 bytes.
_LONGEST_REQUEST = 4 + 3 + mbus.SELECT_LEN + 2
DEFAULT_MAX_TELEGRAMS = 16

#: Header media (EN 13757-3 Table 3) grouped into the kinds the OBIS mapping knows.
MEDIUM_KINDS: Mapping[str, frozenset[int]] = {
    "water": frozenset({0x07, 0x16}),  # water, cold water
    "hot_water": frozenset({0x06, 0x15}),  # warm water (30-90 °C), hot water (>= 90 °C)
    "gas": frozenset({0x03}),
    "heat": frozenset({0x04, 0x0C, 0x0D}),  # heat outlet, heat inlet, heat/cooling
    "electricity": frozenset({0x02}),
}
RESETS = ("first", "always", "never")
OPTIONS = ("medium", "reset", "max_telegrams", "profile")
SCAN_MODES = ("primary", "secondary")

CLOCK_OBIS = "0-0:1.0.0"
SERIAL_OBIS = "0-0:96.1.0"


@attrs.frozen
class _Conversion:
    """A record unit turned into the unit a measurement carries: value × factor × 10^exponent."""

    unit: str
    exponent: int = 0
    factor: int = 1


_ENERGY = {"Wh": _Conversion("kWh", -3), "J": _Conversion("GJ", -9)}  # exact; J never becomes kWh (÷ 3.6e6)
_POWER = {"W": _Conversion("kW", -3), "J/h": _Conversion("GJ/h", -9)}
_VOLUME = {"m3": _Conversion("m3")}
_FLOW = {"m3/h": _Conversion("m3/h"), "m3/min": _Conversion("m3/h", factor=60), "m3/s": _Conversion("m3/h", factor=3600)}
_CELSIUS = {"°C": _Conversion("°C")}
_KELVIN = {"K": _Conversion("K")}

#: (record unit, reported unit) -> conversion, for profiles; the same unit is always fine.
_CONVERSIONS: Mapping[tuple[str, str], _Conversion] = {
    (src, conv.unit): conv for table in (_ENERGY, _POWER, _FLOW) for src, conv in table.items()
} | {("V", "kV"): _Conversion("kV", -3), ("A", "mA"): _Conversion("mA", 3), ("kg", "t"): _Conversion("t", -3)}
_FUNCTION_NAMES = {f.name.lower(): f for f in Function} | {"max": Function.MAXIMUM, "min": Function.MINIMUM, "error": Function.ERROR_STATE}
_SELECTOR_KEYS = ("vib", "dib", "quantity", "storage", "tariff", "subunit", "function", "unit")


@attrs.frozen
class RecordSelector:
    """Which record a profile's OBIS code is read from, and the unit to report it in."""

    vib: bytes | None = None
    dib: bytes | None = None
    quantity: str | None = None
    storage: int = 0
    tariff: int = 0
    subunit: int = 0
    function: Function = Function.INSTANTANEOUS
    unit: str | None = None

    def matches(self, record: Record) -> bool:
        return (
            (self.vib is None or record.vib == self.vib)
            and (self.dib is None or record.dib == self.dib)
            and (self.quantity is None or record.quantity == self.quantity)
            and (record.storage, record.tariff, record.subunit) == (self.storage, self.tariff, self.subunit)
            and record.function is self.function
        )

    def conversion(self, unit: str) -> _Conversion | None:
        if self.unit is None or self.unit == unit:
            return _Conversion(unit)
        return _CONVERSIONS.get((unit, self.unit))


@attrs.frozen
class Profile:
    """A device profile: a default medium and extra OBIS codes by record selector."""

    name: str
    quantities: Mapping[str, RecordSelector]
    media: frozenset[int] | None = None
    source: str = ""


@attrs.frozen
class _Mapping:
    """Which record an OBIS code is: its quantity, the medium it applies to, the tariff."""

    obis: str
    quantity: str
    medium: str
    units: Mapping[str, _Conversion]
    tariff: int = 0


MAPPINGS: tuple[_Mapping, ...] = (
    _Mapping("8-0:1.0.0", "volume", "water", _VOLUME),
    _Mapping("9-0:1.0.0", "volume", "hot_water", _VOLUME),
    _Mapping("7-0:3.0.0", "volume", "gas", _VOLUME),
    _Mapping("6-0:1.0.0", "energy", "heat", _ENERGY),
    _Mapping("6-0:2.0.0", "volume", "heat", _VOLUME),
    _Mapping("6-0:8.0.0", "power", "heat", _POWER),
    _Mapping("6-0:9.0.0", "volume_flow", "heat", _FLOW),
    _Mapping("6-0:10.0.0", "flow_temperature", "heat", _CELSIUS),
    _Mapping("6-0:11.0.0", "return_temperature", "heat", _CELSIUS),
    _Mapping("6-0:12.0.0", "temperature_difference", "heat", _KELVIN),
    _Mapping("1-0:1.8.0", "energy", "electricity", _ENERGY),
    *(_Mapping(f"1-0:1.8.{t}", "energy", "electricity", _ENERGY, tariff=t) for t in range(1, 5)),
)
_BY_OBIS: Mapping[str, _Mapping] = {m.obis: m for m in MAPPINGS}


class ScanMode(str, enum.Enum):
    PRIMARY = "primary"
    SECONDARY = "secondary"


class _Probe(enum.Enum):
    NOTHING = "nothing"
    SINGLE = "single"
    COLLISION = "collision"


class _LinkState:
    """What the driver remembers about one meter's link layer between reads."""

    __slots__ = ("fcb", "reset")

    def __init__(self) -> None:
        self.fcb = True  # libmbus: the first REQ_UD2 after SND_NKE carries FCB = 1
        self.reset = True  # SND_NKE still to be sent


def _medium_option(value: object) -> frozenset[int]:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFF:
        return frozenset({value})
    text = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if text in MEDIUM_KINDS:
        return MEDIUM_KINDS[text]
    try:
        code = int(text, 0)
    except ValueError:
        code = -1
    if 0 <= code <= 0xFF:
        return frozenset({code})
    raise ValueError(f"unknown medium {value!r} (known: {', '.join(MEDIUM_KINDS)}, or a medium code 0-255)")


@attrs.frozen
class _Options:
    media: frozenset[int] | None = None
    reset: str = "first"
    max_telegrams: int = DEFAULT_MAX_TELEGRAMS
    profile: Profile | None = None


def _options(meter: Meter, profiles: Mapping[str, Profile]) -> tuple[_Options, list[tuple[str, str]]]:
    """The meter's options and the problems with them (unknown keys, bad values)."""
    problems: list[tuple[str, str]] = []
    opts = dict(meter.options)
    for key in opts:
        if key not in OPTIONS:
            problems.append((f"options.{key}", f"unknown mbus option {key!r} (known: {', '.join(OPTIONS)})"))
    media = None
    if opts.get("medium") is not None:
        try:
            media = _medium_option(opts["medium"])
        except ValueError as exc:
            problems.append(("options.medium", str(exc)))
    reset = str(opts.get("reset", "first")).strip().lower()
    if reset not in RESETS:
        problems.append(("options.reset", f"reset must be one of {', '.join(RESETS)}, got {opts['reset']!r}"))
        reset = "first"
    max_telegrams = DEFAULT_MAX_TELEGRAMS
    if "max_telegrams" in opts:
        raw = opts["max_telegrams"]
        if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 255:
            max_telegrams = raw
        else:
            problems.append(("options.max_telegrams", f"max_telegrams must be a whole number 1-255, got {raw!r}"))
    profile = None
    if opts.get("profile") is not None:
        name = str(opts["profile"]).strip().lower()
        profile = profiles.get(name)
        if profile is None:
            known = ", ".join(sorted(profiles)) or "none registered"
            problems.append(("options.profile", f"unknown mbus profile {opts['profile']!r} (known: {known})"))
    if media is None and profile is not None:
        media = profile.media
    return _Options(media, reset, max_telegrams, profile), problems


def is_secondary(address: str) -> bool:
    return len(address) == mbus.SECONDARY_LEN


class MbusDriver:
    """Wired M-Bus meters (``protocol: mbus``), 2400 8E1 by default.

    ``scan_mode`` picks what :meth:`scan` does when not told: ``primary`` sweeps the
    addresses 0-250, ``secondary`` runs the wildcard search over the identification.
    """

    NAME = "mbus"
    DESCRIPTION = "wired M-Bus meters (EN 13757-2/-3): water, heat, gas, electricity"
    #: EN 13757-2: 300, 2400 or 9600 Bd, 8 data bits, even parity, 1 stop bit; 2400 is usual.
    DEFAULT_SETTINGS = SerialSettings(2400, 8, "E", 1)

    def __init__(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        default_settings: SerialSettings | None = None,
        scan_mode: str = "primary",
    ) -> None:
        self.name = name or self.NAME
        self.description = description or self.DESCRIPTION
        self.default_settings = default_settings or self.DEFAULT_SETTINGS
        if scan_mode not in SCAN_MODES:
            raise ValueError(f"M-Bus scan mode must be one of {', '.join(SCAN_MODES)}, got {scan_mode!r}")
        self.scan_mode = ScanMode(scan_mode)
        self.profiles: dict[str, Profile] = {}  #: device profiles by name (see add_profile)
        self._links: dict[tuple[str, str], _LinkState] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # -- the MeterDriver contract -----------------------------------------------------

    def normalize_address(self, address: str) -> str:
        """``"0"``..``"250"`` (primary, leading zeros dropped) or 16 upper-case hex digits."""
        text = str(address).strip()
        if not text:
            raise ValueError("empty M-Bus address; give a primary address 0-250 or a 16-digit secondary address")
        if text.isdigit() and len(text) <= 3:
            value = int(text)
            if value <= mbus.PRIMARY_MAX:
                return str(value)
            special = {mbus.ADDRESS_NETWORK: "253 is the network-layer address used after a selection",
                       mbus.BROADCAST_REPLY: "254 is the broadcast address every slave answers",
                       mbus.BROADCAST: "255 is the broadcast address no slave answers"}
            reason = special.get(value, f"{value} is reserved")
            raise ValueError(f"M-Bus primary addresses are 0-250; {reason}; give the meter's secondary address instead")
        try:
            return mbus.normalize_secondary(text)
        except ValueError:
            raise ValueError(
                f"M-Bus address {address!r} is neither a primary address 0-250 nor a secondary address of 16 hex digits"
                " (ID 8 + manufacturer 4 + version 2 + medium 2)"
            ) from None

    def supported_quantities(self) -> Collection[str]:
        """The built-in OBIS codes and those the registered profiles add."""
        extra = {obis for p in self.profiles.values() for obis in p.quantities}
        return sorted({m.obis for m in MAPPINGS} | {CLOCK_OBIS, SERIAL_OBIS} | extra)

    def transaction_timeout(self, settings: SerialSettings) -> float:
        """By when an answer must have begun: longest request on the wire + the slave's
        answer window + its first byte (E5h, 10h or 68h); a long frame under way is heard
        to its end."""
        return answer_deadline(
            settings,
            request_len=_LONGEST_REQUEST,
            max_response_delay=RESPONSE_BITS / settings.baudrate + RESPONSE_EXTRA_S,
            header_len=1,
        )

    async def read(self, bus: Conduit, meter: Meter, quantity: Quantity | str, timeout: float) -> Measurement:
        """Read one quantity (one REQ_UD2 exchange); raises what :meth:`read_many` returns."""
        return await read_one(self, bus, meter, quantity, timeout)

    async def read_many(
        self, bus: Conduit, meter: Meter, quantities: Sequence[Quantity | str], timeout: float
    ) -> list[Measurement | Exception]:
        """Every quantity from one readout of the meter; one outcome per quantity, in order.

        Silence, a bad frame or an application error fails every quantity alike; a
        quantity the answer has no record for is NotSupported; a record flagged with a
        record error is MeterError. Only a LinkError is raised.
        """
        obis = [getattr(q, "obis", str(q)) for q in quantities]
        unknown = [o for o in obis if o not in self.supported_quantities()]
        if len(unknown) == len(obis):
            return [NotSupported(f"{self.name} cannot read {o}") for o in obis]
        try:
            telegrams = await self.read_telegrams(bus, meter, timeout)
        except LinkError:
            raise
        except (MeterTimeout, FrameError, MeterError) as exc:
            return [exc if o not in unknown else NotSupported(f"{self.name} cannot read {o}") for o in obis]
        opts, _ = _options(meter, self.profiles)
        return [self._measure(o, telegrams, opts) for o in obis]

    async def read_telegrams(self, bus: Conduit, meter: Meter, timeout: float) -> list[Telegram]:
        """The whole readout of a meter: every telegram until one without DIF 1Fh.

        Each transaction gets ``timeout``. Records with unknown VIFs are kept (``known`` is
        False on them), so a caller can see everything a meter sends.
        """
        address = self.normalize_address(meter.address)
        opts, _ = _options(meter, self.profiles)
        state = self._links.setdefault((bus.name, address), _LinkState())
        settings = meter.settings
        try:
            if is_secondary(address):
                target = mbus.ADDRESS_NETWORK
                if state.reset and opts.reset != "never" or opts.reset == "always":
                    await self._deselect(bus, timeout, settings)
                await self._expect_ack(bus, mbus.select_request(address), timeout, settings)
                state.fcb = True  # a new selection starts the slave's frame count afresh
            else:
                target = int(address)
                if state.reset and opts.reset != "never" or opts.reset == "always":
                    await self._expect_ack(bus, mbus.snd_nke(target), timeout, settings)
                    state.fcb = True
            state.reset = False
            telegrams: list[Telegram] = []
            for _ in range(opts.max_telegrams):
                frame = await self._transact(bus, mbus.req_ud2(target, fcb=state.fcb), self._response_check(address), timeout, settings)
                state.fcb = not state.fcb  # §5.4: the next new request carries the other FCB
                telegrams.append(self._telegram(frame, address))
                if not telegrams[-1].more_follows:
                    return telegrams
            raise FrameError(f"meter {address} announced more than {opts.max_telegrams} telegrams (DIF 1F in every one)")
        except (MeterTimeout, FrameError, MeterError):
            state.reset = True  # resynchronise the frame count with SND_NKE next time
            raise

    async def scan(self, bus: Conduit, timeout: float, *, mode: str | None = None) -> list[str]:
        """The addresses answering on the bus: a primary sweep (SND_NKE to 0..250, any
        answer counts) or the secondary wildcard search; ``timeout`` is per request."""
        try:
            chosen = ScanMode(mode) if mode is not None else self.scan_mode
        except ValueError:
            raise ValueError(f"M-Bus scan mode must be one of {', '.join(SCAN_MODES)}, got {mode!r}") from None
        if chosen is ScanMode.PRIMARY:
            return await self._scan_primary(bus, timeout)
        return await self._scan_secondary(bus, timeout)

    async def execute(self, bus: Conduit, meter: Meter, command: Command, timeout: float) -> Mapping[str, Any]:
        """``records``: every record of one readout as plain data (unknown VIFs included)."""
        if command.name != "records":
            raise NotSupported(f"{self.name} has no command {command.name!r}; it knows records")
        telegrams = await self.read_telegrams(bus, meter, timeout)
        header = next((t.header for t in telegrams if isinstance(t.header, LongHeader)), None)
        return {
            "command": "records",
            "meter": meter.address,
            "secondary_address": header.secondary_address if header else None,
            "medium": header.medium_name if header else None,
            "records": [record_dict(r) for t in telegrams for r in t.records],
        }

    # -- optional capabilities --------------------------------------------------------

    def validate_meter(self, meter: Meter) -> list[tuple[str, str]]:
        """Problems with a configured meter: its address, its options, its quantities."""
        problems: list[tuple[str, str]] = []
        try:
            self.normalize_address(meter.address)
        except ValueError as exc:
            problems.append(("address", str(exc)))
        opts, option_problems = _options(meter, self.profiles)
        problems += option_problems
        supported = {m.obis for m in MAPPINGS} | {CLOCK_OBIS, SERIAL_OBIS} | set(opts.profile.quantities if opts.profile else ())
        for obis in meter.quantities:
            if obis not in supported:
                if obis in self.supported_quantities() and opts.profile is None:
                    problems.append(("quantities", f"{obis} is read only through a device profile; set options.profile"))
                    continue
                problems.append(("quantities", f"{self.name} cannot read {obis} (it reads {', '.join(sorted(supported))})"))
                continue
            mapping = _BY_OBIS.get(obis)
            if mapping is not None and opts.media is not None and not opts.media & MEDIUM_KINDS[mapping.medium]:
                problems.append(("quantities", f"{obis} is a {mapping.medium.replace('_', ' ')} quantity but options.medium says otherwise"))
        return problems

    def add_profile(self, name: str, profile: Mapping[str, Any], source: str = "") -> None:
        """Accept a device profile (see the module docstring for its form); ValueError
        says what is wrong with it."""
        key = str(name).strip().lower()
        where = f" ({source})" if source else ""
        if not key:
            raise ValueError(f"an mbus profile needs a name{where}")
        if not isinstance(profile, Mapping):
            raise ValueError(f"mbus profile {key!r}{where} must be a mapping with 'quantities', got {type(profile).__name__}")  # noqa: TRY004 - the profile contract says ValueError
        unknown = sorted(set(profile) - {"medium", "quantities", "description"})
        if unknown:
            raise ValueError(f"mbus profile {key!r}{where}: unknown key(s) {', '.join(unknown)} (known: medium, quantities, description)")
        media = None
        if profile.get("medium") is not None:
            try:
                media = _medium_option(profile["medium"])
            except ValueError as exc:
                raise ValueError(f"mbus profile {key!r}{where}: medium: {exc}") from None
        entries = profile.get("quantities")
        if not isinstance(entries, Mapping) or not entries:
            raise ValueError(f"mbus profile {key!r}{where} needs 'quantities': a mapping of OBIS codes to record selectors")
        selectors: dict[str, RecordSelector] = {}
        for quantity, spec in entries.items():
            try:
                obis = resolve(str(quantity)).obis
            except UnknownQuantity as exc:
                raise ValueError(f"mbus profile {key!r}{where}: quantities: {exc}") from None
            try:
                selectors[obis] = _selector(spec)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"mbus profile {key!r}{where}: quantities.{quantity}: {exc}") from None
        self.profiles[key] = Profile(key, selectors, media, source)

    # -- reading ------------------------------------------------------------------------

    def _response_check(self, address: str) -> Callable[[object], bool]:
        if is_secondary(address):

            def accept(frame: object) -> bool:
                if not (isinstance(frame, LongFrame) and frame.is_response):
                    return False
                if frame.ci == mbus.CI_RSP_LONG and len(frame.data) >= mbus.SELECT_LEN:
                    return mbus.secondary_matches(address, mbus.secondary_from_wire(frame.data))
                return True  # no identification in a short header: nothing to check

            return accept
        wanted = int(address)
        return lambda frame: isinstance(frame, LongFrame) and frame.is_response and frame.address == wanted

    def _telegram(self, frame: LongFrame, address: str) -> Telegram:
        if frame.ci == mbus.CI_APPLICATION_ERROR:
            code = frame.data[0] if frame.data else None
            reason = mbus.APPLICATION_ERRORS.get(code, "reserved") if code is not None else "no error code"
            raise MeterError(f"meter {address} reports an application error: {reason}", code=code, reason=reason)
        try:
            return mbus.parse_user_data(frame)
        except FrameError as exc:
            raise type(exc)(f"meter {address}: {exc}") from exc

    async def _transact(
        self, bus: Conduit, request: mbus.Frame, accept: Callable[[object], bool], timeout: float, settings: SerialSettings | None,
        *, guard: bool = True,
    ) -> Any:
        exchange = await bus.transact(mbus.encode(request), StreamDecoder(), timeout=timeout, accept=accept, settings=settings,
                                      guard=guard)
        return exchange.frame

    async def _expect_ack(
        self, bus: Conduit, request: mbus.Frame, timeout: float, settings: SerialSettings | None, *, guard: bool = True
    ) -> None:
        await self._transact(bus, request, lambda frame: isinstance(frame, Ack), timeout, settings, guard=guard)

    async def _deselect(self, bus: Conduit, timeout: float, settings: SerialSettings | None) -> None:
        """SND_NKE to 253: whichever slaves are selected answer E5 (or collide) and let go.

        Silence is a normal answer here (nobody was selected), so the request is not left
        pending: an E5 names nobody, and the next selection's E5 would be taken for it."""
        try:
            await self._expect_ack(bus, mbus.snd_nke(mbus.ADDRESS_NETWORK), timeout, settings, guard=False)
        except (MeterTimeout, FrameError):
            pass  # nobody was selected, or several were: either way nobody is now

    def _measure(self, obis: str, telegrams: Sequence[Telegram], opts: _Options) -> Measurement | Exception:
        records = mbus.records_of(telegrams)
        header = next((t.header for t in telegrams if isinstance(t.header, LongHeader)), None)
        if obis == SERIAL_OBIS:
            return self._serial(records, header)
        if opts.profile is not None and obis in opts.profile.quantities:
            return self._by_selector(obis, opts.profile.quantities[obis], records)
        if obis == CLOCK_OBIS:
            return self._clock(records)
        mapping = _BY_OBIS.get(obis)
        if mapping is None:
            return NotSupported(f"{self.name} cannot read {obis}")
        media = opts.media if opts.media is not None else (frozenset({header.medium}) if header is not None else None)
        if media is None:
            return NotSupported(f"{obis}: the meter's answer has no header naming its medium; set options.medium")
        if not media & MEDIUM_KINDS[mapping.medium]:
            medium = header.medium_name if header is not None and opts.media is None else "the configured medium"
            return NotSupported(f"{obis} is a {mapping.medium.replace('_', ' ')} quantity and this meter is {medium}")
        for record in records:
            if not _candidate(record, mapping.quantity, mapping.tariff):
                continue
            if record.error:
                return MeterError(f"{obis}: the meter flags the record: {record.error_text}", code=record.error, reason=record.error_text)
            conversion = mapping.units.get(record.unit)
            if conversion is None:
                continue  # e.g. °F: not the unit this OBIS code is read in
            if not isinstance(record.value, Decimal):
                return FrameError(f"{obis}: the record has no value ({record.note or 'no data'})")
            return Measurement(_convert(record.value, conversion), conversion.unit)
        tariff = f" tariff {mapping.tariff}" if mapping.tariff else ""
        return NotSupported(f"{obis}: the meter sends no instantaneous storage-0{tariff} {mapping.quantity.replace('_', ' ')} record")

    def _by_selector(self, obis: str, selector: RecordSelector, records: Sequence[Record]) -> Measurement | Exception:
        for record in records:
            if not selector.matches(record):
                continue
            if record.error:
                return MeterError(f"{obis}: the meter flags the record: {record.error_text}", code=record.error, reason=record.error_text)
            if isinstance(record.value, Decimal):
                conversion = selector.conversion(record.unit)
                if conversion is None:
                    return NotSupported(f"{obis}: the record is in {record.unit or 'no unit'}, which does not convert to {selector.unit} exactly")
                return Measurement(_convert(record.value, conversion), conversion.unit)
            if isinstance(record.value, str):
                return Measurement(record.value, "")
            if hasattr(record.value, "isoformat"):
                return Measurement(record.value.isoformat(), "")  # type: ignore[union-attr]
            return FrameError(f"{obis}: the record has no value ({record.note or 'no data'})")
        return NotSupported(f"{obis}: the meter sends no record the profile names ({_describe(selector)})")

    def _serial(self, records: Sequence[Record], header: LongHeader | None) -> Measurement | Exception:
        record = next((r for r in records if _candidate(r, "fabrication_number", 0)), None)
        if record is not None and isinstance(record.value, Decimal):
            if record.coding.is_bcd:
                return Measurement(f"{int(record.value):0{2 * (record.coding.size or 0)}d}", "")
            return Measurement(str(int(record.value)), "")
        if record is not None and isinstance(record.value, str):
            return Measurement(record.value, "")
        if header is not None:
            return Measurement(header.id, "")
        return NotSupported(f"{SERIAL_OBIS}: the meter sends neither a fabrication number nor a long header")

    def _clock(self, records: Sequence[Record]) -> Measurement | Exception:
        for record in records:
            if _candidate(record, "datetime", 0):
                if isinstance(record.value, datetime):
                    return Measurement(record.value.isoformat(timespec="seconds"), "")
                return FrameError(f"{CLOCK_OBIS}: the date/time record has no valid value ({record.note})")
        return NotSupported(f"{CLOCK_OBIS}: the meter sends no instantaneous date/time record (VIF 6D)")

    # -- scanning -----------------------------------------------------------------------

    def scan_minimum(self, settings: SerialSettings) -> float:
        """The shortest wait per sweep request in which its E5 can arrive: the request and
        the one-byte answer on the wire after the slave's least response delay."""
        return response_timeout(settings, request_len=_LONGEST_REQUEST, max_reply_len=1,
                                max_response_delay=MIN_RESPONSE_BITS / settings.baudrate)

    async def _scan_primary(self, bus: Conduit, timeout: float) -> list[str]:
        """SND_NKE to every primary address; an E5 names no address, so each address that
        acknowledges is read back (REQ_UD2: the answer carries its address) before it is
        reported. Several slaves sharing an address collide and are left to the secondary
        search, with a warning."""
        wait = at_least(timeout, self.scan_minimum(bus.settings), f"an {self.name} scan request")
        found: list[str] = []
        for address in range(mbus.PRIMARY_MAX + 1):
            try:
                # No late-answer guard: a late E5 credited to the next address is caught
                # by the read-back.
                await self._transact(bus, mbus.snd_nke(address), lambda frame: isinstance(frame, Ack), wait, None,
                                     guard=False)
            except MeterTimeout:
                continue
            except FrameError as exc:  # a garbled answer: several slaves share this address
                log.warning("M-Bus primary address %d: garbled answers (%s), several slaves may share it; not reported "
                            "(find them with the secondary search, --option mode=secondary)", address, exc)
                continue
            if await self._read_back(bus, address, max(timeout, self.transaction_timeout(bus.settings))):
                found.append(str(address))
        return found

    async def _read_back(self, bus: Conduit, address: int, timeout: float) -> bool:
        """Whether a REQ_UD2 to ``address`` brings an answer from that very address (the
        first after SND_NKE, so FCB set; the link state follows)."""
        state = self._links.setdefault((bus.name, str(address)), _LinkState())
        try:
            await self._transact(bus, mbus.req_ud2(address, fcb=True), self._response_check(str(address)), timeout, None)
        except (MeterTimeout, FrameError) as exc:
            log.warning("M-Bus primary address %d acknowledged but did not answer REQ_UD2 (%s); not reported", address, exc)
            state.reset = True
            return False
        state.fcb, state.reset = False, False
        return True

    async def _scan_secondary(self, bus: Conduit, timeout: float) -> list[str]:
        timeout = at_least(timeout, self.scan_minimum(bus.settings), f"an {self.name} scan request")
        found: list[str] = []
        await self._deselect(bus, timeout, None)
        await self._search(bus, mbus.WILDCARD, 0, found, timeout)
        await self._deselect(bus, timeout, None)  # leave no slave selected
        return found

    async def _search(self, bus: Conduit, mask: str, pos: int, found: list[str], timeout: float) -> None:
        """EN 13757-3 Annex (wildcard search, libmbus ``mbus_scan_2nd_address_range``): a
        selection that several slaves answer collides; walk the next ID digit 0-9."""
        outcome, address = await self._probe(bus, mask, timeout)
        if outcome is _Probe.NOTHING:
            return
        if outcome is _Probe.SINGLE:
            assert address is not None
            if address not in found:
                found.append(address)
            return
        if pos >= 8:
            log.warning("M-Bus secondary search: slaves with the same identification %s still collide", mask[:8])
            return
        for digit in "0123456789":
            await self._search(bus, mask[:pos] + digit + mask[pos + 1 :], pos + 1, found, timeout)

    async def _probe(self, bus: Conduit, mask: str, timeout: float) -> tuple[_Probe, str | None]:
        # Silence is a normal answer to a probe (no slave matches), so neither request is
        # left pending for a late answer: an E5 names nobody, and the RSP_UD's
        # identification below is what a slave is found by.
        try:
            await self._expect_ack(bus, mbus.select_request(mask), timeout, None, guard=False)
        except MeterTimeout:
            return _Probe.NOTHING, None
        except FrameError:
            return _Probe.COLLISION, None
        # Two E5 answers on top of each other may still look like one E5: only the
        # RSP_UD proves a single slave is selected (libmbus does the same).
        try:
            frame = await self._transact(bus, mbus.req_ud2(mbus.ADDRESS_NETWORK),
                                         lambda f: isinstance(f, LongFrame) and f.is_response, timeout, None, guard=False)
        except (MeterTimeout, FrameError):
            return _Probe.COLLISION, None
        if frame.ci != mbus.CI_RSP_LONG or len(frame.data) < mbus.SELECT_LEN:
            log.warning("M-Bus secondary search: a slave matching %s answers without a long header (CI %02X)", mask, frame.ci)
            return _Probe.NOTHING, None
        address = mbus.secondary_from_wire(frame.data)
        if not mbus.secondary_matches(mask, address):
            return _Probe.COLLISION, None
        return _Probe.SINGLE, address


def _convert(value: Decimal, conversion: _Conversion) -> Decimal:
    """value × factor × 10^exponent with no rounding (the context is wide enough for any
    M-Bus number: at most 20 digits times 3600)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return mbus.shift(value * conversion.factor, conversion.exponent)


def _hex(value: object, what: str) -> bytes:
    try:
        data = bytes.fromhex(str(value).replace(" ", ""))
    except ValueError:
        raise ValueError(f"{what} must be hex bytes like 'FD 48', got {value!r}") from None
    if not data:
        raise ValueError(f"{what} is empty")
    return data


def _selector(spec: object) -> RecordSelector:
    """A record selector from a profile entry (a mapping of the record fields to match)."""
    if not isinstance(spec, Mapping):
        raise TypeError(f"a record selector is a mapping of {', '.join(_SELECTOR_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(_SELECTOR_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(_SELECTOR_KEYS)})")
    if not any(k in spec for k in ("vib", "dib", "quantity")):
        raise ValueError("name the record by 'vib', 'dib' or 'quantity'")
    fields: dict[str, Any] = {}
    for key in ("vib", "dib"):
        if key in spec:
            fields[key] = _hex(spec[key], key)
    if "quantity" in spec:
        fields["quantity"] = str(spec["quantity"])
    for key in ("storage", "tariff", "subunit"):
        if key in spec:
            value = spec[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key} must be a whole number >= 0, got {value!r}")
            fields[key] = value
    if "function" in spec:
        function = _FUNCTION_NAMES.get(str(spec["function"]).strip().lower())
        if function is None:
            raise ValueError(f"function must be one of {', '.join(f.name.lower() for f in Function)}, got {spec['function']!r}")
        fields["function"] = function
    if "unit" in spec:
        fields["unit"] = str(spec["unit"])
    return RecordSelector(**fields)


def _describe(selector: RecordSelector) -> str:
    parts = [f"vib {selector.vib.hex(' ').upper()}" if selector.vib else "", f"dib {selector.dib.hex(' ').upper()}" if selector.dib else "",
             selector.quantity or "", f"storage {selector.storage}", f"tariff {selector.tariff}", f"subunit {selector.subunit}",
             selector.function.name.lower()]
    return ", ".join(p for p in parts if p)


def _candidate(record: Record, quantity: str, tariff: int) -> bool:
    """A record that stands for the plain quantity (see :attr:`Record.is_plain`), at ``tariff``."""
    return (
        record.quantity == quantity
        and record.function is Function.INSTANTANEOUS
        and record.storage == 0
        and record.tariff == tariff
        and record.subunit == 0
        and record.known
        and not record.modifiers
        and not record.manufacturer_specific
    )


def record_dict(record: Record) -> dict[str, Any]:
    """A record as JSON-friendly data (values as strings, bytes as hex)."""
    value = record.value
    if isinstance(value, bytes):
        shown: Any = value.hex(" ").upper()
    elif value is None:
        shown = None
    elif isinstance(value, Decimal):
        shown = str(value)
    elif hasattr(value, "isoformat"):
        shown = value.isoformat()
    else:
        shown = str(value)
    return {
        "quantity": record.quantity,
        "description": record.description,
        "value": shown,
        "unit": record.unit,
        "function": record.function.name.lower(),
        "storage": record.storage,
        "tariff": record.tariff,
        "subunit": record.subunit,
        "coding": record.coding.name,
        "known": record.known,
        "modifiers": list(record.modifiers),
        "error": record.error,
        "manufacturer_specific": record.manufacturer_specific,
        "note": record.note,
        "raw": record.to_wire().hex(" ").upper(),
    }


__all__ = ["MEDIUM_KINDS", "MbusDriver", "Profile", "RecordSelector", "ScanMode", "record_dict"]
