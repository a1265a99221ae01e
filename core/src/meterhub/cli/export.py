"""``meterhub export``: readings out of the store as CSV or JSON."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs
import click

from .. import jsonout
from ..quantities import resolve
from .common import EXIT_USAGE, Failure, _user_errors, open_existing_store

if TYPE_CHECKING:
    from ..store import Store

EXPORT_FIELDS = ("meter", "quantity", "value", "unit", "timestamp", "quality", "error_code", "detail",
                 "channel", "protocol", "attempts", "latency", "route", "relays", "data_time", "period", "terminal")


@click.command("export")
@click.option("--db", "db", required=True,
              help="The store: a SQLite file written by meterhub, or its URL (sqlite:///FILE, postgresql://...).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), required=True)
@click.option("--meter", default=None, metavar="[CHANNEL/][PROTOCOL:]ADDRESS",
              help="Only this meter: its address (refused, with the candidates, when meters of several protocols or "
                   "channels share it), PROTOCOL:ADDRESS (modbus:1) or CHANNEL/PROTOCOL:ADDRESS (bus1/modbus:1), "
                   "as the read statistics name it.")
@click.option("--protocol", default=None, help="Only meters of this protocol (dlt645, modbus, mbus, ...).")
@click.option("--channel", default=None, help="Only meters on this channel of the site file.")
@click.option("--quantity", default=None, help="Only this quantity (OBIS code or alias).")
@click.option("--terminal", default=None,
              help="Only readings of this terminal (a head-end's store: 32010001 or 3201/1).")
@click.option("--since", default=None, metavar="TIME",
              help="Only readings at or after TIME: a date (2026-12-02, from midnight) or an ISO time "
                   "(2026-12-02T17:22:20), in local time unless it carries an offset (+08:00, Z).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-", show_default=True)
def export_cmd(db: str, fmt: str, meter: str | None, protocol: str | None, channel: str | None, quantity: str | None,
               terminal: str | None, since: str | None, output: str) -> None:
    """Export readings from the store as CSV or JSON."""
    with _user_errors():
        obis = resolve(quantity).obis if quantity else None
    since_dt = parse_since(since) if since is not None else None
    wanted = MeterFilter.parse(meter, protocol=protocol, channel=channel)
    terminal_name = _terminal_name(terminal) if terminal else None
    with open_existing_store(db) as store, _user_errors():
        wanted = wanted.resolve(store)
        readings = store.readings(meter=wanted.address, protocol=wanted.protocol, channel=wanted.channel,
                                  quantity=obis, since=since_dt, terminal=terminal_name)
    rows = [jsonout.reading_to_dict(r) for r in readings]
    out = click.open_file(output, "w", encoding="utf-8")
    with out:
        if fmt == "json":
            out.write(jsonout.dumps(rows, indent=2) + "\n")
        else:
            writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    if output != "-":
        click.echo(f"{len(rows)} reading(s) written to {output}", err=True)


def _terminal_name(value: str) -> str:
    from ..headend.station import parse_terminal, terminal_name

    try:
        return terminal_name(parse_terminal(value))
    except ValueError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None


def parse_since(text: str) -> datetime:
    """``--since`` as an aware UTC time: a date (its local midnight), a naive ISO time (local
    wall-clock time, as the user reads it on the gateway) or an ISO time with an offset.
    Anything else is a usage error naming the forms accepted."""
    try:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None or moment.utcoffset() is None:
            moment = moment.astimezone()  # a naive time is the local time of this machine
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 shifted out of range
        raise Failure(f"--since {text!r}: expected a date or ISO time, e.g. 2026-12-02, 2026-12-02T17:22:20 (local) "
                      "or 2026-12-02T17:22:20+08:00", EXIT_USAGE) from None


@attrs.frozen
class MeterFilter:
    """Which meter(s) ``export`` keeps: any part may be open (None).

    A meter is named unambiguously by ``channel/protocol:address`` (stats.meter_key): Modbus
    unit 1 and M-Bus primary address 1 share an address on one mixed bus, and unit 1 may
    exist on two buses. A bare address is fine while the store holds one meter with it.
    """

    address: str | None = None
    protocol: str | None = None
    channel: str | None = None
    spelled: str = ""  #: the --meter text, for messages

    @classmethod
    def parse(cls, meter: str | None, *, protocol: str | None = None, channel: str | None = None) -> MeterFilter:
        """``--meter [CHANNEL/][PROTOCOL:]ADDRESS`` together with ``--protocol`` and ``--channel``;
        a usage error when the parts are empty or contradict each other."""
        if meter is None:
            return cls(None, protocol, channel)
        # addresses hold neither "/" nor ":"; a channel name is whatever precedes the last "/"
        in_channel, slash, rest = meter.strip().rpartition("/")
        in_protocol, colon, address = rest.rpartition(":")
        if not address or (slash and not in_channel) or (colon and not in_protocol):
            raise Failure(f"--meter {meter!r}: expected ADDRESS, PROTOCOL:ADDRESS or CHANNEL/PROTOCOL:ADDRESS "
                          "(e.g. 1, modbus:1, bus1/modbus:1)", EXIT_USAGE)
        for option, given, named in (("--protocol", protocol, in_protocol), ("--channel", channel, in_channel)):
            if given is not None and named and given != named:
                raise Failure(f"--meter {meter!r} and {option} {given!r} name different meters", EXIT_USAGE)
        return cls(address, protocol or in_protocol or None, channel or in_channel or None, meter)

    def resolve(self, store: Store) -> MeterFilter:
        """Pin an address to the one stored meter it names; a usage error listing the
        candidates when it names several (their readings would be mixed)."""
        if self.address is None:
            return self
        candidates = store.meters(meter=self.address, protocol=self.protocol, channel=self.channel)
        if len(candidates) > 1:
            keys = ", ".join(c.key for c in candidates)
            raise Failure(f"--meter {self.spelled!r} names {len(candidates)} meters: {keys}; "
                          "give one of them as CHANNEL/PROTOCOL:ADDRESS", EXIT_USAGE)
        if not candidates:
            return self
        only = candidates[0]
        return attrs.evolve(self, protocol=only.protocol, channel=only.channel)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return jsonout.decimal_text(value)  # 230, not 2.3E+2
    return value
