"""Optical readout: a full IEC 62056-21 mode C readout against its wire-time bound.

The real ``iec62056-21`` driver reads, through the real ``infrared`` transport (echo
removal included), the simulated optical meter on a pseudo-terminal: sign-on at 300 Bd
7E1, identification, option select, the baud switch and the readout at the negotiated
rate. The simulator paces every byte at the rate on the line and echoes the reader's bytes
as a half-duplex head does.

``ir_readout_vs_bound_<baud>``: the session's time ÷ the least the standard allows: the
wire time of the sign-on, identification and option select at 300 Bd and of the readout
at the new rate, plus the meter's minimum reaction time (200 ms) before its identification
and before its readout (the wait for the baud switch). 1.0 is the protocol's own limit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from meterhub import timing
from meterhub.model import ChannelConfig, Meter, SerialSettings

from .figures import Figure

GOAL = 1.2


def _session(baud_char: str) -> tuple[float, float, int]:
    from meterhub_infrared import iec62056_21 as iec
    from meterhub_infrared.driver import Iec62056Driver
    from meterhub_infrared.sim import OpticalMeter
    from meterhub_infrared.transport import InfraredTransport

    with OpticalMeter(baud_char=baud_char, seed=1) as sim:
        driver = Iec62056Driver()
        meter = Meter("", driver.name, "ir")
        config = ChannelConfig("ir", "infrared", sim.path, iec.SIGN_ON_SETTINGS, {"echo": "on"})

        async def once() -> tuple[float, Any, Any]:
            channel = InfraredTransport().create_channel(config)
            await channel.open()
            try:
                started = time.perf_counter()
                ident, readout = await driver.readout(channel.towards(meter), meter, driver.transaction_timeout(iec.SIGN_ON_SETTINGS))
                return time.perf_counter() - started, ident, readout
            finally:
                await channel.close()

        seconds, ident, readout = asyncio.run(once())
    slow = iec.SIGN_ON_SETTINGS
    fast = SerialSettings(iec.MODE_C_BAUD[baud_char], 7, "E", 1)
    readout_bytes = len(readout.encode())
    wire = (timing.frame_time(len(iec.sign_on("")), slow) + timing.frame_time(len(ident.encode()), slow)
            + timing.frame_time(len(iec.option_select(baud_char)), slow) + timing.frame_time(readout_bytes, fast))
    bound = wire + 2 * iec.REACTION_MIN_S
    return seconds, bound, readout_bytes


def run(quick: bool) -> list[Figure]:
    figures = []
    for char in ("5",) if quick else ("5", "3"):
        seconds, bound, size = _session(char)
        rate = int({"3": 2400, "5": 9600}[char])
        figures.append(Figure(f"ir_readout_vs_bound_{rate}", round(seconds / bound, 3), "× bound", GOAL,
                              note=f"mode C readout of {size} bytes at {rate} Bd after a 300 Bd sign-on: "
                                   f"{seconds:.2f} s against {bound:.2f} s"))
    return figures
