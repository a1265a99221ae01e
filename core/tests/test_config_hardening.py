"""The site-file loader on hostile and broken input: every file either loads or is refused
with ``file:line: key: message``, quickly; no traceback, no hang, no runaway memory.

Each case is run with libyaml's parser and with PyYAML's pure-Python one, which must say
the same thing at the same line.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Collection
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterhub import yamlnodes
from meterhub.config import (
    LONGEST_METER_TIMEOUT,
    LONGEST_SCHEDULE,
    MAX_BAUDRATE,
    MAX_SITE_FILE_BYTES,
    load_site,
    parse_duration,
    parse_site,
)
from meterhub.errors import ConfigError, ConfigIssue
from meterhub.model import ChannelConfig, SerialSettings, Site

# -- stand-ins: one protocol, one transport ---------------------------------------------------


@attrs.frozen
class FakeDLT645:
    """DL/T 645 addresses: up to 12 decimal digits, zero-padded."""

    name: str = "dlt645"
    description: str = "stand-in"
    default_settings: SerialSettings = SerialSettings()

    def normalize_address(self, address: str) -> str:
        if not address.isdigit() or len(address) > 12:
            raise ValueError("at most 12 decimal digits")
        return address.zfill(12)

    def supported_quantities(self) -> Collection[str]:
        return {"1-0:1.8.0", "1-0:32.7.0"}


@attrs.frozen
class FakeRS485:
    name: str = "rs485"
    description: str = "stand-in"

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        return []


DRIVERS = {"dlt645": FakeDLT645()}
TRANSPORTS = {"rs485": FakeRS485()}

#: a valid site; a test appends the keys of meter 0 (at line 7 on) or whole top-level keys
SITE = """\
channels:
  bus1: {transport: rs485, port: /dev/ttyUSB0}
meters:
  - address: "000000000001"
    protocol: dlt645
    channel: bus1
"""
METER_LINE = SITE.count("\n") + 1  # the line of a key appended to meter 0

#: 400 bytes that expand to 10**9 values: each anchor holds ten aliases of the one before
BILLION_LAUGHS = "".join(
    f"x-{name}: &{name} [{','.join([f'*{previous}' if previous else 'lol'] * 10)}]\n"
    for previous, name in zip([None, *"abcdefgh"], "abcdefghi")
)


def parse(text: str) -> Site:
    return parse_site(text, filename="site.yaml", drivers=DRIVERS, transports=TRANSPORTS)


def load(path: Path | str) -> Site:
    return load_site(path, drivers=DRIVERS, transports=TRANSPORTS)


def refusal(text: str) -> list[str]:
    """The issues of ``text``, as the command line prints them."""
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return [str(issue) for issue in caught.value.issues]


def only_issue(path: Path | str) -> ConfigIssue:
    """The one issue of the file at ``path``."""
    with pytest.raises(ConfigError) as caught:
        load(path)
    [issue] = caught.value.issues
    return issue


def meter_key(text: str) -> list[str]:
    """The issues of the valid site with ``text`` added to meter 0."""
    return refusal(SITE + text)


@pytest.fixture(params=["libyaml", "python"])
def parser(request, monkeypatch):
    """Run a test with libyaml's parser (where PyYAML has it) and with the pure-Python one."""
    if request.param == "libyaml" and yamlnodes.FAST_LOADER is None:
        pytest.skip("PyYAML was built without libyaml")
    if request.param == "python":
        monkeypatch.setattr(yamlnodes, "FAST_LOADER", None)
    return request.param


each_parser = pytest.mark.usefixtures("parser")


# -- YAML that used to end in a traceback or a hang (issue 7, item 5) --------------------------


@each_parser
@pytest.mark.timeout(60)
def test_a_billion_laughs_is_refused_where_it_passes_the_bound():
    assert len(BILLION_LAUGHS) <= 400
    [issue] = refusal(BILLION_LAUGHS + SITE)
    assert issue.startswith("site.yaml:6: x-f: holds more than 500000 keys and values")


