"""The M-Bus codec: properties (round trips, no exception but FrameError on any bytes,
stream resynchronisation) and differential tests against pymbusparser and pyMeterBus
where those libraries decode correctly (they skip when the oracle is not installed)."""

from __future__ import annotations

import json
import logging
import struct
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meterhub.errors import ChecksumError, FrameError, TruncatedFrame
from meterhub_rs485 import mbus
from meterhub_rs485.mbus import (
    Ack,
    Coding,
    Function,
    IdleFiller,
    LongFrame,
    LongHeader,
    ShortFrame,
    ShortHeader,
    StreamDecoder,
    Telegram,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "mbus.json").read_text(encoding="utf-8"))["vectors"]
RESPONSE_VECTORS = [v for v in VECTORS if "first_records_decoded_by_libmbus" in v["meaning"]]
#: Where pymbusparser 0.5.3 is wrong (see MBUS.md): AMTRON (signature B627 taken for an
#: encryption mode: no records), Elvaco CMa11 (stops after the first record), SBC with the
#: non-BCD ID 0500023E (whole frame refused).
PYMBUSPARSER_WRONG = {9, 16, 18}

# --- strategies -------------------------------------------------------------------------

short_frames = st.builds(ShortFrame, st.sampled_from(sorted(mbus.SHORT_CONTROLS)), st.integers(0, 255))
long_frames = st.builds(
    LongFrame,
    st.sampled_from(sorted(mbus.LONG_CONTROLS)),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=mbus.MAX_DATA),
)
frames = st.one_of(st.just(Ack()), short_frames, long_frames)

#: VIBs of numeric quantities both our tables and pymbusparser know, with their exponent.
NUMERIC_VIBS = (
    [bytes((v,)) for v in range(0x20)]  # energy Wh/J, volume, mass
    + [bytes((v,)) for v in range(0x28, 0x6C)]  # power, flows, temperatures, pressure
    + [bytes((v,)) for v in (0x20, 0x23, 0x24, 0x27, 0x70, 0x74, 0x78, 0x7A)]  # durations, numbers
    + [b"\xFD" + bytes((v,)) for v in range(0x40, 0x60)]  # volts, amperes
)
EXTRA_VIBS = [b"\xFB\x00", b"\xFB\x09", b"\xFB\x58", b"\x93\x74", b"\x86\x7D", b"\xFD\x9B\x00", b"\x2D\xFF\x01"]
INT_CODINGS = [Coding.INT8, Coding.INT16, Coding.INT24, Coding.INT32, Coding.INT48, Coding.INT64]
BCD_CODINGS = [Coding.BCD2, Coding.BCD4, Coding.BCD6, Coding.BCD8, Coding.BCD12]


@st.composite
def numeric_records(draw, vibs=NUMERIC_VIBS, real=True, variable_limit=10**18):
    coding = draw(st.sampled_from(INT_CODINGS + BCD_CODINGS + ([Coding.REAL32] if real else []) + [Coding.VARIABLE]))
    vib = draw(st.sampled_from(vibs))
    exponent = mbus.vib_exponent(vib)
    if coding is Coding.REAL32:
        x = draw(st.floats(width=32, allow_nan=False, allow_infinity=False))
        value = mbus.shift(mbus._real32(struct.pack("<f", x)), exponent)
    else:
        if coding.is_integer:
            bits = 8 * (coding.size or 0)
            raw = draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
        elif coding.is_bcd:
            digits = 2 * (coding.size or 0)
            raw = draw(st.integers(-(10 ** (digits - 1)) + 1, 10**digits - 1))
        else:
            raw = draw(st.integers(-variable_limit + 1, variable_limit - 1))
        value = mbus._scaled(raw, exponent)
    kw = draw(
        st.fixed_dictionaries(
            {
                "function": st.sampled_from(list(Function)),
                "storage": st.integers(0, 2**12),
                "tariff": st.integers(0, 15),
                "subunit": st.integers(0, 3),
            }
        )
    )
    return mbus.make_record(coding, vib, value, **kw), value


