"""Every public DL/T 645 vector decodes to its documented meaning and re-encodes byte for byte.

The vectors (tests/data/dlt645.json) are real captures from public sources; their
``meaning`` blocks were written and checksum-verified independently of this codec.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from meterhub.errors import ChecksumError, MeterError
from meterhub.protocols import dlt645
from meterhub.protocols.dlt645 import Control, Control1997, Frame, RelayAction
from meterhub.protocols.dlt645_data import ITEMS, ITEMS_1997, decode_block, decode_value

VECTORS = json.loads((Path(__file__).parent / "data" / "dlt645.json").read_text("utf-8"))["vectors"]
BAD_CHECKSUM = 77  # documented negative vector: CS 85 where the bytes sum to 80


def _is_1997(v: dict) -> bool:
    return v["protocol"] == "DL/T 645-1997"


def _control(v: dict) -> int:
    return int(v["meaning"]["control"].split()[0], 16)


def _vector_id(index: int) -> str:
    v = VECTORS[index]
    di = v["meaning"].get("DI", "")
    return f"{index:02d}-{v['direction'][:4]}-C{_control(v):02X}{'-' + di if di else ''}{'-1997' if _is_1997(v) else ''}"


def _params(indices) -> list:
    return [pytest.param(i, id=_vector_id(i)) for i in indices]


def _wire(index: int) -> bytes:
    return bytes.fromhex(VECTORS[index]["hex"])


def _frame(index: int) -> Frame:
    return dlt645.decode(_wire(index))


GOOD = [i for i in range(len(VECTORS)) if i != BAD_CHECKSUM]
WITH_DI = [i for i in GOOD if "DI" in VECTORS[i]["meaning"]]

#: Values whose documented meaning is prose; what the prose says, as decode_value gives it.
PROSE_VALUES = {
    21: "2016-01-11",  # "2016-01-11, week day 01 (Monday)"
    23: "21:53:55",
    25: "2015-10-09T00:00",
    51: Decimal(0x0050),  # "0x0050: bit4 relay state=1 (open)..."
    52: Decimal(0x0000),  # "0x0000: relay closed"
}
NUMERIC_VALUES = [
    i for i in WITH_DI if isinstance(VECTORS[i]["meaning"].get("value"), (int, float)) and i not in PROSE_VALUES
]


def _item(index: int):
    v = VECTORS[index]
    return (ITEMS_1997 if _is_1997(v) else ITEMS)[int(v["meaning"]["DI"], 16)]


def _payload(index: int) -> bytes:
    frame = _frame(index)
    if _is_1997(VECTORS[index]):
        return dlt645.parse_read_reply_1997(frame)[1]
    return dlt645.parse_read_reply(frame)[1]


def test_the_data_file_holds_every_vector():
    assert len(VECTORS) == 78


@pytest.mark.parametrize("index", _params(GOOD))
def test_vector_reencodes_byte_identically(index):
    wire = _wire(index)
    preamble = len(wire) - len(wire.lstrip(b"\xfe"))
    assert dlt645.encode(dlt645.decode(wire), preamble=preamble) == wire


@pytest.mark.parametrize("index", _params(GOOD))
def test_vector_address(index):
    assert _frame(index).address == VECTORS[index]["meaning"]["address"].split()[0]


@pytest.mark.parametrize("index", _params(GOOD))
def test_vector_control_and_direction(index):
    frame = _frame(index)
    assert frame.control == _control(VECTORS[index])
    assert frame.is_reply == (VECTORS[index]["direction"] == "response")


@pytest.mark.parametrize("index", _params(WITH_DI))
def test_vector_data_identifier(index):
    frame = _frame(index)
    size = 2 if _is_1997(VECTORS[index]) else 4
    assert frame.data[:size] == int(VECTORS[index]["meaning"]["DI"], 16).to_bytes(size, "little")


@pytest.mark.parametrize("index", _params(NUMERIC_VALUES))
def test_vector_value_is_exact_decimal_with_unit(index):
    meaning = VECTORS[index]["meaning"]
    item = _item(index)
    value = decode_value(item, _payload(index))
    assert isinstance(value, Decimal)
    assert value == Decimal(str(meaning["value"]))
    assert value.as_tuple().exponent == -item.parts[0].decimals  # scaled by the format, not by float maths
    if "unit" in meaning:
        assert item.unit == meaning["unit"].rstrip("?")


@pytest.mark.parametrize("index", _params(PROSE_VALUES))
def test_vector_value_described_in_prose(index):
    assert decode_value(_item(index), _payload(index)) == PROSE_VALUES[index]


def test_status_word_3_bit_4_is_the_relay_state():
    open_, closed = (decode_value(_item(i), _payload(i)) for i in (51, 52))
    assert int(open_) & 0x10 and not int(closed) & 0x10


@pytest.mark.parametrize(
    "index, expected",
    [
        pytest.param(17, ["1.29", "0.62", "0.60", "0.03", "0.02"], id="17-energy-block"),
        pytest.param(19, ["225.6", None, None], id="19-voltage-block-single-phase-FF"),
        pytest.param(37, ["230.3", "0.0", "0.0"], id="37-voltage-block"),
        pytest.param(38, ["0.188", "0", "0"], id="38-current-block"),
    ],
)
def test_vector_block_values(index, expected):
    values = decode_block(_item(index), _payload(index))
    assert values == [None if e is None else Decimal(e) for e in expected]


def test_energy_block_matches_the_documented_values():
    documented = VECTORS[17]["meaning"]["values_kWh"]
    values = decode_block(_item(17), _payload(17))
    assert values == [Decimal(str(documented[k])) for k in ("total", "tariff1", "tariff2", "tariff3", "tariff4")]


@pytest.mark.parametrize(
    "index, serr, reason",
    [
        pytest.param(29, 0x02, "no requested data", id="29-D1-no-data"),
        pytest.param(40, 0x04, "password error / unauthorised", id="40-D1-password"),
    ],
)
def test_vector_abnormal_reply_raises_meter_error(index, serr, reason):
    with pytest.raises(MeterError) as info:
        dlt645.parse_read_reply(_frame(index))
    assert info.value.code == serr
    assert info.value.reason == reason


def test_negative_vector_raises_checksum_error():
    with pytest.raises(ChecksumError):
        dlt645.decode(_wire(BAD_CHECKSUM))


def test_negative_vector_is_reported_by_the_stream_decoder():
    items = dlt645.StreamDecoder().feed(_wire(BAD_CHECKSUM))
    assert len(items) == 1 and isinstance(items[0], ChecksumError)


# --- the builders produce the captured frames -------------------------------------------


READ_REQUESTS = [i for i in WITH_DI if _control(VECTORS[i]) in (Control.READ, Control1997.READ)]


@pytest.mark.parametrize("index", _params(READ_REQUESTS))
def test_read_request_builder_matches_capture(index):
    v = VECTORS[index]
    build = dlt645.read_request_1997 if _is_1997(v) else dlt645.read_request
    assert build(v["meaning"]["address"].split()[0], int(v["meaning"]["DI"], 16)) == _frame(index)


READ_REPLIES = [i for i in WITH_DI if _control(VECTORS[i]) in (0x91, 0x81)]


@pytest.mark.parametrize("index", _params(READ_REPLIES))
def test_read_reply_builder_matches_capture(index):
    v = VECTORS[index]
    build = dlt645.read_reply_1997 if _is_1997(v) else dlt645.read_reply
    frame = _frame(index)
    assert build(frame.address, int(v["meaning"]["DI"], 16), _payload(index)) == frame


def test_read_address_request_matches_capture():
    assert dlt645.read_address_request() == _frame(14)


@pytest.mark.parametrize("index", _params([15, 35]))
def test_read_address_reply(index):
    frame = _frame(index)
    assert dlt645.read_address_reply(frame.address) == frame
    assert dlt645.parse_read_address_reply(frame) == VECTORS[index]["meaning"]["address"]


@pytest.mark.parametrize("index, function", [pytest.param(48, Control.RELAY, id="48-9C"), pytest.param(54, Control.WRITE, id="54-94")])
def test_empty_normal_replies(index, function):
    frame = _frame(index)
    assert dlt645.normal_reply(frame.address, function) == frame
    dlt645.expect_reply(frame, function)  # does not raise


@pytest.mark.parametrize(
    "index, action, password, level, operator, valid_until",
    [
        pytest.param(47, RelayAction.CLOSE_PERMITTED, "370602", 2, "01000000", datetime(2099, 12, 30), id="47-close-permitted"),
        pytest.param(49, RelayAction.TRIP, "370602", 2, "01000000", datetime(2099, 12, 30), id="49-trip"),
        pytest.param(59, RelayAction.TRIP, "000000", 2, "00000000", None, id="59-trip-no-deadline"),
        pytest.param(60, RelayAction.TRIP, "000000", 0, "00000000", datetime(2018, 5, 12, 15, 41, 24), id="60-trip-deadline"),
    ],
)
def test_relay_vectors(index, action, password, level, operator, valid_until):
    frame = _frame(index)
    parsed = dlt645.parse_relay_request(frame)
    assert parsed.action == action
    assert parsed.credentials == dlt645.Credentials(level, bytes.fromhex(password), bytes.fromhex(operator))
    assert parsed.valid_until == valid_until
    rebuilt = dlt645.relay_request(
        frame.address, action, valid_until=valid_until, password=bytes.fromhex(password), level=level, operator=bytes.fromhex(operator)
    )
    assert rebuilt == frame


@pytest.mark.parametrize(
    "index, di, value",
    [
        pytest.param(53, 0x04000101, "2018-05-10", id="53-write-date"),
        pytest.param(55, 0x04000102, "15:08:55", id="55-write-time"),
    ],
)
def test_write_vectors(index, di, value):
    frame = _frame(index)
    parsed = dlt645.parse_write_request(frame)
    assert parsed.di == di
    assert parsed.credentials == dlt645.Credentials(2, bytes.fromhex("101010"), bytes.fromhex("11111111"))
    assert decode_value(ITEMS[di], parsed.value) == value
    rebuilt = dlt645.write_request(frame.address, di, parsed.value, password=b"\x10\x10\x10", level=2, operator=b"\x11\x11\x11\x11")
    assert rebuilt == frame


def test_write_vector_with_operator_code_in_wire_order():
    parsed = dlt645.parse_write_request(_frame(76))
    assert parsed.di == 0x04001503
    assert parsed.credentials.operator == bytes.fromhex("78563412")
    assert parsed.value == bytes.fromhex("FFBFFBFFFFFFFFFFFFFFFFFF")


@pytest.mark.parametrize(
    "index, when",
    [
        pytest.param(56, datetime(2017, 6, 5, 10, 22, 51), id="56-broadcast"),
        pytest.param(57, datetime(2017, 6, 5, 10, 40, 25), id="57-unicast"),
        pytest.param(58, datetime(2018, 1, 15, 11, 20, 4), id="58-broadcast"),
    ],
)
def test_broadcast_time_vectors(index, when):
    frame = _frame(index)
    assert frame.function == Control.BROADCAST_TIME
    assert dlt645.parse_broadcast_time(frame) == when
    assert dlt645.broadcast_time(when, address=frame.address) == frame


def test_double_scrambled_di_is_not_the_block_it_meant():
    # Vector 34 is a pitfall: 0001FF00 scrambled twice. Decoded once it is another DI.
    di = dlt645.parse_read_request(_frame(34))
    assert di != 0x0001FF00
    assert di not in ITEMS


def test_1997_read_uses_1997_function_codes():
    assert _frame(61).control == Control1997.READ
    assert _frame(62).control == Control1997.READ | dlt645.DIR_REPLY


def test_active_report_status_word_layout():
    # 04001501: 12-byte status word, AAh, per-bit new-event counts, AAh.
    payload = dlt645.parse_read_reply(_frame(74))[1]
    assert payload[:12] == bytes.fromhex("004004000000000000000000")
    assert payload[12:] == bytes.fromhex("AA0101AA")
