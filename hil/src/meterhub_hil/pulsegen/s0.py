"""S0 pulse interface timing (IEC 62053-31): what a device under test can count.

The generator itself accepts any width and pause its backend can time (fast counters
and collectors are tested too); these checks say when a burst would be too fast for an
S0 input, so the server can warn before the bench blames the device.
"""

from __future__ import annotations

from decimal import Decimal

#: IEC 62053-31 (protocols README §8): an S0 pulse is ON for at least 30 ms ...
S0_MIN_PULSE_S = Decimal("0.030")
#: ... and OFF for at least 30 ms between pulses.
S0_MIN_PAUSE_S = Decimal("0.030")
#: Hence the fastest S0 pulse train: 1 / (30 ms + 30 ms), about 16.7 Hz.
S0_MAX_FREQUENCY_HZ = 1 / (S0_MIN_PULSE_S + S0_MIN_PAUSE_S)

SECONDS_PER_HOUR = 3600
MICROSECOND = Decimal("0.000001")


def s0_timing_issues(frequency_hz: Decimal, width_s: Decimal) -> list[str]:
    """Why pulses of ``width_s`` at ``frequency_hz`` break S0 timing; empty when they do not."""
    # compared in whole microseconds, the resolution the GPIO backends time pulses in:
    # 16.666... Hz with 30 ms ON is a 30 ms pause, not 29.999... ms
    width_s = Decimal(width_s).quantize(MICROSECOND)
    pause_s = (1 / Decimal(frequency_hz) - width_s).quantize(MICROSECOND)
    issues = []
    if width_s < S0_MIN_PULSE_S:
        issues.append(f"pulse width {(width_s * 1000).normalize():f} ms is shorter than the S0 minimum of 30 ms")
    if pause_s < S0_MIN_PAUSE_S:
        issues.append(f"pause {(pause_s * 1000).normalize():f} ms is shorter than the S0 minimum of 30 ms")
    return issues


def pulse_rate_hz(impulses_per_kwh: Decimal, power_kw: Decimal) -> Decimal:
    """Pulse frequency an S0 output with this meter constant gives at this power.

    E[kWh] = pulses / constant (README §8), so pulses per hour = constant x P[kW].
    """
    return Decimal(impulses_per_kwh) * Decimal(power_kw) / SECONDS_PER_HOUR
