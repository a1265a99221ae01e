"""SerialLink on a real pseudo-terminal: the virtual bus every simulator and CI run uses."""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import tty

import pytest

from meterhub.errors import LinkError
from meterhub.model import SerialSettings
from meterhub.channels.serial import Rs485Options, SerialLink, is_pty_fd, is_pty_path

DLT645_8E1 = SerialSettings(2400, 8, "E", 1)
MODBUS_8N1 = SerialSettings(9600, 8, "N", 1)
LOGGER = "meterhub.channels.serial"



def warnings_from_link(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_the_peer_is_recognised_as_a_pty(peer):
    assert is_pty_path(peer.path)
    assert is_pty_fd(peer.slave)


def test_a_regular_file_is_not_a_pty(tmp_path):
    plain = tmp_path / "ttyUSB0"
    plain.write_bytes(b"")
    assert not is_pty_path(str(plain))


def test_even_parity_on_a_pty_opens_with_one_warning(peer, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            await link.write(b"x\n")
            await link.read(0.01)
            await link.apply_settings(DLT645_8E1)
            return link.settings, link.wire_settings, link.is_virtual

    settings, wire, virtual = asyncio.run(scenario())
    assert settings == DLT645_8E1  # what was asked for is still what the link reports
    assert wire == SerialSettings(2400, 8, "N", 1)
    assert virtual
    warnings = warnings_from_link(caplog)
    assert len(warnings) == 1
    assert peer.path in warnings[0].getMessage() and "parity" in warnings[0].getMessage()


def test_no_warning_when_the_pty_can_carry_the_format(peer, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario():
        async with SerialLink("bus1", peer.path, MODBUS_8N1):
            pass

    asyncio.run(scenario())
    assert warnings_from_link(caplog) == []


def test_reopening_a_pty_already_at_the_asked_speed_works(peer):
    # pyserial's tcsetattr would then change only PARENB, which the kernel rejects (EINVAL).
    async def scenario():
        for _ in range(2):
            async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
                await link.write(b"hi\n")

    asyncio.run(scenario())
    peer.wait_received(6)  # the peer's thread reads in its own time
    assert bytes(peer.received) == b"hi\nhi\n"


def test_a_symlink_to_a_pty_is_treated_as_one(peer, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    alias = tmp_path / "ttyMETER"
    alias.symlink_to(peer.path)

    async def scenario():
        async with SerialLink("bus1", str(alias), DLT645_8E1) as link:
            return link.is_virtual

    assert asyncio.run(scenario())
    assert len(warnings_from_link(caplog)) == 1


def test_read_returns_what_the_peer_wrote(peer, read_exactly):
    frame = bytes.fromhex("68 AA AA AA AA AA AA 68 13 00 DF 16")

    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            peer.send(frame)
            return await read_exactly(link, len(frame))

    assert asyncio.run(scenario()) == frame


def test_read_returns_everything_already_buffered_at_once(peer):
    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            peer.send(b"0123456789")
            peer.wait_buffered(10)
            return await link.read(1.0)

    assert asyncio.run(scenario()) == b"0123456789"


def test_read_timeout_returns_empty_bytes(peer):
    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            return await link.read(0.05)

    assert asyncio.run(scenario()) == b""


def test_write_reaches_the_peer(peer):
    frame = b"\xfe\xfe\x68\x00\x16\n"

    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            await link.write(frame)

    asyncio.run(scenario())
    peer.wait_received(len(frame))
    assert bytes(peer.received) == frame


def test_reset_input_drops_stale_bytes(peer, read_exactly):
    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            peer.send(b"stale")
            peer.wait_buffered(5)
            await link.reset_input()
            peer.send(b"fresh")
            return await read_exactly(link, 5)

    assert asyncio.run(scenario()) == b"fresh"


def test_apply_settings_switches_speed_and_parity_on_a_pty(peer, caplog, read_exactly):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario():
        speeds = []
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            for settings in (MODBUS_8N1, SerialSettings(9600, 8, "E", 1), DLT645_8E1, SerialSettings(4800, 8, "O", 2)):
                await link.apply_settings(settings)
                assert link.settings == settings
                speeds.append(termios.tcgetattr(peer.slave)[4])  # the pty's real ispeed
            peer.send(b"still alive")
            return speeds, await read_exactly(link, 11)

    speeds, data = asyncio.run(scenario())
    assert speeds == [termios.B9600, termios.B9600, termios.B2400, termios.B4800]
    assert data == b"still alive"
    assert len(warnings_from_link(caplog)) == 1  # one per link, not one per switch


def test_apply_settings_before_open_is_used_at_open(peer):
    async def scenario():
        link = SerialLink("bus1", peer.path, DLT645_8E1)
        await link.apply_settings(MODBUS_8N1)
        async with link:
            return termios.tcgetattr(peer.slave)[4]

    assert asyncio.run(scenario()) == termios.B9600


def test_nonexistent_port_is_a_one_line_link_error(tmp_path):
    missing = str(tmp_path / "ttyUSB9")

    async def scenario():
        await SerialLink("bus1", missing, DLT645_8E1).open()

    with pytest.raises(LinkError) as info:
        asyncio.run(scenario())
    assert str(info.value) == f"cannot open {missing}: [Errno 2] No such file or directory"


def test_a_second_program_on_the_same_port_is_refused(peer):
    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1):
            await SerialLink("bus2", peer.path, DLT645_8E1).open()

    with pytest.raises(LinkError, match=f"cannot open {peer.path}: in use"):
        asyncio.run(scenario())


def test_shared_access_can_be_allowed(peer):
    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1, exclusive=False):
            async with SerialLink("bus2", peer.path, DLT645_8E1, exclusive=False) as second:
                return second.is_open

    assert asyncio.run(scenario())


def test_peer_hang_up_turns_into_link_error(peer):
    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            peer.hang_up()
            await link.read(1.0)

    with pytest.raises(LinkError, match=f"read from {peer.path} failed"):
        asyncio.run(scenario())


def test_io_on_a_closed_link_is_a_link_error(peer):
    async def scenario():
        link = SerialLink("bus1", peer.path, DLT645_8E1)
        await link.open()
        await link.close()
        await link.write(b"x")

    with pytest.raises(LinkError, match="is not open"):
        asyncio.run(scenario())


def _raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def test_a_write_larger_than_the_kernel_buffer_waits_for_room_and_arrives_whole():
    # Writes go from the event loop; when the far end is slow the loop waits for room
    # instead of blocking, and nothing is lost or reordered.
    master, slave, path = _raw_pty()
    data = bytes(range(256)) * 256  # 64 KiB: many times a pty's buffer
    received = bytearray()

    async def scenario() -> None:
        async with SerialLink("bus1", path, MODBUS_8N1) as link:
            writing = asyncio.create_task(link.write(data))
            await asyncio.sleep(0.05)
            assert not writing.done()  # the buffer is full and nobody reads
            loop = asyncio.get_running_loop()
            while len(received) < len(data):
                received.extend(await loop.run_in_executor(None, os.read, master, 65536))
            await asyncio.wait_for(writing, 5.0)

    try:
        asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)
    assert bytes(received) == data


def test_close_fails_a_write_that_waits_for_room():
    master, slave, path = _raw_pty()

    async def scenario() -> BaseException | None:
        link = SerialLink("bus1", path, MODBUS_8N1)
        await link.open()
        writing = asyncio.create_task(link.write(b"x" * 65536))
        await asyncio.sleep(0.05)
        await link.close()
        try:
            await asyncio.wait_for(writing, 5.0)
        except LinkError as exc:
            return exc
        return None

    try:
        outcome = asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)
    assert isinstance(outcome, LinkError) and "closed" in str(outcome)


def test_close_wakes_a_pending_read(peer):
    async def scenario():
        link = SerialLink("bus1", peer.path, DLT645_8E1)
        await link.open()
        pending = asyncio.create_task(link.read(30.0))
        await asyncio.sleep(0.02)
        await link.close()
        return await asyncio.wait_for(pending, 5.0)

    assert asyncio.run(scenario()) == b""


@pytest.mark.parametrize("mode", ["rts", "kernel"])
def test_direction_control_on_a_pty_warns_once_and_carries_on(peer, caplog, mode, read_exactly):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def scenario():
        async with SerialLink("bus1", peer.path, MODBUS_8N1, rs485=Rs485Options(mode=mode)) as link:
            await link.write(b"a\n")
            await link.apply_settings(DLT645_8E1)  # pyserial must not retry the refused ioctl
            await link.write(b"b\n")
            peer.send(b"ok")
            return link.direction, await read_exactly(link, 2)

    direction, data = asyncio.run(scenario())
    assert (direction, data) == ("none", b"ok")
    direction_warnings = [r for r in warnings_from_link(caplog) if "direction" in r.getMessage() or "RTS" in r.getMessage()]
    assert len(direction_warnings) == 1
    assert mode in direction_warnings[0].getMessage()
