"""The head-end on a hostile network, over real TCP on 127.0.0.1 with a SQLite store:
oversized and lying lengths, bad checksums, garbage, half frames, slow-loris, floods,
too many connections, frames before a login, strangers, a second login for an online
terminal and downlink frames from a terminal. Each time the offender's connection is
closed by the head-end within its limit, the head-end keeps running, and a well-behaved
terminal is still served: its login and heartbeat are confirmed, and so is an active
report, which is stored."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import math
import random
import socket
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meterhub.headend import station
from meterhub.headend.server import HeadEnd
from meterhub.headend.station import MasterStation, TerminalId, terminal_name
from meterhub.model import Reading
from meterhub.plugins import get_plugins
from meterhub.protocols import gdw1376_1_data as data
from meterhub.protocols.gdw1376_1 import (
    MAX_USER_DATA,
    PROTOCOL_2013,
    START,
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
from meterhub.secrets import EnvSecrets
from meterhub.store import open_store
from meterhub.store.writer import StoreWriter

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")

AREA = "3201"
GOOD: TerminalId = (AREA, 0x0001)  #: the well-behaved terminal, "32010001"
OTHER: TerminalId = (AREA, 0x0002)  #: allowed too, and misbehaves once logged in
STRANGER: TerminalId = (AREA, 0x9999)  #: not on the allowlist
ALLOWED = [terminal_name(GOOD), terminal_name(OTHER)]

#: The limits of these tests: a connection must log in within LOGIN_S; a logged-in one is
#: closed after IDLE_PERIODS silent heartbeat periods (HEARTBEAT_S × 3 = 6 s: longer than
#: any attack here lasts, so the good terminal logged in before it stays online).
LOGIN_S = 0.5
HEARTBEAT_S = 2.0
#: How late a drop or an answer may come on a loaded machine: a bound, not a measure.
SLACK_S = 3.0


# --- a terminal over TCP ---------------------------------------------------------------------


def header(length: int) -> bytes:
    """68 L L 68 for ``length`` bytes of user data (protocol id 2: Q/GDW 376.1)."""
    field = ((length << 2) | PROTOCOL_2013).to_bytes(2, "little")
    return bytes((START,)) + field + field + bytes((START,))


def uplink(terminal: TerminalId, afn: int, units: list[DataUnit], *, seq: int, con: bool = True,
           prm: bool = True, function: int = PrimaryFunction.USER_DATA) -> Frame:
    return Frame(Direction.UP, prm, function, terminal[0], terminal[1], afn, pack_units(units), seq=seq, con=con)


def link(terminal: TerminalId, fn: int, seq: int, values: Sequence[Any] = ()) -> Frame:
    """AFN 02: F1 login, F2 logout, F3 heartbeat."""
    return uplink(terminal, Afn.LINK, [data.unit((0,), (fn,), values)], seq=seq, function=PrimaryFunction.LINK_TEST)


def report(terminal: TerminalId, seq: int, total: Decimal, minute: int) -> Frame:
    """An active report (AFN 0C F129 of p1, CON = 1): forward active energy read at 08:``minute``."""
    energy = data.TariffEnergy(datetime(2026, 12, 3, 8, minute), [total, total, Decimal(0)])
    return uplink(terminal, Afn.CLASS1, [data.unit((1,), (129,), [energy])], seq=seq)


def damaged(frame: Frame) -> bytes:
    """``frame`` with its checksum wrong."""
    raw = bytearray(encode(frame))
    raw[-2] ^= 0xFF
    return bytes(raw)


class Terminal:
    """A concentrator's end of the link: logs in, heart-beats and reports; requests of the
    head-end are skipped, confirms are matched by their RSEQ."""

    def __init__(self, port: int, terminal: TerminalId = GOOD) -> None:
        self.port = port
        self.terminal = terminal
        self.decoder = StreamDecoder()
        self.frames: list[Frame] = []
        self.pseq = 0
        self.reports = 0

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self.opened = loop.time()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    def next_seq(self) -> int:
        self.pseq = (self.pseq + 1) & 0x0F
        return self.pseq

    async def send(self, what: Frame | bytes) -> None:
        self.writer.write(encode(what) if isinstance(what, Frame) else what)
        await self.writer.drain()

    async def _more(self) -> None:
        chunk = await self.reader.read(4096)
        if not chunk:
            raise ConnectionError("the head-end closed the connection")
        self.frames += [f for f in self.decoder.feed(chunk) if isinstance(f, Frame)]

    async def confirm(self, seq: int, timeout: float = SLACK_S) -> Frame:
        """The head-end's AFN 00 answer to our frame with PSEQ ``seq``."""
        async with asyncio.timeout(timeout):
            while True:
                for frame in self.frames:
                    if frame.afn == Afn.CONFIRM and not frame.prm and frame.seq == seq:
                        self.frames.remove(frame)
                        return frame
                await self._more()

    async def login(self) -> Frame:
        seq = self.next_seq()
        await self.send(link(self.terminal, 1, seq))
        return await self.confirm(seq)

    async def heartbeat(self) -> Frame:
        seq = self.next_seq()
        clock = data.Heartbeat(data.Clock.at(datetime(2026, 12, 3, 8, 0, 5)))
        await self.send(link(self.terminal, 3, seq, [clock]))
        return await self.confirm(seq)

    async def report(self) -> tuple[Frame, Decimal]:
        """Send a new active report; the head-end's confirm and the energy it carried."""
        self.reports += 1
        total = Decimal(f"{1000 + self.reports}.25")
        seq = self.next_seq()
        await self.send(report(self.terminal, seq, total, minute=self.reports))
        return await self.confirm(seq), total

    async def closed_by_head_end(self, timeout: float) -> float:
        """Seconds from the connection's opening until the head-end closed it (the frames it
        sent first are kept in ``frames``); TimeoutError if it stays open ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            with contextlib.suppress(ConnectionError):
                while True:
                    await self._more()
        return asyncio.get_running_loop().time() - self.opened


async def trickle(terminal: Terminal, pieces: Iterable[bytes], every: float) -> None:
    """Send ``pieces`` one every ``every`` seconds, until they end or the connection does."""
    with contextlib.suppress(ConnectionError):
        for piece in pieces:
            await terminal.send(piece)
            await asyncio.sleep(every)


def one_by_one(payload: bytes) -> list[bytes]:
    return [bytes((byte,)) for byte in payload]


# --- the head-end ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def head_end(tmp_path: Path, **limits: Any) -> AsyncIterator[HeadEnd]:
    """A head-end on 127.0.0.1 with a SQLite store in ``tmp_path``, GOOD and OTHER on its
    allowlist, no scheduled reads, and the short limits of these tests (or ``limits``)."""
    options: dict[str, Any] = {"login_s": LOGIN_S, "heartbeat_s": HEARTBEAT_S, "answer_s": 1.0} | limits
    writer = StoreWriter(lambda: open_store(f"sqlite:///{tmp_path / 'head-end.db'}"))
    await writer.start()
    try:
        node = HeadEnd(writer, plugins=get_plugins(), secrets=EnvSecrets(), node="test-node", zone=UTC, allow=ALLOWED,
                       realtime_s=0, frozen_days=0, archive_span=0, **options)
        await node.start("127.0.0.1", 0)
        try:
            yield node
        finally:
            await node.stop()
    finally:
        await writer.close()


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``scenario``; an exception nobody handled in the event loop (a connection's
    handler that died) fails the test."""
    unhandled: list[dict[str, Any]] = []

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unhandled.append(context))
        return await scenario()

    result = asyncio.run(main())
    assert unhandled == []
    return result


