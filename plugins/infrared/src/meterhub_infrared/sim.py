"""A simulated meter with an IEC 62056-21 optical port, on a pseudo-terminal.

:class:`OpticalMeter` answers a master on the master side of a pty (``meter.path`` is the
slave to open with pyserial) the way the standard's state machine runs (the notes
``../shared/protocols/README.md`` §5.1):

* idle at 300 Bd 7E1, it waits for a sign-on ``/?address!CR LF`` (its own address or
  none; another address: silence) and answers with its identification after a reaction
  time tr (200-300 ms, seeded);
* mode C: it waits up to :data:`~meterhub_infrared.iec62056_21.REACTION_MAX_S` for the
  option select ``ACK V Z Y CR LF``. Y = 0: the readout ``STX lines ! CR LF ETX BCC`` at
  the rate Z (if it offers Z, else at 300 Bd), tr after the option select. Y = 1:
  programming mode, ``SOH P0 STX (serial) ETX BCC`` then P1 (password), R1, W1 and B0;
* mode B: the rate switches right after the identification, and the readout follows;
  mode A: the readout follows at 300 Bd.

A pty carries no rate, so the line is modelled: the meter's UART rate at each moment is
:attr:`OpticalMeter.line_rate`, and the rate the master set on its port is read from the
slave's termios (pyserial sets it there). Bytes the master writes at another rate than
the meter listens at are lost as garbage (a real UART sees framing errors; counted in
``garbled``), and what the meter sends while the master's port is at another rate
reaches the master as garbage (``garbled_out``). With ``echo`` every byte the master
writes comes back to it first, paced at its own rate: a half-duplex probe hears itself.

Registers advance with a seeded load: 1.8.0 and the active tariff 1.8.1 grow, so a value
read lies between :meth:`OpticalMeter.register` before and after the read.

Choices where the notes are silent (the standard's text was not at hand):

* the wrong-password answer is NAK; the third wrong password in a session is answered
  ``(ER01)`` (:data:`ERROR_ACCESS_DENIED`) and ends the session;
* R1 of a register the meter does not have is answered ``(ERROR)``
  (:data:`ERROR_UNKNOWN_REGISTER`); R2, W2, E and P2 are not supported (``(ERROR)`` /
  NAK); R1 needs no password, W1 does (NAK without);
* a command with a wrong BCC is answered NAK;
* Y = 2 (binary, mode E) and protocol modes D/E are not simulated: the meter goes idle;
* programming mode ends on B0, or after :data:`PROGRAMMING_TIMEOUT_S` without a command.
"""

from __future__ import annotations

import logging
import random
import termios
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

import attrs

from meterhub import simulator, timing
from meterhub.errors import ChecksumError, FrameError
from meterhub.model import SerialSettings
from meterhub.simulator import PacedChunk, PacedPtyServer, SimTimer

from . import iec62056_21 as iec
from .iec62056_21 import Command, DataMessage, DataSet, ErrorMessage, OptionSelect, SignOn

log = logging.getLogger(__name__)

#: How often the serving thread wakes when nothing happens (stop() is prompt). A figure
#: of the simulator, not a protocol timing.
POLL_INTERVAL_S = 0.01
#: Output goes out in pieces of about this much wire time, each when its last character
#: would have left the meter's UART (the paced server's figure).
CHUNK_INTERVAL_S = simulator.CHUNK_INTERVAL_S
#: The meter's reaction time tr is drawn from [tr min, tr min + this] (tr min: 200 ms,
#: 20 ms for a "fast" meter).
REACTION_SPREAD_S = 0.1
#: The "slow" fault: tr drawn from this range, above REACTION_MAX_S (1.5 s).
SLOW_REACTION_S = (1.6, 1.8)
#: Programming mode ends after this long without a command [U: the standard's
#: inactivity time-out, recalled as 60-120 s; a figure of the simulator].
PROGRAMMING_TIMEOUT_S = 60.0
#: Wrong passwords allowed in one session before the meter refuses with an error.
PASSWORD_TRIES = 3
ERROR_ACCESS_DENIED = "ER01"
ERROR_UNKNOWN_REGISTER = "ERROR"

#: The sign-on rate with its character format (7E1: 10 bits a character).
IDLE_SETTINGS = iec.SIGN_ON_SETTINGS


