"""RS485 direction control and refusing hardware, with a recording stand-in for the port.

Hardware whose driver-enable follows RTS cannot exist in CI, so the stand-in logs every
RTS change, write and flush with its time, and the tests check the order on the wire.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from meterhub import timing
from meterhub.errors import LinkError
from meterhub.model import SerialSettings
from meterhub.channels.serial import Rs485Options, SerialLink

DLT645_8E1 = SerialSettings(2400, 8, "E", 1)
REQUEST = bytes.fromhex("68 AA AA AA AA AA AA 68 13 00 DF 16")


def link_on(port, settings=DLT645_8E1, **options) -> SerialLink:
    rs485 = Rs485Options(**options) if options else None
    return SerialLink("bus1", port.portstr, settings, rs485=rs485, factory=lambda url: port)


def after_open(port):
    opened = next(i for i, (_, what, _) in enumerate(port.events) if what == "open")
    return port.events[opened + 1 :]


def test_rts_mode_drives_the_bus_only_around_the_frame(make_port):
    port = make_port()

    async def scenario():
        async with link_on(port, mode="rts") as link:
            await link.write(REQUEST)

    asyncio.run(scenario())
    events = after_open(port)
    assert [(what, value) for _, what, value in events] == [
        ("rts", False),  # receive while idle
        ("rts", True),  # transmitter on
        ("write", REQUEST),
        ("flush", None),  # tcdrain
        ("rts", False),  # transmitter off, only after the last character left
    ]
    flushed, released = events[3][0], events[4][0]
    assert released - flushed >= timing.char_time(DLT645_8E1)


def test_rts_mode_releases_no_earlier_than_the_frame_takes_on_the_wire(make_port):
    port = make_port()  # its flush() returns at once, as a USB adapter's may

    async def scenario():
        async with link_on(port, mode="rts") as link:
            await link.write(REQUEST)

    asyncio.run(scenario())
    events = after_open(port)
    written, released = events[2][0], events[4][0]
    assert released - written >= timing.frame_time(len(REQUEST), DLT645_8E1)


def test_rts_mode_opens_the_port_with_the_transmitter_off(make_port):
    port = make_port()
    asyncio.run(link_on(port, mode="rts").open())
    first_rts = next((what, value) for _, what, value in port.events if what.startswith("rts"))
    assert first_rts == ("rts-before-open", False)


def test_rts_levels_can_be_inverted(make_port):
    port = make_port()

    async def scenario():
        async with link_on(port, mode="rts", rts_level_for_tx=False, rts_level_for_rx=True) as link:
            await link.write(b"\x01")

    asyncio.run(scenario())
    levels = [value for _, what, value in after_open(port) if what == "rts"]
    assert levels == [True, False, True]


def test_rts_delays_are_kept(make_port):
    port = make_port()

    async def scenario():
        async with link_on(port, mode="rts", delay_before_tx=0.02, delay_before_rx=0.03) as link:
            await link.write(b"\x01")
            return time.monotonic()

    returned = asyncio.run(scenario())
    events = after_open(port)
    tx_on, written, released = events[1][0], events[2][0], events[4][0]
    assert written - tx_on >= 0.02
    assert returned - released >= 0.03  # write() returns once the bus is ours to listen on


def test_without_direction_control_rts_is_left_alone(make_port):
    port = make_port()

    async def scenario():
        async with link_on(port) as link:
            await link.write(REQUEST)

    asyncio.run(scenario())
    assert [what for _, what, _ in after_open(port)] == ["write"]


def test_real_port_refusing_rts_fails_to_open(make_port):
    port = make_port(refuse_rts=True)

    with pytest.raises(LinkError) as info:
        asyncio.run(link_on(port, mode="rts").open())
    message = str(info.value)
    assert message.startswith("cannot set RS485 direction control 'rts' on fake://rs485: [Errno 25]")
    assert "\n" not in message
    assert not port.is_open


def test_kernel_mode_needs_a_local_serial_device(make_port):
    with pytest.raises(LinkError, match="kernel RS485 direction control on fake://rs485"):
        asyncio.run(link_on(make_port(), mode="kernel").open())


def test_real_port_refusing_the_format_fails_to_open(make_port):
    port = make_port(refuse={"parity": "E"})

    with pytest.raises(LinkError) as info:
        asyncio.run(link_on(port).open())
    assert str(info.value) == "cannot open fake://rs485: [Errno 22] Invalid argument"


def test_refused_settings_switch_names_the_port_and_keeps_the_old_format(make_port):
    port = make_port(refuse={"parity": "E"})

    async def scenario():
        async with link_on(port, settings=SerialSettings(9600, 8, "N", 1)) as link:
            with pytest.raises(LinkError, match=r"^cannot set fake://rs485 to 2400 8E1: \[Errno 22\]"):
                await link.apply_settings(DLT645_8E1)
            refused = link.settings, link.wire_settings
            # pyserial would keep parity E and fail every later change; the link undid it
            await link.apply_settings(SerialSettings(19200, 8, "N", 1))
            return refused, link.wire_settings

    (settings, wire), later = asyncio.run(scenario())
    assert settings == wire == SerialSettings(9600, 8, "N", 1)
    assert later == SerialSettings(19200, 8, "N", 1)
    assert port.parity == "N"


def test_polled_read_returns_what_arrived(make_port):
    port = make_port()

    async def scenario():
        async with link_on(port) as link:
            port.rx += b"\x68\x16"
            return await link.read(1.0), await link.read(0.02)

    assert asyncio.run(scenario()) == (b"\x68\x16", b"")
