"""Alarm rules and the alarm engine: sequences of meter visits with hand-computed events."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest

from meterhub.alarms import (
    BUILTIN_RULE_TYPES,
    AlarmEngine,
    MeterView,
    Rule,
    RuleType,
    rules_from_config,
)
from meterhub.model import Event, Meter, Quality, Reading
from meterhub.plugins import Plugins

TYPES = {rule_type.name: rule_type for rule_type in BUILTIN_RULE_TYPES}
#: a fixed UTC+8 zone, as the meters' clocks of a site in China keep
ZONE = timezone(timedelta(hours=8))
T0 = datetime(2026, 10, 5, 6, 0, tzinfo=UTC)  # 14:00 local
HOUR = timedelta(hours=1)

VOLTS = ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")
AMPS = ("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0")
ELECTRICITY = Meter(
    "000000000001",
    "dlt645",
    "bus1",
    quantities=("1-0:1.8.0", "1-0:2.8.0", "1-0:1.7.0", *VOLTS, *AMPS, "1-0:13.7.0", "1-0:14.7.0", "0-0:1.0.0", "0-0:96.5.1"),
)
WATER = Meter("11223344556677", "cjt188", "bus2", quantities=("8-0:1.0.0", "0-0:96.6.0"))


def ok(quantity: str, value: Any, meter: Meter = ELECTRICITY) -> Reading:
    if isinstance(value, (int, str)) and not isinstance(value, bool) and quantity != "0-0:1.0.0" and not str(value).isalpha():
        value = Decimal(str(value))
    return Reading(meter.address, quantity, value, "", T0)


def failed(quantity: str, quality: Quality = Quality.TIMEOUT, meter: Meter = ELECTRICITY) -> Reading:
    return Reading(meter.address, quantity, None, "", T0, quality=quality)


def visit(at: datetime, *readings: Reading, meter: Meter = ELECTRICITY, balance: Decimal | None = None) -> MeterView:
    return MeterView(meter.key, meter, readings, at, ZONE, balance)


def make(name: str, **options: Any) -> Rule:
    return TYPES[name].make(options)


def drive(rule: Rule, *views: MeterView) -> list[list[tuple[str, dict[str, Any]]]]:
    """Each visit's events as (kind, data) pairs, the rule's memory kept between visits."""
    memory: dict[str, Any] = {}
    out = []
    for view in views:
        out.append([(event.kind, dict(event.data)) for event in rule.check(view, memory)])
    return out


def kinds(results: list[list[tuple[str, dict[str, Any]]]]) -> list[list[str]]:
    return [[kind for kind, _ in events] for events in results]


# --- configuration -------------------------------------------------------------------------


def test_every_builtin_is_a_rule_type_registered_by_the_default_plugin() -> None:
    registered = Plugins(load_entry_points=False).alarm_rules()
    expected = {
        "offline",
        "clock_drift",
        "reverse_energy",
        "consumption_jump",
        "continuous_flow",
        "tamper",
        "balance_low",
        "voltage",
        "current_imbalance",
        "frequency",
        "power_factor",
    }
    assert expected <= set(registered)
    assert all(isinstance(registered[name], RuleType) for name in expected)


def test_config_true_means_defaults_false_means_off_and_order_is_kept() -> None:
    rules = rules_from_config({"voltage": True, "offline": {"rounds": 5}, "tamper": False}, TYPES)
    assert [rule.name for rule in rules] == ["voltage", "offline"]
    assert rules[0] == make("voltage")
    assert rules[1] == make("offline", rounds=5)


def test_config_empty_value_means_defaults() -> None:
    # ``offline:`` with nothing after it reads as None in YAML
    assert rules_from_config({"offline": None}, TYPES) == [make("offline")]


def test_config_options_written_as_yaml_floats_read_as_plain_numbers() -> None:
    rule = make("voltage", nominal=230.0)
    (events,) = drive(rule, _phases(T0, l1="150", l2="230", l3="230"))
    assert events[0][1]["limit"] == "207"


def test_config_without_alarms_section_has_no_rules() -> None:
    assert rules_from_config(None, TYPES) == []


def test_config_unknown_rule_names_the_key_and_suggests() -> None:
    with pytest.raises(ValueError) as info:
        rules_from_config({"volts": True}, TYPES)
    message = str(info.value)
    assert message.startswith("alarms.volts: unknown alarm rule; known: balance_low, clock_drift")
    with pytest.raises(ValueError, match=r"^alarms\.ofline: unknown alarm rule; .*did you mean 'offline'\?$"):
        rules_from_config({"ofline": True}, TYPES)


def test_config_bad_option_names_the_key_path() -> None:
    with pytest.raises(ValueError, match=r"^alarms\.voltage\.sag: must be a percentage below 100%$"):
        rules_from_config({"voltage": {"sag": "120%"}}, TYPES)


def test_config_unknown_option_names_the_key_path_and_suggests() -> None:
    with pytest.raises(ValueError, match=r"^alarms\.offline\.round: unknown option; known: rounds; did you mean 'rounds'\?$"):
        rules_from_config({"offline": {"round": 2}}, TYPES)


def test_config_value_neither_bool_nor_mapping_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^alarms\.offline: write true, false or a mapping of options"):
        rules_from_config({"offline": "yes please"}, TYPES)


def test_config_section_must_be_a_mapping() -> None:
    with pytest.raises(ValueError, match=r"^alarms: must be a mapping"):
        rules_from_config(["offline"], TYPES)


@pytest.mark.parametrize("written", ["7%", 7, "7", " 7 % "])
def test_percentages_may_be_written_with_or_without_the_sign(written: Any) -> None:
    assert make("voltage", deviation=written) == make("voltage", deviation=Decimal(7))


@pytest.mark.parametrize(("written", "seconds"), [("5m", Decimal(300)), ("90s", Decimal(90)), (120, Decimal(120))])
def test_clock_drift_limit_is_a_duration(written: Any, seconds: Decimal) -> None:
    assert make("clock_drift", limit=written).limit == seconds


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("clock_drift", {"limit": "soon"}, r"^alarms\.clock_drift\.limit: not a duration"),
        ("offline", {"rounds": True}, r"^alarms\.offline\.rounds: must be a whole number"),
        ("offline", {"rounds": 0}, r"^alarms\.offline\.rounds: must be a whole number of at least 1"),
        ("balance_low", {"threshold": 10, "critical": 10}, r"^alarms\.balance_low\.critical: must be below threshold \(10\)$"),
        ("voltage", {"swell": "95%"}, r"^alarms\.voltage\.swell: must be a percentage above 100%$"),
        ("voltage", {"loss": "95%"}, r"^alarms\.voltage\.loss: must be below sag \(90%\)$"),
        ("voltage", {"nominal": "high"}, r"^alarms\.voltage\.nominal: must be a number"),
        ("power_factor", {"min": "1.2"}, r"^alarms\.power_factor\.min: must be at most 1"),
        ("tamper", {"cover": "no"}, r"^alarms\.tamper\.cover: must be true or false"),
    ],
)
def test_bad_options_name_their_key_path(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules_from_config({name: options}, TYPES)


@attrs.frozen
class QuietHoursRule:
    """A vendor's rule: an event for every visit that read a meter with a given name."""

    name: str
    label: str

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        memory["visits"] = memory.get("visits", 0) + 1
        return [Event("vendor_seen", view.source, view.at, "info", {"rule": self.name, "label": self.label, "visits": memory["visits"]})]


