"""The loopback master station against a tiny terminal written with the codec, over a real
TCP connection on 127.0.0.1: link frames, allowlist, noise, active reports, requests and
their answers, timeouts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
from typing import Self

import pytest
from meterhub.protocols import gdw1376_1_data as data
from meterhub.protocols.gdw1376_1 import (
    Afn,
    DataUnit,
    Direction,
    Frame,
    PrimaryFunction,
    SecondaryFunction,
    StreamDecoder,
    decode,
    encode,
    pack_units,
)
from meterhub.headend.station import (
    MasterStation,
    RequestDenied,
    RequestTimeout,
    TerminalOffline,
    parse_terminal,
    run_master,
)

pytestmark = pytest.mark.timeout(30)

#: Vectors (core/tests/data/gdw1376_1.json): a login of terminal 0200/1234h, PSEQ 1, and
#: the master's confirm of it.
LOGIN = bytes.fromhex("68 32 00 32 00 68 C9 00 02 34 12 00 02 71 00 00 01 00 85 16")
LOGIN_CONFIRM = bytes.fromhex("68 32 00 32 00 68 0B 00 02 34 12 00 00 61 00 00 01 00 B5 16")

AREA, ADDRESS = "0200", 0x1234
ME = (AREA, ADDRESS)
ARRIVAL_S = 3.0  # a bound on bytes that should come, not a measure


def uplink(afn: int, units: list[DataUnit], *, prm: bool, function: int, seq: int, con: bool = False, master: int = 0, **kw) -> Frame:
    return Frame(Direction.UP, prm, function, AREA, ADDRESS, afn, pack_units(units), master=master, seq=seq, con=con, **kw)


def link(fn: int, seq: int, values: list = ()) -> Frame:
    return uplink(Afn.LINK, [data.unit((0,), (fn,), values)], prm=True, function=PrimaryFunction.LINK_TEST, seq=seq, con=True)


def energy(total: str, minute: int = 0) -> data.TariffEnergy:
    return data.TariffEnergy(datetime(2026, 12, 3, 8, minute), [Decimal(total), Decimal(total), Decimal(0)])


def answer_to(request: Frame, afn: int, units: list[DataUnit], **kw) -> Frame:
    kw.setdefault("seq", request.seq)
    kw.setdefault("function", SecondaryFunction.USER_DATA)
    return uplink(afn, units, prm=False, master=request.master, **kw)


class Terminal:
    """A concentrator's end of the link, just enough to talk to the master."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.decoder = StreamDecoder()
        self.frames: list[Frame] = []
        self.raw = bytearray()

    async def __aenter__(self) -> Self:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def send(self, what: Frame | bytes) -> None:
        self.writer.write(encode(what) if isinstance(what, Frame) else what)
        await self.writer.drain()

    async def frame(self, timeout: float = ARRIVAL_S) -> Frame:
        """The next frame from the master."""
        async with asyncio.timeout(timeout):
            while not self.frames:
                chunk = await self.reader.read(4096)
                if not chunk:
                    raise ConnectionError("master closed the connection")
                self.raw += chunk
                self.frames += [f for f in self.decoder.feed(chunk) if isinstance(f, Frame)]
        return self.frames.pop(0)

    async def closed_by_master(self, timeout: float = ARRIVAL_S) -> bool:
        """True once the master closes the connection (frames it sent first are kept)."""
        async with asyncio.timeout(timeout):
            while chunk := await self.reader.read(4096):
                self.raw += chunk
        return True

    async def login(self) -> Frame:
        await self.send(LOGIN)
        return await self.frame()

    def answer_with(self, respond: Callable[[Frame], list[Frame]]) -> asyncio.Task[None]:
        """Answer every request of the master with ``respond(request)``, in the background."""

        async def loop() -> None:
            while True:
                request = await self.frame(timeout=60)
                for frame in respond(request):
                    await self.send(frame)

        return asyncio.create_task(loop())


