"""Modbus device profiles: which registers of one meter model hold which OBIS quantity.

A profile is data (a YAML file in ``profiles/<vendor>-<model>.yaml``, a folder of them
named in a site file, or a mapping registered through ``meterhub_register_profiles``),
so supporting a new meter model never needs code. This module loads and validates
profiles, reporting every problem at once with its file, line and key, and turns the
registers a meter returns into exact :class:`~decimal.Decimal` values (and back, for the
simulator).

Register addresses are the 0-based addresses that go on the wire (the PDU address of
Modbus Application Protocol V1.1b3 §4.4). Many datasheets number registers 30001-style
("Modicon" references, where input register 30001 is wire address 0 and holding register
40001 is wire address 0); a profile written that way says ``numbering: modicon`` and is
converted here, so that the classic off-by-one cannot slip in unnoticed.

Profile format (every key but ``quantities`` is optional)::

    vendor: Eastron                 # free text, shown to users
    model: SDM120-Modbus
    description: ...
    numbering: pdu                  # or "modicon" (30001 / 40001 style, 5 or 6 digits)
    serial: {baudrate: 2400, bytesize: 8, parity: N, stopbits: 1}
    unit_id: 1                      # the factory default unit id
    max_registers: 80               # most registers one request may read (1..125)
    batching: true                  # may neighbouring quantities share one request?
    max_gap: 8                      # unmapped registers a batch may read over (default: the driver's)
    forbidden:                      # registers never to read (some meters fail on them)
      - {function: 4, start: 0x0100, end: 0x010F}
    identity:                       # registers that identify the model (used by scan)
      - {function: 3, address: 0xFC02, type: u16, equals: 0x0020}
    defaults: {function: 4, type: f32, word_order: big, byte_order: big}
    quantities:
      "1-0:32.7.0": {address: 0x0000, unit: V}              # OBIS code or alias
      "1-0:1.7.0":  {address: 0x000C, scale: 0.001, unit: kW}
      "1-0:1.8.0":  {function: 3, address: 0x5000, type: u64, scale: 0.01, invalid: [0xFFFFFFFFFFFFFFFF]}

Data types: ``u16 s16 u32 s32 u64 s64 f32 f64``. ``word_order: big`` means the most
significant register comes first (ABCD for a float), ``little`` the least significant
first (CDAB); ``byte_order`` is the order within each register (``little``: BADC). A
value is ``raw * scale`` in ``unit`` (default: the quantity's unit in the vocabulary).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import yaml

from meterhub.errors import ConfigError, ConfigIssue, FrameError, NotSupported, UnknownQuantity
from meterhub.model import PARITIES, SerialSettings
from meterhub.quantities import resolve
from meterhub.yamlnodes import compose_yaml, read_document

__all__ = [
    "DATA_TYPES",
    "DataType",
    "IdentityCheck",
    "Point",
    "Profile",
    "RegisterRange",
    "decode_point",
    "decode_raw",
    "encode_point",
    "encode_raw",
    "load_profile_dir",
    "load_profile_file",
    "parse_profile",
    "profile_from_mapping",
    "shipped_profiles",
]

#: Modbus Application Protocol V1.1b3 §6.3/§6.4: one read of holding or input registers
#: returns 1 to 125 registers (125 × 2 bytes + byte count fill a 253-byte PDU).
MAX_REGISTERS_PER_READ = 125

#: The largest profile file read, in bytes: a profile maps a few hundred registers at most
#: (the shipped ones are under 6 KB); anything far larger was named by mistake.
MAX_PROFILE_BYTES = 1024 * 1024

#: Function codes a profile may read with (§6.3 read holding registers, §6.4 read input registers).
READ_FUNCTIONS = {3: "read holding registers", 4: "read input registers"}

WORD_ORDERS = ("big", "little")
BYTE_ORDERS = ("big", "little")

#: Profile names are the lower-case ``vendor-model`` of the hook spec.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.]*(-[a-z0-9_.]+)+$")

#: Modicon references: 3xxxx / 3xxxxx are input registers, 4xxxx / 4xxxxx holding
#: registers; reference 30001 (or 300001) is wire address 0.
_MODICON = {4: (30001, 300001), 3: (40001, 400001)}

_TOP_KEYS = (
    "vendor", "model", "description", "numbering", "serial", "unit_id", "max_registers",
    "batching", "max_gap", "forbidden", "identity", "defaults", "quantities",
)  # fmt: skip
_POINT_KEYS = ("function", "address", "type", "count", "word_order", "byte_order", "scale", "unit", "invalid", "description")
_DEFAULT_KEYS = ("function", "type", "word_order", "byte_order", "scale")
_SERIAL_KEYS = ("baudrate", "bytesize", "parity", "stopbits")
_IDENTITY_KEYS = ("function", "address", "type", "word_order", "byte_order", "equals")
_RANGE_KEYS = ("function", "start", "end")


@attrs.frozen
class DataType:
    """How many registers a value takes and how its bytes read (struct format, big-endian)."""

    name: str
    registers: int
    fmt: str  #: struct format of the big-endian bytes

    @property
    def is_float(self) -> bool:
        return self.fmt in (">f", ">d")

    @property
    def signed(self) -> bool:
        return self.fmt in (">h", ">i", ">q", ">f", ">d")


DATA_TYPES: Mapping[str, DataType] = MappingProxyType(
    {
        t.name: t
        for t in (
            DataType("u16", 1, ">H"),
            DataType("s16", 1, ">h"),
            DataType("u32", 2, ">I"),
            DataType("s32", 2, ">i"),
            DataType("u64", 4, ">Q"),
            DataType("s64", 4, ">q"),
            DataType("f32", 2, ">f"),
            DataType("f64", 4, ">d"),
        )
    }
)


@attrs.frozen
class Point:
    """Where one quantity lives in a meter's registers and how to turn them into a value."""

    obis: str
    function: int  #: 3 (holding) or 4 (input)
    address: int  #: first register, 0-based wire address
    dtype: str  #: a key of DATA_TYPES
    word_order: str = "big"
    byte_order: str = "big"
    scale: Decimal = Decimal(1)
    unit: str = ""
    invalid: tuple[int, ...] = ()  #: raw values that mean "not available" (e.g. ABB's all-ones)

    @property
    def count(self) -> int:
        """Registers the value occupies."""
        return DATA_TYPES[self.dtype].registers

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.count