@each_parser
def test_anchors_merged_into_every_meter_stay_fine():
    """The bound on aliases leaves the documented use alone: x- anchors merged into meters."""
    meters = "".join(f'  - {{<<: *bus1, address: "{n}", name: flat {n}}}\n' for n in range(1, 2001))
    anchor = "x-bus1: &bus1 {protocol: dlt645, channel: bus1, quantities: [1-0:1.8.0]}\n"
    text = SITE.split("meters:")[0] + anchor + "meters:\n" + meters
    site = parse(text)
    assert len(site.meters) == 2000 and site.meters[-1].channel == "bus1"


@each_parser
def test_anchors_nested_through_aliases_past_the_bound_are_refused():
    chain = "x-0: &a0 [[[[1]]]]\n" + "".join(f"x-{n}: &a{n} [[[[*a{n - 1}]]]]\n" for n in range(1, 12))
    [issue] = refusal(chain + SITE)
    assert issue.startswith("site.yaml:8: x-7: nested more than 32 levels deep once its aliases are expanded")


@each_parser
def test_merges_that_double_at_each_step_are_refused():
    doubling = "x-0: &m0 {k: 1}\n" + "".join(f"x-{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}]}}\n" for n in range(1, 60))
    [issue] = refusal(doubling + SITE)
    assert issue.startswith("site.yaml:16: x-15.<<: nested more than 32 levels deep once its aliases are expanded")


@each_parser
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int abc", "the tag !!int asks for a whole number, and 'abc' is not one"),
        ("!!float abc", "the tag !!float asks for a number, and 'abc' is not one"),
        ("!!bool maybe", "the tag !!bool asks for true or false, and 'maybe' is not one"),
        ("!!timestamp x", "the tag !!timestamp asks for a date, and 'x' is not one"),
        ('!!int ""', "the tag !!int asks for a whole number, and '' is not one"),
        ("!!float", "the tag !!float asks for a number, and '' is not one"),
    ],
)
def test_a_tag_on_text_not_of_its_type_is_reported_at_its_key(value, message):
    assert meter_key(f"    name: {value}\n") == [f"site.yaml:{METER_LINE}: meters[0].name: {message}"]


@each_parser
def test_a_date_that_does_not_exist_is_reported_at_its_key():
    assert meter_key("    name: 2020-02-30\n") == [
        f"site.yaml:{METER_LINE}: meters[0].name: YAML reads 2020-02-30 as a date, but it is not one"
        " (day is out of range for month); quote it if you meant text"
    ]


@each_parser
@pytest.mark.parametrize("number", ["1" * 5000, "0x" + "f" * 4000, "1:" * 2500 + "1"])
def test_a_number_too_long_to_print_is_reported_at_its_key(number):
    [issue] = meter_key(f"    name: {number}\n")
    assert issue.startswith(f"site.yaml:{METER_LINE}: meters[0].name: a whole number of more than 4300 digits")


@each_parser
@pytest.mark.parametrize("nesting", ["[" * 5000, "[" * 5000 + "]" * 5000])
def test_nesting_thousands_deep_is_refused_at_the_key_it_starts_at(nesting):
    assert meter_key(f"    name: {nesting}\n") == [f"site.yaml:{METER_LINE}: meters[0].name: nested more than 32 levels deep"]


@each_parser
def test_nested_mappings_are_refused_at_the_level_past_the_bound():
    [issue] = meter_key("    options: " + "{a: " * 100 + "1" + "}" * 100 + "\n")
    assert issue.startswith(f"site.yaml:{METER_LINE}: meters[0].options" + ".a" * 28 + ": nested more than 32 levels deep")


@each_parser
def test_a_nul_character_in_the_store_path_is_reported_at_store():
    assert refusal(SITE + 'store: "sqlite:///meter\\0hub.db"\n') == [
        f"site.yaml:{METER_LINE}: store: must not hold a NUL character (\\0): no file name, port or URL can"
    ]


