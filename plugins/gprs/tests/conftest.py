"""Peers for the stream tests: a real asyncio TCP server on 127.0.0.1 that records (and
by default echoes) what it gets, simulated modems on pseudo-terminals, and timeouts short
enough for CI but not tight (the machines are small and shared).

The test files reach the helpers through the ``kit`` fixture (the suites run in
importlib mode, where a conftest is not importable by name)."""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from meterhub_gprs.modem import ModemConnector, ModemTimeouts
from meterhub_gprs.modem_sim import ModemSim

#: Every step bounded well below a test's budget, with headroom for a loaded CI box.
FAST = ModemTimeouts(
    command=1.0,
    sync_interval=0.1,
    sync_attempts=10,
    sim_ready=1.0,
    registration=1.0,
    registration_poll=0.05,
    attach=1.0,
    activate=2.0,
    open=2.0,
    send=2.0,
    close=1.0,
    deactivate=1.0,
    escape_guard=0.15,
    drop_silence=0.15,
)

#: The simulator's +++ guard: shorter than the driver's, as a real modem's S12 would be.
SIM_GUARD = 0.1

#: How long a test waits for bytes that should come (generous: a bound, not a measure).
ARRIVAL_S = 3.0

#: Bytes that a careless modem driver would mistake for its own business: result codes,
#: URCs, the escape sequence, data headers, the prompt, Ctrl-Z and ESC, every byte value.
TRICKY = (
    b"\x68\x00\x00\x68"
    + b"\r\nOK\r\n\r\nERROR\r\n+CME ERROR: 10\r\n"
    + b"\r\nCLOSED\r\n\r\nNO CARRIER\r\n+PDP: DEACT\r\n+IPCLOSE: 0,1\r\n"
    + b'+QIURC: "closed",0\r\n+QIURC: "recv",0,5\r\n+IPD,5:+IPD12\r\n+QIRD: 3\r\n+QIRDI: 0,1,0\r\n'
    + b"+CREG: 0\r\n+CGREG: 3\r\n> \x1a\x1b+++AT+CIPCLOSE\r\n+++\r\n"
    + bytes(range(256))
    + b"\x16"
)

class RecordingServer:
    """The master station's end: records every byte per connection, echoes them back
    when ``echo`` is set, and can send or hang up on demand."""

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self.port = 0
        self.received: list[bytearray] = []  # per connection, in order
        self.closed: list[bool] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._changed = asyncio.Event()

    async def start(self) -> RecordingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=ARRIVAL_S)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def got(self) -> bytes:
        """Everything the latest connection received."""
        return bytes(self.received[-1]) if self.received else b""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        index = len(self.received)
        self.received.append(bytearray())
        self.closed.append(False)
        self._writers.append(writer)
        self._changed.set()
        try:
            while data := await reader.read(65536):
                self.received[index] += data
                self._changed.set()
                if self.echo:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed[index] = True
            self._changed.set()
            writer.close()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = ARRIVAL_S) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
        return True

    async def wait_connected(self) -> bool:
        return await self.wait_for(lambda: bool(self._writers))

    async def send(self, data: bytes) -> None:
        writer = self._writers[-1]
        writer.write(data)
        await writer.drain()

    async def hang_up(self) -> None:
        self._writers[-1].close()


@contextlib.asynccontextmanager
async def recording_server(*, echo: bool = True) -> AsyncIterator[RecordingServer]:
    server = await RecordingServer(echo=echo).start()
    try:
        yield server
    finally:
        await server.stop()


async def receive_exactly(stream: Any, count: int, timeout: float = ARRIVAL_S) -> bytes:
    """Read until ``count`` bytes came or ``timeout`` passed (then what came)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    out = bytearray()
    while len(out) < count:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        out += await stream.receive(remaining)
    return bytes(out)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., ModemSim]]:
    """Start simulated modems (fast delays, short guard time); stopped after the test."""
    started: list[ModemSim] = []

    def make(model: str = "SIM800", **kwargs: Any) -> ModemSim:
        kwargs.setdefault("escape_guard", SIM_GUARD)
        sim = ModemSim(model, **kwargs).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


def connector(sim: ModemSim, server: RecordingServer | tuple[str, int], **kwargs: Any) -> ModemConnector:
    address = server.address if isinstance(server, RecordingServer) else server
    kwargs.setdefault("apn", "cmnet")
    kwargs.setdefault("timeouts", FAST)
    return ModemConnector(sim.path, server=address, **kwargs)


@pytest.fixture
def kit() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        FAST=FAST,
        TRICKY=TRICKY,
        ARRIVAL_S=ARRIVAL_S,
        server=recording_server,
        receive_exactly=receive_exactly,
        connector=connector,
    )
