"""Fixtures of the system tests (helpers live in system_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meterhub.protocols.dlt645_sim import start_dlt645_sim
from meterhub.simulator import PtyBus
from system_helpers import ForeignMeter


@pytest.fixture
def foreign_meter() -> Iterator[ForeignMeter]:
    meter = ForeignMeter("123456789012")
    yield meter
    meter.close()


@pytest.fixture
def sim_bus() -> Iterator[PtyBus]:
    """Three simulated DL/T 645 meters at 9600 Bd on a pty: 000000000001..3."""
    bus = start_dlt645_sim(3, baudrate=9600, seed=7)
    yield bus
    bus.stop()