def assert_alive(node: HeadEnd) -> None:
    """The head-end still listens and its request and schedule loops still run."""
    assert node._server is not None and node._server.is_serving()
    assert node._loops and not any(task.done() for task in node._loops)


async def readings(node: HeadEnd, terminal: TerminalId = GOOD) -> list[Reading]:
    name = terminal_name(terminal)
    return await node.writer.call(lambda store: store.readings(terminal=name))


async def assert_served(node: HeadEnd, terminal: Terminal) -> None:
    """``terminal`` (logged in) is served: its heartbeat is confirmed, and its active report
    is confirmed and in the store."""
    assert_alive(node)
    beat = await terminal.heartbeat()
    assert (beat.afn, beat.function) == (Afn.CONFIRM, SecondaryFunction.LINK_STATUS)
    confirm, total = await terminal.report()
    assert (confirm.function, confirm.payload) == (SecondaryFunction.CONFIRM, bytes.fromhex("00 00 01 00"))  # F1: all confirmed
    assert total in {r.value for r in await readings(node, terminal.terminal)}


async def assert_newcomer_served(node: HeadEnd, terminal: TerminalId = GOOD) -> None:
    """A good terminal that connects now logs in and is served."""
    async with Terminal(node.port, terminal) as good:
        assert (await good.login()).afn == Afn.CONFIRM
        await assert_served(node, good)