@each_parser
def test_a_lone_surrogate_in_a_name_is_reported_at_its_key():
    [issue] = meter_key('    name: "flat \\ud800"\n')
    assert issue.startswith(f"site.yaml:{METER_LINE}: meters[0].name: must be Unicode text")


@each_parser
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!set {a, b}", "the tag !!set is not supported here; write a plain mapping"),
        ("!!omap [a: 1]", "the tag !!omap is not supported here; write a plain list"),
        ("!!python/object/apply:os.system [echo]", "the tag !!python/object/apply:os.system is not supported here"),
        ("!secret {a: 1}", "the tag !secret is not supported here"),
    ],
)
def test_a_tag_for_another_type_on_a_mapping_or_list_is_reported_at_its_key(value, message):
    """These used to load as a plain mapping or list, the tag silently dropped."""
    [issue] = meter_key(f"    name: {value}\n")
    assert issue.startswith(f"site.yaml:{METER_LINE}: meters[0].name: {message}")


@each_parser
def test_a_megabyte_line_loads_and_is_quoted_short_in_a_message():
    assert parse(SITE + "    name: " + "x" * 1_000_000 + "\n").meters[0].name == "x" * 1_000_000
    [issue] = refusal(SITE.replace("protocol: dlt645", "protocol: " + "p" * 1_000_000))
    assert issue.startswith("site.yaml:5: meters[0].protocol: unknown protocol 'pppp")
    assert len(issue) < 500


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")
@pytest.mark.parametrize(
    ("text", "issues"),
    [
        ("channels: {}\nmeters: []\nstore:\tx\n",
         ["site.yaml:3: invalid YAML: found character '\\t' that cannot start any token (while scanning for the next token)"]),
        ("\ufeff\ufeff ", ["site.yaml:1: the file must be a mapping with channels: and meters:, got the text '\\ufeff'"]),
        ("channels: {}\nmeters: []\nuplink: {note: why?}\n",
         ["site.yaml:3: invalid YAML: expected ',' or '}', but got '?' (while parsing a flow mapping)"]),
        ("channels: {}\nmeters: []\nstore: |#\n", ["site.yaml:3: invalid YAML: expected chomping or indentation indicators,"
                                                 " but found '#' (while scanning a block scalar)"]),
        ("channels: {}\nmeters: []\nstore: !.!x y\n",
         ["site.yaml:3: invalid YAML: expected '!', but found '.' (while scanning a tag)"]),
        ("!", ["site.yaml: the file is empty: it needs at least channels: and meters:"]),
    ],
    ids=["tab", "byte-order-mark", "question-mark-in-flow", "comment-after-block-header", "tag-handle", "empty-tag"],
)
def test_text_libyaml_reads_otherwise_gets_pyyamls_answer(text, issues, monkeypatch):
    """libyaml takes a tab after "key:", a "?" in text in braces, a comment right after "|"
    and a tag "!.!x", all of which PyYAML refuses; it skips a second byte-order mark, which
    PyYAML reads as text, and reads a bare "!" as empty text, PyYAML as nothing. A file
    gets PyYAML's answer either way."""
    assert refusal(text) == issues
    monkeypatch.setattr(yamlnodes, "FAST_LOADER", None)
    assert refusal(text) == issues


@each_parser
def test_a_character_yaml_refuses_is_located_counting_every_yaml_line_break():
    """YAML 1.1 breaks lines at CR, NEL, LS and PS too: a file from an old Mac editor."""
    assert refusal("channels: {}\rmeters: []\u2028store: \x07\r") == [
        "site.yaml:3: invalid YAML: special characters are not allowed (U+0007)"
    ]


