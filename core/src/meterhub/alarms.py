"""Alarm rules: a meter's fresh readings in, alarms (:class:`~meterhub.model.Event`) out.

Sans-I/O: the concentrator hands the :class:`AlarmEngine` one :class:`MeterView` per meter
visit and stores, observes and uplinks the events it returns. Each rule keeps its own small
JSON-able memory per meter, so a condition that persists is raised once when it starts and
once when it ends, never on every visit, and the memory survives a restart through
:meth:`AlarmEngine.memory` / :meth:`AlarmEngine.restore`.

Rule types are registered through the ``meterhub_register_alarm_rules`` hook (the built-in
ones below too) and switched on by the site file's ``alarms:`` section::

    alarms:
      offline: true                 # defaults
      voltage: {nominal: 230, sag: "85%"}
      tamper: {magnetic: false}
      balance_low: false            # off

Conventions shared by every rule: only OK readings of current values (``period`` None)
carry values; a value a rule cannot parse is skipped; a limit is crossed only strictly
(a value equal to its limit raises nothing) unless a rule's docstring says otherwise.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, runtime_checkable

import attrs

from .errors import did_you_mean as _suggest
from .model import Event, Meter, Quality, Reading

log = logging.getLogger(__name__)

# --- the contract ----------------------------------------------------------------------


@attrs.frozen
class MeterView:
    """What a rule sees after one visit of one meter."""

    source: str  #: the meter's key ``channel/protocol:address`` (Event.source of its alarms)
    meter: Meter
    readings: tuple[Reading, ...] = attrs.field(converter=tuple)  #: this visit's, failed ones included
    at: datetime  #: aware UTC: when the visit ended
    zone: tzinfo  #: the site's local time zone (meters' clocks keep local time)
    balance: Decimal | None = None  #: prepaid balance after this visit; None when not prepaid


class Rule(Protocol):
    """A running alarm rule. ``check`` gets this rule's own memory for the meter (a JSON-able
    dict, initially ``{}``) and changes it in place; the engine keeps it between visits."""

    name: str

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]: ...


@runtime_checkable
class RuleType(Protocol):
    """A kind of alarm rule a site file may switch on under ``alarms:``; plugins register
    their own through ``meterhub_register_alarm_rules``."""

    name: str  #: the key under the site file's ``alarms:`` section
    description: str

    def make(self, options: Mapping[str, Any]) -> Rule:
        """The running rule for ``options`` ({} for ``true``); ValueError
        ``"<option>: <what is wrong>"`` for a bad or unknown option."""
        ...


# --- reading helpers ---------------------------------------------------------------------

#: Qualities that mean the meter itself said nothing this visit (``offline``). Compared by
#: value so a quality the model adds later ("not_attempted") is understood without an import.
NO_ANSWER = frozenset({"timeout", "backed_off", "link_error", "not_attempted"})
#: Qualities of a reading the meter answered without a value (it has none to give); a
#: transmission fault or a driver bug says nothing about the quantity itself.
_NO_VALUE_GIVEN = frozenset({"meter_error", "not_supported"})

#: Registers that only grow, watched for jumps and running backwards.
TOTAL_REGISTERS = ("1-0:1.8.0", "8-0:1.0.0", "9-0:1.0.0", "7-0:3.0.0", "6-0:1.0.0")
#: Volumes a leak keeps turning: cold water, hot water, gas.
FLOW_REGISTERS = ("8-0:1.0.0", "9-0:1.0.0", "7-0:3.0.0")
CLOCK = "0-0:1.0.0"
EXPORT = "1-0:2.8.0"
POWER = "1-0:1.7.0"
POWER_FACTOR = "1-0:13.7.0"
FREQUENCY = "1-0:14.7.0"
STATUS_WORD_1 = "0-0:96.5.1"
BATTERY_LOW_FLAG = "0-0:96.6.0"  # CJ/T 188 ST bit D2, as "true"/"false"
COVER_COUNT = "0-0:96.20.0"
MAGNETIC_COUNT = "0-0:96.20.1"
VOLTAGES = (("L1", "1-0:32.7.0"), ("L2", "1-0:52.7.0"), ("L3", "1-0:72.7.0"))
CURRENTS = (("L1", "1-0:31.7.0"), ("L2", "1-0:51.7.0"), ("L3", "1-0:71.7.0"))

# DL/T 645-2007 running status word 1 (04 00 05 01): bit2 clock battery low, bit3 battery
# for reading during an outage low, bit4 active power reverse.
W1_CLOCK_BATTERY = 1 << 2
W1_READING_BATTERY = 1 << 3
W1_ACTIVE_REVERSE = 1 << 4


def _quality(reading: Reading) -> str:
    return getattr(reading.quality, "value", str(reading.quality))


def _answered(reading: Reading) -> bool:
    return _quality(reading) not in NO_ANSWER


def current_values(view: MeterView) -> dict[str, Decimal | str]:
    """The visit's OK current values by quantity (frozen values, ``period`` set, are old
    values and left out); the last one wins if a quantity was read twice."""
    return {
        r.quantity: r.value
        for r in view.readings
        if r.quality is Quality.OK and r.value is not None and r.period is None
    }


def as_decimal(value: Any) -> Decimal | None:
    """A finite Decimal from a reading value (Decimal, int or numeric text), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, (int, str)):
        try:
            number = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            return None
    else:
        return None
    return number if number.is_finite() else None


