"""ACME's hooks. Everything here uses meterhub's public API only.

What a hook registers is imported when the hook is called, not when the plugin is loaded:
``meterhub --help`` should not wait for ACME's transport."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from meterhub.hookspecs import hookimpl
from meterhub.quantities import Quantity

if TYPE_CHECKING:
    from meterhub.protocols.dlt645_driver import Dlt645Driver

TEMPERATURE = Quantity("0-0:96.9.0", "meter_temperature", "meter internal temperature", "°C")

#: ACME meters keep their internal temperature in DI 02 80 00 07 (XXX.X °C, sign in bit 15).
ACME_ITEMS = {
    TEMPERATURE.obis: {"di": 0x02800007, "name": "ACME internal temperature", "fmt": "XXX.X", "unit": "°C", "signed": True},
}

#: ACME's EM200 Modbus meter, as a device profile (the same keys as a profile YAML file).
#: Registered for protocol "modbus": used wherever meterhub-rs485 is installed.
ACME_EM200 = {
    "vendor": "ACME",
    "model": "EM200",
    "description": "three-phase meter, input registers, float32 ABCD (fictional example)",
    "serial": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1},
    "defaults": {"function": 4, "type": "f32", "word_order": "big", "byte_order": "big"},
    "quantities": {
        "1-0:32.7.0": {"address": 0, "unit": "V"},
        "1-0:52.7.0": {"address": 2, "unit": "V"},
        "1-0:72.7.0": {"address": 4, "unit": "V"},
        "1-0:1.8.0": {"address": 0x48, "unit": "kWh"},
    },
}

AUDIT_ENV = "ACME_AUDIT_FILE"


def acme_driver() -> Dlt645Driver:
    """DL/T 645-2007 as ACME meters speak it: the standard table plus ACME's registers."""
    from meterhub.protocols.dlt645_driver import Dlt645Driver

    return Dlt645Driver(name="acme-dlt645", description="DL/T 645-2007, ACME variant", extra_items=ACME_ITEMS)


@hookimpl
def meterhub_register_quantities(register: Any) -> None:
    register(TEMPERATURE)


@hookimpl
def meterhub_register_meter_drivers(register: Any) -> None:
    register(acme_driver())


@hookimpl
def meterhub_register_transports(register: Any) -> None:
    from .mux import Mx4Transport

    register(Mx4Transport())


@hookimpl
def meterhub_register_profiles(register: Any) -> None:
    register("modbus", "acme-em200", ACME_EM200)


@hookimpl
def meterhub_before_command(command: Any) -> str | None:
    if command.name == "relay" and str(command.args.get("action", "")).lower() == "trip" and not command.args.get("confirm"):
        return "ACME policy: a relay trip needs confirm: true"
    return None


def _audit(record: dict[str, Any]) -> None:
    from meterhub.jsonout import dumps

    path = os.environ.get(AUDIT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(dumps(record) + "\n")


@hookimpl
def meterhub_readings_collected(readings: list[Any], channel: str) -> None:
    from meterhub.jsonout import reading_to_dict

    for reading in readings:
        _audit({"type": "reading", **reading_to_dict(reading, full=False)})


@hookimpl
def meterhub_event(event: Any) -> None:
    _audit({"type": "event", "kind": event.kind, "source": event.source, "severity": event.severity})


@click.command("acme-info")
def acme_info() -> None:
    """Show what the ACME plugin adds."""
    driver = acme_driver()
    click.echo(json.dumps({"protocol": driver.name, "quantities": sorted(ACME_ITEMS)}))


@hookimpl
def meterhub_register_commands(cli: Any) -> None:
    cli.add_command(acme_info)
