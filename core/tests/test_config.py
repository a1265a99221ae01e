"""The site-file loader: what a good file becomes, and where each mistake is reported.

Bad example files mark every line that must be reported with a comment
``# expect: <key path> "<part of the message>"``; the loader must report exactly those
issues (file, line and key), no more and no fewer.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterhub import yamlnodes
from meterhub.config import DEFAULT_QUANTITY, load_site, parse_duration, parse_site
from meterhub.errors import ConfigError, ConfigIssue
from meterhub.default_plugins.jsonl import JsonlUplinkDriver
from meterhub.model import (
    DEFAULT_STORE,
    ChannelConfig,
    Collector,
    Hop,
    Meter,
    Schedule,
    SerialSettings,
    Site,
    UplinkConfig,
)

DATA = Path(__file__).parent / "data" / "configs"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site.yaml"


@pytest.fixture(autouse=True, params=["libyaml", "python"])
def parser(request, monkeypatch):
    """Every test runs with libyaml's parser (where PyYAML has it) and the pure-Python one:
    the lines and messages a user sees must not depend on which PyYAML is installed."""
    if request.param == "libyaml" and yamlnodes.FAST_LOADER is None:
        pytest.skip("PyYAML was built without libyaml")
    if request.param == "python":
        monkeypatch.setattr(yamlnodes, "FAST_LOADER", None)
    return request.param


# -- stand-ins for the real drivers and transports (written elsewhere) ----------------


@attrs.frozen
class FakeDriver:
    """A meter protocol with decimal addresses of a fixed width, zero-padded."""

    name: str
    width: int
    quantities: frozenset[str]
    default_settings: SerialSettings = SerialSettings()
    description: str = "stand-in"

    def normalize_address(self, address: str) -> str:
        if not address.isdigit():
            raise ValueError("only decimal digits")
        if len(address) > self.width:
            raise ValueError(f"at most {self.width} digits")
        return address.zfill(self.width)

    def supported_quantities(self) -> Collection[str]:
        return self.quantities


@attrs.frozen
class FakeModbus:
    name: str = "modbus"
    description: str = "stand-in"
    default_settings: SerialSettings = SerialSettings(9600, 8, "N", 1)

    def normalize_address(self, address: str) -> str:
        if not address.isdigit() or not 1 <= int(address) <= 247:
            raise ValueError("a slave address is 1..247")
        return str(int(address))

    def supported_quantities(self) -> Collection[str]:
        return {"1-0:1.8.0", "1-0:1.7.0", "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"}

    def load_profile_dir(self, path: str) -> list[str]:
        return []


STANDARD_BAUDS = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


@attrs.frozen
class FakeRS485:
    """An RS485 transport: standard baud rates only, one option (``rs485: {mode}``)."""

    name: str = "rs485"
    description: str = "stand-in"

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        problems = []
        if channel.settings.baudrate not in STANDARD_BAUDS:
            problems.append(("baudrate", f"{channel.settings.baudrate} is not a standard baud rate"))
        if not channel.port:
            problems.append(("port", "no port"))
        for key, value in channel.options.items():
            if key != "rs485":
                problems.append((key, f"unknown rs485 option {key!r}"))
            elif not isinstance(value, dict) or value.get("mode") not in ("none", "kernel", "rts"):
                problems.append(("rs485.mode", "mode must be none, kernel or rts"))
        return problems


@attrs.frozen
class FakeTCP:
    name: str = "tcp"
    description: str = "stand-in"

    def validate(self, channel: ChannelConfig) -> list[tuple[str, str]]:
        return []


DLT645_QUANTITIES = frozenset(
    {"1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4", "1-0:2.8.0", "1-0:1.7.0",
     "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0", "1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0",
     "1-0:13.7.0", "1-0:14.7.0", "0-0:1.0.0"}
)  # fmt: skip
DRIVERS = {
    "dlt645": FakeDriver("dlt645", 12, DLT645_QUANTITIES),
    "cjt188": FakeDriver("cjt188", 14, frozenset({"8-0:1.0.0", "8-0:1.0.1", "0-0:96.3.10", "0-0:96.6.0", "0-0:1.0.0"})),
    "mbus": FakeDriver("mbus", 3, frozenset({"6-0:1.0.0", "6-0:2.0.0", "6-0:10.0.0", "6-0:11.0.0"})),
    "modbus": FakeModbus(),
}
TRANSPORTS = {"rs485": FakeRS485(), "tcp": FakeTCP()}


class FakeMasterStation:
    """An uplink driver that needs a server: key."""

    name = "gdw1376.1"
    description = "in-test master-station uplink"

    def validate(self, config: UplinkConfig) -> list[tuple[str, str]]:
        return [] if "server" in config.options else [("", "missing required key server")]

    def create(self, config, terminal):  # pragma: no cover - config tests never run uplinks
        raise NotImplementedError


UPLINKS = {"gdw1376.1": FakeMasterStation(), "jsonl": JsonlUplinkDriver()}


def load(name: str) -> Site:
    return load_site(DATA / name, drivers=DRIVERS, transports=TRANSPORTS, uplinks=UPLINKS)


def parse(text: str) -> Site:
    return parse_site(text, filename="site.yaml", drivers=DRIVERS, transports=TRANSPORTS, uplinks=UPLINKS)


def issues_of(name: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load(name)
    return caught.value.issues


MARKER = re.compile(r'expect: (\S+)(?: "([^"]*)")?')


def expected_issues(path: Path) -> list[tuple[int, str, str]]:
    """(line, key, message part) for every ``# expect:`` marker in the file."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        for key, fragment in MARKER.findall(line):
            found.append((number, "" if key == '""' else key, fragment))
    return found


