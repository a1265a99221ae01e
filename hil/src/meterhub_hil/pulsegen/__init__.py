"""The Raspberry Pi pulse generator of the HIL bench: a SCPI server over TCP.

``meterhub-pulsegen`` emits exact counts of S0/reed pulses on GPIO pins for the pulse
inputs of meters and collectors under test (see hil/PULSEGEN.md). Modules:
:mod:`.scpi` (sans-I/O SCPI parsing and error queue), :mod:`.instrument` (command set
and state), :mod:`.backends` (sim, lgpio, pigpio), :mod:`.server` (asyncio TCP and the
command line), :mod:`.mdns` (optional DNS-SD), :mod:`.s0` (S0 timing rules).
"""

from .backends import BackendError, BackendLimits, PulseBackend, SimBackend, Subscription, create_backend
from .instrument import Identity, PulseGenerator
from .server import PulsegenServer, ServerThread, serve_in_thread

__all__ = [
    "BackendError",
    "BackendLimits",
    "Identity",
    "PulseBackend",
    "PulseGenerator",
    "PulsegenServer",
    "ServerThread",
    "SimBackend",
    "Subscription",
    "create_backend",
    "serve_in_thread",
]