@contextlib.asynccontextmanager
async def good_terminal(node: HeadEnd) -> AsyncIterator[Terminal]:
    """The good terminal, logged in before the attack."""
    async with Terminal(node.port, GOOD) as good:
        assert (await good.login()).afn == Afn.CONFIRM
        yield good


async def attack_before_login(node: HeadEnd, attack: Callable[[Terminal], Awaitable[None]]) -> tuple[float, bool]:
    """Run ``attack`` on a connection that does not log in; seconds until the head-end
    closed it, and whether it answered anything first."""
    async with Terminal(node.port, OTHER) as offender:
        await attack(offender)
        dropped = await offender.closed_by_head_end(LOGIN_S + SLACK_S)
        return dropped, bool(offender.frames)


# --- defaults and bad limits --------------------------------------------------------------------

LIMITS = {
    "login_s": station.DEFAULT_LOGIN_S,
    "heartbeat_s": station.DEFAULT_HEARTBEAT_S,
    "idle_periods": station.IDLE_PERIODS,
    "answer_s": station.DEFAULT_ANSWER_S,
    "max_connections": station.DEFAULT_MAX_CONNECTIONS,
    "max_damaged": station.DEFAULT_MAX_DAMAGED,
    "max_frames_s": station.DEFAULT_MAX_FRAMES_S,
    "burst": station.DEFAULT_BURST,
    "max_user_data": MAX_USER_DATA,
}


def test_the_limits_default_to_the_named_constants():
    parameters = inspect.signature(MasterStation.__init__).parameters
    assert {name: parameters[name].default for name in LIMITS} == LIMITS


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_each_default_limit_is_finite_and_positive(name):
    value = LIMITS[name]
    assert math.isfinite(value) and value > 0


def test_a_head_end_built_without_limits_has_the_safe_defaults():
    node = HeadEnd(StoreWriter(lambda: open_store("sqlite:///:memory:")), plugins=get_plugins(), secrets=EnvSecrets())
    assert (node.login_s, node.max_connections, node.max_damaged, node.max_frames_s, node.burst, node.max_user_data) == (
        station.DEFAULT_LOGIN_S, station.DEFAULT_MAX_CONNECTIONS, station.DEFAULT_MAX_DAMAGED,
        station.DEFAULT_MAX_FRAMES_S, station.DEFAULT_BURST, MAX_USER_DATA)
    assert node.idle_s == station.DEFAULT_HEARTBEAT_S * station.IDLE_PERIODS


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("name", sorted(LIMITS))
def test_a_limit_of_zero_or_less_is_refused_when_the_head_end_is_built(name, value):
    with pytest.raises(ValueError, match=name):
        HeadEnd(StoreWriter(lambda: open_store("sqlite:///:memory:")), plugins=get_plugins(), secrets=EnvSecrets(),
                **{name: value})


