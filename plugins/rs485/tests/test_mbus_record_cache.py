"""The M-Bus record parser's fast path: the meanings of DIBs and VIBs are kept by their
bytes (a meter sends the same ones in every telegram) and the parser checks lengths only
where they can fail. Held here to the parser as it was, uncached, on any bytes."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.errors import FrameError
from meterhub_rs485 import mbus
from meterhub_rs485.mbus import Coding, Function, LongFrame

VECTORS = json.loads((Path(__file__).parent / "data" / "mbus.json").read_text(encoding="utf-8"))["vectors"]
RESPONSES = [mbus.decode(bytes.fromhex(v["hex"])) for v in VECTORS if "first_records_decoded_by_libmbus" in v["meaning"]]
PROPERTY = settings(max_examples=300, deadline=None)


# --- the parser as it was: the reference ------------------------------------------------------


def _uncached_dib_fields(dib: bytes) -> tuple[Coding, Function, int, int, int]:
    return (Coding(dib[0] & 0x0F), Function(dib[0] >> 4 & 0x03), *mbus.record_storage(dib))


def _reference_record(data: bytes, start: int) -> tuple[mbus.Record, int]:
    """``_parse_record`` before the fast path: every check called, nothing kept."""
    pos = mbus._extensions(data, start + 1, data[start], "DIFE", mbus.MAX_DIFE, start)
    dib = bytes(data[start:pos])
    vib_start = pos
    mbus._need(data, pos, 1, "VIF", start)
    vif = data[pos]
    pos += 1
    if vif & 0x7F == 0x7C:
        mbus._need(data, pos, 1, "plain-text VIF length", start)
        text_len = data[pos]
        mbus._need(data, pos + 1, text_len, "plain-text VIF", start)
        pos += 1 + text_len
    pos = mbus._extensions(data, pos, vif, "VIFE", mbus.MAX_VIFE, start)
    vib = bytes(data[vib_start:pos])
    coding = Coding(dib[0] & 0x0F)
    if coding is Coding.VARIABLE:
        mbus._need(data, pos, 1, "LVAR", start)
        size = mbus._lvar_size(data[pos], start)
        mbus._need(data, pos + 1, size, "variable-length data", start)
        size += 1
    else:
        size = coding.size or 0
        mbus._need(data, pos, size, f"{coding.name} data", start)
    return mbus._interpret(dib, vib, bytes(data[pos : pos + size]), _uncached_dib_fields(dib)), pos + size


def _reference_records(data: bytes, start: int = 0) -> tuple:
    items: list = []
    pos = start
    while pos < len(data):
        dif = data[pos]
        if dif == mbus.DIF_IDLE_FILLER:
            items.append(mbus.IdleFiller())
            pos += 1
            continue
        if dif in (mbus.DIF_MANUFACTURER, mbus.DIF_MORE_FOLLOWS):
            return tuple(items), dif, bytes(data[pos + 1 :])
        if dif & 0x0F == 0x0F:
            raise FrameError(f"reserved special DIF {dif:02X} at data offset {pos}")
        record, pos = _reference_record(data, pos)
        items.append(record)
    return tuple(items), None, b""


def _outcome(parse, data: bytes) -> object:
    try:
        return parse(data)
    except FrameError as exc:
        return type(exc), str(exc)


def uncached(data: bytes, start: int = 0) -> object:
    """What the reference parser makes of ``data[start:]``, with the uncached VIB meaning too."""
    with mock.patch.object(mbus, "_interpret_vib", mbus._interpret_vib.__wrapped__):
        return _outcome(lambda d: _reference_records(d, start), data)


def _records_start(frame: LongFrame) -> int:
    """Where the records of a response begin in its data (after the header, if any)."""
    return {mbus.CI_RSP_LONG: mbus.LONG_HEADER_LEN, mbus.CI_RSP_SHORT: mbus.SHORT_HEADER_LEN}.get(frame.ci, 0)


# --- strategies -------------------------------------------------------------------------------


@st.composite
def vibs(draw) -> bytes:
    """Well-formed VIBs: any VIF (plain text included) and up to 10 VIFEs, extension bits set."""
    code = draw(st.integers(0, 0x7F))
    vifes = draw(st.lists(st.integers(0, 0x7F), max_size=mbus.MAX_VIFE))
    chain = [c | mbus.EXTENSION for c in vifes[:-1]] + vifes[-1:]
    if code == 0x7C:
        text = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8))
        return mbus.plain_text_vib(text, bytes(chain))
    return bytes((code | (mbus.EXTENSION if chain else 0), *chain))


@st.composite
def record_streams(draw) -> bytes:
    """Records of any DIB (0-10 DIFEs), any VIB and random data, perhaps cut or with a tail."""
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        difes = draw(st.lists(st.integers(0, 0x7F), max_size=mbus.MAX_DIFE))
        chain = [c | mbus.EXTENSION for c in difes[:-1]] + difes[-1:]
        dif = draw(st.integers(0, 0x7F).filter(lambda d: d & 0x0F != 0x0F)) | (mbus.EXTENSION if chain else 0)
        out += bytes((dif, *chain)) + draw(vibs()) + draw(st.binary(max_size=12))
    out += draw(st.sampled_from([b"", b"\x0F\x01\x02", b"\x1F", b"\x2F"]))
    return out[: draw(st.integers(0, len(out)))] if draw(st.booleans()) else out


# --- the properties -----------------------------------------------------------------------------


@PROPERTY
@given(vibs())
def test_a_kept_vib_meaning_is_the_meaning_worked_out_afresh(vib):
    fresh = mbus._interpret_vib.__wrapped__(vib)
    assert mbus._interpret_vib(vib) == fresh
    assert mbus._interpret_vib(vib) == fresh  # the second time from the cache


@PROPERTY
@given(st.binary(min_size=1, max_size=1 + mbus.MAX_DIFE).filter(lambda dib: dib[0] & 0x0F != 0x0F))  # 0F: no record
def test_a_kept_dib_meaning_is_the_meaning_worked_out_afresh(dib):
    assert mbus._dib_fields(dib) == mbus._dib_fields.__wrapped__(dib) == _uncached_dib_fields(dib)


@PROPERTY
@given(record_streams())
def test_the_parser_gives_what_the_uncached_parser_gave_on_any_records(data):
    assert _outcome(mbus.parse_records, data) == uncached(data)
    assert _outcome(mbus.parse_records, bytearray(data)) == uncached(data)


@PROPERTY
@given(st.binary(max_size=mbus.MAX_DATA))
def test_the_parser_gives_what_the_uncached_parser_gave_on_any_bytes(data):
    assert _outcome(mbus.parse_records, data) == uncached(data)


@PROPERTY
@given(st.sampled_from(RESPONSES), st.data())
def test_the_parser_gives_what_the_uncached_parser_gave_on_damaged_real_telegrams(frame, data):
    body = bytearray(frame.data)
    for _ in range(data.draw(st.integers(0, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    body = bytes(body[: data.draw(st.integers(0, len(body)))])
    start = _records_start(frame)
    assert _outcome(lambda d: mbus.parse_records(d, start), body) == uncached(body, start)


def test_every_real_telegram_parses_the_same_from_a_cold_and_a_warm_cache():
    mbus._interpret_vib.cache_clear()
    mbus._dib_fields.cache_clear()
    cold = [mbus.parse_user_data(frame) for frame in RESPONSES]
    warm = [mbus.parse_user_data(frame) for frame in RESPONSES]
    assert cold == warm
    for frame, telegram in zip(RESPONSES, warm):
        assert uncached(frame.data, _records_start(frame)) == (telegram.items, telegram.tail, telegram.manufacturer_data)


def test_what_is_kept_is_immutable_and_the_caches_are_bounded():
    info = mbus._interpret_vib(b"\x93\x3A")  # volume, "uncorrected unit"
    assert isinstance(info.modifiers, tuple)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        info.exponent = 0  # type: ignore[misc]
    assert isinstance(mbus._dib_fields(b"\x84\x10"), tuple)
    for cache in (mbus._interpret_vib, mbus._dib_fields):
        maxsize = cache.cache_info().maxsize
        assert maxsize is not None and 0 < maxsize <= 4096
    for n in range(3000):  # more distinct VIBs than the cache holds: it stays within its bound
        mbus._interpret_vib(bytes((0xFD, 0x80 | n % 128, 0x80 | n // 128 % 128, 0x3A)))
    assert mbus._interpret_vib.cache_info().currsize <= mbus._interpret_vib.cache_info().maxsize
