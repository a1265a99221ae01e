"""The ``plc`` channel's keys beyond the serial settings, checked with the key path and a
reason for every problem (the site loader reports them at their line)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from meterhub.errors import did_you_mean

from .module import COMMAND_TIMEOUT_S

READINGS = ("concentrator", "module")
ROUTE_SYNCS = ("full", "add", "off")
INITS = ("none", "hardware", "parameters", "data")
MAX_RELAY_LEVEL = 15  #: R1 D7-D4

#: Reads in flight at once where the module offers concurrent reading (AFN F1 F1) and the
#: site file says nothing: what HPLC modules commonly allow. A module that allows fewer says
#: so (deny 109) and the channel keeps to its number.
DEFAULT_CONCURRENCY = 5


@attrs.frozen
class PlcOptions:
    reading: str = "concentrator"  #: who leads a reading: the concentrator (13 F1) or the module (14 F1)
    concurrency: int = DEFAULT_CONCURRENCY  #: reads in flight at most (1: never concurrent)
    route_sync: str = "full"  #: full (add and delete), add (only add), off
    main_node: str | None = None  #: the main node address to set (05 F1) when the module has another
    init: str = "none"  #: initialise the module at open (01 F1/F2/F3): none, hardware, parameters, data
    hop_time: float | None = None  #: seconds per relay hop each way; None = from the module's type (03 F10)
    max_depth: int = 7  #: the relay level assumed for a node the module has not reported yet
    busy_retries: int = 8  #: busy answers waited out before a read is given up (not tried)
    command_timeout: float = COMMAND_TIMEOUT_S  #: a module command's answer (the standard: 6 s)
    cycle_timeout: float = 600.0  #: module-led: how long a request waits for the module to ask for its node
    exclusive: bool = True  #: lock the port against a second program


KEYS = tuple(attrs.fields_dict(PlcOptions))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def problems(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with a channel's ``plc`` keys, as ``(key, message)`` pairs."""
    found: list[tuple[str, str]] = []
    for key in options:
        if key not in KEYS:
            found.append((str(key), f"unknown key{did_you_mean(str(key), KEYS)} (known: {', '.join(KEYS)})"))
    choices = {"reading": READINGS, "route_sync": ROUTE_SYNCS, "init": INITS}
    for key, allowed in choices.items():
        if key in options and options[key] not in allowed:
            found.append((key, f"must be one of {', '.join(allowed)}, not {options[key]!r}"))
    if "concurrency" in options and not (_whole(options["concurrency"]) and 1 <= options["concurrency"] <= 255):
        found.append(("concurrency", f"must be a whole number 1..255, not {options['concurrency']!r}"))
    if "max_depth" in options and not (_whole(options["max_depth"]) and 0 <= options["max_depth"] <= MAX_RELAY_LEVEL):
        found.append(("max_depth", f"must be a relay level 0..{MAX_RELAY_LEVEL}, not {options['max_depth']!r}"))
    if "busy_retries" in options and not (_whole(options["busy_retries"]) and 0 <= options["busy_retries"] <= 100):
        found.append(("busy_retries", f"must be a whole number 0..100, not {options['busy_retries']!r}"))
    for key in ("hop_time", "command_timeout", "cycle_timeout"):
        if key in options and not (_number(options[key]) and options[key] > 0):
            found.append((key, f"must be a number of seconds > 0, not {options[key]!r}"))
    if "main_node" in options:
        text = str(options["main_node"])
        if len(text) != 12 or any(c not in "0123456789abcdefABCDEF" for c in text):
            found.append(("main_node", f"must be 12 hex digits (the module's own address), not {options['main_node']!r}"))
    if "exclusive" in options and not isinstance(options["exclusive"], bool):
        found.append(("exclusive", "must be true or false"))
    return found


def parse(options: Mapping[str, Any]) -> PlcOptions:
    """The options of a channel whose :func:`problems` are none."""
    values = dict(options)
    if values.get("main_node") is not None:
        values["main_node"] = str(values["main_node"]).upper()
    for key in ("hop_time", "command_timeout", "cycle_timeout"):
        if key in values:
            values[key] = float(values[key])
    return PlcOptions(**values)
