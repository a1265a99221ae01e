"""The IEC 62056-21 codec against the vectors of the protocol notes, and its properties."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.errors import ChecksumError, FrameError
from meterhub_infrared import iec62056_21 as iec
from meterhub_infrared.iec62056_21 import (
    Ack,
    Command,
    DataMessage,
    DataSet,
    ErrorMessage,
    Identification,
    Nak,
    OptionSelect,
    SignOn,
    StreamDecoder,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "iec62056_21.json").read_text())["vectors"]


def _rule(vector: dict) -> str:
    checker = vector["checker"]
    return "sum" if isinstance(checker, dict) and "NON-STANDARD" in checker["bcc_rule"] else "xor"


def _ds(address: str, value: str, unit: str = "") -> DataSet:
    return DataSet(address, value, unit)


LGZ = DataMessage(
    (
        _ds("F.F", "00"), _ds("C.1.0", "12314330"), _ds("0.0", "00188123        "),
        _ds("1.8.1", "001234.120", "kWh"), _ds("1.8.0", "001234.120", "kWh"), _ds("2.8.0", "000000.000", "kWh"),
        _ds("15.8.0", "001234.120", "kWh"), _ds("C.7.0", "0005"), _ds("32.7", "229", "V"),
        _ds("52.7", "230", "V"), _ds("72.7", "230", "V"),
    ),
    True,
)

#: What each vector means, as values of the codec (index: the vector's place in the file);
#: a FrameError class for the negative ones.
EXPECTED = {
    0: Command("W", "2", b"C003(910324092239)"),
    1: Command("P", "0", b"(1234567)"),
    2: Command("R", "1", b"1.8.0(1)"),
    3: Command("B", "0"),
    4: DataMessage((_ds("3:171.0", "0"),), True, breaks=(), end_line=False),
    5: DataMessage((_ds("3:14", "314", "kWh"), _ds("4:15", "415", "kWh")), True, breaks=(2,)),
    6: ChecksumError,  # wrong BCC 11 (12)
    7: SignOn(""),
    8: Identification("L15", "A", "_ID"),
    9: OptionSelect("0", "5", "1"),
    10: Command("B", "0"),
    11: Command("P", "0", b"(\x00)"),
    12: Command("R", "1", b"00:04:00()"),
    13: DataMessage((_ds("", "0007"),), True, breaks=(), end_line=False),
    14: Command("W", "1", b"00:05:2E(1DC9)"),
    15: Ack(),
    16: Command("R", "1", b"00:05:2E()"),
    17: DataMessage((_ds("", "1DC9"),), True, breaks=(), end_line=False),
    18: Identification("ELV", "5", "1234 U2RX V1.0  "),
    19: Command("P", "0", b"(0000)"),
    20: Command("R", "2", b"0000()"),
    21: ChecksumError,  # matches neither rule (a hand-edited log line)
    22: Command("B", "0"),
    23: SignOn("0001"),
    24: Command("R", "2", b"0010()"),
    25: DataMessage((_ds("", "00000000"),), True, breaks=(), end_line=False),
    26: LGZ,
}


def _encode(message, rule: str) -> bytes:
    return message.encode(rule) if isinstance(message, (Command, DataMessage, ErrorMessage)) else message.encode()


def test_every_vector_has_an_expectation():
    assert len(VECTORS) == 27 == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=[f"v{i}" for i in range(len(VECTORS))])
def test_vector(index):
    vector = VECTORS[index]
    frame, rule, expected = bytes.fromhex(vector["hex"]), _rule(vector), EXPECTED[index]
    if isinstance(expected, type):
        with pytest.raises(expected, match="BCC"):
            iec.decode(frame, rule)
        with pytest.raises(expected):
            iec.decode(frame, "sum" if rule == "xor" else "xor")
        return
    decoded = iec.decode(frame, rule)
    assert decoded == expected
    assert _encode(decoded, rule) == frame
    if isinstance(vector["checker"], dict):  # BCC-bearing: the other rule rejects it
        assert vector["checksum_verified"] is True
        with pytest.raises(ChecksumError):
            iec.decode(frame, "sum" if rule == "xor" else "xor")
    # and the stream decoder finds it alone in a stream
    found = StreamDecoder(rule).feed(frame)
    assert found[-1] == expected


def test_sum_rule_example_from_the_notes():
    assert iec.bcc(b"\x01B0\x03", "sum") == 0x75
    assert iec.bcc(b"\x01B0\x03", "xor") == 0x71


def test_unknown_bcc_rule():
    with pytest.raises(ValueError, match="rule"):
        iec.bcc(b"x", "crc")


# --- BCC properties -----------------------------------------------------------------------

_body = st.binary(max_size=64).map(lambda b: bytes(x for x in b if x not in (1, 2, 3, 4)))


@given(_body)
def test_xor_bcc_appended_zeroes_the_xor(body):
    covered = body + b"\x03"
    total = 0
    for byte in covered + bytes((iec.bcc(covered),)):
        total ^= byte
    assert total == 0


@given(_body, st.sampled_from([b"\x01", b"\x02"]))
def test_bcc_skips_the_leading_soh_stx_and_ignores_what_follows_etx(body, start):
    covered = body + b"\x03"
    assert iec.bcc(start + covered + b"\x55") == iec.bcc(covered)


@given(st.binary(max_size=40).map(lambda b: bytes(x & 0x7F for x in b if (x & 0x7F) >= 0x20 and x & 0x7F not in b"()*")),
       st.data())
def test_any_single_bit_flip_is_detected(text, data):
    frame = Command("R", "1", text + b"()").encode()
    position = data.draw(st.integers(1, len(frame) - 1))
    bit = data.draw(st.integers(0, 6))
    damaged = bytearray(frame)
    damaged[position] ^= 1 << bit
    with pytest.raises(FrameError):
        iec.decode_command(bytes(damaged))


@given(st.text(alphabet="0123456789.:*()ABCkWh ", max_size=30))
@settings(max_examples=50)
def test_decode_never_crashes_on_any_bytes(text):
    for frame in (b"\x02" + text.encode() + b"\x03\x00", b"\x01R1\x02" + text.encode() + b"\x03\x00"):
        try:
            iec.decode(frame)
        except FrameError:
            pass


# --- sign-on and identification ----------------------------------------------------------


def test_sign_on():
    assert iec.sign_on() == b"/?!\r\n"
    assert iec.sign_on("0001") == b"/?0001!\r\n"
    with pytest.raises(ValueError, match="forbids"):
        iec.sign_on("00/1")
    with pytest.raises(ValueError, match="longer than 32"):
        iec.sign_on("1" * 33)


@pytest.mark.parametrize(
    ("line", "mode", "rate", "fast"),
    [
        (b"/LGZ4ZMF100AC.M23\r\n", "C", 4800, False),
        (b"/ISk5MT174-0001\r\n", "C", 9600, True),
        (b"/ABC6\\2XYZ\r\n", "E", 19200, False),
        (b"/L15A_ID\r\n", "B", 600, False),
        (b"/XYZFmeter\r\n", "B", 19200, False),
        (b"/AAA_ident\r\n", "A", 300, False),
    ],
)
def test_identification_modes(line, mode, rate, fast):
    ident = iec.parse_identification(line)
    assert ident.mode() == mode
    assert ident.baudrate() == rate
    assert ident.fast is fast
    assert ident.encode() == line


def test_identification_fields():
    ident = iec.parse_identification(b"/ABC6\\2XYZ\r\n")
    assert ident == Identification("ABC", "6", "XYZ", "\\2")


@pytest.mark.parametrize("char", ["7", "9", "G", "I"])
def test_reserved_baud_char_is_a_clear_error(char):
    ident = iec.parse_identification(b"/ABC" + char.encode() + b"meter\r\n")
    with pytest.raises(ValueError, match=f"unknown baud-rate character '{char}'"):
        ident.baudrate()


@pytest.mark.parametrize(
    ("line", "what"),
    [
        (b"LGZ4ZMF100\r\n", "'/'"),
        (b"/LGZ4ZMF100", "CR LF"),
        (b"/L\x0124ZMF\r\n", "garbled"),
        (b"/1GZ4ZMF100\r\n", "3 letters"),
        (b"/LG\r\n", "3 letters"),
        (b"/LGZ4\r\n", "empty"),
        (b"/LGZ4" + b"x" * 17 + b"\r\n", "longer than 16"),
        (b"/LGZ4\xffMF\r\n", "garbled"),
    ],
)
def test_identification_errors(line, what):
    with pytest.raises(FrameError, match=what):
        iec.parse_identification(line)


# --- option select -----------------------------------------------------------------------


@pytest.mark.parametrize("args", [("5", "0", "0"), ("5", "1", "0"), ("0", "0", "0"), ("6", "2", "2")])
def test_option_select_round_trip(args):
    baud, mode, protocol = args
    frame = iec.option_select(baud, mode, protocol)
    assert frame == bytes((6,)) + (protocol + baud + mode).encode() + b"\r\n"
    assert iec.parse_option_select(frame) == (protocol, baud, mode)


def test_option_select_readout_at_9600_bytes():
    assert iec.option_select("5") == bytes.fromhex("06 30 35 30 0D 0A")


def test_option_select_errors():
    with pytest.raises(FrameError):
        iec.parse_option_select(b"\x06050\r")
    with pytest.raises(FrameError):
        iec.parse_option_select(b"\x06X50\r\n")
    with pytest.raises(ValueError):
        iec.option_select("55")


# --- data blocks ---------------------------------------------------------------------------


def test_several_datasets_per_line():
    datasets = iec.parse_data_block(b"1.8.1(000123.4*kWh)1.8.2(000045.6*kWh)\r\n2.8.0(0*kWh)\r\n!\r\n")
    assert [d.address for d in datasets] == ["1.8.1", "1.8.2", "2.8.0"]
    assert datasets[1].decimal() == Decimal("45.6")
    assert datasets[1].unit == "kWh"


def test_timestamp_extra_value():
    (ds,) = iec.parse_data_block(b"1.6.0(0012.345*kW)(2603121415)\r\n")
    assert ds.value == "0012.345" and ds.unit == "kW"
    assert ds.extra == ("2603121415",)
    assert ds.timestamp() == datetime(2026, 3, 12, 14, 15)
    assert DataSet("1.6.0", "1", "kW", ("260312141530",)).timestamp() == datetime(2026, 3, 12, 14, 15, 30)
    assert DataSet("1.8.0", "1", "kWh").timestamp() is None
    with pytest.raises(ValueError, match="no valid date"):
        DataSet("1.6.0", "1", "kW", ("2613121415",)).timestamp()


def test_decimal_is_exact_and_refuses_text():
    assert DataSet("1.8.0", "001234.567").decimal() == Decimal("1234.567")
    with pytest.raises(ValueError, match="not a number"):
        DataSet("C.1.0", "ABC").decimal()


@pytest.mark.parametrize(
    ("address", "obis"),
    [
        ("1.8.0", "1-0:1.8.0"),
        ("1-0:1.8.0*255", "1-0:1.8.0"),
        ("1-0:1.8.0", "1-0:1.8.0"),
        ("0.9.1", "0-0:0.9.1"),
        ("96.1.0", "0-0:96.1.0"),
        ("32.7", "1-0:32.7.0"),
        ("1.8.0*01", None),
        ("C.1.0", None),
        ("F.F", None),
        ("3:14", None),
        ("", None),
    ],
)
def test_obis(address, obis):
    assert DataSet(address, "1").obis() == obis


@pytest.mark.parametrize(
    ("block", "what"),
    [
        (b"1.8.0(" + b"1" * 33 + b")\r\n", "value"),
        (b"1.8.0(1*" + b"k" * 17 + b")\r\n", "unit"),
        (b"1.8.0(1*kWh\r\n", "unbalanced"),
        (b"1.8.0(1(2))\r\n", "unbalanced"),
        (b"1.8.0(1))\r\n", "unbalanced"),
        (b"1.8.0\r\n", "no '\\('"),
        (b"1.8.0(1)\r\n!\r\n2.8.0(1)\r\n", "end line"),
    ],
)
def test_data_block_errors(block, what):
    with pytest.raises(FrameError, match=what):
        iec.parse_data_block(block)


def test_data_message_round_trip_and_partial_block():
    message = DataMessage((DataSet("1.8.0", "001234.567", "kWh"), DataSet("0.9.1", "123456")), True)
    frame = message.encode()
    assert frame.startswith(b"\x021.8.0(001234.567*kWh)\r\n0.9.1(123456)\r\n!\r\n\x03")
    assert iec.decode(frame) == message
    partial = DataMessage(message.datasets, False, end_line=False)
    assert partial.encode()[-2] == iec.EOT
    assert iec.decode(partial.encode()) == partial


def test_error_message():
    frame = ErrorMessage("ER02").encode()
    assert frame[:7] == b"\x02(ER02)"
    assert iec.decode(frame) == ErrorMessage("ER02")


def test_command_without_data_has_no_stx():
    assert Command("B", "0").encode() == bytes.fromhex("01 42 30 03 71")
    with pytest.raises(ValueError):
        Command("X", "0").encode()


# --- stream decoder ----------------------------------------------------------------------

READOUT = LGZ.encode()
STREAM_PARTS = [
    b"\x00\xff garbage",
    b"/LGZ4ZMF100AC.M23\r\n",
    b"zz",
    READOUT,
    b"\x15",
    Command("P", "0", b"(12345678)").encode(),
    b"\x06",
    DataMessage((DataSet("", "0007"),), breaks=(), end_line=False).encode(),
    ErrorMessage("ER03").encode(),
]
STREAM = b"".join(STREAM_PARTS)
STREAM_MESSAGES = [
    iec.parse_identification(b"/LGZ4ZMF100AC.M23\r\n"),
    LGZ,
    Nak(),
    Command("P", "0", b"(12345678)"),
    Ack(),
    DataMessage((DataSet("", "0007"),), breaks=(), end_line=False),
    ErrorMessage("ER03"),
]


def test_stream_finds_messages_and_skips_garbage():
    decoder = StreamDecoder()
    assert decoder.feed(STREAM) == STREAM_MESSAGES
    assert decoder.skipped == 12
    assert decoder.pending == 0


def test_stream_split_at_every_position_gives_the_same_messages():
    for split in range(1, len(STREAM)):
        decoder = StreamDecoder()
        found = decoder.feed(STREAM[:split]) + decoder.feed(STREAM[split:])
        assert found == STREAM_MESSAGES, split
        assert decoder.skipped == 12


def test_stream_byte_by_byte():
    decoder = StreamDecoder()
    found = [m for i in range(len(STREAM)) for m in decoder.feed(STREAM[i : i + 1])]
    assert found == STREAM_MESSAGES


def test_stream_reports_bcc_mismatch_and_finds_the_next_message():
    bad = bytearray(READOUT)
    bad[-1] ^= 0x01
    decoder = StreamDecoder()
    found = decoder.feed(bytes(bad) + b"/ELV51234\r\n")
    assert isinstance(found[0], ChecksumError)
    assert found[1] == Identification("ELV", "5", "1234")


def test_stream_truncated_message_stays_pending():
    decoder = StreamDecoder()
    assert decoder.feed(READOUT[:50]) == []
    assert decoder.pending == 50
    assert decoder.feed(READOUT[50:]) == [LGZ]
    assert decoder.pending == 0


def test_stream_echo_of_the_master():
    decoder = StreamDecoder()
    found = decoder.feed(iec.sign_on() + iec.option_select("5"))
    assert found == [SignOn(""), Ack(), OptionSelect("0", "5", "0")]


def test_stream_with_the_sum_rule():
    frame = bytes.fromhex("01 42 30 03 75")
    assert StreamDecoder("sum").feed(frame) == [Command("B", "0")]
    assert isinstance(StreamDecoder("xor").feed(frame)[0], ChecksumError)


@given(st.binary(max_size=200))
@settings(max_examples=100)
def test_stream_never_crashes(data):
    decoder = StreamDecoder()
    decoder.feed(data)
    decoder.feed(STREAM)


def test_timing_constants():
    assert iec.REACTION_MIN_S == 0.2
    assert iec.reaction_min(fast=True) == 0.02
    assert iec.REACTION_MAX_S == iec.INTER_CHARACTER_MAX_S == 1.5
    assert iec.BAUD_SWITCH_WAIT_S >= 0.2
    assert iec.SIGN_ON_SETTINGS.bits_per_char == 10