def as_word(value: Any) -> int | None:
    """A status word as an int: an integral Decimal (DL/T 645 "bits16" values decode so),
    decimal text, or hex text written ``0x0014`` or ``0014h``; None for anything else."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            if text.startswith("0x"):
                return int(text, 0)
            if text.endswith("h"):
                return int(text[:-1], 16)
        except ValueError:
            return None
    number = as_decimal(value)
    if number is None or number != number.to_integral_value() or number < 0:
        return None
    return int(number)


def as_flag(value: Any) -> bool | None:
    """A yes/no reading ("true"/"false", 1/0) as a bool; None when it is neither."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        return None
    number = as_decimal(value)
    if number in (0, 1):
        return bool(number)
    return None


def decimal_text(value: Decimal, places: int | None = None) -> str:
    """A Decimal as plain text ("187.2", never "1.872E+2"), rounded to ``places`` when given
    (rates and percentages that do not divide evenly) with trailing zeros dropped."""
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places))
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return format(value, "f")


def seconds_text(delta: timedelta) -> str:
    """A time span in seconds as exact decimal text ("420", "0.5")."""
    seconds = Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)
    return decimal_text(seconds.normalize() if seconds else Decimal(0))


def alarm(view: MeterView, rule: str, kind: str, severity: str, **data: Any) -> Event:
    """An event of ``rule`` for the meter of ``view``: ``data`` made plain (Decimals as
    text, datetimes as ISO text) with ``rule`` and ``meter`` always there."""
    plain: dict[str, Any] = {"rule": rule, "meter": view.meter.address}
    for key, value in data.items():
        if isinstance(value, Decimal):
            value = decimal_text(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        plain[key] = value
    return Event(kind, view.source, timestamp=view.at, severity=severity, data=plain)


def _load_time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


# --- options -----------------------------------------------------------------------------


def _number(value: Any) -> Decimal:
    """A number an option may be written as: int, YAML float, Decimal or numeric text."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {value!r}")
    if isinstance(value, float):
        value = repr(value)
    number = as_decimal(value)
    if number is None:
        raise ValueError(f"must be a number, not {value!r}")
    number = number.normalize()  # 230.0 and "230" alike, so limits read "207", not "207.000"
    if number.as_tuple().exponent > 0:  # type: ignore[operator]
        try:
            number = number.quantize(Decimal(1))
        except InvalidOperation:
            raise ValueError(f"is too large: {value!r}") from None
    return number


def positive_number(value: Any) -> Decimal:
    number = _number(value)
    if number <= 0:
        raise ValueError(f"must be above zero, not {decimal_text(number)}")
    return number


def non_negative_number(value: Any) -> Decimal:
    number = _number(value)
    if number < 0:
        raise ValueError(f"cannot be negative, not {decimal_text(number)}")
    return number


def percentage(value: Any) -> Decimal:
    """A percentage written "7%", 7 or "7": the number of percent (7), above zero."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.endswith("%"):
        text = text[:-1].strip()
    try:
        return positive_number(text)
    except ValueError:
        raise ValueError(f"must be a percentage such as \"7%\", not {value!r}") from None


def whole_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise ValueError(f"must be a whole number, not {value!r}")
    number = as_decimal(value)
    if number is None or number != number.to_integral_value() or number < 1:
        raise ValueError(f"must be a whole number of at least 1, not {value!r}")
    return int(number)


def switch(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def duration(value: Any) -> Decimal:
    """A duration in seconds ("5m", "90s", 300) through the site file's own parser."""
    from .config import parse_duration  # config validates the whole site, this module included

    seconds = Decimal(repr(parse_duration(value)))
    return Decimal(int(seconds)) if seconds == seconds.to_integral_value() else seconds


def parse_options(options: Mapping[str, Any], spec: Mapping[str, tuple[Any, Callable[[Any], Any]]]) -> dict[str, Any]:
    """Options checked against ``spec`` (name -> (default, parser)): every default filled
    in, every written value parsed; ValueError ``"<option>: <what is wrong>"`` otherwise."""
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a mapping, not {type(options).__name__}")
    for key in options:
        if key not in spec:
            known = ", ".join(spec) or "none"
            raise ValueError(f"{key}: unknown option; known: {known}{_suggest(str(key), spec)}")
    parsed: dict[str, Any] = {}
    for key, (default, parser) in spec.items():
        try:
            parsed[key] = parser(options.get(key, default))
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return parsed


@attrs.frozen
class BuiltinRuleType:
    """A rule type made of an option spec and a factory: ``make`` checks the options and
    hands them, parsed, to ``factory`` as keyword arguments (plus ``name``)."""

    name: str
    description: str
    options: Mapping[str, tuple[Any, Callable[[Any], Any]]]
    factory: Callable[..., Rule]
    #: checks across options after each was parsed; raises ValueError "<option>: ..."
    check_options: Callable[[dict[str, Any]], None] | None = None

    def make(self, options: Mapping[str, Any]) -> Rule:
        parsed = parse_options(options, self.options)
        if self.check_options is not None:
            self.check_options(parsed)
        return self.factory(name=self.name, **parsed)


# --- alarms from readings and status words -------------------------------------------------


@attrs.frozen
class OfflineRule:
    """``meter_offline`` once the meter gave no answer for ``rounds`` visits in a row
    (readings all timeout, backed off, link error or not attempted — or no readings at all);
    ``meter_online`` when it answers again."""

    name: str
    rounds: int

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        if any(_answered(r) for r in view.readings):
            events = []
            if memory.get("offline"):
                events.append(alarm(view, self.name, "meter_online", "info", rounds=memory.get("missed", 0), since=memory.get("since")))
            memory.clear()
            return events
        missed = int(memory.get("missed", 0)) + 1
        memory["missed"] = missed
        memory.setdefault("since", view.at.isoformat())
        if missed >= self.rounds and not memory.get("offline"):
            memory["offline"] = True
            return [alarm(view, self.name, "meter_offline", "alarm", rounds=missed, since=memory["since"])]
        return []


@attrs.frozen
class ClockDriftRule:
    """``clock_drift`` when the meter's clock (``0-0:1.0.0``, naive local time) is more than
    ``limit`` seconds off the visit's end time in the site's zone; ``clock_drift_cleared``
    when it is back within. ``drift_seconds`` is meter minus reference (ahead: positive)."""

    name: str
    limit: Decimal

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        text = current_values(view).get(CLOCK)
        meter_time = _load_time(text)
        if meter_time is None:
            return []
        if meter_time.tzinfo is None:
            meter_time = meter_time.replace(tzinfo=view.zone)
        reference = view.at.astimezone(view.zone)
        drift = meter_time - reference
        drift_seconds = seconds_text(drift)
        off = abs(Decimal(drift_seconds)) > self.limit
        figures = {"drift_seconds": drift_seconds, "meter_time": text, "reference": reference, "limit_seconds": self.limit}
        if off and not memory.get("active"):
            memory["active"] = True
            return [alarm(view, self.name, "clock_drift", "alarm", **figures)]
        if not off and memory.get("active"):
            memory["active"] = False
            return [alarm(view, self.name, "clock_drift_cleared", "info", **figures)]
        return []


@attrs.frozen
class ReverseEnergyRule:
    """``reverse_energy`` once energy flows back: the export register ``1-0:2.8.0`` advanced
    by at least ``min`` since it was last read, active power ``1-0:1.7.0`` is negative, or
    DL/T 645 status word 1 has bit 4 (active power reverse) set. ``reverse_energy_cleared``
    when none holds on a visit that read at least one of them."""

    name: str
    min: Decimal

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        values = current_values(view)
        seen = False
        figures: dict[str, Any] = {}
        export = as_decimal(values.get(EXPORT))
        if export is not None:
            previous = as_decimal(memory.get("export"))
            memory["export"] = decimal_text(export)
            if previous is not None:
                seen = True
                if export - previous >= self.min:
                    figures["export_advance"] = export - previous
        power = as_decimal(values.get(POWER))
        if power is not None:
            seen = True
            if power < 0:
                figures["power"] = power
        word = as_word(values.get(STATUS_WORD_1))
        if word is not None:
            seen = True
            if word & W1_ACTIVE_REVERSE:
                figures["status_word"] = f"{word:04X}"
        if figures and not memory.get("active"):
            memory["active"] = True
            return [alarm(view, self.name, "reverse_energy", "alarm", **figures)]
        if seen and not figures and memory.get("active"):
            memory["active"] = False
            return [alarm(view, self.name, "reverse_energy_cleared", "info")]
        return []


def _each_register(view: MeterView, memory: dict[str, Any], quantities: Iterable[str],
                   judge: Callable[[MeterView, str, Decimal, dict[str, Any]], list[Event]]) -> list[Event]:
    """``judge`` each of ``quantities`` this visit read a value of, with its own memory."""
    values = current_values(view)
    events: list[Event] = []
    for quantity in quantities:
        value = as_decimal(values.get(quantity))
        if value is not None:
            events.extend(judge(view, quantity, value, memory.setdefault(quantity, {})))
    return events


def _baseline(state: dict[str, Any], value: Decimal, at: datetime) -> None:
    """Start a register's consumption history afresh at ``value``, read at ``at``."""
    state.clear()
    state.update(value=decimal_text(value), at=at.isoformat(), base=decimal_text(value), base_at=at.isoformat(),
                 intervals=0)


@attrs.frozen
class ConsumptionJumpRule:
    """``consumption_jump`` when a total register's rate (advance per hour) since the last
    visit exceeds ``factor`` times its usual rate and the advance is at least ``min``;
    ``consumption_jump_cleared`` at the first interval back within.

    The usual rate is the plain time-weighted average since the baseline: (value at the last
    visit − value at the baseline) / hours between them, so irregular visits weigh by their
    length; a jump counts into it afterwards, so a lasting new level stops alarming. It needs
    two intervals before the one judged. A register that went backwards raises
    ``register_backwards`` instead and becomes the new baseline."""

    name: str
    factor: Decimal
    min: Decimal

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        return _each_register(view, memory, TOTAL_REGISTERS, self._register)

    def _register(self, view: MeterView, quantity: str, value: Decimal, state: dict[str, Any]) -> list[Event]:
        last, last_at = as_decimal(state.get("value")), _load_time(state.get("at"))
        if last is None or last_at is None:
            _baseline(state, value, view.at)
            return []
        hours = Decimal(seconds_text(view.at - last_at)) / 3600
        if hours <= 0:
            return []  # no time has passed: no rate to judge
        events: list[Event] = []
        advance = value - last
        if advance < 0:
            if state.get("jumping"):
                events.append(alarm(view, self.name, "consumption_jump_cleared", "info", quantity=quantity))
            events.append(alarm(view, self.name, "register_backwards", "alarm", quantity=quantity, previous=last, value=value))
            _baseline(state, value, view.at)
            return events
        intervals = int(state.get("intervals", 0))
        rate = advance / hours
        if intervals >= 2:
            base, base_at = as_decimal(state.get("base")), _load_time(state.get("base_at"))
            span = Decimal(seconds_text(last_at - base_at)) / 3600 if base_at is not None else Decimal(0)
            if base is not None and span > 0:
                usual = (last - base) / span
                jump = advance >= self.min and rate > self.factor * usual
                figures = {"quantity": quantity, "advance": advance, "rate": decimal_text(rate, 4), "usual_rate": decimal_text(usual, 4), "hours": decimal_text(hours, 4)}
                if jump and not state.get("jumping"):
                    state["jumping"] = True
                    events.append(alarm(view, self.name, "consumption_jump", "alarm", **figures))
                elif not jump and state.get("jumping"):
                    state["jumping"] = False
                    events.append(alarm(view, self.name, "consumption_jump_cleared", "info", **figures))
        state.update(value=decimal_text(value), at=view.at.isoformat(), intervals=intervals + 1)
        return events


@attrs.frozen
class ContinuousFlowRule:
    """``continuous_flow`` (a leak) when a water or gas volume advanced by at least
    ``min_flow`` in every interval between visits for at least ``hours`` in a row (equal
    counts); ``continuous_flow_cleared`` at the first interval with less."""

    name: str
    hours: Decimal
    min_flow: Decimal

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        return _each_register(view, memory, FLOW_REGISTERS, self._register)

    def _register(self, view: MeterView, quantity: str, value: Decimal, state: dict[str, Any]) -> list[Event]:
        last, last_at = as_decimal(state.get("value")), _load_time(state.get("at"))
        state.update(value=decimal_text(value), at=view.at.isoformat())
        if last is None or last_at is None or view.at <= last_at:
            return []
        events: list[Event] = []
        if value - last >= self.min_flow:
            if "since" not in state:
                state.update(since=last_at.isoformat(), since_value=decimal_text(last))
            since = _load_time(state["since"])
            start_value = as_decimal(state.get("since_value"))
            if since is None or start_value is None:  # a memory written by hand: start afresh
                state.update(since=last_at.isoformat(), since_value=decimal_text(last))
                since, start_value = last_at, last
            span = Decimal(seconds_text(view.at - since)) / 3600
            if span >= self.hours and not state.get("active"):
                state["active"] = True
                events.append(
                    alarm(view, self.name, "continuous_flow", "alarm", quantity=quantity, since=since, volume=value - start_value, hours=decimal_text(span, 4))
                )
            return events
        if state.get("active"):
            events.append(alarm(view, self.name, "continuous_flow_cleared", "info", quantity=quantity, since=state.get("since")))
        for key in ("since", "since_value", "active"):
            state.pop(key, None)
        return events


@attrs.frozen
class TamperRule:
    """Meter tampering: ``cover_open`` and ``magnetic_tamper`` each time their counters
    (``0-0:96.20.0``, ``0-0:96.20.1``) grew since the last visit that read them;
    ``battery_low`` (warning) once and ``battery_low_cleared`` from CJ/T 188's battery flag
    or DL/T 645 status word 1 bits 2 (clock battery) and 3 (meter-reading battery)."""

    name: str
    cover: bool
    magnetic: bool
    battery: bool

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        values = current_values(view)
        events: list[Event] = []
        for wanted, quantity, kind, key in ((self.cover, COVER_COUNT, "cover_open", "cover"), (self.magnetic, MAGNETIC_COUNT, "magnetic_tamper", "magnetic")):
            count = as_decimal(values.get(quantity)) if wanted else None
            if count is None:
                continue
            before = as_decimal(memory.get(key))
            memory[key] = decimal_text(count)
            if before is not None and count > before:
                events.append(alarm(view, self.name, kind, "alarm", count_before=before, count_after=count))
        if self.battery:
            events.extend(self._battery(view, values, memory))
        return events

    def _battery(self, view: MeterView, values: Mapping[str, Any], memory: dict[str, Any]) -> list[Event]:
        reasons: list[str] = []
        seen = False
        flag = as_flag(values.get(BATTERY_LOW_FLAG))
        if flag is not None:
            seen = True
            if flag:
                reasons.append("battery flag")
        word = as_word(values.get(STATUS_WORD_1))
        if word is not None:
            seen = True
            if word & W1_CLOCK_BATTERY:
                reasons.append("clock battery")
            if word & W1_READING_BATTERY:
                reasons.append("meter-reading battery")
        if reasons and not memory.get("battery_low"):
            memory["battery_low"] = True
            return [alarm(view, self.name, "battery_low", "warning", batteries=reasons)]
        if seen and not reasons and memory.get("battery_low"):
            memory["battery_low"] = False
            return [alarm(view, self.name, "battery_low_cleared", "info")]
        return []


@attrs.frozen
class BalanceLowRule:
    """A prepaid balance running out: ``balance_low`` (warning) once below ``threshold``,
    ``balance_exhausted`` (alarm) once at or below ``critical`` (both when it falls straight
    through), ``balance_restored`` (info) when a recharge lifts it to the threshold or above.
    A partial recharge that leaves it low but above critical raises nothing, and arms
    ``balance_exhausted`` again."""

    name: str
    threshold: Decimal
    critical: Decimal

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        balance = as_decimal(view.balance)
        if balance is None:
            return []
        figures = {"balance": balance, "threshold": self.threshold, "critical": self.critical}
        state = memory.get("state", "ok")
        new = "exhausted" if balance <= self.critical else "low" if balance < self.threshold else "ok"
        memory["state"] = new
        events: list[Event] = []
        if new != "ok" and state == "ok":
            events.append(alarm(view, self.name, "balance_low", "warning", **figures))
        if new == "exhausted" and state != "exhausted":
            events.append(alarm(view, self.name, "balance_exhausted", "alarm", **figures))
        if new == "ok" and state != "ok":
            events.append(alarm(view, self.name, "balance_restored", "info", **figures))
        return events


# --- power quality -----------------------------------------------------------------------


@attrs.frozen
class Condition:
    """One power-quality condition seen on a visit: its kind (``pq_voltage_sag``), which way
    its extreme runs ("low": the lowest value, "high": the highest), value and limit."""

    kind: str
    direction: str
    value: Decimal
    limit: Decimal


def track_conditions(view: MeterView, rule: str, memory: dict[str, Any], seen: Mapping[str, Condition | None]) -> list[Event]:
    """Start and end events from this visit's conditions by phase (``seen``: phase -> the
    condition holding, or None for none; a phase left out is unknown this visit and keeps
    its state). A phase keeps one condition at a time: when another takes over, the old one
    ends and the new one starts on the same visit. Phases "" are quantities without one."""
    events: list[Event] = []
    for phase, condition in seen.items():
        active = memory.get(phase)
        if isinstance(active, dict) and (condition is None or (condition.kind, condition.direction) != (active.get("kind"), active.get("direction"))):
            start = _load_time(active.get("start"))
            end_data = {
                "state": "end",
                "phase": phase or None,
                "start": active.get("start"),
                "end": view.at,
                "extreme": active.get("extreme"),
                "limit": active.get("limit"),
                "duration_seconds": seconds_text(view.at - start) if start is not None else None,
                "direction": active.get("direction"),
            }
            events.append(alarm(view, rule, str(active.get("kind")), "info", **end_data))
            memory.pop(phase, None)
            active = None
        if condition is None:
            continue
        if active is None:
            memory[phase] = {
                "kind": condition.kind,
                "direction": condition.direction,
                "start": view.at.isoformat(),
                "extreme": decimal_text(condition.value),
                "limit": decimal_text(condition.limit),
            }
            events.append(
                alarm(view, rule, condition.kind, "warning", state="start", phase=phase or None, start=view.at, value=condition.value, limit=condition.limit, direction=condition.direction)
            )
            continue
        extreme = as_decimal(active.get("extreme"))
        lower, higher = extreme is None or condition.value < extreme, extreme is None or condition.value > extreme
        if (condition.direction == "low" and lower) or (condition.direction == "high" and higher):
            active["extreme"] = decimal_text(condition.value)
    return events


def _phase_values(view: MeterView, phases: Sequence[tuple[str, str]]) -> dict[str, Decimal]:
    values = current_values(view)
    found = {}
    for phase, quantity in phases:
        number = as_decimal(values.get(quantity))
        if number is not None:
            found[phase] = number
    return found


@attrs.frozen
class VoltageRule:
    """Voltage quality per phase against ``nominal`` volts, limits in percent of nominal.

    One condition per phase, the worst winning: a phase loss (below ``loss``, zero, or a
    configured phase the meter answered with an error or "not supported") is not also a sag; a sag
    (below ``sag``) or swell (above ``swell``) is not also a deviation (outside
    ±``deviation``). A value equal to a limit is on the good side of it."""

    name: str
    nominal: Decimal
    deviation: Decimal
    sag: Decimal
    swell: Decimal
    loss: Decimal

    def _limit(self, percent: Decimal) -> Decimal:
        return self.nominal * percent / 100

    def classify(self, volts: Decimal) -> Condition | None:
        """The condition ``volts`` shows on one phase, or None when it is fine."""
        low_dev, high_dev = self._limit(100 - self.deviation), self._limit(100 + self.deviation)
        if volts <= 0 or volts < self._limit(self.loss):
            return Condition("pq_phase_loss", "low", max(volts, Decimal(0)), self._limit(self.loss))
        if volts < self._limit(self.sag):
            return Condition("pq_voltage_sag", "low", volts, self._limit(self.sag))
        if volts > self._limit(self.swell):
            return Condition("pq_voltage_swell", "high", volts, self._limit(self.swell))
        if volts < low_dev:
            return Condition("pq_voltage_deviation", "low", volts, low_dev)
        if volts > high_dev:
            return Condition("pq_voltage_deviation", "high", volts, high_dev)
        return None

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        volts = _phase_values(view, VOLTAGES)
        seen: dict[str, Condition | None] = {phase: self.classify(value) for phase, value in volts.items()}
        refused = {r.quantity for r in view.readings if _quality(r) in _NO_VALUE_GIVEN}
        for phase, quantity in VOLTAGES:
            if phase not in volts and quantity in refused and quantity in view.meter.quantities:
                seen[phase] = Condition("pq_phase_loss", "low", Decimal(0), self._limit(self.loss))
        ordered = {phase: seen[phase] for phase, _ in VOLTAGES if phase in seen}
        return track_conditions(view, self.name, memory, ordered)


def _check_voltage(options: dict[str, Any]) -> None:
    if options["sag"] >= 100:
        raise ValueError("sag: must be a percentage below 100%")
    if options["loss"] >= options["sag"]:
        raise ValueError(f"loss: must be below sag ({decimal_text(options['sag'])}%)")
    if options["swell"] <= 100:
        raise ValueError("swell: must be a percentage above 100%")
    if options["deviation"] >= 100:
        raise ValueError("deviation: must be a percentage below 100%")


@attrs.frozen
class CurrentImbalanceRule:
    """``pq_current_imbalance`` while (max − min) / max of the phase currents, in percent,
    is above ``limit`` and the largest current is at least ``min_current`` amperes. Needs two
    phase currents or more; the event's phase is None, values are percent."""

    name: str
    limit: Decimal
    min_current: Decimal

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        amps = [abs(value) for value in _phase_values(view, CURRENTS).values()]
        if len(amps) < 2:
            return []
        high, low = max(amps), min(amps)
        condition = None
        if high >= self.min_current and high > 0:
            imbalance = (high - low) / high * 100
            if imbalance > self.limit:  # judged exactly, reported to 0.01 %
                shown = imbalance.quantize(Decimal("0.01")).normalize()
                condition = Condition("pq_current_imbalance", "high", shown, self.limit)
        return track_conditions(view, self.name, memory, {"": condition})


@attrs.frozen
class FrequencyRule:
    """``pq_frequency_deviation`` while ``1-0:14.7.0`` is more than ``deviation`` Hz from
    ``nominal``; under- and over-frequency are separate conditions (direction low/high)."""

    name: str
    nominal: Decimal
    deviation: Decimal

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        hertz = as_decimal(current_values(view).get(FREQUENCY))
        if hertz is None:
            return []
        condition = None
        if hertz < self.nominal - self.deviation:
            condition = Condition("pq_frequency_deviation", "low", hertz, self.nominal - self.deviation)
        elif hertz > self.nominal + self.deviation:
            condition = Condition("pq_frequency_deviation", "high", hertz, self.nominal + self.deviation)
        return track_conditions(view, self.name, memory, {"": condition})


@attrs.frozen
class PowerFactorRule:
    """``pq_low_power_factor`` while |``1-0:13.7.0``| is below ``min``, judged only while the
    meter draws power (``1-0:1.7.0`` not zero, or not read this visit); at zero power a
    low power factor means nothing and a running condition ends."""

    name: str
    min: Decimal

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        values = current_values(view)
        factor = as_decimal(values.get(POWER_FACTOR))
        if factor is None:
            return []
        power = as_decimal(values.get(POWER))
        condition = None
        if (power is None or power != 0) and abs(factor) < self.min:
            condition = Condition("pq_low_power_factor", "low", abs(factor), self.min)
        return track_conditions(view, self.name, memory, {"": condition})


def _power_factor(value: Any) -> Decimal:
    number = positive_number(value)
    if number > 1:
        raise ValueError(f"must be at most 1, not {decimal_text(number)}")
    return number


def _check_balance(options: dict[str, Any]) -> None:
    if options["critical"] >= options["threshold"]:
        raise ValueError(f"critical: must be below threshold ({decimal_text(options['threshold'])})")


BUILTIN_RULE_TYPES: tuple[RuleType, ...] = (
    BuiltinRuleType("offline", "a meter that did not answer for several visits in a row", {"rounds": (3, whole_number)}, OfflineRule),
    BuiltinRuleType("clock_drift", "a meter clock off the concentrator's by more than a limit", {"limit": ("5m", duration)}, ClockDriftRule),
    BuiltinRuleType("reverse_energy", "energy flowing back: export advancing, negative power, reverse flag", {"min": ("0.01", positive_number)}, ReverseEnergyRule),
    BuiltinRuleType(
        "consumption_jump",
        "a total register advancing far faster than usual, or running backwards",
        {"factor": (5, positive_number), "min": ("1", non_negative_number)},
        ConsumptionJumpRule,
    ),
    BuiltinRuleType(
        "continuous_flow",
        "water or gas flowing without a pause for hours (a leak)",
        {"hours": (24, positive_number), "min_flow": ("0.001", positive_number)},
        ContinuousFlowRule,
    ),
    BuiltinRuleType(
        "tamper",
        "cover opened, magnetic interference, battery low",
        {"cover": (True, switch), "magnetic": (True, switch), "battery": (True, switch)},
        TamperRule,
    ),
    BuiltinRuleType(
        "balance_low",
        "a prepaid balance running low or out",
        {"threshold": ("20", _number), "critical": ("0", _number)},
        BalanceLowRule,
        _check_balance,
    ),
    BuiltinRuleType(
        "voltage",
        "voltage deviation, sag, swell and phase loss per phase",
        {
            "nominal": (220, positive_number),
            "deviation": ("7%", percentage),
            "sag": ("90%", percentage),
            "swell": ("110%", percentage),
            "loss": ("60%", percentage),
        },
        VoltageRule,
        _check_voltage,
    ),
    BuiltinRuleType(
        "current_imbalance",
        "phase currents out of balance",
        {"limit": ("30%", percentage), "min_current": ("0.5", non_negative_number)},
        CurrentImbalanceRule,
    ),
    BuiltinRuleType("frequency", "supply frequency off nominal", {"nominal": (50, positive_number), "deviation": ("0.2", positive_number)}, FrequencyRule),
    BuiltinRuleType("power_factor", "a low power factor while power is drawn", {"min": ("0.85", _power_factor)}, PowerFactorRule),
)


# --- configuration and the engine ----------------------------------------------------------


def rules_from_config(section: Any, types: Mapping[str, RuleType]) -> list[Rule]:
    """The ``alarms:`` mapping -> running rules, in the order written. Each key names a rule
    type; its value is a mapping of options, ``true`` or empty (defaults) or ``false`` (off).
    ValueError naming the key path (``alarms.voltage.sag: ...``) for anything wrong."""
    if section is None:
        return []
    if not isinstance(section, Mapping):
        raise ValueError("alarms: must be a mapping of alarm rule names to true, false or options")
    rules: list[Rule] = []
    for key, value in section.items():
        if not isinstance(key, str) or key not in types:
            known = ", ".join(sorted(types)) or "none"
            raise ValueError(f"alarms.{key}: unknown alarm rule; known: {known}{_suggest(str(key), types)}")
        if value is False:
            continue
        if value is True or value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ValueError(f"alarms.{key}: write true, false or a mapping of options, not {value!r}")
        try:
            rule = types[key].make(value)
        except ValueError as exc:
            message = str(exc)
            option = message.split(":", 1)[0] if ":" in message else ""
            named = option.replace("_", "").replace("-", "").isalnum()  # "<option>: ..." as the contract asks
            raise ValueError(f"alarms.{key}.{message}" if named else f"alarms.{key}: {message}") from None
        except Exception as exc:  # a plugin's rule type is broken: say which, keep the config path
            raise ValueError(f"alarms.{key}: the rule type failed: {type(exc).__name__}: {exc}") from exc
        rules.append(rule)
    return rules


class AlarmEngine:
    """Runs every rule on each meter visit and keeps each rule's memory per meter.

    A rule that raises (or returns something other than events, or leaves a memory that is
    not JSON) is logged and reported once per meter as ``alarm_rule_failed`` until it works
    again; its memory is left as it was before the failed check, and the other rules run."""

    SNAPSHOT_VERSION = 1

    def __init__(self, rules: Sequence[Rule]) -> None:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"alarm rules named twice: {', '.join(duplicates)}")
        self.rules = tuple(rules)
        self._memory: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
        self._failed: dict[str, set[str]] = {name: set() for name in names}

    def check(self, view: MeterView) -> list[Event]:
        """Every rule's events for this visit, in rule order."""
        events: list[Event] = []
        for rule in self.rules:
            store = self._memory[rule.name]
            memory = copy.deepcopy(store.get(view.source, {}))
            try:
                produced = list(rule.check(view, memory))
                for event in produced:
                    if not isinstance(event, Event):
                        raise TypeError(f"returned {type(event).__name__}, not an Event")
                json.dumps(memory)  # the memory must survive a restart
            except Exception as exc:
                failed = self._failed[rule.name]
                # the traceback once per meter, while it is reported; then quietly until it works
                level = logging.DEBUG if view.source in failed else logging.WARNING
                log.log(level, "alarm rule %s failed for %s: %s", rule.name, view.source, exc, exc_info=True)
                if view.source not in failed:
                    failed.add(view.source)
                    data = {"rule": rule.name, "meter": view.meter.address, "error": f"{type(exc).__name__}: {exc}"}
                    events.append(Event("alarm_rule_failed", view.source, timestamp=view.at, severity="warning", data=data))
                continue
            store[view.source] = memory
            self._failed[rule.name].discard(view.source)
            events.extend(produced)
        return events

    def memory(self, of: Callable[[str], bool] | None = None) -> dict[str, Any]:
        """A JSON-able snapshot of every rule's memory and of the rules reported failing;
        ``of``: only the meters (sources) it takes (a master station keeps one terminal's)."""
        def kept(source: str) -> bool:
            return of is None or of(source)

        return {
            "version": self.SNAPSHOT_VERSION,
            "rules": {name: {source: copy.deepcopy(state) for source, state in states.items() if kept(source)}
                      for name, states in self._memory.items()},
            "failed": {name: found for name, sources in self._failed.items()
                       if (found := sorted(s for s in sources if kept(s)))},
        }

    def restore(self, memory: Mapping[str, Any], of: Callable[[str], bool] | None = None) -> None:
        """Memories from a :meth:`memory` snapshot (after a restart). Rules the snapshot does
        not know start afresh; entries of rules no longer configured are dropped. ``of``:
        only the meters (sources) it takes are replaced by the snapshot's, the others kept."""
        if not isinstance(memory, Mapping) or not isinstance(memory.get("rules", {}), Mapping):
            raise ValueError("not an alarm memory snapshot")

        def replaced(source: str) -> bool:
            return of is None or of(source)

        rules = memory.get("rules", {})
        failed = memory.get("failed", {}) if isinstance(memory.get("failed", {}), Mapping) else {}
        for name in self._memory:
            saved = rules.get(name, {})
            states = {source: state for source, state in self._memory[name].items() if not replaced(source)}
            if isinstance(saved, Mapping):
                states.update({str(source): copy.deepcopy(dict(state)) for source, state in saved.items()
                               if isinstance(state, Mapping) and replaced(str(source))})
            self._memory[name] = states
            sources = failed.get(name, [])
            self._failed[name] = {s for s in self._failed[name] if not replaced(s)} | (
                {str(s) for s in sources if replaced(str(s))} if isinstance(sources, list) else set())
