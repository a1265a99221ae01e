"""The simulated optical meter, driven with plain pyserial and the codec."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import serial

from meterhub import timing
from meterhub.errors import ChecksumError
from meterhub_infrared import iec62056_21 as iec
from meterhub_infrared.iec62056_21 import (
    Ack,
    Command,
    DataMessage,
    ErrorMessage,
    Identification,
    Nak,
    OptionSelect,
    SignOn,
    StreamDecoder,
)
from meterhub_infrared.sim import OpticalMeter

#: Wire time of an option select at 300 Bd 7E1: the master switches its port after it.
OPTION_SELECT_S = timing.frame_time(6, iec.SIGN_ON_SETTINGS)
#: How long a test waits for an answer that must not come: a sign-on's wire time, the
#: longest reaction time of the simulator and an identification's wire time, with margin.
SILENCE_S = 1.2


class Master:
    """A bare master: a pyserial port at 300 7E1 and a stream decoder."""

    def __init__(self, path: str, rule: str = "xor") -> None:
        self.port = serial.Serial(path, 300, bytesize=7, parity="E", stopbits=1, timeout=0.02)
        self.decoder = StreamDecoder(rule)
        self.seen: list = []

    def close(self) -> None:
        self.port.close()

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def wait_for(self, kind, timeout: float = 2.5):
        """The first message of ``kind`` heard from now on (None if none in time); what
        came before it is in ``seen``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.decoder.feed(self.port.read(4096)):
                self.seen.append(item)
                if isinstance(item, kind):
                    return item
        return None

    def quiet(self, seconds: float) -> list:
        """Everything heard during ``seconds``."""
        heard: list = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            heard += self.decoder.feed(self.port.read(4096))
        return heard

    def rate(self, baudrate: int) -> None:
        if self.port.baudrate != baudrate:  # (pyserial setting a pty to its own rate again fails)
            self.port.baudrate = baudrate

    def sign_on(self, address: str = "", timeout: float = 2.5) -> Identification | None:
        self.rate(300)
        self.send(iec.sign_on(address))
        return self.wait_for(Identification, timeout)

    def select(self, baud_char: str, mode: str = "0") -> None:
        """Option select at 300 Bd, then switch to the rate once it has left the UART."""
        self.send(iec.option_select(baud_char, mode))
        time.sleep(OPTION_SELECT_S)
        self.rate(iec.MODE_C_BAUD[baud_char])

    def command(self, command: Command, rule: str = "xor"):
        self.send(command.encode(rule))
        return self.wait_for((Ack, Nak, DataMessage, ErrorMessage, ChecksumError))


@pytest.fixture
def meter():
    with OpticalMeter(seed=1) as sim:
        yield sim


@pytest.fixture
def master(meter):
    m = Master(meter.path)
    yield m
    m.close()


def _values(message: DataMessage) -> dict[str, tuple[str, str]]:
    return {d.address: (d.value, d.unit) for d in message.datasets}


def test_sign_on_gets_the_identification(meter, master):
    ident = master.sign_on()
    assert ident == Identification("MHU", "5", "MH100")
    assert ident.mode() == "C" and ident.baudrate() == 9600
    assert meter.sessions == 1
    assert meter.state == "option"


def test_echo_comes_before_the_answer(meter, master):
    master.sign_on()
    assert master.seen[0] == SignOn("")


def test_no_echo():
    with OpticalMeter(echo=False) as sim:
        m = Master(sim.path)
        m.sign_on()
        assert m.seen == [Identification("MHU", "5", "MH100")]
        m.close()


def test_readout_at_9600_matches_the_registers(meter, master):
    before, _ = meter.register("1.8.0")
    master.sign_on()
    master.select("5")
    message = master.wait_for(DataMessage)
    after, _ = meter.register("1-0:1.8.0")
    assert master.seen[-3:-1] == [Ack(), OptionSelect("0", "5", "0")]  # the echo
    assert message.complete and message.end_line
    values = _values(message)
    assert before <= Decimal(values["1.8.0"][0]) <= after
    assert values["1.8.0"][1] == "kWh"
    for address in ("2.8.0", "32.7.0", "31.7.0", "14.7.0", "1.8.2"):
        value, unit = meter.register(address)
        assert (Decimal(values[address][0]), values[address][1]) == (value, unit)
    assert values["2.8.0"] == ("000012.345", "kWh")
    demand = next(d for d in message.datasets if d.address == "1.6.0")
    assert demand.timestamp() is not None and demand.unit == "kW"
    assert {d.obis() for d in message.datasets} >= {"1-0:1.8.0", "0-0:0.9.1", "0-0:0.9.2", "1-0:14.7.0"}
    assert meter.wait_idle(2)
    assert meter.line_rate == 300
    assert meter.frames_out == 2 and meter.frames_in == 2