def test_max_user_data_beyond_what_l_can_hold_is_refused_when_the_station_is_built():
    with pytest.raises(ValueError, match="max_user_data"):
        MasterStation(max_user_data=MAX_USER_DATA + 1)


# --- lengths -----------------------------------------------------------------------------------


def test_a_length_field_larger_than_max_user_data_is_noise_and_the_connection_is_dropped_at_login_s(tmp_path):
    async def scenario():
        async with head_end(tmp_path, max_user_data=256) as node, good_terminal(node) as good:
            async def attack(offender: Terminal) -> None:
                await offender.send(header(0x3FFF) + bytes(4096))  # says 16383 bytes; more than 256 may come

            dropped, answered = await attack_before_login(node, attack)
            await assert_served(node, good)
            return dropped, answered

    dropped, answered = run(scenario)
    assert LOGIN_S <= dropped < LOGIN_S + SLACK_S and not answered


def test_a_length_field_larger_than_max_user_data_does_not_hide_the_login_behind_it(tmp_path):
    async def scenario():
        async with head_end(tmp_path, max_user_data=256) as node, Terminal(node.port, GOOD) as good:
            await good.send(header(0x3FFF))
            assert (await good.login()).afn == Afn.CONFIRM
            await assert_served(node, good)

    run(scenario)


def test_a_length_that_lies_then_silence_is_dropped_at_login_s(tmp_path):
    async def scenario():
        async with head_end(tmp_path) as node, good_terminal(node) as good:
            async def attack(offender: Terminal) -> None:
                await offender.send(header(1000) + encode(link(OTHER, 1, 1))[6:-2])  # a login's body, 1000 bytes promised

            dropped, answered = await attack_before_login(node, attack)
            await assert_served(node, good)
            return dropped, answered

    dropped, answered = run(scenario)
    assert LOGIN_S <= dropped < LOGIN_S + SLACK_S and not answered


# --- damaged frames and garbage ---------------------------------------------------------------


def test_more_bad_checksums_than_max_damaged_drop_the_connection_at_once(tmp_path):
    async def scenario():
        async with head_end(tmp_path, login_s=10.0, max_damaged=5) as node, good_terminal(node) as good:
            async def attack(offender: Terminal) -> None:
                await offender.send(damaged(link(OTHER, 1, 1)) * 6)

            async with Terminal(node.port, OTHER) as offender:
                await attack(offender)
                dropped = await offender.closed_by_head_end(SLACK_S)  # long before login_s
            await assert_served(node, good)
            return dropped, node.skipped_frames

    dropped, skipped = run(scenario)
    assert dropped < SLACK_S and skipped == 6


def test_max_damaged_bad_checksums_are_forgiven(tmp_path):
    async def scenario():
        async with head_end(tmp_path, max_damaged=5) as node, Terminal(node.port, GOOD) as good:
            await good.send(damaged(link(GOOD, 1, 1)) * 5)
            assert (await good.login()).afn == Afn.CONFIRM
            await assert_served(node, good)

    run(scenario)


def test_garbage_is_dropped_at_login_s(tmp_path):
    garbage = random.Random(13761).randbytes(64 * 1024)

    async def scenario():
        async with head_end(tmp_path) as node, good_terminal(node) as good:
            async def attack(offender: Terminal) -> None:
                with contextlib.suppress(ConnectionError):
                    await offender.send(garbage)

            dropped, answered = await attack_before_login(node, attack)
            await assert_served(node, good)
            await assert_newcomer_served(node, OTHER)
            return dropped, answered

    dropped, answered = run(scenario)
    assert dropped < LOGIN_S + SLACK_S and not answered


