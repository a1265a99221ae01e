"""The Q/GDW 1376.2 codec: each field of the frame, DT, the address field, the data units;
and its properties (round trips, no crash on any bytes, stream resynchronisation)."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from meterhub.errors import ChecksumError, FrameError, TruncatedFrame
from meterhub.protocols import dlt645
from meterhub.protocols import gdw1376_2 as gdw
from meterhub.protocols import gdw1376_2_data as data
from meterhub.protocols.gdw1376_2 import (
    Addresses,
    Afn,
    CommMode,
    Direction,
    DownInfo,
    Frame,
    StreamDecoder,
    UpInfo,
    dt_to_fn,
    fn_to_dt,
)
from meterhub.protocols.gdw1376_2_data import (
    AddNodes,
    AfnIndex,
    AfnIndexQuery,
    Carried,
    ConcentratorTime,
    Confirm,
    CorrectedFrame,
    DelayCorrection,
    DelayReply,
    DeleteNodes,
    Deny,
    DenyReason,
    DeviceNode,
    DeviceNodes,
    EventReporting,
    MainNode,
    MeterEvent,
    MeterProtocol,
    Monitor,
    MonitorReply,
    MonitorTimeout,
    Node,
    NodeCount,
    NodeInfo,
    NodePage,
    NodeQuery,
    PacketTest,
    Rate,
    ReadAnswer,
    ReadData,
    ReadFlag,
    ReadRequest,
    Registration,
    RelayPath,
    RouteStatus,
    RunMode,
    SendTest,
    SlaveNode,
    SlaveNodes,
    SubNode,
    TaskChange,
    TaskStatus,
    VendorVersion,
    WirelessParams,
    WorkMode,
)

PROPERTY = settings(max_examples=200, deadline=None)
DOWN, UP = Direction.DOWN, Direction.UP

MAIN_NODE, METER = "049999888888", "000000003304"
#: 12 F2 pause, the smallest frame: no address field, no data (the test script's vector 0).
PAUSE_WIRE = bytes.fromhex("68 0F 00 43 00 00 28 32 00 52 12 02 00 03 16")
#: 13 F1 reading energy 00010000 of meter 000000003304 (vector 1).
MONITOR_WIRE = bytes.fromhex(
    "68 2F 00 43 04 00 28 32 00 53 88 88 88 99 99 04 04 33 00 00 00 00 13 01 00 02 01 00 10"
    " 68 04 33 00 00 00 00 68 11 04 33 33 34 33 E9 16 08 16"
)


def _read_energy() -> bytes:
    return dlt645.encode(dlt645.Frame(METER, 0x11, (0x00010000).to_bytes(4, "little")), preamble=0)


def _monitor_frame() -> Frame:
    info = DownInfo(seq=0x53, module=True, expected_reply=0x28, rate=0x32)
    unit = Monitor(MeterProtocol.DLT645_2007, _read_energy(), delay_related=True)
    return data.unit_frame(Afn.ROUTE_FORWARD, 1, unit, info=info, addresses=Addresses(MAIN_NODE, METER))


# --- the frame fields ----------------------------------------------------------------------


def test_a_monitor_request_is_encoded_field_by_field():
    assert gdw.encode(_monitor_frame()) == MONITOR_WIRE


def test_l_is_the_whole_frame_length_low_byte_first():
    wire = gdw.encode(_monitor_frame())
    assert int.from_bytes(wire[1:3], "little") == len(wire) == _monitor_frame().length == 47


def test_cs_sums_c_through_the_last_data_byte():
    assert MONITOR_WIRE[-2] == sum(MONITOR_WIRE[3:-2]) & 0xFF


@pytest.mark.parametrize(
    "direction, prm, mode, control",
    [(DOWN, True, CommMode.HPLC, 0x43), (DOWN, False, CommMode.CENTRALISED_PLC, 0x01), (UP, False, 3, 0x83),
     (UP, True, 3, 0xC3), (DOWN, True, CommMode.MICROPOWER_WIRELESS, 0x4A), (UP, False, CommMode.ETHERNET, 0x94)],
)  # fmt: skip
def test_control_field_direction_start_and_mode(direction, prm, mode, control):
    info = DownInfo() if direction is DOWN else UpInfo()
    frame = Frame(direction, prm, mode, info, Afn.ROUTE_CONTROL, 2)
    assert frame.control == control
    assert gdw.decode(gdw.encode(frame)) == frame


@pytest.mark.parametrize(
    "info, r",
    [
        (DownInfo(seq=0x52, expected_reply=0x28, rate=50), "00 00 28 32 00 52"),
        (DownInfo(no_routing=True, module=True, expected_reply=200, seq=14), "05 00 C8 00 00 0E"),
        (DownInfo(attached=True, conflict_detection=True, relay_level=2), "2A 00 00 00 00 00"),
        (DownInfo(channel=5, fec=0xA), "00 A5 00 00 00 00"),
        (DownInfo(rate=1200), "00 00 00 B0 04 00"),
        (DownInfo(rate=100, rate_kbps=True), "00 00 00 64 80 00"),
    ],
)
def test_downlink_information_field_bits(info, r):
    assert info.encode().hex(" ").upper() == r
    assert DownInfo.decode(bytes.fromhex(r)) == info


@pytest.mark.parametrize(
    "info, r",
    [
        (UpInfo(module=True, no_routing=True, relay_level=3), "35 00 00 00 00 00"),
        (UpInfo(channel=2, phase=3, channel_feature=4), "00 02 43 00 00 00"),
        (UpInfo(command_quality=0x0C, reply_quality=0x0A, event=True, seq=0x11), "00 00 00 AC 01 11"),
    ],
)
def test_uplink_information_field_bits(info, r):
    assert info.encode().hex(" ").upper() == r
    assert UpInfo.decode(bytes.fromhex(r)) == info


def test_uplink_reserved_bits_are_masked_out_of_every_field_and_kept_apart():
    info = UpInfo.decode(bytes.fromhex("FC F0 00 00 FE 00"))
    assert (info.module, info.relay_level, info.no_routing, info.channel, info.event) == (True, 15, False, 0, False)
    assert info.reserved == bytes.fromhex("08 F0 00 00 FE 00")
    assert info.encode() == bytes.fromhex("FC F0 00 00 FE 00")


def test_uplink_reserved_may_hold_only_reserved_bits():
    with pytest.raises(ValueError):
        UpInfo(reserved=bytes.fromhex("01 00 00 00 00 00"))  # R1 D0 is the route flag


def test_the_address_field_sends_source_relays_destination_low_byte_first():
    addresses = Addresses(MAIN_NODE, METER, ["111111111111", "222222222222"])
    frame = Frame(DOWN, True, 3, DownInfo(module=True, relay_level=2), Afn.ROUTE_FORWARD, 1, b"", addresses)
    wire = gdw.encode(frame)
    assert wire[10:34] == bytes.fromhex("88 88 88 99 99 04 11 11 11 11 11 11 22 22 22 22 22 22 04 33 00 00 00 00")
    assert wire[34:37] == bytes.fromhex("13 01 00")
    assert gdw.decode(wire) == frame


@pytest.mark.parametrize(
    "fields",
    [
        {"info": DownInfo(module=True)},  # the flag says an address field follows, none given
        {"addresses": Addresses(MAIN_NODE, METER)},  # an address field without the flag
        {"info": DownInfo(module=True, relay_level=1), "addresses": Addresses(MAIN_NODE, METER)},  # R1 says 1 relay
        {"direction": UP},  # a downlink R in an uplink frame
        {"direction": UP, "info": UpInfo(module=True, relay_level=1), "addresses": Addresses(MAIN_NODE, METER, [METER])},
        {"mode": 64},
        {"fn": 0},
        {"fn": 249},
        {"afn": 256},
        {"data": bytes(0xFFFF - 14)},  # longer than L can say
    ],
)
def test_a_frame_the_standard_does_not_allow_is_an_error(fields):
    base = {"direction": DOWN, "prm": True, "mode": 3, "info": DownInfo(), "afn": Afn.ROUTE_CONTROL, "fn": 2}
    with pytest.raises((ValueError, TypeError)):
        Frame(**{**base, **fields})


def test_an_address_is_twelve_hex_digits():
    with pytest.raises(ValueError):
        Addresses("0499998888", METER)
    assert Addresses("aaaaaaaaaaaa", METER).source == "AAAAAAAAAAAA"


# --- DT --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", range(1, gdw.MAX_FN + 1))
def test_dt_of_every_fn(fn):
    dt = fn_to_dt(fn)
    assert dt == bytes((1 << (fn - 1) % 8, (fn - 1) // 8))
    assert dt_to_fn(dt) == fn


@pytest.mark.parametrize("fn, dt", [(1, "01 00"), (2, "02 00"), (3, "04 00"), (8, "80 00"), (9, "01 01"), (10, "02 01"), (248, "80 1E")])
def test_dt_of_the_fn_the_vectors_use(fn, dt):
    assert fn_to_dt(fn).hex(" ").upper() == dt


@pytest.mark.parametrize("dt", ["00 00", "03 00", "FF 00", "01 1F", "80 FF"])
def test_dt_naming_no_fn_several_fn_or_beyond_f248_is_a_frame_error(dt):
    with pytest.raises(FrameError):
        dt_to_fn(bytes.fromhex(dt))


@pytest.mark.parametrize("fn", [0, -1, 249, 256])
def test_fn_outside_1_to_248_cannot_be_sent(fn):
    with pytest.raises(ValueError):
        fn_to_dt(fn)


# --- decoding what is not a frame ------------------------------------------------------------


def _corrupt(wire: bytes, at: int, value: int) -> bytes:
    out = bytearray(wire)
    out[at] = value
    return bytes(out)


def _with_checksum(checked: bytes) -> bytes:
    """68 L L, the bytes, a right CS, 16."""
    return b"\x68" + (len(checked) + 5).to_bytes(2, "little") + checked + bytes((sum(checked) & 0xFF, 0x16))


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"", TruncatedFrame),
        (b"\x68\x0f", TruncatedFrame),
        (PAUSE_WIRE[:-1], TruncatedFrame),
        (MONITOR_WIRE[:20], TruncatedFrame),
        (_corrupt(PAUSE_WIRE, 0, 0x69), FrameError),
        (b"\xfe" + PAUSE_WIRE, FrameError),  # no wake-up bytes on the local port
        (_corrupt(PAUSE_WIRE, 1, 0x0E), FrameError),  # L below a frame's minimum
        (PAUSE_WIRE + b"\x00", FrameError),
        (_corrupt(PAUSE_WIRE, -1, 0x17), FrameError),
        (_corrupt(PAUSE_WIRE, -2, 0x04), ChecksumError),
        (_with_checksum(bytes.fromhex("43 00 00 28 32 00 52 12 03 00")), FrameError),  # DT names F1 and F2
        (_with_checksum(bytes.fromhex("43 00 00 28 32 00 52 12 01 1F")), FrameError),  # F249
        (_with_checksum(bytes.fromhex("43 04 00 28 32 00 52") + bytes(12)), FrameError),  # addresses, no AFN DT
        (_with_checksum(bytes.fromhex("43 14 00 28 32 00 52") + bytes(15)), FrameError),  # 1 relay: 18 bytes
    ],
)
def test_decode_rejects(wire, error):
    with pytest.raises(error):
        gdw.decode(wire)


def test_an_uplink_with_relay_level_set_reads_twelve_address_bytes():
    checked = bytes.fromhex("83 F4 00 00 00 00 00") + bytes(12) + bytes.fromhex("03 08 00") + b"\xbb" * 6
    frame = gdw.decode(_with_checksum(checked))
    assert (frame.afn, frame.fn, frame.data, frame.addresses.relays) == (3, 4, b"\xbb" * 6, ())


# --- data units --------------------------------------------------------------------------------


def _round_trip(unit, wire: str) -> None:
    assert unit.encode() == bytes.fromhex(wire)
    assert type(unit).decode(bytes.fromhex(wire)) == unit


def test_confirm_bs32_and_legacy_status_and_wait():
    _round_trip(Confirm(True, [1, 31], 30), "03 00 00 80 1E 00")
    _round_trip(Confirm(False, [2], 5, legacy=True), "04 00 05 00")
    with pytest.raises(FrameError):
        Confirm.decode(bytes(5))
    with pytest.raises(ValueError):
        Confirm(True, [16], legacy=True)


def test_a_confirm_may_come_without_data():
    frame = data.unit_frame(Afn.CONFIRM, 1, None, info=DownInfo(module=True, seq=0x11), addresses=Addresses("BBBBBBBBBBBB", "111111111111"))
    assert data.decode_unit(gdw.decode(gdw.encode(frame))) is None


def test_deny_names_known_reasons_and_keeps_reserved_codes():
    assert Deny.decode(b"\x6f").reason is DenyReason.METER_BUSY
    assert Deny.decode(b"\x0c").reason is DenyReason.SLAVE_NOT_IN_NETWORK
    _round_trip(Deny(13), "0D")  # reserved: kept as its number


def test_afn02_forwards_a_protocol_frame_both_ways():
    for direction in (DOWN, UP):
        assert data.layout(Afn.FORWARD, 1, direction).codec is Carried
    _round_trip(Carried(MeterProtocol.DLT645_2007, _read_energy()), "02 10 " + _read_energy().hex(" "))


def test_afn03_vendor_version_main_node_delay_and_index():
    _round_trip(VendorVersion("ZW", "10", date(2016, 10, 20), "1020"), "5A 57 31 30 20 10 16 10 20")
    _round_trip(MainNode("BBBBBBBBBBBB"), "BB BB BB BB BB BB")
    _round_trip(DelayReply(12, 2, b"\x68\x16"), "0C 00 02 02 68 16")
    _round_trip(AfnIndexQuery(0x13), "13")
    _round_trip(AfnIndex(0x12, [1, 2, 3]), "12 07" + " 00" * 31)
    with pytest.raises(FrameError):
        VendorVersion.decode(bytes.fromhex("5A 57 31 30 32 10 16 10 20"))  # 32 October


def test_afn04_and_afn05_commands():
    _round_trip(SendTest(30), "1E")
    _round_trip(PacketTest(1, METER, 2, b"\x68"), "01 04 33 00 00 00 00 02 01 68")
    _round_trip(MainNode(MAIN_NODE), "88 88 88 99 99 04")
    _round_trip(EventReporting(True), "01")
    _round_trip(Carried(2, bytes.fromhex("68 99 99 99 99 99 99 68 08 06 00 00 00 01 01 25 00 16")), "02 12 68 99 99 99 99 99 99 68 08 06 00 00 00 01 01 25 00 16")
    _round_trip(MonitorTimeout(90), "5A")
    _round_trip(WirelessParams(254, 0), "FE 00")
    with pytest.raises(FrameError):
        EventReporting.decode(b"\x02")


def test_afn06_reports():
    _round_trip(SlaveNodes([SlaveNode(METER, 2, 7)]), "01 04 33 00 00 00 00 02 07 00")
    _round_trip(ReadData(3, 2, 1, b"\x68\x16"), "03 00 02 01 00 02 68 16")
    _round_trip(TaskChange(TaskStatus.READ_DONE), "01")
    device = DeviceNode("111111111111", 2, 1, 0, 5, [SubNode(METER, 2)])
    _round_trip(DeviceNodes([device]), "01 11 11 11 11 11 11 02 01 00 00 05 01 04 33 00 00 00 00 02")
    _round_trip(MeterEvent(1, 2, b"\x68"), "01 02 01 68")


def test_afn10_node_info_word():
    _round_trip(NodeInfo(METER, relay_level=2, quality=0xF, phases=0b101, protocol=2), "04 33 00 00 00 00 F2 15")
    with pytest.raises(FrameError):
        NodeInfo.decode(bytes.fromhex("04 33 00 00 00 00 00 40"))  # D14 is reserved
    _round_trip(NodeCount(1, 2040), "01 00 F8 07")
    _round_trip(NodeQuery(1, 10), "01 00 0A")


def test_afn10_f4_route_status():
    status = RouteStatus(True, True, False, 1, 0, 0, 2, Rate(0), (0, 0, 0), (8, 8, 8))
    _round_trip(status, "03 01 00 00 00 00 00 02 00 00 00 00 00 08 08 08")
    with pytest.raises(FrameError):
        RouteStatus.decode(bytes.fromhex("08 01 00 00 00 00 00 02 00 00 00 00 00 08 08 08"))


def test_afn11_route_set():
    _round_trip(AddNodes([Node("000000000006", 2), Node(METER, 1)]), "02 06 00 00 00 00 00 02 04 33 00 00 00 00 01")
    _round_trip(DeleteNodes(["000000000006"]), "01 06 00 00 00 00 00")
    _round_trip(RelayPath(METER, ["111111111111", "222222222222"]), "04 33 00 00 00 00 02 11 11 11 11 11 11 22 22 22 22 22 22")
    _round_trip(WorkMode(True, False, 0, Rate(9600)), "01 80 25")
    _round_trip(Registration(datetime(2026, 12, 3, 10, 30, 0), 60, 3, 10), "00 30 10 03 12 26 3C 00 03 0A")


def test_afn13_monitor_with_attached_nodes_and_its_answer():
    unit = Monitor(2, b"\x68\x16", delay_related=False, attached=["111111111111"])
    _round_trip(unit, "02 00 01 11 11 11 11 11 11 02 68 16")
    _round_trip(MonitorReply(0, 2, b""), "00 00 02 00")  # L = 0: the meter did not answer
    with pytest.raises(FrameError):
        Monitor.decode(bytes.fromhex("02 02 00 00"))  # the delay flag is 0 or 1


def test_afn14_router_led_reading():
    _round_trip(ReadRequest(1, "111111111111", 4), "01 11 11 11 11 11 11 04 00")
    _round_trip(ReadAnswer(ReadFlag.FAILED), "00 00 00 00")
    _round_trip(ReadAnswer(ReadFlag.MAY_READ, b"\x68", True, [METER]), "02 01 01 68 01 04 33 00 00 00 00")
    _round_trip(ConcentratorTime(datetime(2026, 12, 3, 10, 30, 15)), "15 30 10 03 12 26")
    _round_trip(DelayCorrection(METER, 3, b"\x68"), "04 33 00 00 00 00 03 00 01 68")
    _round_trip(CorrectedFrame(b""), "00")


def test_a_carried_frame_is_at_most_255_bytes():
    assert len(CorrectedFrame(bytes(255)).encode()) == 256
    with pytest.raises(ValueError):
        CorrectedFrame(bytes(256))


def test_a_unit_with_bytes_left_over_is_a_frame_error():
    with pytest.raises(FrameError, match="left over"):
        NodeCount.decode(bytes(5))


def test_layout_of_an_unknown_unit_is_a_frame_error_but_its_frame_still_decodes():
    frame = Frame(UP, False, 3, UpInfo(), Afn.QUERY, 2, b"\x05")  # 03 F2 noise value: no layout here
    assert gdw.decode(gdw.encode(frame)) == frame
    with pytest.raises(FrameError, match="no known layout"):
        data.decode_unit(frame)


def test_a_unit_without_data_refuses_data():
    frame = Frame(DOWN, True, 3, DownInfo(), Afn.ROUTE_CONTROL, 1, b"\x00")
    with pytest.raises(FrameError, match="carries no data"):
        data.decode_unit(frame)


# --- properties: strategies --------------------------------------------------------------------


byte = st.integers(0, 0xFF)
word = st.integers(0, 0xFFFF)
nibble = st.integers(0, 0x0F)
addresses = st.binary(min_size=6, max_size=6).map(lambda b: b.hex().upper())
carried = st.binary(max_size=60)
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
seconds = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)
rates = st.builds(Rate, st.integers(0, 0x7FFF), st.booleans())
ascii2 = st.binary(min_size=2, max_size=2).map(lambda b: b.decode("latin-1"))
vendors = st.builds(VendorVersion, ascii2, ascii2, days, st.binary(min_size=2, max_size=2).map(lambda b: b.hex()))

#: A strategy of values for every codec of the registry.
VALUES: dict[type, st.SearchStrategy] = {
    Confirm: st.booleans().flatmap(
        lambda legacy: st.builds(Confirm, st.booleans(), st.sets(st.integers(1, 15 if legacy else 31)), word, st.just(legacy))
    ),
    Deny: st.builds(Deny, byte),
    Carried: st.builds(Carried, byte, carried),
    VendorVersion: vendors,
    MainNode: st.builds(MainNode, addresses),
    WirelessParams: st.builds(WirelessParams, byte, byte),
    DelayReply: st.builds(DelayReply, word, byte, carried),
    RunMode: st.builds(
        RunMode, nibble, st.booleans(), st.booleans(), st.integers(0, 3), st.integers(0, 7), st.integers(0, 3), st.booleans(),
        st.integers(0, 3), nibble, nibble, byte, word, word, word, byte, addresses, word, word, days, days, vendors,
        st.lists(rates, max_size=15), st.binary(min_size=2, max_size=2),
    ),
    AfnIndexQuery: st.builds(AfnIndexQuery, byte),
    AfnIndex: st.builds(AfnIndex, byte, st.sets(st.integers(1, 256))),
    SendTest: st.builds(SendTest, byte),
    PacketTest: st.builds(PacketTest, byte, addresses, byte, carried),
    EventReporting: st.builds(EventReporting, st.booleans()),
    MonitorTimeout: st.builds(MonitorTimeout, byte),
    SlaveNodes: st.builds(SlaveNodes, st.lists(st.builds(SlaveNode, addresses, byte, word), max_size=5)),
    ReadData: st.builds(ReadData, word, byte, word, carried),
    TaskChange: st.builds(TaskChange, byte),
    DeviceNodes: st.builds(
        DeviceNodes,
        st.lists(st.builds(DeviceNode, addresses, byte, word, byte, byte, st.lists(st.builds(SubNode, addresses, byte), max_size=3)), max_size=3),
    ),
    MeterEvent: st.builds(MeterEvent, byte, byte, carried),
    NodeCount: st.builds(NodeCount, word, word),
    NodeQuery: st.builds(NodeQuery, word, byte),
    NodePage: st.builds(NodePage, word, st.lists(st.builds(NodeInfo, addresses, nibble, nibble, st.integers(0, 7), st.integers(0, 7)), max_size=5)),
    RouteStatus: st.builds(
        RouteStatus, st.booleans(), st.booleans(), st.booleans(), word, word, word, byte, rates,
        st.tuples(byte, byte, byte), st.tuples(byte, byte, byte),
    ),
    AddNodes: st.builds(AddNodes, st.lists(st.builds(Node, addresses, byte), max_size=5)),
    DeleteNodes: st.builds(DeleteNodes, st.lists(addresses, max_size=5)),
    RelayPath: st.builds(RelayPath, addresses, st.lists(addresses, max_size=5)),
    WorkMode: st.builds(WorkMode, st.booleans(), st.booleans(), nibble, rates),
    Registration: st.builds(Registration, seconds, word, byte, byte),
    Monitor: st.builds(Monitor, byte, carried, st.booleans(), st.lists(addresses, max_size=3)),
    MonitorReply: st.builds(MonitorReply, word, byte, carried),
    data.ConcurrentRead: st.builds(data.ConcurrentRead, byte, st.binary(max_size=600)),
    ReadRequest: st.builds(ReadRequest, byte, addresses, word),
    ReadAnswer: st.builds(ReadAnswer, byte, carried, st.booleans(), st.lists(addresses, max_size=3)),
    ConcentratorTime: st.builds(ConcentratorTime, seconds),
    DelayCorrection: st.builds(DelayCorrection, addresses, word, carried),
    CorrectedFrame: st.builds(CorrectedFrame, carried),
}  # fmt: skip

CODECS = sorted({layout.codec for layout in data.LAYOUTS.values() if layout.codec is not None}, key=lambda c: c.__name__)


def test_every_registered_codec_has_a_value_strategy():
    assert set(CODECS) == set(VALUES)


# --- properties: the data units ----------------------------------------------------------------


@PROPERTY
@given(st.sampled_from(CODECS).flatmap(lambda codec: VALUES[codec]))
def test_every_data_unit_value_survives_encode_and_decode(value):
    assert type(value).decode(value.encode()) == value


@PROPERTY
@given(st.sampled_from(CODECS), st.binary(max_size=80))
def test_data_unit_decode_of_any_bytes_gives_a_value_or_a_frame_error(codec, wire):
    try:
        value = codec.decode(wire)
    except FrameError:
        return
    assert value.encode() == wire  # what decodes encodes back to the same bytes


@PROPERTY
@given(st.sampled_from(sorted(data.LAYOUTS)), st.data())
def test_a_frame_built_from_a_value_decodes_to_that_value(key, draw):
    afn, fn, direction = key
    layout = data.LAYOUTS[key]
    unit = None if layout.codec is None else draw.draw(VALUES[layout.codec])
    info = DownInfo(seq=draw.draw(byte)) if direction is DOWN else UpInfo(seq=draw.draw(byte))
    frame = data.unit_frame(afn, fn, unit, info=info, prm=draw.draw(st.booleans()))
    assert data.decode_unit(gdw.decode(gdw.encode(frame))) == unit


# --- properties: frames --------------------------------------------------------------------


down_infos = st.builds(
    DownInfo, byte, st.booleans(), nibble, st.booleans(), st.booleans(), st.booleans(), nibble, nibble, byte,
    st.integers(0, 0x7FFF), st.booleans(),
)  # fmt: skip
reserved_up = st.tuples(*[st.integers(0, 0xFF).map(lambda v, m=m: v & m) for m in gdw.UP_RESERVED]).map(bytes)
up_infos = st.builds(
    UpInfo, byte, st.booleans(), nibble, st.booleans(), nibble, nibble, nibble, nibble, nibble, st.booleans(), reserved_up
)


@st.composite
def frames(draw, max_data: int = 80) -> Frame:
    direction = draw(st.sampled_from(Direction))
    info = draw(down_infos if direction is DOWN else up_infos)
    found = None
    if info.module:
        relays = draw(st.lists(addresses, min_size=info.relay_level, max_size=info.relay_level)) if direction is DOWN else []
        found = Addresses(draw(addresses), draw(addresses), relays)
    return Frame(
        direction=direction,
        prm=draw(st.booleans()),
        mode=draw(st.integers(0, 63)),
        info=info,
        afn=draw(st.one_of(st.sampled_from(Afn), byte)),
        fn=draw(st.integers(1, gdw.MAX_FN)),
        data=draw(st.binary(max_size=max_data)),
        addresses=found,
    )


@PROPERTY
@given(frames())
def test_decode_inverts_encode(frame):
    wire = gdw.encode(frame)
    assert gdw.decode(wire) == frame
    assert len(wire) == frame.length


@PROPERTY
@given(frames())
def test_the_address_field_is_present_exactly_when_the_module_flag_says_so(frame):
    wire = gdw.encode(frame)
    flag = bool(wire[4] & gdw.MODULE)
    assert flag == (frame.addresses is not None) == frame.info.module
    relays = (wire[4] >> 4) if flag and frame.direction is DOWN else 0
    address_bytes = 6 * (2 + relays) if flag else 0
    assert wire[10 + address_bytes] == frame.afn  # AFN follows R, or R and the address field
    assert len(wire) == gdw.MIN_LENGTH + address_bytes + len(frame.data)


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
@given(st.binary(max_size=60).map(lambda b: _with_checksum(bytes.fromhex("C3") + b)))
def test_decode_of_checksummed_random_bytes_returns_a_frame_or_raises_frame_error(wire):
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
    """Whether a frame, or a damaged one the stream would report, hides after the first byte
    of ``wire`` and ends inside it: such bytes are rightly found as a frame."""
    for start in range(1, len(wire) - 2):
        if wire[start] != gdw.START:
            continue
        length = int.from_bytes(wire[start + 1 : start + 3], "little")
        if gdw.MIN_LENGTH <= length and start + length <= len(wire):
            found = _decode_outcome(wire[start : start + length])
            if isinstance(found, (Frame, ChecksumError)):
                return True
    return False


noise_without_start = st.binary(max_size=40).map(lambda b: b.replace(b"\x68", b""))


@PROPERTY
@given(st.lists(st.tuples(noise_without_start, frames()), max_size=5), noise_without_start)
def test_stream_finds_exactly_the_frames_between_noise(parts, tail):
    wires = [gdw.encode(frame) for _, frame in parts]
    assume(not any(_has_nested_frame(w) for w in wires))
    stream = b"".join(noise + wire for (noise, _), wire in zip(parts, wires, strict=True)) + tail
    decoder = StreamDecoder()
    assert decoder.feed(stream) == [frame for _, frame in parts]
    assert decoder.skipped == len(b"".join(n for n, _ in parts) + tail)
    assert decoder.pending == 0


@PROPERTY
@given(frames(), st.data())
def test_a_frame_split_across_chunks_is_found_once_its_last_byte_arrives(frame, draw):
    wire = gdw.encode(frame)
    assume(not _has_nested_frame(wire))
    cuts = sorted(draw.draw(st.lists(st.integers(1, len(wire) - 1), max_size=5)))
    decoder = StreamDecoder()
    found = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        assert found == []  # nothing before the last byte
        found += decoder.feed(wire[a:b])
    assert found == [frame]


def _comparable(found: list) -> list:
    return [(type(i), str(i)) if isinstance(i, Exception) else i for i in found]


stream_pieces = st.one_of(
    st.binary(max_size=30),
    frames(max_data=20).map(gdw.encode),
    st.builds(_damaged, frames(max_data=20), st.data()),
    st.sampled_from([b"\x68", b"\x68\x0f\x00", b"\x16", PAUSE_WIRE]),
)


@PROPERTY
@given(st.lists(stream_pieces, max_size=6).map(b"".join), st.data())
def test_stream_finds_the_same_whatever_the_chunking(stream, draw):
    whole = StreamDecoder(max_length=256)
    expected = _comparable(whole.feed(stream))

    one_by_one = StreamDecoder(max_length=256)
    assert _comparable([item for b in stream for item in one_by_one.feed(bytes((b,)))]) == expected

    cuts = sorted(draw.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunked = StreamDecoder(max_length=256)
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert _comparable([item for c in chunks for item in chunked.feed(c)]) == expected

    for decoder in (one_by_one, chunked):
        assert (decoder.skipped, decoder.pending) == (whole.skipped, whole.pending)


@PROPERTY
@given(st.lists(stream_pieces, max_size=6).map(b"".join))
def test_stream_yields_only_frames_and_frame_errors(stream):
    assert all(isinstance(i, (Frame, FrameError)) for i in StreamDecoder().feed(stream))


def test_the_stream_reports_a_damaged_frame_and_finds_the_next():
    bad = _corrupt(PAUSE_WIRE, -2, 0x04)
    found = StreamDecoder().feed(b"\x00" + bad + MONITOR_WIRE)
    assert isinstance(found[0], ChecksumError) and found[1] == gdw.decode(MONITOR_WIRE)


def test_a_stray_start_byte_does_not_hold_back_the_next_frame():
    decoder = StreamDecoder()
    assert decoder.feed(b"\x68\xff\x00" + PAUSE_WIRE) == [gdw.decode(PAUSE_WIRE)]
    assert (decoder.skipped, decoder.pending) == (3, 0)


def test_a_stream_limited_to_the_modules_frame_length_ignores_longer_candidates():
    decoder = StreamDecoder(max_length=2048)
    decoder.feed(b"\x68\x00\x10")  # L = 4096: no candidate
    assert decoder.pending == 0
    with pytest.raises(ValueError):
        StreamDecoder(max_length=14)


# --- AFN F1 F1: concurrent reading ---------------------------------------------------------------


def test_a_concurrent_read_carries_the_frame_after_a_two_byte_length_both_ways():
    meter_frame = bytes.fromhex("FEFEFEFE68043300000000681104333334339516")
    for direction, info in ((Direction.DOWN, DownInfo(seq=7, module=True)), (Direction.UP, UpInfo(seq=7, module=True))):
        unit = data.ConcurrentRead(2, meter_frame)
        frame = data.unit_frame(0xF1, 1, unit, info=info, addresses=Addresses("000000000001", "000000003304"))
        wire = gdw.encode(frame)
        at = wire.index(bytes((0xF1, 0x01, 0x00)))
        assert wire[at + 3 : at + 6] == bytes((0x02, len(meter_frame), 0x00))
        assert wire[at + 6 : at + 6 + len(meter_frame)] == meter_frame
        back = gdw.decode(wire)
        assert back.direction is direction and data.decode_unit(back) == unit


def test_a_concurrent_read_with_no_answer_is_an_empty_frame():
    assert data.ConcurrentRead.decode(bytes((2, 0, 0))) == data.ConcurrentRead(2, b"")


@pytest.mark.parametrize("unit", ["02 05 00 68 01", "02 01 00 68 00", "02"])
def test_a_concurrent_read_whose_length_disagrees_is_a_frame_error(unit):
    with pytest.raises(FrameError):
        data.ConcurrentRead.decode(bytes.fromhex(unit))


def test_a_carried_meter_frame_that_ends_before_its_carrier_is_no_damaged_frame():
    # an F1 F1 answer whose DL/T 645 frame (68 14 00 ...) is 20 bytes from its 68h: that
    # candidate ends two bytes before the 1376.2 frame around it, with a wrong "checksum"
    wire = bytes.fromhex(
        "68 32 00 83 14 00 02 22 00 21 01 00 00 00 00 88 00 00 00 00 00 00 f1 01 00 02 14 00"
        " 68 14 00 00 00 00 00 68 91 08 33 33 34 33 84 58 a5 33 fe 16 7f 16"
    )
    for cut in range(1, len(wire)):
        stream = StreamDecoder()
        found = stream.feed(wire[:cut]) + stream.feed(wire[cut:])
        assert [type(f) for f in found] == [Frame], cut
