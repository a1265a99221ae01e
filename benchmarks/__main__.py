"""``python -m benchmarks [--quick] [--json FILE] [--only NAME ...]``: every scenario, a
table of its figures against their goals, and the figures as JSON.

Speed targets live here, never as timed assertions in tests. A scenario is a module of
this package with ``run(quick) -> list[Figure]`` (see :mod:`benchmarks.figures`); later
issues add theirs to :data:`SCENARIOS`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Any

from .figures import Figure

#: Scenario modules, in the order they run (the cheap and most telling first).
SCENARIOS = ("codecs", "footprint", "store", "bus", "plc", "infrared", "uplink", "headend", "services")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cpus": os.cpu_count(),
        "processor": platform.processor() or _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _verdict(figure: Figure) -> str:
    if figure.met is None:
        return ""
    return "met" if figure.met else "NOT met"


def _print(figures: list[tuple[str, Figure]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="meterhub benchmarks", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("scenario", "figure", "value", "unit", "goal", ""):
        table.add_column(column, justify="right" if column in ("value", "goal") else "left", no_wrap=True)
    for scenario, fig in figures:
        goal = "" if fig.goal is None else f"{'≤' if fig.better == 'lower' else '≥'} {fig.goal:g}"
        table.add_row(scenario, fig.name, f"{fig.value:,.4g}", fig.unit, goal, _verdict(fig))
    console = Console(file=sys.stdout)
    console.print(table)
    for _, fig in figures:
        if fig.note:
            console.print(f"[dim]{fig.name}: {fig.note}[/dim]", highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: the whole set in under two minutes")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON to FILE")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, metavar="NAME",
                        help=f"run only these scenarios ({', '.join(SCENARIOS)})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    figures: list[tuple[str, Figure]] = []
    for name in args.only or SCENARIOS:
        module = importlib.import_module(f"{__package__}.{name}")
        began = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        figures += [(name, fig) for fig in module.run(args.quick)]
        print(f"  {name}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    _print(figures)
    if args.json:
        document = {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quick": args.quick,
            "seconds": round(time.perf_counter() - started, 1),
            "machine": machine(),
            "figures": {fig.name: {"scenario": scenario, **fig.as_dict()} for scenario, fig in figures},
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
    print(f"{len(figures)} figures in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
