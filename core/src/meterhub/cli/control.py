"""``meterhub control``: fee control on one meter (DL/T 645 relay control), through the
command path every origin uses: policy hooks, credentials from the secret store, the audit
trail in the store."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from .. import jsonout
from .common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Failure,
    _driver,
    _one_channel,
    _plugins,
    _serial_options,
    _settings,
)

#: What each action asks of the meter's driver: DL/T 645 relay control (1Ch) with N1 = 1Ah
#: (trip, 拉闸) or 1Ch (direct close, 直接合闸); CJ/T 188 valve control (write A017: 99h
#: close, 55h open), which the standard does not authenticate.
ACTIONS = {
    "relay-off": ("relay", {"action": "trip"}),
    "relay-on": ("relay", {"action": "close"}),
    "valve-close": ("valve", {"action": "close"}),
    "valve-open": ("valve", {"action": "open"}),
}
#: The secret-store entry an action's credentials come from unless --credential names one.
DEFAULT_CREDENTIAL = {"relay": "dlt645", "valve": ""}


@click.command("control")
@click.argument("action", type=click.Choice(sorted(ACTIONS)))
@_serial_options
@click.option("--address", required=True, help="Meter address in the protocol's own form.")
@click.option("--credential", default=None,
              help="Secret-store entry with the meter's password (and level) and operator code (relay: dlt645 by "
                   "default, which also comes from METERHUB_DLT645_PASSWORD and METERHUB_DLT645_OPERATOR; valve: none).")
@click.option("--db", default="meterhub.db", show_default=True, type=click.Path(dir_okay=False),
              help="The store whose audit trail records the command (meterhub commands).")
@click.option("--arg", "extra_args", multiple=True, metavar="KEY=VALUE",
              help="A further argument of the command, as a policy hook may ask for one (confirm=true); repeatable.")
def control_cmd(action: str, transport: str, port: str, baudrate: int | None, parity: str | None,
                bytesize: int | None, stopbits: str | None, protocol: str, timeout: float | None, as_json: bool,
                address: str, credential: str | None, db: str, extra_args: tuple[str, ...]) -> None:
    """Trip (relay-off) or close (relay-on) a meter's relay, with its credentials from the
    secret store; close or open a water or gas meter's valve (valve-close, valve-open).
    Nothing is sent without the credentials a command needs; a meter's refusal exits 1
    naming it."""
    from ..commands import local_issuer
    from ..errors import CommandRefused, MeterError, MeterhubError
    from ..model import Command, Meter, Origin, Schedule, Site
    from ..runtime import Concentrator
    from ..secrets import default_secrets
    from ..store import open_store

    plugins = _plugins()
    driver = _driver(plugins, protocol)
    try:
        address = driver.normalize_address(address)
    except ValueError as exc:
        raise Failure(f"bad {protocol} address {address!r}: {exc}", EXIT_USAGE) from None
    name, args = ACTIONS[action]
    args = {**_extra(extra_args), **args}
    credential = DEFAULT_CREDENTIAL[name] if credential is None else credential
    channel = _one_channel(plugins, transport, port, _settings(driver, baudrate, parity, bytesize, stopbits))
    meter = Meter(address=address, protocol=protocol, channel="cli", timeout=timeout, credential=credential)
    site = Site(channels={"cli": channel}, meters=(meter,), schedule=Schedule(retries=0), store=f"sqlite:///{db}")
    command = Command(address, protocol, name, args, origin=Origin.CLI, issuer=local_issuer(), credential=credential)

    async def run() -> Any:
        with open_store(site.store) as store:
            async with Concentrator(site, plugins=plugins, store=store, secrets=default_secrets()) as conc:
                return await conc.execute(meter, command)

    outcome: dict[str, Any] = {"meter": address, "protocol": protocol, "port": port, "command": action, "id": command.id}
    try:
        answer = asyncio.run(run())
    except CommandRefused as exc:
        _fail(outcome, f"refused, nothing sent: {exc}", as_json)
    except MeterError as exc:
        _fail(outcome, f"meter {address} on {port} refused {action}: {exc.reason or exc}", as_json)
    except (MeterhubError, ValueError) as exc:
        _fail(outcome, f"meter {address} on {port}: {action} failed: {exc}", as_json)
    outcome.update(answer)
    outcome["command"] = action
    if as_json:
        click.echo(jsonout.dumps(outcome))
    click.echo(f"meter {address}: {action} done ({answer.get('action', '')}); recorded in {db} as command "
               f"{command.id[:8]} (meterhub commands)", err=True)


def _extra(specs: tuple[str, ...]) -> dict[str, Any]:
    """``--arg KEY=VALUE`` as command arguments (true/false as booleans)."""
    out: dict[str, Any] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise Failure(f"--arg {spec!r}: expected KEY=VALUE", EXIT_USAGE)
        text = value.strip()
        out[key.strip()] = {"true": True, "false": False}.get(text.lower(), text)
    return out


def _fail(outcome: dict[str, Any], message: str, as_json: bool) -> None:
    if as_json:
        click.echo(jsonout.dumps({**outcome, "error": message}))
    raise Failure(message, EXIT_FAILED)