def default_registers() -> dict[str, tuple[Decimal | str, str] | tuple[Decimal | str, str, tuple[str, ...]]]:
    """The registers of a fresh simulated meter: total and four tariff import registers
    (1.8.0 = sum of 1.8.1-1.8.4), export, a maximum demand with its time stamp, voltage,
    current and frequency. 0.9.1 (time) and 0.9.2 (date) come from the meter's clock."""
    return {
        "F.F": ("00000000", ""),
        "1.8.0": (Decimal("1234.567"), "kWh"),
        "1.8.1": (Decimal("1000.000"), "kWh"),
        "1.8.2": (Decimal("234.567"), "kWh"),
        "1.8.3": (Decimal("0.000"), "kWh"),
        "1.8.4": (Decimal("0.000"), "kWh"),
        "2.8.0": (Decimal("12.345"), "kWh"),
        "1.6.0": (Decimal("3.456"), "kW", ("2601151415",)),
        "32.7.0": (Decimal("230.1"), "V"),
        "31.7.0": (Decimal("5.12"), "A"),
        "14.7.0": (Decimal("50.00"), "Hz"),
        "0.9.1": ("", ""),
        "0.9.2": ("", ""),
    }


#: Registers that grow with the load (import total and the active tariff).
ADVANCING = ("1.8.0", "1.8.1")
CLOCK_TIME, CLOCK_DATE = "0.9.1", "0.9.2"

_SPEEDS = {getattr(termios, f"B{rate}"): rate for rate in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)}


@attrs.define
class _Register:
    value: Decimal | str
    unit: str
    extra: tuple[str, ...] = ()
    width: int = 0  # integer digits a numeric value is padded to


@attrs.define
class _Faults:
    no_answer_at_new_baud: bool = False
    bad_bcc: bool = False
    garbled_identification: bool = False
    silent: bool = False
    slow: bool = False


def _fault_property(name: str, doc: str) -> property:
    def get(self: OpticalMeter) -> bool:
        with self._lock:
            return getattr(self._faults, name)

    def set_(self: OpticalMeter, value: bool) -> None:
        with self._lock:
            setattr(self._faults, name, bool(value))

    return property(get, set_, doc=doc)


