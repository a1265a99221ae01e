"""Properties of the DL/T 645 codec: round trips, no crash on any bytes, stream resynchronisation."""

from __future__ import annotations

from datetime import datetime

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from meterhub.errors import FrameError
from meterhub.protocols import dlt645
from meterhub.protocols.dlt645 import BAUD_CODES, MAX_FRAME_LEN, Frame, RelayAction, StreamDecoder

PROPERTY = settings(max_examples=250, deadline=None)

addresses = st.binary(min_size=6, max_size=6).map(lambda b: b.hex().upper())
bcd_addresses = st.integers(0, 10**12 - 1).map(lambda n: f"{n:012d}")
di4 = st.integers(0, 0xFFFFFFFF)
di2 = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=200)
byte = st.integers(0, 255)
three = st.binary(min_size=3, max_size=3)
four = st.binary(min_size=4, max_size=4)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)
optional = lambda lo, hi: st.one_of(st.none(), st.integers(lo, hi))  # noqa: E731

raw_frames = st.builds(Frame, addresses, byte, st.binary(max_size=255))

built_frames = st.one_of(
    st.builds(dlt645.read_request, addresses, di4),
    st.builds(dlt645.read_reply, addresses, di4, payloads, followup=st.booleans()),
    st.builds(dlt645.followup_request, addresses, di4, byte),
    st.builds(dlt645.followup_reply, addresses, di4, payloads, byte, more=st.booleans()),
    st.builds(dlt645.abnormal_reply, addresses, st.integers(0, 0x1F), byte),
    st.builds(dlt645.normal_reply, addresses, st.integers(0, 0x1F), payloads),
    st.just(dlt645.read_address_request()),
    st.builds(dlt645.read_address_reply, addresses),
    st.builds(dlt645.write_address_request, addresses),
    st.builds(dlt645.write_request, addresses, di4, payloads, password=three, level=byte, operator=four),
    st.builds(dlt645.broadcast_time, times),
    st.builds(dlt645.freeze_request, addresses, optional(0, 59), optional(0, 23), optional(1, 31), optional(1, 12)),
    st.builds(dlt645.change_baud_request, addresses, st.sampled_from(sorted(BAUD_CODES))),
    st.builds(dlt645.change_password_request, addresses, three, new_level=st.integers(0, 9), password=three, level=st.integers(0, 9)),
    st.builds(dlt645.clear_demand_request, addresses, password=three, level=byte, operator=four),
    st.builds(dlt645.clear_meter_request, addresses, password=three, level=byte, operator=four),
    st.builds(dlt645.clear_events_request, addresses, di4, password=three, level=byte, operator=four),
    st.builds(
        dlt645.relay_request, addresses, st.sampled_from(RelayAction),
        valid_until=st.one_of(st.none(), times), password=three, level=byte, operator=four,
    ),
    st.builds(dlt645.read_request_1997, addresses, di2),
    st.builds(dlt645.read_reply_1997, addresses, di2, payloads, followup=st.booleans()),
    st.builds(dlt645.followup_request_1997, addresses, di2),
    st.builds(dlt645.followup_reply_1997, addresses, di2, payloads, more=st.booleans()),
    st.builds(dlt645.write_request_1997, addresses, di2, payloads, password=three, level=byte),
)
frames = st.one_of(raw_frames, built_frames)


# --- frame round trips ---------------------------------------------------------------


@PROPERTY
@given(frames, st.integers(0, 8))
def test_decode_inverts_encode(frame, preamble):
    assert dlt645.decode(dlt645.encode(frame, preamble=preamble)) == frame


@PROPERTY
@given(frames)
def test_encoded_length_follows_from_l(frame):
    wire = dlt645.encode(frame, preamble=0)
    assert len(wire) == 12 + wire[9] == 12 + len(frame.data)


@PROPERTY
@given(addresses, di4, payloads, st.booleans())
def test_read_reply_parses_back(address, di, payload, more):
    assert dlt645.parse_read_reply(dlt645.read_reply(address, di, payload, followup=more)) == (di, payload)


@PROPERTY
@given(addresses, di4, payloads, byte, st.booleans())
def test_followup_reply_parses_back(address, di, payload, seq, more):
    frame = dlt645.followup_reply(address, di, payload, seq, more=more)
    assert dlt645.parse_followup_reply(frame) == (di, payload, seq)
    assert frame.has_followup == more


@PROPERTY
@given(addresses, st.sampled_from(RelayAction), st.one_of(st.none(), times), three, byte, four)
def test_relay_request_parses_back(address, action, valid_until, password, level, operator):
    parsed = dlt645.parse_relay_request(
        dlt645.relay_request(address, action, valid_until=valid_until, password=password, level=level, operator=operator)
    )
    assert (parsed.action, parsed.valid_until) == (action, valid_until)
    assert parsed.credentials == dlt645.Credentials(level, password, operator)


