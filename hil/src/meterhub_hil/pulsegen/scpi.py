"""SCPI program messages, sans-I/O: line framing, header resolution, parameters, error queue.

Nothing here touches a socket or a clock. :class:`LineFramer` cuts a byte stream into
lines (bounded in length), :func:`decode_line` checks a line's characters,
:class:`CommandTree` turns one line into :class:`ProgramUnit` values (or the
:class:`ScpiError` that stopped it), the ``*_param`` functions convert parameters and
:class:`ErrorQueue` is the instrument's error/event queue answered by ``SYST:ERR?``.

References: IEEE 488.2-1992 (program message syntax, numeric program data, common
commands) and SCPI-99 (short/long header forms, compound headers, numeric suffixes and
units, the error/event queue and its standard error numbers and texts).
"""

from __future__ import annotations

import re
from collections import deque
from decimal import Decimal, InvalidOperation, localcontext
from typing import Iterable, Sequence

import attrs

from meterhub.errors import MeterhubError

# --- standard errors ---------------------------------------------------------------------

#: SCPI-99: error numbers and their standard texts. -1xx are command (parser) errors,
#: -2xx execution errors, -3xx device-specific errors, 0 is "No error".
NO_ERROR = 0
COMMAND_ERROR = -100
INVALID_CHARACTER = -101
SYNTAX_ERROR = -102
DATA_TYPE_ERROR = -104
PARAMETER_NOT_ALLOWED = -108
MISSING_PARAMETER = -109
PROGRAM_MNEMONIC_TOO_LONG = -112
UNDEFINED_HEADER = -113
HEADER_SUFFIX_OUT_OF_RANGE = -114
NUMERIC_DATA_ERROR = -120
EXPONENT_TOO_LARGE = -123
INVALID_SUFFIX = -131
SUFFIX_NOT_ALLOWED = -138
EXECUTION_ERROR = -200
INIT_IGNORED = -213
SETTINGS_CONFLICT = -221
DATA_OUT_OF_RANGE = -222
ILLEGAL_PARAMETER_VALUE = -224
QUEUE_OVERFLOW = -350
INPUT_BUFFER_OVERRUN = -363

STANDARD_ERRORS: dict[int, str] = {
    NO_ERROR: "No error",
    COMMAND_ERROR: "Command error",
    INVALID_CHARACTER: "Invalid character",
    SYNTAX_ERROR: "Syntax error",
    DATA_TYPE_ERROR: "Data type error",
    PARAMETER_NOT_ALLOWED: "Parameter not allowed",
    MISSING_PARAMETER: "Missing parameter",
    PROGRAM_MNEMONIC_TOO_LONG: "Program mnemonic too long",
    UNDEFINED_HEADER: "Undefined header",
    HEADER_SUFFIX_OUT_OF_RANGE: "Header suffix out of range",
    NUMERIC_DATA_ERROR: "Numeric data error",
    EXPONENT_TOO_LARGE: "Exponent too large",
    INVALID_SUFFIX: "Invalid suffix",
    SUFFIX_NOT_ALLOWED: "Suffix not allowed",
    EXECUTION_ERROR: "Execution error",
    INIT_IGNORED: "Init ignored",
    SETTINGS_CONFLICT: "Settings conflict",
    DATA_OUT_OF_RANGE: "Data out of range",
    ILLEGAL_PARAMETER_VALUE: "Illegal parameter value",
    QUEUE_OVERFLOW: "Queue overflow",
    INPUT_BUFFER_OVERRUN: "Input buffer overrun",
}

#: IEEE 488.2: a header mnemonic has at most 12 characters.
MAX_MNEMONIC_LEN = 12
#: IEEE 488.2: a device may refuse exponents whose magnitude exceeds 32000 (-123).
MAX_EXPONENT = 32000
#: Longest accepted program message (line) in bytes; longer lines are discarded with -363.
MAX_LINE_BYTES = 4096
#: Significant digits kept of a numeric parameter (far more than any setting resolves).
NUMERIC_PRECISION = 40
#: SCPI-99: description plus device-dependent info of an error is at most 255 characters.
MAX_ERROR_TEXT = 255
#: Entries the error queue holds; SCPI-99 asks for at least two.
ERROR_QUEUE_DEPTH = 16


