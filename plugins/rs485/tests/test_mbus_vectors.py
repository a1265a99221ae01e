"""Every M-Bus vector (tests/data/mbus.json, real and constructed frames with their meaning)
decodes to its documented fields and values and re-encodes byte for byte."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from meterhub.errors import TruncatedFrame
from meterhub_rs485 import mbus
from meterhub_rs485.mbus import Ack, Coding, Function, LongFrame, LongHeader, ShortFrame

VECTORS = json.loads((Path(__file__).parent / "data" / "mbus.json").read_text(encoding="utf-8"))["vectors"]
IDS = [f"{i}-{v['checker']['type']}-{v['source'].split(':')[-1].split('/')[-1][:28]}" for i, v in enumerate(VECTORS)]
RESPONSES = [(i, v) for i, v in enumerate(VECTORS) if "first_records_decoded_by_libmbus" in v["meaning"]]

#: libmbus's normalised XML names -> our record quantity.
LIBMBUS_QUANTITY = {
    "Volume": "volume",
    "Volume flow": "volume_flow",
    "Energy": "energy",
    "Power": "power",
    "Flow temperature": "flow_temperature",
    "Return temperature": "return_temperature",
    "Temperature difference": "temperature_difference",
    "External temperature": "external_temperature",
    "Fabrication No": "fabrication_number",
    "On time": "on_time",
    "Averaging Duration": "averaging_duration",
    "Actuality Duration": "actuality_duration",
    "Voltage": "voltage",
    "Current": "current",
    "Digital Input": "digital_input",
    "Time point (date & time)": "datetime",
}
#: libmbus reports durations in seconds; our records keep the meter's own unit.
SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400}
LIBMBUS_FUNCTION = {
    "Instantaneous value": Function.INSTANTANEOUS,
    "Maximum value": Function.MAXIMUM,
    "Minimum value": Function.MINIMUM,
    "Value during error state": Function.ERROR_STATE,
}


def _raw(vector: dict) -> bytes:
    return bytes.fromhex(vector["hex"])


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_every_vector_decodes_to_its_documented_frame(vector):
    checker = vector["checker"]
    frame = mbus.decode(_raw(vector))
    kind = checker["type"]
    if kind == "single_char_ack":
        assert frame == Ack()
        return
    assert isinstance(frame, ShortFrame if kind == "short" else LongFrame)
    assert frame.control == int(checker["C"], 16)
    assert frame.address == checker["A"]
    if kind != "short":
        assert frame.ci == int(checker["CI"], 16)
        assert (frame.data == b"") == (kind == "control")
    assert int(checker["cs_in_frame"], 16) == int(checker["cs_expected"], 16) == _raw(vector)[-2]


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_every_vector_reencodes_byte_identically(vector):
    raw = _raw(vector)
    frame = mbus.decode(raw)
    assert mbus.encode(frame) == raw
    if isinstance(frame, LongFrame) and frame.ci in mbus.RESPONSE_CIS and frame.data:
        telegram = mbus.parse_user_data(frame)
        assert mbus.encode(mbus.rsp_ud(frame.address, telegram, acd=frame.acd, dfc=frame.dfc)) == raw


@pytest.mark.parametrize(("index", "vector"), RESPONSES, ids=[IDS[i] for i, _ in RESPONSES])
def test_every_response_header_is_the_documented_meter(index, vector):
    checker = vector["checker"]
    header = mbus.parse_user_data(mbus.decode(_raw(vector))).header
    assert isinstance(header, LongHeader)
    assert header.id == checker["id_bcd"]
    assert header.manufacturer == checker["manufacturer"]
    assert header.version == checker["version"]
    assert header.medium == int(checker["medium"], 16)
    assert header.access_no == checker["access_no"]
    assert header.status == int(checker["status"], 16)
    assert f"{header.signature:04X}" == checker["signature"]
    # libmbus prints the ID without leading zeros (Id 182007 for 00182007, 500023E).
    assert header.id.lstrip("0") == vector["meaning"]["slave_information"]["Id"].lstrip("0")


def _comparable(telegram: mbus.Telegram) -> list:
    """Our records in libmbus's order: it lists the manufacturer data after DIF 0F/1F as a record."""
    items: list = list(telegram.records)
    if telegram.tail is not None and telegram.manufacturer_data:
        items.append(telegram.manufacturer_data)
    return items


