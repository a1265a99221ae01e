"""TcpConnector against a real asyncio server on 127.0.0.1: bytes both ways, timeouts,
the far end hanging up or resetting, a refused port, the socket options."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from meterhub.errors import LinkError
from meterhub_gprs.stream import ConnectFailed, ConnectionLost, TcpConnector, TcpStream

pytestmark = pytest.mark.timeout(30)


def test_bytes_arrive_exactly_both_ways(kit):
    async def scenario():
        async with kit.server() as server:
            stream = await TcpConnector(*server.address).connect()
            await stream.send(kit.TRICKY)
            back = await kit.receive_exactly(stream, len(kit.TRICKY))
            await stream.close()
            return server.got, back

    got, back = asyncio.run(scenario())
    assert got == back == kit.TRICKY


def test_nothing_arriving_is_an_empty_answer_after_the_timeout(kit):
    async def scenario():
        async with kit.server() as server:
            stream = await TcpConnector(*server.address).connect()
            loop = asyncio.get_running_loop()
            started = loop.time()
            data = await stream.receive(0.2)
            waited = loop.time() - started
            await stream.close()
            return data, waited

    data, waited = asyncio.run(scenario())
    assert data == b""
    assert waited >= 0.19


def test_the_master_hanging_up_is_a_lost_connection_after_its_last_words(kit):
    async def scenario():
        async with kit.server(echo=False) as server:
            stream = await TcpConnector(*server.address).connect()
            assert await server.wait_connected()
            await server.send(b"\x68bye\x16")
            await server.hang_up()
            got = await kit.receive_exactly(stream, 5)
            with pytest.raises(ConnectionLost, match="closed it"):
                await stream.receive(1.0)
            with pytest.raises(ConnectionLost):
                await stream.send(b"x")
            await stream.close()
            return got

    assert asyncio.run(scenario()) == b"\x68bye\x16"


def test_a_reset_connection_is_lost():
    async def scenario():
        async def reset(reader, writer):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            writer.transport.abort()

        server = await asyncio.start_server(reset, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stream = await TcpConnector("127.0.0.1", port).connect()
        with pytest.raises(ConnectionLost):
            for _ in range(50):  # the RST may come after a first successful write
                await stream.send(b"x" * 1000)
                await stream.receive(0.05)
        await stream.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_a_port_nobody_listens_on_is_refused_with_a_hint():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectFailed, match=rf"cannot connect to 127.0.0.1:{port}: .*nothing listens"):
        asyncio.run(TcpConnector("127.0.0.1", port, connect_timeout=2).connect())
    assert issubclass(ConnectFailed, LinkError)


def test_keepalive_is_on_and_nagle_off(kit):
    async def scenario():
        async with kit.server() as server:
            stream = await TcpConnector(*server.address).connect()
            assert isinstance(stream, TcpStream)
            sock = stream._writer.get_extra_info("socket")
            options = (
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            )
            await stream.close()
            return options

    nodelay, keepalive = asyncio.run(scenario())
    assert nodelay and keepalive


def test_close_is_idempotent_and_a_closed_stream_is_unusable(kit):
    async def scenario():
        async with kit.server() as server:
            stream = await TcpConnector(*server.address).connect()
            await stream.close()
            await stream.close()
            with pytest.raises(ConnectionLost, match="closed"):
                await stream.send(b"x")
            with pytest.raises(ConnectionLost, match="closed"):
                await stream.receive(0.1)
            assert await server.wait_for(lambda: server.closed[-1])

    asyncio.run(scenario())


def test_describe_names_the_far_end():
    assert TcpConnector("master.example", 7000).describe() == "tcp master.example:7000"


@pytest.mark.parametrize(
    ("args", "kwargs", "said"),
    [(("", 1), {}, "host"), (("h", 0), {}, "port"), (("h", 70000), {}, "port"), (("h", 1), {"connect_timeout": 0}, "connect_timeout")],
)
def test_bad_settings_are_refused(args, kwargs, said):
    with pytest.raises(ValueError, match=said):
        TcpConnector(*args, **kwargs)
