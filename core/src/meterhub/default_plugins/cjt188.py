"""The built-in CJ/T 188-2004 water, gas and heat meter driver and its simulator, registered like any plugin's."""

from meterhub.hookspecs import hookimpl
from meterhub.protocols.cjt188_driver import Cjt188Driver
from meterhub.protocols.cjt188_sim import Cjt188Simulator


@hookimpl
def meterhub_register_meter_drivers(register):
    register(Cjt188Driver())


@hookimpl
def meterhub_register_simulators(register):
    register(Cjt188Simulator())
