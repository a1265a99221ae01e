"""The DL/T 645 frame codec on hand-made frames: the mistakes public decoders make (protocols §1.9)."""

from __future__ import annotations

import pytest

from meterhub.errors import ChecksumError, FrameError, MeterError, TruncatedFrame, UnexpectedReply
from meterhub.protocols import dlt645
from meterhub.protocols.dlt645 import MAX_FRAME_LEN, Frame, StreamDecoder

ADDRESS = "000000000161"
ENERGY_REPLY = bytes.fromhex("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16")  # 0.26 kWh


def test_address_goes_on_the_wire_least_significant_byte_first():
    wire = dlt645.encode(dlt645.read_request(ADDRESS, 0x00010000), preamble=0)
    assert wire[1:7] == bytes.fromhex("61 01 00 00 00 00")


def test_di_goes_on_the_wire_di0_first_and_scrambled():
    wire = dlt645.encode(dlt645.read_request(ADDRESS, 0x04000402), preamble=0)
    assert wire[10:14] == bytes.fromhex("35 37 33 37")  # not 37 33 37 35 (protocols §1.9.3)


def test_scrambling_wraps_modulo_256():
    wire = dlt645.encode(Frame(ADDRESS, 0x91, b"\xff\xcd"), preamble=0)
    assert wire[10:12] == b"\x32\x00"
    assert dlt645.decode(wire).data == b"\xff\xcd"


def test_master_sends_four_wake_up_bytes_by_default():
    assert dlt645.encode(dlt645.read_address_request()).startswith(b"\xfe\xfe\xfe\xfe\x68")


def test_fe_inside_a_frame_is_data_not_preamble():
    frame = Frame(ADDRESS, 0x91, b"\xcb\xcb")  # CB + 33 = FE on the wire
    wire = dlt645.encode(frame, preamble=2)
    assert wire.count(b"\xfe") == 4
    assert dlt645.decode(wire) == frame


def test_frame_end_comes_from_l_not_from_the_first_16():
    frame = Frame(ADDRESS, 0x91, b"\xe3\x00\xe3")  # E3 + 33 = 16 on the wire
    wire = dlt645.encode(frame)
    assert dlt645.decode(wire) == frame
    assert StreamDecoder().feed(wire) == [frame]


def test_frame_properties_come_from_the_control_byte():
    frame = Frame(ADDRESS, 0xB1)
    assert (frame.function, frame.is_reply, frame.is_abnormal, frame.has_followup) == (0x11, True, False, True)
    assert Frame(ADDRESS, 0xD1, b"\x02").is_abnormal


def test_frame_address_is_normalised_to_upper_case():
    assert Frame("aaaaaaaaaaaa", 0x13).address == dlt645.WILDCARD


@pytest.mark.parametrize("address", ["161", "0000000001610", "00000000016G", ""])
def test_frame_refuses_an_address_that_is_not_six_bytes(address):
    with pytest.raises(ValueError, match="12 hex characters"):
        Frame(address, 0x11)


def test_frame_refuses_more_than_255_data_bytes():
    with pytest.raises(ValueError, match="255"):
        Frame(ADDRESS, 0x91, bytes(256))


# --- decode errors -----------------------------------------------------------------------


def test_decode_refuses_a_wrong_checksum():
    wire = bytearray(ENERGY_REPLY)
    wire[-2] ^= 0x01
    with pytest.raises(ChecksumError):
        dlt645.decode(bytes(wire))


def test_decode_reports_missing_bytes_as_truncated():
    with pytest.raises(TruncatedFrame):
        dlt645.decode(ENERGY_REPLY[:-1])


def test_decode_of_nothing_but_wake_up_bytes_is_truncated():
    with pytest.raises(TruncatedFrame):
        dlt645.decode(b"\xfe\xfe")


def test_decode_refuses_bytes_after_the_frame():
    with pytest.raises(FrameError, match="after the end"):
        dlt645.decode(ENERGY_REPLY + b"\x00")


def test_decode_refuses_a_missing_second_start_byte():
    wire = bytearray(ENERGY_REPLY)
    wire[7] = 0x00
    with pytest.raises(FrameError, match="second start byte") as info:
        dlt645.decode(bytes(wire))
    assert not isinstance(info.value, TruncatedFrame)


def test_decode_refuses_a_wrong_end_byte():
    with pytest.raises(FrameError, match="end with 16"):
        dlt645.decode(ENERGY_REPLY[:-1] + b"\x17")


def test_decode_refuses_noise_before_the_frame():
    with pytest.raises(FrameError, match="start with 68"):
        dlt645.decode(b"\x00" + ENERGY_REPLY)


# --- the stream decoder ---------------------------------------------------------------------


def test_stream_skips_noise_and_counts_it():
    decoder = StreamDecoder()
    assert decoder.feed(b"\x01\x02\x03" + ENERGY_REPLY + b"\x04") == [dlt645.decode(ENERGY_REPLY)]
    assert decoder.skipped == 4
    assert decoder.pending == 0


