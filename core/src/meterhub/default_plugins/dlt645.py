"""The built-in DL/T 645-2007 and DL/T 645-1997 meter drivers, registered like any plugin's.

The drivers are imported when a hook asks for them, not when the plugin is loaded: a
command that needs none of them (``meterhub --help``) does not pay for them."""

from meterhub.hookspecs import hookimpl


@hookimpl
def meterhub_register_meter_drivers(register):
    from meterhub.protocols.dlt645_driver import Dlt645_1997Driver, Dlt645Driver

    register(Dlt645Driver())
    register(Dlt645_1997Driver())


@hookimpl
def meterhub_register_simulators(register):
    from meterhub.protocols.dlt645_sim import Dlt645Simulator

    register(Dlt645Simulator())
