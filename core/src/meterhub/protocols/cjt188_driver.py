"""The CJ/T 188-2004 meter driver: the codec spoken over a :class:`~meterhub.api.Conduit`.

A water, gas or heat meter answers everything it measures in one 901F record, so the
driver reads that record once per meter and round (:meth:`Cjt188Driver.read_many`) and
hands out the quantities asked for. A meter entry in a site file says which kind of
meter it is::

    - address: "78330011223344"        # A6..A0 as printed: manufacturer code, then serial
      channel: bus1
      protocol: cjt188
      options: {meter_type: "20"}      # hex: 10 cold water (default), 11 hot water, 20 heat, 30 gas ...
      quantities: [heat_energy, flow_temperature, return_temperature]

Other per-meter options: ``di_order`` (``msb_first``: 901F sent as ``90 1F``, the
default; ``lsb_first``: ``1F 90``), ``preamble`` (FE bytes before each request) and
``check_ser`` (false for meters that do not echo the sequence byte).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..api import read_one
from ..errors import FrameError, MeterError, MeterTimeout, NotSupported
from ..model import Command, Measurement, Meter, SerialSettings
from ..timing import answer_deadline, at_least, response_timeout
from . import cjt188 as codec
from . import cjt188_data as data
from .cjt188 import (
    ADDRESS_LEN,
    DI_METERING,
    DI_VALVE,
    DI_WRITE_ADDRESS,
    PREAMBLE,
    STANDARD_TYPES,
    VALVE_CLOSE,
    VALVE_OPEN,
    WILDCARD,
    WILDCARD_TYPE,
    Control,
    DiOrder,
    Family,
    Frame,
    StreamDecoder,
    family_of,
    type_name,
)

if TYPE_CHECKING:
    from ..api import Conduit
    from ..quantities import Quantity

log = logging.getLogger(__name__)

#: No CJ/T 188 source we have states a response time. The standard is modelled on DL/T 645
#: and its meters share DL/T 645's RS-485 buses, whose limit is 20 ms <= Td <= 500 ms
#: after the last request byte (protocols README §1.6 [U]); M-Bus (EN 13757-2, README
#: §6.4: 330 bit times + 50 ms, 188 ms at 2400 Bd) is shorter. 500 ms covers both.
MAX_RESPONSE_DELAY = 0.5

DEFAULT_METER_TYPE = codec.MeterType.COLD_WATER

#: Like DL/T 645's, a CJ/T 188 frame delimits itself (68h, type, length, 16h) and its FEh
#: preamble wakes the receiver: no inter-frame gap, and the preamble may overlap the last
#: talker's turnaround (:func:`meterhub.timing.line_quiet`).
FRAME_GAP = 0.0

MAX_PREAMBLE = 16  #: the most FE bytes a meter's ``preamble`` option may ask for

#: The longest request the driver sends (write address: DI + SER + 7 address bytes, after
#: the longest preamble).
_MAX_REQUEST_LEN = MAX_PREAMBLE + codec.OVERHEAD + 3 + ADDRESS_LEN
_READ_ADDRESS_LEN = codec.OVERHEAD + 3

#: Every type byte the standard assigns, tried in turn by :meth:`Cjt188Driver.scan`.
DEFAULT_SCAN_TYPES: tuple[int, ...] = STANDARD_TYPES

#: The wildcard search of :meth:`Cjt188Driver.scan` fixes address bytes from A0 (the
#: serial's last two digits, the most varied) upwards. A0..A4 are BCD, 00..99; A5..A6 are
#: the manufacturer code, any byte but AA (which would be the wildcard itself).
_SEARCH_VALUES: tuple[tuple[int, ...], ...] = (
    *((tuple(int(f"{n:02d}", 16) for n in range(100)),) * 5),
    *((tuple(b for b in range(256) if b != codec.WILDCARD_BYTE),) * 2),
)

#: A bus whose wildcard answers stay garbled however far the search narrows them down
#: (a meter that always garbles, not a collision) stops the search after this many probes.
MAX_SEARCH_PROBES = 1500


@attrs.frozen
class MeterOptions:
    """A meter entry's ``options`` as the driver uses them."""

    meter_type: int = DEFAULT_METER_TYPE
    di_order: DiOrder = DiOrder.MSB_FIRST
    preamble: int = len(PREAMBLE)
    check_ser: bool = True

    @property
    def family(self) -> Family:
        return family_of(self.meter_type)


