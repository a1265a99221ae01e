"""Entry point of the ``plc`` plugin: the ``plc`` transport (collector hook) and the
``meterhub plc`` commands, registered exactly as a third-party plugin would register them."""

from __future__ import annotations

from typing import Any

from meterhub.hookspecs import hookimpl


@hookimpl
def meterhub_register_transports(register: Any) -> None:
    from .transport import PlcTransport

    register(PlcTransport())


@hookimpl
def meterhub_register_commands(cli: Any) -> None:
    from .cli import plc_cmd

    cli.add_command(plc_cmd)
