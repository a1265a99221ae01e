"""The protocol-independent pty bus: real bytes over a real pseudo-terminal.

A toy protocol (``<address:text>`` frames) keeps these tests independent of any meter
codec; the DL/T 645 meters are tested over the same bus in test_dlt645_sim.py.
"""

from __future__ import annotations

import os
import select
import time

import pytest

from meterhub import timing
from meterhub.errors import FrameError
from meterhub.model import SerialSettings
from meterhub.simulator import Fault, PtyBus, SimDevice, as_fault

FAST = SerialSettings(9600, 8, "N", 1)
SLOW_LINE = SerialSettings(2400, 8, "E", 1)


class ToyDecoder:
    """Frames are ``<address:text>``; anything else is noise; a body without exactly one
    colon is a rejected candidate."""

    def __init__(self) -> None:
        self.skipped = 0
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[object]:
        self._buf += data
        out: list[object] = []
        while True:
            start = self._buf.find(b"<")
            if start < 0:
                self.skipped += len(self._buf)
                self._buf.clear()
                return out
            self.skipped += start
            del self._buf[:start]
            end = self._buf.find(b">")
            if end < 0:
                return out
            body = bytes(self._buf[1:end])
            del self._buf[: end + 1]
            if body.count(b":") != 1:
                out.append(FrameError(f"bad toy frame {body!r}"))
            else:
                addr, text = body.split(b":")
                out.append((addr.decode(), text))


class ToyDevice:
    protocol = "toy"

    def __init__(self, address: str, fault: Fault | None = None) -> None:
        self.address = address
        self.fault = fault
        self.handled = 0

    def new_decoder(self) -> ToyDecoder:
        return ToyDecoder()

    def handle(self, frame: tuple[str, bytes]) -> list[bytes]:
        addr, text = frame
        if text.startswith(b"re-") or addr not in (self.address, "*"):
            return []
        self.handled += 1
        if text == b"boom":
            raise RuntimeError("simulated handler bug")
        return [b"<" + self.address.encode() + b":re-" + text + b">"]


def reply_for(address: str, text: bytes) -> bytes:
    return b"<" + address.encode() + b":re-" + text + b">"


def open_port(bus: PtyBus) -> int:
    return os.open(bus.port, os.O_RDWR | os.O_NOCTTY)


def read_until(fd: int, done, timeout: float) -> bytes:
    """Bytes read until ``done(data)`` is true or ``timeout`` passes."""
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            data += os.read(fd, 4096)
    return data


def read_for(fd: int, seconds: float) -> bytes:
    return read_until(fd, lambda data: False, seconds)


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def ends_with(suffix: bytes):
    return lambda data: data.endswith(suffix)


@pytest.fixture
def fd_of():
    opened: list[int] = []

    def opener(bus: PtyBus) -> int:
        fd = open_port(bus)
        opened.append(fd)
        return fd

    yield opener
    for fd in opened:
        os.close(fd)


def test_toy_device_satisfies_the_device_protocol():
    assert isinstance(ToyDevice("01"), SimDevice)


def test_a_request_gets_its_answer_over_the_pty(fd_of):
    with PtyBus([ToyDevice("01"), ToyDevice("02")], settings=FAST) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<02:hello>")
        data = read_until(fd, ends_with(b">"), 2.0)
    assert data == reply_for("02", b"hello")


def test_an_echoing_bus_sends_the_request_back_before_the_answer(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST, echo=True) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<01:hello>")
        data = read_until(fd, lambda got: got.count(b">") >= 2, 2.0)
    assert data == b"<01:hello>" + reply_for("01", b"hello")


