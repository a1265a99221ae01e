"""What a stored row holds, the same in every backend (:mod:`.sqlite`, :mod:`.postgres`):
a value as its exact text beside its type, a route as its collector names joined, JSON
with Decimals as exact strings, a round's statistics as one JSON text; and the records
rebuilt from a row's columns once a backend has turned its times into datetimes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ..model import (
    Command,
    CommandRecord,
    CommandState,
    HeadEndRequest,
    Origin,
    Quality,
    Reading,
    RequestRecord,
    RequestState,
    RoundReport,
)
from . import StoreError

#: ``value_type`` of a reading whose value is a Decimal, kept as its exact text.
_DECIMAL = "decimal"
#: ``value_type`` of a reading whose value is text.
_TEXT = "text"

#: A reading's route is stored as its collector names joined by this (names never hold it).
ROUTE_SEPARATOR = "/"

#: Stands for "no period" in the readings key, so two readings without one are the same
#: reading (SQL counts NULL unequal to NULL). Periods are ≥ 0, which writes check.
_NO_PERIOD = -1

#: The most relays a reading may record (Q/GDW 1376.2 R1 counts up to 15).
_MAX_RELAYS = 255

#: Quality (or its text) → the text stored: the check ``Quality(q).value`` makes, without its cost.
_QUALITY_TEXT: dict[str, str] = {quality: quality.value for quality in Quality}

# The columns of a reading (after its id), a command and a head-end request, in the order
# rows are built and the records below take them.
_READING_COLUMNS = (
    "meter", "quantity", "value", "value_type", "unit", "timestamp", "quality", "error_code", "detail",
    "channel", "protocol", "attempts", "latency", "terminal", "route", "data_time", "period", "relays",
)
_COMMAND_COLUMNS = (
    "id", "meter", "protocol", "channel", "name", "args", "origin", "issuer", "credential",
    "requested", "state", "updated", "reason", "answer",
)
_REQUEST_COLUMNS = (
    "id", "terminal", "kind", "args", "origin", "issuer", "credential", "created", "timeout", "state", "node",
    "updated", "reason", "answer",
)


def _ts(value: datetime) -> str:
    """A timestamp as fixed-width ISO 8601 UTC text (microseconds always present)."""
    if value.tzinfo is UTC:  # what meterhub makes: no conversion to do
        # the default form has the microseconds unless they are 0, and costs less
        return value.isoformat() if value.microsecond else value.isoformat(timespec="microseconds")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"timestamp {value!r} has no timezone; meterhub stores aware UTC times")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)  # exact digits; JSON floats would round
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    raise TypeError(f"cannot store {type(obj).__name__} {obj!r} as JSON")


def _to_json(data: Any) -> str:
    return json.dumps(data, default=_json_default, ensure_ascii=False, sort_keys=True, allow_nan=False)


def _from_json(text: str | None) -> Any:
    """What a JSON column holds; None for NULL (a command or request without an answer)."""
    return None if text is None else json.loads(text)


def _route_text(r: Reading) -> str:
    for collector in r.route:
        if not isinstance(collector, str) or not collector or ROUTE_SEPARATOR in collector:
            raise ValueError(
                f"reading {r.meter} {r.quantity}: collector name {collector!r} in its route must be"
                f" a non-empty string without {ROUTE_SEPARATOR!r}"
            )
    return ROUTE_SEPARATOR.join(r.route)


def _relays(r: Reading) -> int:
    relays = r.relays
    if isinstance(relays, bool) or not isinstance(relays, int) or not 0 <= relays <= _MAX_RELAYS:
        raise ValueError(f"reading {r.meter} {r.quantity}: relays {relays!r} is not a whole number 0..{_MAX_RELAYS}")
    return relays


def _uplinks(outbox: Sequence[str]) -> list[str]:
    """The distinct uplink names of an ``outbox=`` argument, in order, checked."""
    if isinstance(outbox, str):
        raise TypeError(f"outbox is a sequence of uplink names, not the string {outbox!r}")
    for name in outbox:
        if not isinstance(name, str) or not name:
            raise ValueError(f"outbox names uplinks by non-empty strings, got {name!r}")
    return list(dict.fromkeys(outbox))


def _reading(id_: int, meter: str, quantity: str, text: str | None, value_type: str | None, unit: str,
             timestamp: datetime, quality: str, error_code: int | None, detail: str, channel: str, protocol: str,
             attempts: int, latency: float | None, terminal: str, route: str, data_time: datetime | None,
             period: int | None, relays: int = 0) -> Reading:
    """A reading from its row: ``id_`` and :data:`_READING_COLUMNS`, times as datetimes."""
    value: Decimal | str | None
    if text is None:
        value = None
    elif value_type == _DECIMAL:
        try:
            value = Decimal(text)
        except InvalidOperation as exc:  # only a hand-edited row gets here
            raise StoreError(f"reading {id_}: stored value {text!r} is not a decimal") from exc
    else:
        value = text
    return Reading(
        meter=meter, quantity=quantity, value=value, unit=unit, timestamp=timestamp, quality=Quality(quality),
        error_code=error_code, detail=detail, channel=channel, protocol=protocol, attempts=attempts,
        latency=latency, route=tuple(route.split(ROUTE_SEPARATOR)) if route else (), data_time=data_time,
        period=period, terminal=terminal, relays=relays,
    )


def _command_record(id_: str, meter: str, protocol: str, channel: str, name: str, args: str, origin: str,
                    issuer: str, credential: str, requested: datetime, state: str, updated: datetime, reason: str,
                    answer: str | None) -> CommandRecord:
    """A command's record from its row (:data:`_COMMAND_COLUMNS`, times as datetimes)."""
    command = Command(meter=meter, protocol=protocol, name=name, args=json.loads(args), id=id_,
                      origin=Origin(origin), issuer=issuer, credential=credential, channel=channel,
                      requested=requested)
    return CommandRecord(command=command, state=CommandState(state), updated=updated, reason=reason,
                         answer=_from_json(answer))


def _request_record(id_: str, terminal: str, kind: str, args: str, origin: str, issuer: str, credential: str,
                    created: datetime, timeout: float, state: str, node: str, updated: datetime, reason: str,
                    answer: str | None) -> RequestRecord:
    """A head-end request's record from its row (:data:`_REQUEST_COLUMNS`, times as datetimes)."""
    request = HeadEndRequest(terminal=terminal, kind=kind, args=json.loads(args), id=id_, origin=Origin(origin),
                             issuer=issuer, credential=credential, created=created, timeout=timeout)
    return RequestRecord(request, RequestState(state), updated, node=node, reason=reason, answer=_from_json(answer))


def _round_stats(report: RoundReport) -> str:
    """A round's statistics per meter, channel, collector and relay depth, as the JSON stored."""
    return _to_json({"meters": dict(report.meter_stats), "channels": dict(report.channel_stats),
                     "collectors": dict(report.collector_stats), "depths": dict(report.depth_stats)})


def _round(id_: int, started: str, finished: str, readings: int, ok: int, failed: int, stats: str) -> dict[str, Any]:
    """A round's summary as :meth:`~meterhub.store.Store.rounds` gives it (times as ISO text)."""
    kept = json.loads(stats)
    return {
        "id": id_,
        "started": started,
        "finished": finished,
        "readings": readings,
        "ok": ok,
        "failed": failed,
        "meter_stats": kept.get("meters", {}),
        "channel_stats": kept.get("channels", {}),
        "collector_stats": kept.get("collectors", {}),
        "depth_stats": kept.get("depths", {}),
    }
