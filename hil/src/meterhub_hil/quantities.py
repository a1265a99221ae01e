"""The quantities meterhub-hil adds to the vocabulary, in a module of their own so that
registering them (at every start of the command line) imports nothing else of the bench."""

from __future__ import annotations

from meterhub.quantities import Quantity

#: The pulses counted on a collector input (see :mod:`meterhub_hil.pulse` for its register).
PULSE_COUNT = Quantity("0-0:96.99.1", "pulse_count", "pulses counted on a collector input", "imp", "total")
