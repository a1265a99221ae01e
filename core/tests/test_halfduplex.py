"""The bus's late-answer guard and its quiet-line rule, with a scripted link whose far end
answers when told to: a late answer is heard in the guard and never taken for the next
request's, nothing is sent onto a busy line, and a line that never falls quiet is jammed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from meterhub import timing
from meterhub.channels import halfduplex
from meterhub.channels.halfduplex import (
    LATE_GUARD_TIMEOUTS,
    HalfDuplexChannel,
    LateAnswer,
)
from meterhub.errors import ChecksumError, FrameError, LineJammed, MeterTimeout
from meterhub.model import Meter, SerialSettings

#: 115200 Bd: the line's own gaps (inter-frame gap, turnaround) are well under a millisecond.
FAST = SerialSettings(115200, 8, "N", 1)
TIMEOUT = 0.1


class ToyDecoder:
    """Frames are ``<text>``; ``<!text>`` is one with a bad checksum; bytes outside are noise."""

    def __init__(self) -> None:
        self.skipped = 0
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[object]:
        out: list[object] = []
        for byte in data:
            if not self._buffer and byte != ord("<"):
                self.skipped += 1
                continue
            self._buffer.append(byte)
            if byte == ord(">"):
                text = self._buffer[1:-1].decode()
                self._buffer.clear()
                out.append(ChecksumError(f"bad frame {text}") if text.startswith("!") else text)
        return out


class ScriptLink:
    """A link whose far end runs ``answer(request) -> [(delay, bytes), ...]`` after each write."""

    def __init__(self, answer: Callable[[bytes], list[tuple[float, bytes]]]) -> None:
        self.name = "script"
        self.settings = FAST
        self.answer = answer
        self.writes: list[tuple[float, bytes]] = []
        self._rx = bytearray()
        self._arrived = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None: ...

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def write(self, data: bytes) -> None:
        self.writes.append((time.monotonic(), bytes(data)))
        for delay, reply in self.answer(bytes(data)):
            self.later(delay, reply)

    def later(self, delay: float, data: bytes) -> None:
        async def deliver() -> None:
            await asyncio.sleep(delay)
            self._rx += data
            self._arrived.set()

        task = asyncio.get_running_loop().create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def read(self, timeout: float) -> bytes:
        if not self._rx:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                # As the serial link does: bytes that came as the time ran out (a loaded host
                # runs both callbacks in one go) are returned, not left for the next read.
                pass
        data = bytes(self._rx)
        self._rx.clear()
        return data

    async def reset_input(self) -> None:
        self._rx.clear()

    async def apply_settings(self, settings: SerialSettings) -> None:
        self.settings = settings


def _ask(bus: HalfDuplexChannel, request: bytes, **kw: object):
    return bus.transact(request, ToyDecoder(), timeout=TIMEOUT, accept=lambda f: f == request.decode()[1:-1], **kw)


def test_a_late_answer_is_heard_in_the_guard_and_not_taken_for_the_next_request():
    async def scenario() -> tuple[list[LateAnswer], str, list[tuple[float, bytes]]]:
        # A answers 1.5 timeouts late; B answers in time. Unguarded, B's request would get
        # A's answer first; here A's answer is heard in the guard and B gets its own.
        link = ScriptLink(lambda req: [(1.5 * TIMEOUT, b"<A>")] if req == b"<A>" else [(0.01, b"<B>")])
        bus = HalfDuplexChannel("b", link)
        with pytest.raises(MeterTimeout):
            await _ask(bus, b"<A>")
        assert bus.owes_answer
        late = await bus.settle()
        exchange = await _ask(bus, b"<B>")
        return late, exchange.frame, link.writes

    late, frame, writes = asyncio.run(scenario())
    assert frame == "B"
    assert [(a.request, a.frame) for a in late] == [(b"<A>", "A")]
    assert TIMEOUT < late[0].after < LATE_GUARD_TIMEOUTS * TIMEOUT + 0.05


def test_a_retry_is_not_sent_before_the_guard_is_over():
    async def scenario() -> list[tuple[float, bytes]]:
        link = ScriptLink(lambda req: [])
        bus = HalfDuplexChannel("b", link)
        for _ in range(2):
            with pytest.raises(MeterTimeout):
                await _ask(bus, b"<A>")
        return link.writes

    (first, _), (second, _) = asyncio.run(scenario())
    assert second - first >= LATE_GUARD_TIMEOUTS * TIMEOUT  # window, then the guard


def test_the_next_transaction_runs_the_guard_itself_and_keeps_what_it_heard():
    async def scenario() -> tuple[str, list[LateAnswer]]:
        link = ScriptLink(lambda req: [(1.2 * TIMEOUT, b"<A>")] if req == b"<A>" else [(0.01, b"<A>"), (0.02, b"<B>")])
        bus = HalfDuplexChannel("b", link)
        with pytest.raises(MeterTimeout):
            await _ask(bus, b"<A>")
        exchange = await _ask(bus, b"<B>")  # no settle() in between: the bus does it
        return exchange.frame, await bus.settle()

    frame, late = asyncio.run(scenario())
    assert frame == "B"
    assert [a.frame for a in late] == ["A"]


@pytest.mark.parametrize(
    ("answer", "guard"),
    [([(0.01, b"<A>")], True), ([(0.01, b"<!A>")], True), ([], False)],
    ids=["answered", "damaged answer", "guard off"],
)
def test_no_guard_when_nothing_is_owed(answer, guard):
    async def scenario() -> tuple[bool, list[tuple[float, bytes]]]:
        link = ScriptLink(lambda req: answer if req == b"<A>" else [(0.01, b"<B>")])
        bus = HalfDuplexChannel("b", link)
        try:
            await _ask(bus, b"<A>", guard=guard)
        except (MeterTimeout, FrameError):
            pass
        owed = bus.owes_answer
        await _ask(bus, b"<B>")
        return owed, link.writes

    owed, [(first, _), (second, _)] = asyncio.run(scenario())
    assert not owed
    assert second - first < LATE_GUARD_TIMEOUTS * TIMEOUT


def test_stray_bytes_on_the_line_are_dropped_before_sending():
    async def scenario() -> tuple[str, int]:
        link = ScriptLink(lambda req: [(0.01, b"<B>")])
        bus = HalfDuplexChannel("b", link)
        link.later(0.0, b"<B>junk")  # an answer to nobody, already on the line
        await asyncio.sleep(0.01)
        exchange = await _ask(bus, b"<B>")
        return exchange.frame, bus.stray_bytes

    frame, stray = asyncio.run(scenario())
    assert frame == "B"
    assert stray == len(b"<B>junk")


class BabblingLink(ScriptLink):
    """A line a broken device talks on without a pause until ``until`` (monotonic time): like
    a real serial port, the bytes that came while this process was not looking (a loaded host
    stalls it for longer than an inter-frame gap) are there at the next read. Scheduled
    deliveries could not show that: stalled with the reader, they let it see a quiet line."""

    def __init__(self, until: float) -> None:
        super().__init__(lambda req: [])
        self.until = until

    async def read(self, timeout: float) -> bytes:
        if time.monotonic() >= self.until:
            return await super().read(timeout)
        await asyncio.sleep(min(0.001, timeout))  # one character a millisecond
        return b"\x55"


def test_a_line_that_never_falls_quiet_is_jammed_and_nothing_is_sent():
    async def scenario() -> ScriptLink:
        link = BabblingLink(until=time.monotonic() + 0.4)
        bus = HalfDuplexChannel("b", link)
        with pytest.raises(LineJammed, match="jammed"):
            await _ask(bus, b"<A>")
        return link

    assert asyncio.run(scenario()).writes == []


def test_an_answer_that_began_in_time_is_heard_to_its_end():
    async def scenario() -> str:
        # The first bytes arrive just before the deadline, the rest in pieces after it, as a
        # USB adapter hands them over (packets about 10 ms apart).
        link = ScriptLink(lambda req: [(TIMEOUT - 0.005, b"<AAAA"), (TIMEOUT + 0.005, b"AAAA"),
                                       (TIMEOUT + 0.015, b"AA>")])
        return (await _ask(HalfDuplexChannel("b", link), b"<AAAAAAAAAA>")).frame

    assert asyncio.run(scenario()) == "AAAAAAAAAA"


def test_an_answer_that_begins_after_the_deadline_is_late():
    async def scenario() -> list[LateAnswer]:
        link = ScriptLink(lambda req: [(1.2 * TIMEOUT, b"<A>")])
        bus = HalfDuplexChannel("b", link)
        with pytest.raises(MeterTimeout):
            await _ask(bus, b"<A>")
        return await bus.settle()

    (late,) = asyncio.run(scenario())
    assert TIMEOUT < late.began <= late.after


def test_a_silent_meter_is_given_up_on_when_its_answer_should_have_begun():
    """A long answer's timeout covers its wire time; ``answer_within`` is when it must begin."""
    async def scenario() -> tuple[float, str]:
        link = ScriptLink(lambda req: [])
        bus = HalfDuplexChannel("b", link)
        started = time.monotonic()
        with pytest.raises(MeterTimeout) as caught:
            await bus.transact(b"<A>", ToyDecoder(), timeout=50 * TIMEOUT, answer_within=TIMEOUT)
        return time.monotonic() - started, str(caught.value)

    took, message = asyncio.run(scenario())
    assert took < 10 * TIMEOUT  # not the 5 s the whole answer may take
    assert f"{TIMEOUT:.3f} s" in message


