"""Every public Q/GDW 1376.2 vector decodes to its documented meaning and re-encodes byte for byte.

The vectors (tests/data/gdw1376_2.json) are captures and repository strings from public
sources (a C++ interoperability test script, a concentrator's receiver, 2017 serial logs
of HPLC modules); their ``checker`` blocks were recomputed by an independent checker.
What each ``meaning`` says of the data unit is transcribed in ``MEANINGS`` below, and
every vector must have an entry there, so a vector added without its meaning fails
instead of passing unchecked.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from meterhub.errors import FrameError
from meterhub.protocols import dlt645, gdw1376_2
from meterhub.protocols import gdw1376_2_data as data
from meterhub.protocols.dlt645_data import ITEMS, decode_value
from meterhub.protocols.gdw1376_2 import Afn, CommMode, Direction, DownInfo, UpInfo
from meterhub.protocols.gdw1376_2_data import (
    AddNodes,
    Confirm,
    CorrectedFrame,
    Deny,
    DenyReason,
    MainNode,
    MeterEvent,
    MeterProtocol,
    Monitor,
    MonitorReply,
    Node,
    NodeCount,
    NodeInfo,
    NodePage,
    NodeQuery,
    Rate,
    ReadAnswer,
    ReadData,
    ReadFlag,
    ReadRequest,
    RouteStatus,
    RunMode,
    VendorVersion,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "gdw1376_2.json").read_text("utf-8"))["vectors"]
ALL = range(len(VECTORS))


def _wire(index: int) -> bytes:
    return bytes.fromhex(VECTORS[index]["hex"])


def _frame(index: int) -> gdw1376_2.Frame:
    return gdw1376_2.decode(_wire(index))


def _checker(index: int) -> dict:
    return VECTORS[index]["checker"]


def _params(indices) -> list:
    return [pytest.param(i, id=f"{i:02d}-AFN{_checker(i)['AFN']}-F{_checker(i)['Fn'][0]}") for i in indices]


def _read(address: str, di: int, *, wake_up: int = 0) -> bytes:
    """A DL/T 645-2007 read request as carried, built by the DL/T 645 codec."""
    return dlt645.encode(dlt645.Frame(address, 0x11, di.to_bytes(4, "little")), preamble=wake_up)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


METER = "000000003304"  # the test script's meter
HPLC_METER = "000000005000"
ALL_CHANNELS = tuple(range(1, 32))

# The carried frames the meanings name but that no builder here makes: DL/T 698.45 APDUs and
# DL/T 645 replies, written out from the vectors.
OOP_GET_ENERGY = _hex("68 18 00 43 05 04 33 00 00 00 00 10 64 D1 05 02 00 01 00 10 02 00 00 91 04 16")
OOP_GET_ENERGY_HPLC = _hex("FE 68 17 00 43 05 09 00 00 00 00 10 00 DA AD 05 01 07 00 10 02 00 00 04 01 16")
OOP_REPLY = _hex(
    "FE FE FE FE 68 34 00 C3 05 09 00 00 00 00 10 00 34 75 85 01 07 00 10 02 00 01 01 05 06 00 00 09 AB 06 00 00 02 9E"
    " 06 00 00 03 25 06 00 00 02 48 06 00 00 01 9E 00 00 55 AC 16"
)
HPLC_VOLTAGE_REPLY = _hex(
    "FE FE FE FE 68 00 50 00 00 00 00 68 91 14 33 34 34 35 33 83 33 33 33 33 35 39 33 33 33 33 33 35 34 99 86 16"
)
WRITE_REPORT_RESET = _hex(
    "68 04 33 00 00 00 00 68 14 18 36 48 33 37 35 33 33 33 AB 89 67 45 32 F2 2E 32 32 32 32 32 32 32 32 32 DD 16"
)
VOLTAGE_REPLY = _hex("FE FE FE FE 68 11 11 11 11 11 11 68 91 06 33 34 34 35 78 53 68 16")
STATUS_WORD_REPORT = _hex(
    "FE FE FE FE 68 06 00 00 00 00 00 68 91 12 34 48 33 37 33 33 33 33 33 33 33 33 33 33 33 33 DD DD 7D 16"
)
ZW_1020 = VendorVersion("ZW", "10", date(2016, 10, 20), "1020")

#: What each vector's ``meaning`` documents of its data unit, decoded; a FrameError class
#: where the documented unit cannot be decoded by a strict decoder.
MEANINGS: dict[int, object] = {
    0: None,  # 12 F2 pause
    1: Monitor(MeterProtocol.DLT645_2007, _read(METER, 0x00010000), delay_related=True),
    2: Monitor(MeterProtocol.DLT698_45, OOP_GET_ENERGY, delay_related=True),
    3: CorrectedFrame(_read(METER, 0x00010000)),
    4: None,  # 12 F3 resume
    5: Monitor(MeterProtocol.DLT645_2007, _read(METER, 0x12010101)),  # A-phase over-voltage record
    6: Monitor(MeterProtocol.DLT645_2007, _read(METER, 0x1D000101)),  # trip record
    7: Monitor(MeterProtocol.DLT645_2007, _read(METER, 0x12010101, wake_up=4)),
    8: Monitor(MeterProtocol.DLT645_2007, WRITE_REPORT_RESET),
    9: Confirm(True, ALL_CHANNELS, 0),
    10: Confirm(True, range(1, 16), 0, legacy=True),
    11: None,  # 03 F1 query
    12: Monitor(MeterProtocol.DLT645_2007, _read(HPLC_METER, 0x02010100, wake_up=1)),
    13: MonitorReply(1, MeterProtocol.DLT645_2007, HPLC_VOLTAGE_REPLY),
    14: Monitor(MeterProtocol.DLT698_45, OOP_GET_ENERGY_HPLC),
    15: MonitorReply(1, MeterProtocol.DLT698_45, OOP_REPLY),
    16: ReadRequest(1, "111111111111", 4),
    17: ReadAnswer(ReadFlag.MAY_READ, _read("111111111111", 0x02010100, wake_up=4)),
    18: ReadData(3, MeterProtocol.DLT645_2007, 0, VOLTAGE_REPLY),
    19: None,  # 00 F1 confirm without data
    20: ReadAnswer(ReadFlag.DONE),
    21: MeterEvent(1, MeterProtocol.DLT645_2007, STATUS_WORD_REPORT),
    22: None,  # 03 F1 query
    23: ZW_1020,
    24: None,  # 03 F10 query
    25: RunMode(
        comm_type=2, routing=True, node_info_needed=True, read_mode=2,
        delay_support=0b111, failed_switch=1, broadcast_confirm=True, broadcast_channel=0,
        channels=1, outage=0, monitor_timeout=20, broadcast_timeout=10, max_frame=2048, max_file_packet=2048,
        upgrade_wait=30, main_node="020101010000", max_nodes=2040, nodes=1,
        release_date=date(2016, 6, 28), filing_date=date(2016, 6, 27), vendor=ZW_1020, rates=[Rate(0, kbps=True)],
    ),
    26: None,  # 03 F8 query
    27: Deny(DenyReason.UNSUPPORTED),
    28: FrameError,  # 03 F11 sent without its 1-byte AFN: the module denied it with "length error" (29)
    29: Deny(DenyReason.LENGTH),
    30: AddNodes([Node("000000000006", MeterProtocol.DLT645_2007)]),
    31: Confirm(False, (), 0),
    32: None,  # 10 F4 query
    33: RouteStatus(True, True, False, 1, 0, 0, 0x02, Rate(0), (0, 0, 0), (8, 8, 8)),
    34: MainNode("BBBBBBBBBBBB"),
    35: None,  # 10 F1 query
    36: NodeCount(1, 2040),
    37: NodeQuery(1, 10),
    38: NodePage(1, [NodeInfo("000000000006", protocol=MeterProtocol.DLT645_2007)]),
}


def test_the_data_file_holds_every_vector_and_each_has_its_meaning():
    assert len(VECTORS) == 39
    assert sorted(MEANINGS) == list(ALL)


# --- the frame layer ---------------------------------------------------------------------


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_reencodes_byte_identically(index):
    assert gdw1376_2.encode(_frame(index)) == _wire(index)


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_length_and_checksum(index):
    frame, checker, wire = _frame(index), _checker(index), _wire(index)
    assert frame.length == checker["L_total"] == len(wire)
    assert f"{wire[-2]:02X}" == checker["cs_expected"] == checker["cs_in_frame"]


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_control_field(index):
    frame, checker = _frame(index), _checker(index)
    assert f"{frame.control:02X}" == checker["C"]
    assert frame.direction == Direction(checker["DIR"])
    assert frame.prm == bool(checker["PRM"])
    assert frame.mode == checker["comm_mode"]


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_information_field_common_bits(index):
    frame, checker = _frame(index), _checker(index)
    assert frame.info.encode().hex(" ").upper() == checker["R"]
    assert frame.info.no_routing == bool(checker["R_route_flag"])
    assert frame.info.module == bool(checker["R_comm_module_flag"])
    assert frame.info.relay_level == checker["R_relay_level"]
    assert frame.info.channel == checker["R_channel"]
    assert frame.info.seq == checker["R_msg_seq"]


DOWNLINK = [i for i in ALL if _checker(i)["DIR"] == 0]
UPLINK = [i for i in ALL if _checker(i)["DIR"] == 1]


@pytest.mark.parametrize("index", _params(DOWNLINK))
def test_vector_downlink_information_field(index):
    info, checker = _frame(index).info, _checker(index)
    assert isinstance(info, DownInfo)
    assert info.expected_reply == checker["R_expected_reply_bytes"]
    optional = {
        "R_attached_node_flag": info.attached,
        "R_conflict_detect": info.conflict_detection,
        "R_fec": info.fec,
        "R_rate": info.rate,
        "R_rate_unit_kbps": info.rate_kbps,
    }
    for key, value in optional.items():
        if key in checker:  # the later vectors' checker decodes these too
            assert value == checker[key], key


@pytest.mark.parametrize("index", _params(UPLINK))
def test_vector_uplink_information_field(index):
    info, checker = _frame(index).info, _checker(index)
    assert isinstance(info, UpInfo)
    if "R_measured_phase" not in checker:  # the 2012 trace (vector 10): its checker reads R3 as a count
        assert info.encode()[2] == checker["R_expected_reply_bytes"]
        return
    assert info.phase == checker["R_measured_phase"]
    assert info.channel_feature == checker["R_meter_channel_feature"]
    assert info.command_quality == checker["R_last_cmd_quality"]
    assert info.reply_quality == checker["R_last_reply_quality"]
    assert info.event == bool(checker["R_event_flag"])
    assert any(info.reserved) == checker["R_reserved_bits_nonzero"]


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_address_field(index):
    frame, checker = _frame(index), _checker(index)
    if checker["A_src"] is None:
        assert frame.addresses is None
        return
    assert (frame.addresses.source, frame.addresses.destination) == (checker["A_src"], checker["A_dst"])
    assert frame.addresses.relays == ()


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_afn_fn_and_data(index):
    frame, checker = _frame(index), _checker(index)
    assert (frame.afn, [frame.fn]) == (int(checker["AFN"], 16), checker["Fn"])
    assert frame.data.hex(" ").upper() == checker["unit_data"]


def test_the_hplc_vectors_say_broadband_and_the_script_mixes_modes():
    assert {_frame(i).mode for i in range(12, 39)} == {CommMode.HPLC}
    assert _frame(5).mode == CommMode.CENTRALISED_PLC


def test_an_uplink_with_relay_level_15_still_carries_only_source_and_destination():
    frame = _frame(34)
    assert (frame.info.relay_level, frame.info.module) == (15, True)
    assert frame.addresses == gdw1376_2.Addresses("000000000006", "111111111111")
    assert frame.info.reserved == bytes((0x08, 0xF0, 0, 0, 0xFE, 0))  # R1 D3, R2 D7-D4, R5 D7-D1 as sent


def test_the_stream_decoder_finds_every_vector_in_one_stream():
    stream = b"".join(_wire(i) + b"\x00\x16\xfe" for i in ALL)
    decoder = gdw1376_2.StreamDecoder()
    assert decoder.feed(stream) == [_frame(i) for i in ALL]
    assert (decoder.skipped, decoder.pending) == (3 * len(VECTORS), 0)


# --- the data units ----------------------------------------------------------------------


DECODED = [i for i in ALL if MEANINGS[i] is not FrameError]


@pytest.mark.parametrize("index", _params(DECODED))
def test_vector_data_unit_is_the_documented_meaning(index):
    assert data.decode_unit(_frame(index)) == MEANINGS[index]


@pytest.mark.parametrize("index", _params(DECODED))
def test_vector_frame_rebuilds_from_its_meaning(index):
    frame = _frame(index)
    rebuilt = data.unit_frame(frame.afn, frame.fn, MEANINGS[index], info=frame.info, addresses=frame.addresses, prm=frame.prm, mode=frame.mode)
    assert gdw1376_2.encode(rebuilt) == _wire(index)


def test_a_query_sent_without_its_data_unit_is_a_frame_error_and_the_module_said_so():
    with pytest.raises(FrameError, match="03 F11"):
        data.decode_unit(_frame(28))
    assert data.decode_unit(_frame(29)).reason == DenyReason.LENGTH


def test_the_monitored_meter_answers_the_di_it_was_asked():
    asked = dlt645.decode(data.decode_unit(_frame(12)).frame)
    reply = data.decode_unit(_frame(13))
    meter = dlt645.decode(reply.frame)  # the 4 FE of the carried frame are DL/T 645 wake-up bytes
    assert meter.address == asked.address == HPLC_METER
    assert dlt645.parse_read_reply(meter)[0] == int.from_bytes(asked.data, "little") == 0x02010100


def test_the_router_led_exchange_reads_204_5_volts():
    request, answer, report, confirm, done = (_frame(i) for i in range(16, 21))
    # the concentrator answers the module's 14 F1 with its R6, a frame to send, the meter as destination
    assert answer.info.seq == report.info.seq == confirm.info.seq == done.info.seq == request.info.seq
    assert answer.addresses.destination == data.decode_unit(request).address
    assert dlt645.decode(data.decode_unit(answer).frame).address == "111111111111"
    # the meter's answer comes back as 06 F2, which the concentrator confirms with 00 F1
    di, payload = dlt645.parse_read_reply(dlt645.decode(data.decode_unit(report).frame))
    assert (di, decode_value(ITEMS[di], payload)) == (0x02010100, Decimal("204.5"))
    assert (confirm.afn, confirm.fn, data.decode_unit(confirm)) == (Afn.CONFIRM, 1, None)
    assert data.decode_unit(done).flag == ReadFlag.DONE


def test_the_meter_event_carries_the_status_word_report():
    event = data.decode_unit(_frame(21))
    meter = dlt645.decode(event.frame)
    assert dlt645.parse_read_reply(meter)[0] == 0x04001501


def test_the_run_mode_report_repeats_the_vendor_block():
    assert data.decode_unit(_frame(25)).vendor == data.decode_unit(_frame(23))
