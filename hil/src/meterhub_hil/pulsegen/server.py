"""The pulse generator's SCPI server: asyncio TCP, one line per program message.

Every client gets its own session (error queue) over the one shared instrument. A
client is read in chunks and framed by :class:`~.scpi.LineFramer`, so garbage gets SCPI
errors, an over-long line is dropped with -363 and a client that vanishes mid-line
only ends its own connection. ``*OPC?`` holds that client's answer (and its later
commands) until the counted bursts are done; other clients carry on meanwhile. A client
that closes its connection during the wait is let go at once, and at most
``max_clients`` connections are served, so no client can hold more than its one socket.

``meterhub-pulsegen --backend sim --host 127.0.0.1 --port 5025`` runs it;
:func:`serve_in_thread` runs it inside a test or the virtual bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections import deque
from decimal import Decimal, InvalidOperation
from importlib import metadata
from pathlib import Path
from typing import Sequence

from . import scpi
from .backends import BACKENDS, BackendError, create_backend
from .instrument import WAIT, Identity, PulseGenerator, Session
from .mdns import advertise

log = logging.getLogger("meterhub_hil.pulsegen")

#: IANA "scpi-raw": the conventional port of SCPI over a raw TCP socket.
DEFAULT_PORT = 5025
#: How often *OPC?/*WAI look at the bursts (one poll for all waiting clients); far below a
#: pulse period worth testing.
OPC_POLL_S = 0.005
READ_CHUNK = 65536
#: Clients served at once. A bench drives the generator from a script or two; the limit keeps
#: a runaway client (or a port scan) from taking every file descriptor of the Pi. A connection
#: over it is closed as soon as it is accepted.
MAX_CLIENTS = 32


class _ClientGone(Exception):
    """The client closed its side of the connection while its commands waited in *OPC?/*WAI."""


class _ClientInput:
    """One client's input: the lines it sent that have not run yet.

    While ``*OPC?``/``*WAI`` holds a client's commands its socket is still read, so a client
    that leaves during the wait is noticed at once. Only up to ``max_line`` bytes are read
    ahead meanwhile; a client that sends more waits on TCP flow control, not on our memory.
    """

    def __init__(self, reader: asyncio.StreamReader, framer: scpi.LineFramer) -> None:
        self.reader = reader
        self.framer = framer
        self.lines: deque[bytes | scpi.LineOverrun] = deque()

    @property
    def held(self) -> int:
        """Bytes received and not run yet: each line with its newline, an over-long one at its limit."""
        return self.framer.pending + sum(len(line) + 1 if isinstance(line, bytes) else line.limit
                                         for line in self.lines)

    async def read(self) -> bool:
        """Frame what has arrived; False at the end of the stream (the client closed its side)."""
        data = await self.reader.read(READ_CHUNK)
        self.lines.extend(self.framer.feed(data))
        return bool(data)

    async def next_line(self) -> bytes | scpi.LineOverrun | None:
        """The next line to run; None once the client has closed its side and every line ran."""
        while not self.lines:
            if not await self.read():
                return None
        return self.lines.popleft()


class PulsegenServer:
    """Serves one :class:`PulseGenerator` to up to ``max_clients`` TCP clients at once."""

    def __init__(self, instrument: PulseGenerator, *, max_line: int = scpi.MAX_LINE_BYTES,
                 max_clients: int = MAX_CLIENTS) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {max_clients}")
        self.instrument = instrument
        self.max_line = max_line
        self.max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None  # ends once no counted burst runs or nobody waits
        self._waiting = 0  # clients in *OPC?/*WAI

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def clients(self) -> int:
        """Connections served now."""
        return len(self._clients)

    async def start(self, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self._poller is not None:  # nobody waits any more: it ends at its next look
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A new connection: served by a task of its own, or closed when the server is full.

        A plain callback, not a coroutine: asyncio.start_server would wrap a coroutine in a
        task whose cancellation (at close) Python 3.11 reports as an error.
        """
        peer = writer.get_extra_info("peername")
        if len(self._clients) >= self.max_clients:
            log.warning("client %s refused: %d clients are connected, the most this server serves",
                        peer, len(self._clients))
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve_client(reader, writer, peer))
        self._clients.add(task)
        # out of the books only once done: close() waits for the clients it knows, and one is not
        # done until its connection is (a loop closed under it warns "Task was destroyed")
        task.add_done_callback(self._clients.discard)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object) -> None:
        log.info("client %s connected", peer)
        session = self.instrument.session()
        client = _ClientInput(reader, scpi.LineFramer(self.max_line))
        try:
            while (item := await client.next_line()) is not None:
                if isinstance(item, scpi.LineOverrun):
                    session.errors.push(scpi.ScpiError(scpi.INPUT_BUFFER_OVERRUN,
                                                       f"line longer than {item.limit} bytes dropped"))
                    continue
                answer = await self._execute(session, client, item)
                if answer is not None:
                    writer.write(answer.encode("ascii", "replace") + b"\n")
                    await writer.drain()
        except _ClientGone:
            log.info("client %s left during *OPC?/*WAI; %d bytes of its commands dropped", peer, client.held)
        except (ConnectionError, OSError) as exc:
            log.info("client %s: connection lost (%s)", peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # one client's failure never takes the server down
            log.exception("client %s: unexpected error; closing its connection", peer)
        finally:
            if client.framer.pending:
                log.info("client %s left %d bytes of an unfinished line", peer, client.framer.pending)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()
            log.info("client %s disconnected", peer)

    async def _execute(self, session: Session, client: _ClientInput, raw: bytes) -> str | None:
        """One program message; the response message (units joined by ';') or None."""
        try:
            line = scpi.decode_line(raw)
        except scpi.ScpiError as error:
            session.errors.push(error)
            return None
        if not line.strip():
            return None
        responses = []
        for item in self.instrument.run(session, line):
            if item is WAIT:
                await self._wait_until_idle(client)
            else:
                responses.append(item)
        # IEEE 488.2: the response message units of one message are separated by ';'
        return ";".join(responses) if responses else None

    async def _wait_until_idle(self, client: _ClientInput) -> None:
        """*OPC?/*WAI: until no counted burst runs. Raises :class:`_ClientGone` if the client leaves first."""
        if not self.instrument.busy():
            return
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_until_idle())
        poller = self._poller
        self._waiting += 1
        try:
            while not poller.done():
                watched: set[asyncio.Future] = {poller}
                reading = asyncio.ensure_future(client.read()) if client.held < self.max_line else None
                if reading is not None:
                    watched.add(reading)
                try:
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if reading is not None and not reading.done():
                        # safe: StreamReader.read takes nothing until it returns; and waited for,
                        # since the reader allows one read at a time
                        reading.cancel()
                        await asyncio.wait({reading})
                if reading is not None and not reading.cancelled() and not reading.result():
                    raise _ClientGone
            poller.result()
        finally:
            self._waiting -= 1

    async def _poll_until_idle(self) -> None:
        """One poll for every waiting client; it ends when the bursts do or nobody waits any more."""
        while self._waiting and self.instrument.busy():
            await asyncio.sleep(OPC_POLL_S)


class ServerThread:
    """A :class:`PulsegenServer` on its own event loop thread (tests, the virtual bench)."""

    def __init__(self, instrument: PulseGenerator, host: str = "127.0.0.1", port: int = 0, *,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.instrument = instrument
        self.server = PulsegenServer(instrument, max_clients=max_clients)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(host, port), name="pulsegen-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs on (``asyncio.run_coroutine_threadsafe`` to look inside)."""
        return self._loop

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start(host, port))
        except BaseException as exc:  # reported to the constructor's caller
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.close())
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_in_thread(instrument: PulseGenerator, host: str = "127.0.0.1", port: int = 0, *,
                    max_clients: int = MAX_CLIENTS) -> ServerThread:
    """Start serving ``instrument`` in a background thread (port 0: an ephemeral port)."""
    return ServerThread(instrument, host, port, max_clients=max_clients)


# --- command line --------------------------------------------------------------------------


def parse_channels(text: str) -> dict[int, int]:
    """``"1=17,2=27"`` -> {1: 17, 2: 27} (channel number -> BCM GPIO number)."""
    channels: dict[int, int] = {}
    for item in text.split(","):
        channel, sep, pin = item.strip().partition("=")
        if not sep or not channel.strip().isdigit() or not pin.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{item!r}: write channel=GPIO, e.g. 1=17,2=27")
        number, gpio = int(channel), int(pin)
        if number < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: channels are numbered from 1")
        if number in channels:
            raise argparse.ArgumentTypeError(f"{item!r}: channel {number} given twice")
        if gpio in channels.values():
            raise argparse.ArgumentTypeError(f"{item!r}: GPIO {gpio} is already channel "
                                             f"{next(c for c, g in channels.items() if g == gpio)}")
        channels[number] = gpio
    return channels


def _positive_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def default_serial() -> str:
    """The Raspberry Pi's serial number (device tree or /proc/cpuinfo), else the host name."""
    with contextlib.suppress(OSError):
        serial = Path("/proc/device-tree/serial-number").read_bytes().strip(b"\x00\n ").decode("ascii", "replace")
        if serial:
            return serial
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Serial" and value.strip():
                return value.strip()
    return socket.gethostname()


def package_version() -> str:
    try:
        return metadata.version("meterhub-hil")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterhub-pulsegen",
        description="SCPI pulse generator for S0/reed pulse inputs (Raspberry Pi GPIO or simulated).",
    )
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="sim",
                        help="sim: simulated outputs (CI); lgpio: /dev/gpiochip (Pi 5 and others); "
                             "pigpio: pigpiod DMA waves (Pi 4 and earlier). Default: sim")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument("--max-clients", type=_positive_int, default=MAX_CLIENTS, metavar="N",
                        help=f"clients served at once; more connections are closed at once (default {MAX_CLIENTS})")
    parser.add_argument("--channels", type=parse_channels, default={1: 17, 2: 27}, metavar="N=GPIO,...",
                        help="channel to BCM GPIO map (default 1=17,2=27)")
    parser.add_argument("--mdns", action=argparse.BooleanOptionalAction, default=True,
                        help="advertise _scpi-raw._tcp via zeroconf when installed (default: on)")
    parser.add_argument("--serial", default=None, help="serial number in *IDN? (default: the Pi's)")
    parser.add_argument("--time-scale", type=_positive_decimal, default=Decimal(1),
                        help="sim only: simulated seconds per wall second (default 1)")
    parser.add_argument("--gpiochip", type=int, default=0, help="lgpio only: /dev/gpiochipN (default 0)")
    parser.add_argument("--pigpio-host", default="localhost", help="pigpio only: pigpiod host")
    parser.add_argument("--pigpio-port", type=int, default=8888, help="pigpio only: pigpiod port")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _backend_options(args: argparse.Namespace) -> dict:
    if args.backend == "sim":
        return {"time_scale": args.time_scale}
    if args.backend == "lgpio":
        return {"chip": args.gpiochip}
    return {"host": args.pigpio_host, "port": args.pigpio_port}


async def _serve(args: argparse.Namespace, instrument: PulseGenerator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = PulsegenServer(instrument, max_clients=args.max_clients)
    host, port = await server.start(args.host, args.port)
    log.info("listening on %s:%d (%s backend, channels %s)", host, port, instrument.backend.name,
             ", ".join(f"{c}=GPIO{g}" for c, g in sorted(instrument.backend.pins.items())))
    advertisement = await advertise(args.host, port, instrument.identity) if args.mdns else None
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        if advertisement is not None:
            await advertisement.close()
        await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: serve until SIGINT/SIGTERM, then leave every pin OFF."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        backend = create_backend(args.backend, args.channels, **_backend_options(args))
    except BackendError as exc:
        log.error("%s", exc)
        return 1
    if args.backend == "sim":
        log.info("sim backend: no GPIO is driven")
    identity = Identity(serial=args.serial or default_serial(), firmware=f"{package_version()}+{backend.name}")
    instrument = PulseGenerator(backend, identity)
    try:
        asyncio.run(_serve(args, instrument))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    finally:
        instrument.reset()
        backend.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
