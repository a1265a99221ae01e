"""The DL/T 645 drivers through the real Bus, against a loopback meter built on the codec."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import pytest

from meterhub.api import Link, MeterDriver
from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import ChecksumError, MeterError, MeterTimeout, NotSupported, UnexpectedReply
from meterhub.model import Command, Measurement, Meter, SerialSettings
from meterhub.plugins import Plugins
from meterhub.protocols import dlt645
from meterhub.protocols.dlt645 import Control, Control1997, Frame, RelayAction, StreamDecoder
from meterhub.protocols.dlt645_data import ITEMS, DataItem, encode_value
from meterhub.protocols.dlt645_driver import MAX_RESPONSE_DELAY, Dlt645_1997Driver, Dlt645Driver
from meterhub.quantities import VOCABULARY, resolve
from meterhub.timing import answer_deadline

ADDRESS = "000000000161"
SETTINGS = SerialSettings(9600, 8, "E", 1)
SILENCE = 0.05  # seconds a test waits for a meter that never answers


class LoopbackMeter:
    """A DL/T 645-2007 meter made of the codec: a function from request frame to reply bytes."""

    def __init__(self, address: str = ADDRESS, registers: dict[int, bytes] | None = None) -> None:
        self.address = address
        self.registers = dict(registers or {})
        self.requests: list[Frame] = []
        self.chunk: int | None = None  # split payloads into follow-up frames of this many bytes
        self.password = b"\x00\x00\x00"
        self.reply_address = address
        self.wrap: Callable[[bytes], bytes] = lambda wire: wire  # noise, corruption, ...

    def __call__(self, request: Frame) -> bytes:
        self.requests.append(request)
        if request.address not in (self.address, dlt645.WILDCARD):
            return b""
        reply = self.answer(request)
        return b"" if reply is None else self.wrap(dlt645.encode(reply, preamble=2))

    def answer(self, request: Frame) -> Frame | None:
        address = self.reply_address
        if request.function == Control.READ:
            di = dlt645.parse_read_request(request)
            if di not in self.registers:
                return dlt645.abnormal_reply(address, Control.READ, 0x02)
            payload = self.registers[di]
            if self.chunk is None or len(payload) <= self.chunk:
                return dlt645.read_reply(address, di, payload)
            return dlt645.read_reply(address, di, payload[: self.chunk], followup=True)
        if request.function == Control.READ_FOLLOWUP:
            di, seq = dlt645.parse_followup_request(request)
            rest = self.registers[di][self.chunk * seq :]  # frame 0 went with the B1 reply
            return dlt645.followup_reply(address, di, rest[: self.chunk], seq, more=len(rest) > self.chunk)
        if request.function == Control.READ_ADDRESS:
            return dlt645.read_address_reply(address)
        if request.function in (Control.RELAY, Control.WRITE):
            fields = request.data if request.function == Control.RELAY else request.data[4:]
            if fields[1:4] != self.password:
                return dlt645.abnormal_reply(address, request.function, 0x04)
            return dlt645.normal_reply(address, request.function)
        return None  # broadcast time and anything else: no reply


class LoopbackLink:
    """A :class:`meterhub.api.Link` whose peer answers each complete request frame at once."""

    def __init__(self, meter: Callable[[Frame], bytes], settings: SerialSettings = SETTINGS) -> None:
        self.name = "loopback"
        self.settings = settings
        self.meter = meter
        self.written: list[bytes] = []
        self._rx = bytearray()
        self._decoder = StreamDecoder()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        for item in self._decoder.feed(data):
            if isinstance(item, Frame):
                self._rx += self.meter(item)

    async def read(self, timeout: float) -> bytes:
        if not self._rx:
            await asyncio.sleep(timeout)
            return b""
        data = bytes(self._rx)
        self._rx.clear()
        return data

    async def reset_input(self) -> None:
        self._rx.clear()

    async def apply_settings(self, settings: SerialSettings) -> None:
        self.settings = settings


def _meter(address: str = ADDRESS, protocol: str = "dlt645", **kw) -> Meter:
    return Meter(address=address, protocol=protocol, channel="bus1", **kw)


def _read(driver, peer, quantity: str, *, timeout: float = 1.0, meter: Meter | None = None):
    link = LoopbackLink(peer)
    return asyncio.run(driver.read(HalfDuplexChannel("bus1", link), meter or _meter(), resolve(quantity), timeout))


def _energy_meter(value: str = "1234.56") -> LoopbackMeter:
    return LoopbackMeter(registers={0x00010000: encode_value(ITEMS[0x00010000], Decimal(value))})


# --- reading --------------------------------------------------------------------------------


def test_read_returns_an_exact_decimal_with_its_unit():
    assert _read(Dlt645Driver(), _energy_meter("1234.56"), "energy_import") == Measurement(Decimal("1234.56"), "kWh")


def test_read_sends_one_read_request_with_wake_up_bytes():
    link = LoopbackLink(_energy_meter())
    asyncio.run(Dlt645Driver().read(HalfDuplexChannel("bus1", link), _meter(), resolve("1-0:1.8.0"), 1.0))
    assert link.written == [dlt645.encode(dlt645.read_request(ADDRESS, 0x00010000), preamble=4)]


def test_read_of_a_signed_quantity():
    peer = LoopbackMeter(registers={0x02030000: encode_value(ITEMS[0x02030000], Decimal("-1.2345"))})
    assert _read(Dlt645Driver(), peer, "power_import").value == Decimal("-1.2345")


def test_read_follows_follow_up_frames():
    item = DataItem(0x04A00001, "vendor energy", "XXXXXX.XX", "kWh", obis="1-0:1.8.0")
    driver = Dlt645Driver(name="acme-dlt645", extra_items=[item])
    peer = LoopbackMeter(registers={item.di: encode_value(item, Decimal("8765.43"))})
    peer.chunk = 1  # four frames: B1, B2, B2, 92
    assert _read(driver, peer, "1-0:1.8.0").value == Decimal("8765.43")
    followups = [f for f in peer.requests if f.function == Control.READ_FOLLOWUP]
    assert [dlt645.parse_followup_request(f) for f in followups] == [(item.di, 1), (item.di, 2), (item.di, 3)]


def test_abnormal_reply_raises_meter_error_with_the_error_word():
    with pytest.raises(MeterError) as info:
        _read(Dlt645Driver(), LoopbackMeter(), "energy_import")
    assert info.value.code == 0x02
    assert info.value.reason == "no requested data"


def test_silence_raises_meter_timeout():
    with pytest.raises(MeterTimeout):
        _read(Dlt645Driver(), LoopbackMeter(address="000000000999"), "energy_import", timeout=SILENCE)


def test_ff_value_raises_not_supported():
    peer = LoopbackMeter(registers={0x02010200: b"\xff\xff"})  # phase B of a single-phase meter
    with pytest.raises(NotSupported, match=r"not supported \(FF\)"):
        _read(Dlt645Driver(), peer, "voltage_l2")


def test_quantity_without_a_di_is_not_supported_and_sends_nothing():
    link = LoopbackLink(_energy_meter())
    with pytest.raises(NotSupported, match="8-0:1.0.0"):
        asyncio.run(Dlt645Driver().read(HalfDuplexChannel("bus1", link), _meter(), resolve("water_volume"), 1.0))
    assert link.written == []


def test_reply_from_another_meter_is_not_taken():
    peer = _energy_meter()
    peer.reply_address = "000000000162"
    with pytest.raises(UnexpectedReply):
        _read(Dlt645Driver(), peer, "energy_import", timeout=SILENCE)


def test_an_answer_for_another_di_is_passed_over_for_the_right_one_behind_it():
    # A late answer to an earlier read (energy) arrives just before the answer to this one
    # (voltage): it is not this request's answer, and the right one is taken.
    peer = LoopbackMeter(registers={
        0x00010000: encode_value(ITEMS[0x00010000], Decimal("1234.56")),
        0x02010100: encode_value(ITEMS[0x02010100], Decimal("229.8")),
    })
    stale = dlt645.encode(dlt645.read_reply(ADDRESS, 0x00010000, peer.registers[0x00010000]), preamble=2)
    peer.wrap = lambda wire: stale + wire
    assert _read(Dlt645Driver(), peer, "voltage_l1") == Measurement(Decimal("229.8"), "V")


def test_an_answer_for_another_di_alone_is_no_answer():
    peer = LoopbackMeter(registers={0x00010000: encode_value(ITEMS[0x00010000], Decimal("1234.56"))})
    peer.answer = lambda request: dlt645.read_reply(ADDRESS, 0x00010000, peer.registers[0x00010000])
    with pytest.raises(UnexpectedReply, match="unexpected reply"):
        _read(Dlt645Driver(), peer, "voltage_l1", timeout=SILENCE)


def test_a_follow_up_frame_with_the_wrong_number_is_passed_over():
    item = DataItem(0x04A00001, "vendor energy", "XXXXXX.XX", "kWh", obis="1-0:1.8.0")
    driver = Dlt645Driver(name="acme-dlt645", extra_items=[item])
    peer = LoopbackMeter(registers={item.di: encode_value(item, Decimal("8765.43"))})
    peer.chunk = 2  # B1 with two bytes, then follow-up 1 (92h) with the last two
    # a stale follow-up frame (number 7, from some earlier read) comes first
    repeat = dlt645.encode(dlt645.followup_reply(ADDRESS, item.di, b"\x00\x00", 7, more=False), preamble=2)
    peer.wrap = lambda wire: (repeat + wire) if dlt645.decode(wire[2:]).function == Control.READ_FOLLOWUP else wire
    assert _read(driver, peer, "1-0:1.8.0").value == Decimal("8765.43")


def test_noise_around_the_reply_is_skipped():
    peer = _energy_meter("0.26")
    peer.wrap = lambda wire: b"\x00\x68\x12" + wire + b"\x68\x55"
    assert _read(Dlt645Driver(), peer, "energy_import").value == Decimal("0.26")


def test_bad_checksum_reply_raises_checksum_error():
    peer = _energy_meter()
    peer.wrap = lambda wire: wire[:-2] + bytes(((wire[-2] + 1) & 0xFF,)) + wire[-1:]
    with pytest.raises(ChecksumError):
        _read(Dlt645Driver(), peer, "energy_import", timeout=SILENCE)


def test_clock_combines_date_and_time():
    peer = LoopbackMeter(registers={
        0x04000101: encode_value(ITEMS[0x04000101], "2016-01-11"),
        0x04000102: encode_value(ITEMS[0x04000102], "21:53:55"),
    })
    assert _read(Dlt645Driver(), peer, "clock") == Measurement("2016-01-11T21:53:55", "")


def test_clock_just_after_midnight_reads_the_date_again():
    peer = LoopbackMeter(registers={
        0x04000101: encode_value(ITEMS[0x04000101], "2016-01-12"),
        0x04000102: encode_value(ITEMS[0x04000102], "00:00:00"),
    })
    assert _read(Dlt645Driver(), peer, "clock").value == "2016-01-12T00:00:00"
    dates = [f for f in peer.requests if dlt645.parse_read_request(f) == 0x04000101]
    assert len(dates) == 2


def test_per_meter_settings_are_applied_to_the_link():
    link = LoopbackLink(_energy_meter())
    meter = _meter(settings=SerialSettings(1200, 8, "E", 1))
    asyncio.run(Dlt645Driver().read(HalfDuplexChannel("bus1", link), meter, resolve("energy_import"), 1.0))
    assert link.settings == SerialSettings(1200, 8, "E", 1)


# --- scan -------------------------------------------------------------------------------------


def test_scan_returns_the_address_of_the_one_meter():
    link = LoopbackLink(LoopbackMeter(address="201000000012"))
    assert asyncio.run(Dlt645Driver().scan(HalfDuplexChannel("bus1", link), 1.0)) == ["201000000012"]
    assert dlt645.decode(link.written[0]) == dlt645.read_address_request()


def test_a_garbled_answer_to_the_wildcard_starts_a_search_by_abbreviated_address():
    peer = LoopbackMeter()
    peer.wrap = lambda wire: wire[:-2] + bytes(((wire[-2] + 1) & 0xFF,)) + wire[-1:]  # every answer garbled
    link = LoopbackLink(peer)
    asyncio.run(Dlt645Driver().scan(HalfDuplexChannel("bus1", link), 0.02))
    sent = [dlt645.decode(raw) for raw in link.written]
    assert sent[0] == dlt645.read_address_request()
    # §4.1.2: the low byte A0 given, the high bytes AAh; each BCD value once
    assert [f.address for f in sent[1:]] == [f"AAAAAAAAAA{v:02d}" for v in range(100)]
    assert {dlt645.parse_read_request(f) for f in sent[1:]} == {0x00010000}


def test_scan_of_a_silent_line_is_empty():
    link = LoopbackLink(lambda frame: b"")
    assert asyncio.run(Dlt645Driver().scan(HalfDuplexChannel("bus1", link), SILENCE)) == []


# --- commands ---------------------------------------------------------------------------------


def _execute(driver, peer, name: str, **args):
    link = LoopbackLink(peer)
    result = asyncio.run(driver.execute(HalfDuplexChannel("bus1", link), _meter(), Command(ADDRESS, "dlt645", name, args), 1.0))
    return result, link


def test_relay_trip_sends_the_relay_frame_and_reports_success():
    result, link = _execute(Dlt645Driver(), LoopbackMeter(), "relay", action="trip", valid_until="2099-12-30T00:00:00")
    assert result == {"command": "relay", "meter": ADDRESS, "action": "trip", "valid_until": "2099-12-30T00:00:00", "ok": True}
    sent = dlt645.parse_relay_request(dlt645.decode(link.written[0]))
    assert (sent.action, sent.valid_until) == (RelayAction.TRIP, datetime(2099, 12, 30))


def test_relay_password_is_written_most_significant_first():
    peer = LoopbackMeter()
    peer.password = bytes.fromhex("563412")  # "123456" on the nameplate of the password sheet
    result, _ = _execute(Dlt645Driver(), peer, "relay", action="close", password="123456")
    assert result["ok"] is True


def test_relay_with_a_wrong_password_raises_meter_error():
    peer = LoopbackMeter()
    peer.password = b"\x01\x02\x03"
    with pytest.raises(MeterError) as info:
        _execute(Dlt645Driver(), peer, "relay", action="trip")
    assert info.value.code == 0x04


def test_time_sync_is_broadcast_without_waiting_for_a_reply():
    when = datetime(2017, 6, 5, 10, 22, 51)
    result, link = _execute(Dlt645Driver(), LoopbackMeter(), "time_sync", time=when)
    assert dlt645.decode(link.written[0]) == dlt645.broadcast_time(when)
    assert result["address"] == dlt645.BROADCAST


def test_write_encodes_the_value_with_the_di_format():
    result, link = _execute(Dlt645Driver(), LoopbackMeter(), "write", di="04000102", value="15:08:55")
    assert result["ok"] is True
    sent = dlt645.parse_write_request(dlt645.decode(link.written[0]))
    assert (sent.di, sent.value) == (0x04000102, bytes.fromhex("55 08 15"))


def test_unknown_command_is_not_supported():
    with pytest.raises(NotSupported, match="no command 'launch'"):
        _execute(Dlt645Driver(), LoopbackMeter(), "launch")


def test_unknown_relay_action_names_the_known_ones():
    with pytest.raises(ValueError, match="trip"):
        _execute(Dlt645Driver(), LoopbackMeter(), "relay", action="explode")


# --- addresses, timing, registration -------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [("000000000161", "000000000161"), ("161", "000000000161"), (161, "000000000161"), (" 201000000012 ", "201000000012"),
     ("AAAAAAAAAAAA", "AAAAAAAAAAAA"), ("aaaaaaaa0161", "AAAAAAAA0161")],
)
def test_normalize_address(given, expected):
    assert Dlt645Driver().normalize_address(given) == expected


@pytest.mark.parametrize(
    "given, message",
    [("", "empty"), ("1234567890123", "at most 12 digits"), ("00000000016X", "decimal digits"),
     ("0000000A0161", "decimal digits"), ("999999999999", "broadcast")],
)
def test_normalize_address_refuses_with_a_reason(given, message):
    with pytest.raises(ValueError, match=message):
        Dlt645Driver().normalize_address(given)


def test_transaction_timeout_allows_the_500_ms_response_delay():
    timeout = Dlt645Driver().transaction_timeout(SerialSettings(2400, 8, "E", 1))
    assert MAX_RESPONSE_DELAY == 0.5
    # by then the answer must have begun (wake-up bytes and 68h); once begun it is heard to its end
    assert timeout == answer_deadline(
        SerialSettings(2400, 8, "E", 1), request_len=4 + 12 + 4, max_response_delay=0.5, header_len=4 + 1
    )


def test_slower_lines_get_longer_timeouts():
    driver = Dlt645Driver()
    assert driver.transaction_timeout(SerialSettings(1200)) > driver.transaction_timeout(SerialSettings(9600))


def test_every_supported_quantity_is_in_the_vocabulary():
    for driver in (Dlt645Driver(), Dlt645_1997Driver()):
        assert all(q in VOCABULARY for q in driver.supported_quantities())


def test_both_drivers_are_registered_by_the_built_in_plugin():
    drivers = Plugins(load_entry_points=False).meter_drivers()
    assert isinstance(drivers["dlt645"], Dlt645Driver)
    assert isinstance(drivers["dlt645-1997"], Dlt645_1997Driver)
    assert all(isinstance(d, MeterDriver) for d in drivers.values())
    assert drivers["dlt645"].default_settings == SerialSettings(2400, 8, "E", 1)
    assert drivers["dlt645-1997"].default_settings == SerialSettings(1200, 8, "E", 1)


def test_loopback_link_satisfies_the_link_protocol():
    assert isinstance(LoopbackLink(LoopbackMeter()), Link)


def test_vendor_variant_adds_a_quantity_from_a_profile_mapping():
    driver = Dlt645Driver(name="acme-dlt645", extra_items={"1-0:3.8.0": {"di": "04A00001", "fmt": "XXXXXX.XX", "unit": "kvarh"}})
    assert driver.name == "acme-dlt645"
    assert "1-0:3.8.0" in driver.supported_quantities()
    peer = LoopbackMeter(registers={0x04A00001: bytes.fromhex("56 34 12 00")})
    assert _read(driver, peer, "reactive_energy_import") == Measurement(Decimal("1234.56"), "kvarh")


def test_vendor_item_overrides_the_standard_di_for_its_quantity():
    driver = Dlt645Driver(extra_items={"1-0:1.8.0": {"di": "00010100", "fmt": "XXXXXX.XX", "unit": "kWh"}})
    assert driver.item_for("1-0:1.8.0").di == 0x00010100


# --- DL/T 645-1997 ---------------------------------------------------------------------------------


class Loopback1997Meter:
    """A 1997 meter that, like some real ones, answers with the wildcard address."""

    def __init__(self, registers: dict[int, bytes]) -> None:
        self.registers = registers
        self.requests: list[Frame] = []

    def __call__(self, request: Frame) -> bytes:
        self.requests.append(request)
        di = dlt645.parse_read_request_1997(request)
        return dlt645.encode(dlt645.read_reply_1997(dlt645.WILDCARD, di, self.registers[di]))


def test_1997_read_uses_two_byte_dis_and_1997_codes():
    peer = Loopback1997Meter({0x9010: bytes.fromhex("79 26 14 00")})
    value = _read(Dlt645_1997Driver(), peer, "energy_import", meter=_meter(protocol="dlt645-1997"))
    assert value == Measurement(Decimal("1426.79"), "kWh")
    assert peer.requests == [dlt645.read_request_1997(ADDRESS, 0x9010)]
    assert peer.requests[0].control == Control1997.READ


def test_1997_voltage_is_integer_volts():
    peer = Loopback1997Meter({0xB611: bytes.fromhex("23 02")})
    assert _read(Dlt645_1997Driver(), peer, "voltage_l1").value == Decimal("223")


def test_1997_scan_reads_9010_with_the_wildcard_address():
    peer = Loopback1997Meter({0x9010: bytes.fromhex("79 26 14 00")})
    assert asyncio.run(Dlt645_1997Driver().scan(HalfDuplexChannel("bus1", LoopbackLink(peer)), 1.0)) == [dlt645.WILDCARD]
    assert peer.requests == [dlt645.read_request_1997(dlt645.WILDCARD, 0x9010)]


def test_1997_has_no_relay_command():
    with pytest.raises(NotSupported):
        _execute(Dlt645_1997Driver(), LoopbackMeter(), "relay", action="trip")