def test_readout_lines_helper(meter):
    lines = meter.readout_lines()
    assert lines[1].startswith("1.8.0(00123") and lines[1].endswith("*kWh)")
    assert any(line.startswith("1.6.0(3.456*kW)(") for line in lines)


def test_energy_grows(meter):
    first, _ = meter.register("1.8.0")
    time.sleep(0.3)
    assert meter.register("1.8.0")[0] >= first
    with OpticalMeter(load_kw=3600) as fast:  # 1 kWh a second
        start = fast.register("1.8.0")[0]
        time.sleep(0.05)
        assert fast.register("1.8.0")[0] > start


#: A short readout, for the tests that read out at 300 Bd (a full one takes ~9 s there).
SHORT = {"1.8.0": (Decimal("12.5"), "kWh")}


def test_rate_it_does_not_offer_keeps_300():
    with OpticalMeter(SHORT) as sim:
        m = Master(sim.path)
        m.sign_on()
        m.send(iec.option_select("6"))  # 19200: the meter offers 9600 at most
        message = m.wait_for(DataMessage)
        assert message is not None and sim.garbled_out == 0
        assert message.datasets[0].address == "1.8.0"
        m.close()


def test_master_that_does_not_switch_hears_garbage(meter, master):
    master.sign_on()
    master.send(iec.option_select("5"))  # and stays at 300
    assert master.wait_for(DataMessage, timeout=SILENCE_S) is None
    assert meter.garbled_out > 0
    assert master.decoder.skipped > 0


def test_master_writing_at_the_wrong_rate_is_not_heard(meter, master):
    master.sign_on()
    master.select("5", mode="1")
    assert master.wait_for(Command) == Command("P", "0", f"({meter.serial})".encode())
    master.port.baudrate = 300  # wrong: the meter listens at 9600
    master.send(Command("R", "1", b"1.8.0()").encode())
    assert master.wait_for((DataMessage, ErrorMessage), timeout=SILENCE_S) is None
    assert meter.garbled == 1


def test_wrong_address_is_silent_and_own_address_answers():
    with OpticalMeter(address="0042") as sim:
        m = Master(sim.path)
        assert m.sign_on("0001", timeout=SILENCE_S) is None
        assert sim.sessions == 0
        assert m.sign_on("0042") is not None
        m.close()


def test_no_option_select_goes_back_to_idle(meter, master):
    master.sign_on()
    time.sleep(iec.REACTION_MAX_S + OPTION_SELECT_S + 0.1)
    assert meter.state == "idle"


# --- programming mode ------------------------------------------------------------------


def _programming(meter: OpticalMeter, master: Master) -> None:
    master.sign_on()
    master.select("5", mode="1")
    assert master.wait_for(Command) == Command("P", "0", f"({meter.serial})".encode())
    assert meter.state == "programming" and meter.line_rate == 9600


def test_password_right_and_wrong(meter, master):
    _programming(meter, master)
    assert master.command(Command("P", "1", b"(12345678)")) == Nak()
    assert master.command(Command("P", "1", b"(00000000)")) == Ack()


def test_three_wrong_passwords_end_the_session(meter, master):
    _programming(meter, master)
    assert master.command(Command("P", "1", b"(1)")) == Nak()
    assert master.command(Command("P", "1", b"(2)")) == Nak()
    assert master.command(Command("P", "1", b"(3)")) == ErrorMessage("ER01")
    assert meter.wait_idle(1)