@attrs.frozen
class RegisterRange:
    """Registers ``start``..``end`` (inclusive) of one function's address space."""

    function: int
    start: int
    end: int

    def overlaps(self, function: int, start: int, end: int) -> bool:
        """Does ``start``..``end - 1`` of ``function`` touch this range?"""
        return function == self.function and start <= self.end and self.start < end


@attrs.frozen
class IdentityCheck:
    """A register whose value identifies the model (a meter-code register)."""

    function: int
    address: int
    dtype: str
    equals: tuple[int, ...]
    word_order: str = "big"
    byte_order: str = "big"

    @property
    def count(self) -> int:
        return DATA_TYPES[self.dtype].registers

    def matches(self, registers: Sequence[int]) -> bool:
        return decode_raw(self.dtype, registers, self.word_order, self.byte_order) in self.equals


def _proxy(value: Mapping[str, Point]) -> Mapping[str, Point]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Profile:
    """One meter model's register map and its defaults, validated."""

    name: str
    points: Mapping[str, Point] = attrs.field(converter=_proxy)  #: OBIS code -> point
    vendor: str = ""
    model: str = ""
    description: str = ""
    source: str = ""  #: file (or hook) it came from, for messages
    serial: SerialSettings = SerialSettings(9600, 8, "N", 1)
    unit_id: int = 1
    max_registers: int = MAX_REGISTERS_PER_READ
    batching: bool = True
    max_gap: int | None = None  #: None: the driver's default
    forbidden: tuple[RegisterRange, ...] = ()
    identity: tuple[IdentityCheck, ...] = ()

    def point(self, obis: str) -> Point:
        """The point of ``obis``; NotSupported naming the profile if it has none."""
        try:
            return self.points[obis]
        except KeyError:
            raise NotSupported(f"profile {self.name} cannot read {obis}") from None

    def is_forbidden(self, function: int, start: int, end: int) -> bool:
        """Does reading ``start``..``end - 1`` touch a forbidden register?"""
        return any(r.overlaps(function, start, end) for r in self.forbidden)


