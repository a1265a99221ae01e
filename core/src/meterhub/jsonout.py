"""JSON output that keeps Decimal readings exact.

A reading's value is written as a JSON number whose digits are exactly the Decimal's
(``1234.56`` stays ``1234.56``), so a consumer parsing with ``parse_float=Decimal`` gets
the meter's value back bit for bit; no float arithmetic happens on the way out.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from .commands import REDACTED
from .model import CommandRecord, Event, Reading, TerminalRecord
from .secrets import is_secret_name


def decimal_text(value: Decimal) -> str:
    """A Decimal's exact digits in plain positional notation, never an exponent.

    ``Decimal("2.3E+2")`` (a float register's 230.0) is ``230``, ``Decimal("1E-7")`` is
    ``0.0000001``: the same value and every digit, in the form people and spreadsheets
    read. JSON, CSV and the terminal all show values through this one function.
    NaN and infinities have no digits and keep their names.
    """
    return format(value, "f") if value.is_finite() else str(value)


def _emit(obj: Any, indent: int | None, level: int) -> str:
    if isinstance(obj, Decimal):
        # Digits exactly as read from the meter; JSON has no NaN/Infinity, so those stay strings.
        return decimal_text(obj) if obj.is_finite() else json.dumps(str(obj))
    if isinstance(obj, datetime):
        return json.dumps(obj.isoformat())
    if isinstance(obj, enum.Enum):
        return _emit(obj.value, indent, level)
    if isinstance(obj, Mapping):
        items = [f"{json.dumps(str(k), ensure_ascii=False)}: {_emit(v, indent, level + 1)}" for k, v in obj.items()]
        return _join(items, "{", "}", indent, level)
    if isinstance(obj, (list, tuple)):
        return _join([_emit(v, indent, level + 1) for v in obj], "[", "]", indent, level)
    return json.dumps(obj, ensure_ascii=False)


def _join(items: list[str], opening: str, closing: str, indent: int | None, level: int) -> str:
    if not items:
        return opening + closing
    if indent is None:
        return opening + ", ".join(items) + closing
    pad = "\n" + " " * (indent * (level + 1))
    return opening + pad + ("," + pad).join(items) + "\n" + " " * (indent * level) + closing


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Like ``json.dumps`` for plain data, with exact Decimals and ISO timestamps."""
    return _emit(obj, indent, 0)


def reading_to_dict(reading: Reading, *, full: bool = True) -> dict[str, Any]:
    """The export/`--json` form of a reading: the contract keys first, details after."""
    out: dict[str, Any] = {
        "meter": reading.meter,
        "quantity": reading.quantity,
        "value": reading.value,
        "unit": reading.unit,
        "timestamp": reading.timestamp,
        "quality": reading.quality.value,
    }
    if full:
        out.update(
            error_code=reading.error_code,
            detail=reading.detail,
            channel=reading.channel,
            protocol=reading.protocol,
            attempts=reading.attempts,
            latency=reading.latency,
            route="/".join(reading.route),
            relays=reading.relays,
            data_time=reading.data_time,
            period=reading.period,
            terminal=reading.terminal,
        )
    return out


def event_to_dict(event: Event) -> dict[str, Any]:
    """An event as plain data: ``kind``, ``source``, ``timestamp``, ``severity``, ``data``."""
    return {"kind": event.kind, "source": event.source, "timestamp": event.timestamp, "severity": event.severity,
            "data": dict(event.data)}


def command_to_dict(record: CommandRecord) -> dict[str, Any]:
    """A command record as plain data, for ``--json``. A key named like a secret in its
    ``args`` or ``answer`` shows as ``***``: the command path never journals one, and a
    record written some other way does not leak it here either."""
    c = record.command
    return {
        "id": c.id,
        "meter": c.meter,
        "protocol": c.protocol,
        "channel": c.channel,
        "command": c.name,
        "args": masked(c.args),
        "origin": c.origin.value,
        "issuer": c.issuer,
        "credential": c.credential,
        "requested": c.requested,
        "state": record.state.value,
        "updated": record.updated,
        "reason": record.reason,
        "answer": None if record.answer is None else masked(record.answer),
    }


def masked(value: Any) -> Any:
    """``value`` with every key named like a secret shown as ``***``, at any depth."""
    if isinstance(value, Mapping):
        return {key: REDACTED if is_secret_name(str(key)) else masked(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(item) for item in value]
    return value


def terminal_to_dict(t: TerminalRecord) -> dict[str, Any]:
    """A head-end's terminal as ``meterhub head-end terminals --json`` and the HTTP API show it."""
    return {"terminal": t.name, "online": t.online, "node": t.node, "peer": t.peer, "login": t.login, "seen": t.seen,
            "heartbeats": t.heartbeats}