def test_counters_track_frames_in_and_out(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<01:a>")
        read_until(fd, ends_with(b">"), 2.0)
        os.write(fd, b"<99:nobody>")
        assert wait_for(lambda: bus.frames_in == 2, 2.0)
        assert bus.frames_out == 1


def test_a_request_for_another_address_gets_silence(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<07:hello>")
        assert read_for(fd, 0.5) == b""


def test_the_answer_takes_at_least_its_wire_time(fd_of):
    text = b"x" * 30
    expected = reply_for("01", text)
    wire_time = timing.frame_time(len(expected), SLOW_LINE)  # ~0.17 s at 2400 8E1
    with PtyBus([ToyDevice("01")], settings=SLOW_LINE, turnaround=0.0) as bus:
        fd = fd_of(bus)
        sent = time.monotonic()
        os.write(fd, b"<01:" + text + b">")
        data = read_until(fd, ends_with(b">"), 3.0)
        elapsed = time.monotonic() - sent
    assert data == expected
    assert elapsed >= 0.8 * wire_time  # a lower bound only: a loaded machine is only slower


def test_the_answer_waits_for_the_turnaround(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST, turnaround=0.3) as bus:
        fd = fd_of(bus)
        sent = time.monotonic()
        os.write(fd, b"<01:t>")
        read_until(fd, ends_with(b">"), 3.0)
        assert time.monotonic() - sent >= 0.3


def test_silence_fault_gives_nothing_within_a_second(fd_of):
    with PtyBus([ToyDevice("01", Fault.SILENCE)], settings=FAST) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<01:anyone>")
        assert read_for(fd, 1.0) == b""


def test_a_silent_device_does_not_even_process_the_request(fd_of):
    dev = ToyDevice("01", Fault.SILENCE)
    with PtyBus([dev], settings=FAST) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<01:anyone>")
        read_for(fd, 0.3)
    assert dev.handled == 0


def test_noise_fault_puts_garbage_around_a_valid_answer(fd_of):
    with PtyBus([ToyDevice("01", Fault.NOISE)], settings=FAST, seed=3) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<01:n>")
        data = read_for(fd, 0.8)
    decoder = ToyDecoder()
    frames = [f for f in decoder.feed(data) if not isinstance(f, FrameError)]
    assert ("01", b"re-n") in frames
    assert len(data) > len(reply_for("01", b"n"))
    assert not data.startswith(b"<01:")


def test_truncated_fault_cuts_the_answer_short(fd_of):
    full = reply_for("01", b"truncate me")
    with PtyBus([ToyDevice("01", Fault.TRUNCATED)], settings=FAST) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<01:truncate me>")
        data = read_for(fd, 0.6)
    assert data and full.startswith(data) and len(data) < len(full)


def test_slow_fault_answers_only_after_the_slow_delay(fd_of):
    with PtyBus([ToyDevice("01", Fault.SLOW)], settings=FAST, slow_delay=1.2) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<01:late>")
        early = read_for(fd, 0.8)
        late = read_until(fd, ends_with(b">"), 3.0)
    assert early == b""
    assert late == reply_for("01", b"late")


def test_fault_can_be_switched_while_serving(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST) as bus:
        fd = fd_of(bus)
        bus.set_fault("01", "silence")
        os.write(fd, b"<01:a>")
        assert read_for(fd, 0.5) == b""
        bus.set_fault("01", None)
        os.write(fd, b"<01:b>")
        assert read_until(fd, ends_with(b">"), 2.0) == reply_for("01", b"b")


def test_set_fault_on_an_unknown_address_names_the_known_ones():
    bus = PtyBus([ToyDevice("01")], settings=FAST)
    with pytest.raises(KeyError, match="01"):
        bus.set_fault("42", Fault.NOISE)


def test_fault_values_are_accepted_by_name_and_value():
    assert as_fault("bad-checksum") is Fault.BAD_CHECKSUM
    assert as_fault("WRONG_ADDRESS") is Fault.WRONG_ADDRESS
    with pytest.raises(ValueError, match="silence"):
        as_fault("loud")


def test_two_devices_answering_at_once_collide_into_garbage(fd_of):
    with PtyBus([ToyDevice("01"), ToyDevice("02")], settings=FAST, turnaround=0.02) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<*:who>")
        data = read_for(fd, 0.6)
        assert bus.collisions == 1
    assert data  # the line was busy...
    frames = [f for f in ToyDecoder().feed(data) if not isinstance(f, FrameError)]
    assert frames == []  # ...but nobody's answer survived


def test_a_handler_exception_does_not_stop_the_bus(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST) as bus:
        fd = fd_of(bus)
        os.write(fd, b"<01:boom>")
        read_for(fd, 0.3)
        os.write(fd, b"<01:still here>")
        data = read_until(fd, ends_with(b">"), 2.0)
        assert bus.handler_errors == 1
    assert data == reply_for("01", b"still here")


def test_garbage_and_rejected_requests_do_not_stop_the_bus(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST) as bus:
        fd = fd_of(bus)
        os.write(fd, bytes(range(256)) + b"<no colon here>" + b"\x00\xff")
        read_for(fd, 0.3)
        os.write(fd, b"<01:ok>")
        data = read_until(fd, ends_with(b">"), 2.0)
        assert bus.rejected_in >= 1 and bus.running
    assert data.endswith(reply_for("01", b"ok"))


def test_injected_noise_reaches_the_client(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST) as bus:
        fd = fd_of(bus)
        sent = bus.inject_noise(b"\x01\x02\x03")
        assert read_until(fd, ends_with(b"\x03"), 2.0) == sent


def test_bus_noise_appears_between_transactions(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST, noise_interval=0.05, seed=1) as bus:
        fd = fd_of(bus)
        data = read_until(fd, lambda d: len(d) > 0, 3.0)
    assert data


def test_a_client_may_close_and_reopen_the_port(fd_of):
    with PtyBus([ToyDevice("01")], settings=FAST) as bus:
        os.close(open_port(bus))
        time.sleep(0.1)
        fd = fd_of(bus)
        os.write(fd, b"<01:again>")
        assert read_until(fd, ends_with(b">"), 2.0) == reply_for("01", b"again")
        assert bus.running


def test_stop_ends_the_thread_and_closes_the_port():
    bus = PtyBus([ToyDevice("01")], settings=FAST).start()
    port = bus.port
    assert os.path.exists(port) and bus.running
    bus.stop()
    assert not bus.running
    bus.stop()  # idempotent