@contextlib.contextmanager
def head_end_in_a_thread(tmp_path: Path, **limits: Any) -> Iterator[tuple[HeadEnd, Callable[[Coroutine[Any, Any, T]], T]]]:
    """A head-end on an event loop of its own thread, for a hypothesis test that talks to it
    through plain sockets; with a function that runs a coroutine on that loop."""
    loop = asyncio.new_event_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    thread = threading.Thread(target=loop.run_forever, name="head-end", daemon=True)
    thread.start()

    def call(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    started: concurrent.futures.Future[tuple[HeadEnd, asyncio.Event]] = concurrent.futures.Future()

    async def serve() -> None:
        stop = asyncio.Event()
        async with head_end(tmp_path, **limits) as node:
            started.set_result((node, stop))
            await stop.wait()

    serving = asyncio.run_coroutine_threadsafe(serve(), loop)
    node, stop = started.result(30)
    try:
        yield node, call
    finally:
        loop.call_soon_threadsafe(stop.set)
        serving.result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
    assert unhandled == []


#: Pieces a hostile stream is made of: random bytes, and frames with a valid checksum but
#: anything in them, from an allowed terminal (OTHER; GOOD stays the well-behaved one) and
#: from a stranger.
_frames = st.builds(
    lambda terminal, afn, payload, prm, con, seq: encode(
        Frame(Direction.UP, prm, PrimaryFunction.USER_DATA if prm else SecondaryFunction.USER_DATA, terminal[0],
              terminal[1], afn, payload, seq=seq, con=con)),
    st.sampled_from([OTHER, STRANGER]),
    st.sampled_from([Afn.LINK, Afn.CLASS1, Afn.CLASS2, Afn.CLASS3, Afn.CONFIRM, 0x09, 0xFF]),
    st.binary(min_size=4, max_size=64),
    st.booleans(),
    st.booleans(),
    st.integers(0, 15),
)
_pieces = st.one_of(
    st.binary(max_size=512),
    _frames,
    st.just(encode(link(OTHER, 1, 1))),
    st.just(damaged(link(OTHER, 1, 1))),
    st.just(encode(link(STRANGER, 1, 1))),
    st.integers(0, 0x3FFF).map(header),
)


def test_random_bytes_through_a_socket_leave_the_head_end_serving(tmp_path):
    with head_end_in_a_thread(tmp_path, login_s=2.0) as (node, call):
        @settings(max_examples=60, deadline=None)
        @given(st.lists(_pieces, max_size=8).map(b"".join))
        def feed(stream: bytes) -> None:
            with socket.create_connection(("127.0.0.1", node.port)) as sock, contextlib.suppress(ConnectionError):
                sock.settimeout(SLACK_S)  # it must close it after our end: a timeout fails the test
                sock.sendall(stream)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):  # what the head-end answers, until it closes
                    pass

        feed()
        call(assert_newcomer_served(node))
        assert_alive(node)


# --- half frames, slow-loris and silence --------------------------------------------------------


def test_half_a_frame_then_silence_is_dropped_at_login_s(tmp_path):
    async def scenario():
        async with head_end(tmp_path) as node, good_terminal(node) as good:
            async def attack(offender: Terminal) -> None:
                await offender.send(encode(link(OTHER, 1, 1))[:10])

            dropped, answered = await attack_before_login(node, attack)
            await assert_served(node, good)
            return dropped, answered

    dropped, answered = run(scenario)
    assert LOGIN_S <= dropped < LOGIN_S + SLACK_S and not answered


def test_half_a_frame_then_silence_after_a_login_is_dropped_at_the_idle_timeout(tmp_path):
    async def scenario():
        async with head_end(tmp_path, heartbeat_s=0.2) as node:  # idle after 0.6 s
            loop = asyncio.get_running_loop()
            async with Terminal(node.port, OTHER) as offender:
                started = loop.time()  # the head-end hears the login later: no drop before started + 0.6
                await offender.login()
                await offender.send(encode(link(OTHER, 3, 2))[:10])
                await offender.closed_by_head_end(SLACK_S)
                dropped = loop.time() - started
            online = [r.name for r in await node.writer.call(lambda store: store.terminals(online=True))]
            await assert_newcomer_served(node)
            return dropped, online

    dropped, online = run(scenario)
    assert 0.6 <= dropped < 0.6 + SLACK_S
    assert online == []  # its end is recorded