@attrs.frozen
class QuietHoursType:
    name: str = "vendor_seen"
    description: str = "a plugin's own alarm rule"

    def make(self, options: Mapping[str, Any]) -> Rule:
        if set(options) - {"label"}:
            raise ValueError(f"{min(set(options) - {'label'})}: unknown option; known: label")
        return QuietHoursRule(self.name, str(options.get("label", "none")))


def test_a_plugin_rule_type_works_through_config_and_engine() -> None:
    assert isinstance(QuietHoursType(), RuleType)
    rules = rules_from_config({"vendor_seen": {"label": "x"}, "offline": True}, {**TYPES, "vendor_seen": QuietHoursType()})
    engine = AlarmEngine(rules)
    events = engine.check(visit(T0, ok("1-0:1.8.0", "1")))
    events = engine.check(visit(T0 + HOUR, ok("1-0:1.8.0", "1")))
    assert [(e.kind, dict(e.data)) for e in events] == [("vendor_seen", {"rule": "vendor_seen", "label": "x", "visits": 2})]
    with pytest.raises(ValueError, match=r"^alarms\.vendor_seen\.colour: unknown option; known: label$"):
        rules_from_config({"vendor_seen": {"colour": "red"}}, {"vendor_seen": QuietHoursType()})


# --- offline -------------------------------------------------------------------------------


def test_offline_after_three_missed_visits_once_then_online() -> None:
    missed = failed("1-0:1.8.0")
    results = drive(
        make("offline"),
        visit(T0, missed),
        visit(T0 + HOUR, failed("1-0:1.8.0", Quality.BACKED_OFF)),
        visit(T0 + 2 * HOUR, failed("1-0:1.8.0", Quality.LINK_ERROR)),
        visit(T0 + 3 * HOUR, missed),
        visit(T0 + 4 * HOUR, ok("1-0:1.8.0", "5")),
    )
    assert kinds(results) == [[], [], ["meter_offline"], [], ["meter_online"]]
    assert results[2][0][1] == {"rule": "offline", "meter": "000000000001", "rounds": 3, "since": "2026-10-05T06:00:00+00:00"}