def test_a_long_answer_that_began_within_answer_within_is_heard_to_its_end():
    async def scenario() -> str:
        # begins in time, then arrives in pieces well past answer_within but within timeout
        link = ScriptLink(lambda req: [(0.5 * TIMEOUT, b"<AA"), (1.5 * TIMEOUT, b"AA"), (2.5 * TIMEOUT, b"AA>")])
        bus = HalfDuplexChannel("b", link)
        exchange = await bus.transact(b"<AAAAAA>", ToyDecoder(), timeout=5 * TIMEOUT, answer_within=TIMEOUT)
        return exchange.frame

    assert asyncio.run(scenario()) == "AAAAAA"


def test_a_long_answer_that_came_damaged_ends_the_wait_once_it_is_over():
    """Past ``answer_within`` only a frame under way is heard out: after a whole answer with
    a bad checksum no other is coming, and the error is raised then, not at the timeout."""
    async def scenario() -> float:
        link = ScriptLink(lambda req: [(0.5 * TIMEOUT, b"<!AA"), (1.5 * TIMEOUT, b"AA>")])
        bus = HalfDuplexChannel("b", link)
        started = time.monotonic()
        with pytest.raises(ChecksumError):
            await bus.transact(b"<AAAA>", ToyDecoder(), timeout=50 * TIMEOUT, answer_within=TIMEOUT)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 10 * TIMEOUT


