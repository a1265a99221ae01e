"""Outbox items as MQTT messages, and command payloads and answers: no sockets here.

A reading becomes its state (the exact decimal text, or its quality when it failed: never
a made-up number) and its attributes (JSON); a frozen value (one with a billing period)
goes to ``.../<alias>/frozen`` instead, so it never overwrites the current value; an event
goes to ``<prefix>/<site>/events``. The uplink publishes what these functions return.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
from meterhub.errors import UnknownQuantity
from meterhub.jsonout import decimal_text, dumps, event_to_dict
from meterhub.model import Command, Event, Meter, Origin, OutboxItem, Reading, meter_key
from meterhub.quantities import resolve

from .topics import attributes_topic, slug, state_topic

#: QoS 1 (at least once) for everything that leaves the outbox: the broker's PUBACK is
#: what allows the item to be acknowledged. A state sent twice is the same state.
QOS = 1


@attrs.frozen
class Message:
    """One MQTT publication."""

    topic: str
    payload: str
    retain: bool = False
    qos: int = QOS


def alias(quantity: str) -> str:
    """The topic level of a quantity: its alias (``energy_import``), or the slugged OBIS
    code for a quantity the vocabulary does not know (``1-0_99_1_0`` style)."""
    try:
        return resolve(quantity).alias
    except UnknownQuantity:
        return slug(quantity.replace(":", "_").replace(".", "_"))


def state_text(reading: Reading) -> str:
    """What the state topic carries: the value's exact digits (``Decimal("1234.56")`` is
    ``1234.56``), a text value as it is, or the quality of a failed reading (``timeout``)."""
    if not reading.ok or reading.value is None:
        return reading.quality.value
    if isinstance(reading.value, Decimal):
        return decimal_text(reading.value)
    return str(reading.value)


def reading_attributes(reading: Reading) -> dict[str, Any]:
    """The attributes object of a reading (exact decimals stay exact in :func:`dumps`)."""
    return {
        "unit": reading.unit,
        "quality": reading.quality.value,
        "timestamp": reading.timestamp,
        "obis": reading.quantity,
        "route": "/".join(reading.route),
        "data_time": reading.data_time,
        "period": reading.period,
        "detail": reading.detail,
        "meter": reading.meter,
        "protocol": reading.protocol,
        "channel": reading.channel,
    }


def frozen_topic(prefix: str, site: str, meter: str, quantity_alias: str) -> str:
    """Where a meter's frozen values of a quantity go (not its state: they are past values)."""
    return f"{prefix}/{site}/{meter}/{quantity_alias}/frozen"


def events_topic(prefix: str, site: str) -> str:
    return f"{prefix}/{site}/events"


def meter_level(reading: Reading, ids: Mapping[str, str]) -> str:
    """The reading's meter as a topic level: its id among the site's meters, or its slugged
    address for a meter no longer configured (removed while its readings waited)."""
    return ids.get(meter_key(reading.channel, reading.protocol, reading.meter)) or slug(reading.meter)


def item_messages(item: OutboxItem, *, prefix: str, site: str, ids: Mapping[str, str],
                  retain: bool = True) -> list[Message]:
    """The messages that deliver one outbox item: state and attributes of a current
    reading (retained when ``retain``), one ``frozen`` message of a frozen value, one
    (never retained) message on the events topic of an event."""
    thing = item.item
    if isinstance(thing, Event):
        body = event_to_dict(thing)
        return [Message(events_topic(prefix, site), dumps({"id": item.id, **body}), retain=False)]
    meter = meter_level(thing, ids)
    level = alias(thing.quantity)
    attributes = reading_attributes(thing)
    if thing.period is not None:
        value = thing.value if thing.ok else None
        return [Message(frozen_topic(prefix, site, meter, level), dumps({"value": value, **attributes}),
                        retain=retain)]
    return [
        Message(state_topic(prefix, site, meter, level), state_text(thing), retain=retain),
        Message(attributes_topic(prefix, site, meter, level), dumps(attributes), retain=retain),
    ]


# --- commands -------------------------------------------------------------------------------------


class BadCommand(ValueError):
    """A command message that cannot become a command (its payload, its meter); the
    reason goes back on the result topic as a refusal."""


def parse_command(payload: bytes, *, name: str, meter: Meter) -> Command:
    """The command a message on ``.../<meter>/command/<name>`` asks for. The payload is
    empty or a JSON object with optional ``args`` (an object), ``credential`` (a secret-store
    reference, never a secret) and ``issuer`` (text); BadCommand says what is wrong."""
    if not payload.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(payload.decode("utf-8"), parse_float=Decimal)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadCommand(f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadCommand("payload must be a JSON object {\"args\": {...}, \"credential\": ..., \"issuer\": ...}")
    unknown = sorted(set(body) - {"args", "credential", "issuer"})
    if unknown:
        raise BadCommand(f"unknown key(s) {', '.join(unknown)} (a command takes args, credential, issuer)")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise BadCommand("args must be a JSON object")
    for key in ("credential", "issuer"):
        if not isinstance(body.get(key, ""), str):
            raise BadCommand(f"{key} must be text")
    return Command(meter.address, meter.protocol, name, args, origin=Origin.UPLINK, issuer=body.get("issuer", ""),
                   credential=body.get("credential", ""), channel=meter.channel)


def command_result(command_id: str, state: str, *, answer: Mapping[str, Any] | None = None,
                   reason: str = "") -> str:
    """The JSON a result topic carries: ``{"id", "state", "answer"}`` for an answered
    command, ``{"id", "state", "reason"}`` for a refused or failed one."""
    body: dict[str, Any] = {"id": command_id, "state": state}
    if state == "answered":
        body["answer"] = dict(answer or {})
    else:
        body["reason"] = reason
    return dumps(body)
