"""Readings and read statistics for people: the round table, the round log line."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import jsonout
from ..errors import UnknownQuantity
from ..quantities import resolve

if TYPE_CHECKING:
    from ..model import Reading, Site


def _fmt_value(r: Reading) -> str:
    """A reading's value for people: a Decimal in plain digits (230, not 2.3E+2)."""
    if r.value is None:
        return ""
    return jsonout.decimal_text(r.value) if isinstance(r.value, Decimal) else str(r.value)


def _outcome_counts(ok: int, failed: int, backed_off: int) -> str:
    """``98 ok, 1 failed, 11 backed off``; ``failed`` counts back-offs too, as RoundReport's
    failed_count and the round_finished summary do, but a meter waiting out its back-off was
    not tried, so the two are told apart."""
    return f"{ok} ok, {failed - backed_off} failed, {backed_off} backed off"


def _round_line(info: Mapping[str, Any]) -> str:
    """``run``'s log line for a finished round, from the runtime's round_finished summary."""
    ok, failed, backed_off = info.get("ok"), info.get("failed"), info.get("backed_off", 0)
    if isinstance(ok, int) and isinstance(failed, int) and isinstance(backed_off, int):
        return f"round finished: {_outcome_counts(ok, failed, backed_off)}"
    return "round finished"


def _print_report(report: Any, site: Site, *, console: Any = None) -> None:
    """The round's readings, one section per meter, then the read statistics.

    Laid out to fit an 80-column terminal; a wider one also gets each quantity's alias.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    wide = console.width >= WIDE_TERMINAL
    counts = _outcome_counts(report.ok_count, report.failed_count, report.backed_off_count)
    table = Table(title=f"readings ({counts})",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    table.add_column("meter", no_wrap=True)
    table.add_column("quantity", no_wrap=True)
    if wide:
        table.add_column("", no_wrap=True, style="dim")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("quality", no_wrap=True)
    table.add_column("tries", justify="right")
    table.add_column("ms", justify="right")
    previous = None
    row_in_meter = 0
    for r in report.readings:
        meter = (r.channel, r.meter)
        row_in_meter = row_in_meter + 1 if meter == previous else 0
        if previous is not None and meter != previous:
            table.add_section()
        quality = "ok" if r.ok else f"[red]{r.quality.value}[/red]"
        if r.error_code is not None:
            quality += f" (0x{r.error_code:02X})"
        latency = "" if r.latency is None else f"{r.latency * 1000:.0f}"
        value = r.value.replace("T", " ")[:19] if isinstance(r.value, str) and r.quantity == CLOCK else _fmt_value(r)
        # the meter's address on its first row, the channel it is on below it
        label = r.meter if row_in_meter == 0 else f"[dim]{r.protocol} on {r.channel}[/dim]" if row_in_meter == 1 else ""
        cells = [label, r.quantity]
        if wide:
            cells.append(_alias(r.quantity))
        cells += [value, r.unit, quality, str(r.attempts), latency]
        table.add_row(*cells)
        previous = meter
    console.print(table)
    console.print()
    _print_stats(report, console)


#: Columns from which the readings table also shows quantity aliases.
WIDE_TERMINAL = 100

CLOCK = "0-0:1.0.0"


def _alias(obis: str) -> str:
    try:
        return resolve(obis).alias
    except UnknownQuantity:
        return ""


def _print_stats(report: Any, console: Any) -> None:
    from rich import box
    from rich.table import Table

    groups = [("per meter", report.meter_stats), ("per channel", report.channel_stats)]
    if any(r.route for r in report.readings):  # meters behind collectors: how each collector and depth fares
        groups += [("per collector", report.collector_stats),
                   ("per relay depth", {f"{depth} relay(s)": s for depth, s in report.depth_stats.items()})]
    for title, stats in groups:
        table = Table(title=f"read statistics {title}", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
        table.add_column("name", no_wrap=True)
        for col in ("reads", "ok", "fail", "skip", "ok %", "retry", "ms min/avg/max"):
            table.add_column(col, justify="right", no_wrap=True)
        kinds = []
        for name, s in stats.items():
            table.add_row(
                name,
                str(s["readings"]),
                str(s["successes"]),
                str(s["failed"]),
                str(s["backed_off"]),
                "-" if s["success_rate"] is None else f"{s['success_rate'] * 100:.0f}%",
                str(s["retries"]),
                _latency_text(s),
            )
            if s["failures"]:
                kinds.append(f"{name}: " + ", ".join(f"{n} {kind}" for kind, n in s["failures"].items()))
        console.print(table)
        if title == "per meter" and kinds:
            console.print("failed: " + "; ".join(kinds), highlight=False)
    console.print("skip: not tried (backed off, or the meter went unanswered earlier in the round); "
                  "ms: from request to accepted answer",
                  style="dim", highlight=False)


def _latency_text(s: dict[str, Any]) -> str:
    parts = [s.get("latency_min"), s.get("latency_mean"), s.get("latency_max")]
    if any(p is None for p in parts):
        return "-"
    return "/".join(f"{p * 1000:.0f}" for p in parts)
