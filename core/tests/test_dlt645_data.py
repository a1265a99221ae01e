"""The DL/T 645 data-identifier table: OBIS mapping, value formats, signs and "FF"."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub.errors import FrameError, NotSupported
from meterhub.protocols.dlt645_data import (
    CLOCK_DIS,
    CLOCK_OBIS,
    ITEMS,
    ITEMS_1997,
    DataItem,
    decode_block,
    decode_parts,
    decode_value,
    encode_block,
    encode_value,
    item_for_di,
    item_for_obis,
)
from meterhub.quantities import VOCABULARY

PROPERTY = settings(max_examples=200, deadline=None)

#: The mapping the issue asks for, OBIS -> DI (DL/T 645-2007).
OBIS_2007 = {
    "1-0:1.8.0": 0x00010000,
    "1-0:1.8.1": 0x00010100,
    "1-0:1.8.2": 0x00010200,
    "1-0:1.8.3": 0x00010300,
    "1-0:1.8.4": 0x00010400,
    "1-0:2.8.0": 0x00020000,
    "1-0:2.8.4": 0x00020400,
    "1-0:15.8.0": 0x00000000,
    "1-0:21.8.0": 0x00150000,
    "1-0:22.8.0": 0x00160000,
    "1-0:41.8.0": 0x00290000,
    "1-0:42.8.0": 0x002A0000,
    "1-0:61.8.0": 0x003D0000,
    "1-0:62.8.0": 0x003E0000,
    "1-0:32.7.0": 0x02010100,
    "1-0:52.7.0": 0x02010200,
    "1-0:72.7.0": 0x02010300,
    "1-0:31.7.0": 0x02020100,
    "1-0:51.7.0": 0x02020200,
    "1-0:71.7.0": 0x02020300,
    "1-0:1.7.0": 0x02030000,
    "1-0:21.7.0": 0x02030100,
    "1-0:41.7.0": 0x02030200,
    "1-0:61.7.0": 0x02030300,
    "1-0:3.7.0": 0x02040000,
    "1-0:9.7.0": 0x02050000,
    "1-0:13.7.0": 0x02060000,
    "1-0:33.7.0": 0x02060100,
    "1-0:53.7.0": 0x02060200,
    "1-0:73.7.0": 0x02060300,
    "1-0:14.7.0": 0x02800002,
    "1-0:91.7.0": 0x02800001,
    "0-0:96.1.0": 0x04000402,
    **{f"0-0:96.5.{n}": 0x04000500 + n for n in range(1, 8)},
    "1-0:1.6.0": 0x01010000,
}

OBIS_1997 = {
    "1-0:1.8.0": 0x9010,
    "1-0:1.8.4": 0x9014,
    "1-0:2.8.0": 0x9020,
    "1-0:32.7.0": 0xB611,
    "1-0:72.7.0": 0xB613,
    "1-0:31.7.0": 0xB621,
    "1-0:1.7.0": 0xB630,
    "1-0:13.7.0": 0xB650,
    "0-0:96.1.0": 0xC032,
}


@pytest.mark.parametrize("obis, di", OBIS_2007.items())
def test_2007_obis_maps_to_its_di(obis, di):
    assert item_for_obis(obis).di == di


@pytest.mark.parametrize("obis, di", OBIS_1997.items())
def test_1997_obis_maps_to_its_di(obis, di):
    assert item_for_obis(obis, version=1997).di == di


@pytest.mark.parametrize("table", [ITEMS, ITEMS_1997], ids=["2007", "1997"])
def test_every_obis_in_the_tables_is_in_the_vocabulary(table):
    for item in table.values():
        if item.obis is not None:
            assert item.obis in VOCABULARY, item


@pytest.mark.parametrize("table", [ITEMS, ITEMS_1997], ids=["2007", "1997"])
def test_units_agree_with_the_vocabulary(table):
    for item in table.values():
        if item.obis is not None:
            assert item.unit == VOCABULARY.resolve(item.obis).unit, item


def test_table_keys_are_the_items_dis():
    assert all(di == item.di for di, item in ITEMS.items())


def test_unknown_obis_is_not_supported():
    with pytest.raises(NotSupported, match="8-0:1.0.0"):
        item_for_obis("8-0:1.0.0")


def test_clock_is_two_items_not_one():
    with pytest.raises(NotSupported):
        item_for_obis(CLOCK_OBIS)
    assert [ITEMS[di].fmt for di in CLOCK_DIS[2007]] == ["YYMMDDWW", "hhmmss"]
    assert [ITEMS_1997[di].fmt for di in CLOCK_DIS[1997]] == ["YYMMDDWW", "hhmmss"]


def test_unknown_di_is_not_supported():
    with pytest.raises(NotSupported):
        item_for_di(0x7F000000)


def test_data_item_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="unknown DL/T 645 data format"):
        DataItem(0x04A00001, "vendor thing", "XX.X")


# --- decoding -----------------------------------------------------------------------------


def test_all_ff_is_not_supported():
    with pytest.raises(NotSupported, match=r"not supported \(FF\)"):
        decode_value(ITEMS[0x02010200], b"\xff\xff")


def test_current_sign_bit_makes_it_negative():
    assert decode_value(ITEMS[0x02020100], bytes.fromhex("99 49 80")) == Decimal("-4.999")


def test_combined_energy_bit_31_is_the_sign():
    assert decode_value(ITEMS[0x00000000], bytes.fromhex("64 02 75 80")) == Decimal("-7502.64")


def test_forward_energy_is_unsigned_and_uses_all_eight_digits():
    assert decode_value(ITEMS[0x00010000], bytes.fromhex("99 99 99 99")) == Decimal("999999.99")


def test_power_factor_sign_bit():
    assert decode_value(ITEMS[0x02060000], bytes.fromhex("01 85")) == Decimal("-0.501")


def test_negative_zero_reads_as_zero():
    value = decode_value(ITEMS[0x02030000], bytes.fromhex("00 00 80"))
    assert value == 0 and not value.is_signed()


def test_status_word_is_a_binary_word_not_bcd():
    assert decode_value(ITEMS[0x04000501], bytes.fromhex("FA 00")) == Decimal(250)


def test_non_bcd_digits_are_a_frame_error():
    with pytest.raises(FrameError, match="bad XXX.X"):
        decode_value(ITEMS[0x02010100], bytes.fromhex("0A 22"))


def test_wrong_payload_size_is_a_frame_error():
    with pytest.raises(FrameError, match="is 4 bytes, got 3"):
        decode_value(ITEMS[0x00010000], bytes(3))


def test_impossible_date_is_a_frame_error():
    with pytest.raises(FrameError):
        decode_value(ITEMS[0x04000101], bytes.fromhex("01 32 01 16"))  # 32nd of January


def test_max_demand_holds_value_and_time():
    payload = encode_value(ITEMS[0x01010000], (Decimal("1.2345"), "2024-05-01T12:30"))
    assert decode_parts(ITEMS[0x01010000], payload) == (Decimal("1.2345"), "2024-05-01T12:30")
    assert decode_value(ITEMS[0x01010000], payload) == Decimal("1.2345")


def test_max_demand_without_a_time_has_none():
    assert decode_parts(ITEMS[0x01010000], encode_value(ITEMS[0x01010000], Decimal("0.5")))[1] is None


def test_meter_number_reads_in_nameplate_order():
    assert decode_value(ITEMS[0x04000402], bytes.fromhex("12 00 00 00 10 20")) == "201000000012"


def test_block_decoding_needs_whole_elements():
    with pytest.raises(FrameError):
        decode_block(ITEMS[0x0201FF00], bytes(5))


def test_decode_value_refuses_a_block():
    with pytest.raises(ValueError, match="decode_block"):
        decode_value(ITEMS[0x0201FF00], bytes(6))


# --- encoding -----------------------------------------------------------------------------


def test_date_encodes_the_weekday_sunday_is_zero():
    assert encode_value(ITEMS[0x04000101], "2016-01-11") == bytes.fromhex("01 11 01 16")  # Monday
    assert encode_value(ITEMS[0x04000101], "2016-01-10") == bytes.fromhex("00 10 01 16")  # Sunday


def test_time_encodes_seconds_first():
    assert encode_value(ITEMS[0x04000102], "21:53:55") == bytes.fromhex("55 53 21")


def test_encode_rounds_half_up_to_the_format():
    assert decode_value(ITEMS[0x02010100], encode_value(ITEMS[0x02010100], Decimal("229.95"))) == Decimal("230.0")


def test_encode_none_is_not_supported_ff():
    assert encode_value(ITEMS[0x02010200], None) == b"\xff\xff"


def test_encode_block_with_missing_phases():
    item = ITEMS[0x0201FF00]
    assert decode_block(item, encode_block(item, [Decimal("230.1"), None, None])) == [Decimal("230.1"), None, None]


def test_encode_refuses_a_negative_unsigned_value():
    with pytest.raises(ValueError, match="unsigned"):
        encode_value(ITEMS[0x00010000], Decimal("-1"))


def test_encode_refuses_an_overflow():
    with pytest.raises(ValueError, match="does not fit"):
        encode_value(ITEMS[0x02010100], Decimal("1000.0"))


def test_signed_values_leave_the_sign_bit_free():
    with pytest.raises(ValueError, match="does not fit"):
        encode_value(ITEMS[0x02020100], Decimal("800.000"))


# --- properties over the whole table ---------------------------------------------------------

NUMERIC = sorted(
    (item for item in (*ITEMS.values(), *ITEMS_1997.values()) if item.parts[0].kind == "number" and not item.block),
    key=lambda i: i.di,
)


@PROPERTY
@given(st.sampled_from(NUMERIC), st.data())
def test_numeric_values_round_trip_exactly(item, data):
    fmt = item.parts[0]
    limit = 8 * 10 ** (2 * fmt.size - 1) if item.signed else 10 ** (2 * fmt.size)
    digits = data.draw(st.integers(-(limit - 1) if item.signed else 0, limit - 1))
    value = Decimal(digits).scaleb(-fmt.decimals)
    assert decode_value(item, encode_value(item, value)) == value


@PROPERTY
@given(st.sampled_from(sorted((*ITEMS.values(), *ITEMS_1997.values()), key=lambda i: i.di)), st.data())
def test_any_payload_decodes_or_raises_frame_error_or_not_supported(item, data):
    payload = data.draw(st.binary(min_size=item.size, max_size=item.size))
    decode = decode_block if item.block else decode_value
    try:
        decode(item, payload)
    except (FrameError, NotSupported):
        pass