_TYPES_TEXT = (
    "10h-19h water: 10 cold, 11 hot, 12 drinking, 13 reclaimed; 20h-29h heat: 20 heating, 21 cooling; "
    "30h-39h gas; 40h-49h other"
)


def parse_meter_type(value: object) -> int:
    """A type byte from hex text ("20", "0x20", "20h") or a number (0x20 in YAML is 32).

    CJ/T 188 writes types in hex, so a YAML ``meter_type: 20`` (the number twenty, 14h)
    almost surely means the heat meter 20h. Numbers are therefore taken only for the
    types the standard names (10h-13h, 20h, 21h, 30h, 40h); any other number is refused
    with the quoted form to write instead, rather than read as a reserved type.
    """
    if isinstance(value, bool):
        raise ValueError(f'meter_type must be a type byte in hex like "10" or 0x10, not {value!r}')
    if isinstance(value, int):
        if value in set(codec.MeterType):
            return value
        spelled = str(value)
        hint = ""
        if len(spelled) == 2 and int(spelled, 16) in STANDARD_TYPES:
            hint = f'; types are hex: write "{spelled}" for the {type_name(int(spelled, 16))}'
        shown = f"{value:02X}h" if 0 <= value <= 0xFF else "not a byte"
        raise ValueError(f"meter_type {value} is the number {value} ({shown}), not a CJ/T 188 meter type{hint or f' ({_TYPES_TEXT})'}")
    text = str(value).strip().lower().removesuffix("h")
    try:
        number = int(text, 16)
    except ValueError:
        raise ValueError(f'meter_type must be a type byte in hex like "10" or 0x10, not {value!r}') from None
    if number not in STANDARD_TYPES:
        raise ValueError(f"meter_type {number:02X}h is not a CJ/T 188 meter type ({_TYPES_TEXT})")
    return number


