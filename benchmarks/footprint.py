"""Footprint: how long the command line takes to start, how long a large site file takes
to load, and how much memory a concentrator for it holds.

The site is the largest a concentrator serves: 2,048 DL/T 645 meters, 256 on each of 8
RS485 channels, two quantities each, measuring points 1..2040 on the first 2,040 (Q/GDW
1376.1 has no pn beyond 2040). Its ports do not exist and are never opened: the child
processes watch every ``open`` (a Python audit hook) and fail if one names a port.

Every process measured runs with its bytecode cached, as an installed meterhub does (pip
compiles it at install time): ``PYTHONPYCACHEPREFIX`` names a temporary folder that a
warm-up run fills, so the work tree gets no ``__pycache__``. With bytecode off
(``PYTHONDONTWRITEBYTECODE=1``, as tox.ini sets it) and meterhub installed editable, every
start compiles meterhub's sources again; the command-line figures say how long that takes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .figures import Figure, median_time

SITE_METERS = 2048
SITE_CHANNELS = 8
#: Q/GDW 1376.1: measuring points pn 1..2040; the meters past it have no point
LAST_POINT = 2040
SITE_QUANTITIES = ("energy_import", "power_import")
#: device names no machine has: a port that validation opened would fail loudly, and the
#: audit hook in the child catches the attempt before that
PORT_PREFIX = "/dev/ttyMHBENCH"

CLI_GOAL_S = 0.15
CONFIG_LOAD_GOAL_S = 0.3
RSS_GOAL_MB = 60.0

_ROOT = Path(__file__).resolve().parent.parent


def run(quick: bool) -> list[Figure]:
    runs = 5 if quick else 15
    with tempfile.TemporaryDirectory(prefix="meterhub-bench-") as tmp:
        cached = _cached_bytecode(Path(tmp) / "pycache")
        figures = [_cli_figure("cli_help_s", ["--help"], runs, cached),
                   _cli_figure("cli_plugins_s", ["plugins"], runs, cached)]
        site = Path(tmp) / "site-2048.yaml"
        site.write_text(site_text(), encoding="utf-8")
        _child("child_rss", cached, str(site))  # warm-up: the runtime's bytecode, compiled once
        figures.append(_config_load_figure(site, runs=3 if quick else 7, env=cached))
        figures.append(_rss_figure(site, cached))
    return figures


def _cached_bytecode(folder: Path) -> dict[str, str]:
    """The environment with bytecode written to and read from ``folder``."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(folder)
    return env


def _uncached_bytecode() -> dict[str, str]:
    """The environment with bytecode off: what was installed with bytecode is read as it is,
    sources without a ``__pycache__`` (an editable install's) are compiled at every start."""
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# -- the command line -------------------------------------------------------------------


def _cli_figure(name: str, args: list[str], runs: int, cached: dict[str, str]) -> Figure:
    """Median wall time of ``meterhub <args>`` (the console script on PATH) with bytecode
    cached; in the note, ``python -m meterhub.cli <args>`` and the script without bytecode.
    Each is run once first (page cache, bytecode)."""
    words = " ".join(args)
    module_s = _command_time([sys.executable, "-m", "meterhub.cli", *args], runs, cached)
    script = shutil.which("meterhub")
    if script is None:
        return Figure(name, module_s, "s", CLI_GOAL_S,
                      note=f"no meterhub script on PATH: python -m meterhub.cli {words}, median of {runs}")
    script_s = _command_time([script, *args], runs, cached)
    uncached_s = _command_time([script, *args], runs, _uncached_bytecode())
    return Figure(name, script_s, "s", CLI_GOAL_S,
                  note=f"meterhub {words} ({script}), bytecode cached, median of {runs} after a warm-up; "
                       f"python -m meterhub.cli {words}: {module_s:.3f} s; with PYTHONDONTWRITEBYTECODE=1 and "
                       f"no cache (an editable install compiles its sources at every start): {uncached_s:.3f} s")


def _command_time(argv: list[str], runs: int, env: dict[str, str]) -> float:
    def once() -> None:
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')}")

    once()  # warm-up
    return median_time(once, runs=runs)


# -- the site file ------------------------------------------------------------------------


def site_text(meters: int = SITE_METERS, channels: int = SITE_CHANNELS) -> str:
    """A site file as a user writes one (block mappings, a flow list of quantities)."""
    lines = ["# meterhub benchmark site: generated, never read by a concentrator", "channels:"]
    for c in range(channels):
        lines += [f"  bus{c}:", "    transport: rs485", f"    port: {PORT_PREFIX}{c}", "    baudrate: 2400",
                  "    parity: E"]
    lines.append("meters:")
    per_channel = math.ceil(meters / channels)  # bus0 has the first 256 meters, bus1 the next, ...
    for m in range(meters):
        lines += [f'  - address: "{m + 1:012d}"', "    protocol: dlt645", f"    channel: bus{m // per_channel}",
                  f"    name: flat {m + 1}"]
        if m < LAST_POINT:
            lines.append(f"    point: {m + 1}")
        lines.append(f"    quantities: [{', '.join(SITE_QUANTITIES)}]")
    lines += ["schedule:", "  interval: 15m", "store: \"sqlite:///:memory:\""]
    return "\n".join(lines) + "\n"


