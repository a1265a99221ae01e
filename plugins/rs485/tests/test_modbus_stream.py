"""The Modbus stream decoder reports no damaged frame from inside a valid answer.

Register values can read as a short frame of the unit asked (``11 83 02 ..``: an
exception reply of unit 17 to function 3). Such a false candidate ends before the answer
around it, so it was judged first, failed its CRC and was reported as a ChecksumError
(the read still succeeded, but ``Exchange.rejected`` carried a false error). A damaged
frame is now held until no earlier candidate could still contain it.
"""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from meterhub.errors import ChecksumError, FrameError
from meterhub_rs485 import modbus
from meterhub_rs485.modbus import StreamDecoder

UNIT, READ = 17, 3
#: Registers 1234 1183 0200 0000: the data holds 11 83 02 00 00, an exception reply of
#: unit 17 to function 3 whose CRC (00 00) is wrong.
ANSWER = modbus.read_response(UNIT, READ, [0x1234, 0x1183, 0x0200, 0x0000])


def _fed(data: bytes, *, at_once: bool) -> tuple[list[object], StreamDecoder]:
    decoder = StreamDecoder(unit=UNIT, function=READ)
    if at_once:
        return decoder.feed(data), decoder
    return [item for i in range(len(data)) for item in decoder.feed(data[i : i + 1])], decoder


def _damaged(frame: bytes) -> bytes:
    return frame[:-1] + bytes((frame[-1] ^ 0xFF,))


def test_an_exception_reply_inside_an_answers_registers_is_no_checksum_error():
    assert b"\x11\x83\x02\x00\x00" in ANSWER
    for at_once in (True, False):
        items, decoder = _fed(ANSWER, at_once=at_once)
        assert items == [modbus.decode(ANSWER)]
        assert decoder.skipped == 0 and decoder.pending == 0


def test_a_damaged_answer_is_still_reported_once_and_the_next_answer_found():
    good = modbus.read_response(UNIT, READ, [7, 8])
    for at_once in (True, False):
        items, decoder = _fed(b"\x05\x00" + _damaged(ANSWER) + good, at_once=at_once)
        # the damaged answer is reported, the exception-like run inside it is not
        assert [type(item) for item in items] == [ChecksumError, modbus.Frame]
        assert items[1] == modbus.decode(good) and decoder.pending == 0


def test_a_damaged_exception_reply_on_its_own_is_reported():
    reply = _damaged(modbus.exception_response(UNIT, READ, 2))
    for at_once in (True, False):
        items, _ = _fed(reply, at_once=at_once)
        assert [type(item) for item in items] == [ChecksumError]


#: Register values that put unit-17 headers (11 03, 11 83 ...) inside the data.
registers = st.lists(
    st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0x1183, 0x1103, 0x0200, 0x8302, 0x0211, 0x0311, 0x0011])),
    min_size=1, max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(registers, min_size=1, max_size=5), st.booleans())
def test_valid_answers_never_yield_a_reported_error(answers, at_once):
    frames = [modbus.read_response(UNIT, READ, values) for values in answers]
    items, _ = _fed(b"".join(frames), at_once=at_once)
    found = [item for item in items if not isinstance(item, FrameError)]
    # (a whole valid frame inside the data, CRC included, is a frame of its own: not this case)
    assume(found == [modbus.decode(frame) for frame in frames])
    assert items == found