def test_slow_loris_is_dropped_at_login_s(tmp_path):
    async def scenario():
        async with head_end(tmp_path) as node, good_terminal(node) as good:
            async with Terminal(node.port, OTHER) as offender:
                # a frame that never completes: 16383 bytes promised, one byte every 0.05 s
                sending = asyncio.create_task(trickle(offender, one_by_one(header(0x3FFF) + bytes(1000)), 0.05))
                dropped = await offender.closed_by_head_end(LOGIN_S + SLACK_S)
                sending.cancel()
            await assert_served(node, good)
            return dropped

    assert LOGIN_S <= run(scenario) < LOGIN_S + SLACK_S


def test_slow_loris_after_a_login_is_dropped_at_the_idle_timeout(tmp_path):
    async def scenario():
        async with head_end(tmp_path, heartbeat_s=0.2) as node:  # idle after 0.6 s
            loop = asyncio.get_running_loop()
            async with Terminal(node.port, OTHER) as offender:
                started = loop.time()  # the head-end hears the login later: no drop before started + 0.6
                await offender.login()
                sending = asyncio.create_task(trickle(offender, one_by_one(header(0x3FFF) + bytes(1000)), 0.05))
                await offender.closed_by_head_end(SLACK_S)
                sending.cancel()
                dropped = loop.time() - started
            await assert_newcomer_served(node)
            return dropped

    assert 0.6 <= run(scenario) < 0.6 + SLACK_S


# --- floods ------------------------------------------------------------------------------------


def test_a_flood_of_heartbeats_past_the_burst_is_dropped(tmp_path):
    async def scenario():
        async with head_end(tmp_path, max_frames_s=20.0, burst=10) as node, good_terminal(node) as good:
            async with Terminal(node.port, OTHER) as flooder:
                await flooder.login()
                await flooder.send(b"".join(encode(link(OTHER, 3, n % 16)) for n in range(200)))
                dropped = await flooder.closed_by_head_end(SLACK_S)
            await assert_served(node, good)
            return dropped, len(flooder.frames)

    dropped, confirmed = run(scenario)
    assert dropped < SLACK_S
    assert 9 <= confirmed < 200  # the rest of the burst of 10 (the login took one), then a few at 20/s


def test_a_burst_of_heartbeats_within_the_limit_is_all_confirmed(tmp_path):
    async def scenario():
        async with head_end(tmp_path, max_frames_s=20.0, burst=10) as node, good_terminal(node) as good:
            seqs = [good.next_seq() for _ in range(9)]  # the login took one of the burst of 10
            await good.send(b"".join(encode(link(GOOD, 3, seq)) for seq in seqs))
            for seq in seqs:
                await good.confirm(seq)
            await asyncio.sleep(0.15)  # at 20/s: room for the two frames of the next check
            await assert_served(node, good)

    run(scenario)


def test_connections_past_max_connections_are_closed_at_once_and_the_others_kept(tmp_path):
    async def scenario():
        async with head_end(tmp_path, login_s=10.0, max_connections=2) as node, good_terminal(node) as good, \
                Terminal(node.port, OTHER) as other:
            await other.login()
            extra = []
            for _ in range(3):
                async with Terminal(node.port, OTHER) as newcomer:
                    extra.append(await newcomer.closed_by_head_end(SLACK_S))  # long before login_s
            await assert_served(node, good)
            await other.heartbeat()
            return extra, node.refused_connections

    extra, refused = run(scenario)
    assert all(t < SLACK_S for t in extra) and refused == 3


def test_a_connection_closed_frees_its_place(tmp_path):
    async def scenario():
        async with head_end(tmp_path, max_connections=1) as node:
            async with Terminal(node.port, OTHER) as other:
                await other.login()
            for _ in range(100):  # until the head-end has seen it go
                if not node._handlers:
                    break
                await asyncio.sleep(0.02)
            await assert_newcomer_served(node)

    run(scenario)


# --- who talks ---------------------------------------------------------------------------------


