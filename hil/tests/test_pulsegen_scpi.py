"""The sans-I/O SCPI layer: header forms, compounds, parameters, framing, the error queue."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterhub_hil.pulsegen import scpi
from meterhub_hil.pulsegen.instrument import COMMANDS
from meterhub_hil.pulsegen.scpi import CommandTree, LineFramer, LineOverrun, ProgramUnit, ScpiError

TREE = CommandTree(COMMANDS)


def units(line: str) -> list[ProgramUnit]:
    parsed = TREE.parse(line)
    errors = [u for u in parsed if isinstance(u, ScpiError)]
    assert not errors, errors
    return parsed


def error_of(line: str) -> ScpiError:
    parsed = TREE.parse(line)
    assert isinstance(parsed[-1], ScpiError), parsed
    return parsed[-1]


# --- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    "SOURce1:PULSe:FREQuency", "SOUR1:PULS:FREQ", "sour1:puls:freq", "SoUrCe1:pUlSe:FrEqUeNcY",
    "SOURCE1:PULSE:FREQUENCY", ":SOUR1:PULS:FREQ",
])
def test_short_and_long_forms_in_any_case_name_the_same_command(header):
    (unit,) = units(f"{header} 1000")
    assert (unit.spec.key, unit.suffix, unit.params, unit.is_query) == ("frequency", 1, ("1000",), False)


@pytest.mark.parametrize("header", ["SOURC1:PULS:FREQ", "SOUR1:PULS:FREQU", "SOUR1:PUL:FREQ", "FREQ", "SOUR1:FREQ"])
def test_neither_short_nor_long_form_is_an_undefined_header(header):
    assert error_of(f"{header} 1").code == scpi.UNDEFINED_HEADER


def test_the_optional_source_node_may_be_left_out_and_then_the_suffix_is_absent():
    (unit,) = units("PULS:FREQ 5")
    assert (unit.spec.key, unit.suffix) == ("frequency", None)


@pytest.mark.parametrize("line, key, suffix", [
    ("SOUR2:PULS:COUN 5", "count", 2),
    ("OUTP2 ON", "output", 2),
    ("OUTPut2:STATe ON", "output", 2),
    ("INIT2", "initiate", 2),
    ("INITiate2:IMMediate", "initiate", 2),
    ("ABOR2", "abort", 2),
    ("ABOR", "abort", None),
    ("SOUR12:PULS:SENT?", "sent", 12),
])
def test_numeric_suffixes_name_the_channel(line, key, suffix):
    (unit,) = units(line)
    assert (unit.spec.key, unit.suffix) == (key, suffix)


def test_a_suffix_on_a_node_without_channels_is_header_suffix_out_of_range():
    assert error_of("SOUR1:PULS2:FREQ 1").code == scpi.HEADER_SUFFIX_OUT_OF_RANGE
    assert error_of("SYST2:ERR?").code == scpi.HEADER_SUFFIX_OUT_OF_RANGE


def test_common_commands_match_exactly_and_case_insensitively():
    assert [u.spec.key for u in units("*idn?;*RST;*opc?;*Cls;*WAI")] == ["idn", "rst", "opc", "cls", "wai"]
    assert error_of("*IDENT?").code == scpi.UNDEFINED_HEADER


def test_compound_commands_continue_on_the_previous_path():
    """SCPI-99 compound headers: after ';' a header without ':' is relative to the previous one."""
    parsed = units("SOUR2:PULS:FREQ 1 kHz;WIDT 5 ms;COUN 10;:OUTP2 ON;INIT2")
    assert [(u.spec.key, u.suffix) for u in parsed] == [
        ("frequency", 2), ("width", 2), ("count", 2), ("output", 2), ("initiate", 2)]


def test_compound_headers_fall_back_to_the_root_and_common_commands_keep_the_path():
    parsed = units("SOUR1:PULS:FREQ 10;SOUR2:PULS:FREQ 20;*OPC?;COUN 3")
    assert [(u.spec.key, u.suffix) for u in parsed] == [
        ("frequency", 1), ("frequency", 2), ("opc", None), ("count", 2)]


def test_a_command_error_ends_the_program_message():
    parsed = TREE.parse("*RST;BOGUS;*CLS")
    assert parsed[0].spec.key == "rst"
    assert parsed[1].code == scpi.UNDEFINED_HEADER
    assert len(parsed) == 2


def test_queries_carry_their_parameters():
    (unit,) = units("SOUR1:PULS:FREQ? MAX")
    assert unit.is_query and unit.params == ("MAX",)


def test_quoted_strings_may_hold_separators():
    (unit,) = units('SOUR1:PULS:FREQ "1;2,3"')
    assert unit.params == ('"1;2,3"',)


# --- every error the parser reports ---------------------------------------------------------


@pytest.mark.parametrize("line, code", [
    ("*IDN", scpi.COMMAND_ERROR),                         # query-only header as a command
    ("INIT1?", scpi.COMMAND_ERROR),                       # command-only header as a query
    ("SOUR1:PULS:SENT 5", scpi.COMMAND_ERROR),
    ("SOUR1::PULS:FREQ 1", scpi.SYNTAX_ERROR),
    ("SOUR1:PULS:FREQ: 1", scpi.SYNTAX_ERROR),
    ("SOUR1:PULS?:FREQ 1", scpi.SYNTAX_ERROR),
    ("SOUR1:PULS:FREQ 1,,2", scpi.SYNTAX_ERROR),
    ('SOUR1:PULS:FREQ "1', scpi.SYNTAX_ERROR),
    ("*RST;;*CLS", scpi.SYNTAX_ERROR),
    ("*I-DN?", scpi.SYNTAX_ERROR),
    ("SOUR-1:PULS:FREQ 1", scpi.SYNTAX_ERROR),
    ("?", scpi.SYNTAX_ERROR),
    ("*RST 1", scpi.PARAMETER_NOT_ALLOWED),
    ("SOUR1:PULS:FREQ 1,2", scpi.PARAMETER_NOT_ALLOWED),
    ("OUTP1? ON", scpi.PARAMETER_NOT_ALLOWED),
    ("SOUR1:PULS:FREQ", scpi.MISSING_PARAMETER),
    ("OUTP1", scpi.MISSING_PARAMETER),
    ("SOURCEFREQUENCY1:PULS:FREQ 1", scpi.PROGRAM_MNEMONIC_TOO_LONG),
    ("SOUR1:PULS:FREQUENCY1 5", scpi.HEADER_SUFFIX_OUT_OF_RANGE),
    ("FETCH?", scpi.UNDEFINED_HEADER),
])
def test_parser_errors(line, code):
    assert error_of(line).code == code


@pytest.mark.parametrize("text, code", [
    ("abc", scpi.ILLEGAL_PARAMETER_VALUE),
    ('"1000"', scpi.DATA_TYPE_ERROR),
    ("1.2.3", scpi.NUMERIC_DATA_ERROR),
    ("--5", scpi.NUMERIC_DATA_ERROR),
    ("1e99999", scpi.EXPONENT_TOO_LARGE),
    ("5 V", scpi.INVALID_SUFFIX),
    ("5 ms", scpi.INVALID_SUFFIX),
])
def test_numeric_parameter_errors(text, code):
    with pytest.raises(ScpiError) as caught:
        scpi.decimal_param(text, unit=scpi.HERTZ, keywords=("MIN", "MAX", "DEF"))
    assert caught.value.code == code


def test_a_unit_on_a_plain_number_is_suffix_not_allowed():
    with pytest.raises(ScpiError) as caught:
        scpi.integer_param("5 Hz")
    assert caught.value.code == scpi.SUFFIX_NOT_ALLOWED


def test_a_fractional_count_is_an_illegal_value_not_rounded():
    with pytest.raises(ScpiError) as caught:
        scpi.integer_param("1.5")
    assert caught.value.code == scpi.ILLEGAL_PARAMETER_VALUE


@pytest.mark.parametrize("text", ["MAYBE", "2 Hz", '"ON"'])
def test_a_boolean_that_is_not_on_off_or_a_number_is_an_illegal_value(text):
    with pytest.raises(ScpiError) as caught:
        scpi.boolean_param(text)
    assert caught.value.code == scpi.ILLEGAL_PARAMETER_VALUE


@pytest.mark.parametrize("text, expected", [("ON", True), ("off", False), ("1", True), ("0", False), ("2", True)])
def test_booleans(text, expected):
    assert scpi.boolean_param(text) is expected


# --- numbers and units ---------------------------------------------------------------------


@pytest.mark.parametrize("text, unit, expected", [
    ("1000", scpi.HERTZ, "1000"),
    ("1e3", scpi.HERTZ, "1000"),
    ("1E+3", scpi.HERTZ, "1000"),
    ("+1.0e3", scpi.HERTZ, "1000"),
    ("1 kHz", scpi.HERTZ, "1000"),
    ("1KHZ", scpi.HERTZ, "1000"),
    ("2.5 MHz", scpi.HERTZ, "2500000"),  # SCPI-99: MHZ is mega, not milli
    ("3 MAHZ", scpi.HERTZ, "3000000"),
    ("16 Hz", scpi.HERTZ, "16"),
    (".5", scpi.HERTZ, "0.5"),
    ("30 ms", scpi.SECOND, "0.03"),
    ("30ms", scpi.SECOND, "0.03"),
    ("500 us", scpi.SECOND, "0.0005"),
    ("0.03 s", scpi.SECOND, "0.03"),
    ("3e-2", scpi.SECOND, "0.03"),
    ("100 ns", scpi.SECOND, "0.0000001"),
])
def test_numbers_with_units_come_back_in_base_units(text, unit, expected):
    value = scpi.decimal_param(text, unit=unit)
    assert isinstance(value, Decimal)
    assert scpi.format_decimal(value) == expected


@pytest.mark.parametrize("text, keyword", [
    ("MIN", "MIN"), ("minimum", "MIN"), ("MAX", "MAX"), ("Maximum", "MAX"), ("DEF", "DEF"), ("default", "DEF"),
])
def test_numeric_keywords_in_short_and_long_form(text, keyword):
    assert scpi.decimal_param(text, unit=scpi.HERTZ, keywords=("MIN", "MAX", "DEF")) == keyword


def test_a_keyword_the_parameter_does_not_allow_is_illegal():
    with pytest.raises(ScpiError) as caught:
        scpi.decimal_param("INF", unit=scpi.HERTZ, keywords=("MIN", "MAX"))
    assert caught.value.code == scpi.ILLEGAL_PARAMETER_VALUE


# --- error queue ---------------------------------------------------------------------------


def test_an_empty_queue_answers_no_error():
    assert scpi.ErrorQueue().pop().text == '0,"No error"'


def test_errors_come_out_oldest_first_with_standard_texts_and_detail():
    queue = scpi.ErrorQueue()
    queue.push(ScpiError(scpi.UNDEFINED_HEADER, "FOO"))
    queue.push(ScpiError(scpi.DATA_OUT_OF_RANGE))
    assert queue.pop().text == '-113,"Undefined header;FOO"'
    assert queue.pop().text == '-222,"Data out of range"'
    assert queue.pop().code == scpi.NO_ERROR


def test_a_full_queue_replaces_its_newest_entry_by_queue_overflow():
    queue = scpi.ErrorQueue(depth=3)
    for number in range(10):
        queue.push(ScpiError(scpi.SYNTAX_ERROR, str(number)))
    assert [queue.pop().text for _ in range(4)] == [
        '-102,"Syntax error;0"', '-102,"Syntax error;1"', '-350,"Queue overflow"', '0,"No error"']


def test_double_quotes_in_detail_cannot_break_the_response_string():
    assert ScpiError(scpi.SYNTAX_ERROR, 'a "b"').text == "-102,\"Syntax error;a 'b'\""


def test_error_strings_are_at_most_255_characters():
    text = ScpiError(scpi.UNDEFINED_HEADER, "X" * 1000).text
    assert text.startswith('-113,"Undefined header;XXX') and len(text.split(",", 1)[1].strip('"')) == 255


def test_every_standard_error_code_has_its_text():
    for code in (-100, -101, -102, -104, -108, -109, -112, -113, -114, -120, -123, -131, -138,
                 -200, -213, -221, -222, -224, -350, -363):
        assert scpi.STANDARD_ERRORS[code]


# --- framing and characters ----------------------------------------------------------------


def test_lines_split_at_newlines_across_chunks():
    framer = LineFramer()
    assert framer.feed(b"*IDN?\nSOUR1:PU") == [b"*IDN?"]
    assert framer.pending == len(b"SOUR1:PU")
    assert framer.feed(b"LS:FREQ 5\r\n\n") == [b"SOUR1:PULS:FREQ 5\r", b""]


def test_an_over_long_line_is_dropped_once_and_the_next_line_survives():
    framer = LineFramer(max_line=16)
    events = framer.feed(b"A" * 10) + framer.feed(b"B" * 100) + framer.feed(b"C" * 100 + b"\n*OPC?\n")
    assert events == [LineOverrun(16), b"*OPC?"]
    assert framer.pending == 0


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
       st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20))
def test_framing_does_not_depend_on_how_the_stream_is_chunked(lines, cuts):
    stream = b"".join(line + b"\n" for line in lines)
    framer, out, start = LineFramer(max_line=30), [], 0
    for cut in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        out += framer.feed(stream[start:start + cut])
        start += cut
        if start >= len(stream):
            break
    out += framer.feed(stream[start:])
    expected = [line if len(line) <= 30 else LineOverrun(30) for line in lines]
    assert out == expected


def test_cr_is_stripped_and_control_or_non_ascii_bytes_are_invalid_characters():
    assert scpi.decode_line(b"*IDN?\r") == "*IDN?"
    for raw in (b"*IDN?\x00", b"\xff\xfe", "SOUR1:PULS:FREQ 5\u00b5s".encode("utf-8")):
        with pytest.raises(ScpiError) as caught:
            scpi.decode_line(raw)
        assert caught.value.code == scpi.INVALID_CHARACTER


VOCABULARY = ["SOUR", "SOURCE2", "PULS", "FREQ", "WIDT", "COUN", "SENT", "OUTP", "INIT", "ABOR", "*IDN", "*OPC",
              "SYST", "ERR", "?", ":", ";", ",", " ", "1", "1e3", "kHz", "ms", "MAX", "ON", '"', "x", "\t"]


@given(st.lists(st.sampled_from(VOCABULARY), max_size=30).map("".join) | st.text(max_size=60))
def test_any_text_parses_into_units_or_one_final_scpi_error(line):
    parsed = TREE.parse(line)
    assert parsed, "every line yields at least one unit or error"
    assert all(isinstance(u, ProgramUnit) for u in parsed[:-1])
    assert isinstance(parsed[-1], (ProgramUnit, ScpiError))