@pytest.mark.parametrize(("index", "vector"), RESPONSES, ids=[IDS[i] for i, _ in RESPONSES])
def test_every_response_record_is_what_libmbus_decodes(index, vector):
    telegram = mbus.parse_user_data(mbus.decode(_raw(vector)))
    ours = _comparable(telegram)
    expected = vector["meaning"]["first_records_decoded_by_libmbus"]
    assert len(ours) >= len(expected)
    for record, exp in zip(ours, expected):
        if exp["Function"] == "Manufacturer specific":
            assert record == bytes.fromhex(exp["Value"]), exp
            continue
        assert record.function is LIBMBUS_FUNCTION[exp["Function"]], exp
        assert record.storage == int(exp["StorageNumber"]), exp
        assert record.tariff == int(exp.get("Tariff", 0)), exp
        assert record.subunit == int(exp.get("Device", 0)), exp
        if exp["Quantity"] in LIBMBUS_QUANTITY:
            assert record.quantity == LIBMBUS_QUANTITY[exp["Quantity"]], exp
        else:  # a plain-text VIF: libmbus shows the text as the quantity
            assert record.quantity == "plain_text" and record.description == exp["Quantity"], exp
        if isinstance(record.value, datetime):
            assert record.value.isoformat() == exp["Value"].rstrip("Z"), exp
        elif isinstance(record.value, str):
            assert record.value == exp["Value"], exp
        else:
            value = record.value * SECONDS.get(record.unit, 1)
            unit = "s" if record.unit in SECONDS else record.unit
            assert value == Decimal(exp["Value"]), exp
            assert unit.replace("m3", "m^3") == exp["Unit"] or exp["Unit"] in ("", "-"), exp


@pytest.mark.parametrize(("index", "vector"), RESPONSES, ids=[IDS[i] for i, _ in RESPONSES])
def test_every_record_value_reencodes_to_the_bytes_the_meter_sent(index, vector):
    telegram = mbus.parse_user_data(mbus.decode(_raw(vector)))
    checked = 0
    for record in telegram.records:
        if isinstance(record.value, (Decimal, str)):
            assert mbus.encode_value(record.coding, record.vib, record.value) == record.data, record
            checked += 1
    assert checked or not telegram.records


def test_the_request_vectors_are_what_our_builders_send():
    raws = {v["hex"] for v in VECTORS}
    for frame in (mbus.snd_nke(1), mbus.snd_nke(0), mbus.req_ud2(0, fcb=False), mbus.req_ud2(0, fcb=True), mbus.req_ud2(253, fcb=False)):
        assert mbus.encode(frame).hex(" ").upper() in raws
    assert mbus.encode(mbus.select_request("00000001DADAFA1B")) == _raw(VECTORS[6])


def test_the_selection_vector_names_its_secondary_address():
    frame = mbus.decode(_raw(VECTORS[6]))
    assert mbus.parse_select(frame) == "00000001DADAFA1B"  # ID 00000001, manufacturer DA DA, version FA, medium 1B


def test_the_pad_water_meter_is_exactly_12_565_m3():
    record = mbus.parse_user_data(mbus.decode(_raw(VECTORS[8]))).records[0]
    assert record.value == Decimal("12.565") and str(record.value) == "12.565"
    assert record.unit == "m3" and record.coding is Coding.INT24


def test_the_secondary_address_follows_libmbus_order():
    header = mbus.parse_user_data(mbus.decode(_raw(VECTORS[8]))).header
    # ID 12345678, manufacturer bytes 24 40 in wire order (PAD = 0x4024), version 01, medium 07.
    assert header.secondary_address == "1234567824400107"
    assert mbus.secondary_to_wire(header.secondary_address) == _raw(VECTORS[8])[7:15]


