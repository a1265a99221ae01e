"""Entry point of the ``gprs`` plugin: registers the ``gdw1376.1`` uplink."""

from __future__ import annotations

from typing import Any

from meterhub.hookspecs import hookimpl

# The uplink module (asyncio, the 1376.1 codec) is imported when the hook runs, not when
# the plugin is loaded.


@hookimpl
def meterhub_register_uplinks(register: Any) -> None:
    from .uplink import Gdw1376UplinkDriver

    register(Gdw1376UplinkDriver())


@hookimpl
def meterhub_register_commands(cli: Any) -> None:
    from .cli import gprs_cmd

    cli.add_command(gprs_cmd)
