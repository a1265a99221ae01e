"""Entry point of the ``infrared`` plugin."""

from __future__ import annotations

from typing import Any

from meterhub.hookspecs import hookimpl


@hookimpl
def meterhub_register_transports(register: Any) -> None:
    from .transport import InfraredTransport

    register(InfraredTransport())


@hookimpl
def meterhub_register_meter_drivers(register: Any) -> None:
    from .driver import Iec62056Driver

    register(Iec62056Driver())


@hookimpl
def meterhub_register_commands(cli: Any) -> None:
    from .cli import ir_cmd

    cli.add_command(ir_cmd)
