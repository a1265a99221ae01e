"""The ``iec62056-21`` meter driver: a meter's data readout through an optical probe.

One readout answers every quantity of a meter (:class:`meterhub.api.BatchReader`): the
session holds the line (:meth:`meterhub.api.Conduit.session`) from the sign-on to the end of
the readout, as the standard's sequence needs (IEC 62056-21 §6.3, protocols README §5.1):

1. at 300 Bd 7E1, the sign-on request ``/?[address]!`` CR LF; the meter identifies itself
   ``/XXXZ<ident>`` CR LF, Z saying the highest rate it offers and, by its range, the mode;
2. mode C (and E): the option select ``ACK 0 Z 0`` CR LF, still at 300 Bd; both sides
   switch to Z's rate once it is out, and the meter sends the readout;
   mode B: the meter switches to Z's rate right after its identification;
   mode A: the readout follows at 300 Bd;
3. the readout ``STX`` data lines ``!`` CR LF ``ETX BCC``: each data set's address (an OBIS
   code, reduced or full), value and unit becomes a measurement of that quantity.

A BCC mismatch, a truncated readout or an identification that cannot be understood fails
the read with its error (the runtime records the quality and retries); a quantity the
readout does not carry is ``not_supported``. Nothing is guessed.

Meter options (``options:`` in the site file, ``--option`` on ``meterhub read``):
``wake_up`` (battery meters: a string of NUL characters before the sign-on),
``max_baudrate`` (the highest rate to accept, for a probe that cannot go faster),
``bcc`` (``xor``, the standard's; ``sum`` for meters that add instead, as one captured
meter does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from meterhub import timing
from meterhub.api import Conduit, read_one
from meterhub.errors import FrameError, MeterError, NotSupported
from meterhub.model import Command, Measurement, Meter, SerialSettings
from meterhub.quantities import VOCABULARY, Quantity, resolve

from . import iec62056_21 as iec

#: The wake-up of battery-powered meters [U: the standard's wake-up for battery devices as
#: implementations describe it]: NUL characters at 300 Bd for 2.1-2.3 s, then 1.5-1.7 s of
#: quiet before the sign-on.
WAKE_UP_S = 2.2
WAKE_UP_PAUSE_S = 1.6

#: A readout's longest expected size, for how long its transfer may take: a meter's whole
#: register set (a few hundred lines) fits.
MAX_READOUT_BYTES = 8192

OPTION_KEYS = ("wake_up", "max_baudrate", "bcc")
CLOCK = "0-0:1.0.0"
TIME, DATE = "0-0:0.9.1", "0-0:0.9.2"

Progress = Callable[[str], None]


class Iec62056Driver:
    """IEC 62056-21 (formerly IEC 1107) meters, read out through an optical probe."""

    name = "iec62056-21"
    description = "IEC 62056-21 (IEC 1107) meters through an optical probe: mode A, B and C data readout"
    default_settings = iec.SIGN_ON_SETTINGS

    def normalize_address(self, address: str) -> str:
        """The device address of the sign-on (``/?address!``); "" for the one meter in front
        of the probe."""
        text = str(address).strip()
        iec.sign_on(text)  # ValueError saying what is wrong
        return text

    def supported_quantities(self) -> Collection[str]:
        """Whatever a readout carries: every quantity with an OBIS code."""
        return {q.obis for q in VOCABULARY}

    def validate_meter(self, meter: Meter) -> list[tuple[str, str]]:
        problems = []
        for key in meter.options:
            if key not in OPTION_KEYS:
                problems.append((f"options.{key}", f"unknown option (known: {', '.join(OPTION_KEYS)})"))
        if "wake_up" in meter.options and not isinstance(meter.options["wake_up"], bool):
            problems.append(("options.wake_up", "must be true or false"))
        rate = meter.options.get("max_baudrate")
        if rate is not None and rate not in iec.MODE_C_BAUD.values():
            problems.append(("options.max_baudrate", f"must be one of {sorted(set(iec.MODE_C_BAUD.values()))}"))
        if meter.options.get("bcc", "xor") not in ("xor", "sum"):
            problems.append(("options.bcc", "must be xor (the standard) or sum"))
        return problems

    def transaction_timeout(self, settings: SerialSettings) -> float:
        """The identification's: the reaction time's upper limit plus its wire time."""
        return iec.REACTION_MAX_S + timing.frame_time(24, iec.SIGN_ON_SETTINGS)

    async def read(self, bus: Conduit, meter: Meter, quantity: Quantity, timeout: float) -> Measurement:
        return await read_one(self, bus, meter, quantity, timeout)

    async def read_many(self, bus: Conduit, meter: Meter, quantities: Sequence[Quantity | str],
                        timeout: float) -> list[Measurement | Exception]:
        try:
            _ident, readout = await self.readout(bus, meter, timeout)
        except Exception as exc:  # every quantity fails with the session's error
            return [exc for _ in quantities]
        return measurements(readout, [resolve(q) if isinstance(q, str) else q for q in quantities])

    async def readout(self, bus: Conduit, meter: Meter, timeout: float,
                      progress: Progress | None = None) -> tuple[iec.Identification, iec.DataMessage]:
        """One sign-on and data readout: the meter's identification and its data message."""
        say = progress or (lambda _text: None)
        options: Mapping[str, Any] = meter.options
        rule = str(options.get("bcc", "xor"))
        sign_on = iec.SIGN_ON_SETTINGS
        async with bus.session():
            if options.get("wake_up"):
                say("waking the meter up")
                nul = max(1, round(WAKE_UP_S / timing.char_time(sign_on)))
                await bus.send(bytes(nul), settings=sign_on, gap=0)
                await asyncio.sleep(WAKE_UP_S + WAKE_UP_PAUSE_S)
            say(f"signing on at {sign_on.baudrate} Bd")
            ident = await _sign_on(bus, meter, timeout, rule)
            mode = ident.mode()
            rate = _rate(ident, meter)
            if mode in ("C", "E"):
                say(f"{ident.manufacturer} {ident.identification}: mode {mode}, reading out at {rate} Bd")
                await bus.send(iec.option_select(_baud_char(rate), "0"), settings=sign_on, gap=0)
            elif mode == "B":
                say(f"{ident.manufacturer} {ident.identification}: mode B, reading out at {rate} Bd")
            else:
                say(f"{ident.manufacturer} {ident.identification}: mode A, reading out at 300 Bd")
            at = SerialSettings(rate, 7, "E", 1)
            # The readout must begin within the reaction time after the switch; the whole of
            # it may take the wire time of MAX_READOUT_BYTES (34 s at 2400 Bd, 4.5 min in
            # mode A): a silent meter is given up on after the first, not the second.
            begins = iec.BAUD_SWITCH_WAIT_S + iec.REACTION_MAX_S + timing.frame_time(64, at)
            exchange = await bus.transact(
                b"", iec.StreamDecoder(rule), settings=at, gap=0,
                timeout=begins + timing.frame_time(MAX_READOUT_BYTES, at), answer_within=begins,
                accept=lambda frame: isinstance(frame, (iec.DataMessage, iec.ErrorMessage)),
            )
        if isinstance(exchange.frame, iec.ErrorMessage):
            raise MeterError(f"meter {meter.address or ident.identification} answered the readout with "
                             f"{exchange.frame.text!r}", reason=exchange.frame.text)
        say(f"readout: {len(exchange.frame.datasets)} data set(s)")
        return ident, exchange.frame

    # -- programming mode ----------------------------------------------------------------

    async def read_register(self, bus: Conduit, meter: Meter, register: str, timeout: float,
                            password: str | None = None) -> iec.DataSet:
        """One register in programming mode (R1), after the password (P1) when given."""
        def read(session: _Programming) -> Any:
            return session.read(register)

        return await self._programming(bus, meter, timeout, password, read)

    async def write_register(self, bus: Conduit, meter: Meter, register: str, value: str, timeout: float,
                             password: str) -> None:
        """Write one register in programming mode (P1 with the password, then W1)."""
        def write(session: _Programming) -> Any:
            return session.write(register, value)

        await self._programming(bus, meter, timeout, password, write)

    async def _programming(self, bus: Conduit, meter: Meter, timeout: float, password: str | None,
                           work: Callable[[_Programming], Any]) -> Any:
        """Sign on, enter programming mode (option select Y = 1) at the meter's rate, take
        its operand (P0), send the password (P1) when given, do ``work``, end with B0."""
        rule = str(meter.options.get("bcc", "xor"))
        sign_on = iec.SIGN_ON_SETTINGS
        async with bus.session():
            ident = await _sign_on(bus, meter, timeout, rule)
            if ident.mode() not in ("C", "E"):
                raise NotSupported(f"programming mode needs a mode C meter; {ident.manufacturer} {ident.identification} "
                                   f"is mode {ident.mode()}")
            rate = _rate(ident, meter)
            await bus.send(iec.option_select(_baud_char(rate), "1"), settings=sign_on, gap=0)
            session = _Programming(bus, SerialSettings(rate, 7, "E", 1), rule, meter)
            await session.expect_operand()
            try:
                if password is not None:
                    await session.password(password)
                return await work(session)
            finally:
                await bus.send(iec.Command("B", "0").encode(rule), settings=session.settings, gap=0)

    async def scan(self, bus: Conduit, timeout: float) -> list[str]:
        raise NotSupported("an optical probe faces one meter: sign on without an address (meterhub ir readout)")

    def command_credentials(self, name: str) -> tuple[str, ...]:
        """:class:`meterhub.api.CommandCredentials`: a register write needs the meter's
        programming password (P1) from the secret store."""
        return ("password",) if name == "write_register" else ()

    async def execute(self, bus: Conduit, meter: Meter, command: Command, timeout: float) -> Mapping[str, Any]:
        """``read_register`` (``register``; ``password`` from a credential, optional) and
        ``write_register`` (``register``, ``value``; the ``password`` credential)."""
        args = dict(command.args)
        register = str(args.get("register", ""))
        if not register:
            raise ValueError(f"{command.name} needs a 'register' argument (e.g. '1.8.0')")
        if command.name == "read_register":
            dataset = await self.read_register(bus, meter, register, timeout, args.get("password"))
            return {"command": command.name, "register": dataset.address, "value": dataset.value, "unit": dataset.unit}
        if command.name == "write_register":
            if "value" not in args:
                raise ValueError("write_register needs a 'value' argument")
            await self.write_register(bus, meter, register, str(args["value"]), timeout, str(args["password"]))
            return {"command": command.name, "register": register, "ok": True}
        raise NotSupported(f"iec62056-21 has no command {command.name!r}; it knows read_register, write_register")