BAD_FILES = sorted(p.name for p in DATA.glob("bad_*.yaml"))


# -- the marked bad files ---------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_file_reports_exactly_the_marked_lines_and_keys(name):
    path = DATA / name
    expected = expected_issues(path)
    issues = issues_of(name)
    assert sorted((i.line, i.key) for i in issues) == sorted((line, key) for line, key, _ in expected)
    assert {i.file for i in issues} == {str(path)}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_file_messages_say_what_is_wrong(name):
    issues = {(i.line, i.key): i.message for i in issues_of(name)}
    for line, key, fragment in expected_issues(DATA / name):
        assert fragment in issues[(line, key)], f"line {line} {key}: {issues[(line, key)]!r}"


def test_every_bad_file_has_markers():
    assert BAD_FILES
    for name in BAD_FILES:
        assert expected_issues(DATA / name), name


def test_several_mistakes_in_one_file_are_all_reported():
    keys = [i.key for i in issues_of("bad_serial.yaml")]
    assert len(keys) == 10
    assert "channels.bus1.parity" in keys and "channels.bus2.baudrate" in keys and "meters[0].baudrate" in keys


def test_issues_come_sorted_by_line():
    lines = [i.line for i in issues_of("bad_meter_types.yaml")]
    assert lines == sorted(lines)


def test_error_text_names_file_line_and_key():
    with pytest.raises(ConfigError) as caught:
        load("bad_points.yaml")
    assert str(caught.value) == (
        f"{DATA / 'bad_points.yaml'}:13: meters[1].point: measuring point 7 is already used by meters[0] (line 9)"
    )


# -- YAML-level problems ----------------------------------------------------------------------


def test_syntax_error_is_one_issue_at_the_line_of_the_problem():
    [issue] = issues_of("syntax_error.yaml")
    assert (issue.file, issue.line, issue.key) == (str(DATA / "syntax_error.yaml"), 8, "")
    assert issue.message.startswith("invalid YAML:")


def test_unclosed_quote_points_at_where_the_scanner_gave_up_and_where_it_started():
    with pytest.raises(ConfigError) as caught:
        parse('channels:\n  bus1:\n    port: "/dev/ttyUSB0\n')
    [issue] = caught.value.issues
    assert issue.line == 4
    assert "started on line 3" in issue.message