def test_offline_a_garbled_answer_is_still_an_answer() -> None:
    garbled = failed("1-0:1.8.0", Quality.CHECKSUM_ERROR)
    missed = failed("1-0:1.8.0")
    results = drive(make("offline", rounds=2), visit(T0, missed), visit(T0 + HOUR, garbled), visit(T0 + 2 * HOUR, missed))
    assert kinds(results) == [[], [], []]


# --- clock drift ---------------------------------------------------------------------------


def test_clock_drift_beyond_limit_raised_once_then_cleared() -> None:
    # view.at 06:03:00 UTC is 14:03:00 at UTC+8; the meter says 14:08:01: 301 s ahead
    at = T0 + timedelta(minutes=3)
    results = drive(
        make("clock_drift"),
        visit(at, ok("0-0:1.0.0", "2026-10-05T14:08:01")),
        visit(at + HOUR, ok("0-0:1.0.0", "2026-10-05T15:09:00")),
        visit(at + 2 * HOUR, ok("0-0:1.0.0", "2026-10-05T16:03:30")),
    )
    assert kinds(results) == [["clock_drift"], [], ["clock_drift_cleared"]]
    assert results[0][0][1] == {
        "rule": "clock_drift",
        "meter": "000000000001",
        "drift_seconds": "301",
        "meter_time": "2026-10-05T14:08:01",
        "reference": "2026-10-05T14:03:00+08:00",
        "limit_seconds": "300",
    }
    assert results[2][0][1]["drift_seconds"] == "30"


def test_clock_drift_equal_to_limit_is_within() -> None:
    results = drive(make("clock_drift", limit="90s"), visit(T0, ok("0-0:1.0.0", "2026-10-05T13:58:30")))
    assert results == [[]]


def test_clock_drift_meter_behind_is_negative() -> None:
    results = drive(make("clock_drift", limit="90s"), visit(T0, ok("0-0:1.0.0", "2026-10-05T13:58:29")))
    assert results[0][0][1]["drift_seconds"] == "-91"


def test_clock_drift_skips_a_clock_it_cannot_parse() -> None:
    results = drive(make("clock_drift"), visit(T0, ok("0-0:1.0.0", "25:99")), visit(T0, failed("0-0:1.0.0")))
    assert results == [[], []]


# --- reverse energy ------------------------------------------------------------------------


def test_reverse_energy_from_export_advancing_by_min() -> None:
    results = drive(
        make("reverse_energy"),
        visit(T0, ok("1-0:2.8.0", "10.00")),
        visit(T0 + HOUR, ok("1-0:2.8.0", "10.01")),  # advance 0.01 = min: counts
        visit(T0 + 2 * HOUR, ok("1-0:2.8.0", "10.05")),
        visit(T0 + 3 * HOUR, ok("1-0:2.8.0", "10.05")),
    )
    assert kinds(results) == [[], ["reverse_energy"], [], ["reverse_energy_cleared"]]
    assert results[1][0][1] == {"rule": "reverse_energy", "meter": "000000000001", "export_advance": "0.01"}


def test_reverse_energy_export_advance_below_min_is_ignored() -> None:
    results = drive(make("reverse_energy"), visit(T0, ok("1-0:2.8.0", "10.00")), visit(T0 + HOUR, ok("1-0:2.8.0", "10.009")))
    assert results == [[], []]


def test_reverse_energy_from_negative_power() -> None:
    results = drive(make("reverse_energy"), visit(T0, ok("1-0:1.7.0", "-1.25")))
    assert results == [[("reverse_energy", {"rule": "reverse_energy", "meter": "000000000001", "power": "-1.25"})]]


def test_reverse_energy_from_status_word_bit4() -> None:
    results = drive(
        make("reverse_energy"),
        visit(T0, ok("0-0:96.5.1", "16")),  # 0010h: bit 4
        visit(T0 + HOUR, ok("0-0:96.5.1", "16")),
        visit(T0 + 2 * HOUR, ok("0-0:96.5.1", "8")),  # bit 3 only: not reverse
    )
    assert kinds(results) == [["reverse_energy"], [], ["reverse_energy_cleared"]]
    assert results[0][0][1]["status_word"] == "0010"


