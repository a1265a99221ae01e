"""The pytest plugin of meterhub-hil (entry point ``pytest11``).

``pytest --bench FILE`` (or ``METERHUB_BENCH=FILE``) opens that bench once per session.
Tests marked ``hil`` need a bench and are skipped without one; ``@pytest.mark.needs("pulse",
"monitor", ...)`` skips, with the reason, what this bench lacks. The report header shows
the bench's identity (``*IDN?`` of the generator, each adapter's USB serial number), and
every test's frames on the wire are attached to its report (and written to
``--bench-log DIR/<test>.log`` when asked).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH_ENV = "METERHUB_BENCH"

_BENCH_KEY = pytest.StashKey["Any"]()
_ERROR_KEY = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meterhub-hil", "meterhub hardware-in-the-loop bench")
    group.addoption("--bench", default=os.environ.get(BENCH_ENV), metavar="FILE",
                    help=f"bench file (YAML) to run the hil tests on (default: ${BENCH_ENV})")
    group.addoption("--bench-virtual", action="store_true",
                    help="resolve every instrument of the bench file to a virtual loopback")
    group.addoption("--bench-log", default=None, metavar="DIR", help="write each test's frames on the wire to DIR")


def pytest_configure(config: pytest.Config) -> None:
    from .session import FEATURES

    config.addinivalue_line("markers", "hil: needs a bench (--bench FILE); skipped without one")
    config.addinivalue_line("markers", f"needs(*features): skipped unless the bench has them ({', '.join(FEATURES)})")


def _bench(config: pytest.Config) -> Any:
    """The session's opened bench, or None; opened on first use, closed at the end."""
    if _BENCH_KEY in config.stash:
        return config.stash[_BENCH_KEY]
    path = config.getoption("--bench")
    bench = None
    if path:
        from meterhub.errors import ConfigError

        from .session import open_bench

        try:
            bench = open_bench(path, virtual=True if config.getoption("--bench-virtual") else None)
        except ConfigError as exc:
            raise pytest.UsageError(f"bench file {path}:\n" + "\n".join(str(i) for i in exc.issues)) from None
        config.add_cleanup(bench.close)
    config.stash[_BENCH_KEY] = bench
    return bench


def pytest_report_header(config: pytest.Config) -> list[str]:
    path = config.getoption("--bench")
    if not path:
        return ["meterhub bench: none (hil tests are skipped; give --bench FILE)"]
    bench = _bench(config)
    kind = "virtual" if bench.spec.virtual else "real"
    lines = [f"meterhub bench: {bench.spec.name} ({kind}) from {path}; features: {', '.join(sorted(bench.features))}"]
    lines += [f"  {name}: {identity}" for name, identity in bench.identity().items()]
    return lines


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs_bench = item.get_closest_marker("hil") is not None or item.get_closest_marker("needs") is not None
    if not needs_bench:
        return
    bench = _bench(item.config)
    if bench is None:
        pytest.skip("needs a bench: run with --bench FILE (hil/benches/virtual.yaml runs anywhere)")
    for marker in item.iter_markers("needs"):
        missing = [f for f in marker.args if f not in bench.features]
        if missing:
            from .session import FEATURES

            reasons = "; ".join(FEATURES.get(f, f) for f in missing)
            pytest.skip(f"bench {bench.spec.name} lacks {', '.join(missing)} ({reasons})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    bench = item.config.stash.get(_BENCH_KEY, None)
    start = len(bench.frames) if bench is not None else 0
    yield
    if bench is None:
        return
    log = bench.frame_log(start)
    if log:
        item.add_report_section("call", "frames on the wire", log)
        folder = item.config.getoption("--bench-log")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^\w.-]+", "_", item.nodeid)
            Path(folder, f"{name}.log").write_text(log + "\n", encoding="utf-8")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest) -> Any:
    """The opened bench (:class:`meterhub_hil.session.Bench`); skips when there is none."""
    found = _bench(request.config)
    if found is None:
        pytest.skip("needs a bench: run with --bench FILE")
    return found


@pytest.fixture
def adapters(bench: Any) -> Any:
    """Every adapter of the bench by name, opened at its pair's settings."""
    from .bench import ADAPTER

    return {inst.name: bench.adapter(inst.name) for inst in bench.spec.of_type(ADAPTER)}


@pytest.fixture
def pair(bench: Any) -> Any:
    """Roles on the first pair with two adapters or more: ``master``, ``meter`` (the port a
    simulated meter answers on) and, with more adapters, ``monitor`` and ``noise``."""
    from .bench import Bus

    try:
        bus: Bus = bench.pair(2)
    except LookupError:
        pytest.skip(f"bench {bench.spec.name} has no pair with two adapters")
    names = list(bus.adapters)
    roles = {bench.spec.instruments[n].role: n for n in names if bench.spec.instruments[n].role}
    order = [n for n in names if n not in roles.values()]
    pick = {role: roles.get(role) or (order.pop(0) if order else None) for role in ("master", "meter", "monitor", "noise")}
    return PairRoles(bus=bus, **pick)


class PairRoles:
    def __init__(self, bus: Any, master: str | None, meter: str | None, monitor: str | None, noise: str | None) -> None:
        self.bus, self.master, self.meter, self.monitor, self.noise = bus, master, meter, monitor, noise


@pytest.fixture
def pulse_generator(bench: Any) -> Any:
    """The bench's pulse generator (:class:`meterhub_hil.instruments.PulseGenerator`), reset."""
    try:
        gen = bench.pulse_generator()
    except LookupError:
        pytest.skip(f"bench {bench.spec.name} has no pulse generator")
    gen.reset()
    return gen


@pytest.fixture
def devices(bench: Any) -> Any:
    """The devices under test, by name, as the bench file describes them."""
    return dict(bench.spec.devices)


@pytest.fixture
def pulse_wires(bench: Any) -> Any:
    """Every wire from a pulse generator output to a collector input, with the input's spec."""
    wires = [(w, bench.spec.devices[w.device], bench.spec.devices[w.device].inputs[w.input]) for w in bench.spec.wiring]
    if not wires:
        pytest.skip(f"bench {bench.spec.name} wires no pulse output to a collector")
    return wires
