"""Entry point of the ``mqtt`` plugin: registers the ``mqtt`` uplink and ``meterhub ha``."""

from __future__ import annotations

from typing import Any

from meterhub.hookspecs import hookimpl

# The uplink (aiomqtt, asyncio) and the command group are imported when their hook runs,
# not when the plugin is loaded.


@hookimpl
def meterhub_register_uplinks(register: Any) -> None:
    from .uplink import MqttUplinkDriver

    register(MqttUplinkDriver())


@hookimpl
def meterhub_register_commands(cli: Any) -> None:
    from .cli import ha_cmd

    cli.add_command(ha_cmd)