@pytest.mark.parametrize(("word", "kinds_seen"), [("0x0010", ["reverse_energy"]), ("0010h", ["reverse_energy"]), ("0x0008", []), ("zz", []), ("1.5", [])])
def test_reverse_energy_status_word_as_text(word: str, kinds_seen: list[str]) -> None:
    assert kinds(drive(make("reverse_energy"), visit(T0, Reading(ELECTRICITY.address, "0-0:96.5.1", word, "", T0)))) == [kinds_seen]


def test_reverse_energy_not_cleared_by_a_visit_that_read_nothing_relevant() -> None:
    results = drive(make("reverse_energy"), visit(T0, ok("1-0:1.7.0", "-1")), visit(T0 + HOUR, failed("1-0:1.7.0")))
    assert kinds(results) == [["reverse_energy"], []]


# --- consumption jump ----------------------------------------------------------------------


def _energy(*values: str, step: timedelta = HOUR) -> list[MeterView]:
    return [visit(T0 + n * step, ok("1-0:1.8.0", value)) for n, value in enumerate(values)]


def test_consumption_jump_raised_once_and_cleared() -> None:
    # 1 kWh/h for two hours, then 6 in one hour (> 5 x 1); then 42 (usual (108-100)/3 h,
    # times 5 = 13.33: still a jump, not raised again); then 1 (usual 50/4 = 12.5): cleared
    results = drive(make("consumption_jump"), *_energy("100", "101", "102", "108", "150", "151"))
    assert kinds(results) == [[], [], [], ["consumption_jump"], [], ["consumption_jump_cleared"]]
    assert results[3][0][1] == {
        "rule": "consumption_jump",
        "meter": "000000000001",
        "quantity": "1-0:1.8.0",
        "advance": "6",
        "rate": "6",
        "usual_rate": "1",
        "hours": "1",
    }


def test_consumption_jump_needs_two_earlier_intervals() -> None:
    assert drive(make("consumption_jump"), *_energy("100", "101", "150")) == [[], [], []]


def test_consumption_jump_rate_equal_to_factor_times_usual_is_not_a_jump() -> None:
    assert drive(make("consumption_jump"), *_energy("100", "101", "102", "107"))[-1] == []


def test_consumption_jump_advance_below_min_is_not_a_jump() -> None:
    # usual 0.1/h, then 0.7 in an hour: 7 times usual, but less than min 1
    assert drive(make("consumption_jump"), *_energy("100", "100.1", "100.2", "100.9"))[-1] == []


def test_register_backwards_is_not_a_jump() -> None:
    results = drive(make("consumption_jump"), *_energy("100", "101", "102", "50", "51", "52", "53"))
    assert kinds(results) == [[], [], [], ["register_backwards"], [], [], []]
    assert results[3][0][1] == {"rule": "consumption_jump", "meter": "000000000001", "quantity": "1-0:1.8.0", "previous": "102", "value": "50"}


# --- continuous flow -----------------------------------------------------------------------


def _water(*values: str) -> list[MeterView]:
    return [visit(T0 + n * HOUR, ok("8-0:1.0.0", value, WATER), meter=WATER) for n, value in enumerate(values)]


def test_continuous_flow_after_hours_of_flow_then_cleared() -> None:
    results = drive(make("continuous_flow", hours=3), *_water("10.000", "10.002", "10.004", "10.006", "10.010", "10.010"))
    assert kinds(results) == [[], [], [], ["continuous_flow"], [], ["continuous_flow_cleared"]]
    assert results[3][0][1] == {
        "rule": "continuous_flow",
        "meter": "11223344556677",
        "quantity": "8-0:1.0.0",
        "since": "2026-10-05T06:00:00+00:00",
        "volume": "0.006",
        "hours": "3",
    }


def test_continuous_flow_a_dry_interval_starts_the_count_again() -> None:
    results = drive(make("continuous_flow", hours=3), *_water("10.000", "10.002", "10.0025", "10.004", "10.006"))
    assert results == [[], [], [], [], []]


# --- tamper --------------------------------------------------------------------------------


def test_cover_open_when_the_counter_grows() -> None:
    results = drive(
        make("tamper"),
        visit(T0, ok("0-0:96.20.0", "2")),
        visit(T0 + HOUR, ok("0-0:96.20.0", "3")),
        visit(T0 + 2 * HOUR, ok("0-0:96.20.0", "3")),
    )
    assert results == [[], [("cover_open", {"rule": "tamper", "meter": "000000000001", "count_before": "2", "count_after": "3"})], []]


def test_magnetic_tamper_can_be_switched_off() -> None:
    views = (visit(T0, ok("0-0:96.20.1", "0")), visit(T0 + HOUR, ok("0-0:96.20.1", "1")))
    assert kinds(drive(make("tamper"), *views)) == [[], ["magnetic_tamper"]]
    assert drive(make("tamper", magnetic=False), *views) == [[], []]


