"""``meterhub ha``: what Home Assistant will make of a site before anything is published.

``meterhub ha lint SITE`` lists, for every quantity of every meter, the device class, state
class and unit its discovery payload gives HA and whether HA's energy dashboard would take
it (and why not), then the mqtt uplink settings that would keep discovery from working.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from meterhub.model import Meter, Site

from . import topics

EXIT_REFUSED = 1  #: a consumption register (energy, water, gas, heat) would be refused
EXIT_USAGE = 2  #: the site file is missing or invalid

MQTT = "mqtt"


@click.group("ha")
def ha_cmd() -> None:
    """Home Assistant: check what its MQTT discovery and energy dashboard make of a site (meterhub-mqtt)."""


@ha_cmd.command("lint")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="One object per meter and quantity on stdout: meter, quantity, alias, device_class, "
                   "state_class, unit, energy_dashboard, problems, notes.")
def lint_cmd(config: str, as_json: bool) -> None:
    """Report every quantity HA's energy dashboard would refuse and why, and the mqtt uplink
    settings that would break discovery. Exit 0 when every consumption register (energy,
    water, gas, heat) is fine, 1 when one would be refused, 2 for a bad site file. The
    discovery needs Home Assistant 2024.2 or newer."""
    site = _load(config)
    findings = lint_site(site)
    warnings = uplink_problems(site)
    if as_json:
        click.echo(json.dumps(findings, ensure_ascii=False, indent=2))
        for line in warnings:
            click.echo(f"warning: {line}", err=True)
    else:
        for finding in findings:
            click.echo(_line(finding))
        for line in warnings:
            click.echo(f"warning: {line}")
    refused = [f for f in findings if f["consumption"] and not f["energy_dashboard"]]
    if refused:
        names = ", ".join(f"{f['meter']} {f['alias']}" for f in refused)
        click.echo(f"error: the energy dashboard would refuse {len(refused)} consumption register(s): {names}",
                   err=True)
        raise SystemExit(EXIT_REFUSED)


def _load(config: str) -> Site:
    """The site file validated as ``meterhub run`` does, with the installed drivers,
    transports and uplinks; its mistakes one per line (file:line: key: message), exit 2."""
    from meterhub.config import load_site
    from meterhub.errors import ConfigError, MeterhubError
    from meterhub.plugins import get_plugins

    if not Path(config).exists():
        click.echo(f"error: {config}: no such file", err=True)
        raise SystemExit(EXIT_USAGE)
    try:
        plugins = get_plugins()
        return load_site(config, drivers=plugins.meter_drivers(), transports=plugins.transports(),
                         uplinks=plugins.uplinks())
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    except MeterhubError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_USAGE) from None


def meter_label(meter: Meter) -> str:
    """How the lint names a meter: its name, else ``protocol address``."""
    return meter.name or f"{meter.protocol} {meter.address}"


#: Device classes newer than the oldest Home Assistant the discovery works with (2024.2:
#: a device's serial_number), and since when HA has them.
NEWER_DEVICE_CLASSES = {"reactive_energy": "mid-2025 (home-assistant/core#143941)"}


def lint_site(site: Site) -> list[dict[str, Any]]:
    """One finding per meter and quantity, in the site's order: what HA is told
    (``device_class``, ``state_class``, ``unit``), whether its energy dashboard takes it,
    the ``problems`` if not, ``notes`` (a unit spelt differently for HA), and whether it is a
    ``consumption`` register (one whose refusal is an error)."""
    from meterhub.quantities import resolve

    from .discovery import energy_dashboard_problems, ha_metadata

    findings: list[dict[str, Any]] = []
    for meter in site.meters:
        for code in meter.quantities:
            quantity = resolve(code)
            ha = ha_metadata(quantity)
            problems = energy_dashboard_problems(meter, quantity)
            notes = []
            if ha.converted_from:
                notes.append(f"meterhub's {ha.converted_from} is published to HA as {ha.unit}")
            if ha.dashboard and not problems:
                notes.append(f"OK for the energy dashboard ({ha.dashboard})")
            if ha.device_class in NEWER_DEVICE_CLASSES:
                notes.append(f"Home Assistant has device class {ha.device_class} since "
                             f"{NEWER_DEVICE_CLASSES[ha.device_class]}: an older one refuses this sensor")
            findings.append({
                "meter": meter_label(meter),
                "key": meter.key,
                "quantity": quantity.obis,
                "alias": quantity.alias,
                "device_class": ha.device_class,
                "state_class": ha.state_class,
                "unit": ha.unit,
                "energy_dashboard": not problems,
                "consumption": bool(ha.dashboard),
                "problems": problems,
                "notes": notes,
            })
    return findings


def _line(finding: dict[str, Any]) -> str:
    described = ", ".join(str(v) for v in (finding["device_class"], finding["state_class"], finding["unit"]) if v)
    head = f"{finding['meter']} {finding['alias']}"
    if finding["energy_dashboard"]:
        text = f"{head}: OK for the energy dashboard ({described})"
    else:
        verdict = "REFUSED by the energy dashboard" if finding["consumption"] else "not in the energy dashboard"
        text = f"{head}: {verdict}: {'; '.join(finding['problems'])}"
    extra = [n for n in finding["notes"] if not n.startswith("OK for")]
    return f"{text} [{'; '.join(extra)}]" if extra else text


def uplink_problems(site: Site) -> list[str]:
    """The site's mqtt uplink settings that keep HA from discovering its meters: no mqtt
    uplink at all, ``discovery: false``, a discovery prefix HA does not listen on by
    default, states not retained."""
    uplinks = [u for u in site.uplinks if u.protocol == MQTT]
    if not uplinks:
        return [("no mqtt uplink in the site: nothing reaches Home Assistant (add `uplinks: - protocol: mqtt`, "
                "server: HOST:1883)")]
    problems: list[str] = []
    for uplink in uplinks:
        options = uplink.options
        where = f"uplink {uplink.name}"
        if options.get("discovery", True) is False:
            problems.append(f"{where}: discovery: false: HA will not see the meters unless each sensor is "
                            "configured by hand")
            continue
        prefix = options.get("discovery_prefix", topics.DISCOVERY_PREFIX)
        if prefix != topics.DISCOVERY_PREFIX:
            problems.append(f"{where}: discovery_prefix: {prefix}: HA listens on {topics.DISCOVERY_PREFIX}/ "
                            "unless its MQTT discovery prefix was changed to match")
        if options.get("retain", True) is False:
            problems.append(f"{where}: retain: false: after HA or the broker restarts, every sensor is unknown "
                            "until the next round")
    sites = [_site_level(site, u.options) for u in uplinks]
    if len(set(sites)) < len(sites):
        problems.append(f"two mqtt uplinks publish site {_first_repeat(sites)}: their discovery payloads "
                        "overwrite each other")
    return problems


def _site_level(site: Site, options: Any) -> tuple[str, str]:
    """The ``(broker, site level)`` an uplink publishes under: its ``site:``, else the
    site's ``terminal:`` slugged, else ``meterhub`` (the uplink's documented default)."""
    level = options.get("site") or (topics.slug(site.terminal) if site.terminal else topics.DEFAULT_PREFIX)
    return str(options.get("server", "")), topics.slug(level)


def _first_repeat(items: Sequence[tuple[str, str]]) -> str:
    seen: set[tuple[str, str]] = set()
    for item in items:
        if item in seen:
            return item[1]
        seen.add(item)
    return ""