def test_a_byte_that_is_not_utf8_is_located_counting_every_yaml_line_break(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_bytes(b"channels: {}\rmeters: []\r# caf\xe9\r")
    issue = only_issue(path)
    assert (issue.line, issue.message) == (3, "the file is not UTF-8 text: invalid continuation byte")


# -- files that are not site files (issue 7, item 5) -----------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused_unread():
    assert str(only_issue("/dev/zero")) == "/dev/zero: cannot read the file: it is a character device, not a regular file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.timeout(30)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "site.yaml"
    os.mkfifo(fifo)
    assert str(only_issue(fifo)) == f"{fifo}: cannot read the file: it is a FIFO (named pipe), not a regular file"


def test_a_directory_is_refused(tmp_path):
    assert str(only_issue(tmp_path)) == f"{tmp_path}: cannot read the file: it is a directory, not a regular file"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    path.chmod(0)
    assert str(only_issue(path)) == f"{path}: cannot read the file: Permission denied"


def test_a_nul_character_in_the_file_name_is_refused():
    assert only_issue("site\0.yaml").message == "cannot read the file: its name holds a NUL character"


def test_a_file_larger_than_the_bound_is_refused_unread(tmp_path):
    path = tmp_path / "site.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_SITE_FILE_BYTES + 1)  # sparse: no time or disk spent
    issue = only_issue(path)
    assert (issue.line, issue.key) == (None, "")
    assert issue.message.startswith(f"the file is too large for a site file: more than {MAX_SITE_FILE_BYTES} bytes")


def test_text_larger_than_the_bound_is_refused_unparsed():
    with pytest.raises(ConfigError) as caught:
        parse(SITE + "#" * MAX_SITE_FILE_BYTES)
    [issue] = caught.value.issues
    assert issue.message.startswith(f"the file is too large for a site file: more than {MAX_SITE_FILE_BYTES} characters")


def test_a_file_at_the_bound_is_read(tmp_path):
    """The bound is on size, not on what a site may hold: padding to it is fine."""
    path = tmp_path / "site.yaml"
    path.write_bytes(SITE.encode() + b"#" * (MAX_SITE_FILE_BYTES - len(SITE) - 1) + b"\n")
    assert path.stat().st_size == MAX_SITE_FILE_BYTES
    assert load(path).meters[0].address == "000000000001"


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")
def test_libyaml_parses_where_pyyaml_has_it():
    assert yamlnodes.FAST_LOADER is not None


@attrs.frozen
class ProfiledDLT645(FakeDLT645):
    """A driver that reads device profiles with plain yaml.safe_load, as a plugin might."""

    def load_profile_dir(self, path: str) -> list[str]:
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), encoding="utf-8") as f:
                yaml.safe_load(f)
        return []


def test_a_profile_loader_that_fails_on_a_value_is_reported_at_the_profiles_entry(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "acme.yaml").write_text("model: !!bool maybe\n")
    site = tmp_path / "site.yaml"
    site.write_text("channels: {}\nmeters: []\nprofiles: [profiles]\n")
    with pytest.raises(ConfigError) as caught:
        load_site(site, drivers={"dlt645": ProfiledDLT645()}, transports=TRANSPORTS)
    [issue] = caught.value.issues
    assert str(issue) == (
        f"{site}:3: profiles[0]: the dlt645 driver could not load the profiles in {tmp_path / 'profiles'}: KeyError: 'maybe'"
    )


# -- values the runtime cannot use (issue 7, item 6) -----------------------------------------


@each_parser
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("backoff_initial", "3000000d", "must be at most 366d, got 3000000d"),
        ("backoff_max", "3000000d", "must be at most 366d, got 3000000d"),
        ("interval", "3000000d", "must be at most 366d, got 3000000d"),
        ("interval", "367d", "must be at most 366d, got 367d"),
        ("interval", "1" + "0" * 400, "a duration too long to count: 1000"),
        ("interval", "0x" + "f" * 300, "a duration too long to count: "),
        ("backoff_initial", "1" + "0" * 400 + "d", "a duration too long to count: '1000"),
    ],
)
def test_a_schedule_value_past_its_bound_is_reported_at_its_key(key, value, message):
    [issue] = refusal(SITE + f"schedule:\n  {key}: {value}\n")
    assert issue.startswith(f"site.yaml:{METER_LINE + 1}: schedule.{key}: {message}")


