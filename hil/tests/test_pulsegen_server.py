"""The SCPI server through real TCP sockets on 127.0.0.1, and the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import meterhub_hil
from meterhub_hil.pulsegen.backends import SimBackend
from meterhub_hil.pulsegen.instrument import Identity, PulseGenerator
from meterhub_hil.pulsegen.server import parse_channels, serve_in_thread

DEADLINE_S = 30.0  # only turns a hang into a failure; nothing asserts how fast things are


class Client:
    """A raw SCPI socket client: write lines, read answer lines."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=DEADLINE_S)
        self._buffer = b""

    def write(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode("ascii") + b"\n"
        self.sock.sendall(data)

    def readline(self) -> str:
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("ascii")

    def query(self, line: str) -> str:
        self.write(line)
        return self.readline()

    def has_answer(self, wait_s: float) -> bool:
        return bool(self._buffer) or bool(select.select([self.sock], [], [], wait_s)[0])

    def errors(self) -> list[str]:
        found = []
        while (text := self.query("SYST:ERR?")) != '0,"No error"':
            found.append(text)
        return found

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def serving(**options):
    """The server with the simulated backend on 127.0.0.1, stopped afterwards."""
    backend = SimBackend({1: 17, 2: 27})
    try:
        with serve_in_thread(PulseGenerator(backend, Identity(serial="T1", firmware="test")), **options) as running:
            yield running
    finally:
        backend.close()


@pytest.fixture
def server():
    with serving() as running:
        yield running


@pytest.fixture
def connect(server):
    clients = []

    def make() -> Client:
        client = Client(server.address)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def acceptance(client: Client) -> None:
    """The acceptance check of the brief, to the letter."""
    client.write("SOUR1:PULS:FREQ 1000")
    client.write("SOUR1:PULS:COUN 500")
    client.write("OUTP1 ON")
    client.write("INIT1")
    assert client.query("*OPC?") == "1"
    assert client.query("SOUR1:PULS:SENT?") == "500"


def test_acceptance_sequence_over_tcp(connect):
    client = connect()
    assert client.query("*IDN?") == "meterhub,meterhub-pulsegen,T1,test"
    acceptance(client)
    assert client.errors() == []


def test_crlf_terminated_commands_are_accepted(connect):
    client = connect()
    client.write(b"SOUR1:PULS:FREQ 25\r\nSOUR1:PULS:FREQ?\r\n")
    assert client.readline() == "25"


def test_one_line_with_several_queries_gets_one_answer_line(connect):
    client = connect()
    assert client.query("*IDN?;SOUR1:PULS:FREQ?;:OUTP1?") == "meterhub,meterhub-pulsegen,T1,test;10;0"


def test_two_clients_share_the_instrument_but_not_their_error_queues(connect):
    one, two = connect(), connect()
    one.write("SOUR2:PULS:FREQ 3")
    one.write("BOGUS")
    assert two.query("SOUR2:PULS:FREQ?") == "3"
    assert two.errors() == []
    assert one.errors() == ['-113,"Undefined header;BOGUS"']


def test_opc_blocks_only_its_own_client_until_another_client_aborts(connect):
    waiter, other = connect(), connect()
    waiter.write("SOUR1:PULS:FREQ 1;COUN 1000;:OUTP1 ON;:INIT1")  # 1000 s of pulses
    waiter.write("*OPC?")
    assert not waiter.has_answer(0.3)  # still held: the burst runs
    assert other.query("*IDN?").startswith("meterhub,")
    other.write("ABOR1")
    assert waiter.readline() == "1"
    sent = int(waiter.query("SOUR1:PULS:SENT?"))
    assert 1 <= sent < 1000


def test_garbage_gets_scpi_errors_and_the_connection_stays_usable(connect):
    client = connect()
    client.write(b"\xff\xfe\x00garbage\n")
    client.write(b"SOUR1:PULS:FREQ 1 parsec\n")
    client.write(b";;;\n")
    client.write(b"\n")
    assert [e.split(",")[0] for e in client.errors()] == ["-101", "-131", "-102"]
    assert client.query("*IDN?").startswith("meterhub,")


def test_a_client_vanishing_mid_line_changes_nothing_and_others_are_served(connect, server):
    first = connect()
    first.write(b"SOUR1:PULS:FREQ 12")  # no newline: an unfinished command
    first.close()
    rude = connect()
    rude.write(os.urandom(20_000).replace(b"\n", b""))
    rude.sock.shutdown(socket.SHUT_RDWR)
    rude.close()
    later = connect()
    assert later.query("SOUR1:PULS:FREQ?") == "10"
    acceptance(later)


def test_a_very_long_line_is_dropped_with_input_buffer_overrun(connect):
    client = connect()
    client.write(b"SOUR1:PULS:FREQ " + b"9" * 1_000_000 + b"\n")
    assert client.query("*IDN?").startswith("meterhub,")
    assert client.errors() == ['-363,"Input buffer overrun;line longer than 4096 bytes dropped"']
    assert client.query("SOUR1:PULS:FREQ?") == "10"


def test_many_clients_at_once(connect):
    clients = [connect() for _ in range(20)]
    for number, client in enumerate(clients):
        client.write(f"SOUR2:PULS:COUN {number + 1}")
        assert client.query("SOUR2:PULS:COUN?") == str(number + 1)


def test_counts_on_both_channels_at_once(connect):
    client = connect()
    client.write("SOUR1:PULS:FREQ 2000;COUN 300;:SOUR2:PULS:FREQ 1000;COUN 200;:OUTP1 ON;:OUTP2 ON")
    client.write("INIT1;INIT2")
    assert client.query("*OPC?;SOUR1:PULS:SENT?;:SOUR2:PULS:SENT?") == "1;300;200"


# --- what a client can hold of the server ---------------------------------------------------

LONG_BURST = "SOUR1:PULS:FREQ 1;COUN 100000;:OUTP1 ON;:INIT1"  # a day of pulses: it outlasts any test


def open_fds() -> int:
    """File descriptors open in this process, the server's sockets among them."""
    return len(os.listdir("/proc/self/fd"))


def server_tasks(server) -> int:
    """asyncio tasks alive on the server's loop, apart from the one that counts them."""
    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return asyncio.run_coroutine_threadsafe(count(), server.loop).result(DEADLINE_S)


def eventually(condition, what: str) -> None:
    """Wait until ``condition()`` holds; the deadline only turns a hang into a failure."""
    limit = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < limit, what
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc/self/fd (Linux)")
def test_clients_that_leave_during_opc_release_their_task_and_socket():
    leaving = 200
    with serving(max_clients=leaving + 2) as server, contextlib.ExitStack() as stack:
        control = Client(server.address)
        stack.callback(control.close)
        control.write(LONG_BURST)
        assert control.query("OUTP1?") == "1"
        fds, tasks = open_fds(), server_tasks(server)
        clients = [Client(server.address) for _ in range(leaving)]
        for client in clients:
            stack.callback(client.close)
            client.write("*OPC?")
        # both ends of every connection are in this process: every client is accepted
        eventually(lambda: open_fds() >= fds + 2 * leaving, "the server never accepted every client")
        for client in clients:
            client.close()
        eventually(lambda: open_fds() <= fds and server_tasks(server) <= tasks,
                   f"still {open_fds() - fds} sockets and {server_tasks(server) - tasks} tasks over the baseline")
        newcomer = Client(server.address)
        stack.callback(newcomer.close)
        assert newcomer.query("*IDN?").startswith("meterhub,")
        assert control.query("SOUR1:PULS:SENT?") != "100000"  # the burst still runs


def test_a_client_that_closes_its_side_during_opc_is_closed_without_an_answer(connect):
    waiter = connect()
    waiter.write(LONG_BURST)
    waiter.write("*OPC?")
    waiter.sock.shutdown(socket.SHUT_WR)
    assert waiter.sock.recv(100) == b""  # the server closed the connection; the burst runs on
    assert connect().query("SOUR1:PULS:SENT?") != "100000"


def test_commands_sent_during_a_wait_run_after_it(connect):
    waiter, other = connect(), connect()
    waiter.write(LONG_BURST)
    waiter.write("*WAI")
    waiter.write("SOUR1:PULS:SENT?")
    waiter.write("*OPC?")
    assert not waiter.has_answer(0.3)  # still held: the burst runs
    other.write("ABOR1")
    assert 1 <= int(waiter.readline()) < 100000
    assert waiter.readline() == "1"


def test_clients_over_the_limit_are_closed_and_a_freed_place_is_taken_again():
    with serving(max_clients=2) as server, contextlib.ExitStack() as stack:
        def connect() -> Client:
            client = Client(server.address)
            stack.callback(client.close)
            return client

        first, second = connect(), connect()
        assert first.query("*IDN?").startswith("meterhub,") and second.query("*IDN?").startswith("meterhub,")
        assert connect().sock.recv(100) == b""  # the third is closed at once
        first.close()
        eventually(lambda: server.server.clients == 1, "the first client's place was never freed")
        assert connect().query("*IDN?").startswith("meterhub,")
        assert second.query("*IDN?").startswith("meterhub,")


# --- the command line ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(*args: str) -> list[str]:
    """``meterhub-pulsegen`` when installed next to this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("meterhub-pulsegen")
    if script.exists() and shutil.which(str(script)):
        return [str(script), *args]
    return [sys.executable, "-m", "meterhub_hil.pulsegen", *args]


def environment() -> dict[str, str]:
    src = str(Path(meterhub_hil.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


class Command:
    """``meterhub-pulsegen ARGS --host 127.0.0.1 --port <free>`` as a child process."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(command(*args, "--host", "127.0.0.1", "--port", str(self.port)),
                                        env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = ""

    def connect(self) -> Client:
        limit = time.monotonic() + DEADLINE_S
        while True:
            assert self.process.poll() is None, self.process.communicate()
            try:
                return Client(("127.0.0.1", self.port))
            except OSError:
                assert time.monotonic() < limit, "the server never listened"
                time.sleep(0.05)

    def stop(self, signum: int) -> int:
        """Send ``signum`` and wait; the exit status."""
        self.process.send_signal(signum)
        _, self.stderr = self.process.communicate(timeout=DEADLINE_S)
        return self.process.returncode

    def __enter__(self) -> Command:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:  # a failed test: do not leave the server running
            self.process.kill()
            self.process.communicate()


def test_the_command_serves_until_interrupted():
    with Command("--backend", "sim") as server:
        client = server.connect()
        assert len(client.query("*IDN?").split(",")) == 4
        acceptance(client)
        client.close()
        assert server.stop(signal.SIGINT) == 0, server.stderr
    assert f"listening on 127.0.0.1:{server.port}" in server.stderr
    assert "mDNS: 127.0.0.1 is a loopback" in server.stderr  # never advertised from CI's loopback


def test_the_command_stops_on_sigterm_with_the_options_applied():
    with Command("--no-mdns", "--time-scale", "100", "--channels", "1=5,3=6", "--max-clients", "1") as server:
        client = server.connect()
        assert client.query("*IDN?").startswith("meterhub,")
        second = server.connect()
        assert second.sock.recv(100) == b""  # one client at a time
        second.close()
        client.write("SOUR3:PULS:FREQ 10;COUN 300;:OUTP3 ON;:INIT3")  # 30 s of pulses at time scale 100
        assert client.query("*OPC?;SOUR3:PULS:SENT?") == "1;300"
        client.write("SOUR2:PULS:FREQ?")  # channels are 1 and 3 here
        assert client.query("SYST:ERR?").startswith("-114,")
        client.close()
        assert server.stop(signal.SIGTERM) == 0, server.stderr
    assert "1=GPIO5, 3=GPIO6" in server.stderr
    assert "refused: 1 clients are connected" in server.stderr
    assert "mDNS" not in server.stderr


def test_a_missing_gpio_library_is_a_clear_error_not_a_traceback():
    env = environment()
    process = subprocess.run(command("--backend", "pigpio", "--port", "0", "--no-mdns"), env=env,
                             capture_output=True, text=True, timeout=DEADLINE_S)
    try:
        import pigpio  # noqa: F401
    except ImportError:
        assert process.returncode == 1
        assert "pip install pigpio" in process.stderr
        assert "Traceback" not in process.stderr
    else:  # pragma: no cover - a machine with pigpio but (in CI) no pigpiod
        assert "pigpiod" in process.stderr


@pytest.mark.parametrize("text, expected", [("1=17,2=27", {1: 17, 2: 27}), ("3=5", {3: 5}), (" 1=4 , 2=22 ", {1: 4, 2: 22})])
def test_channel_maps(text, expected):
    assert parse_channels(text) == expected


@pytest.mark.parametrize("text", ["1=17,1=27", "1=17,2=17", "0=4", "1:17", "a=b", ""])
def test_bad_channel_maps(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_channels(text)
