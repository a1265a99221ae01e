"""The seam between the Q/GDW 1376.1 uplink and whatever carries its bytes.

The uplink talks to the master station over a :class:`ByteStream` it gets from a
:class:`Connector`: a cellular modem driven by AT commands (:mod:`meterhub_gprs.modem`)
or plain TCP for a concentrator on Ethernet (:class:`TcpConnector`, here). The uplink
owns reconnection: when a stream raises :class:`ConnectionLost` it closes it and calls
``connect()`` again after its own back-off; a connector never retries by itself.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Protocol

from meterhub.errors import LinkError

log = logging.getLogger(__name__)

#: Largest single read handed back by a stream: one TCP window's worth is plenty for
#: 1376.1 frames (a frame's length field tops out at 16383 bytes).
MAX_READ = 65536

#: TCP keepalive for an idle uplink. Carrier NATs drop idle mappings after a few minutes
#: (often 5, sometimes 2); a probe after 60 s idle, then every 20 s, 3 unanswered, finds a
#: dead path in two minutes while costing a few hundred bytes an hour.
KEEPALIVE_IDLE_S = 60
KEEPALIVE_INTERVAL_S = 20
KEEPALIVE_PROBES = 3

#: Default bound on establishing a TCP connection: a SYN is retried at 1, 3, 7, 15 s on
#: Linux, so 20 s covers four tries before the uplink's own back-off takes over.
DEFAULT_CONNECT_TIMEOUT_S = 20.0

#: How long close() waits for the peer to take the FIN before dropping the socket.
CLOSE_TIMEOUT_S = 2.0


class ConnectionLost(LinkError):
    """The far end or the network dropped the connection: the stream is of no further use."""


class ConnectFailed(LinkError):
    """The link itself works but the master station could not be reached (refused, no
    route, a name that does not resolve, no answer in time)."""


class ByteStream(Protocol):
    """An open, reliable, ordered byte stream to the master station."""

    async def send(self, data: bytes) -> None:
        """Hand ``data`` to the connection; raises :class:`ConnectionLost` once it is gone."""
        ...

    async def receive(self, timeout: float) -> bytes:
        """What arrived, as soon as there is at least one byte; ``b""`` after ``timeout``.

        Bytes that arrived before the connection dropped are returned first; after them,
        :class:`ConnectionLost` is raised (and again on every later call)."""
        ...

    async def close(self) -> None:
        """Close the connection and whatever the stream holds (idempotent, never raises
        a link error: closing is cleanup)."""
        ...


class Connector(Protocol):
    """Makes :class:`ByteStream` s to one master station over one medium."""

    async def connect(self) -> ByteStream:
        """Bring the medium up and connect; raises a :class:`LinkError` subclass whose
        message is one line a user can act on. Leaves nothing open when it fails."""
        ...

    def describe(self) -> str:
        """One line naming the medium and the far end, for logs and status."""
        ...


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"the name does not resolve ({exc.strerror or exc})"
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return " ".join(str(exc).split()) or type(exc).__name__


def configure_socket(sock: socket.socket) -> None:
    """No Nagle (a 1376.1 frame goes out at once, it is not waiting for more) and TCP
    keepalive with the probes above, where the platform has the knobs."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class TcpStream:
    """A :class:`ByteStream` over an asyncio TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        self._reader = reader
        self._writer = writer
        self.peer = peer
        self._lost: ConnectionLost | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<TcpStream {self.peer}{' lost' if self._lost else ''}>"

    def _gone(self, why: str, cause: BaseException | None = None) -> ConnectionLost:
        if self._lost is None:
            self._lost = ConnectionLost(f"connection to {self.peer} lost: {why}")
            self._lost.__cause__ = cause
            log.info("%s", self._lost)
        return self._lost

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionLost(f"connection to {self.peer} is closed")
        if self._lost is not None:
            raise self._lost
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise self._gone(_reason(exc), exc) from exc

    async def receive(self, timeout: float) -> bytes:
        if self._closed:
            raise ConnectionLost(f"connection to {self.peer} is closed")
        if self._lost is not None:
            raise self._lost
        try:
            # Cancelling StreamReader.read loses nothing: bytes leave its buffer only
            # when read() returns them.
            data = await asyncio.wait_for(self._reader.read(MAX_READ), max(timeout, 0.0))
        except TimeoutError:
            return b""
        except (ConnectionError, OSError) as exc:
            raise self._gone(_reason(exc), exc) from exc
        if not data:
            raise self._gone("the master station closed it")
        return data

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.debug("closing %s: %s", self.peer, _reason(exc))


class TcpConnector:
    """Plain TCP to the master station, for concentrators with Ethernet."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        if not host:
            raise ValueError("host must not be empty")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, not {port!r}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, not {connect_timeout!r}")
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"<TcpConnector {self.describe()}>"

    def describe(self) -> str:
        return f"tcp {self.host}:{self.port}"

    async def connect(self) -> TcpStream:
        where = f"{self.host}:{self.port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except TimeoutError:
            raise ConnectFailed(
                f"cannot connect to {where}: no answer within {self.connect_timeout:g} s "
                "(check the address, the route and any firewall)"
            ) from None
        except OSError as exc:
            hint = ""
            if getattr(exc, "errno", None) == errno.ECONNREFUSED:
                hint = " (nothing listens on that port: is the master station running?)"
            raise ConnectFailed(f"cannot connect to {where}: {_reason(exc)}{hint}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                configure_socket(sock)
            except OSError as exc:  # an exotic socket without the options: still usable
                log.warning("%s: cannot set keepalive/no-delay: %s", where, _reason(exc))
        return TcpStream(reader, writer, where)