@contextlib.asynccontextmanager
async def master_station(**options) -> AsyncIterator[MasterStation]:
    options.setdefault("answer_s", 2.0)
    master = await MasterStation(**options).start("127.0.0.1", 0)
    try:
        yield master
    finally:
        await master.stop()


def run(scenario):
    return asyncio.run(scenario())


# --- link ----------------------------------------------------------------------------------


def test_login_is_confirmed_with_the_bytes_of_the_vector():
    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            return bytes(terminal.raw), master.online

    raw, online = run(scenario)
    assert raw == LOGIN_CONFIRM
    assert online == [ME]


def test_heartbeat_is_confirmed_with_its_pseq_and_no_data():
    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            clock = data.Heartbeat(data.Clock.at(datetime(2026, 12, 3, 8, 0, 5)))
            await terminal.send(link(3, seq=5, values=[clock]))
            return await terminal.frame(), master.terminals[ME]

    confirm, state = run(scenario)
    assert confirm.control == 0x0B and confirm.function == SecondaryFunction.LINK_STATUS
    assert (confirm.afn, confirm.seq, confirm.fir, confirm.fin, confirm.con) == (Afn.CONFIRM, 5, True, True, False)
    assert confirm.payload == bytes.fromhex("00 00 01 00")
    assert state.heartbeats == 1 and state.last_heartbeat is not None


def test_logout_is_confirmed_and_takes_the_terminal_offline():
    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            await terminal.send(link(2, seq=2))
            return await terminal.frame(), master.online

    confirm, online = run(scenario)
    assert (confirm.afn, confirm.seq) == (Afn.CONFIRM, 2)
    assert online == []


def test_a_terminal_not_allowed_is_not_confirmed_and_disconnected():
    async def scenario():
        async with master_station(allow={"02009999"}) as master, Terminal(master.port) as terminal:
            await terminal.send(LOGIN)
            closed = await terminal.closed_by_master()
            return closed, bytes(terminal.raw), master.online

    closed, raw, online = run(scenario)
    assert closed and raw == b"" and online == []


def test_an_allowed_terminal_is_confirmed():
    async def scenario():
        async with master_station(allow={"0200/4660"}) as master, Terminal(master.port) as terminal:
            return await terminal.login()

    assert run(scenario).afn == Afn.CONFIRM


def test_garbage_and_a_bad_checksum_are_skipped_and_the_connection_stays():
    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            damaged = LOGIN[:-2] + bytes((LOGIN[-2] ^ 0xFF,)) + LOGIN[-1:]
            await terminal.send(b"\x68\x00garbage\x16\xfe" + damaged + bytes(range(256)))
            await terminal.send(link(1, seq=7))
            confirm = await terminal.frame()
            return confirm, terminal.frames, master.skipped_frames, master.online

    confirm, more, skipped, online = run(scenario)
    assert (confirm.afn, confirm.seq) == (Afn.CONFIRM, 7)  # the good login's, not the damaged one's
    assert more == [] and skipped == 1 and online == [ME]


def test_a_silent_connection_is_closed_after_three_heartbeat_periods():
    async def scenario():
        async with master_station(heartbeat_s=0.1) as master, Terminal(master.port) as terminal:
            await terminal.login()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await terminal.closed_by_master()
            return loop.time() - started, master.online

    waited, online = run(scenario)
    assert 0.25 <= waited < 2.0
    assert online == []


# --- active reports --------------------------------------------------------------------------


def report(seq: int, *values: data.TariffEnergy, con: bool = True) -> Frame:
    units = [data.unit((p,), (129,), [v]) for p, v in enumerate(values, 1)]
    return uplink(Afn.CLASS1, units, prm=True, function=PrimaryFunction.USER_DATA, seq=seq, con=con)