@st.composite
def other_records(draw):
    kind = draw(st.sampled_from(["text", "date", "datetime", "unknown", "plain_text"]))
    if kind == "text":
        text = draw(st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20))
        return mbus.make_record(Coding.VARIABLE, b"\x78", text), text
    if kind == "date":
        day = draw(st.dates(date(1981, 1, 1), date(2080, 12, 31)))
        return mbus.make_record(Coding.INT16, b"\x6C", day), day
    if kind == "datetime":
        when = draw(st.datetimes(datetime(1981, 1, 1), datetime(2080, 12, 31))).replace(second=0, microsecond=0)
        return mbus.make_record(Coding.INT32, b"\x6D", when), when
    if kind == "unknown":
        raw = draw(st.integers(-(2**31), 2**31 - 1))
        return mbus.make_record(Coding.INT32, b"\x6F", Decimal(raw)), Decimal(raw)  # 6Fh is reserved
    unit = draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=6))
    raw = draw(st.integers(-32768, 32767))
    return mbus.make_record(Coding.INT16, mbus.plain_text_vib(unit), Decimal(raw)), Decimal(raw)


headers = st.one_of(
    st.none(),
    st.builds(ShortHeader, st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF)),
    st.builds(
        LongHeader,
        st.integers(0, 10**8 - 1).map(lambda n: f"{n:08d}"),
        st.integers(0, 0xFFFF),
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 0xFFFF),
    ),
)


@st.composite
def telegrams(draw):
    pairs = draw(st.lists(st.one_of(numeric_records(), other_records()), max_size=8))
    items: list = []
    for record, _ in pairs:
        if draw(st.booleans()) and draw(st.booleans()):
            items.append(IdleFiller())
        items.append(record)
    tail = draw(st.sampled_from([None, mbus.DIF_MANUFACTURER, mbus.DIF_MORE_FOLLOWS]))
    data = draw(st.binary(max_size=8)) if tail is not None else b""
    telegram = Telegram(draw(headers), items, tail, data)
    assume(len(mbus.encode_user_data(telegram)) <= mbus.MAX_DATA)
    return telegram, [value for _, value in pairs]


# --- link layer properties ----------------------------------------------------------------


@given(frames)
def test_every_frame_survives_encode_then_decode(frame):
    assert mbus.decode(mbus.encode(frame)) == frame


@given(st.binary(max_size=300))
def test_no_byte_string_makes_decode_raise_anything_but_frame_error(data):
    try:
        frame = mbus.decode(data)
    except FrameError:
        return
    assert mbus.encode(frame) == data  # what decodes is exactly one frame


@given(frames, st.data())
def test_a_damaged_frame_is_a_frame_error_never_a_crash(frame, data):
    wire = bytearray(mbus.encode(frame))
    at = data.draw(st.integers(0, len(wire) - 1))
    wire[at] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(wire)))
    try:
        mbus.decode(bytes(wire[:cut]))
    except FrameError:
        pass


def test_a_wrong_checksum_is_a_checksum_error_and_a_cut_frame_is_truncated():
    wire = bytearray(mbus.encode(mbus.req_ud2(5)))
    wire[3] ^= 1
    with pytest.raises(ChecksumError, match="A=5"):
        mbus.decode(bytes(wire))
    with pytest.raises(TruncatedFrame):
        mbus.decode(mbus.encode(mbus.rsp_ud(1, Telegram(ShortHeader())))[:-3])


def test_fcb_toggles_between_5b_and_7b():
    assert mbus.req_ud2(3, fcb=False).control == 0x5B and mbus.req_ud2(3, fcb=True).control == 0x7B
    assert mbus.req_ud2(3).fcv and mbus.req_ud2(3).fcb and not mbus.req_ud2(3, fcb=False).fcb


def test_rsp_ud_access_demand_and_data_flow_control_bits():
    frame = mbus.rsp_ud(1, Telegram(), acd=True, dfc=True)
    assert frame.control == 0x38 and frame.acd and frame.dfc and frame.is_response
    assert mbus.decode(mbus.encode(frame)) == frame