def test_battery_low_from_dlt645_status_word_once_then_cleared() -> None:
    results = drive(
        make("tamper"),
        visit(T0, ok("0-0:96.5.1", "4")),  # bit 2: clock battery
        visit(T0 + HOUR, ok("0-0:96.5.1", "12")),  # bits 2 and 3
        visit(T0 + 2 * HOUR, ok("0-0:96.5.1", "16")),  # bit 4 only: batteries fine
    )
    assert kinds(results) == [["battery_low"], [], ["battery_low_cleared"]]
    assert results[0][0][1] == {"rule": "tamper", "meter": "000000000001", "batteries": ["clock battery"]}


def test_battery_low_from_cjt188_flag() -> None:
    results = drive(
        make("tamper"),
        visit(T0, ok("0-0:96.6.0", "true", WATER), meter=WATER),
        visit(T0 + HOUR, ok("0-0:96.6.0", "false", WATER), meter=WATER),
    )
    assert kinds(results) == [["battery_low"], ["battery_low_cleared"]]
    assert results[0][0][1]["batteries"] == ["battery flag"]


# --- balance -------------------------------------------------------------------------------


def _balances(*values: str | None) -> list[MeterView]:
    return [visit(T0 + n * HOUR, balance=None if v is None else Decimal(v)) for n, v in enumerate(values)]


def test_balance_low_exhausted_restored_each_once() -> None:
    results = drive(make("balance_low"), *_balances("25", "19.99", "15", "0", "-3", "50"))
    assert kinds(results) == [[], ["balance_low"], [], ["balance_exhausted"], [], ["balance_restored"]]
    assert results[1][0][1] == {"rule": "balance_low", "meter": "000000000001", "balance": "19.99", "threshold": "20", "critical": "0"}


def test_balance_equal_to_threshold_is_not_low() -> None:
    assert drive(make("balance_low"), *_balances("25", "20")) == [[], []]


def test_balance_falling_straight_through_raises_low_and_exhausted() -> None:
    assert kinds(drive(make("balance_low"), *_balances("25", "-1"))) == [[], ["balance_low", "balance_exhausted"]]


def test_balance_partial_recharge_rearms_exhausted_without_restoring() -> None:
    results = drive(make("balance_low"), *_balances("25", "0", "10", "0", "30"))
    assert kinds(results) == [[], ["balance_low", "balance_exhausted"], [], ["balance_exhausted"], ["balance_restored"]]


def test_balance_not_prepaid_is_ignored() -> None:
    assert drive(make("balance_low"), *_balances(None, None)) == [[], []]


# --- power quality -------------------------------------------------------------------------


def _phases(at: datetime, l1: Any = "220", l2: Any = "220", l3: Any = "220") -> MeterView:
    readings = [value if isinstance(value, Reading) else ok(q, value) for q, value in zip(VOLTS, (l1, l2, l3), strict=True)]
    return visit(at, *readings)


def test_voltage_sag_start_extreme_and_end() -> None:
    results = drive(
        make("voltage"),
        _phases(T0),
        _phases(T0 + HOUR, l2="190"),
        _phases(T0 + 2 * HOUR, l2="185.5"),
        _phases(T0 + 3 * HOUR, l2="188"),
        _phases(T0 + 4 * HOUR),
    )
    assert kinds(results) == [[], ["pq_voltage_sag"], [], [], ["pq_voltage_sag"]]
    start, end = results[1][0][1], results[4][0][1]
    assert start == {
        "rule": "voltage",
        "meter": "000000000001",
        "state": "start",
        "phase": "L2",
        "start": "2026-10-05T07:00:00+00:00",
        "value": "190",
        "limit": "198",
        "direction": "low",
    }
    assert end == {
        "rule": "voltage",
        "meter": "000000000001",
        "state": "end",
        "phase": "L2",
        "start": "2026-10-05T07:00:00+00:00",
        "end": "2026-10-05T10:00:00+00:00",
        "extreme": "185.5",
        "limit": "198",
        "duration_seconds": "10800",
        "direction": "low",
    }


def test_voltage_start_is_a_warning_and_end_is_info() -> None:
    rule = make("voltage")
    memory: dict[str, Any] = {}
    (start,) = rule.check(_phases(T0, l1="250"), memory)
    (end,) = rule.check(_phases(T0 + HOUR), memory)
    assert (start.kind, start.severity, start.source, start.timestamp) == ("pq_voltage_swell", "warning", "bus1/dlt645:000000000001", T0)
    assert (end.severity, end.timestamp) == ("info", T0 + HOUR)