class ScpiError(MeterhubError):
    """One SCPI error: a standard number, its standard text and optional detail.

    Raised by the parser and the command handlers; the instrument puts it into the
    client's :class:`ErrorQueue` instead of answering.
    """

    def __init__(self, code: int, info: str = "") -> None:
        self.code = code
        self.info = info
        super().__init__(self.text)

    @property
    def description(self) -> str:
        return STANDARD_ERRORS.get(self.code, "Unknown error")

    @property
    def is_command_error(self) -> bool:
        """-1xx errors: an IEEE 488.2 parser discards the rest of the program message after one."""
        return -199 <= self.code <= -100

    @property
    def text(self) -> str:
        """The ``SYST:ERR?`` answer: ``<code>,"<description>[;<info>]"`` (SCPI-99 SYSTem:ERRor?)."""
        detail = self.description if not self.info else f"{self.description};{self.info}"
        detail = detail.replace('"', "'")[:MAX_ERROR_TEXT]
        return f'{self.code},"{detail}"'


class ErrorQueue:
    """A bounded FIFO of errors (the SCPI-99 error/event queue).

    When it is full, the most recent entry is replaced by -350 "Queue overflow", so the
    oldest errors (the causes) survive and the user learns that later ones were lost.
    """

    def __init__(self, depth: int = ERROR_QUEUE_DEPTH) -> None:
        if depth < 2:
            raise ValueError("SCPI-99: the error queue holds at least two entries")
        self._depth = depth
        self._entries: deque[ScpiError] = deque()

    def push(self, error: ScpiError) -> None:
        if len(self._entries) < self._depth:
            self._entries.append(error)
        elif self._entries[-1].code != QUEUE_OVERFLOW:
            self._entries[-1] = ScpiError(QUEUE_OVERFLOW)

    def pop(self) -> ScpiError:
        """The oldest error, or 0 "No error" when the queue is empty."""
        return self._entries.popleft() if self._entries else ScpiError(NO_ERROR)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# --- line framing --------------------------------------------------------------------------


@attrs.frozen
class LineOverrun:
    """A line longer than the framer's limit was discarded (up to its newline)."""

    limit: int