# --- application layer properties -----------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(telegrams(), st.integers(0, 250))
def test_every_telegram_survives_encode_then_decode(case, address):
    telegram, values = case
    frame = mbus.rsp_ud(address, telegram)
    back = mbus.parse_user_data(mbus.decode(mbus.encode(frame)))
    assert back == telegram
    assert [r.value for r in back.records] == values


@given(numeric_records())
def test_a_record_carries_exactly_the_value_it_was_built_with(case):
    record, value = case
    assert record.value == value and isinstance(record.value, Decimal)
    assert mbus.encode_value(record.coding, record.vib, record.value) == record.data


@given(st.sampled_from(mbus.RESPONSE_CIS + (0x70, 0x51, 0x00)), st.binary(max_size=mbus.MAX_DATA))
def test_no_user_data_makes_the_parser_raise_anything_but_frame_error(ci, data):
    frame = LongFrame(0x08, 1, ci, data)
    try:
        telegram = mbus.parse_user_data(frame)
    except FrameError:
        return
    assert mbus.encode_user_data(telegram) == data  # whatever parses re-encodes exactly
    for record in telegram.records:
        assert isinstance(record.value, (Decimal, str, bytes, date, datetime, time, type(None)))


@given(st.sampled_from(RESPONSE_VECTORS), st.data())
def test_damaged_real_telegrams_parse_or_raise_frame_error(vector, data):
    frame = mbus.decode(bytes.fromhex(vector["hex"]))
    body = bytearray(frame.data)
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    body = body[: data.draw(st.integers(0, len(body)))]
    try:
        telegram = mbus.parse_user_data(LongFrame(frame.control, frame.address, frame.ci, bytes(body)))
    except FrameError:
        return
    assert mbus.encode_user_data(telegram) == bytes(body)


@given(st.integers(0, 2**41 - 1), st.integers(0, 2**20 - 1), st.integers(0, 2**10 - 1), st.sampled_from(list(Function)))
def test_storage_tariff_and_subunit_round_trip_through_the_dib(storage, tariff, subunit, function):
    try:
        dib = mbus.build_dib(Coding.INT8, function=function, storage=storage, tariff=tariff, subunit=subunit)
    except ValueError:
        assume(False)
    assert mbus.record_storage(dib) == (storage, tariff, subunit)
    assert Function(dib[0] >> 4 & 3) is function and len(dib) <= 1 + mbus.MAX_DIFE


def test_an_unknown_vif_keeps_the_raw_value_and_says_so():
    record = mbus.raw_record(b"\x04", b"\x6F", (123456).to_bytes(4, "little"))
    assert not record.known and record.value == Decimal(123456) and record.unit == ""
    assert "unknown" in record.description and "raw value" in record.note
    fd = mbus.raw_record(b"\x02", b"\xFD\x7F", b"\x01\x02")  # FD 7F is not in the table
    assert not fd.known and fd.value == Decimal(0x0201)
    assert not record.is_plain


def test_a_record_error_vife_is_reported():
    record = mbus.raw_record(b"\x04", b"\x93\x15", b"\x00\x00\x00\x00")  # volume, "no data available"
    assert record.error == 0x15 and "no data available" in record.error_text and not record.is_plain


def test_records_that_run_past_the_telegram_say_where():
    with pytest.raises(FrameError, match="data offset 12: INT32 data runs past the end"):
        mbus.parse_user_data(LongFrame(0x08, 1, 0x72, bytes(12) + b"\x04\x13\x01"))
    with pytest.raises(FrameError, match="more than 10 DIFEs"):
        mbus.parse_user_data(LongFrame(0x08, 1, 0x78, b"\x84" + b"\x80" * 11 + b"\x00\x13" + bytes(4)))
    with pytest.raises(FrameError, match="reserved special DIF 3F"):
        mbus.parse_user_data(LongFrame(0x08, 1, 0x78, b"\x3F"))


