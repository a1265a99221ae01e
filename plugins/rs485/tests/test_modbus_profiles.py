"""Modbus device profiles: the shipped ones load, bad ones are rejected with file, line and
key, and register values decode exactly (and back, for the simulator)."""

from __future__ import annotations

import math
import os
import struct
import textwrap
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meterhub.errors import ConfigError, NotSupported
from meterhub.model import SerialSettings
from meterhub.quantities import resolve
from meterhub_rs485.modbus_profiles import (
    DATA_TYPES,
    Point,
    decode_point,
    decode_raw,
    encode_point,
    encode_raw,
    load_profile_dir,
    load_profile_file,
    parse_profile,
    profile_from_mapping,
    shipped_profiles,
)

SHIPPED = ("abb-b23", "chint-ddsu666", "chint-dtsu666", "eastron-sdm120", "eastron-sdm630")
PROFILE_DIR = resources.files("meterhub_rs485").joinpath("profiles")


def _yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _issues(text: str, source: str = "acme-x1.yaml") -> list:
    with pytest.raises(ConfigError) as info:
        parse_profile(_yaml(text), source)
    return info.value.issues


# --- the shipped profiles ---------------------------------------------------------------


def test_every_shipped_profile_loads():
    assert sorted(shipped_profiles()) == list(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_file_loads_on_its_own_and_cites_its_sources(name):
    entry = PROFILE_DIR.joinpath(f"{name}.yaml")
    text = entry.read_text(encoding="utf-8")
    profile = parse_profile(text, str(entry))
    assert profile.name == name
    assert profile.points, "a profile without quantities reads nothing"
    header = text.split("\n\n")[0]
    assert header.startswith("#") and "Sources" in header
    for obis in profile.points:
        assert resolve(obis).obis == obis


def test_the_sdm630_map_is_the_one_eastron_publishes():
    sdm = shipped_profiles()["eastron-sdm630"]
    volts = sdm.point("1-0:32.7.0")
    assert (volts.function, volts.address, volts.dtype, volts.word_order, volts.byte_order) == (4, 0x0000, "f32", "big", "big")
    assert sdm.point("1-0:1.8.0").address == 0x0048  # 30073 import kWh
    assert sdm.point("1-0:1.7.0").scale == Decimal("0.001")  # W on the meter, kW here
    assert sdm.serial == SerialSettings(9600, 8, "N", 1)
    assert sdm.identity[0].address == 0xFC02


def test_a_profile_without_the_quantity_says_so():
    with pytest.raises(NotSupported, match="chint-ddsu666 cannot read 1-0:52.7.0"):
        shipped_profiles()["chint-ddsu666"].point("1-0:52.7.0")


# --- rejected profiles: file, line and key ---------------------------------------------------

BAD_PROFILES = {
    "unknown data type": (
        """
        quantities:
          "1-0:32.7.0": {function: 4, address: 0, type: f16}
        """,
        2, "quantities.1-0:32.7.0.type", "bad data type 'f16'",
    ),
    "overlapping registers": (
        """
        defaults: {function: 4, type: f32}
        quantities:
          "1-0:32.7.0": {address: 0x0000}
          "1-0:31.7.0": {address: 0x0001}
        """,
        4, "quantities.1-0:31.7.0.address", "overlap those of 1-0:32.7.0 at 0x0000..0x0001 (line 3)",
    ),
    "unknown quantity": (
        """
        quantities:
          voltage_l1: {function: 4, address: 0, type: f32}
          "1-0:99.99.99": {function: 4, address: 2, type: f32}
        """,
        3, "quantities.1-0:99.99.99", "unknown quantity",
    ),
    "bad word order": (
        """
        quantities:
          "1-0:32.7.0": {function: 4, address: 0, type: f32, word_order: CDAB}
        """,
        2, "quantities.1-0:32.7.0.word_order", "bad word order 'CDAB'",
    ),
    "register out of range": (
        """
        quantities:
          "1-0:32.7.0": {function: 3, address: 70000, type: u16}
        """,
        2, "quantities.1-0:32.7.0.address", "out of 0..65535",
    ),
    "value running past the last register": (
        """
        quantities:
          "1-0:1.8.0": {function: 3, address: 0xFFFE, type: u64}
        """,
        2, "quantities.1-0:1.8.0.address", "runs past register 65535",
    ),
    "size vs type mismatch": (
        """
        quantities:
          "1-0:1.8.0": {function: 3, address: 0x5000, type: u64, count: 2}
        """,
        2, "quantities.1-0:1.8.0.count", "a u64 takes 4 register(s), but count is 2",
    ),
    "bad function code": (
        """
        quantities:
          "1-0:32.7.0": {function: 6, address: 0, type: u16}
        """,
        2, "quantities.1-0:32.7.0.function", "bad function code",
    ),
    "bad default, reported once where it is written": (
        """
        defaults: {function: 4, type: float}
        quantities:
          "1-0:32.7.0": {address: 0}
          "1-0:31.7.0": {address: 2}
        """,
        1, "defaults.type", "bad data type 'float'",
    ),
    "a 30001-style address in a pdu profile": (
        """
        numbering: modicon
        quantities:
          "1-0:32.7.0": {function: 4, address: 40001, type: f32}
        """,
        3, "quantities.1-0:32.7.0.address", "not a Modicon reference of a input register",
    ),
    "forbidden register mapped": (
        """
        forbidden: [{function: 4, start: 0x10, end: 0x1F}]
        quantities:
          "1-0:32.7.0": {function: 4, address: 0x1E, type: f32}
        """,
        3, "quantities.1-0:32.7.0", "forbidden range",
    ),
    "unknown top-level key": (
        """
        registers: []
        quantities:
          "1-0:32.7.0": {function: 4, address: 0, type: f32}
        """,
        1, "registers", "unknown key",
    ),
    "duplicate key": (
        """
        quantities:
          "1-0:32.7.0": {function: 4, address: 0, type: f32}
          "1-0:32.7.0": {function: 4, address: 2, type: f32}
        """,
        3, "quantities.1-0:32.7.0", "duplicate key (first on line 2)",
    ),
    "an alias and its code": (
        """
        quantities:
          "1-0:32.7.0": {function: 4, address: 0, type: f32}
          voltage_l1: {function: 4, address: 2, type: f32}
        """,
        3, "quantities.voltage_l1", "same quantity as 1-0:32.7.0 (line 2)",
    ),
    "a scale that is not a number": (
        """
        quantities:
          "1-0:32.7.0": {function: 3, address: 0, type: u16, scale: tenth}
        """,
        2, "quantities.1-0:32.7.0.scale", "scale must be a number",
    ),
    "a value wider than a request": (
        """
        max_registers: 2
        quantities:
          "1-0:1.8.0": {function: 3, address: 0, type: u64}
        """,
        3, "quantities.1-0:1.8.0", "more than max_registers 2",
    ),
    "bad serial parity": (
        """
        serial: {baudrate: 9600, parity: X}
        quantities:
          "1-0:32.7.0": {function: 4, address: 0, type: f32}
        """,
        1, "serial.parity", "parity must be one of",
    ),
    "not YAML at all": (
        """
        quantities: {"1-0:32.7.0": [
        """,
        2, "", "invalid YAML",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_a_bad_profile_is_rejected_with_file_line_and_key(case):
    text, line, key, message = BAD_PROFILES[case]
    issues = _issues(text)
    matching = [i for i in issues if i.key == key and message in i.message]
    assert matching, f"no issue {key}: {message!r} in {[str(i) for i in issues]}"
    assert matching[0].file == "acme-x1.yaml"
    assert matching[0].line == line
    assert str(matching[0]).startswith(f"acme-x1.yaml:{line}: ")


def test_every_problem_of_a_profile_is_reported_at_once():
    issues = _issues(
        """
        vendor: Acme
        quantities:
          "1-0:32.7.0": {function: 4, address: 0, type: f16}
          "1-0:31.7.0": {function: 4, address: 2, type: f32, word_order: middle}
          nonsense: {function: 4, address: 4, type: f32}
        """
    )
    assert [(i.line, i.key) for i in issues] == [
        (3, "quantities.1-0:32.7.0.type"),
        (4, "quantities.1-0:31.7.0.word_order"),
        (5, "quantities.nonsense"),
    ]


def test_a_profile_name_must_be_vendor_model():
    issues = _issues('quantities: {"1-0:32.7.0": {function: 4, address: 0, type: f32}}\n', source="profiles/SDM 120.yaml")
    assert "must be lower-case 'vendor-model'" in issues[0].message


def test_modicon_numbering_is_converted_to_wire_addresses():
    profile = parse_profile(
        _yaml(
            """
            numbering: modicon
            quantities:
              "1-0:32.7.0": {function: 4, address: 30001, type: f32}   # wire address 0
              "1-0:14.7.0": {function: 3, address: 400071, type: u16}  # 6-digit form: 70
            """
        ),
        "acme-x2.yaml",
    )
    assert profile.point("1-0:32.7.0").address == 0
    assert profile.point("1-0:14.7.0").address == 70


def test_a_mapping_from_a_hook_is_validated_too():
    profile = profile_from_mapping("acme-h1", {"quantities": {"energy_import": {"function": 3, "address": 10, "type": "u32", "scale": "0.01"}}})
    point = profile.point("1-0:1.8.0")
    assert (point.scale, point.unit) == (Decimal("0.01"), "kWh")
    with pytest.raises(ConfigError) as info:
        profile_from_mapping("acme-h2", {"quantities": {"energy_import": {"function": 3, "address": 10, "type": "u24"}}}, "acme plugin")
    issue = info.value.issues[0]
    assert (issue.file, issue.line, issue.key) == ("acme plugin", None, "quantities.energy_import.type")


def test_a_profile_folder_loads_every_yaml_file(tmp_path: Path):
    for name in ("eastron-sdm120", "abb-b23"):
        (tmp_path / f"{name}.yaml").write_text(PROFILE_DIR.joinpath(f"{name}.yaml").read_text(encoding="utf-8"))
    (tmp_path / "notes.txt").write_text("not a profile")
    assert sorted(load_profile_dir(tmp_path)) == ["abb-b23", "eastron-sdm120"]


def test_a_profile_folder_reports_the_problems_of_every_file(tmp_path: Path):
    (tmp_path / "acme-a.yaml").write_text('quantities:\n  "1-0:32.7.0": {function: 4, address: 0, type: f16}\n')
    (tmp_path / "acme-b.yaml").write_text('quantities:\n  "1-0:32.7.0": {function: 9, address: 0, type: f32}\n')
    (tmp_path / "acme-c.yaml").write_text('quantities:\n  "1-0:32.7.0": {function: 4, address: 0, type: f32}\n')
    with pytest.raises(ConfigError) as info:
        load_profile_dir(tmp_path)
    assert [(Path(i.file).name, i.line, i.key) for i in info.value.issues] == [
        ("acme-a.yaml", 2, "quantities.1-0:32.7.0.type"),
        ("acme-b.yaml", 2, "quantities.1-0:32.7.0.function"),
    ]


def test_a_missing_folder_or_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such profiles folder"):
        load_profile_dir(tmp_path / "nope")
    with pytest.raises(ConfigError, match="nope.yaml: cannot read the file: No such file"):
        load_profile_file(tmp_path / "nope.yaml")


def test_a_profile_that_is_no_regular_file_or_an_alias_bomb_is_refused_at_once(tmp_path: Path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(ConfigError, match="it is a FIFO"):
        load_profile_file(fifo)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)))
    with pytest.raises(ConfigError, match="holds more than"):
        load_profile_file(bomb)


def test_a_value_that_is_not_of_its_tags_type_is_a_profile_error():
    with pytest.raises(ConfigError, match=r"max_gap: invalid value: 'abc'"):
        parse_profile("serial: {baudrate: 9600}\nmax_gap: !!int abc\nquantities: {}\n", "p.yaml")


# --- values ----------------------------------------------------------------------------------


def _point(dtype: str, *, scale: str = "1", word: str = "big", byte: str = "big", invalid: tuple[int, ...] = ()) -> Point:
    return Point("1-0:32.7.0", 4, 0, dtype, word, byte, Decimal(scale), "V", invalid)


def test_a_float32_becomes_the_decimal_its_meter_meant():
    # 43 66 33 33 is the float32 nearest 230.2: its shortest text, not its float64 widening
    assert str(decode_point(_point("f32"), [0x4366, 0x3333])) == "230.2"  # not 230.1999969482422
    assert encode_point(_point("f32"), Decimal("230.2")) == [0x4366, 0x3333]


def test_a_float32_one_step_off_keeps_its_extra_digits():
    # modbus_rtu.json (and Tasmota's DDSU666 comment) give 43 66 33 34 as "230.2 V"; it is
    # the float32 one step above, 230.20001, which a display with 0.1 V resolution shows as 230.2.
    value = decode_point(_point("f32"), [0x4366, 0x3334])
    assert value == Decimal("230.20001")
    assert value.quantize(Decimal("0.1")) == Decimal("230.2")


def test_a_whole_float_is_read_without_an_exponent():
    # 43 66 00 00 is exactly 230.0; its shortest text "2.3e+02" must not become Decimal("2.3E+2"),
    # which CSV, `meterhub read` and str() would all print as 2.3E+2
    value = decode_point(_point("f32"), [0x4366, 0x0000])
    assert str(value) == "230" and value == Decimal("230.0")
    assert str(decode_point(_point("f32"), [0x4248, 0x0000])) == "50"  # 50.0 Hz
    assert str(decode_point(_point("f64"), encode_raw("f64", 1e16))) == "10000000000000000"  # repr: 1e+16
    assert str(decode_point(_point("u16", scale="1E+1"), [23])) == "230"  # a scale written 1e1


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float64_never_has_a_positive_exponent(value):
    assert decode_point(_point("f64"), encode_raw("f64", value)).as_tuple().exponent <= 0


def test_word_and_byte_order_are_honoured():
    abcd = [0x4366, 0x3333]
    assert decode_point(_point("f32", word="little"), [0x3333, 0x4366]) == Decimal("230.2")  # CDAB
    assert decode_point(_point("f32", byte="little"), [0x6643, 0x3333]) == Decimal("230.2")  # BADC
    assert decode_point(_point("f32", word="little", byte="little"), [0x3333, 0x6643]) == Decimal("230.2")  # DCBA
    assert encode_point(_point("f32", word="little"), Decimal("230.2")) == abcd[::-1]
    assert encode_point(_point("f32", byte="little"), Decimal("230.2")) == [0x6643, 0x3333]


def test_integers_are_scaled_exactly():
    assert decode_point(_point("u16", scale="0.01"), [23012]) == Decimal("230.12")
    assert decode_point(_point("s16", scale="0.001"), [0xFC18]) == Decimal("-1.000")
    assert decode_point(_point("s32", scale="0.00001"), [0xFFFF, 0xFF38]) == Decimal("-0.00200")
    assert decode_point(_point("u64", scale="0.01"), [0, 0, 0x0001, 0x0000]) == Decimal("655.36")
    assert decode_point(_point("f32", scale="0.1"), [0x450F, 0xE800]) == Decimal("230.25")  # DTSU666 style 2302.5 × 0.1


def test_not_available_values_are_not_numbers():
    with pytest.raises(NotSupported, match="not available"):
        decode_point(_point("u32", invalid=(0xFFFFFFFF,)), [0xFFFF, 0xFFFF])
    with pytest.raises(NotSupported, match="nan"):
        decode_point(_point("f32"), [0x7FC0, 0x0000])
    with pytest.raises(NotSupported, match="inf"):
        decode_point(_point("f64"), [0x7FF0, 0, 0, 0])


def test_a_value_the_register_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="not a multiple of the scale"):
        encode_point(_point("u16", scale="0.1"), Decimal("230.25"))
    with pytest.raises(ValueError, match="does not fit a u16"):
        encode_point(_point("u16"), 70000)