@each_parser
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("timeout", "2m", "must be at most 1m, got 2m"),
        ("timeout", "1" + "0" * 400 + "ms", "a duration too long to count"),
        ("baudrate", "4000001", "must be at most 4000000 bit/s"),
        ("baudrate", "0x" + "f" * 300, "must be at most 4000000 bit/s"),
    ],
)
def test_a_meter_value_past_its_bound_is_reported_at_its_key(key, value, message):
    [issue] = meter_key(f"    {key}: {value}\n")
    assert issue.startswith(f"site.yaml:{METER_LINE}: meters[0].{key}: {message}")


@each_parser
def test_a_channel_baud_rate_past_the_bound_is_reported_at_its_key():
    [issue] = refusal(SITE.replace("port: /dev/ttyUSB0}", "port: /dev/ttyUSB0, baudrate: 10000000000}"))
    assert issue.startswith("site.yaml:2: channels.bus1.baudrate: must be at most 4000000 bit/s")


def test_values_at_their_bounds_load():
    """Each bound is the largest value taken, not the first refused."""
    site = parse(
        SITE + f"    timeout: {LONGEST_METER_TIMEOUT:g}s\n    baudrate: {MAX_BAUDRATE}\n"
        "schedule: {interval: 366d, backoff_initial: 366d, backoff_max: 366d, retries: 10}\n"
    )
    assert site.meters[0].timeout == LONGEST_METER_TIMEOUT
    assert site.schedule.interval == site.schedule.backoff_max == LONGEST_SCHEDULE


def test_the_longest_back_off_fits_in_a_date():
    """The runtime adds back-off to the wall clock; a datetime ends in the year 9999."""
    assert datetime.now(timezone.utc) + timedelta(seconds=LONGEST_SCHEDULE) < datetime.max.replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("number", [10**400, "1" + "0" * 400 + "ms"])
def test_parse_duration_refuses_numbers_no_float_holds(number):
    with pytest.raises(ValueError, match="a duration too long to count"):
        parse_duration(number)


# -- the command line ---------------------------------------------------------------------


def meterhub_command() -> list[str]:
    """The installed ``meterhub`` script beside this interpreter (or its module)."""
    script = shutil.which("meterhub", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "meterhub.cli"]