# --- values ------------------------------------------------------------------------


def _wire_bytes(registers: Sequence[int], word_order: str, byte_order: str) -> bytes:
    """The registers as one big-endian byte string (most significant byte first)."""
    words = list(registers)
    if word_order == "little":
        words.reverse()
    order = "little" if byte_order == "little" else "big"
    return b"".join(int(w).to_bytes(2, order) for w in words)


def _registers(data: bytes, word_order: str, byte_order: str) -> list[int]:
    order = "little" if byte_order == "little" else "big"
    words = [int.from_bytes(data[i : i + 2], order) for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    return words


def decode_raw(dtype: str, registers: Sequence[int], word_order: str = "big", byte_order: str = "big") -> int | float:
    """The raw number held by ``registers`` (an int, or a float for f32/f64)."""
    kind = DATA_TYPES[dtype]
    if len(registers) != kind.registers:
        raise FrameError(f"a {dtype} value takes {kind.registers} register(s), got {len(registers)}")
    if any(not 0 <= int(r) <= 0xFFFF for r in registers):
        raise FrameError(f"registers must be 16-bit values, got {list(registers)}")
    return struct.unpack(kind.fmt, _wire_bytes(registers, word_order, byte_order))[0]


def encode_raw(dtype: str, raw: float, word_order: str = "big", byte_order: str = "big") -> list[int]:
    """The registers that hold ``raw`` (the inverse of :func:`decode_raw`)."""
    kind = DATA_TYPES[dtype]
    try:
        data = struct.pack(kind.fmt, raw)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{raw!r} does not fit a {dtype} value: {exc}") from None
    return _registers(data, word_order, byte_order)


def _float32_text(value: float) -> str:
    """The shortest decimal text that reads back as the same float32.

    A float32 carries 6 to 9 significant decimal digits; printing its float64 widening
    (230.1999969482422 for a meter's 230.2) would invent digits nobody measured, so we
    take the fewest digits that round-trip, as IEEE 754-2008 §5.12.2 recommends.
    """
    packed = struct.pack(">f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        try:
            if struct.pack(">f", float(text)) == packed:
                return text
        except OverflowError:  # rounded up past the largest float32 (near ±3.4e38)
            continue
    return repr(value)  # unreachable: 9 significant digits always round-trip a float32


def _positional(value: Decimal) -> Decimal:
    """``value`` with no positive exponent: the shortest text of a float32 230.0 is
    ``2.3e+02``, whose Decimal would print as ``2.3E+2``; this gives ``230``. Built from
    its own digits (no context rounding), so the value and every digit stay the same."""
    exponent = value.as_tuple().exponent  # an int for every finite value
    return Decimal(format(value, "f")) if isinstance(exponent, int) and exponent > 0 else value


def decode_point(point: Point, registers: Sequence[int]) -> Decimal:
    """The exact value of ``point`` held by ``registers``.

    Integers are scaled exactly (raw 23012 with scale 0.01 is 230.12); an f32 becomes the
    Decimal of its shortest round-tripping text, an f64 of ``repr``, then is scaled. The
    result never carries a positive exponent (230, not 2.3E+2). A raw value the profile
    lists as ``invalid`` and a NaN or infinity raise NotSupported: the meter has no value
    for it right now.
    """
    raw = decode_raw(point.dtype, registers, point.word_order, point.byte_order)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise NotSupported(f"{point.obis}: the meter reports {raw} (no value)")
        text = _float32_text(raw) if point.dtype == "f32" else repr(raw)
        return _positional(Decimal(text) * point.scale)
    if raw in point.invalid:
        raise NotSupported(f"{point.obis}: the meter reports raw value {raw:#x}, which its profile marks 'not available'")
    return _positional(Decimal(raw) * point.scale)


def encode_point(point: Point, value: Decimal | int | str) -> list[int]:
    """Registers a meter would hold for ``value`` (the simulator's side of :func:`decode_point`).

    Integer types need ``value / scale`` to be a whole number; floats are rounded to the
    nearest float32/float64. ValueError if the value cannot be held.
    """
    raw = Decimal(value) / point.scale
    kind = DATA_TYPES[point.dtype]
    if kind.is_float:
        return encode_raw(point.dtype, float(raw), point.word_order, point.byte_order)
    if raw != raw.to_integral_value():
        raise ValueError(f"{point.obis}: {value} is not a multiple of the scale {point.scale}")
    return encode_raw(point.dtype, int(raw), point.word_order, point.byte_order)


# --- YAML with lines ------------------------------------------------------------------

_Path = tuple[Any, ...]


def _key_text(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


class _Issues:
    """Collects issues of one profile, locating each key path by its line when known."""

    def __init__(self, source: str, lines: Mapping[_Path, int] | None = None, prefix: _Path = ()) -> None:
        self.source = source
        self.lines = lines or {}
        self.prefix = prefix
        self.found: list[ConfigIssue] = []

    def line(self, path: _Path) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def add(self, path: _Path, message: str) -> None:
        issue = ConfigIssue(self.source, self.line(path), _key_text(self.prefix + path), message)
        if issue not in self.found:  # a bad default is reported once, not once per quantity
            self.found.append(issue)


def _compose(text: str, source: str) -> tuple[Any, dict[_Path, int], list[ConfigIssue]]:
    """YAML text as plain data plus the 1-based line of every key path.

    Floats come back as Decimal built from their source text (a scale written 0.01 is
    exactly 0.01). YAML errors, duplicate keys and merge keys become issues.
    """
    lines: dict[_Path, int] = {}
    issues: list[ConfigIssue] = []
    # meterhub's bounded composer: a billion-laughs profile is refused, not expanded
    loader, root = compose_yaml(text, source, issues)
    if loader is None:
        return None, lines, issues
    try:
        if root is None:
            return None, lines, issues

        def convert(node: yaml.Node, path: _Path, line: int) -> Any:
            lines.setdefault(path, line)
            if isinstance(node, yaml.MappingNode):
                out: dict[Any, Any] = {}
                for key_node, value_node in node.value:
                    key_line = key_node.start_mark.line + 1
                    if not isinstance(key_node, yaml.ScalarNode):
                        issues.append(ConfigIssue(source, key_line, _key_text(path), "a key must be a plain name"))
                        continue
                    if key_node.tag.endswith(":merge"):
                        issues.append(ConfigIssue(source, key_line, _key_text(path), "merge keys (<<) are not supported in profiles; use 'defaults:'"))
                        continue
                    key = key_node.value
                    if key in out:
                        first = lines.get(path + (key,))
                        issues.append(ConfigIssue(source, key_line, _key_text(path + (key,)), f"duplicate key (first on line {first})"))
                        continue
                    out[key] = convert(value_node, path + (key,), key_line)
                return out
            if isinstance(node, yaml.SequenceNode):
                return [convert(item, path + (i,), item.start_mark.line + 1) for i, item in enumerate(node.value)]
            if node.tag.endswith(":float"):
                try:
                    return Decimal(node.value.replace("_", ""))
                except InvalidOperation:
                    pass  # .inf, .nan: construct as YAML would, validation rejects them
            try:
                return loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                issues.append(ConfigIssue(source, line, _key_text(path), f"invalid value: {exc}"))
                return None
            except (ValueError, KeyError, AttributeError, IndexError):  # !!int abc, !!bool maybe, 2020-02-30
                issues.append(ConfigIssue(source, line, _key_text(path), f"invalid value: {node.value!r} is not a {node.tag.rsplit(':', 1)[-1]}"))
                return None

        return convert(root, (), root.start_mark.line + 1), lines, issues
    finally:
        loader.dispose()


# --- validation ---------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(raw: Mapping[str, Any], key: str, issues: _Issues, path: _Path, low: int, high: int, default: int | None = None) -> int | None:
    if key not in raw:
        return default
    value = raw[key]
    if not _is_int(value):
        issues.add(path + (key,), f"must be a whole number, got {value!r}")
        return None
    if not low <= value <= high:
        issues.add(path + (key,), f"must be {low}..{high}, got {value}")
        return None
    return value


def _text(raw: Mapping[str, Any], key: str, issues: _Issues, path: _Path, default: str = "") -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        issues.add(path + (key,), f"must be text, got {value!r}")
        return default
    return value


def _choice(
    raw: Mapping[str, Any],
    key: str,
    issues: _Issues,
    path: _Path,
    choices: Sequence[Any],
    default: Any,
    what: str,
    at: _Path | None = None,
) -> Any:
    """``raw[key]`` if it is one of ``choices``; the issue goes to ``at`` (default: path.key)."""
    if key not in raw and default is None:
        issues.add(path, f"needs '{key}' ({what})")
        return None
    value = raw.get(key, default)
    if isinstance(value, str):
        value = value.strip().lower()
    if isinstance(value, bool) or value not in choices:
        issues.add(at or path + (key,), f"bad {what} {raw.get(key)!r}; choose one of: {', '.join(map(str, choices))}")
        return None
    return value


def _mapping(value: Any, issues: _Issues, path: _Path, keys: Sequence[str], what: str) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping):
        issues.add(path, f"{what} must be a mapping, got {_describe(value)}")
        return None
    for key in value:
        if key not in keys:
            issues.add(path + (key,), f"unknown key in {what}; expected one of: {', '.join(keys)}")
    return value


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return repr(value)


def _scale(value: Any, issues: _Issues, path: _Path) -> Decimal | None:
    if isinstance(value, bool):
        value = None
    try:
        if isinstance(value, float):
            scale = Decimal(repr(value))
        elif isinstance(value, (int, str, Decimal)):
            scale = Decimal(str(value).strip())
        else:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        issues.add(path, f"scale must be a number like 0.01, got {value!r}")
        return None
    if not scale.is_finite() or scale == 0:
        issues.add(path, f"scale must be a finite non-zero number, got {value!r}")
        return None
    return scale


def _address(value: Any, function: int | None, numbering: str, issues: _Issues, path: _Path) -> int | None:
    """The 0-based wire address of a register written in the profile's numbering."""
    if not _is_int(value):
        issues.add(path, f"a register address must be a whole number, got {value!r}")
        return None
    if numbering == "modicon":
        if function is None:
            return None
        short, long = _MODICON[function]
        if short <= value <= short + 9998:
            value -= short
        elif long <= value <= long + 65535:
            value -= long
        else:
            table = "input" if function == 4 else "holding"
            issues.add(path, f"{value} is not a Modicon reference of a {table} register "
                             f"({short}..{short + 9998} or {long}..{long + 65535}) for function {function}")
            return None
    if not 0 <= value <= 0xFFFF:
        issues.add(path, f"register {value} is out of 0..65535")
        return None
    return value


def _serial(raw: Any, issues: _Issues) -> SerialSettings:
    default = SerialSettings(9600, 8, "N", 1)
    if raw is None:
        return default
    data = _mapping(raw, issues, ("serial",), _SERIAL_KEYS, "serial")
    if data is None:
        return default
    path = ("serial",)
    baud = _int(data, "baudrate", issues, path, 50, 4_000_000, default.baudrate)
    size = _int(data, "bytesize", issues, path, 5, 8, default.bytesize)
    parity = data.get("parity", default.parity)
    if not isinstance(parity, str) or parity.strip().upper() not in PARITIES:
        issues.add(path + ("parity",), f"parity must be one of {', '.join(PARITIES)}, got {parity!r}")
        parity = default.parity
    stop = data.get("stopbits", default.stopbits)
    if isinstance(stop, Decimal):
        stop = float(stop)
    if stop not in (1, 1.5, 2) or isinstance(stop, bool):
        issues.add(path + ("stopbits",), f"stopbits must be 1, 1.5 or 2, got {stop!r}")
        stop = default.stopbits
    return SerialSettings(baud or default.baudrate, size or default.bytesize, parity.strip().upper(), stop)


def _ranges(raw: Any, issues: _Issues, numbering: str) -> tuple[RegisterRange, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        issues.add(("forbidden",), f"forbidden must be a list of {{function, start, end}}, got {_describe(raw)}")
        return ()
    out = []
    for i, item in enumerate(raw):
        path = ("forbidden", i)
        data = _mapping(item, issues, path, _RANGE_KEYS, "a forbidden range")
        if data is None:
            continue
        function = _choice(data, "function", issues, path, tuple(READ_FUNCTIONS), None, "function code")
        start = _address(data.get("start"), function, numbering, issues, path + ("start",))
        end = _address(data.get("end", data.get("start")), function, numbering, issues, path + ("end",))
        if function is None or start is None or end is None:
            continue
        if end < start:
            issues.add(path + ("end",), f"end {end:#06x} is before start {start:#06x}")
            continue
        out.append(RegisterRange(function, start, end))
    return tuple(out)


def _identity(raw: Any, issues: _Issues, numbering: str) -> tuple[IdentityCheck, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        issues.add(("identity",), f"identity must be a list of {{function, address, type, equals}}, got {_describe(raw)}")
        return ()
    out = []
    for i, item in enumerate(raw):
        path = ("identity", i)
        data = _mapping(item, issues, path, _IDENTITY_KEYS, "an identity register")
        if data is None:
            continue
        function = _choice(data, "function", issues, path, tuple(READ_FUNCTIONS), 3, "function code")
        address = _address(data.get("address"), function, numbering, issues, path + ("address",))
        dtype = _choice(data, "type", issues, path, tuple(t for t in DATA_TYPES if not DATA_TYPES[t].is_float), "u16", "data type (identity registers are integers)")
        word = _choice(data, "word_order", issues, path, WORD_ORDERS, "big", "word order")
        byte = _choice(data, "byte_order", issues, path, BYTE_ORDERS, "big", "byte order")
        equals = data.get("equals")
        values = equals if isinstance(equals, list) else [equals]
        if not values or not all(_is_int(v) for v in values):
            issues.add(path + ("equals",), f"equals must be a whole number or a list of them, got {equals!r}")
            continue
        if None in (function, address, dtype, word, byte):
            continue
        if address + DATA_TYPES[dtype].registers > 0x10000:
            issues.add(path + ("address",), f"a {dtype} at {address:#06x} runs past register 65535")
            continue
        out.append(IdentityCheck(function, address, dtype, tuple(values), word, byte))
    return tuple(out)


def _resolve_key(key: Any, issues: _Issues, path: _Path) -> str | None:
    try:
        return resolve(str(key)).obis
    except UnknownQuantity as exc:
        issues.add(path, str(exc))
        return None


def _points(raw: Any, defaults: Mapping[str, Any], numbering: str, issues: _Issues) -> dict[str, Point]:
    if raw is None:
        issues.add((), "a profile needs 'quantities': a mapping of OBIS codes to registers")
        return {}
    if not isinstance(raw, Mapping) or not raw:
        issues.add(("quantities",), f"quantities must be a non-empty mapping of OBIS codes to registers, got {_describe(raw)}")
        return {}
    points: dict[str, Point] = {}
    where: dict[str, _Path] = {}
    for key, spec in raw.items():
        path = ("quantities", key)
        obis = _resolve_key(key, issues, path)
        data = _mapping(spec, issues, path, _POINT_KEYS, f"quantity {key}")
        if obis is None or data is None:
            continue
        if obis in points:
            issues.add(path, f"{key} is the same quantity as {where[obis][-1]} (line {issues.line(where[obis])})")
            continue
        merged = {**defaults, **data}

        def at(key: str, path: _Path = path, data: Mapping[str, Any] = data) -> _Path:
            """Where a wrong value is written: here, or in ``defaults`` it was inherited from."""
            return path + (key,) if key in data or key not in defaults else ("defaults", key)

        function = _choice(merged, "function", issues, path, tuple(READ_FUNCTIONS), None, "function code (3 holding, 4 input)", at("function"))
        dtype = _choice(merged, "type", issues, path, tuple(DATA_TYPES), None, "data type", at("type"))
        word = _choice(merged, "word_order", issues, path, WORD_ORDERS, "big", "word order", at("word_order"))
        byte = _choice(merged, "byte_order", issues, path, BYTE_ORDERS, "big", "byte order", at("byte_order"))
        if "address" not in data:
            issues.add(path, "needs an 'address'")
            continue
        address = _address(data["address"], function, numbering, issues, path + ("address",))
        scale = _scale(merged.get("scale", 1), issues, at("scale"))
        unit = _text(merged, "unit", issues, path, resolve(obis).unit)
        invalid = merged.get("invalid", [])
        invalid = invalid if isinstance(invalid, list) else [invalid]
        if not all(_is_int(v) for v in invalid):
            issues.add(path + ("invalid",), f"invalid must be raw whole numbers, got {merged.get('invalid')!r}")
            invalid = []
        if None in (function, dtype, word, byte, address, scale):
            continue
        size = DATA_TYPES[dtype].registers
        if "count" in merged and merged["count"] != size:
            issues.add(path + ("count",), f"a {dtype} takes {size} register(s), but count is {merged['count']!r}")
            continue
        if address + size > 0x10000:
            issues.add(path + ("address",), f"a {dtype} at {address:#06x} runs past register 65535")
            continue
        if invalid and DATA_TYPES[dtype].is_float:
            issues.add(path + ("invalid",), "invalid raw values apply to integer types; NaN floats are rejected anyway")
            continue
        point = Point(obis, function, address, dtype, word, byte, scale, unit, tuple(invalid))
        for other_obis, other in points.items():
            if other.function == function and other.address < point.end and point.address < other.end:
                issues.add(
                    path + ("address",),
                    f"registers {address:#06x}..{point.end - 1:#06x} (function {function}) overlap those of "
                    f"{other_obis} at {other.address:#06x}..{other.end - 1:#06x} (line {issues.line(where[other_obis] + ('address',))})",
                )
                break
        else:
            points[obis] = point
            where[obis] = path
    return points


def _build(name: str, data: Any, issues: _Issues) -> Profile | None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        issues.add((), f"profile name {name!r} must be lower-case 'vendor-model' (e.g. eastron-sdm120)")
    if not isinstance(data, Mapping):
        issues.add((), f"a profile must be a mapping, got {_describe(data)}")
        return None
    for key in data:
        if key not in _TOP_KEYS:
            issues.add((key,), f"unknown key; a profile has: {', '.join(_TOP_KEYS)}")
    numbering = _choice(data, "numbering", issues, (), ("pdu", "modicon"), "pdu", "register numbering") or "pdu"
    defaults = data.get("defaults", {}) or {}
    if _mapping(defaults, issues, ("defaults",), _DEFAULT_KEYS, "defaults") is None:
        defaults = {}
    points = _points(data.get("quantities"), defaults, numbering, issues)
    max_registers = _int(data, "max_registers", issues, (), 1, MAX_REGISTERS_PER_READ, MAX_REGISTERS_PER_READ)
    max_gap = _int(data, "max_gap", issues, (), 0, MAX_REGISTERS_PER_READ, None)
    unit_id = _int(data, "unit_id", issues, (), 1, 247, 1)
    batching = data.get("batching", True)
    if not isinstance(batching, bool):
        issues.add(("batching",), f"batching must be true or false, got {batching!r}")
        batching = True
    forbidden = _ranges(data.get("forbidden"), issues, numbering)
    for obis, point in points.items():
        if max_registers is not None and point.count > max_registers:
            issues.add(("quantities", obis), f"a {point.dtype} takes {point.count} registers, more than max_registers {max_registers}")
    for obis, point in points.items():
        for rng in forbidden:
            if rng.overlaps(point.function, point.address, point.end):
                issues.add(("quantities", obis), f"its registers {point.address:#06x}..{point.end - 1:#06x} are in a forbidden range")
    identity = _identity(data.get("identity"), issues, numbering)
    serial = _serial(data.get("serial"), issues)
    texts = {key: _text(data, key, issues, ()) for key in ("vendor", "model", "description")}
    if issues.found:
        return None
    return Profile(
        name=name,
        points=points,
        source=issues.source,
        serial=serial,
        unit_id=unit_id or 1,
        max_registers=max_registers or MAX_REGISTERS_PER_READ,
        batching=batching,
        max_gap=max_gap,
        forbidden=forbidden,
        identity=identity,
        **texts,
    )


def _name_from(source: str) -> str:
    return Path(source).stem


def parse_profile(text: str, source: str = "<profile>", name: str | None = None) -> Profile:
    """A profile from YAML text; ``name`` defaults to the file name's stem.

    Raises ConfigError with every issue found, each naming ``source``, line and key.
    """
    data, lines, found = _compose(text, source)
    issues = _Issues(source, lines)
    issues.found.extend(found)
    if data is None and not found:
        issues.add((), "the file holds no profile")
    profile = _build(name or _name_from(source), data, issues) if data is not None else None
    if issues.found or profile is None:
        raise ConfigError(sorted(issues.found, key=lambda i: (i.line or 0, i.key)))
    return profile


def profile_from_mapping(name: str, mapping: Mapping[str, Any], source: str = "") -> Profile:
    """A profile from plain data (a ``meterhub_register_profiles`` hook); ConfigError if invalid."""
    issues = _Issues(source or f"profile {name}")
    profile = _build(name, mapping, issues)
    if issues.found or profile is None:
        raise ConfigError(issues.found)
    return profile


def load_profile_file(path: str | Path) -> Profile:
    """The profile in one YAML file, named after the file (``eastron-sdm120.yaml``)."""
    path = Path(path)
    return parse_profile(read_document(path, max_bytes=MAX_PROFILE_BYTES, what="a device profile"), str(path))


def load_profile_dir(path: str | Path) -> dict[str, Profile]:
    """Every ``*.yaml`` profile in a folder (not recursive), by name; one ConfigError for all."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError([ConfigIssue(str(folder), None, "", "no such profiles folder")])
    profiles: dict[str, Profile] = {}
    issues: list[ConfigIssue] = []
    for file in sorted(folder.glob("*.yaml")):
        try:
            profile = load_profile_file(file)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        profiles[profile.name] = profile
    if issues:
        raise ConfigError(issues)
    return profiles


@lru_cache(maxsize=1)
def _shipped() -> Mapping[str, Profile]:
    found: dict[str, Profile] = {}
    folder = resources.files(__package__).joinpath("profiles")
    issues: list[ConfigIssue] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        try:
            profile = parse_profile(entry.read_text(encoding="utf-8"), f"meterhub_rs485/profiles/{entry.name}")
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        found[profile.name] = profile
    if issues:  # a shipped profile that does not load is a packaging bug: say so loudly
        raise ConfigError(issues)
    return MappingProxyType(found)


def shipped_profiles() -> Mapping[str, Profile]:
    """The profiles that ship with meterhub-rs485, by name."""
    return _shipped()

