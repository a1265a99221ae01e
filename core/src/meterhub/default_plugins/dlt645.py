"""The built-in DL/T 645-2007 and DL/T 645-1997 meter drivers, registered like any plugin's."""

from meterhub.hookspecs import hookimpl
from meterhub.protocols.dlt645_driver import Dlt645_1997Driver, Dlt645Driver
from meterhub.protocols.dlt645_sim import Dlt645Simulator


@hookimpl
def meterhub_register_meter_drivers(register):
    register(Dlt645Driver())
    register(Dlt645_1997Driver())


@hookimpl
def meterhub_register_simulators(register):
    register(Dlt645Simulator())