def test_an_answer_within_longer_than_the_timeout_is_refused():
    bus = HalfDuplexChannel("b", ScriptLink(lambda req: []))
    with pytest.raises(ValueError, match="answer_within"):
        asyncio.run(bus.transact(b"<A>", ToyDecoder(), timeout=TIMEOUT, answer_within=2 * TIMEOUT))


# --- answers that look alike (a Modbus read names no register) --------------------------------


#: These tests time answers in windows after guards: a longer timeout keeps them clear of
#: the host's jitter (a late answer lands three quarters into the next window).
SLOW = 2 * TIMEOUT


def _meter(address: str) -> Meter:
    return Meter(address, "toy", "b")


def _alike(bus: Any, request: bytes):
    """A request whose answer cannot be told from another's: any frame starting with V."""
    return bus.transact(request, ToyDecoder(), timeout=SLOW, accept=lambda f: f.startswith("V"))


def test_an_unanswered_request_claims_the_late_answer_that_a_different_one_would_take():
    async def scenario() -> tuple[str, list[LateAnswer], list[LateAnswer]]:
        # q1's answer comes after its guard, inside q2's window, before q2's own (a meter
        # answers in order). q2 would take it (it looks like its own), but q1 asked first;
        # q2 gets its own answer. The far end sends q1's answer when it hears q2, so a
        # stalled host cannot move it into q1's guard.
        def meter(req: bytes) -> list[tuple[float, bytes]]:
            return [] if req == b"<q1>" else [(0.3 * SLOW, b"<V-energy>"), (0.9 * SLOW, b"<V-voltage>")]

        bus = HalfDuplexChannel("b", ScriptLink(meter))
        with pytest.raises(MeterTimeout):
            await _alike(bus, b"<q1>")
        in_guard = await bus.settle()
        exchange = await _alike(bus, b"<q2>")
        return exchange.frame, in_guard, await bus.settle()

    frame, in_guard, late = asyncio.run(scenario())
    assert frame == "V-voltage"
    assert in_guard == []
    assert [(a.request, a.frame) for a in late] == [(b"<q1>", "V-energy")]