def test_empty_file_says_it_is_empty():
    [issue] = issues_of("empty.yaml")
    assert issue.file == str(DATA / "empty.yaml")
    assert "empty" in issue.message


@pytest.mark.parametrize("text", ["", "   \n", "---\n", "# only a comment\n"])
def test_empty_text_says_the_file_is_empty(text):
    with pytest.raises(ConfigError, match="empty"):
        parse(text)


def test_character_yaml_does_not_allow_is_reported_with_its_line():
    with pytest.raises(ConfigError) as caught:
        parse("channels: {}\nmeters: []\nstore: \x07\n")
    [issue] = caught.value.issues
    assert issue.line == 3


def test_recursive_alias_is_reported_not_a_crash():
    with pytest.raises(ConfigError) as caught:
        parse("channels: {}\nmeters: &m\n  - *m\n")
    assert any(i.key == "meters[0]" and "refers back" in i.message for i in caught.value.issues)


def test_missing_file_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_site(missing, drivers=DRIVERS, transports=TRANSPORTS)
    [issue] = caught.value.issues
    assert issue.file == str(missing) and issue.line is None


def test_file_that_is_not_utf8_is_a_config_error_with_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"channels: {}\nmeters: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_site(path, drivers=DRIVERS, transports=TRANSPORTS)
    [issue] = caught.value.issues
    assert issue.line == 3 and "UTF-8" in issue.message


# -- good files -------------------------------------------------------------------------------

HUB1 = Hop("hub1", "000000009001", "dlt645")


def test_good_file_becomes_the_right_site():
    site = load("good.yaml")
    bus1 = ChannelConfig("bus1", "rs485", "/dev/ttyUSB0", SerialSettings(2400, 8, "E", 1), {"rs485": {"mode": "rts"}})
    bus2 = ChannelConfig("bus2", "rs485", "socket://127.0.0.1:7000")
    assert site == Site(
        channels={"bus1": bus1, "bus2": bus2},
        meters=(
            Meter(
                address="000000000001",
                protocol="dlt645",
                channel="bus1",
                quantities=("1-0:1.8.0", "1-0:32.7.0"),
                point=1,
                name="flat 1",
                timeout=1.5,
                retries=3,
            ),
            Meter(
                address="000000000002",
                protocol="dlt645",
                channel="bus1",
                quantities=(DEFAULT_QUANTITY,),
                point=2,
                settings=SerialSettings(1200, 8, "E", 1),
                options={"tariff_table": 2},
                credential="meter-2",
            ),
            Meter(address="000000000003", protocol="dlt645", channel="bus2", quantities=(DEFAULT_QUANTITY,), timeout=0.5,
                  hops=(HUB1,), point=3),  # no point: its position
            Meter(address="000000000004", protocol="dlt645", channel="bus2", quantities=(DEFAULT_QUANTITY,),
                  hops=(HUB1, Hop("relay2", delay=0.3)), point=4),
        ),
        collectors={"hub1": Collector("hub1", "bus2", "000000009001", "dlt645", {"ports": 12}),
                    "relay2": Collector("relay2", "bus2", via="hub1", delay=0.3)},
        schedule=Schedule(interval=900.0, retries=1, backoff_initial=1800.0, backoff_max=86400.0),
        store="sqlite:///var/meterhub.db",
        uplink={"protocol": "gdw1376.1", "server": "10.0.0.1:7000"},
        uplinks=(UplinkConfig("gdw1376.1", "gdw1376.1", {"server": "10.0.0.1:7000"}),
                 UplinkConfig("jsonl", "jsonl", {"path": "feed.jsonl"})),
        terminal="3201/0001",
        source=str(DATA / "good.yaml"),
    )


