"""``meterhub prepay``: prepaid meters' recharges, balances and the ledger behind them, in
the store the concentrator charges them in (:mod:`meterhub.prepay`).

Balances start from the opening balance the concentrator keeps in the store (settings
scope ``prepayment``, key ``opening_balance``, as text; 0 when there is none), so the
command line and ``meterhub run`` agree on every meter's balance without the site file.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import click

from .. import jsonout
from .common import EXIT_FAILED, EXIT_USAGE, Failure, _user_errors, open_existing_store

if TYPE_CHECKING:
    from ..prepay import Entry
    from ..store import Store

#: The settings scope and key the concentrator keeps the opening balance under.
SETTINGS_SCOPE, OPENING_KEY = "prepayment", "opening_balance"
#: What ``--amount`` may look like: digits, and a decimal point with digits after it.
CENT = Decimal("0.01")
_AMOUNT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")

_db_option = click.option(
    "--db", "db", default="meterhub.db", show_default=True,
    help="The store: the SQLite file meterhub run writes (the site file's store: sqlite:///FILE), or its URL "
         "(postgresql://...).")
_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
_METER_HELP = ("The meter: its address, or CHANNEL/PROTOCOL:ADDRESS when the address names several meters "
               "(or a meter the store has neither readings nor ledger entries of).")


@click.group("prepay")
def prepay_cmd() -> None:
    """Prepaid meters: balances, recharges and the ledger behind them.

    A balance is the opening balance (the store's prepayment settings, else 0) plus every
    recharge minus every charge the concentrator booked for the meter's consumption.
    """


@prepay_cmd.command("recharge")
@click.option("--meter", "spelled", required=True, metavar="[CHANNEL/PROTOCOL:]ADDRESS", help=_METER_HELP)
@click.option("--amount", "amount_text", required=True, metavar="AMOUNT",
              help="Money to credit, above 0, at most 2 decimal places (100, 25.50), below 1000000.")
@click.option("--reference", default="", help="The payment's reference (receipt, transaction number), kept with it.")
@_db_option
@_json_option
def recharge_cmd(spelled: str, amount_text: str, reference: str, db: str, as_json: bool) -> None:
    """Credit a prepaid meter with a recharge and print its new balance.

    With --json, an object with the keys meter, key, amount, reference, issuer, at and balance.
    """
    from ..commands import local_issuer
    from ..prepay import balance, recharge_event

    amount = _amount(amount_text)
    with open_existing_store(db) as store, _user_errors():
        key, address = _resolve(store, spelled, db)
        opening = _opening(store)  # a damaged setting stops the recharge before it is written
        event = recharge_event(key, address, amount, reference=reference, issuer=local_issuer())
        store.add_event(event)
        now = balance(store, key, opening=opening)
    if as_json:
        click.echo(jsonout.dumps({"meter": address, "key": key, "amount": Decimal(event.data["amount"]),
                                  "reference": reference, "issuer": event.data["issuer"], "at": event.timestamp,
                                  "balance": now}, indent=2))
    else:
        click.echo(f"{key}: recharged {event.data['amount']}, balance {_money(now)}")


@prepay_cmd.command("balance")
@click.option("--meter", "spelled", default=None, metavar="[CHANNEL/PROTOCOL:]ADDRESS",
              help=_METER_HELP + " Default: every meter with ledger entries.")
@_db_option
@_json_option
def balance_cmd(spelled: str | None, db: str, as_json: bool) -> None:
    """The balance of every meter with ledger entries, or of one.

    With --json, a list of objects with the keys meter, key, balance, recharged, charged,
    entries and last (the time of the newest entry, or null).
    """
    from ..prepay import ledger_sources

    with open_existing_store(db) as store, _user_errors():
        opening = _opening(store)
        keys = [_resolve(store, spelled, db)[0]] if spelled is not None else ledger_sources(store)
        rows = [_summary(key, opening, _ledger(store, key)) for key in keys]
    if not rows:
        click.echo(f"no meter in {db} has ledger entries: nothing was recharged or charged yet", err=True)
    if as_json:
        click.echo(jsonout.dumps(rows, indent=2))
        return
    width = max((len(row["key"]) for row in rows), default=0)
    for row in rows:
        last = _local_time(row["last"]) if row["last"] is not None else "no entries"
        click.echo(f"{row['key']:<{width}}  {_money(row['balance']):>12}  "
                   f"({row['entries']} {'entry' if row['entries'] == 1 else 'entries'}, last {last})")


@prepay_cmd.command("ledger")
@click.option("--meter", "spelled", required=True, metavar="[CHANNEL/PROTOCOL:]ADDRESS", help=_METER_HELP)
@_db_option
@_json_option
def ledger_cmd(spelled: str, db: str, as_json: bool) -> None:
    """A meter's ledger, oldest first: every recharge and charge with the balance after it.

    With --json, an object with the keys meter, key, opening, balance and entries, each entry
    with at, kind (recharge or charge), amount (a charge negative), balance and data (the event's).
    """
    with open_existing_store(db) as store, _user_errors():
        key, address = _resolve(store, spelled, db)
        opening = _opening(store)
        entries = _ledger(store, key)
    running = opening
    lines: list[dict[str, Any]] = []
    for entry in entries:
        running += entry.signed
        lines.append({"at": entry.at, "kind": _kind(entry), "amount": entry.signed, "balance": running,
                      "data": dict(entry.data)})
    if as_json:
        click.echo(jsonout.dumps({"meter": address, "key": key, "opening": opening, "balance": running,
                                  "entries": lines}, indent=2))
        return
    click.echo(f"{key}: opening balance {_money(opening)}")
    for line in lines:
        click.echo(f"{_local_time(line['at'])}  {line['kind']:<8}  {_signed(line['amount']):>12}  "
                   f"{_money(line['balance']):>12}  {_details(line['kind'], line['data'])}")
    click.echo(f"{key}: balance {_money(running)}")


# --- helpers ---------------------------------------------------------------------------


def _amount(text: str) -> Decimal:
    """``--amount`` as money, or a usage error saying what is wrong with it (nothing is written)."""
    from ..prepay import check_amount

    if not _AMOUNT_RE.match(text.strip()):
        raise Failure(f"--amount {text!r}: not an amount of money (write e.g. 100 or 25.50)", EXIT_USAGE)
    try:
        return check_amount(Decimal(text.strip()), "the amount")
    except (ValueError, InvalidOperation) as exc:
        raise Failure(f"--amount {text!r}: {exc}", EXIT_USAGE) from None


def _opening(store: Store) -> Decimal:
    """The opening balance the concentrator keeps in the store, 0 when it keeps none."""
    text = store.settings(SETTINGS_SCOPE).get(OPENING_KEY)
    if text is None:
        return Decimal(0)
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise Failure(f"the store's {SETTINGS_SCOPE} setting {OPENING_KEY} is {text!r}, not an amount", EXIT_FAILED)
    return value


def _parts(key: str) -> tuple[str, str, str]:
    """``channel/protocol:address`` as its three parts (a missing one is "")."""
    channel, _, rest = key.rpartition("/")
    protocol, _, address = rest.rpartition(":")
    return channel, protocol, address


def _resolve(store: Store, spelled: str, db: str) -> tuple[str, str]:
    """The key and address of the meter ``--meter`` names: a full key as given, else the
    one stored meter (by its readings or its ledger entries) that matches; an error
    listing them when several do, or saying so when none does."""
    from ..prepay import ledger_sources

    channel, protocol, address = _parts(spelled.strip())
    if not address or (spelled.count("/") and not (channel and protocol)):
        raise Failure(f"--meter {spelled!r}: expected ADDRESS or CHANNEL/PROTOCOL:ADDRESS", EXIT_USAGE)
    if channel and protocol:
        return spelled.strip(), address
    keys = {m.key for m in store.meters(meter=address, protocol=protocol or None)}
    for key in ledger_sources(store):
        _, their_protocol, their_address = _parts(key)
        if their_address == address and (not protocol or their_protocol == protocol):
            keys.add(key)
    if len(keys) > 1:
        raise Failure(f"--meter {spelled!r} names {len(keys)} meters in {db}: {', '.join(sorted(keys))}; "
                      "give one of them as CHANNEL/PROTOCOL:ADDRESS", EXIT_FAILED)
    if not keys:
        raise Failure(f"--meter {spelled!r}: no meter with that address in {db} (no readings, no ledger entries); "
                      "name a new one as CHANNEL/PROTOCOL:ADDRESS", EXIT_FAILED)
    (key,) = keys
    return key, address


def _ledger(store: Store, key: str) -> list[Entry]:
    """The meter's ledger; a damaged entry is a one-line error rather than a traceback."""
    from ..prepay import ledger

    try:
        entries = ledger(store, key)
    except ValueError as exc:
        raise Failure(str(exc), EXIT_FAILED) from None
    return entries


def _summary(key: str, opening: Decimal, entries: list[Entry]) -> dict[str, Any]:
    from ..prepay import RECHARGE

    recharged = sum((e.amount for e in entries if e.kind == RECHARGE), CENT * 0)
    charged = sum((e.amount for e in entries if e.kind != RECHARGE), CENT * 0)
    return {"meter": _parts(key)[2], "key": key, "balance": opening + recharged - charged, "recharged": recharged,
            "charged": charged, "entries": len(entries), "last": entries[-1].at if entries else None}


def _kind(entry: Entry) -> str:
    from ..prepay import RECHARGE

    return "recharge" if entry.kind == RECHARGE else "charge"


def _details(kind: str, data: dict[str, Any]) -> str:
    """What a ledger line was for, in one line: who recharged with which reference, or what
    consumption was charged."""
    if kind == "recharge":
        parts = [f"reference {data['reference']}" if data.get("reference") else "",
                 f"by {data['issuer']}" if data.get("issuer") else ""]
        text = "; ".join(p for p in parts if p)
    else:
        text = f"{data.get('consumption', '?')} {data.get('unit', '')} from {data.get('from', '?')} to {data.get('to', '?')}"
    # a reference comes from whoever recharged: no control character reaches the terminal
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _money(value: Decimal) -> str:
    """An amount for people: at least to the cent (``0.00``), every digit it has beyond."""
    exponent = value.as_tuple().exponent
    shown = value.quantize(CENT) if isinstance(exponent, int) and exponent > -2 else value
    return jsonout.decimal_text(shown)


def _signed(value: Decimal) -> str:
    return ("+" if value > 0 else "") + _money(value)


def _local_time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
