"""The built-in CJ/T 188-2004 water, gas and heat meter driver and its simulator, registered like any plugin's.

The driver and the simulator are imported when a hook asks for them, not when the plugin is loaded."""

from meterhub.hookspecs import hookimpl


@hookimpl
def meterhub_register_meter_drivers(register):
    from meterhub.protocols.cjt188_driver import Cjt188Driver

    register(Cjt188Driver())


@hookimpl
def meterhub_register_simulators(register):
    from meterhub.protocols.cjt188_sim import Cjt188Simulator

    register(Cjt188Simulator())
