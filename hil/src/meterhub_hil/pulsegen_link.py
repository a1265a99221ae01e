"""The virtual bench's pulse generator: ``meterhub-pulsegen`` itself, with the simulated GPIO
backend, serving SCPI on 127.0.0.1, its outputs wired in software to the simulated
collectors' inputs. A test drives it through pyvisa exactly as it drives the Pi."""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction

from .pulsegen import Identity, PulseGenerator, SimBackend, serve_in_thread
from .pulsegen.server import package_version

#: Simulated seconds per wall-clock second on the virtual bench: 10,000 pulses at 50 Hz
#: take 4 s instead of 200. Edge times (and so pulse widths and debouncing) are exact in
#: simulated time whatever the scale; only the waiting shrinks. Override with the
#: environment variable below (1 = real time).
DEFAULT_TIME_SCALE = 50
TIME_SCALE_ENV = "METERHUB_BENCH_TIME_SCALE"


class VirtualGenerator:
    """A pulsegen server with the simulated backend; ``connect`` wires an output to a listener."""

    def __init__(self, channels: int, *, time_scale: float | None = None) -> None:
        scale = time_scale if time_scale is not None else float(os.environ.get(TIME_SCALE_ENV, DEFAULT_TIME_SCALE))
        self.backend = SimBackend({n: n for n in range(1, channels + 1)}, time_scale=Fraction(str(scale)))
        self.instrument = PulseGenerator(self.backend, Identity(serial="virtual", firmware=package_version()))
        self.thread = serve_in_thread(self.instrument)
        self._subscriptions: list = []

    @property
    def resource(self) -> str:
        host, port = self.thread.address[:2]
        return f"TCPIP::{host}::{port}::SOCKET"

    def connect(self, channel: int, listener: Callable[[float, bool], None]) -> None:
        """Feed every edge of output ``channel`` to ``listener(time, level)`` (simulated seconds)."""
        self._subscriptions.append(
            self.backend.subscribe(channel, lambda at, level: listener(float(at), bool(level))))

    def stop(self) -> None:
        for sub in self._subscriptions:
            sub.cancel()
        self.thread.stop()
        self.backend.close()


def start_virtual_generator(channels: int) -> tuple[VirtualGenerator, str]:
    generator = VirtualGenerator(channels)
    return generator, generator.resource
