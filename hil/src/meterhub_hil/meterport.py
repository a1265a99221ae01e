"""Simulated meters answering through a bench adapter: our simulator behind a real (or
virtual) USB-RS485 adapter, so a master on another adapter reads a meter it cannot tell
from a real one. The same code runs on a lab bench with two adapters on one pair."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

from meterhub.errors import FrameError
from meterhub.simulator import DEFAULT_TURNAROUND

from .instruments import Rs485Adapter

log = logging.getLogger(__name__)

#: How long one poll of the adapter waits before checking the stop flag (plumbing).
POLL_S = 0.02


class AdapterMeterServer:
    """Serve simulated devices (:class:`meterhub.simulator.SimDevice`) through one adapter."""

    def __init__(self, adapter: Rs485Adapter, devices: Iterable[Any], *,
                 turnaround: tuple[float, float] = DEFAULT_TURNAROUND, seed: int = 0) -> None:
        self.adapter = adapter
        self.turnaround = turnaround  #: seconds from the end of a request to the answer (DL/T 645: 20-500 ms)
        self._rng = random.Random(seed)
        self.devices = list(devices)
        self.requests = 0  #: requests a served device answered
        self._groups: dict[str, tuple[Any, list[Any]]] = {}
        for dev in self.devices:
            self._groups.setdefault(dev.protocol, (dev.new_decoder(), []))[1].append(dev)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"meter-port-{adapter.name}", daemon=True)

    @property
    def skipped(self) -> int:
        """Noise bytes the devices' decoders skipped: garbage seen on the wire."""
        return sum(decoder.skipped for decoder, _ in self._groups.values())

    def start(self) -> AdapterMeterServer:
        self.adapter.flush()  # what the adapter heard before we served belongs to nobody's request
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.adapter.read_available(POLL_S)
            except Exception:  # the adapter went away: nothing more to serve
                log.warning("meter port %s: adapter read failed; stopping", self.adapter.name, exc_info=True)
                return
            if not data:
                continue
            for decoder, devices in self._groups.values():
                for frame in decoder.feed(data):
                    if isinstance(frame, FrameError):
                        continue
                    replies = [reply for dev in devices for reply in dev.handle(frame)]
                    if replies:  # a request one of ours answers (others' traffic shares the pair)
                        self.requests += 1
                        time.sleep(self._rng.uniform(*self.turnaround))
                        for reply in replies:
                            self.adapter.write(reply)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def __enter__(self) -> AdapterMeterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
