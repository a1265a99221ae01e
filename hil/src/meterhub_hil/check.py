"""``meterhub bench check``: every instrument of a bench with its identity and a self-test."""

from __future__ import annotations

import os
from typing import Any

import attrs

from . import bench as b
from .session import Bench

#: The loopback pattern sent across a pair: every byte value a binary protocol needs
#: to pass unchanged, the preamble, frame marks and terminators included.
PATTERN = bytes([0xFE, 0xFE, 0x68, 0x16, 0x0A, 0x0D, 0x00, 0xFF, 0x11, 0x13, 0x33, 0xAA, 0x99, 0x55])

#: Seconds to wait for the pattern on the other adapters (a 2400 Bd pair takes 64 ms).
LOOPBACK_TIMEOUT_S = 1.0

#: The generator self-test: a short counted burst, read back with SENT?; valid S0 timing
#: (40 ms on, 60 ms off: IEC 62053-31 asks for 30 ms each) so a wired S0 input counts it.
BURST = (10, 10.0, 0.040)  # pulses, Hz, seconds wide


@attrs.define
class CheckResult:
    name: str
    kind: str
    identity: str = ""
    ok: bool = True
    details: list[str] = attrs.field(factory=list)

    def fail(self, message: str) -> None:
        self.ok = False
        self.details.append(message)

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def check_bench(path: str | os.PathLike[str], *, virtual: bool | None = None) -> list[CheckResult]:
    spec = b.load_bench(path, virtual=virtual)
    results = {name: CheckResult(name, inst.type) for name, inst in spec.instruments.items()}
    with Bench(spec) as bench:
        for name, inst in spec.instruments.items():
            result = results[name]
            try:
                if inst.type == b.ADAPTER:
                    result.identity = bench.adapter(name).identity
                else:
                    _check_generator(bench, name, result)
            except Exception as exc:  # each instrument passes or fails on its own
                result.fail(f"{type(exc).__name__}: {exc}")
        for pair in spec.buses.values():
            _check_pair(bench, pair, results)
    return list(results.values())


def _check_pair(bench: Bench, pair: b.Bus, results: dict[str, CheckResult]) -> None:
    """Each adapter on a pair must hear what the first one sends, and the first what the second sends."""
    usable = [a for a in pair.adapters if results[a].ok]
    if len(usable) < 2:
        return
    for sender in usable[:2]:
        listeners = [a for a in usable if a != sender]
        for name in listeners:
            bench.adapter(name).flush()
        bench.adapter(sender).write(PATTERN)
        for name in listeners:
            got = bytearray()
            adapter = bench.adapter(name)
            while len(got) < len(PATTERN):
                chunk = adapter.read_available(LOOPBACK_TIMEOUT_S)
                if not chunk:
                    break
                got += chunk
            if bytes(got) != PATTERN:
                results[name].fail(f"on {pair.name}: expected {PATTERN.hex(' ')} from {sender}, got {bytes(got).hex(' ') or 'nothing'}")
            else:
                results[name].details.append(f"hears {sender} on {pair.name} ({len(PATTERN)} bytes intact)")


def _check_generator(bench: Bench, name: str, result: CheckResult) -> None:
    gen = bench.pulse_generator(name)
    idn = gen.identify()
    result.identity = idn
    if len(idn.split(",")) != 4:
        result.fail(f"*IDN? should answer four comma-separated fields, got {idn!r}")
    gen.reset()
    errors = gen.errors()
    if errors:
        result.fail(f"error queue not empty after *RST: {errors}")
    count, freq, width = BURST
    gen.burst(1, count, freq, width)
    gen.wait(timeout=count / freq + 5)
    sent = gen.sent(1)
    gen.write("OUTP1 OFF")
    if sent != count:
        result.fail(f"channel 1 sent {sent} of a {count}-pulse burst")
    else:
        result.details.append(f"channel 1: a {count}-pulse burst at {freq:g} Hz sent exactly")
