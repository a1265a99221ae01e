"""End to end: meterhub's Bus running transactions through a SerialLink on a real pty."""

from __future__ import annotations

import asyncio

import pytest

from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import ChecksumError, MeterTimeout
from meterhub.model import SerialSettings
from meterhub.channels.serial import SerialLink

DLT645_8E1 = SerialSettings(2400, 8, "E", 1)
MODBUS_8N1 = SerialSettings(9600, 8, "N", 1)


class LineDecoder:
    """A trivial stream decoder: frames end with ``\\n``; a line starting ``!`` is corrupt."""

    def __init__(self) -> None:
        self.skipped = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[object]:
        self._buf += data
        found: list[object] = []
        while b"\n" in self._buf:
            line, _, rest = bytes(self._buf).partition(b"\n")
            self._buf[:] = rest
            found.append(ChecksumError(f"bad line {line!r}") if line.startswith(b"!") else line)
        return found

    @property
    def pending(self) -> int:
        return len(self._buf)


def test_a_transaction_gets_the_answer(peer):
    peer.answer = lambda line: b"re:" + line + b"\n"

    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            return await HalfDuplexChannel("bus1", link).transact(b"read 1-0:1.8.0\n", LineDecoder(), timeout=2.0)

    exchange = asyncio.run(scenario())
    assert exchange.frame == b"re:read 1-0:1.8.0"
    assert exchange.rejected == ()


def test_transactions_at_mixed_settings_share_one_pty(peer):
    peer.answer = lambda line: line.upper() + b"\n"

    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            bus = HalfDuplexChannel("bus1", link)
            first = await bus.transact(b"dlt\n", LineDecoder(), timeout=2.0)
            second = await bus.transact(b"modbus\n", LineDecoder(), timeout=2.0, settings=MODBUS_8N1)
            third = await bus.transact(b"dlt again\n", LineDecoder(), timeout=2.0, settings=DLT645_8E1)
            return [first.frame, second.frame, third.frame], link.settings

    frames, settings = asyncio.run(scenario())
    assert frames == [b"DLT", b"MODBUS", b"DLT AGAIN"]
    assert settings == DLT645_8E1


def test_stale_bytes_before_a_request_are_not_taken_for_its_answer(peer):
    peer.answer = lambda line: b"fresh\n"

    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            peer.send(b"stale\n")
            peer.wait_buffered(6)
            return await HalfDuplexChannel("bus1", link).transact(b"q\n", LineDecoder(), timeout=2.0)

    assert asyncio.run(scenario()).frame == b"fresh"


def test_a_silent_meter_is_a_timeout(peer):
    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            await HalfDuplexChannel("bus1", link).transact(b"anyone?\n", LineDecoder(), timeout=0.1)

    with pytest.raises(MeterTimeout):
        asyncio.run(scenario())


def test_a_corrupt_answer_is_reported_as_such(peer):
    peer.answer = lambda line: b"!garbled\n"

    async def scenario():
        async with SerialLink("bus1", peer.path, DLT645_8E1) as link:
            await HalfDuplexChannel("bus1", link).transact(b"q\n", LineDecoder(), timeout=0.3)

    with pytest.raises(ChecksumError):
        asyncio.run(scenario())