@pytest.mark.parametrize(
    ("volts", "kind"),
    [
        ("204.6", None),  # 93% exactly: within the 7% deviation
        ("204.5", "pq_voltage_deviation"),
        ("198", "pq_voltage_deviation"),  # 90% exactly: not a sag, but 10% off
        ("197.9", "pq_voltage_sag"),
        ("132", "pq_voltage_sag"),  # 60% exactly: not a loss
        ("131.9", "pq_phase_loss"),
        ("0", "pq_phase_loss"),
        ("235.4", None),
        ("235.5", "pq_voltage_deviation"),
        ("242", "pq_voltage_deviation"),  # 110% exactly: not a swell
        ("242.1", "pq_voltage_swell"),
    ],
)
def test_voltage_one_condition_per_phase_limits_on_the_good_side(volts: str, kind: str | None) -> None:
    (events,) = drive(make("voltage"), _phases(T0, l3=volts))
    assert [k for k, _ in events] == ([] if kind is None else [kind])


def test_voltage_sag_deepening_into_phase_loss_ends_the_sag_and_starts_the_loss() -> None:
    results = drive(make("voltage"), _phases(T0, l1="190"), _phases(T0 + HOUR, l1="20"))
    assert [(k, d["state"]) for k, d in results[1]] == [("pq_voltage_sag", "end"), ("pq_phase_loss", "start")]
    assert results[1][0][1]["extreme"] == "190"
    assert results[1][1][1]["limit"] == "132"


def test_voltage_a_phase_the_meter_cannot_give_is_lost() -> None:
    results = drive(make("voltage"), _phases(T0, l3=failed("1-0:72.7.0", Quality.METER_ERROR)))
    assert results == [
        [
            (
                "pq_phase_loss",
                {
                    "rule": "voltage",
                    "meter": "000000000001",
                    "state": "start",
                    "phase": "L3",
                    "start": "2026-10-05T06:00:00+00:00",
                    "value": "0",
                    "limit": "132",
                    "direction": "low",
                },
            )
        ]
    ]


def test_voltage_a_phase_lost_in_transmission_says_nothing() -> None:
    results = drive(make("voltage"), _phases(T0, l3="100"), _phases(T0 + HOUR, l3=failed("1-0:72.7.0", Quality.TIMEOUT)))
    assert kinds(results) == [["pq_phase_loss"], []]


def test_voltage_nominal_and_percent_options() -> None:
    # 230 V nominal, sag at 85%: 195.5 V
    (events,) = drive(make("voltage", nominal=230, sag="85%"), _phases(T0, l1="230", l2="195.4", l3="230"))
    assert [(k, d["limit"]) for k, d in events] == [("pq_voltage_sag", "195.5")]


def _currents(at: datetime, *amps: str) -> MeterView:
    return visit(at, *(ok(q, a) for q, a in zip(AMPS, amps, strict=True)))


def test_current_imbalance_start_extreme_end() -> None:
    results = drive(
        make("current_imbalance"),
        _currents(T0, "10", "10", "6"),  # (10 - 6) / 10 = 40%
        _currents(T0 + HOUR, "10", "10", "5"),  # 50%
        _currents(T0 + 2 * HOUR, "10", "10", "7"),  # 30% exactly: not above the limit
    )
    assert kinds(results) == [["pq_current_imbalance"], [], ["pq_current_imbalance"]]
    assert results[0][0][1]["value"] == "40" and results[0][0][1]["phase"] is None
    end = results[2][0][1]
    assert (end["state"], end["extreme"], end["limit"], end["duration_seconds"]) == ("end", "50", "30", "7200")


def test_current_imbalance_ignored_below_min_current() -> None:
    assert drive(make("current_imbalance"), _currents(T0, "0.4", "0.1", "0")) == [[]]
    assert kinds(drive(make("current_imbalance"), _currents(T0, "0.5", "0.1", "0"))) == [["pq_current_imbalance"]]


def test_frequency_under_and_back() -> None:
    results = drive(
        make("frequency"),
        visit(T0, ok("1-0:14.7.0", "49.8")),  # 0.2 Hz off exactly: within
        visit(T0 + HOUR, ok("1-0:14.7.0", "49.7")),
        visit(T0 + 2 * HOUR, ok("1-0:14.7.0", "49.55")),
        visit(T0 + 3 * HOUR, ok("1-0:14.7.0", "50.01")),
    )
    assert kinds(results) == [[], ["pq_frequency_deviation"], [], ["pq_frequency_deviation"]]
    assert results[1][0][1]["limit"] == "49.8"
    assert (results[3][0][1]["state"], results[3][0][1]["extreme"]) == ("end", "49.55")