def test_design_minimal_form_is_accepted():
    site = load("minimal.yaml")
    assert site.channels["bus1"] == ChannelConfig("bus1", "rs485", "/dev/ttyUSB0", SerialSettings(2400, 8, "E", 1))
    assert site.meters == (
        Meter("000000000001", "dlt645", "bus1", quantities=("1-0:1.8.0", "1-0:32.7.0"), point=1),
    )
    assert site.store == "sqlite:///meterhub.db"


def test_store_defaults_to_sqlite_in_the_working_directory():
    assert load("defaults.yaml").store == DEFAULT_STORE


def test_channel_serial_settings_default_to_2400_8E1():
    assert load("defaults.yaml").channels["bus1"].settings == SerialSettings(2400, 8, "E", 1)


def test_quantities_default_to_the_import_energy_register():
    assert load("defaults.yaml").meters[0].quantities == ("1-0:1.8.0",)


def test_schedule_defaults():
    assert load("defaults.yaml").schedule == Schedule()


def test_optional_meter_fields_stay_unset():
    meter = load("defaults.yaml").meters[0]
    assert (meter.name, meter.timeout, meter.retries, meter.settings) == ("", None, None, None)


POINTS_SITE = (
    "channels: {b: {transport: rs485, port: /dev/x}}\n"
    "meters:\n"
    "  - {address: '1', channel: b, protocol: dlt645, point: %s}\n"
    "  - {address: '2', channel: b, protocol: dlt645}\n"
    "  - {address: '3', channel: b, protocol: dlt645}\n"
)


def test_a_meter_without_a_point_is_the_measuring_point_of_its_position_in_the_file():
    assert [m.point for m in parse(POINTS_SITE % 7).meters] == [7, 2, 3]


def test_a_position_taken_by_an_explicit_point_is_an_error_naming_both_meters():
    with pytest.raises(ConfigError) as caught:
        parse(POINTS_SITE % 2)
    assert str(caught.value.issues[0]) == (
        "site.yaml:4: meters[1]: has no point: and its position makes it measuring point 2, which meters[0]"
        " (line 3) already has; give it a point:"
    )


def test_no_collectors_and_no_uplink_by_default():
    site = load("defaults.yaml")
    assert dict(site.collectors) == {} and site.uplink is None


def test_unquoted_address_keeps_its_leading_zeros():
    # YAML 1.1 reads 000000000010 as the octal number 8; the text is what the user meant
    site = parse(
        "channels: {b: {transport: rs485, port: /dev/x}}\n"
        "meters:\n  - {address: 000000000010, channel: b, protocol: dlt645}\n"
    )
    assert site.meters[0].address == "000000000010"


def test_aliases_are_stored_as_obis_codes():
    site = parse(
        "channels: {b: {transport: rs485, port: /dev/x}}\n"
        "meters:\n  - {address: '1', channel: b, protocol: dlt645, quantities: [voltage_l1, FREQUENCY]}\n"
    )
    assert site.meters[0].quantities == ("1-0:32.7.0", "1-0:14.7.0")


def test_meter_settings_override_only_what_the_meter_says():
    site = parse(
        "channels: {b: {transport: rs485, port: /dev/x, baudrate: 9600, parity: N}}\n"
        "meters:\n  - {address: '1', channel: b, protocol: dlt645, parity: even}\n"
    )
    assert site.meters[0].settings == SerialSettings(9600, 8, "E", 1)


def test_meter_on_a_collector_takes_the_collector_channel():
    site = parse(
        "channels: {b: {transport: rs485, port: /dev/x}}\n"
        "collectors: {hub: {channel: b}}\n"
        "meters:\n  - {address: '1', collector: hub, protocol: dlt645}\n"
    )
    assert site.meters[0].channel == "b"


def test_later_key_overrides_a_merged_one():
    site = parse(
        "x-base: &base {channel: a, protocol: dlt645, point: 1}\n"
        "channels: {a: {transport: rs485, port: /dev/x}, b: {transport: tcp, port: 'socket://h:1'}}\n"
        "meters:\n  - {<<: *base, channel: b, address: '1'}\n"
    )
    assert (site.meters[0].channel, site.meters[0].point) == ("b", 1)