class OpticalMeter(PacedPtyServer):
    """An IEC 62056-21 meter on a pty (see the module). Use as a context manager, or
    :meth:`start` / :meth:`stop`.

    ``registers`` maps a data-set address (``"1.8.0"``) to ``(value, unit)`` or
    ``(value, unit, extra values)``; a Decimal value is numeric (printed with its own
    decimals), a str is sent as it is. ``manufacturer``, ``identification``,
    ``baud_char`` and ``mode`` ("A", "B", "C") make the identification; ``address`` the
    device address it answers to besides none; ``password`` the P1 operand; ``echo`` the
    probe hearing itself; ``seed`` the reaction times, the load and the serial number;
    ``bcc_rule`` "xor" or "sum" (the ELV deviation); ``load_kw`` the load (None: seeded,
    1.5-4.5 kW); ``check_rates`` whether rate mismatches garble (False: a pty without
    termios rates).
    """

    POLL_S = POLL_INTERVAL_S
    _logger = log
    LABEL = "optical meter"

    def __init__(
        self,
        registers: Mapping[str, tuple[Decimal | str, str] | tuple[Decimal | str, str, tuple[str, ...]]] | None = None,
        *,
        manufacturer: str = "MHU",
        identification: str = "MH100",
        baud_char: str = "5",
        mode: str = "C",
        address: str = "",
        password: str = "00000000",
        echo: bool = True,
        seed: int = 0,
        bcc_rule: str = "xor",
        load_kw: float | None = None,
        check_rates: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ("A", "B", "C"):
            raise ValueError(f"protocol mode {mode!r} is not simulated (A, B or C)")
        self.ident = iec.Identification(manufacturer, baud_char, identification)
        iec.parse_identification(self.ident.encode())  # the same checks a master makes
        if self.ident.mode() != mode:
            raise ValueError(f"baud character {baud_char!r} announces mode {self.ident.mode()}, not {mode}")
        self.max_rate = self.ident.baudrate()  # ValueError for a reserved character
        iec.sign_on(address)  # ValueError for a malformed address
        iec.bcc(b"", bcc_rule)  # ValueError for an unknown rule
        self.mode = mode
        self.address = address
        self.password = password
        self.echo = echo
        self.seed = seed
        self.bcc_rule = bcc_rule
        self.check_rates = check_rates
        self.serial = f"{12340000 + seed % 10000000:08d}"
        self._random = random.Random(seed)
        self.load_w = int(load_kw * 1000) if load_kw is not None else self._random.randint(1500, 4500)
        # counters
        self.frames_in = 0  #: sign-ons, option selects and commands received (not garbled)
        # frames_out (messages completely written) is counted by PacedPtyServer
        self.sessions = 0  #: sign-ons answered
        self.garbled = 0  #: writes of the master lost at a wrong rate
        self.garbled_out = 0  #: chunks the master's port heard at a wrong rate
        self.damaged_in = 0  #: messages with a wrong BCC
        # registers and clock
        self._registers: dict[str, _Register] = {}
        for key, spec in (registers if registers is not None else default_registers()).items():
            value, unit, *rest = spec
            width = 6 if isinstance(value, Decimal) and key.count(".") == 2 and key.split(".")[1] == "8" else 0
            self._registers[key] = _Register(value, unit, tuple(rest[0]) if rest else (), width)
        self._t0 = time.monotonic()
        self._clock_start = datetime.now().replace(microsecond=0)
        # state
        self._state = "idle"
        self._line_rate = IDLE_SETTINGS.baudrate
        # self._epoch (PacedPtyServer) is bumped by every state change: timers of an earlier state do nothing
        self._tries = 0
        self._authorized = False
        self._faults = _Faults()
        self._decoder = iec.StreamDecoder(bcc_rule)

    # -- life cycle -----------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<OpticalMeter {self.path or '(not started)'} {self.ident.encode()[:-2].decode()} {self._state}>"

    # -- state and faults (thread-safe) ---------------------------------------------------

    @property
    def line_rate(self) -> int:
        """The rate the meter's UART runs at now (300 when idle)."""
        with self._lock:
            return self._line_rate

    @property
    def state(self) -> str:
        """"idle", "option" (waiting for the option select), "readout", "programming"."""
        with self._lock:
            return self._state

    no_answer_at_new_baud = _fault_property(
        "no_answer_at_new_baud", "After the option select the meter switches its rate but never answers."
    )
    bad_bcc = _fault_property("bad_bcc", "The next readout goes out with a wrong BCC (then clears itself).")
    garbled_identification = _fault_property(
        "garbled_identification", "The identification goes out with damaged characters (no valid message)."
    )
    silent = _fault_property("silent", "The meter ignores everything it receives.")
    slow = _fault_property("slow", "Reaction times of 1.6-1.8 s, above the standard's 1.5 s.")

    def register(self, address: str) -> tuple[Decimal | str, str]:
        """(value, unit) of a register now, as the meter would send it: by its data-set
        address (``"1.8.0"``) or OBIS code (``"1-0:1.8.0"``). KeyError if it has none."""
        with self._lock:
            key = self._key(address)
            if key is None:
                raise KeyError(f"the meter has no register {address!r}")
            ds = self._dataset(key, time.monotonic())
            value: Decimal | str = Decimal(ds.value) if isinstance(self._registers[key].value, Decimal) else ds.value
            return value, ds.unit

    def readout_lines(self) -> list[str]:
        """The data lines a readout would send now (without the end line)."""
        with self._lock:
            now = time.monotonic()
            return [self._dataset(key, now).encode().decode("ascii") for key in self._registers]

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until the meter is idle with nothing left to send; False on timeout."""
        return self._wait_idle(timeout, POLL_INTERVAL_S, lambda: self._state == "idle")

    # -- registers ------------------------------------------------------------------------

    def _key(self, address: str) -> str | None:
        address = address.strip()
        if address in self._registers:
            return address
        wanted = DataSet(address, "").obis()
        if wanted is None:
            return None
        return next((k for k in self._registers if DataSet(k, "").obis() == wanted), None)

    def _clock(self, now: float) -> datetime:
        return self._clock_start + timedelta(seconds=now - self._t0)

    def _dataset(self, key: str, now: float) -> DataSet:
        reg = self._registers[key]
        value = reg.value
        if key == CLOCK_TIME and value == "":
            value = self._clock(now).strftime("%H%M%S")
        elif key == CLOCK_DATE and value == "":
            value = self._clock(now).strftime("%y%m%d")
        if isinstance(value, Decimal):
            exponent = value.as_tuple().exponent
            places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
            if key in ADVANCING:
                kwh = Decimal(self.load_w) * Decimal(int((now - self._t0) * 1000)) / Decimal(3_600_000_000)
                value = (value + kwh).quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)
            text = f"{value:0{reg.width + (places + 1 if places else 0)}.{places}f}"
        else:
            text = value
        return DataSet(key, text, reg.unit, reg.extra)

    # -- serving --------------------------------------------------------------------------

    def _client_rate(self) -> int | None:
        """The rate the master's port is set to (from the slave's termios), None if unknown."""
        if not self.check_rates or self._slave is None:
            return None
        try:
            speed = termios.tcgetattr(self._slave)[5]
        except (termios.error, OSError):
            return None
        return _SPEEDS.get(speed, -1)

    def _receive(self, data: bytes) -> None:
        now = time.monotonic()
        client = self._client_rate()
        if self.echo:
            heard = SerialSettings(client or self._line_rate, 7, "E", 1)
            self._emit(data, now, heard, frame=False, occupy=False)  # no tag: always heard right
        if client is not None and client != self._line_rate:
            # The meter's UART at another rate sees framing errors: the bytes are lost and
            # whatever message was half received with them.
            self.garbled += 1
            self._decoder = iec.StreamDecoder(self.bcc_rule)
            log.debug("optical meter %s: %d bytes at %d Bd while listening at %d: garbage",
                      self.path, len(data), client, self._line_rate)
            return
        self._arrived(len(data), now, self._settings())
        for item in self._decoder.feed(data):
            self._now = self._rx_end
            if self._faults.silent:
                continue
            if isinstance(item, ChecksumError):
                self.damaged_in += 1
                if self._state == "programming":
                    self._send_raw(iec.Nak().encode(), self._reaction())
                continue
            if isinstance(item, FrameError | iec.Ack | iec.Nak):
                continue  # (the decoder gives the ACK of an option select as an Ack too)
            self.frames_in += 1
            self._guarded("handling", item, self._on_message, item)

    def _outgoing(self, chunk: PacedChunk) -> bytes:
        """What the master's port hears of ``chunk`` (tagged with the rate it was sent at;
        no tag: the master's echo, always heard right)."""
        if chunk.tag is not None:
            client = self._client_rate()
            if client is not None and client != chunk.tag:
                # The master's UART at another rate: it receives garbage.
                self.garbled_out += 1
                return bytes(self._random.randrange(0x80, 0x100) for _ in chunk.data)
        return chunk.data

    def _after(self, delay: float, action: Callable[[], None]) -> SimTimer:
        """Run ``action`` ``delay`` s after the event being handled, unless the state
        changed in between."""
        return super()._after(delay, self._in_epoch(action))

    # -- output ---------------------------------------------------------------------------

    def _settings(self, rate: int | None = None) -> SerialSettings:
        return SerialSettings(rate or self._line_rate, 7, "E", 1)

    def _send_raw(self, data: bytes, delay: float) -> float:
        """Send ``data`` at the line rate ``delay`` s after the event being handled."""
        return self._emit(data, self._now + delay, self._settings(), frame=True, tag=self._line_rate)

    def _reaction(self) -> float:
        if self._faults.slow:
            return self._random.uniform(*SLOW_REACTION_S)
        shortest = iec.reaction_min(self.ident.fast)  # 20 ms for a lower-case third letter
        return self._random.uniform(shortest, shortest + REACTION_SPREAD_S)

    def _go(self, state: str, rate: int | None = None) -> None:
        self._state = state
        self._epoch += 1
        if rate is not None:
            self._line_rate = rate

    def _idle(self) -> None:
        self._go("idle", IDLE_SETTINGS.baudrate)
        self._authorized = False
        self._tries = 0

    # -- the state machine ----------------------------------------------------------------

    def _on_message(self, message: iec.Message) -> None:
        if isinstance(message, SignOn):
            self._on_sign_on(message)
        elif isinstance(message, OptionSelect) and self._state == "option":
            self._on_option_select(message)
        elif isinstance(message, Command) and self._state == "programming":
            self._on_command(message)

    def _on_sign_on(self, message: SignOn) -> None:
        if message.address not in ("", self.address) or self._state in ("readout",):
            return
        self._idle()
        self.sessions += 1
        ident = self.ident.encode()
        if self._faults.garbled_identification:
            ident = ident[:1] + bytes(b ^ 0x80 for b in ident[1:5]) + ident[5:]
        end = self._send_raw(ident, self._reaction())
        if self.mode == "C":
            self._go("option")
            self._after(end - self._now + iec.REACTION_MAX_S + timing.frame_time(6, IDLE_SETTINGS), self._idle)
        elif self.mode == "B":
            self._go("readout")
            self._after(end - self._now, lambda: self._start_readout(self.max_rate))
        else:
            self._go("readout")
            self._after(end - self._now, lambda: self._start_readout(IDLE_SETTINGS.baudrate))

    def _on_option_select(self, message: OptionSelect) -> None:
        rate = iec.MODE_C_BAUD.get(message.baud_char)
        if rate is None or rate > self.max_rate:
            rate = IDLE_SETTINGS.baudrate  # a rate it does not offer: it stays at 300
        if message.protocol != "0" or message.mode not in ("0", "1"):
            self._idle()  # binary mode E / HDLC is not simulated
            return
        if message.mode == "0":
            self._start_readout(rate)
        else:
            self._go("programming", rate)
            if self._faults.no_answer_at_new_baud:
                self._after(PROGRAMMING_TIMEOUT_S, self._idle)
                return
            operand = Command("P", "0", f"({self.serial})".encode("ascii")).encode(self.bcc_rule)
            self._send_raw(operand, self._reaction())
            self._after(PROGRAMMING_TIMEOUT_S, self._idle)

    def _start_readout(self, rate: int) -> None:
        """Switch to ``rate`` and send the readout tr later, then go idle."""
        self._go("readout", rate)
        if self._faults.no_answer_at_new_baud and rate != IDLE_SETTINGS.baudrate:
            self._after(iec.REACTION_MAX_S, self._idle)
            return
        delay = self._reaction()
        self._after(delay, self._send_readout)

    def _send_readout(self) -> None:
        now = time.monotonic()
        message = DataMessage(tuple(self._dataset(key, now) for key in self._registers), True)
        frame = bytearray(message.encode(self.bcc_rule))
        if self._faults.bad_bcc:
            self._faults.bad_bcc = False
            frame[-1] = (frame[-1] + 1) & 0x7F
        end = self._send_raw(bytes(frame), 0.0)
        self._after(end - self._now, self._idle)

    def _restart_inactivity(self) -> None:
        self._epoch += 1
        self._after(PROGRAMMING_TIMEOUT_S, self._idle)

    def _on_command(self, command: Command) -> None:
        self._restart_inactivity()
        kind = command.command + command.subtype
        delay = self._reaction()
        if kind == "B0":
            self._idle()
        elif kind == "P1":
            if command.text() == f"({self.password})":
                self._authorized = True
                self._tries = 0
                self._send_raw(iec.Ack().encode(), delay)
            else:
                self._tries += 1
                if self._tries >= PASSWORD_TRIES:
                    self._send_raw(ErrorMessage(ERROR_ACCESS_DENIED).encode(self.bcc_rule), delay)
                    self._idle()
                else:
                    self._send_raw(iec.Nak().encode(), delay)
        elif kind == "R1":
            self._send_raw(self._read_register(command).encode(self.bcc_rule), delay)
        elif kind == "W1":
            self._send_raw((iec.Ack() if self._write_register(command) else iec.Nak()).encode(), delay)
        elif kind == "R2":
            self._send_raw(ErrorMessage(ERROR_UNKNOWN_REGISTER).encode(self.bcc_rule), delay)
        else:
            self._send_raw(iec.Nak().encode(), delay)

    def _read_register(self, command: Command) -> DataMessage | ErrorMessage:
        try:
            (request,) = iec.parse_data_block(command.data)
        except (FrameError, ValueError):
            return ErrorMessage(ERROR_UNKNOWN_REGISTER)
        key = self._key(request.address)
        if key is None:
            return ErrorMessage(ERROR_UNKNOWN_REGISTER)
        return DataMessage((self._dataset(key, time.monotonic()),), True, breaks=(), end_line=False)

    def _write_register(self, command: Command) -> bool:
        if not self._authorized:
            return False
        try:
            (request,) = iec.parse_data_block(command.data)
        except (FrameError, ValueError):
            return False
        key = self._key(request.address)
        if key is None:
            return False
        reg = self._registers[key]
        if key in (CLOCK_TIME, CLOCK_DATE):
            return self._set_clock(key, request.value)
        if isinstance(reg.value, Decimal):
            try:
                value = request.decimal()
            except ValueError:
                return False
            if key in ADVANCING:  # the register reads ``value`` now: take off what it has grown
                grown = Decimal(self._dataset(key, time.monotonic()).value) - reg.value
                value -= grown
            reg.value = value
        else:
            reg.value = request.value
        return True

    def _set_clock(self, key: str, text: str) -> bool:
        now = time.monotonic()
        current = self._clock(now)
        try:
            if key == CLOCK_TIME:
                wanted = datetime.combine(current.date(), datetime.strptime(text, "%H%M%S").time())
            else:
                wanted = datetime.combine(datetime.strptime(text, "%y%m%d").date(), current.time())
        except ValueError:
            return False
        self._clock_start += wanted - current
        return True