def test_secondary_addresses_and_selection_masks():
    assert mbus.secondary_matches("12345678FFFFFFFF", "1234567824400107")
    assert mbus.secondary_matches("1234FFFF24400107", "1234567824400107")
    assert not mbus.secondary_matches("1234FFFF24400108", "1234567824400107")
    assert not mbus.secondary_matches("12345679FFFFFFFF", "1234567824400107")
    assert mbus.secondary_matches(mbus.WILDCARD, "0500023E434C1202")
    frame = mbus.select_request("12345678 2440 01 07")
    assert frame.data == bytes.fromhex("78563412 2440 01 07") and mbus.parse_select(frame) == "1234567824400107"
    with pytest.raises(ValueError, match="16 hex digits"):
        mbus.normalize_secondary("123")


def test_manufacturer_letters():
    assert mbus.manufacturer_code("PAD") == 0x4024 and mbus.manufacturer_letters(0x4024) == "PAD"
    with pytest.raises(ValueError):
        mbus.manufacturer_code("P4D")


# --- stream decoder --------------------------------------------------------------------


def _items(items):
    return [(type(i).__name__, str(i)) if isinstance(i, Exception) else i for i in items]


@given(st.lists(st.one_of(frames.map(mbus.encode), st.binary(max_size=12)), max_size=6), st.data())
def test_the_stream_decoder_gives_the_same_whether_fed_at_once_byte_by_byte_or_in_chunks(parts, data):
    stream = b"".join(parts)
    whole = StreamDecoder()
    at_once = _items(whole.feed(stream))
    single = StreamDecoder()
    one_by_one = _items([item for b in stream for item in single.feed(bytes((b,)))])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunked = StreamDecoder()
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    in_chunks = _items([item for piece in pieces for item in chunked.feed(piece)])
    assert at_once == one_by_one == in_chunks
    assert whole.skipped == single.skipped == chunked.skipped
    for item in whole.feed(b""):
        raise AssertionError(item)


NOISE = st.binary(max_size=20).map(lambda b: bytes(x for x in b if x not in (mbus.ACK, mbus.SHORT_START, mbus.LONG_START)))


@given(st.lists(st.tuples(NOISE, frames), min_size=1, max_size=5), NOISE)
def test_frames_between_noise_are_all_found_and_the_noise_counted(pairs, tail):
    stream = b"".join(noise + mbus.encode(frame) for noise, frame in pairs) + tail
    decoder = StreamDecoder()
    assert decoder.feed(stream) == [frame for _, frame in pairs]
    assert decoder.skipped == sum(len(noise) for noise, _ in pairs) + len(tail)
    assert decoder.pending == 0


@given(st.binary(max_size=40), frames)
def test_a_frame_after_any_garbage_is_found(garbage, frame):
    decoder = StreamDecoder()
    items = decoder.feed(garbage + mbus.encode(frame) + b"\x00" * (mbus.MAX_FRAME_LEN + 1))
    assert frame in items
    assert all(isinstance(i, (Ack, ShortFrame, LongFrame, FrameError)) for i in items)


def test_a_false_long_header_does_not_hide_the_answer_behind_it():
    answer = mbus.encode(mbus.rsp_ud(7, Telegram(ShortHeader(1))))
    decoder = StreamDecoder()
    # 68 40 40 68 08 looks like the start of a 70-byte frame; the real one is complete first.
    assert decoder.feed(b"\x68\x40\x40\x68\x08\x07" + answer) == [mbus.decode(answer)]


def test_an_e5_inside_a_frame_is_data_not_an_acknowledgement():
    telegram = Telegram(ShortHeader(0xE5, 0xE5), [mbus.make_record(Coding.INT8, b"\x13", Decimal("-0.027"))])
    wire = mbus.encode(mbus.rsp_ud(0xE5, telegram))
    assert wire.count(mbus.ACK) >= 3
    assert StreamDecoder().feed(wire) == [mbus.decode(wire)]


def test_an_e5_waits_for_an_earlier_candidate_then_comes_out():
    decoder = StreamDecoder()
    assert decoder.feed(b"\x10\x40\xE5") == []  # 10 40 could still be a SND_NKE frame
    assert decoder.pending == 3
    assert decoder.feed(b"\x00\x00") == [Ack()]  # it was not (no 16 at its end)
    assert decoder.skipped == 2 + 2