async def _sign_on(bus: Conduit, meter: Meter, timeout: float, rule: str) -> iec.Identification:
    """The sign-on request at 300 Bd 7E1 and the meter's identification."""
    exchange = await bus.transact(
        iec.sign_on(meter.address), iec.StreamDecoder(rule), timeout=timeout, settings=iec.SIGN_ON_SETTINGS, gap=0,
        accept=lambda frame: isinstance(frame, iec.Identification),
    )
    return exchange.frame


def _rate(ident: iec.Identification, meter: Meter) -> int:
    """The rate the session goes on at: what the identification offers (mode B, C, E; mode A
    stays at 300 Bd), in mode C and E no faster than the meter's ``max_baudrate``.
    FrameError for a baud-rate character the standard does not define."""
    mode = ident.mode()
    if mode not in ("B", "C", "E"):
        return iec.SIGN_ON_SETTINGS.baudrate
    try:
        rate = ident.baudrate()
    except ValueError as exc:
        raise FrameError(f"identification {ident.encode()!r}: {exc}") from None
    limit = meter.options.get("max_baudrate")
    if mode in ("C", "E") and limit is not None and rate > limit:
        rate = limit
    return rate


def _baud_char(rate: int) -> str:
    """The mode C baud-rate character of ``rate`` for the option select."""
    return next(c for c, r in iec.MODE_C_BAUD.items() if r == rate)