def test_read_one_register(meter, master):
    _programming(meter, master)
    answer = master.command(Command("R", "1", b"1.8.0()"))
    assert isinstance(answer, DataMessage)
    (ds,) = answer.datasets
    assert ds.address == "1.8.0" and ds.unit == "kWh"
    assert ds.decimal() <= meter.register("1.8.0")[0]
    assert answer.encode().startswith(b"\x021.8.0(0012")
    assert master.command(Command("R", "1", b"99.99.99()")) == ErrorMessage("ERROR")


def test_write_needs_the_password(meter, master):
    _programming(meter, master)
    assert master.command(Command("W", "1", b"2.8.0(000001.000)")) == Nak()
    assert master.command(Command("P", "1", b"(00000000)")) == Ack()
    assert master.command(Command("W", "1", b"2.8.0(000001.000)")) == Ack()
    assert meter.register("2.8.0") == (Decimal("1.000"), "kWh")
    assert master.command(Command("W", "1", b"2.8.0(abc)")) == Nak()
    assert master.command(Command("W", "1", b"0.9.1(120000)")) == Ack()
    assert meter.register("0.9.1")[0][:2] == "12"


def test_bad_bcc_command_gets_nak(meter, master):
    _programming(meter, master)
    frame = bytearray(Command("R", "1", b"1.8.0()").encode())
    frame[-1] ^= 0x01
    master.send(bytes(frame))
    assert master.wait_for((Nak, DataMessage)) == Nak()
    assert meter.damaged_in == 1


def test_break_ends_the_session(meter, master):
    _programming(meter, master)
    master.send(Command("B", "0").encode())
    time.sleep(0.1)
    assert meter.state == "idle" and meter.line_rate == 300


# --- modes A and B ---------------------------------------------------------------------


def test_mode_b_switches_after_the_identification():
    with OpticalMeter(mode="B", baud_char="E") as sim:
        m = Master(sim.path)
        ident = m.sign_on()
        assert ident.mode() == "B" and ident.baudrate() == 9600
        m.port.baudrate = 9600
        message = m.wait_for(DataMessage)
        assert message is not None and sim.garbled_out == 0
        m.close()


def test_mode_a_reads_out_at_300():
    with OpticalMeter(SHORT, mode="A", baud_char="Z") as sim:
        m = Master(sim.path)
        assert m.sign_on().mode() == "A"
        assert m.wait_for(DataMessage) is not None
        assert sim.garbled_out == 0
        m.close()


def test_mode_must_match_the_baud_character():
    with pytest.raises(ValueError, match="announces mode C"):
        OpticalMeter(mode="B")


def test_sum_rule_meter():
    with OpticalMeter(bcc_rule="sum") as sim:
        m = Master(sim.path, rule="sum")
        m.sign_on()
        m.select("5")
        assert m.wait_for(DataMessage) is not None
        m.close()


# --- faults ----------------------------------------------------------------------------


def test_fault_no_answer_at_new_baud(meter, master):
    meter.no_answer_at_new_baud = True
    master.sign_on()
    master.select("5")
    assert master.wait_for(DataMessage, timeout=SILENCE_S) is None
    assert meter.line_rate == 9600  # it did switch


def test_fault_bad_bcc_then_good(meter, master):
    meter.bad_bcc = True
    master.sign_on()
    master.select("5")
    assert isinstance(master.wait_for((DataMessage, ChecksumError)), ChecksumError)
    assert meter.bad_bcc is False
    assert meter.wait_idle(2)
    master.sign_on()
    master.select("5")
    assert isinstance(master.wait_for((DataMessage, ChecksumError)), DataMessage)


def test_fault_garbled_identification(meter, master):
    meter.garbled_identification = True
    assert master.sign_on(timeout=SILENCE_S) is None
    assert master.decoder.skipped > 0


def test_fault_silent(meter, master):
    meter.silent = True
    assert master.sign_on(timeout=SILENCE_S) is None
    assert master.seen == [SignOn("")]  # only the echo
    meter.silent = False
    assert master.sign_on() is not None


def test_fault_slow(meter, master):
    meter.slow = True
    start = time.monotonic()
    master.send(iec.sign_on())
    assert master.wait_for(Identification, timeout=1.5) is None
    assert master.wait_for(Identification, timeout=2.0) is not None
    assert time.monotonic() - start > iec.REACTION_MAX_S
