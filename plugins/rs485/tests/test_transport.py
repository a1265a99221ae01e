"""The rs485 transport: what it accepts, what it refuses and says, and that meterhub finds it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import meterhub.plugins
from meterhub.api import Link, Transport
from meterhub.errors import LinkError
from meterhub.model import ChannelConfig, SerialSettings
from meterhub.channels.serial import Rs485Options, SerialLink
from meterhub_rs485.transport import STANDARD_BAUDRATES, Rs485Transport, rs485_options

TRANSPORT = Rs485Transport()


def channel(port="/dev/ttyUSB0", settings=SerialSettings(), **options) -> ChannelConfig:
    return ChannelConfig("bus1", "rs485", port, settings, options)


def test_the_design_minimal_channel_is_valid():
    assert TRANSPORT.validate(channel(settings=SerialSettings(2400, 8, "E", 1))) == []


def test_a_full_rs485_section_is_valid():
    rs485 = {"mode": "rts", "rts_level_for_tx": True, "rts_level_for_rx": False,
             "delay_before_tx": 0.001, "delay_before_rx": 0}
    assert TRANSPORT.validate(channel(rs485=rs485, exclusive=False)) == []


def test_impossible_baud_rate_is_named_with_the_standard_rates():
    problems = TRANSPORT.validate(channel(settings=SerialSettings(baudrate=2401)))
    assert problems == [(
        "baudrate",
        "impossible baud rate 2401 (standard rates: 300, 600, 1200, 1800, 2400, 4800, 9600, "
        "19200, 38400, 57600, 115200, 230400, 460800, 921600)",
    )]


@given(st.integers(min_value=-10**7, max_value=10**7).filter(lambda b: b not in STANDARD_BAUDRATES))
def test_every_non_standard_baud_rate_is_refused(baud):
    problems = TRANSPORT.validate(channel(settings=SerialSettings(baudrate=baud)))
    assert [key for key, _ in problems] == ["baudrate"]
    assert problems[0][1].startswith(f"impossible baud rate {baud} ")


@pytest.mark.parametrize("baud", STANDARD_BAUDRATES)
def test_every_standard_baud_rate_is_accepted(baud):
    assert TRANSPORT.validate(channel(settings=SerialSettings(baudrate=baud))) == []


def test_a_baud_rate_that_is_not_a_number_is_refused():
    assert TRANSPORT.validate(channel(settings=SerialSettings(baudrate="fast"))) == [
        ("baudrate", "must be a whole number of bits per second, not 'fast'")
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bytesize", 9, "data bits must be 5, 6, 7 or 8, not 9"),
        ("bytesize", 4, "data bits must be 5, 6, 7 or 8, not 4"),
        ("parity", "X", "must be one of N, E, O, M, S, not 'X'"),
        ("parity", "even", "must be one of N, E, O, M, S, not 'even'"),
        ("stopbits", 3, "must be 1, 1.5 or 2, not 3"),
        ("stopbits", 0, "must be 1, 1.5 or 2, not 0"),
    ],
)
def test_impossible_character_formats_are_refused(field, value, message):
    settings = SerialSettings(**{field: value})
    assert TRANSPORT.validate(channel(settings=settings)) == [(field, message)]


@pytest.mark.parametrize("settings", [SerialSettings(300, 7, "E", 1), SerialSettings(9600, 8, "N", 2),
                                      SerialSettings(1200, 5, "M", 1.5), SerialSettings(19200, 6, "S", 1)])
def test_possible_character_formats_are_accepted(settings):
    assert TRANSPORT.validate(channel(settings=settings)) == []


@pytest.mark.parametrize("port", ["", "   "])
def test_an_empty_port_is_refused(port):
    assert TRANSPORT.validate(channel(port=port)) == [("port", "must be a device path or pyserial URL, not empty")]


def test_an_unknown_option_is_refused_with_a_suggestion():
    assert TRANSPORT.validate(channel(rs458={"mode": "rts"})) == [
        ("rs458", "unknown key; did you mean 'rs485'? (known: rs485, exclusive)")
    ]


def test_an_unknown_direction_mode_is_refused():
    assert TRANSPORT.validate(channel(rs485={"mode": "auto"})) == [("rs485.mode", "must be one of none, kernel, rts")]


def test_an_unknown_rs485_key_is_refused_with_its_path():
    problems = TRANSPORT.validate(channel(rs485={"mode": "rts", "delay_befor_tx": 0.001}))
    assert problems == [(
        "rs485.delay_befor_tx",
        "unknown key; did you mean 'delay_before_tx'? "
        "(known: mode, rts_level_for_tx, rts_level_for_rx, delay_before_tx, delay_before_rx)",
    )]


@pytest.mark.parametrize(
    ("rs485", "problem"),
    [
        ({"rts_level_for_tx": "high"}, ("rs485.rts_level_for_tx", "must be true or false (the RTS level)")),
        ({"rts_level_for_rx": 1}, ("rs485.rts_level_for_rx", "must be true or false (the RTS level)")),
        ({"delay_before_tx": -0.001}, ("rs485.delay_before_tx", "must be a number of seconds >= 0, not -0.001")),
        ({"delay_before_rx": "1ms"}, ("rs485.delay_before_rx", "must be a number of seconds >= 0, not '1ms'")),
        ("rts", ("rs485", "must be a mapping such as {mode: rts}")),
    ],
)
def test_bad_rs485_values_are_refused_with_their_path(rs485, problem):
    assert TRANSPORT.validate(channel(rs485=rs485)) == [problem]


def test_kernel_direction_control_needs_a_local_device():
    assert TRANSPORT.validate(channel(port="socket://10.0.0.7:4001", rs485={"mode": "kernel"})) == [
        ("rs485.mode", "kernel direction control needs a local serial device, not socket://10.0.0.7:4001")
    ]


def test_exclusive_must_be_a_boolean():
    assert TRANSPORT.validate(channel(exclusive="yes")) == [("exclusive", "must be true or false")]


def test_every_problem_is_reported_at_once():
    problems = TRANSPORT.validate(channel(port="", settings=SerialSettings(2401, 9, "X", 3), rs485={"mode": "x"}))
    assert [key for key, _ in problems] == ["port", "baudrate", "bytesize", "parity", "stopbits", "rs485.mode"]


def test_create_link_builds_an_unopened_serial_link():
    link = TRANSPORT.create_link(channel(port="/dev/ttyS3", settings=SerialSettings(9600, 8, "N", 1),
                                         rs485={"mode": "rts", "delay_before_rx": 0.002}, exclusive=False))
    assert isinstance(link, SerialLink) and isinstance(link, Link)
    assert (link.name, link.url, link.settings, link.is_open) == ("bus1", "/dev/ttyS3", SerialSettings(9600, 8, "N", 1), False)
    assert link.rs485 == Rs485Options(mode="rts", delay_before_rx=0.002)
    assert link.exclusive is False


def test_create_link_refuses_an_invalid_channel_in_one_line():
    with pytest.raises(LinkError, match=r"^channel bus1 \(/dev/ttyUSB0\): baudrate: impossible baud rate 2401 "):
        TRANSPORT.create_link(channel(settings=SerialSettings(baudrate=2401)))


def test_rs485_options_default_to_no_direction_control():
    assert rs485_options(None) == Rs485Options(mode="none")


def test_rs485_options_refuse_what_validate_refuses():
    with pytest.raises(ValueError):
        rs485_options({"mode": "auto"})


def test_the_transport_implements_the_contract():
    assert isinstance(TRANSPORT, Transport)
    assert TRANSPORT.name == "rs485" and TRANSPORT.description


def test_meterhub_finds_the_plugin_through_its_entry_point(monkeypatch):
    # Only the entry-point path is under test here, not the core's built-in plugins.
    monkeypatch.setattr(meterhub.plugins, "DEFAULT_PLUGINS", ())
    plugins = meterhub.plugins.Plugins()
    assert isinstance(plugins.transports()["rs485"], Rs485Transport)
    info = {i.name: i for i in plugins.info()}["rs485"]
    assert info.distribution == "meterhub-rs485"
    assert info.hooks == ("meterhub_register_meter_drivers", "meterhub_register_simulators",
                          "meterhub_register_transports")
    assert info.error == ""