class _Programming:
    """A programming-mode session in progress: commands and the meter's answers."""

    def __init__(self, bus: Conduit, settings: SerialSettings, rule: str, meter: Meter) -> None:
        self.bus = bus
        self.settings = settings
        self.rule = rule
        self.meter = meter

    async def _ask(self, request: bytes, accept: tuple[type, ...], timeout: float | None = None) -> Any:
        exchange = await self.bus.transact(
            request, iec.StreamDecoder(self.rule), settings=self.settings, gap=0,
            timeout=timeout or iec.REACTION_MAX_S + timing.frame_time(256, self.settings),
            accept=lambda frame: isinstance(frame, accept),
        )
        return exchange.frame

    async def expect_operand(self) -> None:
        """The meter's P0 (its operand) after the option select, at the new rate."""
        wait = iec.BAUD_SWITCH_WAIT_S + iec.REACTION_MAX_S + timing.frame_time(64, self.settings)
        await self._ask(b"", (iec.Command,), wait)

    async def password(self, password: str) -> None:
        answer = await self._ask(iec.Command("P", "1", f"({password})".encode("ascii")).encode(self.rule),
                                 (iec.Ack, iec.Nak, iec.ErrorMessage))
        if isinstance(answer, iec.Nak):
            raise MeterError(f"meter {self.meter.address or 'at the probe'} refused the password (NAK)", reason="password refused")
        if isinstance(answer, iec.ErrorMessage):
            raise MeterError(f"meter {self.meter.address or 'at the probe'} answered the password with {answer.text!r}",
                             reason=answer.text)

    async def read(self, register: str) -> iec.DataSet:
        answer = await self._ask(iec.Command("R", "1", f"{register}()".encode("ascii")).encode(self.rule),
                                 (iec.DataMessage, iec.ErrorMessage, iec.Nak))
        if isinstance(answer, iec.Nak):
            raise MeterError(f"meter refused reading {register} (NAK)", reason="read refused")
        if isinstance(answer, iec.ErrorMessage) or not answer.datasets:
            text = answer.text if isinstance(answer, iec.ErrorMessage) else "an empty answer"
            raise MeterError(f"meter answered reading {register} with {text!r}", reason=text)
        return answer.datasets[0]

    async def write(self, register: str, value: str) -> None:
        answer = await self._ask(iec.Command("W", "1", f"{register}({value})".encode("ascii")).encode(self.rule),
                                 (iec.Ack, iec.Nak, iec.ErrorMessage))
        if isinstance(answer, iec.Nak):
            raise MeterError(f"meter refused writing {register} (NAK)", reason="write refused")
        if isinstance(answer, iec.ErrorMessage):
            raise MeterError(f"meter answered writing {register} with {answer.text!r}", reason=answer.text)