def test_an_active_report_is_confirmed_and_stored_once_even_when_sent_again():
    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            first = report(3, energy("12.34"), energy("56.78"))
            await terminal.send(first)
            confirms = [await terminal.frame()]
            await terminal.send(first)  # the confirm "got lost": the same report again
            confirms.append(await terminal.frame())
            await terminal.send(report(4, energy("12.35", minute=15)))  # a new reading of p1
            confirms.append(await terminal.frame())
            return confirms, master.received, master.duplicates

    confirms, received, duplicates = run(scenario)
    assert [(c.control, c.afn, c.seq, c.payload) for c in confirms] == [
        (0x00, Afn.CONFIRM, 3, bytes.fromhex("00 00 01 00")),
        (0x00, Afn.CONFIRM, 3, bytes.fromhex("00 00 01 00")),
        (0x00, Afn.CONFIRM, 4, bytes.fromhex("00 00 01 00")),
    ]
    assert [(r.terminal, r.point, r.fn, r.value.values[0]) for r in received] == [
        (ME, 1, 129, Decimal("12.34")),
        (ME, 2, 129, Decimal("56.78")),
        (ME, 1, 129, Decimal("12.35")),
    ]
    assert duplicates == 2


def test_a_report_without_con_is_stored_but_not_confirmed():
    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            await terminal.send(report(3, energy("1"), con=False))
            stored = await master.wait_until(lambda: len(master.received) == 1, ARRIVAL_S)
            with pytest.raises(TimeoutError):
                await terminal.frame(timeout=0.2)
            return stored

    assert run(scenario)


# --- requests -------------------------------------------------------------------------------------


def test_read_energy_sends_a_class2_function_request_and_matches_the_answer_by_rseq():
    requests: list[Frame] = []

    def respond(request: Frame) -> list[Frame]:
        requests.append(request)
        reading = data.unit((1,), (129,), [energy(str(10 + len(requests)))])
        wrong = [data.unit((1,), (129,), [energy("999")])]
        stale = answer_to(request, Afn.CLASS1, wrong, seq=(request.seq - 1) % 16)
        other_master = uplink(Afn.CLASS1, wrong, prm=False, function=SecondaryFunction.USER_DATA, seq=request.seq, master=5)
        return [stale, other_master, answer_to(request, Afn.CLASS1, [reading], fir=False)]  # FIR = 0 on a single answer (details §2.7)

    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            task = terminal.answer_with(respond)
            first = await master.read_energy(ME, 1)
            second = await master.read_energy("02001234", 1)
            task.cancel()
            return first, second

    first, second = run(scenario)
    assert first.values[0] == Decimal(11) and second.values[0] == Decimal(12)
    assert [r.seq for r in requests] == [0, 1]
    request = requests[0]
    assert (request.direction, request.prm, request.function, request.master) == (Direction.DOWN, True, PrimaryFunction.REQUEST_CLASS2, 1)
    assert (request.afn, request.fcv, request.fcb, request.pw, request.con) == (Afn.CLASS1, False, False, None, False)
    assert request.payload == bytes.fromhex("01 01 01 10")  # p1 F129


def test_a_multi_frame_answer_is_assembled_from_fir_to_fin():
    def record(serial: int) -> data.MeterRecord:
        return data.MeterRecord(serial, serial, 1, 2400, 30, f"0000000000{serial:02d}")

    def respond(request: Frame) -> list[Frame]:
        assert data.items(request)[0].value == data.ArchiveQuery((1, 2, 3))
        parts = [[record(1), record(2)], [record(3)]]
        return [
            answer_to(request, Afn.QUERY, [data.unit((0,), (10,), [data.MeterArchive(parts[0])])], fin=False),
            answer_to(request, Afn.QUERY, [data.unit((0,), (10,), [data.MeterArchive(parts[1])])], fir=False, seq=(request.seq + 1) % 16),
        ]

    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            task = terminal.answer_with(respond)
            records = await master.query_archive(ME, [1, 2, 3])
            task.cancel()
            return records

    assert [r.serial for r in run(scenario)] == [1, 2, 3]


