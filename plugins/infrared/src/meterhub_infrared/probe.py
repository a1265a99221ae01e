"""An optical probe on a serial port: the link, with its echo taken out.

Most optical heads are half-duplex and hear their own transmission: the infrared LED shines
on the photodiode beside it (or the meter's window reflects it), so every byte written comes
back on the read side before the meter's answer. :class:`ProbeLink` wraps the core's serial
link and removes that echo from what it reads: after a write it expects the same bytes back,
in order, and drops them; bytes that differ are the meter's (or noise) and are passed on.

``echo``: ``"auto"`` (default) learns it from the first write (the probe echoes when the
bytes written come back first), ``"on"`` expects it always, ``"off"`` never (a full-duplex
head, or the simulators and a pty).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from meterhub import timing
from meterhub.model import SerialSettings

log = logging.getLogger(__name__)

ECHO_MODES = ("auto", "on", "off")

#: How long after a write its echo may still be on its way (a USB adapter's latency timer,
#: 16 ms on FTDI by default, plus the host waking up), on top of the bytes' wire time.
ECHO_SLACK_S = 0.05


class ProbeLink:
    """A :class:`meterhub.api.Link` that removes an optical probe's echo."""

    def __init__(self, inner: Any, echo: str = "auto") -> None:
        if echo not in ECHO_MODES:
            raise ValueError(f"echo must be one of {', '.join(ECHO_MODES)}, not {echo!r}")
        self.inner = inner
        self.name = inner.name
        self.echo = echo
        self.echoes = 0  #: echoed bytes removed so far
        self._expected = bytearray()  # bytes written whose echo has not come back yet
        self._until = 0.0  # time.monotonic() after which a missing echo is given up

    @property
    def settings(self) -> SerialSettings:
        return self.inner.settings

    @settings.setter
    def settings(self, value: SerialSettings) -> None:
        self.inner.settings = value

    def __getattr__(self, name: str) -> Any:  # url, wire_settings, is_virtual ... of the serial link
        return getattr(self.inner, name)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        self._expected.clear()
        await self.inner.close()

    async def apply_settings(self, settings: SerialSettings) -> None:
        await self.inner.apply_settings(settings)

    async def reset_input(self) -> None:
        self._expected.clear()
        await self.inner.reset_input()

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)
        if self.echo != "off" and data:
            self._expected += data
            self._until = time.monotonic() + timing.frame_time(len(self._expected), self.settings) + ECHO_SLACK_S

    async def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            data = await self.inner.read(max(deadline - time.monotonic(), 0.0))
            if not self._expected:
                return data
            if not data:
                if time.monotonic() > self._until:  # the echo did not come: a probe that does not echo
                    self._no_echo()
                return data
            rest = self._strip(bytes(data))
            if rest or time.monotonic() >= deadline:
                return rest

    def _strip(self, data: bytes) -> bytes:
        """``data`` without the echo it begins with."""
        same = 0
        while same < len(data) and same < len(self._expected) and data[same] == self._expected[same]:
            same += 1
        if same == 0:
            self._no_echo()
            return data
        del self._expected[:same]
        self.echoes += same
        if self.echo == "auto":
            self.echo = "on"
            log.info("probe %s echoes what it sends; the echo is removed", self.name)
        if self._expected and same < len(data):  # the echo broke off: what follows is not ours
            log.debug("probe %s: echo broke off after %d byte(s)", self.name, self.echoes)
            self._expected.clear()
        return data[same:]

    def _no_echo(self) -> None:
        if self.echo == "auto":
            self.echo = "off"
            log.info("probe %s does not echo", self.name)
        self._expected.clear()
