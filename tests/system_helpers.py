"""Helpers of the system tests: the ``meterhub`` command run as a user runs it, and a DL/T 645
meter that this project did not write (the ``dlt645`` package's own server) on a real pty."""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any


#: How long the foreign meter's thread sleeps in select() before checking its stop flag.
PEER_POLL_S = 0.02


def meterhub(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``meterhub`` command in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("COLUMNS", "100")
    return subprocess.run([sys.executable, "-m", "meterhub.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


class ForeignMeter:
    """The ``dlt645`` package's MeterServerService answering on the master side of a pty.

    Nothing of meterhub is used on this side: framing, scrambling and checksums are the
    other implementation's, so a test passing here shows interoperability, not agreement
    with ourselves.
    """

    def __init__(self, address: str) -> None:
        from dlt645 import DLT645Protocol, MeterServerService

        self._protocol = DLT645Protocol
        self.address = address
        wire = bytes.fromhex(address)[::-1]  # nameplate order -> wire order A0..A5
        self.service = MeterServerService(server=None)
        self.service.set_address(bytearray(wire))
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.requests = 0
        self._buffer = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="foreign-dlt645", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], PEER_POLL_S)
            if not ready:
                continue
            try:
                self._buffer += os.read(self.master, 4096)
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: no client has the slave open right now
                    raise
                time.sleep(PEER_POLL_S)
                continue
            self._answer_all()

    def _answer_all(self) -> None:
        while b"\x16" in self._buffer:
            try:
                rest, frame = self._protocol.deserialize_with_remaining(bytes(self._buffer))
            except Exception:  # the other library's own complaint about a partial frame
                return
            if frame is None:
                return
            self._buffer = bytearray(rest or b"")
            self.requests += 1
            answer = self.service.handle_request(frame)
            if answer:
                os.write(self.master, bytes(answer))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def write_site(path: Path, port: str, *, addresses: tuple[str, ...] = ("000000000001", "000000000002"),
               quantities: str = '["energy_import", "voltage_l1"]', protocol: str = "dlt645",
               extra: str = "") -> Path:
    meters = "\n".join(
        f'  - {{address: "{a}", channel: bus1, protocol: {protocol}, point: {i}, quantities: {quantities}}}'
        for i, a in enumerate(addresses, 1)
    )
    path.write_text(
        "channels:\n"
        f"  bus1: {{transport: rs485, port: {port}, baudrate: 9600, parity: E}}\n"
        f"meters:\n{meters}\n"
        "schedule: {interval: 1m, retries: 1}\n"
        f"store: sqlite:///{path.parent / 'site.db'}\n"
        f"{extra}",
        encoding="utf-8",
    )
    return path


def parse_json(text: str) -> Any:
    import decimal
    import json

    return json.loads(text, parse_float=decimal.Decimal)

