"""SerialLink over pyserial URLs without a file descriptor: socket:// and loop://."""

from __future__ import annotations

import asyncio
import socket

import pytest

from meterhub.errors import LinkError
from meterhub.model import SerialSettings
from meterhub.channels.serial import SerialLink

SETTINGS = SerialSettings(9600, 8, "N", 1)



def test_socket_url_talks_to_a_tcp_peer(tcp_peer, read_exactly):
    async def scenario():
        async with SerialLink("gw", tcp_peer.url, SETTINGS) as link:
            await link.write(b"ping\n")
            return await read_exactly(link, len(b"re:ping\n"))

    assert asyncio.run(scenario()) == b"re:ping\n"


def test_socket_read_timeout_returns_empty_bytes(tcp_peer):
    async def scenario():
        async with SerialLink("gw", tcp_peer.url, SETTINGS) as link:
            return await link.read(0.05)

    assert asyncio.run(scenario()) == b""


def test_socket_reset_input_drops_an_unread_answer(tcp_peer, read_exactly):
    async def scenario():
        async with SerialLink("gw", tcp_peer.url, SETTINGS) as link:
            await link.write(b"old\n")
            first = await link.read(2.0)  # the answer has started to arrive
            await asyncio.sleep(0.05)
            await link.reset_input()
            await link.write(b"new\n")
            return first, await read_exactly(link, len(b"re:new\n"))

    first, answer = asyncio.run(scenario())
    assert first and b"re:old\n".startswith(first)
    assert answer == b"re:new\n"


def test_refused_socket_is_a_link_error_naming_the_url():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nobody listens there
    url = f"socket://127.0.0.1:{port}"

    with pytest.raises(LinkError) as info:
        asyncio.run(SerialLink("gw", url, SETTINGS).open())
    assert str(info.value) == f"cannot open {url}: [Errno 111] Connection refused"


def test_loop_url_echoes_what_is_written(read_exactly):
    async def scenario():
        async with SerialLink("loop", "loop://", SETTINGS) as link:
            await link.write(b"\x01\x03\x00\x00\x00\x02\xc4\x0b")
            return await read_exactly(link, 8)

    assert asyncio.run(scenario()) == b"\x01\x03\x00\x00\x00\x02\xc4\x0b"


def test_loop_settings_switch_is_recorded():
    async def scenario():
        async with SerialLink("loop", "loop://", SETTINGS) as link:
            await link.apply_settings(SerialSettings(2400, 8, "E", 1))
            return link.settings, link.wire_settings, link.is_virtual

    settings, wire, virtual = asyncio.run(scenario())
    assert settings == wire == SerialSettings(2400, 8, "E", 1)
    assert not virtual


def test_a_cancelled_read_does_not_swallow_the_next_answer(read_exactly):
    async def scenario():
        async with SerialLink("loop", "loop://", SETTINGS) as link:
            waiting = asyncio.create_task(link.read(30.0))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await link.write(b"answer")
            return await read_exactly(link, 6)

    assert asyncio.run(scenario()) == b"answer"


def test_unknown_url_scheme_is_a_link_error():
    with pytest.raises(LinkError, match=r"^cannot open nosuch://x: invalid URL, protocol 'nosuch' not known$"):
        asyncio.run(SerialLink("bus", "nosuch://x", SETTINGS).open())