def test_a_late_answer_that_arrived_in_time_is_claimed_even_if_the_host_stalls_past_its_expiry(monkeypatch):
    # q1 stays pending for 3.5 timeouts. Its answer reaches the port inside that, during
    # q2's window, and then the host stalls (another process, a GC pause) past the expiry
    # before the channel sees the bytes. The answer is still q1's: were its expiry judged
    # when the bytes are processed, q2 would take q1's energy register as its own voltage.
    monkeypatch.setattr(halfduplex, "PENDING_TIMEOUTS", 3.5)

    class StallingLink(ScriptLink):
        def later(self, delay: float, data: bytes) -> None:
            if data != b"<V-energy>":
                return super().later(delay, data)

            async def deliver_then_stall() -> None:
                await asyncio.sleep(delay)
                self._rx += data
                self._arrived.set()
                time.sleep(2.0 * SLOW)  # the whole loop stops; the bytes are in

            task = asyncio.get_running_loop().create_task(deliver_then_stall())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def scenario() -> tuple[str, list[LateAnswer]]:
        def meter(req: bytes) -> list[tuple[float, bytes]]:
            return [] if req == b"<q1>" else [(0.5 * SLOW, b"<V-energy>"), (3.0 * SLOW, b"<V-voltage>")]

        bus = HalfDuplexChannel("b", StallingLink(meter))
        with pytest.raises(MeterTimeout):
            await _alike(bus, b"<q1>")  # pending until 3.5 SLOW after it was sent
        await bus.settle()  # the guard: 2 SLOW
        # q2 leaves at about 2.1 SLOW; q1's answer arrives at about 2.6 SLOW, is seen at 4.6.
        exchange = await bus.transact(b"<q2>", ToyDecoder(), timeout=4 * SLOW, accept=lambda f: f.startswith("V"))
        return exchange.frame, await bus.settle()

    frame, late = asyncio.run(scenario())
    assert frame == "V-voltage"
    assert [(a.request, a.frame) for a in late] == [(b"<q1>", "V-energy")]


def test_the_claim_is_made_in_the_window_of_the_later_request():
    async def scenario() -> tuple[object, list[LateAnswer]]:
        # q1's answer lands in q2's window and q2's own never comes: q2 is not answered.
        bus = HalfDuplexChannel("b", ScriptLink(lambda req: [(0.5 * SLOW, b"<V-energy>")] if req == b"<q2>" else []))
        with pytest.raises(MeterTimeout):
            await _alike(bus, b"<q1>")
        await bus.settle()
        try:
            outcome: object = (await _alike(bus, b"<q2>")).frame
        except MeterTimeout as exc:
            outcome = exc
        return outcome, await bus.settle()

    outcome, late = asyncio.run(scenario())
    assert isinstance(outcome, MeterTimeout)
    assert [(a.request, a.frame) for a in late] == [(b"<q1>", "V-energy")]


def test_a_retry_answered_after_a_silent_attempt_is_held_and_a_second_answer_makes_it_doubtful():
    async def scenario() -> list[LateAnswer]:
        # Every answer comes 3 timeouts late: the retry takes the first attempt's, the hold
        # hears the retry's own.
        bus = HalfDuplexChannel("b", ScriptLink(lambda req: [(3.0 * SLOW, b"<V>")]))
        with pytest.raises(MeterTimeout):
            await _alike(bus, b"<q1>")
        await bus.settle()
        assert (await _alike(bus, b"<q1>")).frame == "V"  # the answer to the same question
        return await bus.settle()

    late = asyncio.run(scenario())
    assert [a.held for a in late] == [True]


