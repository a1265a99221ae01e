"""A scripted Q/GDW 1376.1 terminal (concentrator) over TCP, for tests of a master station
or head-end: it logs in, answers the master's requests with a function the test gives,
sends active reports, and keeps what it received. It speaks the core codec; it is a test's
tool, not a terminal (meterhub-gprs's ``gdw1376.1`` uplink is that).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Self

from ..protocols import gdw1376_1_data as data
from ..protocols.gdw1376_1 import (
    Afn,
    DataUnit,
    Direction,
    Frame,
    PrimaryFunction,
    SecondaryFunction,
    StreamDecoder,
    encode,
    pack_units,
)

#: How long :meth:`ScriptedTerminal.until` waits by default: a bound on what should happen
#: within a few round trips on a loaded machine, not a measure.
WAIT_S = 10.0

Respond = Callable[[Frame], Sequence[Frame]]


def uplink_frame(afn: int, units: Sequence[DataUnit], *, area: str, address: int, prm: bool, function: int,
                 seq: int, con: bool = False, master: int = 0) -> Frame:
    """A frame a terminal sends."""
    return Frame(Direction.UP, prm, function, area, address, afn, pack_units(units), master=master, seq=seq,
                 con=con)


def answer(request: Frame, afn: int, units: Sequence[DataUnit], function: int = SecondaryFunction.USER_DATA) -> Frame:
    """The terminal's answer to ``request`` (its sequence, MSA and address)."""
    return uplink_frame(afn, units, area=request.area, address=request.terminal, prm=False, function=function,
                        seq=request.seq, master=request.master)


def archive_answer(request: Frame, points: Sequence[int]) -> Frame:
    """An AFN 0A F10 answer: a DL/T 645-2007 meter at each point (address = the point)."""
    records = [data.MeterRecord(p, p, 1, None, data.MeterProtocol.DLT645_2007, f"{p:012d}") for p in points]
    return answer(request, Afn.QUERY, [data.unit([0], [10], [data.MeterArchive(records)])])


def confirm(request: Frame) -> Frame:
    """AFN 00 F1 to ``request``."""
    return answer(request, Afn.CONFIRM, [data.unit([0], [1])], SecondaryFunction.CONFIRM)


async def until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Let the event loop run until ``condition()`` is truthy and return it; fail after
    ``timeout`` seconds naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return found


class ScriptedTerminal:
    """A terminal at ``area``/``address`` on ``host``:``port``: ``async with`` logs it in
    (and waits for the confirm); it answers each request with ``respond(request)``;
    ``requests`` and ``confirms`` keep what the master sent."""

    def __init__(self, port: int, respond: Respond | None = None, *, area: str = "3201", address: int = 1,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.area = area
        self.address = address
        self.respond: Respond = respond or (lambda request: ())
        self.requests: list[Frame] = []
        self.confirms: list[Frame] = []
        self._decoder = StreamDecoder()
        self._task: asyncio.Task[None] | None = None
        self._seq = 0

    async def __aenter__(self) -> Self:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self._task = asyncio.get_running_loop().create_task(self._serve())
        await self.send(self.frame(Afn.LINK, [data.unit([0], [1])], function=PrimaryFunction.LINK_TEST))
        await until(lambda: self.confirms, "the login's confirm")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    def frame(self, afn: int, units: Sequence[DataUnit], *, function: int = PrimaryFunction.USER_DATA) -> Frame:
        """A frame this terminal starts (PRM = 1, CON = 1), with its next PSEQ."""
        seq, self._seq = self._seq, (self._seq + 1) % 16
        return uplink_frame(afn, units, area=self.area, address=self.address, prm=True, function=function, seq=seq,
                            con=True)

    async def send(self, frame: Frame | bytes) -> None:
        self.writer.write(frame if isinstance(frame, bytes) else encode(frame))
        await self.writer.drain()

    async def report(self, afn: int, units: Sequence[DataUnit], *, wait: bool = True) -> None:
        """An active report; with ``wait``, until the master answered it."""
        before = len(self.confirms)
        await self.send(self.frame(afn, units))
        if wait:
            await until(lambda: len(self.confirms) > before, "the report's confirm")

    async def _serve(self) -> None:
        while chunk := await self.reader.read(4096):
            for frame in self._decoder.feed(chunk):
                if not isinstance(frame, Frame):
                    continue
                if frame.prm:
                    self.requests.append(frame)
                    for reply in self.respond(frame):
                        await self.send(reply)
                else:
                    self.confirms.append(frame)


__all__ = ["WAIT_S", "ScriptedTerminal", "answer", "archive_answer", "confirm", "until", "uplink_frame"]
