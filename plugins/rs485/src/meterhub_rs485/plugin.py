"""Entry point of the ``rs485`` plugin: registers the transport through the collector hook,
exactly as a third-party transport would."""

from __future__ import annotations

from typing import Any

from meterhub.hookspecs import hookimpl

from .transport import Rs485Transport


@hookimpl
def meterhub_register_transports(register: Any) -> None:
    register(Rs485Transport())