def type_byte(value: object) -> int:
    """A meter type given in code: any standard type byte as an int, or text as in a site file."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in STANDARD_TYPES:
            raise ValueError(f"{value:#x} is not a CJ/T 188 meter type ({_TYPES_TEXT})")
        return value
    return parse_meter_type(value)


_FLAGS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def parse_flag(value: object) -> bool:
    """A yes/no option: a YAML boolean, or text from the command line ("true", "no", "0" ...)."""
    if isinstance(value, bool):
        return value
    flag = _FLAGS.get(str(value).strip().lower())
    if flag is None:
        raise ValueError(f"must be true or false, not {value!r}")
    return flag


def parse_preamble(value: object) -> int:
    """How many FE bytes to send before a request: a number, or its decimal text."""
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        number = -1
    if not 0 <= number <= MAX_PREAMBLE:
        raise ValueError(f"must be a number of FE bytes, 0..{MAX_PREAMBLE}, not {value!r}")
    return number


def parse_di_order(value: object) -> DiOrder:
    """``msb_first`` (901F sent as 90 1F) or ``lsb_first`` (1F 90)."""
    try:
        return DiOrder(str(value).strip().lower())
    except ValueError:
        known = ", ".join(o.value for o in DiOrder)
        raise ValueError(f"unknown DI byte order {value!r} (known: {known})") from None


def parse_meter_types(value: object) -> tuple[int, ...]:
    """Several meter types: one type, a list, or hex text separated by commas, slashes or
    plus signs ("10,20,30", "10+20+30": a ``sim bus`` option cannot hold a comma)."""
    if isinstance(value, str):
        items: list[object] = [part for part in re.split(r"[,/+\s]+", value.strip()) if part]
    else:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"no meter type in {value!r}")
    return tuple(type_byte(item) for item in items)


#: The per-meter options: key -> parser (raising ValueError with the reason).
_OPTION_PARSERS: Mapping[str, Callable[[object], Any]] = {
    "meter_type": parse_meter_type,
    "di_order": parse_di_order,
    "preamble": parse_preamble,
    "check_ser": parse_flag,
}


def _address_bytes(address: str) -> list[str]:
    return [address[i : i + 2] for i in range(0, 2 * ADDRESS_LEN, 2)]


class Cjt188Driver:
    """CJ/T 188-2004 water, gas and heat meters (``protocol: cjt188``), 2400 8E1 by default.

    ``preamble`` and ``di_order`` are the defaults for meters whose options do not set
    them. ``ser`` fixes the sequence byte SER of every request (some masters always send
    the same one); None counts it up per request. ``scan_types`` are the meter types
    :meth:`scan` tries, and ``scan_search`` lets it separate several meters of one type
    by wildcard address search.
    """

    NAME = "cjt188"
    DESCRIPTION = "CJ/T 188-2004 water, gas and heat meters (RS485/M-Bus, infrared, behind carrier modules)"
    DEFAULT_SETTINGS = SerialSettings(2400, 8, "E", 1)  # README §2.3: typically 2400 8E1 [U]

    def __init__(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        default_settings: SerialSettings | None = None,
        preamble: int = len(PREAMBLE),
        di_order: DiOrder | str = DiOrder.MSB_FIRST,
        ser: int | None = None,
        scan_types: Sequence[int] = DEFAULT_SCAN_TYPES,
        scan_search: bool = True,
    ) -> None:
        if not 0 <= preamble <= MAX_PREAMBLE:
            raise ValueError(f"preamble must be 0..{MAX_PREAMBLE} FE bytes, got {preamble!r}")
        if ser is not None and not 0 <= ser <= 0xFF:
            raise ValueError(f"SER is one byte, got {ser!r}")
        self.name = name or self.NAME
        self.description = description or self.DESCRIPTION
        self.default_settings = default_settings or self.DEFAULT_SETTINGS
        self.preamble = preamble
        self.di_order = DiOrder(di_order)
        self.scan_types = tuple(type_byte(t) for t in scan_types)
        self.scan_search = scan_search
        self._fixed_ser = ser
        self._ser = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # -- the MeterDriver contract ---------------------------------------------------

    def normalize_address(self, address: str) -> str:
        """14 characters A6..A0, most significant first; shorter numbers are zero-padded on the left.

        A0..A4 (the last 10 digits, the meter serial) are BCD; A5..A6 (the first 4, the
        manufacturer code) may be any hex byte. AA bytes are wildcards (AA×14: the one
        meter of its type on a point-to-point line).
        """
        text = str(address).strip().upper()
        if not text:
            raise ValueError("empty CJ/T 188 address; give the 14-digit number on the meter (A6..A0)")
        if len(text) > 2 * ADDRESS_LEN:
            raise ValueError(f"CJ/T 188 address {address!r} is {len(text)} characters long; it has at most 14")
        text = text.rjust(2 * ADDRESS_LEN, "0")
        for index, pair in enumerate(_address_bytes(text)):
            digits = "0123456789ABCDEF" if index < 2 else "0123456789"
            if pair != "AA" and not all(c in digits for c in pair):
                where = (
                    "manufacturer code (first 4 characters) must be hex"
                    if index < 2
                    else "serial (last 10 characters) must be decimal digits"
                )
                raise ValueError(f"CJ/T 188 address {address!r}: the {where}, found {pair!r}")
        return text

    def supported_quantities(self) -> Collection[str]:
        """Every OBIS code some CJ/T 188 meter type answers (which ones a meter has depends
        on its ``meter_type``; :meth:`validate_meter` checks that)."""
        return data.ALL_QUANTITIES

    def transaction_timeout(self, settings: SerialSettings) -> float:
        """By when an answer must have begun: request on the wire + turnaround + the 500 ms
        response delay + the wake-up bytes and 68h that start a reply."""
        return answer_deadline(
            settings,
            request_len=_MAX_REQUEST_LEN,
            max_response_delay=MAX_RESPONSE_DELAY,
            header_len=len(PREAMBLE) + 1,
        )

    def scan_timeout(self, settings: SerialSettings) -> float:
        """The wait per probe of a scan for an answer to begin: a read-address request, which
        is shorter than the longest request a read may send."""
        return answer_deadline(
            settings,
            request_len=self.preamble + _READ_ADDRESS_LEN,
            max_response_delay=MAX_RESPONSE_DELAY,
            header_len=len(PREAMBLE) + 1,
        )

    def scan_minimum(self, settings: SerialSettings) -> float:
        """The shortest wait per scan probe in which a whole answer can arrive: the
        read-address request and its answer on the wire (no source gives a least response
        delay)."""
        return response_timeout(
            settings,
            request_len=self.preamble + _READ_ADDRESS_LEN,
            max_reply_len=_READ_ADDRESS_LEN + ADDRESS_LEN,
            max_response_delay=0.0,
        )

    def meter_options(self, meter: Meter) -> MeterOptions:
        """The meter's options with this driver's defaults; ValueError naming the bad one."""
        opts, problems = self._parse_options(meter.options)
        if problems:
            key, message = problems[0]
            raise ValueError(f"meter {meter.address}: {key}: {message}")
        return opts

    def _parse_options(self, options: Mapping[str, Any]) -> tuple[MeterOptions, list[tuple[str, str]]]:
        """Options as typed in a site file or given as text on the command line."""
        values: dict[str, Any] = {"di_order": self.di_order, "preamble": self.preamble}
        problems: list[tuple[str, str]] = []
        for key, raw in options.items():
            parser = _OPTION_PARSERS.get(key)
            if parser is None:
                problems.append((f"options.{key}", f"unknown option {key!r} (known: {', '.join(_OPTION_PARSERS)})"))
                continue
            try:
                values[key] = parser(raw)
            except ValueError as exc:
                problems.append((f"options.{key}", str(exc)))
        return MeterOptions(**values), problems

    def validate_meter(self, meter: Meter) -> list[tuple[str, str]]:
        """Problems with one configured meter: its address, options and quantities."""
        problems: list[tuple[str, str]] = []
        try:
            self.normalize_address(meter.address)
        except ValueError as exc:
            problems.append(("address", str(exc)))
        opts, option_problems = self._parse_options(meter.options)
        problems += option_problems
        if any(key == "options.meter_type" for key, _ in option_problems):
            return problems
        meter_type = opts.meter_type
        if family_of(meter_type) is Family.OTHER:
            problems.append(("options.meter_type", f"meterhub cannot read a {type_name(meter_type)}: CJ/T 188 defines "
                             "no metering-data layout for types 40h-49h (other/custom)"))
            return problems
        known = data.quantities_for(meter_type)
        default = "" if "meter_type" in meter.options else "; no meter_type given, so a cold water meter (10h) is assumed"
        for obis in meter.quantities:
            if obis not in known:
                problems.append(("quantities", f"a {type_name(meter_type)} cannot read {obis} (it can read {', '.join(known)}){default}"))
        return problems

    async def read(self, bus: Conduit, meter: Meter, quantity: Quantity | str, timeout: float) -> Measurement:
        """Read one quantity (one 901F transaction): MeterTimeout, FrameError, MeterError or NotSupported on failure."""
        return await read_one(self, bus, meter, quantity, timeout)

    async def read_many(
        self, bus: Conduit, meter: Meter, quantities: Sequence[Quantity | str], timeout: float
    ) -> list[Measurement | Exception]:
        """Every quantity from one 901F read: one transaction per meter, whatever is asked.

        Returns one entry per quantity: its Measurement or the error it failed with. A
        quantity the meter type has not got is NotSupported without any transaction; if
        the read fails, every other quantity gets that error. LinkError is raised.
        """
        opts = self.meter_options(meter)
        codes = [getattr(q, "obis", str(q)) for q in quantities]
        known = data.quantities_for(opts.meter_type)
        answers = ", ".join(known) or "nothing meterhub can read"
        results: list[Measurement | Exception | None] = [
            None if obis in known else NotSupported(f"a {type_name(opts.meter_type)} has no {obis} (it answers {answers})")
            for obis in codes
        ]
        wanted = [i for i, r in enumerate(results) if r is None]
        if wanted:
            try:
                record = await self.read_record(bus, meter, timeout)
            except (MeterTimeout, FrameError, NotSupported, MeterError) as exc:
                for i in wanted:
                    results[i] = exc
            else:
                values = data.measurements(opts.meter_type, record, [codes[i] for i in wanted])
                for i, value in zip(wanted, values, strict=True):
                    results[i] = value
        return [r for r in results if r is not None]

    async def read_record(self, bus: Conduit, meter: Meter, timeout: float) -> data.Record:
        """The meter's 901F record, decoded for its meter type."""
        opts = self.meter_options(meter)
        address = self.normalize_address(meter.address)
        request = codec.read_request(opts.meter_type, address, DI_METERING, self._next_ser(), di_order=opts.di_order)
        reply = await self._transact(bus, meter, opts, request, timeout)
        body = codec.parse_reply(reply, Control.READ_DATA, DI_METERING)
        return data.decode_record(opts.family, body.payload)

    async def scan(
        self, bus: Conduit, timeout: float, *, meter_type: object = None, search: object = None
    ) -> list[str]:
        """Addresses of the meters answering a wildcard read-address (03h to AA×7).

        Each meter type (``meter_type``: one, a list or "10,20,30"; default ``scan_types``,
        every standard type) is asked in turn, so meters of different types on one bus are
        found one per type. Several meters of one type answer at once and garble; with
        ``search`` (default ``scan_search``) the driver then fixes address bytes one at a
        time, A0 first, to single them out, which relies on meters treating each AA byte
        as a wildcard (README §2.1 [U] for partial wildcards). ``timeout`` is the wait per
        probe (:meth:`scan_timeout`). Returns [] when nothing answers; raises the
        FrameError when only garbled answers came back.
        """
        types = None if meter_type is None else parse_meter_types(meter_type)
        found = await self.discover(bus, timeout, types, search=None if search is None else parse_flag(search))
        return [address for _type, address in found]

    async def discover(
        self, bus: Conduit, timeout: float, types: Sequence[int] | None = None, *, search: bool | None = None
    ) -> list[tuple[int, str]]:
        """``(meter type, address)`` of every meter :meth:`scan` finds, in the order found."""
        timeout = at_least(timeout, self.scan_minimum(bus.settings), f"a {self.name} scan probe")
        found: list[tuple[int, str]] = []
        unresolved: list[FrameError] = []
        budget = [MAX_SEARCH_PROBES]
        deep = self.scan_search if search is None else search
        for meter_type in types if types is not None else self.scan_types:
            for address in await self._search(bus, meter_type, WILDCARD, timeout, unresolved, budget, deep):
                if (meter_type, address) not in found:
                    log.info("scan: %s at %s", type_name(meter_type), address)
                    found.append((meter_type, address))
        if unresolved:
            first = unresolved[0]
            message = (
                f"{first} ({len(unresolved)} wildcard answer(s) stayed garbled: "
                "several meters answering at once, or a meter that garbles)"
            )
            if not found:
                raise type(first)(message) from first
            log.warning("scan found %d meter(s); %s", len(found), message)
        return found

    async def _search(
        self, bus: Conduit, meter_type: int, pattern: str, timeout: float, unresolved: list[FrameError], budget: list[int],
        deep: bool,
    ) -> list[str]:
        """Probe ``pattern``; on a garbled answer, probe each value of its lowest wildcard byte."""
        budget[0] -= 1
        request = codec.read_address_request(meter_type, self._next_ser(), address=pattern, di_order=self.di_order)
        try:
            # No late-answer guard: an answer names its address and echoes its SER.
            reply = await self._transact(bus, None, MeterOptions(meter_type=meter_type), request, timeout, guard=False)
        except MeterTimeout:
            return []
        except FrameError as exc:
            parts = _address_bytes(pattern)
            position = next((i for i in range(ADDRESS_LEN) if parts[ADDRESS_LEN - 1 - i] == "AA"), None)
            if not deep or position is None or budget[0] < len(_SEARCH_VALUES[position]):
                unresolved.append(exc)
                return []
            log.info("scan: several %ss answer %s; narrowing down byte A%d", type_name(meter_type), pattern, position)
            found: list[str] = []
            for value in _SEARCH_VALUES[position]:
                if budget[0] <= 0:
                    unresolved.append(FrameError(f"scan gave up narrowing down {pattern} after {MAX_SEARCH_PROBES} probes"))
                    break
                narrowed = list(parts)
                narrowed[ADDRESS_LEN - 1 - position] = f"{value:02X}"
                found += await self._search(bus, meter_type, "".join(narrowed), timeout, unresolved, budget, deep)
            return found
        if reply.is_abnormal:  # an error answer still names the meter in its header
            log.warning("scan: %s at %s answered read address abnormally (C=%02Xh)", type_name(meter_type), reply.address, reply.control)
            return [reply.address]
        return [codec.parse_read_address_reply(reply)]

    async def execute(self, bus: Conduit, meter: Meter, command: Command, timeout: float) -> Mapping[str, Any]:
        """Carry out ``command``: ``valve`` (``{"action": "open"|"close"}``), ``read_address``
        or ``write_address`` (``{"address": "<14 characters>"}``); NotSupported otherwise."""
        handler = self.commands().get(command.name)
        if handler is None:
            known = ", ".join(sorted(self.commands()))
            raise NotSupported(f"{self.name} has no command {command.name!r}; it knows {known}")
        result = await handler(bus, meter, dict(command.args), timeout)
        return {"command": command.name, "meter": meter.address, **result}

    def commands(self) -> Mapping[str, Callable[..., Any]]:
        """Command name -> ``async handler(bus, meter, args, timeout) -> dict``."""
        return {"valve": self._valve, "read_address": self._read_address, "write_address": self._write_address}

    # -- commands ---------------------------------------------------------------------

    async def _valve(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Valve control (write A017): ``action`` open (55h) or close (99h)."""
        action = str(args.get("action", "")).strip().lower()
        codes = {"open": VALVE_OPEN, "close": VALVE_CLOSE}
        if action not in codes:
            raise ValueError(f"valve needs an 'action' of 'open' or 'close', got {args.get('action')!r}")
        opts = self.meter_options(meter)
        address = self.normalize_address(meter.address)
        request = codec.valve_request(opts.meter_type, address, self._next_ser(), codes[action], di_order=opts.di_order)
        reply = await self._transact(bus, meter, opts, request, timeout)
        body = codec.parse_reply(reply, Control.WRITE_DATA, DI_VALVE)
        result: dict[str, Any] = {"action": action, "ok": True}
        if len(body.payload) >= 2:  # the meter reports ST after the change (KingDa: DI SER ST)
            status = codec.status_from_wire(body.payload[:2])
            result["valve_state"] = codec.valve_state(status)
        return result

    async def _read_address(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Read address (03h) from the meter's configured address (AA×7 reaches the one meter on the line)."""
        opts = self.meter_options(meter)
        address = self.normalize_address(meter.address)
        request = codec.read_address_request(opts.meter_type, self._next_ser(), address=address, di_order=opts.di_order)
        reply = await self._transact(bus, meter, opts, request, timeout)
        return {"address": codec.parse_read_address_reply(reply), "meter_type": f"{reply.meter_type:02X}"}

    async def _write_address(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Write address (15h, A018): ``address``, the new 14-character address (no wildcards)."""
        if "address" not in args:
            raise ValueError("write_address needs an 'address' argument (the new 14-character address)")
        new = self.normalize_address(str(args["address"]))
        if "AA" in _address_bytes(new):
            raise ValueError(f"the new address {new} may not contain AA bytes: they are wildcards")
        opts = self.meter_options(meter)
        old = self.normalize_address(meter.address)
        request = codec.write_address_request(opts.meter_type, old, self._next_ser(), new, di_order=opts.di_order)
        # The meter may answer from its old or its new address [U]; both are accepted.
        reply = await self._transact(bus, meter, opts, request, timeout, also_from=new)
        codec.parse_reply(reply, Control.WRITE_ADDRESS, DI_WRITE_ADDRESS)
        return {"address": new, "previous": old, "ok": True}

    # -- helpers ----------------------------------------------------------------------

    def _next_ser(self) -> int:
        if self._fixed_ser is not None:
            return self._fixed_ser
        ser, self._ser = self._ser, (self._ser + 1) & 0xFF
        return ser

    async def _transact(
        self,
        bus: Conduit,
        meter: Meter | None,
        opts: MeterOptions,
        request: Frame,
        timeout: float,
        *,
        also_from: str | None = None,
        guard: bool = True,
    ) -> Frame:
        """Send ``request``; return the reply to its function from the addressed meter.

        A reply is taken when its type, address (AA bytes in the request match anything),
        function, SER (unless ``check_ser`` is off) and, for a normal reply, DI (in either
        byte order, README §2.4.1) answer the request. An abnormal reply (which carries SER
        and ST but no DI) is taken too; the caller's parse raises MeterError for it.
        """
        body = codec.parse_body(request)

        def accept(frame: object) -> bool:
            if not isinstance(frame, Frame) or not frame.is_reply or frame.function != request.function:
                return False
            if request.meter_type != WILDCARD_TYPE and frame.meter_type != request.meter_type:
                return False
            if not (codec.address_matches(request.address, frame.address) or frame.address == also_from):
                return False
            if frame.is_abnormal:
                ser = codec.parse_abnormal(frame).ser
                return not opts.check_ser or ser is None or ser == body.ser
            if not codec.di_matches(frame.data, body.di) or len(frame.data) < 3:
                return False
            return not opts.check_ser or frame.data[2] == body.ser

        exchange = await bus.transact(
            codec.encode(request, preamble=opts.preamble),
            StreamDecoder(),
            timeout=timeout,
            accept=accept,
            settings=meter.settings if meter is not None else None,
            guard=guard,
            gap=FRAME_GAP,
            wake_up=opts.preamble,
        )
        return exchange.frame