def test_a_lost_request_costs_nothing_once_its_retry_is_answered():
    async def scenario() -> str:
        # q1's first sending is lost; its retry is answered at once. The hold hears nothing
        # more, so q1 is no longer pending, and q2's answer is q2's.
        sent: list[bytes] = []

        def meter(req: bytes) -> list[tuple[float, bytes]]:
            sent.append(req)
            return [] if len(sent) == 1 else [(0.02, b"<V-" + req[1:-1] + b">")]

        bus = HalfDuplexChannel("b", ScriptLink(meter))
        with pytest.raises(MeterTimeout):
            await _alike(bus, b"<q1>")
        await bus.settle()
        assert (await _alike(bus, b"<q1>")).frame == "V-q1"
        assert await bus.settle() == []
        return (await _alike(bus, b"<q2>")).frame

    assert asyncio.run(scenario()) == "V-q2"


def test_another_meters_pending_request_does_not_take_what_this_one_is_answered():
    async def scenario() -> str:
        # Meter a never answers; meter b's acknowledgement (which names nobody, like an
        # M-Bus E5) is b's, not a's late one.
        bus = HalfDuplexChannel("b", ScriptLink(lambda req: [] if req == b"<a>" else [(0.02, b"<V>")]))
        with pytest.raises(MeterTimeout):
            await _alike(bus.towards(_meter("a")), b"<a>")
        await bus.settle()
        return (await _alike(bus.towards(_meter("b")), b"<b>")).frame

    assert asyncio.run(scenario()) == "V"


# --- the quiet line before a request: the protocol's gap, the turnaround, the wake-up bytes ----------

SLOW_8E1 = SerialSettings(300, 8, "E", 1)  #: 36.7 ms a character: the waits are plain to see


def test_line_quiet_is_the_protocols_gap_or_the_turnaround_less_the_wake_up_bytes():
    char = timing.char_time(SLOW_8E1)
    assert timing.line_quiet(SLOW_8E1) == pytest.approx(3.5 * char)  # Modbus RTU's rule, the default
    assert timing.line_quiet(SLOW_8E1, 0.0) == pytest.approx(char)  # self-delimiting: a turnaround
    assert timing.line_quiet(SLOW_8E1, 0.0, wake_up=4) == 0.0  # FEh bytes may go out meanwhile
    assert timing.line_quiet(SLOW_8E1, None, wake_up=4) == pytest.approx(3.5 * char)  # a gap stays a gap


@pytest.mark.parametrize(("gap", "chars"), [(None, 3.5), (0.0, 1.0)])
def test_after_an_answer_the_next_request_waits_for_the_gap_or_the_turnaround(gap, chars):
    async def scenario() -> float:
        link = ScriptLink(lambda req: [(0.01, req)])
        bus = HalfDuplexChannel("b", link)
        for request in (b"<A>", b"<B>"):
            await _ask(bus, request, settings=SLOW_8E1, gap=gap)
        (first, _), (second, _) = link.writes
        return second - (first + 0.01)  # from the answer's arrival to the next request

    assert asyncio.run(scenario()) >= chars * timing.char_time(SLOW_8E1)


def test_the_character_format_changes_only_once_the_last_frame_has_left_the_uart():
    # IEC 62056-21: the option select goes out at 300 Bd, then both sides switch to the
    # readout's rate; switching while its last characters are still shifted out garbles them.
    slow, fast = SerialSettings(300, 7, "E", 1), SerialSettings(9600, 7, "E", 1)

    class Recording(ScriptLink):
        switched: list[tuple[float, SerialSettings]] = []

        async def apply_settings(self, settings: SerialSettings) -> None:
            self.switched.append((time.monotonic(), settings))
            await super().apply_settings(settings)

    async def scenario() -> tuple[float, float, str]:
        link = Recording(lambda req: [(0.3, b"<readout>")] if req == b"" else [])
        bus = HalfDuplexChannel("probe", link)
        await bus.send(b"\x060500\r\n", settings=slow, gap=0)
        sent = link.writes[-1][0]
        exchange = await bus.transact(b"", ToyDecoder(), timeout=1.0, settings=fast, gap=0)
        (switch_at, to), = [(t, s) for t, s in link.switched if s == fast]
        return sent, switch_at, exchange.frame

    sent, switch_at, frame = asyncio.run(scenario())
    assert switch_at - sent >= timing.frame_time(6, slow) - 0.005  # 6 characters at 300 Bd: 0.2 s
    assert frame == "readout"
