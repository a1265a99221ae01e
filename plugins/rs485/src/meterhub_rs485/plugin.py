"""Entry point of the ``rs485`` plugin: the RS485 transport (collector hook), the Modbus RTU
and M-Bus meter drivers and their simulators (meter hooks), registered exactly as a
third-party plugin would register them.

Each hook imports what it registers: loading the plugin (``meterhub --help``) does not import
pymodbus or the codecs."""

from __future__ import annotations

from typing import Any

from meterhub.hookspecs import hookimpl


@hookimpl
def meterhub_register_transports(register: Any) -> None:
    from .transport import Rs485Transport

    register(Rs485Transport())


@hookimpl
def meterhub_register_meter_drivers(register: Any) -> None:
    from .mbus_driver import MbusDriver
    from .modbus import ModbusDriver

    register(ModbusDriver())
    register(MbusDriver())


@hookimpl
def meterhub_register_simulators(register: Any) -> None:
    from .mbus_sim import MbusSimulator
    from .modbus_sim import ModbusSimulator

    register(ModbusSimulator())
    register(MbusSimulator())
