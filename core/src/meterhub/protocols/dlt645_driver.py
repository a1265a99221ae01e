"""DL/T 645-2007 and DL/T 645-1997 meter drivers: the codec spoken over a :class:`~meterhub.api.Conduit`.

A driver maps OBIS quantities to data identifiers, sends one request per transaction
(plus follow-up requests while the meter says more frames follow) and turns abnormal
replies, "FF" values and silence into meterhub's errors. Vendors build variants through
the constructor (``Dlt645Driver(name="acme-dlt645", extra_items={...})``) or by
subclassing; nothing here is private to the built-in plugin.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any


from ..errors import FrameError, MeterError, MeterTimeout, NotSupported, UnexpectedReply
from ..model import Command, Measurement, Meter, SerialSettings
from ..timing import answer_deadline, at_least, response_timeout
from . import dlt645 as codec
from .dlt645 import (
    BROADCAST,
    PREAMBLE,
    WILDCARD,
    Control,
    Control1997,
    Frame,
    RelayAction,
    StreamDecoder,
)
from .dlt645_data import (
    CLOCK_DIS,
    CLOCK_OBIS,
    DAILY_FREEZE,
    FREEZE_DEPTH,
    FREEZE_FORWARD,
    FREEZE_REVERSE,
    FREEZE_TIME,
    FROZEN_BLOCK_OBIS,
    ITEMS,
    ITEMS_1997,
    DataItem,
    clock_iso,
    decode_block,
    decode_value,
    encode_value,
    freeze_di,
    obis_index,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..api import Conduit
    from ..quantities import Quantity

#: DL/T 645 §1.6: the longest a master has to allow for an answer to begin after the
#: request, and the least a scan query must wait (the codec's constants).
MAX_RESPONSE_DELAY = codec.MAX_RESPONSE_DELAY

#: DL/T 645 sets no silence between frames (§1.6 bounds only the gap between bytes of one
#: frame, at 500 ms): a frame delimits itself (68h, length, 16h) and the master wakes the
#: line with FEh bytes before it. So a request goes out once the last talker has turned
#: its transmitter off (a turnaround), not after Modbus RTU's 3.5 characters; and the
#: FEh preamble (§1.1: sent to wake the receiver, which may miss it) may go out during
#: that turnaround (``wake_up=``, :func:`meterhub.timing.line_quiet`).
FRAME_GAP = 0.0
MIN_RESPONSE_DELAY = codec.MIN_RESPONSE_DELAY

#: What a multi-drop scan asks for with an abbreviated address: forward active energy,
#: total, the one register every DL/T 645-2007 meter has. The reply's address field is
#: the meter's real address; even an abnormal reply gives it away.
SCAN_DI = 0x00010000

#: The follow-up frame number SEQ is one byte, so a reply has at most 255 follow-ups.
MAX_FOLLOWUPS = 255

#: §1.3: SERR bit 1, "no requested data": what a meter answers for a record it does not
#: hold (a freeze record older than its history, a register it does not keep).
SERR_NO_DATA = 0x02

#: Reading one freeze record twice in a row at most: a record shifts back by one when the
#: meter freezes while it is read (at its midnight), and the second reading is then whole.
_FROZEN_ATTEMPTS = 2

_READ_REQUEST_LEN = len(PREAMBLE) + codec.OVERHEAD + 4  # a read carries one 4-byte DI
#: What shows a reply has begun: the wake-up bytes a meter may send and the start byte 68h.
_REPLY_HEADER_LEN = len(PREAMBLE) + 1
#: A scan's answers: read address (6 address bytes) or SCAN_DI (4 DI + 4 data bytes).
_SCAN_REPLY_LEN = len(PREAMBLE) + codec.OVERHEAD + 4 + 4

#: A meter's address as sent (6 bytes, least significant first), worked out once per meter
#: rather than for every request.
_wire_address = functools.lru_cache(maxsize=1024)(codec.address_to_wire)


def _hex_field(value: object, size: int, what: str) -> bytes:
    """A password/operator argument: bytes are taken in wire order, text in written order.

    Passwords and operator codes are written most significant first ("123456") like
    addresses, and sent least significant first (56 34 12), like every DL/T 645 number.
    """
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        text = str(value).strip().replace(" ", "")
        try:
            data = bytes.fromhex(text.rjust(2 * size, "0"))[::-1]
        except ValueError:
            raise ValueError(f"{what} must be {2 * size} hex digits, got {value!r}") from None
    if len(data) != size:
        raise ValueError(f"{what} must be {size} bytes ({2 * size} hex digits), got {value!r}")
    return data


def _address_bytes(address: str) -> list[str]:
    return [address[i : i + 2] for i in range(0, 12, 2)]


def _di_arg(value: object) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip(), 16)
    except ValueError:
        raise ValueError(f"a data identifier is hex digits like '04000101', got {value!r}") from None


def _datetime_arg(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"expected an ISO date-time like '2024-05-01T12:00:00', got {value!r}") from None


def _relay_action(value: object) -> RelayAction:
    if isinstance(value, RelayAction):
        return value
    if isinstance(value, int):
        return RelayAction(value)
    try:
        return RelayAction[str(value).strip().upper().replace("-", "_")]
    except KeyError:
        names = ", ".join(a.name.lower() for a in RelayAction)
        raise ValueError(f"unknown relay action {value!r}; choose one of {names}") from None


def item_from_spec(obis: str, spec: DataItem | Mapping[str, Any]) -> DataItem:
    """A data item for ``obis`` from a DataItem or a profile mapping.

    A profile mapping (YAML-friendly) names ``di`` (hex) and ``fmt``, and optionally
    ``unit``, ``signed`` and ``name``: ``{"di": "02800002", "fmt": "XX.XX", "unit": "Hz"}``.
    """
    if isinstance(spec, DataItem):
        return spec if spec.obis == obis else DataItem(spec.di, spec.name, spec.fmt, spec.unit, spec.signed, obis, spec.block)
    try:
        di = _di_arg(spec["di"])
        return DataItem(di, str(spec.get("name", obis)), str(spec["fmt"]), str(spec.get("unit", "")), bool(spec.get("signed", False)), obis)
    except KeyError as exc:
        raise ValueError(f"data item for {obis} needs {exc.args[0]!r}") from None


class Dlt645Driver:
    """DL/T 645-2007 meters (``protocol: dlt645``), 2400 8E1 by default.

    ``items`` replaces the DI table (by DI); ``extra_items`` adds or overrides quantities,
    either as ``{obis: DataItem | profile mapping}`` or as DataItems carrying their OBIS.
    """

    EDITION = 2007
    NAME = "dlt645"
    DESCRIPTION = "DL/T 645-2007 electricity meters (RS485, infrared, behind carrier modules)"
    DEFAULT_SETTINGS = SerialSettings(2400, 8, "E", 1)  # §1.6: the usual 2007 RS485 format
    BASE_ITEMS: Mapping[int, DataItem] = ITEMS

    def __init__(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        default_settings: SerialSettings | None = None,
        items: Mapping[int, DataItem] | None = None,
        extra_items: Mapping[str, DataItem | Mapping[str, Any]] | Iterable[DataItem] | None = None,
        preamble: int = len(PREAMBLE),
    ) -> None:
        self.name = name or self.NAME
        self.description = description or self.DESCRIPTION
        self.default_settings = default_settings or self.DEFAULT_SETTINGS
        self.preamble = preamble
        table = dict(self.BASE_ITEMS if items is None else items)
        by_obis = obis_index(table.values())
        if isinstance(extra_items, Mapping):
            extra = [item_from_spec(obis, spec) for obis, spec in extra_items.items()]
        else:
            extra = list(extra_items or ())
        for item in extra:
            if item.obis is None:
                raise ValueError(f"extra data item {item.di_hex} ({item.name}) needs an OBIS code")
            table[item.di] = item
            by_obis[item.obis] = item
        self.items: Mapping[int, DataItem] = table  #: every DI this driver can decode
        self._by_obis = by_obis

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # -- the MeterDriver contract ---------------------------------------------------

    def normalize_address(self, address: str) -> str:
        """12 digits in nameplate order; shorter numbers are zero-padded on the left.

        ``161`` becomes ``000000000161`` (a YAML file may even give it as a number). AA
        bytes are allowed as wildcards (AAAAAAAAAAAA: the one meter on a point-to-point
        line); the broadcast address 999999999999 is refused because nobody answers it.
        """
        text = str(address).strip().upper()
        if not text:
            raise ValueError("empty DL/T 645 address; give the 12-digit number on the meter's nameplate")
        if len(text) > 12:
            raise ValueError(f"DL/T 645 address {address!r} is {len(text)} characters long; it has at most 12 digits")
        text = text.rjust(12, "0")
        for i in range(0, 12, 2):
            pair = text[i : i + 2]
            if pair != "AA" and not all(c in "0123456789" for c in pair):
                raise ValueError(
                    f"DL/T 645 address {address!r} must be decimal digits (up to 12; AA bytes as wildcards), found {pair!r}"
                )
        if text == BROADCAST:
            raise ValueError("999999999999 is the DL/T 645 broadcast address; no meter answers a read to it")
        return text

    def supported_quantities(self) -> Collection[str]:
        """OBIS codes of the table, plus the clock when its two DIs are known."""
        found = set(self._by_obis)
        if all(di in self.items for di in CLOCK_DIS[self.EDITION]):
            found.add(CLOCK_OBIS)
        return sorted(found)

    def transaction_timeout(self, settings: SerialSettings) -> float:
        """By when an answer must have begun: request on the wire + turnaround + the 500 ms
        response delay (§1.6) + the wake-up bytes and 68h that start a reply."""
        return answer_deadline(
            settings,
            request_len=_READ_REQUEST_LEN,
            max_response_delay=MAX_RESPONSE_DELAY,
            header_len=_REPLY_HEADER_LEN,
        )

    def scan_minimum(self, settings: SerialSettings) -> float:
        """The shortest wait per scan query in which a whole answer can arrive (§1.6's 20 ms
        least response delay, the query and the answer on the wire)."""
        return response_timeout(
            settings, request_len=_READ_REQUEST_LEN, max_reply_len=_SCAN_REPLY_LEN, max_response_delay=MIN_RESPONSE_DELAY
        )

    def item_for(self, obis: str) -> DataItem:
        """The data item this driver reads for ``obis``; NotSupported if it has none."""
        try:
            return self._by_obis[obis]
        except KeyError:
            raise NotSupported(f"{self.name} has no data identifier for {obis}") from None

    async def read(self, bus: Conduit, meter: Meter, quantity: Quantity | str, timeout: float) -> Measurement:
        """Read one quantity: MeterTimeout, FrameError, MeterError or NotSupported on failure."""
        obis = getattr(quantity, "obis", str(quantity))
        if obis == CLOCK_OBIS and obis not in self._by_obis:
            return Measurement(await self._read_clock(bus, meter, timeout), "")
        item = self.item_for(obis)
        payload = await self.read_di(bus, meter, item.di, timeout)
        return Measurement(decode_value(item, payload), item.unit)

    async def read_di(self, bus: Conduit, meter: Meter, di: int, timeout: float) -> bytes:
        """The payload of one DI, follow-up frames included (each transaction gets ``timeout``)."""
        address = self.normalize_address(meter.address)
        frame = await self._transact(bus, meter, self._read_request_bytes(address, di), address, self._read_function,
                                     timeout,
                                     answers=lambda f: self._answers(lambda: self._check_di(f, di, self._parse_read(f)[0]), f))
        got, payload = self._parse_read(frame)
        self._check_di(frame, di, got)
        for seq in range(1, MAX_FOLLOWUPS + 1):
            if not frame.has_followup:
                return payload
            frame = await self._transact(bus, meter, self._encode(self._followup_request(address, di, seq)), address,
                                         self._followup_function, timeout,
                                         answers=lambda f, n=seq: self._answers(lambda: self._parse_followup(f, di, n), f))
            payload += self._parse_followup(frame, di, seq)
        raise FrameError(f"meter {address} announced more than {MAX_FOLLOWUPS} follow-up frames for DI {di:X}")

    # -- FrozenReader: the meter's own daily freeze records ---------------------------

    #: DL/T 645-2007: daily freeze records 05 06 xx 01..3E, the last 62 days
    frozen_depth = FREEZE_DEPTH[DAILY_FREEZE]

    async def read_frozen(self, bus: Conduit, meter: Meter, back: int, timeout: float) -> list[Measurement]:
        """The daily freeze ``back`` (1..62) records ago (:class:`meterhub.api.FrozenReader`):
        forward active energy total and tariffs 1..4 (``1-0:1.8.0``..``1-0:1.8.4``) and,
        where the meter keeps it, reverse (``1-0:2.8.x``), each with ``data_time`` the
        freeze time as the meter wrote it (naive local time) and ``period`` 1.

        Reads the freeze time (05 06 00 NN), the blocks (05 06 01 NN, 05 06 02 NN), then
        the time again: if the meter froze meanwhile (its midnight) the record moved back
        by one and is read once more. A reverse block the meter does not keep ("no data"
        or FF) is left out. NotSupported when the meter holds no such record: it answers
        "no data" (``back`` beyond its history) or FF for the time or the forward block.
        ValueError for ``back`` outside 1..:attr:`frozen_depth`.
        """
        if not 1 <= back <= self.frozen_depth:
            raise ValueError(f"back must be 1..{self.frozen_depth} (the daily freeze records a meter keeps), got {back!r}")
        at = await self._freeze_time(bus, meter, back, timeout)
        for _attempt in range(_FROZEN_ATTEMPTS):
            values = await self._frozen_block(bus, meter, FREEZE_FORWARD, back, timeout, required=True)
            values += await self._frozen_block(bus, meter, FREEZE_REVERSE, back, timeout, required=False)
            again = await self._freeze_time(bus, meter, back, timeout)
            if again == at:
                return [Measurement(value, unit, data_time=at, period=1, quantity=obis) for obis, value, unit in values]
            at = again
        raise MeterError(f"meter {meter.address} took new daily freezes while record {back} was read, twice")

    def _frozen_item(self, what: int, back: int) -> DataItem:
        di = freeze_di(DAILY_FREEZE, what, back)
        item = self.items.get(di)
        if item is None:
            raise NotSupported(f"{self.name} has no data identifier {di:08X} for daily freeze records")
        return item

    async def _read_record_part(self, bus: Conduit, meter: Meter, item: DataItem, timeout: float) -> bytes:
        """The payload of one part of a freeze record; NotSupported when the meter answers
        that it has no such data (SERR bit 1): it does not keep that record."""
        try:
            return await self.read_di(bus, meter, item.di, timeout)
        except MeterError as exc:
            if (exc.code or 0) & SERR_NO_DATA:
                raise NotSupported(f"meter {meter.address} holds no {item.name} (DI {item.di_hex}): {exc}") from exc
            raise

    async def _freeze_time(self, bus: Conduit, meter: Meter, back: int, timeout: float) -> datetime:
        item = self._frozen_item(FREEZE_TIME, back)
        return datetime.fromisoformat(str(decode_value(item, await self._read_record_part(bus, meter, item, timeout))))

    async def _frozen_block(self, bus: Conduit, meter: Meter, what: int, back: int, timeout: float, *,
                            required: bool) -> list[tuple[str, Decimal, str]]:
        """The elements of a frozen energy block as ``(obis, value, unit)`` (total, tariffs
        1..4; elements beyond tariff 4 are not meterhub quantities). FF elements are left
        out; a block the meter does not keep ("no data", all FF) raises NotSupported when
        ``required`` and gives nothing otherwise."""
        item = self._frozen_item(what, back)
        try:
            elements = decode_block(item, await self._read_record_part(bus, meter, item, timeout))
            if all(value is None for value in elements):
                raise NotSupported(f"meter {meter.address} reports {item.name} (DI {item.di_hex}) not supported (FF)")
        except NotSupported:
            if required:
                raise
            return []
        obis = FROZEN_BLOCK_OBIS[what]
        return [(obis[index], Decimal(value), item.unit) for index, value in enumerate(elements[: len(obis)]) if value is not None]

    async def scan(self, bus: Conduit, timeout: float) -> list[str]:
        """Addresses of the meters on the line, point-to-point or multi-drop.

        First read address (13h) to AA…AA: on a point-to-point line the one meter answers
        and that is all. When several answer at once (a garbled reply), search the bus
        with abbreviated addresses (§4.1.2: the low bytes given, the high bytes AAh,
        "the slave answers with its real address"): each value 00…99 of A0, and where a
        value still draws a collision, each value of A1 under it, and so on. Every query
        listens for its whole ``timeout`` so that two meters answering one after the
        other are both heard. Cost: 100 queries per level searched, so a bus whose meters
        differ in their last two digits takes 100 × ``timeout``.

        Only addresses read back whole in a clean answer are reported: a clean answer that
        arrives late, in the next query's window, still names a meter that is there; a
        collision that stays garbled down to a full address names nobody (two meters with
        one address, or noise) and is left out with a warning. ``timeout`` shorter than a
        query and its answer take on the wire is raised to that (:meth:`scan_minimum`).
        """
        timeout = at_least(timeout, self.scan_minimum(bus.settings), f"a {self.name} scan query")
        answers, garbled = await self._listen(bus, codec.read_address_request(), Control.READ_ADDRESS, timeout)
        if answers and not garbled:
            return sorted(answers)
        if not answers and not garbled:
            # Some meters do not implement 13h: one abbreviated read to AA…AA settles it.
            answers, garbled = await self._listen(bus, self._read_request(WILDCARD, SCAN_DI), self._read_function, timeout)
            if not garbled:
                return sorted(answers)
        found: set[str] = set(answers)
        await self._search(bus, "", timeout, found)
        return sorted(found)

    async def _search(self, bus: Conduit, known: str, timeout: float, found: set[str]) -> None:
        """Try every value of the next address byte above the ``known`` low bytes (written
        A(k-1)…A0, as in an address string); descend where the answers collide."""
        if len(known) == 12:
            return
        for value in range(100):  # BCD digits: 00..99
            low = f"{value:02d}{known}"
            pattern = low.rjust(12, "A")
            answers, garbled = await self._listen(bus, self._read_request(pattern, SCAN_DI), self._read_function, timeout)
            found.update(answers)
            if garbled:
                if len(low) == 12:
                    if low not in answers:
                        log.warning("scan: the answers to %s stay garbled (two meters with one address, or a noisy "
                                    "line); not reported, as no answer named it whole", low)
                else:
                    await self._search(bus, low, timeout, found)

    async def _listen(self, bus: Conduit, request: Frame, function: int, timeout: float) -> tuple[set[str], bool]:
        """Send ``request``, gather every clean reply to ``function`` for ``timeout`` seconds;
        also say whether anything garbled arrived (a collision of several answers)."""
        heard: set[str] = set()

        def accept(frame: object) -> bool:
            if isinstance(frame, Frame) and frame.is_reply and frame.function == function:
                # A clean answer names a meter that is there, even one answering an
                # earlier query late; an address with AA bytes is only this query's pattern.
                if self._address_matches(request.address, frame.address) or "AA" not in _address_bytes(frame.address):
                    heard.add(frame.address)
            return False  # keep listening: another meter may answer after this one

        decoder = StreamDecoder()
        try:
            # No late-answer guard: every answer carries the full address it is credited to.
            await bus.transact(codec.encode(request, preamble=self.preamble), decoder, timeout=timeout, accept=accept,
                               guard=False, gap=FRAME_GAP, wake_up=self.preamble)
        except MeterTimeout:
            return heard, False
        except UnexpectedReply:
            # only clean frames arrived (ours and perhaps others'); garbage would have won the error
            return heard, bool(decoder.skipped or decoder.pending)
        except FrameError:
            return heard, True
        return heard, False  # pragma: no cover - accept never takes a frame

    async def execute(self, bus: Conduit, meter: Meter, command: Command, timeout: float) -> Mapping[str, Any]:
        """Carry out ``command``; see :meth:`commands` for the names and their ``args``.

        Passwords (``password``, 6 hex digits) and operator codes (``operator``, 8) are
        written most significant first, as printed; ``level`` is the privilege level PA.
        Returns a dict describing what was done; an abnormal reply raises MeterError.
        """
        handler = self.commands().get(command.name)
        if handler is None:
            known = ", ".join(sorted(self.commands()))
            raise NotSupported(f"{self.name} has no command {command.name!r}; it knows {known}")
        result = await handler(bus, meter, dict(command.args), timeout)
        return {"command": command.name, "meter": meter.address, **result}

    #: §7.x: commands that change the meter carry a password (with its privilege level)
    #: and an operator code; the command path refuses them without both from the secret store
    _AUTHENTICATED = {name: ("password", "operator")
                      for name in ("relay", "clear_demand", "clear_meter", "clear_events", "write")}

    def command_credentials(self, name: str) -> tuple[str, ...]:
        """The credential fields command ``name`` needs (:class:`meterhub.api.CommandCredentials`)."""
        return self._AUTHENTICATED.get(name, ()) if name in self.commands() else ()

    def commands(self) -> Mapping[str, Callable[..., Any]]:
        """Command name -> ``async handler(bus, meter, args, timeout) -> dict``."""
        return {
            "time_sync": self._time_sync,
            "relay": self._relay,
            "freeze": self._freeze,
            "clear_demand": self._clear(codec.clear_demand_request),
            "clear_meter": self._clear(codec.clear_meter_request),
            "clear_events": self._clear_events,
            "change_baud": self._change_baud,
            "write": self._write,
        }

    # -- edition-specific pieces (DL/T 645-1997 overrides these) ----------------------

    _read_function = Control.READ
    _followup_function = Control.READ_FOLLOWUP

    def _read_request(self, address: str, di: int) -> Frame:
        return codec.read_request(address, di)

    def _read_request_bytes(self, address: str, di: int) -> bytes:
        """The wire bytes of ``self._read_request(address, di)``, the request sent for every
        reading: for the built-in requests straight from the address as sent (kept per
        meter), without building a Frame; a subclass's own ``_read_request`` is encoded."""
        edition = _FAST_READS.get(type(self)._read_request)
        if edition is None:
            return self._encode(self._read_request(address, di))
        return codec.encode_read_request(_wire_address(address), di, preamble=self.preamble, edition=edition)

    def _encode(self, request: Frame) -> bytes:
        return codec.encode(request, preamble=self.preamble)

    def _parse_read(self, frame: Frame) -> tuple[int, bytes]:
        return codec.parse_read_reply(frame)

    def _followup_request(self, address: str, di: int, seq: int) -> Frame:
        return codec.followup_request(address, di, seq)

    def _parse_followup(self, frame: Frame, di: int, seq: int) -> bytes:
        got, payload, got_seq = codec.parse_followup_reply(frame)
        self._check_di(frame, di, got)
        if got_seq != seq:
            raise UnexpectedReply(f"meter {frame.address} sent follow-up frame {got_seq} when {seq} was asked for")
        return payload

    def _address_matches(self, wanted: str, got: str) -> bool:
        """§1.1: an AA byte in the requested address matches any byte of the answer's."""
        return all(w in ("AA", g) for w, g in zip(_address_bytes(wanted), _address_bytes(got)))

    # -- helpers ----------------------------------------------------------------------

    def _check_di(self, frame: Frame, wanted: int, got: int) -> None:
        if got != wanted:
            raise UnexpectedReply(f"meter {frame.address} answered DI {got:X} when {wanted:X} was asked for")

    @staticmethod
    def _answers(check: Callable[[], object], frame: Frame) -> bool:
        """Whether a reply from the right meter to the right function answers *this*
        request: ``check`` parses it and raises UnexpectedReply for another DI or follow-up
        number (a late answer to an earlier request). An abnormal reply carries no DI and
        a damaged one cannot tell: both are taken, and parsing them says what they are."""
        if frame.is_abnormal:
            return True
        try:
            check()
        except UnexpectedReply:
            return False
        except (FrameError, MeterError):
            return True
        return True

    async def _transact(
        self,
        bus: Conduit,
        meter: Meter | None,
        request: bytes,
        address: str,
        function: int,
        timeout: float,
        *,
        answers: Callable[[Frame], bool] | None = None,
    ) -> Frame:
        """Send ``request`` (its wire bytes) to ``address``, return the reply to ``function``
        from the addressed meter that ``answers`` (if given) recognises as the answer to
        this very request."""

        def accept(frame: object) -> bool:
            return (
                isinstance(frame, Frame)
                and frame.is_reply
                and frame.function == function
                and self._address_matches(address, frame.address)
                and (answers is None or answers(frame))
            )

        exchange = await bus.transact(
            request,
            StreamDecoder(),
            timeout=timeout,
            accept=accept,
            settings=meter.settings if meter is not None else None,
            gap=FRAME_GAP,
            wake_up=self.preamble,
        )
        return exchange.frame

    async def _command(self, bus: Conduit, meter: Meter, request: Frame, timeout: float) -> Frame:
        reply = await self._transact(bus, meter, self._encode(request), request.address, request.function, timeout)
        codec.expect_reply(reply, request.function, edition=self.EDITION)
        return reply

    async def _read_clock(self, bus: Conduit, meter: Meter, timeout: float) -> str:
        date_item, time_item = (self.items[di] for di in CLOCK_DIS[self.EDITION])
        started = time.monotonic()
        day = decode_value(date_item, await self.read_di(bus, meter, date_item.di, timeout))
        clock = str(decode_value(time_item, await self.read_di(bus, meter, time_item.di, timeout)))
        hh, mm, ss = (int(f) for f in clock.split(":"))
        if hh * 3600 + mm * 60 + ss <= time.monotonic() - started + 1:
            # Midnight may have passed between the two reads: the date read first would be
            # yesterday's, so read it again.
            day = decode_value(date_item, await self.read_di(bus, meter, date_item.di, timeout))
        return clock_iso(str(day), clock)

    def _auth_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "password": _hex_field(args.get("password", "000000"), 3, "password"),
            "level": int(args.get("level", 2)),
            "operator": _hex_field(args.get("operator", "00000000"), 4, "operator code"),
        }

    async def _time_sync(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Broadcast time (08h, no reply): ``time`` (default: now, local), ``broadcast`` (default true)."""
        when = _datetime_arg(args.get("time")) or datetime.now()
        address = BROADCAST if args.get("broadcast", True) else self.normalize_address(meter.address)
        await bus.send(codec.encode(codec.broadcast_time(when, address=address), preamble=self.preamble),
                       settings=meter.settings, gap=FRAME_GAP, wake_up=self.preamble)
        return {"address": address, "time": when.isoformat(timespec="seconds"), "reply": False}

    async def _relay(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Relay control (1Ch): ``action`` (trip, close_permitted, close, alarm, ...), ``valid_until``."""
        action = _relay_action(args.get("action", "trip"))
        valid_until = _datetime_arg(args.get("valid_until"))
        request = codec.relay_request(self.normalize_address(meter.address), action, valid_until=valid_until, **self._auth_args(args))
        await self._command(bus, meter, request, timeout)
        return {"action": action.name.lower(), "valid_until": valid_until.isoformat() if valid_until else None, "ok": True}

    async def _freeze(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Freeze (16h): ``minute``, ``hour``, ``day``, ``month`` (absent = every; none = now)."""
        fields = {k: (None if args.get(k) is None else int(args[k])) for k in ("minute", "hour", "day", "month")}
        request = codec.freeze_request(self.normalize_address(meter.address), **fields)
        await self._command(bus, meter, request, timeout)
        return {**fields, "ok": True}

    def _clear(self, build: Callable[..., Frame]) -> Callable[..., Any]:
        async def clear(bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
            await self._command(bus, meter, build(self.normalize_address(meter.address), **self._auth_args(args)), timeout)
            return {"ok": True}

        return clear

    async def _clear_events(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Event clear (1Bh): ``di`` of the event record (default FFFFFFFF: all events)."""
        di = _di_arg(args.get("di", 0xFFFFFFFF))
        request = codec.clear_events_request(self.normalize_address(meter.address), di, **self._auth_args(args))
        await self._command(bus, meter, request, timeout)
        return {"di": f"{di:08X}", "ok": True}

    async def _change_baud(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Change baud rate (17h): ``baudrate``. Afterwards the meter talks only at the new rate."""
        if "baudrate" not in args:
            raise ValueError("change_baud needs a 'baudrate' argument")
        baudrate = int(args["baudrate"])
        await self._command(bus, meter, codec.change_baud_request(self.normalize_address(meter.address), baudrate), timeout)
        return {"baudrate": baudrate, "ok": True}

    def _write_value(self, args: Mapping[str, Any], di: int) -> bytes:
        if "raw" in args:
            raw = args["raw"]
            return bytes(raw) if isinstance(raw, (bytes, bytearray)) else bytes.fromhex(str(raw))
        if "value" not in args:
            raise ValueError("write needs 'value' (encoded with the DI's format) or 'raw' (payload bytes as hex)")
        item = self.items.get(di)
        if item is None:
            raise NotSupported(f"{self.name} does not know the format of DI {di:X}; give the payload as 'raw'")
        return encode_value(item, args["value"])

    async def _write(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Write data (14h): ``di`` and ``value`` (or ``raw`` hex payload), with credentials."""
        if "di" not in args:
            raise ValueError("write needs a 'di' argument (hex, e.g. '04000101')")
        di = _di_arg(args["di"])
        request = codec.write_request(self.normalize_address(meter.address), di, self._write_value(args, di), **self._auth_args(args))
        await self._command(bus, meter, request, timeout)
        return {"di": f"{di:08X}", "ok": True}


class Dlt645_1997Driver(Dlt645Driver):
    """DL/T 645-1997 meters (``protocol: dlt645-1997``), 1200 8E1 by default.

    Same frame, different function codes and 2-byte DIs (§1.7). Some 1997 meters answer
    with the wildcard address AA…AA instead of their own; such replies are accepted.
    """

    EDITION = 1997
    NAME = "dlt645-1997"
    DESCRIPTION = "DL/T 645-1997 electricity meters"
    DEFAULT_SETTINGS = SerialSettings(1200, 8, "E", 1)  # §1.6: the usual 1997 format
    BASE_ITEMS = ITEMS_1997

    _read_function = Control1997.READ
    _followup_function = Control1997.READ_FOLLOWUP

    def _read_request(self, address: str, di: int) -> Frame:
        return codec.read_request_1997(address, di)

    def _parse_read(self, frame: Frame) -> tuple[int, bytes]:
        return codec.parse_read_reply_1997(frame)

    def _followup_request(self, address: str, di: int, seq: int) -> Frame:
        return codec.followup_request_1997(address, di)

    def _parse_followup(self, frame: Frame, di: int, seq: int) -> bytes:
        got, payload = codec.parse_followup_reply_1997(frame)
        self._check_di(frame, di, got)
        return payload

    def _address_matches(self, wanted: str, got: str) -> bool:
        return got == WILDCARD or super()._address_matches(wanted, got)

    async def scan(self, bus: Conduit, timeout: float) -> list[str]:
        """1997 has no read-address function: read 9010 with the wildcard address instead.

        A meter that answers with AA…AA itself cannot tell its address; [WILDCARD] is then
        returned, which still reaches it on a point-to-point line.
        """
        timeout = at_least(timeout, self.scan_minimum(bus.settings), f"a {self.name} scan query")
        try:
            frame = await self._transact(bus, None, self._encode(codec.read_request_1997(WILDCARD, 0x9010)), WILDCARD,
                                         self._read_function, timeout)
        except MeterTimeout:
            return []
        except FrameError as exc:
            raise type(exc)(f"{exc} (a wildcard scan works only with one meter on the line)") from exc
        return [frame.address]

    #: DL/T 645-1997 defines no daily freeze records (05 06 xx NN are 2007 identifiers)
    frozen_depth = 0

    async def read_frozen(self, bus: Conduit, meter: Meter, back: int, timeout: float) -> list[Measurement]:
        """NotSupported: a DL/T 645-1997 meter keeps no daily freeze records to read."""
        raise NotSupported(f"{self.name} meters keep no daily freeze records (DL/T 645-1997 has no 05 06 xx NN)")

    #: DL/T 645-1997 §7.4: a write carries a password and its level, no operator code
    _AUTHENTICATED = {"write": ("password",)}

    def commands(self) -> Mapping[str, Callable[..., Any]]:
        """1997 meters: ``time_sync`` and ``write`` (no relay, freeze or clear functions here)."""
        return {"time_sync": self._time_sync, "write": self._write}

    async def _write(self, bus: Conduit, meter: Meter, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """1997 write (04h): ``di`` and ``value``/``raw``, ``password`` and ``level`` (no operator code)."""
        if "di" not in args:
            raise ValueError("write needs a 'di' argument (hex, e.g. 'C010')")
        di = _di_arg(args["di"])
        auth = self._auth_args(args)
        request = codec.write_request_1997(
            self.normalize_address(meter.address), di, self._write_value(args, di), password=auth["password"], level=auth["level"]
        )
        await self._command(bus, meter, request, timeout)
        return {"di": f"{di:04X}", "ok": True}


#: The built-in read requests that :func:`~meterhub.protocols.dlt645.encode_read_request`
#: makes without a Frame, and the edition it is told.
_FAST_READS: dict[Callable[..., Frame], int] = {
    Dlt645Driver._read_request: 2007,
    Dlt645_1997Driver._read_request: 1997,
}