ORDERS = st.sampled_from(["big", "little"])


@given(st.sampled_from(sorted(t for t in DATA_TYPES if not DATA_TYPES[t].is_float)), st.data(), ORDERS, ORDERS)
def test_integer_registers_round_trip(dtype, data, word, byte):
    kind = DATA_TYPES[dtype]
    bits = 16 * kind.registers
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kind.signed else (0, (1 << bits) - 1)
    raw = data.draw(st.integers(low, high))
    registers = encode_raw(dtype, raw, word, byte)
    assert len(registers) == kind.registers and all(0 <= r <= 0xFFFF for r in registers)
    assert decode_raw(dtype, registers, word, byte) == raw


@given(st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), allow_nan=False, places=3), ORDERS, ORDERS)
def test_a_float32_decimal_of_six_digits_reads_back_exactly(value, word, byte):
    six = Decimal(f"{value:.6g}")  # what a float32 can carry: 6 significant digits
    point = _point("f32", word=word, byte=byte)
    assert decode_point(point, encode_point(point, six)) == six


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
@example(3.4025001647762064e38)  # short texts of it round past the largest float32
@example(1e-45)  # the smallest subnormal
def test_the_shortest_text_of_a_float32_is_the_same_float32(value):
    point = _point("f32")
    registers = encode_raw("f32", value)
    decoded = decode_point(point, registers)
    assert struct.pack(">f", float(decoded)) == struct.pack(">f", value)
    assert len(decoded.normalize().as_tuple().digits) <= 9  # significant digits (230 has two)
    assert decoded.as_tuple().exponent <= 0  # positional: 3.4E+38 is written out in full


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float64_reads_back_as_its_repr(value):
    assert decode_point(_point("f64"), encode_raw("f64", value)) == Decimal(repr(value))
    assert math.isfinite(float(decode_point(_point("f64"), encode_raw("f64", value))))


def test_the_driver_names_a_meters_vendor_and_model_from_its_profile():
    from meterhub.api import DeviceIdentity
    from meterhub.model import Meter
    from meterhub_rs485.modbus import ModbusDriver

    driver = ModbusDriver()
    assert isinstance(driver, DeviceIdentity)
    meter = Meter("1", "modbus", "bus1", options={"profile": "eastron-sdm630"})
    assert driver.device_identity(meter) == {"manufacturer": "Eastron", "model": "SDM630-Modbus V2"}
    assert driver.device_identity(Meter("1", "modbus", "bus1", options={"profile": "nosuch"})) == {}