def test_a_non_bcd_identification_is_kept_as_printed():
    header = mbus.parse_user_data(mbus.decode(_raw(VECTORS[18]))).header
    assert header.id == "0500023E"


def test_real32_values_are_the_shortest_exact_decimal():
    records = mbus.parse_user_data(mbus.decode(_raw(VECTORS[9]))).records
    assert records[4].value == Decimal("41.737434") and records[5].value == Decimal("35.46365")


def test_a_negative_bcd_temperature_difference():
    # Landis+Gyr T230: 0B 62 02 00 F0 -- BCD6 with F in the top nibble is negative.
    record = mbus.parse_user_data(mbus.decode(_raw(VECTORS[15]))).records[8]
    assert record.quantity == "temperature_difference" and record.value == Decimal("-0.2") and record.unit == "K"


def test_type_g_and_type_f_time_points():
    records = mbus.parse_user_data(mbus.decode(_raw(VECTORS[10]))).records
    assert records[16].value == datetime(2011, 1, 5, 15, 26)
    assert records[26].value == date(2010, 12, 31) and records[26].storage == 1


def test_a_date_of_vife_turns_the_record_into_a_time_point():
    # L+G T230: 94 10 DA 6F 32 14 7A 18 -- maximum flow temperature, "date/time of end of last".
    record = mbus.parse_user_data(mbus.decode(_raw(VECTORS[15]))).records[21]
    assert record.quantity == "flow_temperature" and record.function is Function.MAXIMUM and record.tariff == 1
    assert record.modifiers == ("date/time of end of last",)
    assert record.value == datetime(2011, 8, 26, 20, 50)


def test_a_periodic_date_keeps_its_bytes_and_says_why_it_has_no_value():
    record = mbus.parse_user_data(mbus.decode(_raw(VECTORS[15]))).records[32]
    assert record.storage == 510 and record.value is None and "periodic" in record.note
    assert record.data == bytes.fromhex("0000E1F1")


def test_plain_text_units_and_text_values():
    records = mbus.parse_user_data(mbus.decode(_raw(VECTORS[11]))).records
    assert (records[1].unit, records[1].value) == ("cust. ID", "TEST CYBLE")
    assert (records[3].unit, records[3].value) == ("bat. time", Decimal(4338))
    elv = mbus.parse_user_data(mbus.decode(_raw(VECTORS[16]))).records
    assert (elv[1].unit, elv[1].value) == ("%RH", Decimal("45.64"))  # FC 03 "HR%" + VIFE 74: × 10^-2


def test_volts_and_amperes_of_the_fd_table():
    records = mbus.parse_user_data(mbus.decode(_raw(VECTORS[14]))).records
    assert (records[0].quantity, records[0].value, records[0].unit) == ("voltage", Decimal("1234.56"), "V")
    assert (records[6].quantity, records[6].value, records[6].unit) == ("current", Decimal("123.456"), "A")


def test_manufacturer_vifes_are_flagged_and_not_plain():
    record = mbus.parse_user_data(mbus.decode(_raw(VECTORS[13]))).records[4]  # 02 FD C9 FF 01
    assert record.quantity == "voltage" and record.value == Decimal(223)
    assert record.manufacturer_specific and not record.is_plain


def test_more_records_follow_is_seen():
    assert mbus.parse_user_data(mbus.decode(_raw(VECTORS[12]))).more_follows  # ABB ends with 1F
    assert not mbus.parse_user_data(mbus.decode(_raw(VECTORS[10]))).more_follows  # Kamstrup ends with 0F


def test_a_control_frame_response_has_no_telegram():
    with pytest.raises(TruncatedFrame, match="12-byte header"):
        mbus.parse_user_data(mbus.decode(_raw(VECTORS[7])))
