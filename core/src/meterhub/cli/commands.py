"""``meterhub commands``: the audited command log, every command with its origin, issuer,
state and answer, as the command path journalled it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from .. import jsonout
from ..model import CommandRecord, CommandState, Origin, meter_key
from .common import _user_errors, open_existing_store
from .export import MeterFilter, parse_since

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

#: What the table shows of a command id (32 hex digits): enough to tell commands apart.
SHORT_ID = 8

#: States whose record says why in ``reason`` rather than in ``answer``.
_WHY_STATES = frozenset({CommandState.REFUSED, CommandState.FAILED})


@click.command("commands")
@click.option("--db", "db", default="meterhub.db", show_default=True,
              help="The store: a SQLite file written by meterhub (the site file's store: sqlite:///FILE), or its URL "
                   "(postgresql://... for a head-end's).")
@click.option("--meter", default=None, metavar="[CHANNEL/][PROTOCOL:]ADDRESS",
              help="Only commands to this meter: its address (every meter that has it), PROTOCOL:ADDRESS or "
                   "CHANNEL/PROTOCOL:ADDRESS, as the table names it.")
@click.option("--state", default=None, type=click.Choice([s.value for s in CommandState]),
              help="Only commands in this state now.")
@click.option("--origin", default=None, type=click.Choice([o.value for o in Origin]),
              help="Only commands from this origin.")
@click.option("--since", default=None, metavar="TIME",
              help="Only commands requested at or after TIME: a date (2026-12-02, from midnight) or an ISO time "
                   "(2026-12-02T17:22:20), in local time unless it carries an offset (+08:00, Z).")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only the newest N of the commands that match (still listed oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def commands_cmd(db: str, meter: str | None, state: str | None, origin: str | None, since: str | None,
                 limit: int | None, as_json: bool) -> None:
    """The audited command log: every command with its origin, issuer, state and answer.

    Newest last. With --json, a list of objects with the keys id, meter, protocol, channel,
    command, args, origin, issuer, credential (the secret-store reference, never a secret),
    requested, state, updated, reason and answer.
    """
    since_dt = parse_since(since) if since is not None else None
    wanted = MeterFilter.parse(meter)
    filtered = any(v is not None for v in (meter, state, origin, since))
    with open_existing_store(db) as store, _user_errors():
        records = store.commands(meter=wanted.address, state=None if state is None else CommandState(state),
                                 origin=None if origin is None else Origin(origin), since=since_dt)
        records = [r for r in records if _matches(r, wanted)]
        logged = bool(records) or (filtered and bool(store.commands(limit=1)))
    if limit is not None:
        records = records[-limit:]
    if not records:
        click.echo(f"no command in {db} matches these filters" if logged else f"no commands in {db}: the log is empty",
                   err=True)
    if as_json:
        click.echo(jsonout.dumps([jsonout.command_to_dict(r) for r in records], indent=2))
    elif records:
        _print_commands(records)


def _matches(record: CommandRecord, wanted: MeterFilter) -> bool:
    """The parts of ``--meter`` the store does not filter on: protocol and channel."""
    c = record.command
    return (wanted.protocol is None or c.protocol == wanted.protocol) and (
        wanted.channel is None or c.channel == wanted.channel)


# --- the table for people ---------------------------------------------------------------------


def _print_commands(records: list[CommandRecord], *, console: Console | None = None) -> None:
    """One row per command, oldest first: when, which, to whom, from whom, and how it ended.

    A terminal of :data:`WIDE_TERMINAL` columns gets a column for each; a narrower one
    (80 columns) gets them in pairs, one above the other.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    wide = console.width >= WIDE_TERMINAL
    table = Table(title=f"commands ({_state_counts(records)})",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    headers = [name for pair in _COLUMN_PAIRS for name in pair] if wide else [" / ".join(p) for p in _COLUMN_PAIRS]
    for header in headers:
        wraps = header.endswith(_WRAPPING)
        table.add_column(header, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for record in records:
        if not wide and table.rows:
            table.add_section()
        cells = _cells(record)
        if wide:
            table.add_row(*cells)
        else:
            table.add_row(*(Text("\n").join(cells[i:i + 2]) for i in range(0, len(cells), 2)))
    console.print(table)
    offset = datetime.now().astimezone().strftime("%z")
    console.print(f"requested: local time (UTC{offset[:3]}:{offset[3:5]}); id: its first {SHORT_ID} hex digits "
                  "(--json: all 32); outcome: why it was refused or failed, or the meter's answer",
                  style="dim", highlight=False)


#: Columns from which every field of a command gets a column of its own.
WIDE_TERMINAL = 132

#: The table's columns, in pairs that a narrow terminal shows one above the other.
_COLUMN_PAIRS = (("requested", "id"), ("meter", "command"), ("origin", "issuer"), ("state", "outcome"))
#: The columns whose text may take several lines: the rest are short and fixed.
_WRAPPING = ("issuer", "outcome")


def _cells(record: CommandRecord) -> list[Text]:
    """A command's cells, in the order of :data:`_COLUMN_PAIRS`."""
    c = record.command
    state_style = "red" if record.state in _WHY_STATES else ""
    return [
        _text(_local_time(c.requested)),
        _text(c.id[:SHORT_ID], "dim"),
        _text(meter_key(c.channel, c.protocol, c.meter) if c.meter else f"{c.channel} (terminal)" if c.channel
              else "(concentrator)"),
        _text(c.name),
        _text(c.origin.value),
        _text(c.issuer),
        _text(record.state.value, state_style),
        _text(_outcome(record), state_style),
    ]


def _state_counts(records: list[CommandRecord]) -> str:
    """``1 refused, 3 answered``: how many are in each state, in the order CommandState lists them."""
    counts = {state: sum(1 for r in records if r.state is state) for state in CommandState}
    return ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)


def _local_time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _outcome(record: CommandRecord) -> str:
    """Why it was refused or failed, else its answer in one line (``done=time_sync``)."""
    if record.reason or record.answer is None:
        return record.reason
    return ", ".join(f"{key}={_compact(value)}" for key, value in jsonout.masked(record.answer).items())


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return jsonout.decimal_text(value)
    return jsonout.dumps(value)


def _text(value: str, style: str = "") -> Text:
    """A cell as literal text: no rich markup (a reason may hold ``[...]``), and no control
    character that could move the cursor or recolour the terminal (an issuer comes from
    an uplink's master station)."""
    from rich.text import Text

    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value)
    return Text(shown, style=style)
