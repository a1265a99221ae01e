"""The Q/GDW 1376.1 codec: each field of the frame, the data unit identifiers, the
auxiliary fields, the appendix A formats, the data units; and its properties (round
trips, no crash on any bytes, stream resynchronisation)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from ipaddress import IPv4Address

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from meterhub.errors import ChecksumError, FrameError, TruncatedFrame
from meterhub.protocols import gdw1376_1 as gdw
from meterhub.protocols import gdw1376_1_data as data
from meterhub.protocols.gdw1376_1 import (
    PROTOCOL_2005,
    PW_SIZE,
    Afn,
    DataUnit,
    Direction,
    EventCounters,
    Frame,
    PartialTime,
    StreamDecoder,
    TimeTag,
    da_to_pn,
    dt_to_fn,
    fn_to_dt,
    pn_to_da,
)
from meterhub.protocols.gdw1376_1_data import (
    A5,
    A7,
    A9,
    A11,
    A12,
    A13,
    A14,
    A15,
    A16,
    A17,
    A18,
    A19,
    A20,
    A21,
    A25,
    ArchiveQuery,
    Clock,
    ClockSet,
    DailyEnergy,
    DayTag,
    EventReply,
    EventRequest,
    Forward,
    ForwardReply,
    Heartbeat,
    InitEvent,
    Item,
    KeepPower,
    MasterStation,
    MeterArchive,
    MeterRecord,
    MonthlyEnergy,
    MonthTag,
    ParameterChange,
    PointFlag,
    PowerEvent,
    RawEvent,
    ReadFailure,
    RemoteTrip,
    SerialSettings,
    TariffEnergy,
    TerminalFault,
    TerminalFaultCode,
    UnitResult,
    UnitResults,
    UplinkParams,
    VersionInfo,
)

PROPERTY = settings(max_examples=200, deadline=None)
DOWN, UP = Direction.DOWN, Direction.UP


def _frame(**fields) -> Frame:
    """A login-shaped frame with ``fields`` changed."""
    base = {"direction": UP, "prm": True, "function": 9, "area": "0200", "terminal": 0x1234, "afn": Afn.LINK, "payload": bytes.fromhex("00000100")}
    return Frame(**{**base, **fields})


LOGIN_WIRE = bytes.fromhex("68 32 00 32 00 68 C9 00 02 34 12 00 02 70 00 00 01 00 84 16")


# --- the frame fields ----------------------------------------------------------------------


def test_a_login_frame_is_encoded_field_by_field():
    assert gdw.encode(_frame(con=True)) == LOGIN_WIRE


def test_l_holds_the_user_data_length_and_the_protocol_id_twice():
    wire = gdw.encode(_frame())
    assert wire[1:3] == wire[3:5] == (12 << 2 | 2).to_bytes(2, "little")
    assert gdw.encode(_frame(protocol=PROTOCOL_2005))[1:3] == (12 << 2 | 1).to_bytes(2, "little")


@pytest.mark.parametrize(
    "fields, control",
    [
        ({"direction": DOWN, "prm": False, "function": 11}, 0x0B),
        ({"direction": DOWN, "prm": True, "function": 11, "fcb": True, "fcv": True}, 0x7B),
        ({"direction": UP, "prm": True, "function": 4}, 0xC4),
        ({"direction": UP, "prm": False, "function": 8, "ec": EventCounters(1, 2)}, 0xA8),
        ({"direction": UP, "prm": False, "function": 8, "fcv": True}, 0x98),
    ],
)
def test_control_field_bits(fields, control):
    frame = _frame(**fields)
    assert frame.control == control
    assert gdw.encode(frame)[6] == control


def test_address_field_a1_low_byte_first_a2_binary_a3_master_and_group():
    wire = gdw.encode(_frame(area="5801", terminal=0x2811, master=1, group=False))
    assert wire[7:12] == bytes.fromhex("01 58 11 28 02")
    assert gdw.encode(_frame(terminal=0xFFFF, master=16, group=True))[9:12] == bytes.fromhex("FF FF 21")


@pytest.mark.parametrize(
    "fields, seq",
    [
        ({"seq": 1, "con": True}, 0x71),
        ({"seq": 1}, 0x61),
        ({"seq": 2, "fir": False}, 0x22),
        ({"seq": 15, "fir": False, "fin": False}, 0x0F),
        ({"seq": 0, "con": True, "tp": TimeTag(0, PartialTime(day=7, hour=13, minute=53, second=28), 5)}, 0xF0),
    ],
)
def test_seq_field_bits(fields, seq):
    frame = _frame(**fields)
    assert frame.seq_byte == seq
    assert gdw.encode(frame)[13] == seq


@pytest.mark.parametrize(
    "fields",
    [
        {"terminal": 0},  # A2 = 0 is invalid
        {"master": 128},
        {"seq": 16},
        {"function": 16},
        {"area": "02000"},
        {"area": "GG00"},
        {"payload": b"\x00\x00\x01"},  # less than one DA DT
        {"fcb": True},  # uplink D5 is ACD, given by ec
        {"direction": DOWN, "ec": EventCounters(0, 0)},  # EC only uplink
        {"direction": DOWN, "afn": Afn.CONTROL},  # a control frame without its PW
        {"direction": DOWN, "afn": Afn.CONTROL, "pw": bytes(2)},  # 2013 PW is 16 bytes
        {"pw": bytes(16)},  # no PW in a login
        {"protocol": 3},
        {"payload": bytes(0x3FFF)},  # more user data than L can say
    ],
)
def test_a_frame_the_standard_does_not_allow_is_a_value_error(fields):
    with pytest.raises(ValueError):
        _frame(**fields)


def test_pw_follows_the_data_units_and_tp_follows_pw():
    tp = TimeTag(1, PartialTime(day=4, hour=17, minute=12, second=23), 5)
    frame = _frame(direction=DOWN, prm=True, function=10, afn=Afn.CONTROL, payload=bytes.fromhex("01010200"), pw=bytes(range(16)), tp=tp)
    wire = gdw.encode(frame)
    assert wire[18:34] == bytes(range(16))
    assert wire[34:40] == bytes.fromhex("01 23 12 17 04 05")
    assert gdw.decode(wire) == frame


def test_ec_is_sent_only_with_acd_and_before_tp():
    tp = TimeTag(0, PartialTime(day=7, hour=13, minute=52, second=27), 5)
    with_ec = gdw.encode(_frame(prm=False, function=0, afn=0, ec=EventCounters(0x11, 0), tp=tp))
    assert with_ec[6] & gdw.FCB_ACD and with_ec[18:26] == bytes.fromhex("11 00 00 27 52 13 07 05")
    without = gdw.encode(_frame(prm=False, function=0, afn=0, tp=tp))
    assert not without[6] & gdw.FCB_ACD and len(without) == len(with_ec) - 2


def test_uplink_afn_10_carries_no_pw():
    frame = _frame(prm=False, function=8, afn=Afn.FORWARD, payload=bytes.fromhex("00000100 1F 0000"))
    assert frame.pw is None and gdw.decode(gdw.encode(frame)) == frame


def test_the_2005_edition_pw_is_two_bytes():
    frame = _frame(direction=DOWN, function=10, afn=Afn.SET, payload=bytes(4) + b"\x01\x00", pw=b"\x12\x34", protocol=PROTOCOL_2005)
    wire = gdw.encode(frame)
    assert wire[-4:-2] == b"\x12\x34" and gdw.decode(wire) == frame


def test_preamble_bytes_are_sent_before_and_skipped_on_decode():
    wire = gdw.encode(_frame(), preamble=4)
    assert wire[:5] == b"\xfe\xfe\xfe\xfe\x68"
    assert gdw.decode(wire) == _frame()


# --- decoding what is not a frame ------------------------------------------------------------


def _corrupt(at: int, value: int) -> bytes:
    wire = bytearray(LOGIN_WIRE)
    wire[at] = value
    return bytes(wire)


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"", TruncatedFrame),
        (b"\xfe\xfe", TruncatedFrame),
        (LOGIN_WIRE[:5], TruncatedFrame),
        (LOGIN_WIRE[:-1], TruncatedFrame),
        (_corrupt(0, 0x69), FrameError),
        (_corrupt(3, 0x33), FrameError),  # the two L differ
        (_corrupt(5, 0x69), FrameError),  # no second 68
        (bytes.fromhex("68 33 00 33 00 68") + LOGIN_WIRE[6:], FrameError),  # protocol id 3
        (bytes.fromhex("68 2E 00 2E 00 68") + LOGIN_WIRE[6:-3] + b"\x84\x16", FrameError),  # 11 bytes: no DA DT
        (LOGIN_WIRE + b"\x00", FrameError),
        (_corrupt(-1, 0x17), FrameError),
        (_corrupt(-2, 0x85), ChecksumError),
    ],
)
def test_decode_rejects(wire, error):
    with pytest.raises(error):
        gdw.decode(wire)


def _with_checksum(user: bytes) -> bytes:
    length = (len(user) << 2 | 2).to_bytes(2, "little")
    return b"\x68" + length + length + b"\x68" + user + bytes((sum(user) & 0xFF, 0x16))


def test_a_terminal_address_of_zero_is_a_frame_error():
    with pytest.raises(FrameError, match="terminal"):
        gdw.decode(_with_checksum(bytes.fromhex("C9 00 02 00 00 00 02 70 00 00 01 00")))


def test_a_tp_that_is_not_bcd_is_a_frame_error():
    user = bytes.fromhex("4B 00 02 34 12 02 0C E0 00 00 02 00 00 EE 00 00 00 00")
    with pytest.raises(FrameError):
        gdw.decode(_with_checksum(user))


def test_user_data_too_short_for_its_pw_is_a_frame_error():
    user = bytes.fromhex("4A 00 02 34 12 02 05 60 01 01 02 00") + bytes(8)  # AFN 05 needs 16 bytes of PW
    with pytest.raises(FrameError, match="too short"):
        gdw.decode(_with_checksum(user))


# --- DA and DT ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "points, da",
    [
        ([0], "00 00"),
        ([1], "01 01"),
        ([8], "80 01"),
        ([9], "01 02"),
        ([2, 3], "06 01"),
        (range(1, 9), "FF 01"),
        ([2040], "80 FF"),
        (None, "FF 00"),  # every valid point
    ],
)
def test_pn_to_da_and_back(points, da):
    assert pn_to_da(points) == bytes.fromhex(da)
    assert da_to_pn(bytes.fromhex(da)) == (None if points is None else tuple(points))


@pytest.mark.parametrize("points", [[], [8, 9], [0, 1], [2041], [-1]])
def test_pn_to_da_rejects_points_outside_one_group(points):
    with pytest.raises(ValueError):
        pn_to_da(points)


@pytest.mark.parametrize("da", ["01 00", "00 05"])
def test_da_naming_no_point_is_a_frame_error(da):
    with pytest.raises(FrameError):
        da_to_pn(bytes.fromhex(da))


@pytest.mark.parametrize(
    "functions, dt",
    [([1], "01 00"), ([3], "04 00"), ([25], "01 03"), ([129], "01 10"), ([161], "01 14"), ([1, 2], "03 00"), ([248], "80 1E")],
)
def test_fn_to_dt_and_back(functions, dt):
    assert fn_to_dt(functions) == bytes.fromhex(dt)
    assert dt_to_fn(bytes.fromhex(dt)) == tuple(functions)


@pytest.mark.parametrize("functions", [[], [8, 9], [0], [249]])
def test_fn_to_dt_rejects_functions_outside_one_group(functions):
    with pytest.raises(ValueError):
        fn_to_dt(functions)


@pytest.mark.parametrize("dt", ["00 00", "01 1F"])
def test_dt_naming_no_function_or_beyond_f248_is_a_frame_error(dt):
    with pytest.raises(FrameError):
        dt_to_fn(bytes.fromhex(dt))


def test_a_data_unit_keeps_its_points_and_functions_sorted():
    unit = DataUnit([3, 2], [163, 161])
    assert (unit.points, unit.functions) == ((2, 3), (161, 163))
    assert unit.pairs() == [(2, 161), (2, 163), (3, 161), (3, 163)]


def test_several_units_with_several_points_and_functions_split_pn_by_pn():
    day = DayTag(date(2011, 12, 25))
    first = data.unit([2, 3], [161, 163], [day] * 4)
    second = data.unit([9], [1], [DayTag(date(2018, 8, 27))])
    frame = _frame(direction=DOWN, function=11, afn=Afn.CLASS2, payload=gdw.pack_units([first, second]))
    decoded = gdw.decode(gdw.encode(frame))
    assert data.units(decoded) == (first, second)
    assert [(i.point, i.fn) for i in data.items(decoded)] == [(2, 161), (2, 163), (3, 161), (3, 163), (9, 1)]


def test_a_unit_for_every_point_carries_each_item_once():
    unit = data.unit(None, [1], [DayTag(date(2018, 8, 27))])
    assert data.decode_unit(Afn.CLASS2, DOWN, unit) == (Item(None, 1, DayTag(date(2018, 8, 27))),)


def test_split_units_reports_an_item_longer_than_the_data():
    with pytest.raises(FrameError):
        gdw.split_units(bytes.fromhex("00 00 01 00 AA"), lambda fn, rest: 3)


# --- appendix A formats ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, wire, value",
    [
        (A5, "00 10", "100.0"),
        (A5, "05 91", "-110.5"),
        (A7, "27 24", "242.7"),
        (A9, "00 00 00", "0.0000"),
        (A9, "56 34 92", "-12.3456"),
        (A11, "12 34 56 78", "785634.12"),
        (A13, "78 56 34 12", "1234.5678"),
        (A14, "00 01 00 00 00", "0.0100"),
        (A14, "78 56 34 12 99", "991234.5678"),
        (A25, "56 34 12", "123.456"),
        (A25, "56 34 92", "-123.456"),
    ],
)
def test_number_formats_both_ways(fmt, wire, value):
    decoded = fmt.decode(bytes.fromhex(wire))
    assert decoded == Decimal(value)
    assert decoded.as_tuple().exponent == -fmt.decimals  # scaled by the format, exactly
    assert fmt.encode(Decimal(value)) == bytes.fromhex(wire)


@pytest.mark.parametrize("fmt", [A5, A7, A9, A11, A13, A14, A25])
@pytest.mark.parametrize("fill", ["EE", "FF", "mixed"])
def test_no_data_and_invalid_nibbles_decode_to_none(fmt, fill):
    wire = bytes.fromhex("00" + "EE" * (fmt.size - 1)) if fill == "mixed" else bytes.fromhex(fill * fmt.size)
    assert fmt.decode(wire) is None
    assert fmt.encode(None) == b"\xee" * fmt.size


def test_a_negative_zero_keeps_its_sign_bit():
    assert A5.decode(b"\x00\x80") == 0
    assert A5.encode(A5.decode(b"\x00\x80")) == b"\x00\x80"


@pytest.mark.parametrize(
    "fmt, value",
    [(A14, "0.00001"), (A7, "1000.0"), (A9, "80"), (A5, "-800"), (A7, "-1.0"), (A11, "1E+6")],
)
def test_number_formats_refuse_what_they_cannot_hold(fmt, value):
    with pytest.raises(ValueError):
        fmt.encode(Decimal(value))


def test_a1_clock_carries_the_week_day_above_the_month():
    clock = Clock.decode(bytes.fromhex("49 48 11 15 52 15"))
    assert clock == Clock(datetime(2015, 12, 15, 11, 48, 49), weekday=2)
    assert clock.encode() == bytes.fromhex("49 48 11 15 52 15")
    assert Clock.at(datetime(2015, 12, 15, 11, 48, 49)) == clock


@pytest.mark.parametrize("wire", ["EE EE EE EE EE EE", "00 00 00 31 02 18", "00 00 00 01 13 18"])
def test_a1_without_a_valid_time_decodes_to_none(wire):
    assert Clock.decode(bytes.fromhex(wire)) is None


@pytest.mark.parametrize(
    "fmt, wire, value",
    [
        (A15, "18 16 28 08 18", datetime(2018, 8, 28, 16, 18)),
        (A16, "13 51 23 21", PartialTime(day=21, hour=23, minute=51, second=13)),
        (A17, "30 12 31 12", PartialTime(month=12, day=31, hour=12, minute=30)),
        (A18, "59 23 27", PartialTime(day=27, hour=23, minute=59)),
        (A19, "05 07", PartialTime(hour=7, minute=5)),
        (A20, "27 08 18", date(2018, 8, 27)),
        (A21, "07 18", PartialTime(year=2018, month=7)),
    ],
)
def test_time_formats_both_ways(fmt, wire, value):
    assert fmt.decode(bytes.fromhex(wire)) == value
    assert fmt.encode(value) == bytes.fromhex(wire)


@pytest.mark.parametrize("fmt", [A15, A16, A17, A18, A19, A20, A21])
def test_time_formats_without_data_decode_to_none(fmt):
    assert fmt.decode(b"\xee" * fmt.size) is None
    assert fmt.encode(None) == b"\xee" * fmt.size


def test_a_time_that_is_no_calendar_date_decodes_to_none():
    assert A15.decode(bytes.fromhex("00 00 30 02 18")) is None  # 30 February
    assert A20.decode(bytes.fromhex("00 00 00")) is None


@pytest.mark.parametrize(
    "fmt, value",
    [
        (A15, datetime(2018, 8, 28, 16, 18, 30)),  # A.15 has no seconds
        (A15, datetime(1999, 8, 28, 16, 18)),
        (A20, datetime(2018, 8, 27, 12, 0)),
        (A21, date(2018, 7, 31)),  # a month is a PartialTime of year and month
        (A16, PartialTime(day=1, hour=2, minute=3)),  # A.16 needs the second
    ],
)
def test_time_formats_refuse_what_they_would_lose(fmt, value):
    with pytest.raises(ValueError):
        fmt.encode(value)


def test_a12_address_is_printed_most_significant_first():
    assert A12.decode(bytes.fromhex("66 55 44 33 22 11")) == "112233445566"
    assert A12.encode("112233445566") == bytes.fromhex("66 55 44 33 22 11")


# --- data units ------------------------------------------------------------------------------


#: Items that take the rest of the data units (they end a frame's last unit).
TAKE_THE_REST = (UnitResults, Heartbeat)


def _round_trip(value, wire: str) -> None:
    encoded = bytes.fromhex(wire)
    assert value.encode() == encoded
    assert type(value).decode(encoded) == value
    after = b"" if isinstance(value, TAKE_THE_REST) else b"\x00\x00\x00\x00"  # the next unit's bytes
    assert type(value).size(encoded + after) == len(encoded)


def test_afn00_f3_confirms_and_denies_each_unit():
    _round_trip(UnitResults(0x04, [UnitResult((0,), (1,), 0), UnitResult((1,), (10,), 1)]), "04 00 00 01 00 00 01 01 02 01 01")
    assert not UnitResults.decode(bytes.fromhex("04 01 01 02 01 01")).results[0].confirmed


def test_afn00_f3_of_a_wrong_length_is_a_frame_error():
    with pytest.raises(FrameError):
        UnitResults.decode(bytes.fromhex("02 00 00 04 00"))


def test_heartbeat_is_empty_or_a_clock():
    _round_trip(Heartbeat(), "")
    clock = Clock(datetime(2015, 12, 15, 11, 48, 49), 2)
    assert Heartbeat(clock).encode() == clock.encode()
    assert Heartbeat.decode(clock.encode()) == Heartbeat(clock)
    with pytest.raises(FrameError):
        Heartbeat.size(b"\x00\x00\x00")


def test_afn04_f1_uplink_parameters():
    _round_trip(UplinkParams(20, 5, 30, 3, (True, False, True), 15), "14 05 1E 30 05 0F")


def test_afn04_f1_with_reserved_bits_is_a_frame_error():
    with pytest.raises(FrameError):
        UplinkParams.decode(bytes.fromhex("14 05 1E 70 05 0F"))


def test_afn04_f3_master_station():
    station = MasterStation(IPv4Address("192.168.1.2"), 9000, IPv4Address("10.0.0.1"), 9001, "CMNET")
    _round_trip(station, "C0 A8 01 02 28 23 0A 00 00 01 29 23" + "434D4E4554" + "00" * 11)


def test_afn04_f10_record_fields():
    record = MeterRecord(2, 3, port=2, baud=9600, protocol=30, address="000000000161", tariffs=4, digits=6, decimals=2,
                         collector="000000000000", user_class=(5, 1))  # fmt: skip
    wire = "02 00 03 00 C2 1E 61 01 00 00 00 00 000000000000 04 09 000000000000 51"
    _round_trip(record, wire)
    _round_trip(MeterArchive([record]), "01 00 " + wire)


def test_afn04_f10_rate_code_0_is_the_default():
    assert MeterRecord.decode(bytes.fromhex("01 00 01 00 01 1E" + "00" * 12 + "04 00" + "00" * 7)).baud is None


def test_afn0a_f10_query_names_meter_serials():
    _round_trip(ArchiveQuery([1, 2]), "02 00 01 00 02 00")


def test_afn05_f1_remote_trip_alarm_delay_is_the_high_nibble():
    _round_trip(RemoteTrip(alarm_delay=2, limit_time=5), "25")


def test_afn05_f25_and_f31():
    _round_trip(KeepPower(4), "04")
    _round_trip(ClockSet(Clock(datetime(2024, 2, 29, 23, 59, 58), 4)), "58 59 23 29 82 24")


def test_afn09_f1_version_info_is_41_bytes():
    info = VersionInfo("TOPS", "12345678", "V1.0", date(2013, 9, 25), "CAPACITY-01", "1376", "H2.0", date(2013, 1, 2))
    wire = info.encode()
    assert len(wire) == 41 and wire[16:19] == bytes.fromhex("25 09 13")
    _round_trip(info, wire.hex())


def test_afn0c_f129_length_follows_the_tariff_count():
    energy = TariffEnergy(datetime(2018, 8, 28, 16, 18), [Decimal("1.5"), None])
    _round_trip(energy, "18 16 28 08 18 01 00 50 01 00 00 EE EE EE EE EE")


def test_afn0d_f161_and_f177_repeat_the_time_tag_first():
    reading = TariffEnergy(datetime(2018, 8, 27, 23, 59), [Decimal("12.34")])
    _round_trip(DailyEnergy(date(2018, 8, 27), reading), "27 08 18 59 23 27 08 18 00 00 34 12 00 00")
    _round_trip(MonthlyEnergy(PartialTime(year=2018, month=7), reading), "07 18 59 23 27 08 18 00 00 34 12 00 00")
    _round_trip(MonthTag(PartialTime(year=2018, month=7)), "07 18")


def test_afn0e_request_and_the_record_count_around_the_ring():
    _round_trip(EventRequest(0, 5), "00 05")
    assert EventReply.size(bytes.fromhex("01 00 05 05")) == 4  # Pm = Pn: no records
    wrapped = EventReply(1, 0, 255, 1, [RawEvent(99, b"\x01"), RawEvent(98, b"")])
    _round_trip(wrapped, "01 00 FF 01 63 01 01 62 00")


def test_afn0e_events_the_concentrator_raises():
    when = datetime(2024, 3, 1, 8, 30)
    events = [
        InitEvent(when, initialised=True, version_changed=True, old_version="V1.0", new_version="V1.1"),
        ParameterChange(when, master=2, units=[((0,), (3,)), ((0,), (10,))]),
        PowerEvent(datetime(2024, 3, 1, 2, 0), when),
        PowerEvent(datetime(2024, 3, 1, 2, 0), when, attributes=0x03),
        TerminalFault(when, TerminalFaultCode.METER_READING_PORT),
        ReadFailure(when, PointFlag(12, started=True), datetime(2024, 3, 1, 8, 0), Decimal("123.4500"), None),
    ]
    reply = EventReply(7, 0, 10, 16, events)
    wire = reply.encode()
    starts = (4, 20, 36, 48, 61, 69)  # each record is ERC, Le and Le bytes
    assert [wire[at] for at in starts] == [1, 3, 14, 14, 21, 31]
    assert [wire[at + 1] for at in starts] == [14, 14, 10, 11, 6, 21]
    assert len(wire) == 69 + 2 + 21
    _round_trip(reply, wire.hex())


def test_a_known_erc_whose_bytes_do_not_fit_is_kept_raw():
    record = bytes(19)  # TR's ERC14 with three currents appended
    reply = EventReply.decode(bytes.fromhex("01 00 00 01 0E 13") + record)
    assert reply.records == (RawEvent(14, record),)


def test_afn10_f1_forwarding_request_and_answer():
    frame = bytes.fromhex("68 61 10 01 30 12 15 68 11 04 33 33 34 33 7B 16")
    _round_trip(Forward(31, SerialSettings(2400, "E", 8, 1), 60, True, 10, frame), "1F 6B BC 0A 10 00" + frame.hex())
    _round_trip(ForwardReply(31, b""), "1F 00 00")


@pytest.mark.parametrize(
    "settings, word",
    [
        (SerialSettings(2400, "E", 8, 1), 0x6B),
        (SerialSettings(9600, "N", 8, 1), 0xC3),
        (SerialSettings(1200, "O", 7, 2), 0x5E),
        (SerialSettings(300, "N", 5, 1), 0x00),
    ],
)
def test_afn10_f1_control_word(settings, word):
    assert settings.encode() == bytes((word,))
    assert SerialSettings.decode(bytes((word,))) == settings


def test_afn10_f1_odd_parity_without_parity_is_a_frame_error():
    with pytest.raises(FrameError):
        SerialSettings.decode(b"\x64")


def test_layout_of_an_unknown_item_is_a_frame_error_and_requests_without_data_are_known():
    assert data.layout(Afn.QUERY, 22, DOWN).size(b"\x01\x02") == 0
    assert data.layout(Afn.CLASS1, 23, DOWN).codec is None
    for afn, fn, direction in [(Afn.QUERY, 38, DOWN), (Afn.CLASS1, 23, UP), (Afn.RELAY, 1, DOWN)]:
        with pytest.raises(FrameError):
            data.layout(afn, fn, direction)


def test_a_remote_trip_frame_built_from_values():
    trip = data.unit([1], [1], [RemoteTrip(0, 0)])
    tp = TimeTag(2, PartialTime(day=4, hour=17, minute=13, second=56), 5)
    frame = Frame(DOWN, True, 10, "0000", 0xFFFF, Afn.CONTROL, gdw.pack_units([trip]), master=16, group=True, seq=1, pw=bytes(16), tp=tp)
    wire = "68 8E 00 8E 00 68 4A 00 00 FF FF 21 05 E1 01 01 01 00 00" + " 00" * 16 + " 02 56 13 17 04 05 DD 16"
    assert gdw.encode(frame) == bytes.fromhex(wire)


# --- properties: strategies --------------------------------------------------------------------


byte = st.integers(0, 255)


def _decimals(fmt) -> st.SearchStrategy:
    top = int(fmt.limit.scaleb(fmt.decimals)) - 1
    ints = st.integers(-top if fmt.signed else 0, top)
    return st.one_of(st.none(), ints.map(lambda n: Decimal(n).scaleb(-fmt.decimals)))


minutes = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59)).map(
    lambda d: d.replace(second=0, microsecond=0)
)
seconds = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
months = st.builds(PartialTime, year=st.integers(2000, 2099), month=st.integers(0, 12))
clocks = st.builds(Clock, seconds, st.integers(0, 7))
send_times = st.builds(PartialTime, day=st.integers(0, 31), hour=st.integers(0, 23), minute=st.integers(0, 59), second=st.integers(0, 59))
tags = st.builds(TimeTag, byte, send_times, byte)


def _text(size: int) -> st.SearchStrategy:
    return st.binary(min_size=size, max_size=size).map(lambda b: b.decode("latin-1"))


def _in_one_group(top: int) -> st.SearchStrategy:
    """Non-empty sorted lists of numbers 1..top from one group of 8 (1-8, 9-16, ...)."""
    return st.integers(0, (top - 1) // 8).flatmap(
        lambda g: st.sets(st.integers(g * 8 + 1, min(g * 8 + 8, top)), min_size=1).map(sorted)
    )


point_sets = st.one_of(st.just([0]), st.none(), _in_one_group(gdw.MAX_POINT))
function_sets = _in_one_group(gdw.MAX_FN)
unit_ids = st.tuples(point_sets.map(lambda p: None if p is None else tuple(p)), function_sets.map(tuple))


def _blocks(fmt, count: int) -> st.SearchStrategy:
    return st.lists(_decimals(fmt), min_size=count, max_size=count).map(tuple)


tariff_energy = st.builds(TariffEnergy, st.one_of(st.none(), minutes), st.integers(1, 13).flatmap(lambda n: _blocks(A14, n)))
forward_indications = st.integers(1, 13).flatmap(
    lambda n: st.builds(
        data.ForwardIndications, st.one_of(st.none(), minutes), _blocks(A14, n), _blocks(A11, n), _blocks(A11, n), _blocks(A11, n)
    )
)
meter_records = st.builds(
    MeterRecord,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    port=st.integers(0, 31),
    baud=st.sampled_from([None, *data.ARCHIVE_BAUD.values()]),
    protocol=byte,
    address=st.binary(min_size=6, max_size=6).map(lambda b: b.hex().upper()),
    password=st.binary(min_size=6, max_size=6),
    tariffs=st.integers(0, 63),
    digits=st.integers(4, 7),
    decimals=st.integers(1, 4),
    collector=st.binary(min_size=6, max_size=6).map(lambda b: b.hex().upper()),
    user_class=st.tuples(st.integers(0, 15), st.integers(0, 15)),
)
maybe_minutes = st.one_of(st.none(), minutes)
known_events = st.one_of(
    st.builds(InitEvent, maybe_minutes, st.booleans(), st.booleans(), _text(4), _text(4)),
    st.builds(ParameterChange, maybe_minutes, byte, st.lists(unit_ids, max_size=5)),
    st.builds(PowerEvent, maybe_minutes, maybe_minutes, st.one_of(st.none(), byte)),
    st.builds(TerminalFault, maybe_minutes, byte),
    st.builds(ReadFailure, maybe_minutes, st.builds(PointFlag, st.integers(0, 0xFFF), st.booleans()), maybe_minutes,
              _decimals(A14), _decimals(A11)),
)  # fmt: skip
raw_events = st.builds(RawEvent, byte.filter(lambda erc: erc not in data.EVENTS), st.binary(max_size=40))


@st.composite
def event_replies(draw) -> EventReply:
    records = draw(st.lists(st.one_of(known_events, raw_events), max_size=4))
    start = draw(byte)
    return EventReply(draw(byte), draw(byte), start, (start + len(records)) % 256, records)


#: A strategy of values for every item of the registry (None: the item has no data).
VALUES: dict[type | None, st.SearchStrategy] = {
    None: st.none(),
    UnitResults: st.builds(UnitResults, byte, st.lists(st.builds(lambda ids, error: UnitResult(*ids, error), unit_ids, byte), max_size=4)),
    Heartbeat: st.builds(Heartbeat, st.one_of(st.none(), clocks)),
    UplinkParams: st.builds(UplinkParams, byte, byte, st.integers(0, 0xFFF), st.integers(0, 3), st.tuples(*[st.booleans()] * 3), byte),
    MasterStation: st.builds(
        MasterStation, st.ip_addresses(v=4), st.integers(0, 0xFFFF), st.ip_addresses(v=4), st.integers(0, 0xFFFF),
        st.binary(max_size=16).map(lambda b: b.rstrip(b"\x00").decode("latin-1")),
    ),
    MeterArchive: st.builds(MeterArchive, st.lists(meter_records, max_size=3)),
    ArchiveQuery: st.builds(ArchiveQuery, st.lists(st.integers(0, 0xFFFF), max_size=5)),
    RemoteTrip: st.builds(RemoteTrip, st.integers(0, 15), st.integers(0, 15)),
    KeepPower: st.builds(KeepPower, byte),
    ClockSet: st.builds(ClockSet, clocks),
    VersionInfo: st.builds(
        VersionInfo, _text(4), _text(8), _text(4), st.one_of(st.none(), days), _text(11), _text(4), _text(4), st.one_of(st.none(), days)
    ),
    Clock: clocks,
    data.Instantaneous: st.builds(
        data.Instantaneous, maybe_minutes, _blocks(A9, 4), _blocks(A9, 4), _blocks(A5, 4), _blocks(A7, 3), _blocks(A25, 4), _blocks(A9, 4)
    ),
    data.ForwardIndications: forward_indications,
    TariffEnergy: tariff_energy,
    DayTag: st.builds(DayTag, st.one_of(st.none(), days)),
    MonthTag: st.builds(MonthTag, st.one_of(st.none(), months)),
    data.DailyIndications: st.builds(data.DailyIndications, st.one_of(st.none(), days), forward_indications),
    data.MonthlyIndications: st.builds(data.MonthlyIndications, st.one_of(st.none(), months), forward_indications),
    DailyEnergy: st.builds(DailyEnergy, st.one_of(st.none(), days), tariff_energy),
    MonthlyEnergy: st.builds(MonthlyEnergy, st.one_of(st.none(), months), tariff_energy),
    EventRequest: st.builds(EventRequest, byte, byte),
    EventReply: event_replies(),
    Forward: st.builds(
        Forward, byte,
        st.builds(SerialSettings, st.sampled_from(sorted(data.FORWARD_BAUD.values())), st.sampled_from(data.PARITIES),
                  st.integers(5, 8), st.integers(1, 2)),
        st.integers(0, 127), st.booleans(), byte, st.binary(max_size=60),
    ),
    ForwardReply: st.builds(ForwardReply, byte, st.binary(max_size=60)),
}

CODECS = sorted({layout.codec for layout in data.LAYOUTS.values() if layout.codec is not None}, key=lambda c: c.__name__)


def test_every_registered_item_has_a_value_strategy():
    assert {layout.codec for layout in data.LAYOUTS.values()} <= set(VALUES)


# --- properties: the data units ----------------------------------------------------------------


@PROPERTY
@given(st.sampled_from(CODECS).flatmap(lambda codec: VALUES[codec]), st.binary(max_size=8))
def test_every_data_unit_value_survives_encode_and_decode(value, after):
    wire = value.encode()
    assert type(value).decode(wire) == value
    if isinstance(value, TAKE_THE_REST):
        after = b""
    assert type(value).size(wire + after) == len(wire)


@PROPERTY
@given(st.sampled_from(CODECS), st.binary(max_size=120))
def test_data_unit_decode_of_any_bytes_gives_a_value_or_a_frame_error(codec, wire):
    for attempt in (codec.decode, codec.size):
        try:
            attempt(wire)
        except FrameError:
            pass


@PROPERTY
@given(st.sampled_from([A5, A7, A9, A11, A13, A14, A25]).flatmap(lambda fmt: st.tuples(st.just(fmt), _decimals(fmt))))
def test_number_values_survive_encode_and_decode(pair):
    fmt, value = pair
    assert fmt.decode(fmt.encode(value)) == value


@PROPERTY
@given(st.sampled_from([A5, A7, A9, A11, A13, A14, A25]).flatmap(lambda f: st.tuples(st.just(f), st.binary(min_size=f.size, max_size=f.size))))
def test_number_bytes_with_digits_reencode_exactly(pair):
    fmt, wire = pair
    value = fmt.decode(wire)
    assert value is None or fmt.encode(value) == wire


@PROPERTY
@given(st.one_of(
    st.tuples(st.just(A15), minutes), st.tuples(st.just(A20), days), st.tuples(st.just(A21), months),
    st.tuples(st.just(A16), send_times),
    st.tuples(st.just(A17), st.builds(PartialTime, month=st.integers(0, 12), day=st.integers(0, 31), hour=st.integers(0, 23),
                                      minute=st.integers(0, 59))),
    st.tuples(st.just(A18), st.builds(PartialTime, day=st.integers(0, 31), hour=st.integers(0, 23), minute=st.integers(0, 59))),
    st.tuples(st.just(A19), st.builds(PartialTime, hour=st.integers(0, 23), minute=st.integers(0, 59))),
))  # fmt: skip
def test_time_values_survive_encode_and_decode(pair):
    fmt, value = pair
    assert fmt.decode(fmt.encode(value)) == value


@PROPERTY
@given(clocks)
def test_clocks_survive_encode_and_decode(clock):
    assert Clock.decode(clock.encode()) == clock


@PROPERTY
@given(point_sets, function_sets)
def test_unit_identifiers_survive_encode_and_decode(points, functions):
    assert gdw.unit_id_from_wire(gdw.unit_id_to_wire(points, functions)) == (
        None if points is None else tuple(points),
        tuple(functions),
    )


@st.composite
def registered_frames(draw) -> tuple[Frame, tuple[Item, ...]]:
    """A frame of one AFN and direction with up to three units of registered items."""
    afn, fn, direction = draw(st.sampled_from(sorted(data.LAYOUTS)))
    keys = [k for k in data.LAYOUTS if k[0] == afn and k[2] == direction and data.LAYOUTS[k].codec not in TAKE_THE_REST]
    units, expected = [], []
    for _ in range(draw(st.integers(1, 3))):
        fn = draw(st.sampled_from(keys))[1] if keys else fn
        points = draw(st.one_of(st.just((0,)), _in_one_group(16).map(tuple)))
        values = [draw(VALUES[data.LAYOUTS[(afn, fn, direction)].codec]) for _ in points]
        units.append(data.unit(points, [fn], values))
        expected += [Item(pn, fn, v) for pn, v in zip(points, values, strict=True)]
    pw = bytes(16) if gdw.carries_pw(direction, afn) else None
    frame = Frame(direction, True, 10, "0100", 1, afn, gdw.pack_units(units), pw=pw)
    return frame, tuple(expected)


@PROPERTY
@given(registered_frames())
def test_items_of_a_frame_built_from_values_are_those_values(case):
    frame, expected = case
    assert data.items(gdw.decode(gdw.encode(frame))) == expected


@PROPERTY
@given(st.lists(st.tuples(unit_ids, st.data()), min_size=1, max_size=4))
def test_split_units_inverts_pack_units(parts):
    size_of = lambda fn, rest: fn % 4
    units = []
    for (points, functions), draw in parts:
        count = len(points or (None,)) * sum(fn % 4 for fn in functions)
        units.append(DataUnit(points, functions, draw.draw(st.binary(min_size=count, max_size=count))))
    assert gdw.split_units(gdw.pack_units(units), size_of) == tuple(units)


# --- properties: frames --------------------------------------------------------------------


@st.composite
def frames(draw) -> Frame:
    direction = draw(st.sampled_from(Direction))
    afn = draw(st.one_of(st.sampled_from(Afn), byte))
    protocol = draw(st.sampled_from(gdw.PROTOCOLS))
    size = PW_SIZE[protocol]
    return Frame(
        direction=direction,
        prm=draw(st.booleans()),
        function=draw(st.integers(0, 15)),
        area=draw(st.binary(min_size=2, max_size=2)).hex(),
        terminal=draw(st.integers(1, 0xFFFF)),
        afn=afn,
        payload=draw(st.binary(min_size=4, max_size=120)),
        master=draw(st.integers(0, 127)),
        group=draw(st.booleans()),
        seq=draw(st.integers(0, 15)),
        fir=draw(st.booleans()),
        fin=draw(st.booleans()),
        con=draw(st.booleans()),
        fcb=direction is DOWN and draw(st.booleans()),
        fcv=draw(st.booleans()),
        pw=draw(st.binary(min_size=size, max_size=size)) if gdw.carries_pw(direction, afn) else None,
        ec=draw(st.one_of(st.none(), st.builds(EventCounters, byte, byte))) if direction is UP else None,
        tp=draw(st.one_of(st.none(), tags)),
        protocol=protocol,
    )


@PROPERTY
@given(frames(), st.integers(0, 4))
def test_decode_inverts_encode(frame, preamble):
    wire = gdw.encode(frame, preamble=preamble)
    assert gdw.decode(wire) == frame
    assert len(wire) == preamble + 8 + frame.user_data_length


def _decode_outcome(wire: bytes) -> Frame | FrameError:
    try:
        return gdw.decode(wire)
    except FrameError as exc:  # anything else escapes and fails the test
        return exc


@PROPERTY
@given(st.binary(max_size=200))
def test_decode_of_any_bytes_returns_a_frame_or_raises_frame_error(wire):
    assert isinstance(_decode_outcome(wire), (Frame, FrameError))


@PROPERTY
@given(st.binary(max_size=60).map(lambda b: _with_checksum(bytes.fromhex("C9 00 02 34 12 00 02 71") + b)))
def test_decode_of_checksummed_random_user_data_returns_a_frame_or_raises_frame_error(wire):
    assert isinstance(_decode_outcome(wire), (Frame, FrameError))


def _damaged(frame: Frame, draw: st.DataObject) -> bytes:
    """A valid frame with one byte changed, or cut short, or with bytes appended."""
    wire = bytearray(gdw.encode(frame))
    how = draw.draw(st.sampled_from(["flip", "cut", "append"]))
    if how == "flip":
        wire[draw.draw(st.integers(0, len(wire) - 1))] = draw.draw(byte)
    elif how == "cut":
        del wire[draw.draw(st.integers(0, len(wire) - 1)) :]
    else:
        wire += draw.draw(st.binary(min_size=1, max_size=4))
    return bytes(wire)


@PROPERTY
@given(frames(), st.data())
def test_decode_of_a_damaged_frame_returns_a_frame_or_raises_frame_error(frame, draw):
    assert isinstance(_decode_outcome(_damaged(frame, draw)), (Frame, FrameError))


# --- properties: the stream decoder ---------------------------------------------------------------


def _has_nested_frame(wire: bytes) -> bool:
    """Whether a frame header (68 L L 68, protocol id 1 or 2, room for a DA DT) whose frame
    would end inside ``wire`` hides after its first byte: such data is rightly found as a frame."""
    for start in range(1, len(wire) - 5):
        head = wire[start : start + 6]
        word = int.from_bytes(head[1:3], "little")
        header = head[0] == head[5] == 0x68 and head[1:3] == head[3:5] and word & 3 in (1, 2) and word >> 2 >= 12
        if header and start + 8 + (word >> 2) <= len(wire):
            return True
    return False


noise_without_start = st.binary(max_size=40).map(lambda b: b.replace(b"\x68", b""))


@PROPERTY
@given(st.lists(st.tuples(noise_without_start, frames(), st.integers(0, 4)), max_size=5), noise_without_start)
def test_stream_finds_exactly_the_frames_between_noise(parts, tail):
    wires = [gdw.encode(frame, preamble=n) for _, frame, n in parts]
    assume(not any(_has_nested_frame(w.lstrip(b"\xfe")) for w in wires))
    stream = b"".join(noise + wire for (noise, _, _), wire in zip(parts, wires, strict=True)) + tail
    decoder = StreamDecoder()
    assert decoder.feed(stream) == [frame for _, frame, _ in parts]
    noise = b"".join(n for n, _, _ in parts) + tail
    assert decoder.skipped == len(noise) - noise.count(0xFE)  # FE wake-up bytes are not noise
    assert decoder.pending == 0


def _comparable(found: list) -> list:
    return [(type(i), str(i)) if isinstance(i, Exception) else i for i in found]


stream_pieces = st.one_of(
    st.binary(max_size=30),
    frames().map(gdw.encode),
    st.builds(_damaged, frames(), st.data()),
    st.sampled_from([b"\x68", b"\x68\x32\x00\x32\x00\x68", b"\x16", b"\xfe\xfe"]),
)


@PROPERTY
@given(st.lists(stream_pieces, max_size=6).map(b"".join), st.data())
def test_stream_finds_the_same_whatever_the_chunking(stream, draw):
    whole = StreamDecoder()
    expected = _comparable(whole.feed(stream))

    one_by_one = StreamDecoder()
    assert _comparable([item for b in stream for item in one_by_one.feed(bytes((b,)))]) == expected

    cuts = sorted(draw.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunked = StreamDecoder()
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert _comparable([item for c in chunks for item in chunked.feed(c)]) == expected

    for decoder in (one_by_one, chunked):
        assert (decoder.skipped, decoder.pending) == (whole.skipped, whole.pending)


@PROPERTY
@given(st.lists(stream_pieces, max_size=6).map(b"".join))
def test_stream_yields_only_frames_and_frame_errors(stream):
    assert all(isinstance(i, (Frame, FrameError)) for i in StreamDecoder().feed(stream))


def test_the_stream_reports_a_damaged_frame_and_finds_the_next():
    bad = bytearray(LOGIN_WIRE)
    bad[-2] ^= 0xFF
    found = StreamDecoder().feed(b"\x00" + bytes(bad) + LOGIN_WIRE)
    assert isinstance(found[0], ChecksumError) and found[1] == gdw.decode(LOGIN_WIRE)


def test_a_radio_channel_stream_ignores_lengths_beyond_its_limit():
    long_frame = gdw.encode(_frame(payload=bytes.fromhex("00000100") + bytes(300)))
    assert StreamDecoder().feed(long_frame) != []
    radio = StreamDecoder(gdw.MAX_USER_DATA_RADIO)
    assert radio.feed(long_frame + LOGIN_WIRE) == [gdw.decode(LOGIN_WIRE)]
