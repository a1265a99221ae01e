"""Entry point of the ``rs485`` plugin: the RS485 transport (collector hook), the Modbus RTU
and M-Bus meter drivers and their simulators (meter hooks), registered exactly as a
third-party plugin would register them."""

from __future__ import annotations

from typing import Any

from meterhub.hookspecs import hookimpl

from .mbus_driver import MbusDriver
from .mbus_sim import MbusSimulator
from .modbus import ModbusDriver
from .modbus_sim import ModbusSimulator
from .transport import Rs485Transport


@hookimpl
def meterhub_register_transports(register: Any) -> None:
    register(Rs485Transport())


@hookimpl
def meterhub_register_meter_drivers(register: Any) -> None:
    register(ModbusDriver())
    register(MbusDriver())


@hookimpl
def meterhub_register_simulators(register: Any) -> None:
    register(ModbusSimulator())
    register(MbusSimulator())