def test_frames_before_a_login_are_ignored_then_the_connection_is_dropped_at_login_s(tmp_path):
    async def scenario():
        async with head_end(tmp_path) as node:
            async def attack(offender: Terminal) -> None:
                clock = data.Heartbeat(data.Clock.at(datetime(2026, 12, 3, 8, 0, 5)))
                await offender.send(link(GOOD, 3, 1, [clock]))
                await offender.send(report(GOOD, 2, Decimal("666.00"), minute=1))

            dropped, answered = await attack_before_login(node, attack)
            stored = await readings(node)
            await assert_newcomer_served(node)
            return dropped, answered, stored

    dropped, answered, stored = run(scenario)
    assert LOGIN_S <= dropped < LOGIN_S + SLACK_S and not answered
    assert stored == []


def test_a_terminal_not_on_the_allowlist_is_dropped_logged_and_not_stored(tmp_path, caplog):
    async def scenario():
        async with head_end(tmp_path, login_s=10.0) as node, good_terminal(node) as good:
            async with Terminal(node.port, STRANGER) as stranger:
                await stranger.send(encode(link(STRANGER, 1, 1)) + encode(report(STRANGER, 2, Decimal("666.00"), minute=1)))
                dropped = await stranger.closed_by_head_end(SLACK_S)  # at once, not at login_s
                answered = stranger.frames
            await assert_served(node, good)
            names = [r.name for r in await node.writer.call(lambda store: store.terminals())]
            return dropped, answered, await readings(node, STRANGER), names

    with caplog.at_level(logging.WARNING, logger="meterhub.headend"):
        dropped, answered, stored, names = run(scenario)
    assert dropped < SLACK_S and answered == []
    assert stored == [] and names == [terminal_name(GOOD)]
    assert "terminal 32019999 is not allowed" in caplog.text


def test_a_second_login_for_a_terminal_heard_from_lately_is_dropped_and_the_first_kept(tmp_path):
    async def scenario():
        async with head_end(tmp_path, login_s=10.0, heartbeat_s=30.0) as node, good_terminal(node) as good:
            peer = "127.0.0.1:{}".format(good.writer.get_extra_info("sockname")[1])
            async with Terminal(node.port, GOOD) as impostor:
                await impostor.send(link(GOOD, 1, 1))
                dropped = await impostor.closed_by_head_end(SLACK_S)
                answered = impostor.frames
            await assert_served(node, good)
            (record,) = await node.writer.call(lambda store: store.terminals())
            return dropped, answered, record, peer, node.online

    dropped, answered, record, peer, online = run(scenario)
    assert dropped < SLACK_S and answered == []
    assert (record.online, record.peer) == (True, peer) and online == [GOOD]


def test_a_downlink_frame_from_a_terminal_is_ignored_then_the_connection_is_dropped_at_login_s(tmp_path):
    async def scenario():
        async with head_end(tmp_path) as node, good_terminal(node) as good:
            async def attack(offender: Terminal) -> None:
                # a master's request, and a master's confirm of a login, sent up the terminal's line
                request = Frame(Direction.DOWN, True, PrimaryFunction.REQUEST_CLASS2, AREA, OTHER[1], Afn.CLASS1,
                                pack_units([DataUnit((1,), (129,))]), master=1, seq=1)
                confirm = Frame(Direction.DOWN, False, SecondaryFunction.LINK_STATUS, AREA, OTHER[1], Afn.CONFIRM,
                                pack_units([DataUnit((0,), (1,))]), seq=1)
                await offender.send(encode(request) + encode(confirm))

            dropped, answered = await attack_before_login(node, attack)
            await assert_served(node, good)
            return dropped, answered

    dropped, answered = run(scenario)
    assert LOGIN_S <= dropped < LOGIN_S + SLACK_S and not answered


