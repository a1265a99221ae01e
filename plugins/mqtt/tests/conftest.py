"""A real Mosquitto broker for the tests, a subscriber that records what reaches it, and an
in-memory terminal (meterhub.testing's) for the uplink's own tests.

The broker runs on a free loopback port with a configuration of its own; where Mosquitto
is not installed the tests that need it skip (``apt-get install mosquitto``), unless
``METERHUB_REQUIRE_SERVERS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from meterhub.model import Meter, Schedule
from meterhub.testing import MemoryTerminal

REQUIRE_SERVERS = "METERHUB_REQUIRE_SERVERS"
#: Where Debian installs the broker (not on a user's PATH).
SBIN_MOSQUITTO = "/usr/sbin/mosquitto"
#: Generous: two workers on a loaded two-core machine.
START_S = 20.0
WAIT_S = 20.0


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return SBIN_MOSQUITTO if os.access(SBIN_MOSQUITTO, os.X_OK) else None


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_SERVERS) == "1":
        pytest.fail(f"{REQUIRE_SERVERS}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A private broker: ``start``, ``stop`` and ``start`` again on the same port (an outage)."""

    def __init__(self, binary: str, folder: Path, *, password_file: Path | None = None,
                 persistence: Path | None = None, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = free_port()
        self.config = folder / f"mosquitto-{self.port}.conf"
        self.log = folder / f"mosquitto-{self.port}.log"
        lines = [f"listener {self.port} {self.host}"]
        # with a folder, sessions and their queued messages outlive a restart of the broker
        lines += ["persistence true", f"persistence_location {persistence}/"] if persistence else ["persistence false"]
        if os.geteuid() == 0:
            # as root, mosquitto would change to its own user, who may not read our files
            lines.append("user root")
        if tls is not None:  # (CA, server certificate, server key)
            lines += [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"]
        if password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> Mosquitto:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + START_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(self.address, timeout=1):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen within {START_S} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def mosquitto_path() -> str:
    binary = mosquitto_binary()
    if binary is None:
        _unavailable("mosquitto is not installed: apt-get install mosquitto")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def mosquitto(mosquitto_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A broker shared by a module's tests: (host, port). Tests keep apart by their site."""
    broker = Mosquitto(mosquitto_path, tmp_path_factory.mktemp("mosquitto")).start()
    yield broker.address
    broker.stop()


@pytest.fixture
def broker(mosquitto_path: str, tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Makes brokers of the test's own (to stop and start, or with a password file)."""
    made: list[Mosquitto] = []

    def make(**options: Any) -> Mosquitto:
        made.append(Mosquitto(mosquitto_path, tmp_path, **options))
        return made[-1]

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def password_broker(broker: Callable[..., Mosquitto], tmp_path: Path) -> Mosquitto:
    """A started broker that takes user ``hub`` with password ``s3cret`` and nobody anonymous."""
    passwd = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin:/usr/bin")
    if passwd is None:
        _unavailable("mosquitto_passwd is not installed: apt-get install mosquitto")
    assert passwd is not None
    path = tmp_path / "passwd"
    subprocess.run([passwd, "-c", "-b", str(path), "hub", "s3cret"], check=True, capture_output=True)
    return broker(password_file=path).start()


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for localhost and 127.0.0.1:
    (CA certificate, server certificate, server key), made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed to make test certificates)")
    assert openssl is not None
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr, ext = folder / "server.pem", folder / "server.key", folder / "server.csr", folder / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        [openssl, "req", "-x509", *curve, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
         "-subj", "/CN=meterhub test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *curve, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(cert), "-days", "2", "-extfile", str(ext)],
    ):
        subprocess.run(command, check=True, capture_output=True)
    return ca, cert, key


@pytest.fixture
def tls_broker(broker: Callable[..., Mosquitto], tmp_path: Path) -> tuple[Mosquitto, Path]:
    """A started broker that speaks only TLS, and the CA file that checks its certificate."""
    ca, cert, key = make_certificates(tmp_path)
    return broker(tls=(ca, cert, key)).start(), ca


# --- a subscriber ------------------------------------------------------------------------------------


@attrs.frozen
class Received:
    topic: str
    payload: str
    retain: bool


class Subscriber:
    """What the broker delivered to a client subscribed to some topics, in order."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._news = asyncio.Event()

    def add(self, message: Received) -> None:
        self.messages.append(message)
        self._news.set()

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> str | None:
        found = self.on(topic)
        return found[-1].payload if found else None

    async def wait_for(self, predicate: Callable[[Subscriber], Any], timeout: float = WAIT_S) -> bool:
        """Whether ``predicate(self)`` became true within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not predicate(self):
            self._news.clear()
            left = end - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), left)
        return True


@contextlib.asynccontextmanager
async def subscribed(address: tuple[str, int], topics: Sequence[str], **client: Any) -> AsyncIterator[Subscriber]:
    """A client subscribed to ``topics`` (QoS 1) for the block, recording every message."""
    import aiomqtt

    found = Subscriber()
    async with aiomqtt.Client(address[0], address[1], **client) as mqtt:
        for topic in topics:
            await mqtt.subscribe(topic, qos=1)

        async def listen() -> None:
            async for message in mqtt.messages:
                payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                found.add(Received(str(message.topic), payload.decode("utf-8"), bool(message.retain)))

        task = asyncio.get_running_loop().create_task(listen())
        try:
            yield found
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@pytest.fixture
def subscribe() -> Callable[..., Any]:
    """``async with subscribe((host, port), ["topic/#"]) as sub:`` (see :func:`subscribed`)."""
    return subscribed


# --- a terminal in memory ----------------------------------------------------------------------------


@pytest.fixture
def memory_terminal() -> Callable[[Sequence[Meter]], MemoryTerminal]:
    """``memory_terminal(meters)``: a :class:`meterhub.testing.MemoryTerminal` for an uplink
    named ``mqtt``, on a site read every minute."""

    def make(meters: Sequence[Meter]) -> MemoryTerminal:
        return MemoryTerminal(meters, name="mqtt", schedule=Schedule(interval=60.0))

    return make
