"""Every public Q/GDW 1376.1 vector decodes to its documented meaning and re-encodes byte for byte.

The vectors (tests/data/gdw1376_1.json) are captures and repository strings from public
sources; their ``checker`` blocks were recomputed by an independent checker. What each
``meaning`` says of the data units is transcribed in ``MEANINGS`` below, and every vector
must have an entry there, so a vector added without its meaning fails instead of passing
unchecked.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from meterhub.errors import FrameError
from meterhub.protocols import dlt645, gdw1376_1
from meterhub.protocols import gdw1376_1_data as data
from meterhub.protocols.dlt645_data import ITEMS, decode_value
from meterhub.protocols.gdw1376_1 import Direction, EventCounters, PartialTime, TimeTag
from meterhub.protocols.gdw1376_1_data import (
    Clock,
    DailyIndications,
    DayTag,
    EventReply,
    Forward,
    ForwardIndications,
    ForwardReply,
    Heartbeat,
    Instantaneous,
    Item,
    KeepPower,
    MeterArchive,
    MeterRecord,
    MonthlyIndications,
    MonthTag,
    RawEvent,
    RemoteTrip,
    SerialSettings,
    TariffEnergy,
    UnitResult,
    UnitResults,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "gdw1376_1.json").read_text("utf-8"))["vectors"]


def _wire(index: int) -> bytes:
    return bytes.fromhex(VECTORS[index]["hex"])


def _frame(index: int) -> gdw1376_1.Frame:
    return gdw1376_1.decode(_wire(index))


def _checker(index: int) -> dict:
    return VECTORS[index]["checker"]


def _params(indices) -> list:
    return [pytest.param(i, id=f"{i:02d}-AFN{_checker(i)['AFN']}-F{_checker(i)['first_unit']['Fn'][0]}") for i in indices]


ALL = range(len(VECTORS))
NONE = (None,) * 4
EE5 = (None,) * 5  # a block of total + 4 tariffs, all EE
ONE_HUNDREDTH = Decimal("0.0100")


def _dlt645_frame(address: str, control: int, data_hex: str) -> bytes:
    """A DL/T 645 frame as forwarded in AFN 10 F1, built by the DL/T 645 codec (data unscrambled)."""
    return dlt645.encode(dlt645.Frame(address, control, bytes.fromhex(data_hex)), preamble=0)


FORWARD_2400_8E1 = SerialSettings(2400, "E", 8, 1)  # control word 6Bh
METER = "151230011061"


def _forward(frame: bytes) -> Forward:
    return Forward(31, FORWARD_2400_8E1, 60, True, 10, frame)  # port 31, 60 s frame timeout, 100 ms byte timeout


#: The vendor ("rgm") record of vector 37: 32 synthetic bytes of an ERC no standard defines.
RGM_RECORD = "36 09 15 04 15 02 00 01 02 03 03 03 03 03 03 44 44 11 11 22 22 33 33 44 44 44 55 55 55 66 66 66"

LOGIN, LOGOUT = (Item(0, 1, None),), (Item(0, 2, None),)
HEARTBEAT = (Item(0, 3, Heartbeat()),)
CONFIRMED = (Item(0, 1, None),)

#: What each vector's ``meaning`` documents of its data units, as decoded items; a
#: FrameError class where the documented body cannot be split by a strict decoder.
MEANINGS: dict[int, tuple[Item, ...] | type[Exception]] = {
    0: LOGIN,
    1: CONFIRMED,
    2: HEARTBEAT,
    3: (Item(0, 1, None),),  # AFN 01 F1 hardware init
    4: CONFIRMED,
    5: (Item(0, 1, _forward(_dlt645_frame(METER, 0x11, "00000100"))),),  # read 00010000
    6: (Item(0, 1, ForwardReply(31, _dlt645_frame(METER, 0x91, "00000100" "78060000"))),),  # 6.78 kWh
    # relay control: PA 02, password 370602, operator 01000000, N1 1B (close permit) / 1A (trip), N2 00,
    # valid until 2099-12-30 00:00:00
    7: (Item(0, 1, _forward(_dlt645_frame(METER, 0x1C, "02" "370602" "01000000" "1B" "00" "000000301299"))),),
    8: (Item(0, 1, ForwardReply(31, _dlt645_frame(METER, 0x9C, ""))),),
    9: (Item(0, 1, _forward(_dlt645_frame(METER, 0x1C, "02" "370602" "01000000" "1A" "00" "000000301299"))),),
    10: (Item(0, 1, ForwardReply(31, _dlt645_frame(METER, 0x9C, ""))),),
    11: (Item(0, 1, _forward(_dlt645_frame(METER, 0x11, "03050004"))),),  # read 04000503
    12: (Item(0, 1, ForwardReply(31, _dlt645_frame(METER, 0x91, "03050004" "5000"))),),  # status word 3 = 0050h
    13: (Item(0, 1, ForwardReply(31, _dlt645_frame(METER, 0x91, "03050004" "0000"))),),  # status word 3 = 0000h
    14: (Item(0, 2, None),),
    15: (Item(0, 2, Clock(datetime(2015, 12, 15, 11, 48, 49), 2)),),
    16: (Item(2, 129, None),),
    17: tuple(Item(pn, fn, DayTag(date(2011, 12, 25))) for pn in range(2, 7) for fn in (161, 163)),
    18: (Item(1, 2, None),),  # permit close
    19: (Item(1, 1, RemoteTrip(0, 0)),),
    20: (Item(0, 25, KeepPower(0)),),
    21: (Item(1, 33, None),),
    22: (Item(1, 25, None),),
    23: (Item(1, 23, None),),
    24: (Item(1, 25, None),),
    25: (Item(0, 22, None),),
    26: HEARTBEAT,
    27: (Item(0, 3, UnitResults(0x02, [UnitResult((0,), (3,), 0)])),),
    28: LOGIN,
    29: HEARTBEAT,
    30: HEARTBEAT,
    31: CONFIRMED,
    32: (Item(0, 89, None),),
    33: (Item(0, 1, None),),
    34: (Item(0, 1, None),),
    35: CONFIRMED,
    36: LOGIN,
    # EC1 14h EC2 0Bh Pm 13h Pn 14h, one record ERC 34h (the vendor's 52) of Le 20h
    37: (Item(0, 1, EventReply(0x14, 0x0B, 0x13, 0x14, [RawEvent(0x34, bytes.fromhex(RGM_RECORD))])),),
    38: LOGIN,
    39: LOGOUT,
    40: (Item(1, 129, None),),
    41: (Item(1, 129, TariffEnergy(datetime(2018, 8, 28, 16, 18), (ONE_HUNDREDTH, None, None, None, None))),),
    42: (Item(1, 25, None),),
    43: (
        Item(
            1,
            25,
            Instantaneous(
                datetime(2018, 8, 28, 16, 47),
                active=(Decimal("0.0000"), Decimal("0.0000"), None, None),
                reactive=NONE,
                power_factor=(Decimal("100.0"), Decimal("100.0"), None, None),
                voltage=(Decimal("242.7"), None, None),
                current=(Decimal("0.000"), None, None, None),
                apparent=NONE,
            ),
        ),
    ),
    44: (Item(1, 33, None),),
    45: (Item(1, 33, ForwardIndications(datetime(2018, 8, 28, 16, 48), (ONE_HUNDREDTH, *EE5[1:]), EE5, EE5, EE5)),),
    46: (Item(1, 1, DayTag(date(2018, 8, 27))),),
    47: (
        Item(
            1,
            1,
            DailyIndications(
                date(2018, 8, 27), ForwardIndications(datetime(2018, 8, 27, 23, 59), (ONE_HUNDREDTH, *EE5[1:]), EE5, EE5, EE5)
            ),
        ),
    ),
    48: (Item(1, 17, MonthTag(PartialTime(year=2018, month=7))),),
    49: (
        Item(
            1,
            17,
            MonthlyIndications(
                PartialTime(year=2018, month=7),
                ForwardIndications(datetime(2018, 7, 31, 23, 59), (ONE_HUNDREDTH, *EE5[1:]), EE5, EE5, EE5),
            ),
        ),
    ),
    50: FrameError,  # DT 03 00 with the AFN 00 F3 body: F1 and F2 carry no data, so "02 00" reads as a bad DA
    51: (
        Item(
            0,
            10,
            MeterArchive(
                [MeterRecord(1, 0, port=1, baud=4800, protocol=30, address="000000000000", password=bytes(6),
                             tariffs=4, digits=4, decimals=1, collector="000000000000", user_class=(0, 1))]
            ),
        ),
    ),
    52: (
        Item(
            0,
            10,
            MeterArchive(
                [MeterRecord(1, 1, port=1, baud=600, protocol=0, address="112233445566", password=bytes.fromhex("222222111111"),
                             tariffs=0, digits=5, decimals=2, collector="112233666666", user_class=(3, 1))]
            ),
        ),
    ),
}

ZERO_PW = bytes(16)


def _tp(pfc: int, second: int, minute: int, hour: int, day: int, delay: int) -> TimeTag:
    return TimeTag(pfc, PartialTime(day=day, hour=hour, minute=minute, second=second), delay)


#: The auxiliary fields the ``meaning`` blocks document: (PW, EC, Tp).
AUX: dict[int, tuple[bytes | None, EventCounters | None, TimeTag | None]] = {
    3: (ZERO_PW, None, _tp(0, 28, 53, 13, 7, 5)),
    4: (None, EventCounters(0x11, 0x00), _tp(0, 27, 52, 13, 7, 5)),
    5: (ZERO_PW, None, _tp(0, 13, 51, 23, 21, 5)),
    6: (None, EventCounters(0x4F, 0x00), _tp(0, 6, 50, 23, 21, 5)),
    18: (ZERO_PW, None, _tp(1, 23, 12, 17, 4, 5)),
    21: (None, None, _tp(2, 16, 59, 14, 22, 5)),  # read request: Tp only, no PW
    34: (None, None, _tp(0x21, 0, 0, 0, 0, 0)),  # an all-zero send time
    40: (None, None, _tp(2, 39, 19, 16, 28, 0)),
    41: (None, None, _tp(2, 39, 19, 16, 28, 0)),  # the request's Tp, echoed
    51: (ZERO_PW, None, _tp(1, 42, 11, 8, 3, 5)),
    52: (bytes.fromhex("6789") + bytes(14), None, None),  # a non-zero PW, no Tp
}


def test_the_data_file_holds_every_vector_and_each_has_its_meaning():
    assert len(VECTORS) == 53
    assert sorted(MEANINGS) == list(ALL)


# --- the frame layer ---------------------------------------------------------------------


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_reencodes_byte_identically(index):
    wire = _wire(index)
    preamble = len(wire) - len(wire.lstrip(b"\xfe"))
    assert gdw1376_1.encode(_frame(index), preamble=preamble) == wire


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_length_field_and_checksum(index):
    frame, checker = _frame(index), _checker(index)
    body = _wire(index).lstrip(b"\xfe")
    assert frame.protocol == checker["protocol_id"]
    assert frame.user_data_length == checker["user_data_len"] == len(body) - 8
    assert f"{body[-2]:02X}" == checker["cs_expected"] == checker["cs_in_frame"]


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_control_field(index):
    frame, checker = _frame(index), _checker(index)
    assert f"{frame.control:02X}" == checker["C"]
    assert frame.direction == Direction(checker["DIR"])
    assert frame.prm == bool(checker["PRM"])
    assert (frame.acd if frame.direction is Direction.UP else frame.fcb) == bool(checker["FCB_or_ACD"])
    assert frame.fcv == bool(checker["FCV"])
    assert frame.function == checker["func"]


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_address(index):
    frame, checker = _frame(index), _checker(index)
    assert frame.area == checker["A1_area_code_BCD"]
    assert frame.terminal == checker["A2_terminal_addr"]
    assert frame.master << 1 | frame.group == int(checker["A3"], 16)


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_afn_and_sequence(index):
    frame, checker = _frame(index), _checker(index)
    assert frame.afn == int(checker["AFN"], 16)
    assert f"{frame.seq_byte:02X}" == checker["SEQ"]
    assert (frame.tp is not None, frame.fir, frame.fin, frame.con) == tuple(
        bool(checker[k]) for k in ("TpV", "FIR", "FIN", "CON")
    )
    assert frame.seq == checker["PSEQ_RSEQ"]


@pytest.mark.parametrize("index", _params(ALL))
def test_vector_first_data_unit(index):
    first = _checker(index)["first_unit"]
    payload = _frame(index).payload
    assert payload[:4] == bytes.fromhex(first["DA"] + first["DT"])
    points, functions = gdw1376_1.unit_id_from_wire(payload[:4])
    assert list(points) == first["pn"]
    assert list(functions) == first["Fn"]


@pytest.mark.parametrize("index", _params(sorted(AUX)))
def test_vector_auxiliary_fields(index):
    frame = _frame(index)
    assert (frame.pw, frame.ec, frame.tp) == AUX[index]


def test_the_2005_edition_request_is_read_like_a_2013_one():
    frame = _frame(17)
    assert frame.protocol == gdw1376_1.PROTOCOL_2005
    assert (frame.area, frame.terminal, frame.master) == ("4302", 0x078B, 0x14 >> 1)


def test_the_local_port_vector_has_a_preamble_that_is_not_part_of_the_frame():
    assert gdw1376_1.encode(_frame(32)) == _wire(32)[4:]


def test_the_broadcast_vectors_send_a2_ffff_with_the_group_flag():
    for index in (18, 19, 20, 21, 51):
        frame = _frame(index)
        assert (frame.terminal, frame.group) == (gdw1376_1.BROADCAST_TERMINAL, True)


def test_the_stream_decoder_finds_every_vector_in_one_stream():
    stream = b"".join(_wire(i) + b"\x00\x68\x16" for i in ALL)
    assert gdw1376_1.StreamDecoder().feed(stream) == [_frame(i) for i in ALL]


# --- the data units ----------------------------------------------------------------------


SPLIT = [i for i in ALL if MEANINGS[i] is not FrameError]


@pytest.mark.parametrize("index", _params(SPLIT))
def test_vector_items_are_the_documented_meaning(index):
    assert data.items(_frame(index)) == MEANINGS[index]


@pytest.mark.parametrize("index", _params(SPLIT))
def test_vector_units_rebuild_from_their_values(index):
    frame = _frame(index)
    units = data.units(frame)
    rebuilt = [data.unit(u.points, u.functions, [i.value for i in data.decode_unit(frame.afn, frame.direction, u)]) for u in units]
    assert gdw1376_1.pack_units(rebuilt) == frame.payload


def test_the_separate_confirm_quirk_is_rejected_by_the_strict_splitter():
    frame = _frame(50)
    assert gdw1376_1.unit_id_from_wire(frame.payload[:4]) == ((0,), (1, 2))
    with pytest.raises(FrameError):
        data.items(frame)


def test_the_forwarded_meter_reply_reads_678_kwh():
    reply = data.items(_frame(6))[0].value
    di, payload = dlt645.parse_read_reply(dlt645.decode(reply.frame))
    assert (di, decode_value(ITEMS[di], payload)) == (0x00010000, Decimal("6.78"))


def test_the_forwarding_control_word_is_2400_8e1():
    request = data.items(_frame(5))[0].value
    assert request.settings.encode() == b"\x6b"
    assert request.byte_timeout * 10 == 100  # ms


def test_the_login_confirm_echoes_the_login_sequence():
    login, confirm = _frame(0), _frame(1)
    assert (login.con, confirm.con, confirm.seq) == (True, False, login.seq)
    assert confirm.function == gdw1376_1.SecondaryFunction.LINK_STATUS