#: an empty site needs no plugin: each case below is its only mistake
EMPTY_SITE = "channels: {}\nmeters: []\n"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (BILLION_LAUGHS + EMPTY_SITE, "6: x-f: holds more than"),
        (EMPTY_SITE + "store: !!int abc\n", "3: store: the tag !!int asks for a whole number"),
        (EMPTY_SITE + "schedule: {backoff_initial: 3000000d}\n", "3: schedule.backoff_initial: must be at most 366d"),
        (EMPTY_SITE + "store: " + "[" * 5000 + "\n", "3: store: nested more than 32 levels deep"),
    ],
    ids=["billion-laughs", "int-abc", "backoff-3000000d", "5000-brackets"],
)
@pytest.mark.timeout(60)
def test_meterhub_run_refuses_a_bad_site_file_with_one_line_and_status_2(tmp_path, text, where):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    result = subprocess.run([*meterhub_command(), "run", str(path), "--once"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}:{where}")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.timeout(60)
def test_meterhub_run_refuses_a_fifo_without_waiting(tmp_path):
    fifo = tmp_path / "site.yaml"
    os.mkfifo(fifo)
    result = subprocess.run([*meterhub_command(), "run", str(fifo), "--once"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {fifo}: cannot read the file: it is a FIFO (named pipe), not a regular file\n"
    assert stat.S_ISFIFO(fifo.stat().st_mode)


# -- any input: a site or a ConfigError, in bounded time -------------------------------------

GOOD = (Path(__file__).parent / "data" / "configs" / "good.yaml").read_text()

#: the values above, to put where a value goes or anywhere at all
HOSTILE = [
    "!!int abc", "!!float abc", "!!bool maybe", "!!timestamp x", "2020-02-30", "1" * 5000, "0x" + "f" * 4000,
    "1:" * 2500 + "1", "[" * 5000, "{a: " * 200, '"\\0"', '"\\ud800"', "!!binary x", "!!binary aGVsbG8=", "!!set {a}",
    "!!omap [a: 1]", "!!python/object:os.system x", "!!python/object/apply:os.system [x]", "!secret x", "!", "&a",
    "*a", "*nope", "*dlt645", "{<<: *dlt645}", "{<<: [*dlt645, *dlt645]}", "*i", "\t", "\ufeff", "\x85", "\u2028",
    "\r", "---\n", "...\n", "%YAML 1.1\n", "? ", "|#", "!.!x", "x" * 100_000, "3000000d", "1" + "0" * 400,
    "0x" + "f" * 300, "-1", ".inf", ".nan", "~", "''", "|\n", ">-\n",
]  # fmt: skip
#: whole top-level entries to put before the file
HOSTILE_HEADS = [
    BILLION_LAUGHS,
    "x-0: &a0 [[[[1]]]]\n" + "".join(f"x-{n}: &a{n} [[[[*a{n - 1}]]]]\n" for n in range(1, 12)),
    "x-0: &m0 {k: 1}\n" + "".join(f"x-{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}]}}\n" for n in range(1, 40)),
]


@st.composite
def hostile_site(draw):
    """The good site file with a few edits: a value replaced by a hostile one, a hostile
    entry before it, a hostile value or YAML punctuation put anywhere, a deletion."""
    text = GOOD
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["value", "head", "splice", "punctuation", "delete"]))
        if edit == "value":  # the rest of a line after "key: "
            start = draw(st.sampled_from([match.end() for match in re.finditer(": ", text)] or [0]))
            end = text.find("\n", start)
            text = text[:start] + draw(st.sampled_from(HOSTILE)) + (text[end:] if end >= 0 else "")
        elif edit == "head":
            text = draw(st.sampled_from(HOSTILE_HEADS)) + text
        else:
            at = draw(st.integers(0, len(text)))
            if edit == "splice":
                text = text[:at] + draw(st.sampled_from(HOSTILE)) + text[at:]
            elif edit == "punctuation":
                text = text[:at] + draw(st.text(alphabet=" \n:-[]{}&*!<>#'\"\t0aZ.~|?,%@`", max_size=6)) + text[at:]
            else:
                text = text[:at] + text[at + draw(st.integers(1, 20)) :]
    return text


#: A generous bound per example for a loaded two-core CI machine: the slowest example, 5,000
#: brackets parsed twice (libyaml, then PyYAML for the message), takes a fraction of a second.
EXAMPLE_DEADLINE = timedelta(seconds=5)
#: YAML 1.1 line breaks (\r alone, NEL, LS, PS count as well as \n)
YAML_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


@given(st.one_of(st.text(max_size=500), hostile_site()))
@settings(deadline=EXAMPLE_DEADLINE, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
def test_any_text_or_edit_of_a_good_file_loads_or_is_refused_at_its_lines(text):
    try:
        parse(text)
    except ConfigError as exc:
        assert exc.issues
        last_line = len(YAML_LINE_BREAK.split(text))
        for issue in exc.issues:
            assert issue.file == "site.yaml"
            assert issue.line is None or 1 <= issue.line <= last_line
            assert issue.message


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")
@given(hostile_site())
@settings(deadline=EXAMPLE_DEADLINE, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
def test_libyaml_and_pyyaml_give_the_same_answer(text):
    with_libyaml = outcome(text)
    saved, yamlnodes.FAST_LOADER = yamlnodes.FAST_LOADER, None
    try:
        assert outcome(text) == with_libyaml
    finally:
        yamlnodes.FAST_LOADER = saved


def outcome(text: str) -> Site | list[ConfigIssue]:
    try:
        return parse(text)
    except ConfigError as exc:
        return exc.issues
