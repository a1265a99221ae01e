"""The pulse generator as a SCPI instrument: its command set, settings and bursts.

No sockets and no waiting here: :meth:`PulseGenerator.run` executes one program
message for a :class:`Session` and yields the response strings, plus :data:`WAIT`
where ``*OPC?``/``*WAI`` must hold the rest of the message until every counted burst
is done; the server decides how to wait. Settings are the instrument's (shared by all
clients, as on a real bench instrument); each session has its own error queue.

Command set (a contract; ``n`` is the channel, absent = 1)::

    *IDN?  *RST  *OPC?  *WAI  *CLS  SYSTem:ERRor[:NEXT]?  SYSTem:VERSion?
    [SOURce<n>:]PULSe:FREQuency <Hz>|MIN|MAX|DEF     and ? [MIN|MAX|DEF]
    [SOURce<n>:]PULSe:WIDTh <s>|MIN|MAX|DEF          and ? [MIN|MAX|DEF]
    [SOURce<n>:]PULSe:COUNt <count>|MIN|MAX|DEF|INF  and ? [MIN|MAX|DEF]   (0 = continuous)
    [SOURce<n>:]PULSe:SENT?
    OUTPut<n>[:STATe] ON|OFF|1|0  and ?
    INITiate<n>[:IMMediate]
    ABORt<n>

Frequency and width are each checked against the backend's limits when set and
against each other at INIT (-221 when the width leaves no pause), so a script may set
them in either order when it goes from slow to fast pulses or back.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable, Iterator

import attrs

from . import scpi
from .backends import BackendError, PulseBackend
from .s0 import s0_timing_issues
from .scpi import CommandSpec, ProgramUnit, ScpiError

log = logging.getLogger("meterhub_hil.pulsegen")

#: *RST state. 10 Hz with the automatic 50 % width is 50 ms ON / 50 ms OFF: valid S0 timing.
DEFAULT_FREQUENCY = Decimal(10)
DEFAULT_COUNT = 1
#: SCPI-99 SYSTem:VERSion?: the SCPI version (year.revision) the command set follows.
SCPI_VERSION = "1999.0"


class _Wait:
    """Marker yielded by :meth:`PulseGenerator.run`: wait until no counted burst runs."""

    def __repr__(self) -> str:
        return "WAIT"


WAIT = _Wait()


@attrs.frozen
class Identity:
    """The four ``*IDN?`` fields (IEEE 488.2 ``*IDN?``); commas are not allowed inside them."""

    manufacturer: str = "meterhub"
    model: str = "meterhub-pulsegen"
    serial: str = "0"
    firmware: str = "0"

    def __str__(self) -> str:
        fields = (self.manufacturer, self.model, self.serial, self.firmware)
        return ",".join(f.replace(",", " ").strip() or "0" for f in fields)


@attrs.frozen
class ChannelSettings:
    """One channel's programmed burst; ``width`` None is the automatic 50 % duty cycle."""

    frequency: Decimal = DEFAULT_FREQUENCY
    width: Decimal | None = None
    count: int = DEFAULT_COUNT
    output: bool = False

    @property
    def period(self) -> Decimal:
        return 1 / self.frequency

    @property
    def effective_width(self) -> Decimal:
        return self.width if self.width is not None else self.period / 2


class Session:
    """What belongs to one client: its error queue."""

    def __init__(self, depth: int = scpi.ERROR_QUEUE_DEPTH) -> None:
        self.errors = scpi.ErrorQueue(depth)


_RANGE = ("MIN", "MAX", "DEF")

COMMANDS = (
    CommandSpec("idn", "*IDN", command=None, query=(0, 0)),
    CommandSpec("rst", "*RST"),
    CommandSpec("opc", "*OPC", command=None, query=(0, 0)),
    CommandSpec("wai", "*WAI"),
    CommandSpec("cls", "*CLS"),
    CommandSpec("error", "SYSTem:ERRor[:NEXT]", command=None, query=(0, 0)),
    CommandSpec("version", "SYSTem:VERSion", command=None, query=(0, 0)),
    CommandSpec("frequency", "[SOURce#]:PULSe:FREQuency", command=(1, 1), query=(0, 1)),
    CommandSpec("width", "[SOURce#]:PULSe:WIDTh", command=(1, 1), query=(0, 1)),
    CommandSpec("count", "[SOURce#]:PULSe:COUNt", command=(1, 1), query=(0, 1)),
    CommandSpec("sent", "[SOURce#]:PULSe:SENT", command=None, query=(0, 0)),
    CommandSpec("output", "OUTPut#[:STATe]", command=(1, 1), query=(0, 0)),
    CommandSpec("initiate", "INITiate#[:IMMediate]"),
    CommandSpec("abort", "ABORt#"),
)


