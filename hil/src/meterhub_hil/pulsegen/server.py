"""The pulse generator's SCPI server: asyncio TCP, one line per program message.

Every client gets its own session (error queue) over the one shared instrument. A
client is read in chunks and framed by :class:`~.scpi.LineFramer`, so garbage gets SCPI
errors, an over-long line is dropped with -363 and a client that vanishes mid-line
only ends its own connection. ``*OPC?`` holds that client's answer (and its later
commands) until the counted bursts are done; other clients carry on meanwhile.

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
#: How often a waiting *OPC? looks at the bursts; far below a pulse period worth testing.
OPC_POLL_S = 0.005
READ_CHUNK = 65536


class PulsegenServer:
    """Serves one :class:`PulseGenerator` to any number of TCP clients."""

    def __init__(self, instrument: PulseGenerator, *, max_line: int = scpi.MAX_LINE_BYTES) -> None:
        self.instrument = instrument
        self.max_line = max_line
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task] = set()

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self, host: str = "0.0.0.0", port: int = DEFAULT_PORT) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve_client, host, port, reuse_address=True)
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        peer = writer.get_extra_info("peername")
        log.info("client %s connected", peer)
        session = self.instrument.session()
        framer = scpi.LineFramer(self.max_line)
        try:
            while data := await reader.read(READ_CHUNK):
                for item in framer.feed(data):
                    if isinstance(item, scpi.LineOverrun):
                        session.errors.push(scpi.ScpiError(scpi.INPUT_BUFFER_OVERRUN,
                                                           f"line longer than {item.limit} bytes dropped"))
                        continue
                    answer = await self._execute(session, item)
                    if answer is not None:
                        writer.write(answer.encode("ascii", "replace") + b"\n")
                        await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.info("client %s: connection lost (%s)", peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # one client's failure never takes the server down
            log.exception("client %s: unexpected error; closing its connection", peer)
        finally:
            if framer.pending:
                log.info("client %s left %d bytes of an unfinished line", peer, framer.pending)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()
            # only now: close() waits for the clients it knows, and this one is not done
            # until its connection is (a loop closed under it warns "Task was destroyed")
            self._clients.discard(task)
            log.info("client %s disconnected", peer)

    async def _execute(self, session: Session, raw: bytes) -> str | None:
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
                while self.instrument.busy():
                    await asyncio.sleep(OPC_POLL_S)
            else:
                responses.append(item)
        # IEEE 488.2: the response message units of one message are separated by ';'
        return ";".join(responses) if responses else None


class ServerThread:
    """A :class:`PulsegenServer` on its own event loop thread (tests, the virtual bench)."""

    def __init__(self, instrument: PulseGenerator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.instrument = instrument
        self.server = PulsegenServer(instrument)
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


def serve_in_thread(instrument: PulseGenerator, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
    """Start serving ``instrument`` in a background thread (port 0: an ephemeral port)."""
    return ServerThread(instrument, host, port)


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
    server = PulsegenServer(instrument)
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