def test_downlink_frames_do_not_keep_a_logged_in_connection_open(tmp_path):
    async def scenario():
        async with head_end(tmp_path, heartbeat_s=0.2) as node:  # idle after 0.6 s
            loop = asyncio.get_running_loop()
            async with Terminal(node.port, OTHER) as offender:
                started = loop.time()  # the head-end hears the login later: no drop before started + 0.6
                await offender.login()
                confirm = encode(Frame(Direction.DOWN, False, SecondaryFunction.LINK_STATUS, AREA, OTHER[1], Afn.CONFIRM,
                                       pack_units([DataUnit((0,), (1,))]), seq=1))
                sending = asyncio.create_task(trickle(offender, [confirm] * 100, 0.05))
                await offender.closed_by_head_end(SLACK_S)
                sending.cancel()
                dropped = loop.time() - started
                answered = offender.frames
            await assert_newcomer_served(node)
            return dropped, answered

    dropped, answered = run(scenario)
    assert 0.6 <= dropped < 0.6 + SLACK_S and answered == []


@contextlib.asynccontextmanager
async def deaf_terminal(node: HeadEnd, terminal: TerminalId, high_water: int | None = None,
                        ) -> AsyncIterator[tuple[socket.socket, Any]]:
    """A terminal that logs in and then reads nothing at all (a plain socket: no stream
    reader takes bytes off it), with a small receive window; the head-end's end of it gets
    a small socket buffer too, and writes wait once ``high_water`` bytes wait in it (a slow
    link's few kB; asyncio's 64 kB if None). Its session on the head-end comes with it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connecting: the window it offers
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", node.port))
        await loop.sock_sendall(sock, encode(link(terminal, 1, 1)))
        assert await node.wait_until(lambda: terminal in node.online, SLACK_S)
        session = node._sessions[terminal]
        session.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        if high_water is not None:
            session.writer.transport.set_write_buffer_limits(high=high_water)
        yield sock, session
    finally:
        sock.close()


async def send_in_background(sock: socket.socket, payload: bytes) -> asyncio.Task[None]:
    """Send ``payload`` whether or not the head-end reads it (a task to cancel)."""
    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            await asyncio.get_running_loop().sock_sendall(sock, payload)

    return asyncio.create_task(send())


#: AFN 09 with CON = 1 from OTHER: the head-end answers it (F2, denied) without a store write.
ANSWERED = encode(uplink(OTHER, 0x09, [DataUnit((0,), (1,))], seq=2))


def test_a_terminal_that_takes_no_answers_is_dropped_at_the_idle_timeout(tmp_path):
    """Slow-loris the other way: it sends frames that are answered and reads nothing, so
    the answers pile up until the head-end's writes wait on it; they wait no longer than
    the idle timeout."""
    async def scenario():
        # idle after 0.6 s; no flood limit to drop it first
        async with head_end(tmp_path, heartbeat_s=0.2, max_frames_s=1e6, burst=10**6) as node, \
                deaf_terminal(node, OTHER, high_water=2048) as (sock, _session):
            sending = await send_in_background(sock, ANSWERED * 2000)  # 40 kB of answers due: more than the buffers hold
            dropped = await node.wait_until(lambda: OTHER not in node.online, 0.6 + 2 * SLACK_S)
            sending.cancel()
            await assert_newcomer_served(node)
            return dropped

    assert run(scenario)


def test_a_flooder_that_reads_nothing_is_cut_off_not_left_open_with_its_answers(tmp_path):
    """Dropped past its burst while answers it was owed still wait in the head-end (fewer
    than make its writes wait): they are not kept for it, its socket is closed."""
    async def scenario():
        async with head_end(tmp_path, max_frames_s=20.0, burst=1000) as node, \
                deaf_terminal(node, OTHER) as (sock, session):
            # 20 kB of answers to the burst: more than the socket takes, less than makes a write wait
            sending = await send_in_background(sock, ANSWERED * 1200)
            dropped = await node.wait_until(lambda: OTHER not in node.online, 2 * SLACK_S)
            sending.cancel()
            await assert_newcomer_served(node)
            return dropped, session.writer.get_extra_info("socket").fileno()

    dropped, fileno = run(scenario)
    assert dropped and fileno == -1
