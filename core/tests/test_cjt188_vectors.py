"""Every public CJ/T 188 vector decodes to its documented meaning and re-encodes byte for byte.

The vectors (tests/data/cjt188.json) are real frames from public sources; their
``meaning`` and ``checker`` blocks were written and checksum-verified independently of
this codec. What each ``meaning`` says in prose is transcribed in ``MEANINGS`` below,
and every vector must have an entry there, so a vector added to the file without its
meaning fails instead of passing unchecked.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from meterhub.errors import ChecksumError, NotSupported
from meterhub.model import Measurement
from meterhub.protocols import cjt188
from meterhub.protocols import cjt188_data as data
from meterhub.protocols.cjt188 import WILDCARD, Control, DiOrder, StreamDecoder
from meterhub.protocols.cjt188_data import Amount, FlowRecord, NoTime

VECTORS = json.loads((Path(__file__).parent / "data" / "cjt188.json").read_text("utf-8"))["vectors"]

M3 = data.UNIT_M3
MSB, LSB = DiOrder.MSB_FIRST, DiOrder.LSB_FIRST


def _amount(value: str | None) -> Amount:
    return Amount(None if value is None else Decimal(value), M3)


def _record(current: str | None, settlement: str | None, clock: datetime | NoTime, status: int) -> FlowRecord:
    return FlowRecord(_amount(current), _amount(settlement), clock, status)


ZERO = NoTime.UNSET

#: What each vector's ``meaning`` documents, by index: the frame kind, its DI byte order,
#: SER and, for metering replies, the 901F record (current and settlement volume, real
#: time, ST as a word: the first ST byte is the low byte).
MEANINGS: dict[int, dict] = {
    0: {"kind": "read", "order": MSB, "ser": 1},
    1: {"kind": "read", "order": MSB, "ser": 1},
    2: {"kind": "negative"},  # CS 24 where the bytes sum to 25
    3: {"kind": "metering", "order": MSB, "ser": 1,
        "record": _record("0.00", "0.00", datetime(2017, 1, 9, 17, 20, 6), 0x0000)},
    4: {"kind": "metering", "order": MSB, "ser": 0, "record": _record("2.00", "2.00", ZERO, 0xFF00)},  # ST "00 FF"
    5: {"kind": "read", "order": LSB, "ser": 0},  # DI_wire 1F 90
    6: {"kind": "metering", "order": MSB, "ser": 0, "record": _record("123.00", "0.00", ZERO, 0x0000)},
    7: {"kind": "metering", "order": LSB, "ser": 0,
        "record": _record("556677.00", "556677.00", datetime(2015, 5, 11, 22, 1, 31), 0x8421)},  # ST "21 84"
    8: {"kind": "negative"},  # the widely copied CS 08 where the bytes sum to 13
    9: {"kind": "metering", "order": LSB, "ser": 0, "record": _record("0.00", "0.00", ZERO, 0x0000)},
    10: {"kind": "metering", "order": LSB, "ser": 4, "record": _record("68.00", "0.00", ZERO, 0x0000)},
    11: {"kind": "metering", "order": LSB, "ser": 2,
         "record": _record("0.00", "0.00", datetime(2017, 8, 19, 16, 54, 59), 0x0113)},  # ST "13 01"
    12: {"kind": "metering", "order": MSB, "ser": 0x96, "record": _record("55555.00", "55555.00", ZERO, 0x0000)},
    13: {"kind": "read", "order": MSB, "ser": 0x90},
    14: {"kind": "metering", "order": MSB, "ser": 1, "record": _record("2222.00", "0.00", ZERO, 0x0000)},
    15: {"kind": "read", "order": MSB, "ser": 0xAA},
    16: {"kind": "metering", "order": MSB, "ser": 0xAA,
         "record": _record("5959.00", None, NoTime.UNSUPPORTED, 0x0000)},  # settlement and time FF
    17: {"kind": "metering", "order": MSB, "ser": 0, "record": _record("0.29", "0.29", ZERO, 0x2300)},  # ST "00 23"
    18: {"kind": "valve", "order": MSB, "ser": 1, "action": 0x55},  # open
    19: {"kind": "valve", "order": MSB, "ser": 1, "action": 0x99},  # close
    20: {"kind": "valve", "order": MSB, "ser": 1, "action": 0x66},  # vendor "free open"
    21: {"kind": "read_address", "order": MSB, "ser": 1},
    22: {"kind": "address_reply", "order": MSB, "ser": 1},
}

GOOD = [i for i, v in enumerate(VECTORS) if v["checksum_verified"]]
NEGATIVE = [i for i, v in enumerate(VECTORS) if not v["checksum_verified"]]


def _wire(index: int) -> bytes:
    return bytes.fromhex(VECTORS[index]["hex"])


def _id(index: int) -> str:
    v = VECTORS[index]
    return f"{index:02d}-{v['direction'][:4]}-C{v['checker']['C']}-{MEANINGS.get(index, {}).get('kind', '?')}"


def _params(indices: list[int]) -> list:
    return [pytest.param(i, id=_id(i)) for i in indices]


def test_every_vector_has_a_transcribed_meaning():
    assert sorted(MEANINGS) == list(range(len(VECTORS)))
    assert len(VECTORS) == 23
    assert [i for i, m in MEANINGS.items() if m["kind"] == "negative"] == NEGATIVE == [2, 8]


@pytest.mark.parametrize("index", _params(GOOD))
def test_header_fields_match_the_independent_checker(index):
    checker = VECTORS[index]["checker"]
    frame = cjt188.decode(_wire(index))
    assert frame.meter_type == int(checker["T"], 16)
    assert frame.address == checker["addr"]
    assert frame.control == int(checker["C"], 16)
    assert len(frame.data) == checker["L"]
    assert frame.data == bytes.fromhex(checker["data"])


@pytest.mark.parametrize("index", _params(GOOD))
def test_decoded_frame_re_encodes_byte_for_byte(index):
    frame = cjt188.decode(_wire(index))
    assert cjt188.encode(frame, preamble=VECTORS[index]["checker"]["preamble_fe"]) == _wire(index)


@pytest.mark.parametrize("index", _params(GOOD))
def test_di_order_and_ser_are_as_documented(index):
    meaning = MEANINGS[index]
    body = cjt188.parse_body(cjt188.decode(_wire(index)))
    assert body.di_order is meaning["order"]
    assert body.ser == meaning["ser"]
    expected_di = {"read": 0x901F, "metering": 0x901F, "valve": 0xA017, "read_address": 0x810A, "address_reply": 0x810A}
    assert body.di == expected_di[meaning["kind"]]


def _rebuilt(index: int) -> cjt188.Frame:
    """The vector's frame built from its documented meaning with the codec's builders."""
    meaning, frame = MEANINGS[index], cjt188.decode(_wire(index))
    kind, order, ser = meaning["kind"], meaning["order"], meaning["ser"]
    t, address = frame.meter_type, frame.address
    if kind == "read":
        return cjt188.read_request(t, address, 0x901F, ser, di_order=order)
    if kind == "metering":
        return cjt188.read_reply(t, address, 0x901F, ser, data.encode_record(meaning["record"]), di_order=order)
    if kind == "valve":
        return cjt188.valve_request(t, address, ser, meaning["action"], di_order=order)
    if kind == "read_address":
        return cjt188.read_address_request(t, ser, di_order=order)
    assert kind == "address_reply"
    return cjt188.read_address_reply(t, address, ser, di_order=order)


@pytest.mark.parametrize("index", _params(GOOD))
def test_frame_built_from_its_meaning_is_the_captured_bytes(index):
    preamble = VECTORS[index]["checker"]["preamble_fe"]
    assert cjt188.encode(_rebuilt(index), preamble=preamble) == _wire(index)


METERING = [i for i in GOOD if MEANINGS[i]["kind"] == "metering"]


@pytest.mark.parametrize("index", _params(METERING))
def test_metering_reply_decodes_to_the_documented_record(index):
    frame = cjt188.decode(_wire(index))
    body = cjt188.parse_reply(frame, Control.READ_DATA, 0x901F)
    assert data.decode_record(cjt188.family_of(frame.meter_type), body.payload) == MEANINGS[index]["record"]


@pytest.mark.parametrize("index", _params(METERING))
def test_metering_reply_answers_the_water_quantities(index):
    record = MEANINGS[index]["record"]
    frame = cjt188.decode(_wire(index))
    payload = cjt188.parse_body(frame).payload
    got = data.measurements(0x10, data.decode_record(cjt188.Family.WATER, payload), ["8-0:1.0.0", "8-0:1.0.1", "0-0:1.0.0", "0-0:97.97.0"])
    assert got[0] == Measurement(record.current.value, "m3")
    if record.settlement.value is None:
        assert isinstance(got[1], NotSupported)
    else:
        assert got[1] == Measurement(record.settlement.value, "m3")
    if isinstance(record.clock, datetime):
        assert got[2] == Measurement(record.clock.isoformat(), "")
    else:
        assert isinstance(got[2], NotSupported)
    assert got[3] == Measurement(f"{record.status:04X}", "")


def test_the_cnblogs_sample_in_prose():
    """Vector 7, as its source documents it: 556677.00 m³, 2015-05-11 22:01:31, address 78330011223344."""
    frame = cjt188.decode(_wire(7))
    record = data.decode_record(cjt188.Family.WATER, cjt188.parse_body(frame).payload)
    assert frame.address == "78330011223344"
    assert cjt188.address_to_wire(frame.address) == bytes.fromhex("44 33 22 11 00 33 78")
    assert data.value_of(0x10, record, "8-0:1.0.0") == Measurement(Decimal("556677.00"), "m3")
    assert data.value_of(0x10, record, "0-0:1.0.0") == Measurement("2015-05-11T22:01:31", "")


def test_the_go_poller_reply_reports_ff_fields_as_not_supported():
    record = data.decode_record(cjt188.Family.WATER, cjt188.parse_body(cjt188.decode(_wire(16))).payload)
    assert data.value_of(0x10, record, "8-0:1.0.0") == Measurement(Decimal("5959.00"), "m3")
    with pytest.raises(NotSupported, match="FF"):
        data.value_of(0x10, record, "8-0:1.0.1")
    with pytest.raises(NotSupported, match="FF"):
        data.value_of(0x10, record, "0-0:1.0.0")


def test_wildcard_requests_use_the_universal_address():
    for index in (0, 13, 15, 21):
        assert cjt188.decode(_wire(index)).address == WILDCARD


def test_read_address_reply_names_the_meter_in_its_header():
    assert cjt188.parse_read_address_reply(cjt188.decode(_wire(22))) == "34129078563412"


def test_the_meter_answered_in_the_other_byte_order_than_asked():
    """Vectors 5 and 6 are one exchange: asked 1F 90, answered 90 1F (README §2.4.1)."""
    request, reply = cjt188.decode(_wire(5)), cjt188.decode(_wire(6))
    assert request.address == reply.address
    assert cjt188.parse_body(request).di_order is LSB and cjt188.parse_body(reply).di_order is MSB
    assert cjt188.parse_reply(reply, Control.READ_DATA, cjt188.parse_body(request).di).di == 0x901F


@pytest.mark.parametrize("index", _params(NEGATIVE))
def test_negative_vector_is_a_checksum_error(index):
    checker = VECTORS[index]["checker"]
    with pytest.raises(ChecksumError, match=f"frame says {checker['cs_in_frame']}, bytes sum to {checker['cs_expected']}"):
        cjt188.decode(_wire(index))


@pytest.mark.parametrize("index", _params(NEGATIVE))
def test_stream_decoder_reports_a_negative_vector_and_finds_the_next_frame(index):
    decoder = StreamDecoder()
    items = decoder.feed(_wire(index) + _wire(index - 1))
    assert isinstance(items[0], ChecksumError)
    assert items[1:] == [cjt188.decode(_wire(index - 1))]


def test_stream_decoder_finds_every_vector_in_one_stream():
    stream = b"".join(_wire(i) for i in range(len(VECTORS)))
    items = StreamDecoder().feed(stream)
    frames = [item for item in items if isinstance(item, cjt188.Frame)]
    errors = [item for item in items if not isinstance(item, cjt188.Frame)]
    assert frames == [cjt188.decode(_wire(i)) for i in GOOD]
    assert len(errors) == len(NEGATIVE) and all(isinstance(e, ChecksumError) for e in errors)
