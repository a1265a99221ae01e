"""Outbox items as MQTT messages, without a broker: what each kind of item becomes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from meterhub.model import OutboxItem, Quality, Reading
from meterhub_mqtt.publish import alias, item_messages, state_text

AT = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)


def test_a_value_keeps_its_digits_and_never_turns_into_an_exponent():
    # Decimal("2.3E+2") is what a float register gives for 230: published as 230
    assert state_text(Reading("1", "1-0:32.7.0", Decimal("2.3E+2"), "V", AT)) == "230"
    assert state_text(Reading("1", "1-0:1.8.0", Decimal("0.0000001"), "kWh", AT)) == "0.0000001"


def test_a_text_value_is_published_as_it_is_and_a_failed_one_as_its_quality():
    assert state_text(Reading("1", "0-0:1.0.0", "2026-12-03T10:15:00", "", AT)) == "2026-12-03T10:15:00"
    assert state_text(Reading("1", "1-0:1.8.0", None, "kWh", AT, quality=Quality.CHECKSUM_ERROR)) == "checksum_error"


def test_a_quantity_the_vocabulary_does_not_know_is_named_by_its_obis_code():
    assert (alias("1-0:1.8.0"), alias("7-0:99.1.0")) == ("energy_import", "7-0_99_1_0")


def test_a_reading_of_a_meter_no_longer_configured_goes_under_its_address():
    item = OutboxItem(1, "mqtt", Reading("00-42", "1-0:1.8.0", Decimal("1"), "kWh", AT, protocol="dlt645",
                                         channel="bus9"), AT)
    topics = [m.topic for m in item_messages(item, prefix="meterhub", site="home", ids={})]
    assert topics == ["meterhub/home/00-42/energy_import/state", "meterhub/home/00-42/energy_import/attributes"]