def test_frequency_over_keeps_the_highest() -> None:
    results = drive(
        make("frequency"),
        visit(T0, ok("1-0:14.7.0", "50.3")),
        visit(T0 + HOUR, ok("1-0:14.7.0", "50.5")),
        visit(T0 + 2 * HOUR, ok("1-0:14.7.0", "50.4")),
        visit(T0 + 3 * HOUR, ok("1-0:14.7.0", "50")),
    )
    end = results[3][0][1]
    assert (end["extreme"], end["limit"], end["direction"]) == ("50.5", "50.2", "high")


def test_low_power_factor_uses_the_absolute_value_while_power_is_drawn() -> None:
    results = drive(
        make("power_factor"),
        visit(T0, ok("1-0:13.7.0", "0.85"), ok("1-0:1.7.0", "1.2")),  # at the limit: fine
        visit(T0 + HOUR, ok("1-0:13.7.0", "-0.80"), ok("1-0:1.7.0", "1.2")),
        visit(T0 + 2 * HOUR, ok("1-0:13.7.0", "0.7")),  # power not read: still judged
        visit(T0 + 3 * HOUR, ok("1-0:13.7.0", "0.9"), ok("1-0:1.7.0", "1.2")),
    )
    assert kinds(results) == [[], ["pq_low_power_factor"], [], ["pq_low_power_factor"]]
    assert results[1][0][1]["value"] == "0.80"
    assert results[3][0][1]["extreme"] == "0.7"


def test_power_factor_at_zero_power_is_not_judged() -> None:
    assert drive(make("power_factor"), visit(T0, ok("1-0:13.7.0", "0.1"), ok("1-0:1.7.0", "0"))) == [[]]


def test_frozen_values_and_failed_readings_carry_no_values() -> None:
    frozen = Reading(ELECTRICITY.address, "1-0:14.7.0", Decimal(45), "Hz", T0, period=1)
    broken = Reading(ELECTRICITY.address, "1-0:14.7.0", Decimal(45), "Hz", T0, quality=Quality.FRAME_ERROR)
    assert drive(make("frequency"), visit(T0, frozen), visit(T0 + HOUR, broken)) == [[], []]


# --- engine --------------------------------------------------------------------------------


@attrs.frozen
class Flaky:
    """A rule that raises while ``broken`` says so (a list toggled by the test)."""

    name: str
    broken: list[bool]

    def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
        if self.broken[0]:
            raise RuntimeError("division by zero in vendor code")
        return []


def test_engine_reports_a_failing_rule_once_and_runs_the_others(caplog: pytest.LogCaptureFixture) -> None:
    broken = [True]
    engine = AlarmEngine([Flaky("flaky", broken), make("frequency")])
    with caplog.at_level(logging.WARNING, logger="meterhub.alarms"):
        first = engine.check(visit(T0, ok("1-0:14.7.0", "49")))
        second = engine.check(visit(T0 + HOUR, ok("1-0:14.7.0", "49")))
    assert [(e.kind, e.severity) for e in first] == [("alarm_rule_failed", "warning"), ("pq_frequency_deviation", "warning")]
    assert dict(first[0].data) == {"rule": "flaky", "meter": "000000000001", "error": "RuntimeError: division by zero in vendor code"}
    assert (first[0].source, first[0].timestamp) == ("bus1/dlt645:000000000001", T0)
    assert second == []
    assert "flaky" in caplog.text
    broken[0] = False
    assert engine.check(visit(T0 + 2 * HOUR)) == []
    broken[0] = True
    assert [e.kind for e in engine.check(visit(T0 + 3 * HOUR))] == ["alarm_rule_failed"]


def test_engine_reports_failures_per_meter() -> None:
    engine = AlarmEngine([Flaky("flaky", [True])])
    assert len(engine.check(visit(T0))) == 1
    assert len(engine.check(visit(T0, meter=WATER))) == 1


def test_engine_keeps_memory_per_meter() -> None:
    engine = AlarmEngine([make("offline", rounds=2)])
    engine.check(visit(T0, failed("1-0:1.8.0")))
    assert engine.check(visit(T0, failed("8-0:1.0.0", meter=WATER), meter=WATER)) == []
    assert [e.kind for e in engine.check(visit(T0 + HOUR, failed("1-0:1.8.0")))] == ["meter_offline"]


def test_engine_refuses_two_rules_of_one_name() -> None:
    with pytest.raises(ValueError, match="offline"):
        AlarmEngine([make("offline"), make("offline", rounds=2)])