def test_stream_does_not_count_wake_up_bytes_as_noise():
    decoder = StreamDecoder()
    decoder.feed(b"\xfe\xfe\xfe\xfe" + ENERGY_REPLY)
    assert decoder.skipped == 0


def test_stream_finds_a_frame_behind_a_false_start_byte():
    # A stray 68 just before the real frame: dropping only that one byte finds the frame.
    assert StreamDecoder().feed(b"\x68\x11" + ENERGY_REPLY) == [dlt645.decode(ENERGY_REPLY)]


def test_stream_finds_a_frame_behind_a_false_header():
    # "68 x x x x x x 68" in the noise looks like a header announcing L=FF; the real frame
    # starts inside what that candidate would cover and must not wait for its 255 bytes.
    false_header = b"\x68" + bytes(6) + b"\x68\x91\xff"
    decoder = StreamDecoder()
    assert decoder.feed(false_header + ENERGY_REPLY) == [dlt645.decode(ENERGY_REPLY)]
    assert decoder.pending == 0


def test_stream_reports_a_bad_checksum_and_goes_on():
    bad = bytearray(ENERGY_REPLY)
    bad[-2] ^= 0xFF
    items = StreamDecoder().feed(bytes(bad) + ENERGY_REPLY)
    assert isinstance(items[0], ChecksumError)
    assert items[1:] == [dlt645.decode(ENERGY_REPLY)]


def test_stream_finds_a_frame_that_starts_inside_a_damaged_one():
    # The first frame is cut short by the second: its candidate fails, the second is found.
    items = StreamDecoder().feed(ENERGY_REPLY[:12] + ENERGY_REPLY)
    assert items == [dlt645.decode(ENERGY_REPLY)]


def test_stream_holds_an_incomplete_frame_as_pending():
    decoder = StreamDecoder()
    assert decoder.feed(b"\xfe\xfe" + ENERGY_REPLY[:8]) == []
    assert decoder.pending == 8
    assert decoder.feed(ENERGY_REPLY[8:]) == [dlt645.decode(ENERGY_REPLY)]
    assert decoder.pending == 0


def test_stream_returns_frames_sent_back_to_back():
    other = dlt645.encode(dlt645.read_reply("000000000068", 0x02010100, b"\x01\x22"))  # 68 in the address too
    assert StreamDecoder().feed(ENERGY_REPLY + other) == [dlt645.decode(ENERGY_REPLY), dlt645.decode(other)]


def test_stream_buffer_stays_bounded_on_endless_false_headers():
    decoder = StreamDecoder()
    for _ in range(50):
        decoder.feed(b"\x68" + bytes(6) + b"\x68\x91\xff" + bytes(100))
    assert decoder.pending < MAX_FRAME_LEN


# --- replies and errors ---------------------------------------------------------------------


def test_error_reasons_name_every_set_bit():
    assert dlt645.error_reasons(0x06) == ["no requested data", "password error / unauthorised"]


def test_abnormal_reply_carries_the_error_word():
    frame = dlt645.abnormal_reply(ADDRESS, dlt645.Control.READ, 0x02)
    assert frame.control == 0xD1 and frame.data == b"\x02"
    with pytest.raises(MeterError, match="no requested data") as info:
        dlt645.parse_read_reply(frame)
    assert info.value.code == 0x02


def test_parse_read_reply_refuses_a_request():
    with pytest.raises(UnexpectedReply):
        dlt645.parse_read_reply(dlt645.read_request(ADDRESS, 0x00010000))


def test_follow_up_reply_carries_seq_after_the_payload():
    frame = dlt645.followup_reply(ADDRESS, 0x00010000, b"\x01\x02", 3, more=True)
    assert frame.control == 0xB2 and frame.data == bytes.fromhex("00000100 0102 03")


def test_relay_request_without_deadline_sends_zeros():
    frame = dlt645.relay_request(ADDRESS, dlt645.RelayAction.TRIP)
    assert frame.data[-6:] == bytes(6)
    assert dlt645.parse_relay_request(frame).valid_until is None


def test_freeze_now_is_four_wildcards():
    assert dlt645.freeze_request(ADDRESS).data == b"\x99\x99\x99\x99"


def test_change_baud_uses_the_z_code():
    assert dlt645.change_baud_request(ADDRESS, 9600).data == b"\x20"
    assert dlt645.parse_change_baud_request(dlt645.change_baud_request(ADDRESS, 9600)) == 9600


def test_change_baud_refuses_an_unknown_rate():
    with pytest.raises(ValueError, match="cannot switch to 2000"):
        dlt645.change_baud_request(ADDRESS, 2000)


def test_read_address_reply_names_the_meter_in_its_data_too():
    frame = dlt645.read_address_reply("201000000012")
    assert frame.data == bytes.fromhex("12 00 00 00 10 20")


def test_1997_abnormal_reply_uses_1997_error_bits():
    frame = dlt645.abnormal_reply(ADDRESS, dlt645.Control1997.READ, 0x02)
    with pytest.raises(MeterError, match="data identifier error") as info:
        dlt645.parse_read_reply_1997(frame)
    assert info.value.code == 0x02