def test_an_anchor_that_merges_another_can_be_used_many_times():
    site = parse(
        "x-base: &base {channel: a, protocol: dlt645}\n"
        "x-on-b: &on-b {<<: *base, channel: b}\n"
        "channels: {a: {transport: rs485, port: /dev/x}, b: {transport: tcp, port: 'socket://h:1'}}\n"
        "meters: [{<<: *on-b, address: '1'}, {<<: *on-b, address: '2'}]\n"
    )
    assert [(m.channel, m.address) for m in site.meters] == [("b", "000000000001"), ("b", "000000000002")]


def test_merging_something_that_is_not_a_mapping_is_reported():
    with pytest.raises(ConfigError) as caught:
        parse("channels: {}\nmeters:\n  - <<: [just, text]\n    address: '1'\n")
    assert ("meters[0]", 3) in [(i.key, i.line) for i in caught.value.issues]


def test_empty_meter_list_is_a_site_with_no_meters():
    assert parse("channels: {}\nmeters: []\n").meters == ()


def test_backoff_max_is_raised_to_a_long_backoff_initial_when_not_given():
    site = parse("channels: {}\nmeters: []\nschedule: {interval: 2d}\n")
    assert site.schedule.backoff_initial == site.schedule.backoff_max == 2 * 86400.0


def test_transport_is_not_asked_about_a_key_already_reported():
    # baudrate 0 is caught by the generic check; the transport's own complaint would repeat it
    with pytest.raises(ConfigError) as caught:
        parse("channels: {b: {transport: rs485, port: /dev/x, baudrate: 0}}\nmeters: []\n")
    assert [i.key for i in caught.value.issues] == ["channels.b.baudrate"]


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is not beside this source tree")
def test_the_example_site_file_is_valid():
    site = load_site(EXAMPLE, drivers=DRIVERS, transports=TRANSPORTS, uplinks=UPLINKS)
    assert len(site.channels) == 2 and all(c.transport == "rs485" for c in site.channels.values())
    assert {m.protocol for m in site.meters} == {"dlt645", "modbus", "cjt188", "mbus"}


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is not beside this source tree")
def test_the_example_site_file_uses_every_documented_key():
    text = EXAMPLE.read_text()
    from meterhub.config import CHANNEL_KEYS, COLLECTOR_KEYS, METER_KEYS, SCHEDULE_KEYS, TOP_KEYS

    # uplink: is the one-uplink form of uplinks:, which the example shows
    for key in {*TOP_KEYS, *CHANNEL_KEYS, *METER_KEYS, *COLLECTOR_KEYS, *SCHEDULE_KEYS} - {"uplink"}:
        assert re.search(rf"^\s*(- )?{key}:", text, re.M), key


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900.0),
        ("30s", 30.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("90", 90.0),
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15 minutes", "1x", "-5s", -1, "1h1h", True, None, float("nan"), "1h-30m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 999))
@settings(max_examples=200, deadline=None)
def test_parse_duration_adds_up_its_parts(d, h, m, ms):
    assert parse_duration(f"{d}d{h}h{m}m{ms}ms") == pytest.approx(d * 86400 + h * 3600 + m * 60 + ms / 1000)


# -- robustness -------------------------------------------------------------------------------

GOOD_TEXT = (DATA / "good.yaml").read_text()


@st.composite
def mangled_site(draw):
    """The good site file with a few random edits: deletions and YAML-ish insertions."""
    text = GOOD_TEXT
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        else:
            text = text[:at] + draw(st.text(alphabet=" \n:-[]{}&*!<>#'\"\t0aZ.~|?,%@`", max_size=6)) + text[at:]
    return text