def test_an_e5_right_after_a_false_start_is_delivered_at_once():
    # E5 is no short-frame C field, so the 10 in front of it dies immediately.
    assert StreamDecoder().feed(b"\x10\xE5") == [Ack()]


def test_a_damaged_frame_is_reported_and_the_next_one_found():
    good = mbus.encode(mbus.req_ud2(1))
    bad = bytearray(mbus.encode(mbus.rsp_ud(2, Telegram(ShortHeader(5)))))
    bad[-2] ^= 0x55
    items = StreamDecoder().feed(bytes(bad) + good)
    assert isinstance(items[0], ChecksumError) and "A=2" in str(items[0])
    assert items[-1] == mbus.decode(good)


# --- differential: pymbusparser ---------------------------------------------------------

PMP_UNITS = {"W.h": "Wh", "Cel": "°C", "m3.h-1": "m3/h", "m3.min-1": "m3/min", "m3.s-1": "m3/s", "J.h-1": "J/h", "kg.h-1": "kg/h"}
PMP_FUNCTIONS = {
    "Instantaneous value": Function.INSTANTANEOUS,
    "Maximum value": Function.MAXIMUM,
    "Minimum value": Function.MINIMUM,
    "Value during error state": Function.ERROR_STATE,
}


@pytest.fixture(scope="module")
def pymbusparser():
    return pytest.importorskip("pymbusparser")


def _pmp_records(pmp, raw: bytes) -> list[dict]:
    """pymbusparser's records without the manufacturer-specific ones (VIF 7F/FF, DIF 0F/1F):
    it reads their data as numbers, we keep the bytes."""
    parsed = pmp.parse(raw, include_enrichment=False)
    return [
        r for r in parsed.get("records") or []
        if r["value"].get("kind") != "manufacturer_specific" and r.get("quantities") != ["Manufacturer specific"]
    ]


def _numeric_vectors() -> list[int]:
    return [
        i for i, v in enumerate(VECTORS)
        if "first_records_decoded_by_libmbus" in v["meaning"]
        and any(isinstance(r.value, Decimal) for r in mbus.parse_user_data(mbus.decode(bytes.fromhex(v["hex"]))).records)
    ]


def _agrees_with_pmp(ours: mbus.Record, theirs: dict) -> None:
    assert PMP_FUNCTIONS[theirs["function"]] is ours.function
    assert (theirs["storage_number"], theirs["tariff"], theirs["subunit"]) == (ours.storage, ours.tariff, ours.subunit)
    kind, value = theirs["value"]["kind"], theirs["value"].get("value")
    if kind == "decimal":
        assert Decimal(value) == ours.value
        unit = theirs.get("unit")
        if unit is not None and ours.quantity != "plain_text":
            assert PMP_UNITS.get(unit, unit) == ours.unit
    elif kind == "text":
        assert value == ours.value
    elif kind in ("datetime", "date"):
        assert value == ours.value.isoformat()
    else:
        raise AssertionError(f"unexpected pymbusparser value {theirs['value']}")


@pytest.mark.parametrize("index", [i for i in _numeric_vectors() if i not in PYMBUSPARSER_WRONG])
def test_our_records_agree_with_pymbusparser_on_the_vectors(pymbusparser, index):
    raw = bytes.fromhex(VECTORS[index]["hex"])
    ours = [r for r in mbus.parse_user_data(mbus.decode(raw)).records if r.quantity != "manufacturer_specific"]
    theirs = _pmp_records(pymbusparser, raw)
    assert len(ours) == len(theirs)
    compared = 0
    for record, other in zip(ours, theirs):
        if record.modifiers or record.value is None:
            continue  # "date/time of" records (it reads them as numbers) and wildcard dates
        _agrees_with_pmp(record, other)
        compared += 1
    assert compared


@pytest.mark.parametrize("index", sorted(PYMBUSPARSER_WRONG))
def test_the_vectors_pymbusparser_gets_wrong_still_fail_there(pymbusparser, index):
    """If a new pymbusparser fixes these, MBUS.md's evaluation needs updating."""
    raw = bytes.fromhex(VECTORS[index]["hex"])
    libmbus_count = len(VECTORS[index]["meaning"]["first_records_decoded_by_libmbus"])
    assert len(_pmp_records(pymbusparser, raw)) < min(libmbus_count, len(mbus.parse_user_data(mbus.decode(raw)).records))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