def test_a_denied_request_raises_a_clear_error():
    def respond(request: Frame) -> list[Frame]:
        return [answer_to(request, Afn.CONFIRM, [DataUnit((0,), (2,))], function=SecondaryFunction.CONFIRM)]

    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            terminal.answer_with(respond)
            with pytest.raises(RequestDenied, match=r"AFN 0C F129 p7 to 02001234 denied"):
                await master.read_energy(ME, 7)

    run(scenario)


def test_a_partly_denied_request_names_the_denied_units():
    def respond(request: Frame) -> list[Frame]:
        results = data.UnitResults(Afn.CONTROL, [data.UnitResult((0,), (31,), 1)])
        return [answer_to(request, Afn.CONFIRM, [data.unit((0,), (3,), [results])], function=SecondaryFunction.CONFIRM)]

    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            terminal.answer_with(respond)
            with pytest.raises(RequestDenied, match=r"denied in part \(AFN 00 F3\): AFN 05 F31 p0 error 1") as denied:
                await master.set_time(ME, datetime(2026, 12, 3, 8, 0, 0))
            return denied.value.results

    assert [r.error for r in run(scenario)] == [1]


def test_a_connection_lost_during_a_request_is_a_clear_error():
    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            asking = asyncio.create_task(master.read_energy(ME, 1))
            await terminal.frame()
            terminal.writer.close()
            with pytest.raises(TerminalOffline, match="ended during AFN 0C F129 p1"):
                await asking

    run(scenario)


def test_a_terminal_that_connects_again_after_its_old_connection_went_quiet_is_served_on_the_new():
    def respond(request: Frame) -> list[Frame]:
        return [answer_to(request, Afn.CLASS1, [data.unit((1,), (129,), [energy("7")])])]

    async def scenario():
        async with master_station(heartbeat_s=0.3) as master, Terminal(master.port) as old, \
                Terminal(master.port) as new:
            await old.login()
            await asyncio.sleep(0.4)  # a heartbeat period without a word: its connection may be dead
            await new.login()
            closed = await old.closed_by_master()
            new.answer_with(respond)
            return closed, await master.read_energy(ME, 1), master.online

    closed, reading, online = run(scenario)
    assert closed and reading.values[0] == Decimal(7) and online == [ME]


def test_a_second_login_for_a_terminal_heard_from_lately_is_refused_and_the_first_served():
    def respond(request: Frame) -> list[Frame]:
        return [answer_to(request, Afn.CLASS1, [data.unit((1,), (129,), [energy("8")])])]

    async def scenario():
        async with master_station() as master, Terminal(master.port) as first, Terminal(master.port) as impostor:
            await first.login()
            await impostor.send(LOGIN)
            refused = await impostor.closed_by_master()
            first.answer_with(respond)
            return refused, await master.read_energy(ME, 1), master.online

    refused, reading, online = run(scenario)
    assert refused and reading.values[0] == Decimal(8) and online == [ME]


def test_a_request_without_answer_times_out_with_a_clear_error():
    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(RequestTimeout, match=r"02001234 did not answer AFN 0C F2 p0 to 02001234 \(PSEQ 0\) within 0.2 s"):
                await master.read_clock(ME, timeout=0.2)
            return loop.time() - started

    assert run(scenario) < 1.5


def test_a_multi_frame_answer_that_ends_in_a_partial_deny_keeps_what_came():
    def respond(request: Frame) -> list[Frame]:
        results = data.UnitResults(Afn.CLASS1, [data.UnitResult((2,), (129,), 1)])
        return [
            answer_to(request, Afn.CLASS1, [data.unit((1,), (129,), [energy("3")])], fin=False),
            answer_to(request, Afn.CONFIRM, [data.unit((0,), (3,), [results])], function=SecondaryFunction.CONFIRM, fir=False, seq=(request.seq + 1) % 16),
        ]

    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            terminal.answer_with(respond)
            units = [DataUnit((1, 2), (129,))]
            with pytest.raises(RequestDenied, match=r"denied in part \(AFN 00 F3\): AFN 0C F129 p2 error 1") as denied:
                await master.request(ME, Afn.CLASS1, units)
            return denied.value.items

    (item,) = run(scenario)
    assert (item.point, item.fn, item.value.values[0]) == (1, 129, Decimal(3))