@given(mangled_site())
@settings(max_examples=300, deadline=None)
def test_any_edit_of_a_good_file_gives_a_site_or_located_issues(text):
    try:
        parse(text)
    except ConfigError as exc:
        assert exc.issues
        last_line = text.count("\n") + 1
        for issue in exc.issues:
            assert issue.file == "site.yaml"
            assert issue.line is None or 1 <= issue.line <= last_line
            assert issue.message


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_any_text_gives_a_site_or_a_config_error(text):
    try:
        parse(text)
    except ConfigError as exc:
        assert exc.issues


# -- what a driver finds wrong with one meter (validate_meter) ---------------------------


@attrs.frozen
class ProfiledModbus(FakeModbus):
    """A Modbus stand-in that, like the real one, needs a known profile per meter."""

    def validate_meter(self, meter: Meter) -> list[tuple[str, str]]:
        profile = meter.options.get("profile")
        if profile is None:
            return [("options", "a Modbus meter needs options: {profile: vendor-model}")]
        if profile != "eastron-sdm120":
            return [("options.profile", f"unknown profile {profile!r}")]
        if "1-0:1.7.0" in meter.quantities:
            return [("quantities[1]", "profile eastron-sdm120 cannot read 1-0:1.7.0")]
        return []


def test_a_drivers_findings_are_reported_at_the_key_they_name():
    text = (
        "channels:\n"
        "  bus1: {transport: rs485, port: /dev/ttyUSB0}\n"
        "meters:\n"
        "  - address: '1'\n"
        "    channel: bus1\n"
        "    protocol: modbus\n"
        "    quantities: [1-0:1.8.0]\n"
        "    options:\n"
        "      profile: nosuch-meter\n"
        "  - address: '2'\n"
        "    channel: bus1\n"
        "    protocol: modbus\n"
        "    quantities: [1-0:1.8.0, 1-0:1.7.0]\n"
        "    options: {profile: eastron-sdm120}\n"
        "  - {address: '3', channel: bus1, protocol: modbus, quantities: [1-0:1.8.0]}\n"
    )
    drivers = {**DRIVERS, "modbus": ProfiledModbus()}
    with pytest.raises(ConfigError) as caught:
        parse_site(text, filename="site.yaml", drivers=drivers, transports=TRANSPORTS)
    found = [(i.line, i.key, i.message) for i in caught.value.issues]
    assert found == [
        (9, "meters[0].options.profile", "unknown profile 'nosuch-meter'"),
        (13, "meters[1].quantities[1]", "profile eastron-sdm120 cannot read 1-0:1.7.0"),
        (15, "meters[2].options", "a Modbus meter needs options: {profile: vendor-model}"),
    ]


@attrs.define
class FolderModbus(ProfiledModbus):
    """Loads profile folders: a file named bad.yaml in one is refused at its own line."""

    loaded: list[str] = attrs.field(factory=list)

    def load_profile_dir(self, path):
        for file in sorted(Path(path).glob("*.yaml")):
            if file.name == "bad.yaml":
                raise ConfigError([ConfigIssue(str(file), 3, "registers[0].type", "unknown data type 'u17'")])
            self.loaded.append(file.stem)
        return self.loaded


def test_profile_folders_are_loaded_relative_to_the_site_file_before_the_meters(tmp_path):
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "eastron-sdm120.yaml").write_text("{}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.yaml").write_text("{}")
    site = tmp_path / "site.yaml"
    site.write_text(
        "profiles: [vendor, broken, nowhere]\n"
        "channels: {bus1: {transport: rs485, port: /dev/ttyUSB0}}\n"
        "meters: [{address: '1', channel: bus1, protocol: modbus, options: {profile: eastron-sdm120}}]\n"
    )
    driver = FolderModbus()
    with pytest.raises(ConfigError) as caught:
        load_site(site, drivers={"modbus": driver}, transports=TRANSPORTS)
    assert driver.loaded == ["eastron-sdm120"]
    found = {(Path(i.file).name, i.line, i.key): i.message for i in caught.value.issues}
    assert set(found) == {("bad.yaml", 3, "registers[0].type"), ("site.yaml", 1, "profiles[2]")}
    assert "nowhere" in found[("site.yaml", 1, "profiles[2]")]