def _child(function: str, env: dict[str, str], *args: Any) -> dict[str, Any]:
    """Run ``function(*args)`` of this module in a fresh interpreter; its printed JSON."""
    code = f"from benchmarks.footprint import {function}; {function}(*{args!r})"
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=_ROOT,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{function} failed (exit {done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _config_load_figure(site: Path, runs: int, env: dict[str, str]) -> Figure:
    got = _child("child_load_times", env, str(site), runs)
    if not got["with_libyaml"]:
        libyaml = "PyYAML without libyaml (yaml.__with_libyaml__ false): the pure-Python parser"
    elif got["libyaml_used"]:
        libyaml = "libyaml used (yaml.__with_libyaml__ true)"
    else:
        libyaml = "libyaml installed but not used for this file: the pure-Python parser"
    return Figure("config_load_2048_s", got["median_s"], "s", CONFIG_LOAD_GOAL_S,
                  note=f"load_site of {got['meters']} meters on {got['channels']} channels ({got['bytes']} bytes), "
                       f"in one child process after a warm-up load, median of {runs}; first load (importing meterhub.config) "
                       f"{got['first_s']:.3f} s; {libyaml}; no port opened")


def _rss_figure(site: Path, env: dict[str, str]) -> Figure:
    got = _child("child_rss", env, str(site))
    return Figure("concentrator_rss_2048_mb", got["rss_mb"], "MB", RSS_GOAL_MB,
                  note=f"ru_maxrss of a child that loaded the site and built a Concentrator (in-memory store, "
                       f"channels not opened), bytecode cached; {got['before_mb']:.1f} MB of it before the site "
                       f"(interpreter, meterhub and plugins imported); MB = 1024 KiB")


# -- what the child processes run -----------------------------------------------------------


def _watch_ports() -> list[str]:
    """Record every file opened whose name is one of the site's ports (a Python audit hook:
    open(), os.open() and pyserial's open all raise the ``open`` event)."""
    opened: list[str] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes)) \
                and os.fsdecode(args[0]).startswith(PORT_PREFIX):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)
    return opened


def _registries(plugins: Any) -> dict[str, Any]:
    """What ``meterhub run`` checks a site against (cli/run.py ``_load_site``): every
    installed driver, transport and uplink; the first call imports every plugin's modules."""
    return {"drivers": plugins.meter_drivers(), "transports": plugins.transports(), "uplinks": plugins.uplinks()}


def _load(path: str, registries: dict[str, Any]) -> Any:
    from meterhub.config import load_site

    return load_site(path, **registries)


def _check_site(site: Any, opened: list[str]) -> None:
    if opened:
        raise RuntimeError(f"loading the site opened its ports: {sorted(set(opened))}")
    if len(site.meters) != SITE_METERS or len(site.channels) != SITE_CHANNELS:
        raise RuntimeError(f"the site has {len(site.meters)} meters on {len(site.channels)} channels")


def child_load_times(path: str, runs: int) -> None:
    """Print the load times of the site at ``path``: the first, then the median of ``runs``."""
    import yaml
    from meterhub.plugins import get_plugins
    from meterhub.yamlnodes import FAST_LOADER, compose_yaml

    opened = _watch_ports()
    registries = _registries(get_plugins())
    started = time.perf_counter()
    site = _load(path, registries)
    first = time.perf_counter() - started
    _check_site(site, opened)
    median = median_time(lambda: _load(path, registries), runs=runs)
    _check_site(site, opened)
    # the loader meterhub parses this text with: libyaml's, or PyYAML's pure-Python one
    loader, _ = compose_yaml(Path(path).read_text(encoding="utf-8"), path, [])
    used = FAST_LOADER is not None and isinstance(loader, FAST_LOADER)
    print(json.dumps({"median_s": median, "first_s": first, "with_libyaml": bool(yaml.__with_libyaml__),
                      "libyaml_used": used,
                      "meters": len(site.meters), "channels": len(site.channels),
                      "bytes": os.path.getsize(path)}))


def _max_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def child_rss(path: str) -> None:
    """Print the peak resident set of this process once it holds a Concentrator for the site."""
    from meterhub.plugins import get_plugins
    from meterhub.runtime import Concentrator
    from meterhub.store import open_store

    opened = _watch_ports()
    plugins = get_plugins()
    registries = _registries(plugins)
    before = _max_rss_mb()
    site = _load(path, registries)
    with open_store("sqlite:///:memory:") as store:
        concentrator = Concentrator(site, plugins=plugins, store=store)
        _check_site(concentrator.site, opened)
        print(json.dumps({"rss_mb": _max_rss_mb(), "before_mb": before}))