class PulseGenerator:
    """The instrument state behind every client connection."""

    def __init__(self, backend: PulseBackend, identity: Identity | None = None) -> None:
        self.backend = backend
        self.identity = identity or Identity()
        self.channels = tuple(sorted(backend.pins))
        self.settings = {channel: ChannelSettings() for channel in self.channels}
        self._counted = {channel: False for channel in self.channels}
        self._tree = scpi.CommandTree(COMMANDS)
        self._handlers: dict[str, Callable[[Session, ProgramUnit], str | _Wait | None]] = {
            "idn": lambda session, unit: str(self.identity),
            "rst": lambda session, unit: self.reset(),
            "opc": lambda session, unit: WAIT,
            "wai": lambda session, unit: WAIT,
            "cls": lambda session, unit: session.errors.clear(),
            "error": lambda session, unit: session.errors.pop().text,
            "version": lambda session, unit: SCPI_VERSION,
            "frequency": self._frequency,
            "width": self._width,
            "count": self._count,
            "sent": lambda session, unit: str(self.backend.sent(self._channel(unit))),
            "output": self._output,
            "initiate": lambda session, unit: self.initiate(self._channel(unit)),
            "abort": lambda session, unit: self.abort(self._channel(unit)),
        }

    # -- program messages

    def session(self) -> Session:
        return Session()

    def run(self, session: Session, line: str) -> Iterator[str | _Wait]:
        """Execute one program message: response strings, with WAIT where the rest must wait.

        Errors go to ``session.errors``; after a command error (-1xx) the rest of the
        message is skipped (IEEE 488.2's rule for command errors), after an execution error it goes on.
        """
        for unit in self._tree.parse(line):
            if isinstance(unit, ScpiError):
                session.errors.push(unit)
                return
            try:
                result = self._handlers[unit.spec.key](session, unit)
            except ScpiError as error:
                session.errors.push(error)
                if error.is_command_error:
                    return
                continue
            except BackendError as error:
                log.warning("%s: %s", unit.header, error)
                session.errors.push(ScpiError(error.code, str(error)))
                continue
            except Exception as error:  # a bug must not kill the connection; it is logged
                log.exception("%s failed", unit.header)
                session.errors.push(ScpiError(scpi.EXECUTION_ERROR, f"internal error: {error}"))
                continue
            if result is WAIT:
                yield WAIT
                if unit.is_query:
                    yield "1"  # IEEE 488.2: *OPC? answers 1 once pending operations are complete
            elif unit.is_query and result is not None:
                yield result

    def busy(self) -> bool:
        """True while a counted burst runs (``*OPC?`` waits; continuous bursts do not count)."""
        return any(self._counted[ch] and not self.backend.done(ch) for ch in self.channels)

    # -- actions (also used directly by the server at shutdown)

    def reset(self) -> None:
        """*RST: stop every burst, outputs off, settings to their defaults."""
        for channel in self.channels:
            self.backend.stop(channel)
            self._counted[channel] = False
        self.settings = {channel: ChannelSettings() for channel in self.channels}

    def initiate(self, channel: int) -> None:
        settings = self.settings[channel]
        if not settings.output:
            raise ScpiError(scpi.SETTINGS_CONFLICT, f"OUTP{channel} is OFF")
        if not self.backend.done(channel):
            raise ScpiError(scpi.INIT_IGNORED, f"channel {channel} is still running")
        self._check_width_fits(channel, settings)
        width = settings.effective_width
        pin = self.backend.pins[channel]
        for issue in s0_timing_issues(settings.frequency, width):
            log.warning("channel %d: %s; an S0 input (IEC 62053-31) will miss pulses", channel, issue)
        self.backend.start(channel, settings.count, settings.frequency, width)
        self._counted[channel] = settings.count > 0
        log.info("channel %d (GPIO %d): %s pulses at %s Hz, %s s wide", channel, pin,
                 settings.count or "continuous", scpi.format_decimal(settings.frequency),
                 scpi.format_decimal(width))

    def abort(self, channel: int) -> None:
        if not self.backend.done(channel):
            log.info("channel %d: aborted after %d pulses", channel, self.backend.sent(channel))
        self.backend.stop(channel)

    # -- handlers

    def _channel(self, unit: ProgramUnit) -> int:
        channel = 1 if unit.suffix is None else unit.suffix
        if channel not in self.settings:
            raise ScpiError(scpi.HEADER_SUFFIX_OUT_OF_RANGE,
                            f"channel {channel} (channels: {', '.join(map(str, self.channels))})")
        return channel

    def _update(self, channel: int, **changes) -> None:
        self.settings[channel] = attrs.evolve(self.settings[channel], **changes)

    def _frequency(self, session: Session, unit: ProgramUnit) -> str | None:
        channel = self._channel(unit)
        settings, limits = self.settings[channel], self.backend.limits
        named = {"MIN": limits.min_frequency, "MAX": limits.max_frequency, "DEF": DEFAULT_FREQUENCY}
        if unit.is_query:
            if unit.params:
                return scpi.format_decimal(named[_keyword(unit.params[0], _RANGE)])
            return scpi.format_decimal(settings.frequency)
        value = scpi.decimal_param(unit.params[0], unit=scpi.HERTZ, keywords=_RANGE)
        frequency = named[value] if isinstance(value, str) else value
        if not limits.min_frequency <= frequency <= limits.max_frequency:
            raise ScpiError(scpi.DATA_OUT_OF_RANGE, f"frequency {scpi.format_decimal(frequency)} Hz outside "
                            f"{scpi.format_decimal(limits.min_frequency)}..{scpi.format_decimal(limits.max_frequency)} Hz")
        self._update(channel, frequency=frequency)
        return None

    def _width(self, session: Session, unit: ProgramUnit) -> str | None:
        channel = self._channel(unit)
        settings, limits = self.settings[channel], self.backend.limits
        widest = settings.period - limits.min_width  # leaves a pause the backend can time
        named = {"MIN": limits.min_width, "MAX": widest, "DEF": settings.period / 2}
        if unit.is_query:
            if unit.params:
                return scpi.format_decimal(named[_keyword(unit.params[0], _RANGE)])
            return scpi.format_decimal(settings.effective_width)
        value = scpi.decimal_param(unit.params[0], unit=scpi.SECOND, keywords=_RANGE)
        if value == "DEF":
            self._update(channel, width=None)  # back to automatic: half the period
            return None
        width = named[value] if isinstance(value, str) else value
        if width < limits.min_width:
            raise ScpiError(scpi.DATA_OUT_OF_RANGE, f"width {scpi.format_decimal(width)} s is shorter than "
                            f"{scpi.format_decimal(limits.min_width)} s")
        self._update(channel, width=width)
        return None

    def _check_width_fits(self, channel: int, settings: ChannelSettings) -> None:
        """Width and frequency are set one by one in any order, so they are checked together here."""
        width = settings.effective_width
        if settings.period - width < self.backend.limits.min_width:
            raise ScpiError(scpi.SETTINGS_CONFLICT, f"SOUR{channel} width {scpi.format_decimal(width)} s leaves no "
                            f"pause at {scpi.format_decimal(settings.frequency)} Hz "
                            f"(period {scpi.format_decimal(settings.period)} s)")

    def _count(self, session: Session, unit: ProgramUnit) -> str | None:
        channel = self._channel(unit)
        limits = self.backend.limits
        named = {"MIN": 1, "MAX": limits.max_count, "DEF": DEFAULT_COUNT, "INF": 0}
        if unit.is_query:
            if unit.params:
                return str(named[_keyword(unit.params[0], _RANGE)])
            return str(self.settings[channel].count)
        value = scpi.integer_param(unit.params[0], keywords=(*_RANGE, "INF"))
        count = named[value] if isinstance(value, str) else value
        if not 0 <= count <= limits.max_count:
            raise ScpiError(scpi.DATA_OUT_OF_RANGE, f"count {count} outside 0..{limits.max_count} (0 = continuous)")
        self._update(channel, count=count)
        return None

    def _output(self, session: Session, unit: ProgramUnit) -> str | None:
        channel = self._channel(unit)
        if unit.is_query:
            return "1" if self.settings[channel].output else "0"
        state = scpi.boolean_param(unit.params[0])
        if not state:
            self.abort(channel)  # switching the output off ends its burst and leaves the pin OFF
        self._update(channel, output=state)
        return None


def _keyword(text: str, allowed: tuple[str, ...]) -> str:
    """A MIN/MAX/DEF query parameter (``FREQ? MAX``)."""
    value = scpi.decimal_param(text, keywords=allowed)
    if not isinstance(value, str):
        raise ScpiError(scpi.ILLEGAL_PARAMETER_VALUE, f"{text!r}: a query takes MIN, MAX or DEF")
    return value