def test_a_request_to_a_terminal_not_connected_is_refused():
    async def scenario():
        async with master_station() as master:
            with pytest.raises(TerminalOffline, match="not connected"):
                await master.read_energy(ME, 1)

    run(scenario)


def test_set_time_sends_control_f31_with_pw_and_takes_the_confirm():
    requests: list[Frame] = []

    def respond(request: Frame) -> list[Frame]:
        requests.append(request)
        return [answer_to(request, Afn.CONFIRM, [DataUnit((0,), (1,))], function=SecondaryFunction.CONFIRM)]

    async def scenario():
        async with master_station() as master, Terminal(master.port) as terminal:
            await terminal.login()
            terminal.answer_with(respond)
            await master.set_time(ME, datetime(2026, 12, 3, 8, 0, 0))

    run(scenario)
    (request,) = requests
    assert (request.afn, request.function, request.pw) == (Afn.CONTROL, PrimaryFunction.REQUEST_CLASS1, bytes(16))
    assert data.items(request)[0].value.clock.time == datetime(2026, 12, 3, 8, 0, 0)
    assert decode(encode(request)) == request


def test_frame_count_sets_fcv_and_alternates_fcb():
    requests: list[Frame] = []

    def respond(request: Frame) -> list[Frame]:
        requests.append(request)
        return [answer_to(request, Afn.CLASS1, [data.unit((0,), (2,), [data.Clock.at(datetime(2026, 12, 3, 8))])])]

    async def scenario():
        async with master_station(frame_count=True) as master, Terminal(master.port) as terminal:
            await terminal.login()
            terminal.answer_with(respond)
            for _ in range(3):
                await master.read_clock(ME)

    run(scenario)
    assert [(r.fcv, r.fcb) for r in requests] == [(True, True), (True, False), (True, True)]


# --- the command's loop -----------------------------------------------------------------------


def test_the_poll_loop_reads_f129_of_each_archived_point():
    def respond(request: Frame) -> list[Frame]:
        if request.afn == Afn.QUERY:
            records = [data.MeterRecord(1, 1, 1, 2400, 30, "000000000001"), data.MeterRecord(2, 0, 1, 2400, 30, "000000000002")]
            return [answer_to(request, Afn.QUERY, [data.unit((0,), (10,), [data.MeterArchive(records)])])]
        return [answer_to(request, Afn.CLASS1, [data.unit((1,), (129,), [energy("42.5")])])]

    lines: list[str] = []

    async def terminal_side(port_of: Callable[[], int]) -> None:
        while not port_of():
            await asyncio.sleep(0.01)
        async with Terminal(port_of()) as terminal:
            await terminal.login()
            task = terminal.answer_with(respond)
            await asyncio.sleep(0.6)
            task.cancel()

    async def scenario():
        ports: list[int] = []

        def out(line: str) -> None:
            lines.append(line)
            if line.startswith("1376.1 master listening"):
                ports.append(int(line.rsplit(":", 1)[1]))

        side = asyncio.create_task(terminal_side(lambda: ports[0] if ports else 0))
        await run_master("127.0.0.1:0", poll_s=0.2, out=out, run_for=0.7, answer_s=1.0)
        await side

    run(scenario)
    assert "02001234: archive points 1" in lines
    assert any(line.startswith("02001234 p1 F129 read 2026-12-03 08:00:00: total 42.5000 kWh") for line in lines)


def test_terminals_are_named_as_vendors_print_them():
    assert parse_terminal("02001234") == parse_terminal("0200/4660") == ME
    with pytest.raises(ValueError, match="8 hex digits"):
        parse_terminal("0200-1234")