def test_engine_memory_round_trips_through_json() -> None:
    rules = rules_from_config({"offline": True, "voltage": True, "consumption_jump": True}, TYPES)
    visits = [
        visit(T0, ok("1-0:1.8.0", "100"), ok(VOLTS[0], "190")),
        visit(T0 + HOUR, ok("1-0:1.8.0", "101"), ok(VOLTS[0], "180")),
        visit(T0 + 2 * HOUR, ok("1-0:1.8.0", "102"), ok(VOLTS[0], "185")),
        visit(T0 + 3 * HOUR, failed("1-0:1.8.0")),
        visit(T0 + 4 * HOUR, failed("1-0:1.8.0")),
    ]
    later = [
        visit(T0 + 5 * HOUR, failed("1-0:1.8.0")),
        visit(T0 + 6 * HOUR, ok("1-0:1.8.0", "130"), ok(VOLTS[0], "220")),  # 28 kWh in 4 h: 7 x usual
    ]
    original = AlarmEngine(rules)
    for view in visits:
        original.check(view)
    restored = AlarmEngine(rules_from_config({"offline": True, "voltage": True, "consumption_jump": True}, TYPES))
    restored.restore(json.loads(json.dumps(original.memory())))
    expected = [["meter_offline"], ["meter_online", "pq_voltage_sag", "consumption_jump"]]
    assert [[e.kind for e in original.check(view)] for view in later] == expected
    assert [[e.kind for e in restored.check(view)] for view in later] == expected


def test_engine_restored_failure_is_not_reported_again() -> None:
    engine = AlarmEngine([Flaky("flaky", [True])])
    engine.check(visit(T0))
    again = AlarmEngine([Flaky("flaky", [True])])
    again.restore(json.loads(json.dumps(engine.memory())))
    assert again.check(visit(T0 + HOUR)) == []


def test_engine_keeps_memory_of_a_failed_check_unchanged() -> None:
    @attrs.frozen
    class HalfDone:
        name: str = "half"

        def check(self, view: MeterView, memory: dict[str, Any]) -> list[Event]:
            memory["touched"] = True
            raise ValueError("halfway")

    engine = AlarmEngine([HalfDone()])
    engine.check(visit(T0))
    assert engine.memory()["rules"] == {"half": {}}


def test_engine_with_every_builtin_skips_values_it_cannot_parse() -> None:
    engine = AlarmEngine(rules_from_config({name: True for name in TYPES}, TYPES))
    garbage = [Reading(ELECTRICITY.address, q, "n/a", "", T0) for q in (*ELECTRICITY.quantities, "0-0:96.6.0", "0-0:96.20.0", "8-0:1.0.0")]
    for hour in range(3):
        assert engine.check(visit(T0 + hour * HOUR, *garbage)) == []


def test_engine_memory_of_some_meters_and_their_restore_leave_the_others_alone() -> None:
    """A master station keeps one terminal's memory at a time: ``of`` picks its meters."""
    def of_water(source: str) -> bool:
        return source == WATER.key

    engine = AlarmEngine([make("offline", rounds=1), Flaky("flaky", [True])])
    engine.check(visit(T0, failed("1-0:1.8.0")))  # electricity: offline raised, flaky failing
    engine.check(visit(T0, failed("8-0:1.0.0", meter=WATER), meter=WATER))
    water = json.loads(json.dumps(engine.memory(of=of_water)))
    assert {name: set(states) for name, states in water["rules"].items()} == {"offline": {WATER.key}, "flaky": set()}
    assert water["failed"] == {"flaky": [WATER.key]}
    # another node knew only the electricity meter; it takes the water meter's memory up
    other = AlarmEngine([make("offline", rounds=1), Flaky("flaky", [True])])
    other.check(visit(T0, failed("1-0:1.8.0")))
    other.restore(water, of=of_water)
    assert other.memory() == engine.memory()
    # and a restore of nothing for the water meter forgets it, keeping the electricity meter's
    other.restore({}, of=of_water)
    assert set(other.memory()["rules"]["offline"]) == {ELECTRICITY.key}
    assert other.memory()["failed"] == {"flaky": [ELECTRICITY.key]}


def test_engine_restore_refuses_what_is_not_a_snapshot() -> None:
    with pytest.raises(ValueError, match="not an alarm memory snapshot"):
        AlarmEngine([make("offline")]).restore({"rules": ["offline"]})


def test_engine_restore_drops_memory_of_rules_no_longer_configured() -> None:
    engine = AlarmEngine([make("offline", rounds=2)])
    engine.check(visit(T0, failed("1-0:1.8.0")))
    snapshot = json.loads(json.dumps(engine.memory()))
    fresh = AlarmEngine([make("frequency")])
    fresh.restore(snapshot)
    assert fresh.memory()["rules"] == {"frequency": {}}