def measurements(readout: iec.DataMessage, quantities: Sequence[Quantity]) -> list[Measurement | Exception]:
    """One outcome per quantity from a readout's data sets: its value, or NotSupported when
    the readout does not carry it, FrameError when its value is not a number."""
    by_obis: dict[str, iec.DataSet] = {}
    for dataset in readout.datasets:
        code = dataset.obis()
        if code is not None:
            by_obis.setdefault(code, dataset)
    out: list[Measurement | Exception] = []
    for quantity in quantities:
        if quantity.obis == CLOCK and CLOCK not in by_obis:
            out.append(_clock(by_obis))
            continue
        dataset = by_obis.get(quantity.obis)
        if dataset is None:
            out.append(NotSupported(f"the meter's readout has no {quantity.obis} ({quantity.alias or 'no alias'})"))
            continue
        try:
            value = dataset.decimal()
        except ValueError as exc:
            out.append(FrameError(f"{dataset.address}: value {dataset.value!r} is not a number: {exc}"))
            continue
        stamp = dataset.timestamp()
        out.append(Measurement(value, dataset.unit or quantity.unit, stamp.astimezone() if stamp else None))
    return out


def _clock(by_obis: Mapping[str, iec.DataSet]) -> Measurement | Exception:
    """The meter's clock from its time (0.9.1, hhmmss) and date (0.9.2, YYMMDD) lines."""
    time_set, date_set = by_obis.get(TIME), by_obis.get(DATE)
    if time_set is None or date_set is None:
        return NotSupported("the meter's readout has no clock (0.9.1 and 0.9.2)")
    try:
        day = date_set.value[-6:]
        when = datetime.strptime(day + time_set.value[:6], "%y%m%d%H%M%S")
    except ValueError as exc:
        return FrameError(f"clock {date_set.value!r} {time_set.value!r}: {exc}")
    return Measurement(when.isoformat(), "")