class LineFramer:
    """Cuts a byte stream into newline-terminated lines of bounded length.

    ``feed`` returns complete lines (without the newline) and one :class:`LineOverrun`
    per over-long line; an over-long line is dropped as it arrives, so a client that
    never sends a newline costs at most ``max_line`` bytes of memory.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held of an unfinished line."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | LineOverrun]:
        events: list[bytes | LineOverrun] = []
        start = 0
        while start <= len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._discarding:
                self._buffer += piece
                if len(self._buffer) > self.max_line:
                    events.append(LineOverrun(self.max_line))
                    self._buffer.clear()
                    self._discarding = True
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                events.append(bytes(self._buffer))
            self._buffer.clear()
            start = end + 1
        return events


def decode_line(raw: bytes) -> str:
    """A program message as text: printable ASCII only, trailing CR and blanks removed.

    IEEE 488.2: program messages are 7-bit ASCII; anything else is -101.
    """
    text = raw.decode("latin-1").rstrip("\r\n\t ")
    for position, char in enumerate(text):
        if not (" " <= char <= "~" or char == "\t"):
            raise ScpiError(INVALID_CHARACTER, f"byte 0x{ord(char):02X} at column {position + 1}")
    return text


# --- headers -------------------------------------------------------------------------------


@attrs.frozen
class Mnemonic:
    """One header node: long form, short form (its upper-case letters), optional?, suffix?"""

    long: str
    short: str
    optional: bool = False
    takes_suffix: bool = False

    def matches(self, name: str) -> bool:
        upper = name.upper()
        return upper == self.long or upper == self.short


_PATTERN_NODE = re.compile(r"^(\[)?:?([A-Za-z*]+)(#)?(\])?$")


def parse_pattern(pattern: str) -> tuple[Mnemonic, ...]:
    """``"[SOURce#]:PULSe:FREQuency"`` as mnemonics ([...] optional, # numeric suffix).

    SCPI-99: the short form is the upper-case part of the long form.
    """
    nodes = []
    for part in re.findall(r"\[?:?[A-Za-z*]+#?\]?", pattern):
        match = _PATTERN_NODE.match(part)
        if match is None:  # pragma: no cover - the command tables are fixed
            raise ValueError(f"bad header pattern {pattern!r} at {part!r}")
        opening, word, suffix, closing = match.groups()
        short = "".join(c for c in word if c.isupper() or c == "*")
        nodes.append(Mnemonic(word.upper(), short, bool(opening and closing), bool(suffix)))
    if sum(node.takes_suffix for node in nodes) > 1:  # pragma: no cover - fixed tables
        raise ValueError(f"{pattern!r}: one numeric suffix per header at most")
    return tuple(nodes)


@attrs.frozen
class CommandSpec:
    """A command of the instrument: header pattern and the parameter counts of its forms.

    ``command``/``query`` give (min, max) parameters of the set and query form, or
    ``None`` where that form does not exist.
    """

    key: str
    pattern: str
    command: tuple[int, int] | None = (0, 0)
    query: tuple[int, int] | None = None
    path: tuple[Mnemonic, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "path", parse_pattern(self.pattern))

    @property
    def common(self) -> bool:
        """IEEE 488.2 common commands (``*IDN?``) sit outside the SCPI tree."""
        return self.pattern.startswith("*")


@attrs.frozen
class ProgramUnit:
    """One command or query of a program message, resolved against the command tree."""

    spec: CommandSpec
    header: str
    is_query: bool
    suffix: int | None
    params: tuple[str, ...]


@attrs.frozen
class _Token:
    name: str
    suffix: int | None


_MNEMONIC = re.compile(r"^([A-Za-z][A-Za-z_]*?)(\d+)?$")
_COMMON = re.compile(r"^\*[A-Za-z]+$")

_HEADER_AND_REST = re.compile(r"^(\S+)\s*(.*)$", re.DOTALL)
#: markers of :func:`_match`: the header does not spell the path / it has a misplaced suffix
_NO_MATCH = object()
_SUFFIX_MISPLACED = object()


class CommandTree:
    """Resolves program messages against a fixed set of :class:`CommandSpec`.

    Short and long forms are matched case-insensitively, optional nodes may be left out,
    a numeric suffix is allowed where the pattern has ``#``. After a ``;`` a header
    without a leading ``:`` is first tried relative to the previous command's path
    (SCPI-99 compound headers, ``SOUR1:PULS:FREQ 10;WIDT 5ms``) and then from the root.
    """

    def __init__(self, specs: Iterable[CommandSpec]) -> None:
        self.specs = tuple(specs)
        self._common = {spec.pattern.upper(): spec for spec in self.specs if spec.common}
        self._tree = [spec for spec in self.specs if not spec.common]

    def parse(self, line: str) -> list[ProgramUnit | ScpiError]:
        """Every unit of ``line`` in order; a command error ends the list (IEEE 488.2)."""
        results: list[ProgramUnit | ScpiError] = []
        prefix: list[_Token] = []
        try:
            pieces = _split(line, ";", what="program message unit")
        except ScpiError as error:
            return [error]
        for text in pieces:
            try:
                unit, prefix = self._parse_unit(text, prefix)
            except ScpiError as error:
                results.append(error)
                break
            results.append(unit)
        return results

    def _parse_unit(self, text: str, prefix: list[_Token]) -> tuple[ProgramUnit, list[_Token]]:
        text = text.strip()
        if not text:
            raise ScpiError(SYNTAX_ERROR, "empty program message unit")
        header, rest = _HEADER_AND_REST.match(text).groups()
        params = tuple(p.strip() for p in _split(rest, ",", what="parameter")) if rest.strip() else ()
        if any(not p for p in params):
            raise ScpiError(SYNTAX_ERROR, f"empty parameter in {text!r}")
        is_query = header.endswith("?")
        bare = header[:-1] if is_query else header
        if "?" in bare or not bare:
            raise ScpiError(SYNTAX_ERROR, f"misplaced '?' in {header!r}" if bare else "header missing")
        if bare.startswith("*"):
            spec, suffix, new_prefix = self._resolve_common(bare), None, prefix
        else:
            spec, suffix, new_prefix = self._resolve(bare, prefix)
        form = spec.query if is_query else spec.command
        if form is None:
            kind = "has no query form" if is_query else "is a query only"
            raise ScpiError(COMMAND_ERROR, f"{bare} {kind}")
        low, high = form
        if len(params) > high:
            raise ScpiError(PARAMETER_NOT_ALLOWED, f"{header} takes {high} parameter(s), got {len(params)}")
        if len(params) < low:
            raise ScpiError(MISSING_PARAMETER, f"{header} needs {low} parameter(s)")
        return ProgramUnit(spec, header, is_query, suffix, params), new_prefix

    def _resolve_common(self, bare: str) -> CommandSpec:
        if not _COMMON.match(bare):
            raise ScpiError(SYNTAX_ERROR, f"bad common command header {bare!r}")
        spec = self._common.get(bare.upper())
        if spec is None:
            raise ScpiError(UNDEFINED_HEADER, bare)
        return spec

    def _resolve(self, bare: str, prefix: list[_Token]) -> tuple[CommandSpec, int | None, list[_Token]]:
        absolute = bare.startswith(":")
        parts = (bare[1:] if absolute else bare).split(":")
        tokens = []
        for part in parts:
            if not part:
                raise ScpiError(SYNTAX_ERROR, f"empty mnemonic in {bare!r}")
            match = _MNEMONIC.match(part)
            if match is None:
                raise ScpiError(SYNTAX_ERROR, f"bad mnemonic {part!r}")
            name, digits = match.groups()
            if len(name) > MAX_MNEMONIC_LEN:
                raise ScpiError(PROGRAM_MNEMONIC_TOO_LONG, name)
            tokens.append(_Token(name, int(digits) if digits is not None else None))
        attempts = [tokens] if absolute or not prefix else [prefix + tokens, tokens]
        suffix_misplaced = False
        for candidate in attempts:
            for spec in self._tree:
                result = _match(candidate, 0, spec.path, 0, None)
                if result is _SUFFIX_MISPLACED:
                    suffix_misplaced = True
                elif result is not _NO_MATCH:
                    return spec, result, candidate[:-1]
        if suffix_misplaced:
            raise ScpiError(HEADER_SUFFIX_OUT_OF_RANGE, f"{bare}: numeric suffix where none is allowed")
        raise ScpiError(UNDEFINED_HEADER, bare)


def _match(tokens: Sequence[_Token], i: int, path: Sequence[Mnemonic], j: int, suffix):
    """The numeric suffix (or None) if ``tokens[i:]`` spell ``path[j:]``, else a marker."""
    if j == len(path):
        return suffix if i == len(tokens) else _NO_MATCH
    node = path[j]
    outcome = _NO_MATCH
    if i < len(tokens) and node.matches(tokens[i].name):
        token = tokens[i]
        if token.suffix is not None and not node.takes_suffix:
            outcome = _SUFFIX_MISPLACED
        else:
            found = _match(tokens, i + 1, path, j + 1, token.suffix if node.takes_suffix else suffix)
            if found is not _NO_MATCH and found is not _SUFFIX_MISPLACED:
                return found
            outcome = found
    if node.optional:
        skipped = _match(tokens, i, path, j + 1, suffix)
        if skipped is not _NO_MATCH:
            return skipped
    return outcome


def _split(text: str, separator: str, *, what: str) -> list[str]:
    """``text`` cut at ``separator`` outside quoted strings (IEEE 488.2 string data)."""
    pieces, current, quote = [], [], ""
    for char in text:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
            current.append(char)
        elif char == separator:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    if quote:
        raise ScpiError(SYNTAX_ERROR, f"unterminated string in {what}")
    pieces.append("".join(current))
    return pieces


# --- parameters ----------------------------------------------------------------------------

#: IEEE 488.2 decimal numeric program data, then an optional suffix.
_NUMBER = re.compile(
    r"^(?P<mantissa>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:[eE](?P<exponent>[+-]?\d+))?\s*(?P<suffix>[A-Za-z]+)?$"
)
_CHARACTER_DATA = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

#: SCPI-99: suffix multipliers (powers of ten). "M" is milli; "MA" is mega.
_MULTIPLIERS = {"EX": 18, "PE": 15, "T": 12, "G": 9, "MA": 6, "K": 3, "M": -3, "U": -6, "N": -9, "P": -12, "F": -15, "A": -18}
#: SCPI-99: "MHZ" and "MOHM" mean mega, not milli, for historical reasons.
_MEGA_EXCEPTIONS = {"MHZ": 6, "MOHM": 6}

HERTZ = "HZ"
SECOND = "S"

#: SCPI-99: numeric keywords in long and short form.
_KEYWORDS = {"MINIMUM": "MIN", "MIN": "MIN", "MAXIMUM": "MAX", "MAX": "MAX", "DEFAULT": "DEF", "DEF": "DEF",
             "INFINITY": "INF", "INF": "INF"}


def decimal_param(text: str, *, unit: str | None = None, keywords: Iterable[str] = ()) -> Decimal | str:
    """A numeric parameter in base units (``1 kHz`` -> 1000, ``30 ms`` -> 0.030) or a keyword.

    ``unit`` is the base unit the suffix may name (``HZ``, ``S``) or None for a plain
    number. Keywords (``MIN``, ``MAX``, ``DEF``, ``INF``) come back as their short form.
    """
    allowed = set(keywords)
    if _CHARACTER_DATA.match(text):
        keyword = _KEYWORDS.get(text.upper())
        if keyword in allowed:
            return keyword
        raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{text!r} is not a number" + (
            f" or one of {', '.join(sorted(allowed))}" if allowed else ""))
    if text[:1] in "\"'":
        raise ScpiError(DATA_TYPE_ERROR, f"string {text} where a number is expected")
    match = _NUMBER.match(text)
    if match is None:
        raise ScpiError(NUMERIC_DATA_ERROR, repr(text))
    exponent = int(match["exponent"] or 0)
    if abs(exponent) > MAX_EXPONENT:
        raise ScpiError(EXPONENT_TOO_LARGE, repr(text))
    suffix = match["suffix"]
    power = 0
    if suffix is not None:
        if unit is None:
            raise ScpiError(SUFFIX_NOT_ALLOWED, f"{suffix!r} in {text!r}")
        found = _suffix_power(suffix.upper(), unit)
        if found is None:
            raise ScpiError(INVALID_SUFFIX, f"{suffix!r} is not a unit of {unit}")
        power = found
    with localcontext() as context:
        context.prec = NUMERIC_PRECISION
        try:
            return Decimal(match["mantissa"]).scaleb(exponent + power)
        except InvalidOperation as exc:  # pragma: no cover - the pattern admits valid decimals only
            raise ScpiError(NUMERIC_DATA_ERROR, repr(text)) from exc


def _suffix_power(suffix: str, unit: str) -> int | None:
    if suffix == unit:
        return 0
    if suffix in _MEGA_EXCEPTIONS and suffix.endswith(unit):
        return _MEGA_EXCEPTIONS[suffix]
    if suffix.endswith(unit):
        return _MULTIPLIERS.get(suffix[: -len(unit)])
    return None


def boolean_param(text: str) -> bool:
    """SCPI-99 boolean: ON/OFF, or a number (non-zero after rounding is ON)."""
    upper = text.upper()
    if upper in ("ON", "OFF"):
        return upper == "ON"
    try:
        value = decimal_param(text)
    except ScpiError as exc:
        raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{text!r} is not ON, OFF, 1 or 0") from exc
    return value.to_integral_value() != 0


def integer_param(text: str, *, keywords: Iterable[str] = ()) -> int | str:
    """A whole number (a count), or a keyword; ``1.5`` is -224, not silently rounded."""
    value = decimal_param(text, keywords=keywords)
    if isinstance(value, str):
        return value
    if value != value.to_integral_value():
        raise ScpiError(ILLEGAL_PARAMETER_VALUE, f"{text!r} is not a whole number")
    if abs(value.adjusted()) > 30:
        raise ScpiError(DATA_OUT_OF_RANGE, repr(text))
    return int(value)


def format_decimal(value: Decimal) -> str:
    """A response number without exponent (IEEE 488.2 NR1/NR2): 1E+3 -> ``1000``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text