@PROPERTY
@given(addresses, optional(0, 59), optional(0, 23), optional(1, 31), optional(1, 12))
def test_freeze_request_parses_back(address, minute, hour, day, month):
    assert dlt645.parse_freeze_request(dlt645.freeze_request(address, minute, hour, day, month)) == (minute, hour, day, month)


@PROPERTY
@given(times)
def test_broadcast_time_parses_back(when):
    assert dlt645.parse_broadcast_time(dlt645.broadcast_time(when)) == when


# --- no crash on any bytes -------------------------------------------------------------


def _damaged(frame: Frame, data: st.DataObject) -> bytes:
    """A valid frame with one byte changed, or cut short, or with bytes appended."""
    wire = bytearray(dlt645.encode(frame, preamble=data.draw(st.integers(0, 4))))
    how = data.draw(st.sampled_from(["flip", "cut", "append"]))
    if how == "flip":
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(byte)
    elif how == "cut":
        del wire[data.draw(st.integers(0, len(wire) - 1)) :]
    else:
        wire += data.draw(st.binary(min_size=1, max_size=4))
    return bytes(wire)


def _decode_outcome(wire: bytes) -> Frame | FrameError:
    try:
        return dlt645.decode(wire)
    except FrameError as exc:  # anything else escapes and fails the test
        return exc


@PROPERTY
@given(st.binary(max_size=300))
def test_decode_of_any_bytes_returns_a_frame_or_raises_frame_error(wire):
    assert isinstance(_decode_outcome(wire), (Frame, FrameError))


@PROPERTY
@given(frames, st.data())
def test_decode_of_a_damaged_frame_returns_a_frame_or_raises_frame_error(frame, data):
    assert isinstance(_decode_outcome(_damaged(frame, data)), (Frame, FrameError))


# --- the stream decoder ----------------------------------------------------------------


def _has_nested_frame(wire: bytes) -> bool:
    """Whether a frame shape (68 .. 68 .. L .. 16) hides inside ``wire`` after its first byte.

    Such data would rightly be decoded as a frame or reported as a checksum error.
    """
    for start in range(1, len(wire)):
        if wire[start] == 0x68 and start + 10 <= len(wire) and wire[start + 7] == 0x68:
            end = start + 12 + wire[start + 9]
            if end <= len(wire) and wire[end - 1] == 0x16:
                return True
    return False


noise_without_start = st.binary(max_size=40).map(lambda b: b.replace(b"\x68", b""))


@PROPERTY
@given(st.lists(st.tuples(noise_without_start, frames, st.integers(0, 4)), max_size=6), noise_without_start)
def test_stream_finds_every_frame_between_noise(parts, tail):
    wires = [dlt645.encode(frame, preamble=n) for _, frame, n in parts]
    assume(not any(_has_nested_frame(w.lstrip(b"\xfe")) for w in wires))
    stream = b"".join(noise + wire for (noise, _, _), wire in zip(parts, wires)) + tail
    decoder = StreamDecoder()
    assert decoder.feed(stream) == [frame for _, frame, _ in parts]
    noise = b"".join(n for n, _, _ in parts) + tail
    assert decoder.skipped == len(noise) - noise.count(0xFE)  # FE wake-up bytes are not noise
    assert decoder.pending == 0


def _comparable(items: list) -> list:
    return [(type(i), str(i)) if isinstance(i, Exception) else i for i in items]


stream_pieces = st.one_of(
    st.binary(max_size=30),
    frames.map(dlt645.encode),
    st.builds(_damaged, frames, st.data()),
    st.sampled_from([b"\x68", b"\x68" + bytes(6) + b"\x68", b"\x16", b"\xfe\xfe"]),
)


@PROPERTY
@given(st.lists(stream_pieces, max_size=8).map(b"".join), st.data())
def test_stream_gives_the_same_result_whatever_the_chunking(stream, data):
    whole = StreamDecoder()
    expected = _comparable(whole.feed(stream))

    one_by_one = StreamDecoder()
    assert _comparable([item for b in stream for item in one_by_one.feed(bytes((b,)))]) == expected

    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunked = StreamDecoder()
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    assert _comparable([item for c in chunks for item in chunked.feed(c)]) == expected

    for decoder in (one_by_one, chunked):
        assert (decoder.skipped, decoder.pending) == (whole.skipped, whole.pending)


@PROPERTY
@given(st.lists(stream_pieces, max_size=8).map(b"".join))
def test_stream_yields_only_frames_and_frame_errors_and_holds_at_most_one_frame(stream):
    decoder = StreamDecoder()
    for b in stream:
        items = decoder.feed(bytes((b,)))
        assert all(isinstance(i, (Frame, FrameError)) for i in items)
        assert decoder.pending < MAX_FRAME_LEN