#: pymbusparser turns variable-length BCD into an f64 on the way: exact only below 2^53.
@given(st.lists(numeric_records(real=False, variable_limit=2**53), min_size=1, max_size=8), st.integers(0, 10**8 - 1))
def test_telegrams_we_encode_read_the_same_in_pymbusparser(pymbusparser, cases, ident):
    records = [r for r, _ in cases]
    # pymbusparser reads the signature as an encryption mode: 0 = none.
    telegram = Telegram(LongHeader(f"{ident:08d}", mbus.manufacturer_code("MHB"), 1, 7), records)
    assume(len(mbus.encode_user_data(telegram)) <= mbus.MAX_DATA)
    theirs = _pmp_records(pymbusparser, mbus.encode(mbus.rsp_ud(1, telegram)))
    assert len(theirs) == len(records)
    for record, other in zip(records, theirs):
        _agrees_with_pmp(record, other)


# --- differential: pyMeterBus ---------------------------------------------------------


@pytest.fixture(scope="module")
def meterbus():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    module = pytest.importorskip("meterbus")  # its import runs logging.basicConfig(level=INFO)
    root.handlers[:], root.level = handlers, level
    return module


class _Port:
    """Collects what pyMeterBus's send_* helpers write."""

    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += bytes(data)


@given(st.integers(0, 250))
def test_short_frames_are_byte_identical_to_pymeterbus(meterbus, address):
    port = _Port()
    meterbus.send_ping_frame(port, address)
    assert port.sent == mbus.encode(mbus.snd_nke(address))
    assert bytes(meterbus.send_request_frame(None, address=address)) == mbus.encode(mbus.req_ud2(address, fcb=False))
    assert bytes(meterbus.send_request_frame_multi(None, address=address)) == mbus.encode(mbus.req_ud2(address, fcb=True))


@given(st.text("0123456789ABCDEF", min_size=16, max_size=16))
def test_selection_frames_are_byte_identical_to_pymeterbus(meterbus, mask):
    port = _Port()
    meterbus.send_select_frame(port, mask)
    assert port.sent == mbus.encode(mbus.select_request(mask))


def _seconds(record: mbus.Record) -> Decimal:
    return record.value * {"min": 60, "h": 3600, "d": 86400}.get(record.unit, 1)


@pytest.mark.parametrize("index", _numeric_vectors())
def test_our_values_agree_with_pymeterbus_up_to_its_float_error(meterbus, index):
    raw = bytes.fromhex(VECTORS[index]["hex"])
    theirs = meterbus.load(raw).records
    ours = mbus.parse_user_data(mbus.decode(raw)).records
    assert len(theirs) >= len(ours)
    compared = 0
    for record, other in zip(ours, theirs):
        value = other.value
        if not isinstance(record.value, Decimal) or record.modifiers or not isinstance(value, (int, Decimal)):
            continue
        expected = _seconds(record) if record.unit in ("min", "h", "d") else record.value
        # pyMeterBus multiplies floats: 1e-9 relative for scaled integers; a real32 it
        # gives as the single's binary expansion, we as its shortest decimal (2^-24 apart).
        tolerance = Decimal("1e-7") if record.coding is Coding.REAL32 else Decimal("1e-9")
        assert abs(Decimal(value) - expected) <= tolerance * max(Decimal(1), abs(expected)), (record, value)
        assert Decimal(value) == expected or record.value.as_tuple().exponent < 0 or record.coding is Coding.REAL32
        compared += 1
    assert compared


def test_pymeterbus_values_carry_float_artefacts_ours_do_not(meterbus):
    raw = bytes.fromhex(VECTORS[8]["hex"])
    assert meterbus.load(raw).records[0].value != Decimal("12.565")  # 12.56499999999999950...
    assert mbus.parse_user_data(mbus.decode(raw)).records[0].value == Decimal("12.565")
