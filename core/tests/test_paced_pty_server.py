"""The serving loop the device simulators share: timers, paced output, a handler that fails.

A toy device (:class:`Toy`) answers ``ping`` with ``pong`` a little later and raises on
``boom``; what it sends goes through :meth:`PacedPtyServer._emit` like a real sim's replies.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Iterator

import pytest

from meterhub import timing
from meterhub.model import SerialSettings
from meterhub.simulator import CHUNK_INTERVAL_S, PacedChunk, PacedPtyServer

LINE = SerialSettings(9600, 8, "N", 1)
ANSWER_DELAY_S = 0.02


class Toy(PacedPtyServer):
    """Answers ``ping`` with ``pong`` :data:`ANSWER_DELAY_S` after the request's end;
    ``boom`` raises in the handler; an ``_outgoing`` hook upper-cases tagged chunks."""

    POLL_S = 0.01
    LABEL = "toy"

    def __init__(self) -> None:
        super().__init__()
        self.received: list[bytes] = []

    def _receive(self, data: bytes) -> None:
        self._now = self._arrived(len(data), time.monotonic(), LINE)
        self.received.append(data)
        self._guarded("handling", data, self._handle, data)

    def _handle(self, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("simulated handler bug")
        if data == b"ping":
            self._after(ANSWER_DELAY_S, lambda: self._emit(b"pong", self._now, LINE, frame=True))

    def _outgoing(self, chunk: PacedChunk) -> bytes:
        return chunk.data.upper() if chunk.tag == "shout" else chunk.data


@pytest.fixture
def toy() -> Iterator[tuple[Toy, int]]:
    with Toy() as server:
        fd = os.open(server.path, os.O_RDWR | os.O_NOCTTY)
        try:
            yield server, fd
        finally:
            os.close(fd)


def read_until(fd: int, size: int, timeout: float = 2.0) -> list[tuple[float, bytes]]:
    """(arrival time, bytes) of each read until ``size`` bytes came or ``timeout``."""
    reads: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout
    while sum(len(d) for _, d in reads) < size and time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if readable:
            data = os.read(fd, 4096)
            reads.append((time.monotonic(), data))
    return reads


def schedule(server: Toy, delay: float, action) -> tuple[float, object]:
    """Set a timer as a handler would, from now; returns (now, timer)."""
    with server._lock:
        server._now = time.monotonic()
        return server._now, server._after(delay, action)


def wait_for(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_timer_runs_at_its_time(toy):
    server, _ = toy
    fired: list[float] = []
    start, _ = schedule(server, 0.1, lambda: fired.append(time.monotonic()))
    assert wait_for(lambda: fired)
    assert fired[0] >= start + 0.1


def test_a_cancelled_timer_does_not_run(toy):
    server, _ = toy
    fired: list[str] = []
    _, timer = schedule(server, 0.05, lambda: fired.append("cancelled"))
    timer.cancelled = True
    schedule(server, 0.1, lambda: fired.append("kept"))
    assert wait_for(lambda: fired)
    time.sleep(0.05)
    assert fired == ["kept"]


def test_timers_due_together_run_in_the_order_set(toy):
    server, _ = toy
    fired: list[int] = []
    with server._lock:
        server._now = time.monotonic()
        for n in range(5):
            server._after(0.05, lambda n=n: fired.append(n))
    assert wait_for(lambda: len(fired) == 5)
    assert fired == [0, 1, 2, 3, 4]


def test_a_timer_sees_its_due_time_as_now(toy):
    server, _ = toy
    seen: list[float] = []
    start, _ = schedule(server, 0.05, lambda: seen.append(server._now))
    assert wait_for(lambda: seen)
    assert seen == [start + 0.05]


def test_output_is_cut_into_chunks_due_at_the_character_time():
    server = Toy()  # not started: the queue alone
    data = bytes(range(40))
    end = server._emit(data, 100.0, LINE, frame=True)
    step = int(CHUNK_INTERVAL_S / timing.char_time(LINE))
    queued = sorted(server._out)
    chunks = [chunk for _, _, chunk in queued]
    assert b"".join(c.data for c in chunks) == data
    assert all(len(c.data) == step for c in chunks[:-1])
    assert [due for due, _, _ in queued] == [
        100.0 + timing.frame_time(min(i + step, len(data)), LINE) for i in range(0, len(data), step)
    ]
    assert [c.ends_frame for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert end == server._line_free_at == 100.0 + timing.frame_time(len(data), LINE)


def test_a_second_message_waits_for_the_line_but_an_echo_does_not():
    server = Toy()
    first_end = server._emit(b"first", 100.0, LINE, frame=True)
    second_end = server._emit(b"second", 100.0, LINE, frame=True)
    assert second_end == first_end + timing.frame_time(6, LINE)
    echo_end = server._emit(b"echo", 100.0, LINE, frame=False, occupy=False)
    assert echo_end == 100.0 + timing.frame_time(4, LINE)
    assert server._line_free_at == second_end


def test_chunks_are_written_in_order_over_their_wire_time(toy):
    server, fd = toy
    data = bytes(range(0x30, 0x30 + 60))  # 250 ms at 2400 Bd
    with server._lock:
        start = time.monotonic()
        end = server._emit(data, start, SerialSettings(2400, 8, "N", 1), frame=True)
    reads = read_until(fd, len(data))
    assert b"".join(d for _, d in reads) == data
    assert reads[-1][0] >= end
    assert len(reads) > 1  # paced, not one burst
    assert wait_for(lambda: server.frames_out == 1 and server.bytes_out == len(data))


def test_a_request_is_answered_after_its_wire_time_and_the_delay(toy):
    _, fd = toy
    sent = time.monotonic()
    os.write(fd, b"ping")
    reads = read_until(fd, 4)
    assert b"".join(d for _, d in reads) == b"pong"
    earliest = sent + timing.frame_time(4, LINE) + ANSWER_DELAY_S + timing.frame_time(4, LINE)
    assert reads[-1][0] >= earliest - 0.002  # the sim's clock started a moment after ours


def test_a_subclass_may_change_a_chunk_before_it_is_written(toy):
    server, fd = toy
    with server._lock:
        server._emit(b"quiet", time.monotonic(), LINE, frame=False, tag="shout")
    assert b"".join(d for _, d in read_until(fd, 5)) == b"QUIET"


def test_a_handler_that_raises_is_logged_and_the_loop_goes_on(toy, caplog):
    server, fd = toy
    with caplog.at_level(logging.ERROR, logger="meterhub.simulator"):
        os.write(fd, b"boom")
        assert wait_for(lambda: server.received == [b"boom"])
        os.write(fd, b"ping")
        assert b"".join(d for _, d in read_until(fd, 4)) == b"pong"
    assert any("toy" in r.getMessage() and "handling b'boom' failed" in r.getMessage() for r in caplog.records)
    assert server.running


def test_a_timer_that_raises_is_logged_and_the_loop_goes_on(toy, caplog):
    server, _ = toy
    fired: list[str] = []

    def bug() -> None:
        raise RuntimeError("simulated timer bug")

    with caplog.at_level(logging.ERROR, logger="meterhub.simulator"):
        schedule(server, 0.01, bug)
        schedule(server, 0.03, lambda: fired.append("after"))
        assert wait_for(lambda: fired)
    assert any("timer" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)


def test_output_nobody_reads_is_dropped_not_fatal(caplog):
    with Toy() as server, caplog.at_level(logging.DEBUG, logger="meterhub.simulator"):
        fd = os.open(server.path, os.O_RDWR | os.O_NOCTTY)  # opened, never read
        try:
            with server._lock:
                # twice what the pty buffers, about 0.4 s on the wire
                server._emit(b"x" * 40_000, time.monotonic(), SerialSettings(921600, 8, "N", 1), frame=True)
            assert server._wait_idle(10.0, 0.01)
        finally:
            os.close(fd)
        assert server.running
    assert server.bytes_out < 40_000 and server.frames_out == 1
    assert any("client not reading" in r.getMessage() for r in caplog.records)


def test_wait_idle_waits_for_the_queue_and_the_subclass(toy):
    server, fd = toy
    with server._lock:
        server._emit(b"abc", time.monotonic() + 0.05, LINE, frame=True)
    assert not server._wait_idle(0.01, 0.005)
    assert server._wait_idle(2.0, 0.005)
    assert not server._wait_idle(0.02, 0.005, lambda: False)
    read_until(fd, 3)
