"""A simulated cellular modem on a pseudo-terminal, bridged to real TCP.

:class:`ModemSim` answers the AT command sets of a SIMCom SIM800 or SIM7600 or a Quectel
M26, EC20 or EC25 on the master side of a pty (``sim.path`` is the slave to open), the
way their manuals describe (the same manuals :mod:`meterhub_gprs.modem` follows; see its
docstring), and opens a **real** TCP connection when asked to (normally to a server on
127.0.0.1): bytes sent with AT+CIPSEND / AT+QISEND, or in transparent mode, go to that
socket; what the server sends comes back as ``+IPD``, ``+QIURC: "recv"``, ``+QIRDI`` with
AT+QIRD, or raw in transparent mode, and the server closing is reported with the model's
URC (``CLOSED``, ``+IPCLOSE: 0,1``, ``+QIURC: "closed",0``, ``NO CARRIER``).

It is how CI tests the driver, so it is strict where modems are strict (AT+CSTT only in
IP INITIAL, AT+CIPMODE only before the network opens, ``+++`` only between guard times)
and has switchable faults (:data:`FAULTS`), set at start or while running:

``no_sim``                no SIM card
``sim_pin``               the SIM wants its PIN (``pin=``) before it is ready
``no_network``            never registers (``stat=2`` searching, or 3 denied)
``registration_lost``     registration drops ``after=`` seconds after the connection
                          opened (0: at once), with +CREG/+CGREG/+CEREG URCs
``connection_dropped``    the TCP connection is closed and the model's URC sent, ``after=``
                          seconds after it opened, or mid-frame: ``after_bytes=K`` of the
                          next send reach the server, the rest does not;
                          ``how="network"`` reports a PDP deactivation instead
``slow``                  every answer comes ``delay=`` seconds late
``garbage_urcs``          junk lines before answers and every ``interval=`` seconds
``server_refused``        the TCP connect fails as if refused (CONNECT FAIL, +CIPOPEN:
                          0,<err>, +QIOPEN: 0,566)

Output is paced at the baud rate, as the module's UART would send it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from meterhub import timing
from meterhub.model import SerialSettings
from meterhub.simulator import PtyServer

log = logging.getLogger(__name__)

MODELS = ("SIM800", "SIM7600", "M26", "EC20", "EC25")

FAULTS = (
    "no_sim",
    "sim_pin",
    "no_network",
    "registration_lost",
    "connection_dropped",
    "slow",
    "garbage_urcs",
    "server_refused",
)

#: What ATI, AT+CGMM and AT+GMR answer, as the modules print them.
IDENTITY: dict[str, tuple[tuple[str, ...], str, str]] = {
    "SIM800": (("SIM800 R14.18",), "SIMCOM_SIM800", "Revision:1418B04SIM800L24"),
    "SIM7600": (
        ("Manufacturer: SIMCOM INCORPORATED", "Model: SIMCOM_SIM7600E-H", "Revision: SIM7600M22_V1.1",
         "IMEI: 861234567890123", "+GCAP: +CGSM"),
        "SIMCOM_SIM7600E-H",
        "+CGMR: LE11B08SIM7600M22",
    ),
    "M26": (("Quectel_Ltd", "Quectel_M26", "Revision: M26FBR03A01"), "Quectel_M26", "Revision: M26FBR03A01"),
    "EC20": (("Quectel", "EC20F", "Revision: EC20CEFAR06A01M4G"), "EC20F", "Revision: EC20CEFAR06A01M4G"),
    "EC25": (("Quectel", "EC25", "Revision: EC25EFAR06A06M4G"), "EC25", "Revision: EC25EFAR06A06M4G"),
}  # fmt: skip

#: The address the simulated network gives the modem.
MODEM_IP = "10.64.23.117"

#: How often the serving thread wakes when nothing happens (stop() is prompt, timers fire).
POLL_INTERVAL_S = 0.01
#: Output is written in pieces of about this much wire time, each when its last character
#: would have left the module's UART.
CHUNK_INTERVAL_S = 0.010
#: Defaults: command turnaround, PDP activation, TCP set-up (a module takes tens of ms to
#: seconds on a real network; short here so tests stay fast), the slow fault's delay.
DEFAULT_RESPONSE_DELAY = 0.002
DEFAULT_ACTIVATE_DELAY = 0.02
DEFAULT_CONNECT_DELAY = 0.02
DEFAULT_SLOW_DELAY = 3.0
DEFAULT_GARBAGE_INTERVAL = 0.2
#: V.25ter / the modules' manuals: +++ needs 1 s of silence before and after.
DEFAULT_ESCAPE_GUARD = 1.0
#: The SIM needs a moment after the right PIN before +CPIN: READY.
PIN_SETTLE_S = 0.01
#: Largest piece of received data the module hands the host in one report.
MAX_REPORT = 1500
#: A command line longer than this is thrown away (the modules' buffers are ~556 bytes).
MAX_COMMAND = 556

#: 3GPP TS 27.007 §9.2 +CME ERROR codes used here (numeric for AT+CMEE=1, text for 2).
CME = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    16: "incorrect password",
    30: "no network service",
}

_COMMAND = re.compile(r"(?P<name>\+[A-Z0-9]+|&[A-Z]\d*|[A-Z]\d*)(?P<op>=\?|\?|=)?(?P<args>.*)", re.DOTALL | re.IGNORECASE)

#: How each model reports a connection closed by the far end (``remote``) or with the
#: PDP context (``network``) in command mode.
CLOSE_REPORTS = {
    ("SIM800", "remote"): "CLOSED",
    ("SIM800", "network"): "+PDP: DEACT",
    ("SIM7600", "remote"): "+IPCLOSE: 0,1",
    ("SIM7600", "network"): "+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY",
    ("M26", "remote"): "CLOSED",
    ("M26", "network"): "+PDP DEACT",
    ("EC2x", "remote"): '+QIURC: "closed",0',
    ("EC2x", "network"): '+QIURC: "pdpdeact",1',
}

#: Junk the garbage_urcs fault sends: made-up reports in the shape of URCs, none of them
#: a result code or a report the driver acts on.
JUNK = ("+ZZJUNK: 1,2", "^HCSQ: \"LTE\",45,27,150,22", "*PSNWID: \"460\",\"00\"", "+XNOISE", "#%&!", "RING?", "+QJUNK: \"x\"")


def _params(text: str) -> list[str]:
    """AT parameters split at commas outside quotes, quotes removed."""
    out, cur, quoted, seen = [], [], False, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            seen = True
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur, seen = [], False
        else:
            cur.append(ch)
    if cur or seen or out:
        out.append("".join(cur).strip())
    return out


class _Output:
    """Bytes waiting to go to the host, in order, each not before its due time."""

    __slots__ = ("data", "due")

    def __init__(self, due: float, data: bytes) -> None:
        self.due = due
        self.data = data


class ModemSim(PtyServer):
    """A simulated modem of ``model`` on a pty (see the module docstring).

    ``apn``: the only APN the simulated network accepts (None: any). ``pin``: the SIM's
    PIN. ``rssi``: what AT+CSQ reports. ``autobaud``: the first AT only sets the speed
    and gets no answer. ``escape_guard``: the +++ guard time. Delays are seconds.
    """

    POLL_S = POLL_INTERVAL_S

    def __init__(
        self,
        model: str = "SIM800",
        *,
        faults: Mapping[str, Mapping[str, Any] | bool] | Iterable[str] | None = None,
        apn: str | None = None,
        pin: str = "1234",
        rssi: int = 20,
        baudrate: int = 115200,
        autobaud: bool = True,
        escape_guard: float = DEFAULT_ESCAPE_GUARD,
        response_delay: float = DEFAULT_RESPONSE_DELAY,
        activate_delay: float = DEFAULT_ACTIVATE_DELAY,
        connect_delay: float = DEFAULT_CONNECT_DELAY,
        slow_delay: float = DEFAULT_SLOW_DELAY,
        seed: int = 0,
    ) -> None:
        super().__init__()
        model = model.upper()
        if model not in MODELS:
            raise ValueError(f"unknown modem model {model!r}; choose one of: {', '.join(MODELS)}")
        self.model = model
        self.family = {"EC20": "EC2x", "EC25": "EC2x"}.get(model, model)
        self.apn = apn
        self.pin = pin
        self.rssi = rssi
        self.settings = SerialSettings(baudrate, 8, "N", 1)
        self.autobaud = autobaud
        self.escape_guard = escape_guard
        self.response_delay = response_delay
        self.activate_delay = activate_delay
        self.connect_delay = connect_delay
        self.slow_delay = slow_delay
        self.commands: list[str] = []  #: every command line received, secrets included
        self.sent_to_server = 0  #: payload bytes forwarded to the TCP server
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._faults: dict[str, dict[str, Any]] = {}
        self._out: list[_Output] = []
        self._line_free_at = 0.0
        self._reset_state()
        for name, options in _fault_items(faults):
            self.set_fault(name, **options)

    def _reset_state(self) -> None:
        self._baud_locked = not self.autobaud
        self._line = bytearray()
        self._echo = True
        self._cmee = 0
        self._pin_ok = False
        self._reg_n = {"CREG": 0, "CGREG": 0, "CEREG": 0}
        self._reg_lost = False
        self._apn_set: str | None = None
        self._ip_state = "IP INITIAL"  # SIM800/M26 state machine; LTE models: see _pdp
        self._pdp = False
        self._transparent = False  # the connection was opened in transparent mode
        self._online = False  # transparent data mode (not escaped)
        self._sock: socket.socket | None = None
        self._peer = ("", 0)
        self._rxbuf = bytearray()  # buffered receive (M26 QINDI=1, EC2x access mode 0)
        self._socket_closing = False  # EC2x: closed by the far end, not yet AT+QICLOSE'd
        self._collect: int | None = None  # bytes of send data still expected after '>'
        self._collected = bytearray()
        self._heldback = bytearray()  # server data while a transparent connection is escaped
        # settings the host makes
        self._cipmode = 0
        self._ciphead = 0
        self._cipsrip = 1
        self._qimode = 0
        self._qindi = 0
        self._access = 0
        self._last_rx = 0.0  # monotonic time of the last byte from the host
        self._plus: bytearray | None = None  # a possible +++ being received
        self._plus_started = 0.0
        self._next_junk: float | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _stopping(self) -> None:
        with self._lock:
            self._close_socket()

    def __repr__(self) -> str:
        return f"<ModemSim {self.model} {self.path or '(not started)'}>"

    # -- control (thread-safe) -----------------------------------------------------------

    def set_fault(self, name: str, on: bool = True, **options: Any) -> None:
        """Switch fault ``name`` on (with its options) or off; see :data:`FAULTS`."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; choose one of: {', '.join(FAULTS)}")
        with self._lock:
            if not on:
                self._faults.pop(name, None)
                if name == "registration_lost":
                    self._reg_lost = False
                return
            options = dict(options)
            options["armed"] = time.monotonic() if self._sock is not None else None
            self._faults[name] = options
            if name == "garbage_urcs":
                self._next_junk = None

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._reg_lost = False

    def lose_registration(self) -> None:
        """Drop the network registration now (the ``registration_lost`` fault, at once)."""
        self.set_fault("registration_lost", after=0)

    def drop_connection(self, *, after_bytes: int | None = None, how: str = "remote") -> None:
        """Close the TCP connection now, or after ``after_bytes`` of the next send."""
        if after_bytes is None:
            self.set_fault("connection_dropped", after=0, how=how)
        else:
            self.set_fault("connection_dropped", after_bytes=after_bytes, how=how)

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._sock is not None

    @property
    def online(self) -> bool:
        """In transparent data mode."""
        with self._lock:
            return self._online

    # -- serving thread ------------------------------------------------------------------

    def _serve(self) -> None:
        master = self._master
        assert master is not None
        while not self._stop.is_set():
            with self._lock:
                sock = self._sock
                wait = self._wait_time()
            readers = [master] + ([sock] if sock is not None else [])
            try:
                readable, _, _ = select.select(readers, [], [], wait)
            except (OSError, ValueError):  # a socket closed under us: look again
                time.sleep(POLL_INTERVAL_S)
                continue
            with self._lock:
                now = time.monotonic()
                if master in readable:
                    data = self.read_master(master)
                    if data:
                        self._from_host(data, now)
                if sock is not None and sock in readable and sock is self._sock:
                    self._read_socket(sock)
                self._timers(time.monotonic())
                self._write_due(master)

    def _wait_time(self) -> float:
        wait = POLL_INTERVAL_S
        if self._out:
            wait = min(wait, max(0.0, self._out[0].due - time.monotonic()))
        return wait

    def _read_socket(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError as exc:
            log.debug("modem sim %s: server connection failed: %s", self.path, exc)
            data = b""
        if data:
            self._from_server(data)
        else:
            self._drop("remote")

    # -- output ----------------------------------------------------------------------------

    def _delay(self) -> float:
        slow = self._faults.get("slow")
        return self.response_delay + (float(slow.get("delay", self.slow_delay)) if slow is not None else 0.0)

    def _emit(self, data: bytes, extra: float = 0.0) -> None:
        """Queue ``data`` for the host after the turnaround (plus ``extra``), behind
        everything queued before it, paced at the baud rate."""
        now = time.monotonic()
        start = max(now + self._delay() + extra, self._line_free_at, self._out[-1].due if self._out else 0.0)
        char = timing.char_time(self.settings)
        step = max(1, int(CHUNK_INTERVAL_S / char))
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            self._out.append(_Output(start + timing.frame_time(i + len(piece), self.settings), piece))
        self._line_free_at = start + timing.frame_time(len(data), self.settings)

    def _lines(self, *lines: str, extra: float = 0.0, junk: bool = True) -> None:
        """Answer lines, each framed CR LF ... CR LF (V.25ter verbose result codes)."""
        if junk:
            self._junk_now()
        self._emit(b"".join(b"\r\n" + line.encode("latin-1") + b"\r\n" for line in lines), extra)

    def _ok(self, *lines: str) -> None:
        self._lines(*lines, "OK")

    def _error(self, code: int | None = None) -> None:
        if code is None or self._cmee == 0:
            self._lines("ERROR")
        elif self._cmee == 1:
            self._lines(f"+CME ERROR: {code}")
        else:
            self._lines(f"+CME ERROR: {CME.get(code, 'unknown')}")

    def _urc(self, line: str, extra: float = 0.0) -> None:
        self._lines(line, extra=extra, junk=False)

    def _write_due(self, master: int) -> None:
        now = time.monotonic()
        while self._out and self._out[0].due <= now:
            item = self._out[0]
            try:
                written = os.write(master, item.data)
            except BlockingIOError:
                return  # the host does not read: keep it for later
            except OSError as exc:
                log.debug("modem sim %s: write failed: %s", self.path, exc)
                return
            if written < len(item.data):
                item.data = item.data[written:]
                return
            self._out.pop(0)

    def _junk_now(self) -> None:
        if "garbage_urcs" in self._faults and not self._online:
            self._emit(b"\r\n" + self._rng.choice(JUNK).encode() + b"\r\n")

    # -- timers ----------------------------------------------------------------------------

    def _timers(self, now: float) -> None:
        if self._plus is not None:
            self._escape_timer(now)
        lost = self._faults.get("registration_lost")
        if lost is not None and not self._reg_lost and self._due(lost, now):
            self._lose_registration(int(lost.get("stat", 2)))
        dropped = self._faults.get("connection_dropped")
        if (
            dropped is not None
            and self._sock is not None
            and "after_bytes" not in dropped
            and self._due(dropped, now)
        ):
            self._faults.pop("connection_dropped")
            self._drop(dropped.get("how", "remote"))
        garbage = self._faults.get("garbage_urcs")
        if garbage is not None and not self._online and self._collect is None:
            interval = float(garbage.get("interval", DEFAULT_GARBAGE_INTERVAL))
            if self._next_junk is None:
                self._next_junk = now + interval
            elif now >= self._next_junk:
                self._next_junk = now + interval
                self._junk_now()

    def _due(self, fault: dict[str, Any], now: float) -> bool:
        """A timed fault fires ``after`` seconds from when it was armed: when it was set
        on an open connection, else when the next connection opened."""
        armed = fault.get("armed")
        if armed is None:
            return False
        return now >= armed + float(fault.get("after", 0.0))

    def _arm(self) -> None:
        now = time.monotonic()
        for fault in self._faults.values():
            if fault.get("armed") is None:
                fault["armed"] = now

    # -- from the host ---------------------------------------------------------------------

    def _from_host(self, data: bytes, now: float) -> None:
        view = memoryview(data)
        while view:
            if self._collect is not None:
                take = min(self._collect, len(view))
                self._collected += view[:take]
                view = view[take:]
                self._collect -= take
                if self._collect == 0:
                    payload = bytes(self._collected)
                    self._collect = None
                    self._collected = bytearray()
                    self._send_data(payload)
                continue
            if self._online:
                self._data_mode_input(bytes(view), now)
                return
            byte = view[0]
            view = view[1:]
            if self._echo and self._baud_locked:
                self._emit(bytes([byte]), extra=-self._delay())
            if byte == 0x0D:
                line = self._line.decode("latin-1")
                self._line = bytearray()
                self._command_line(line)
            elif byte != 0x0A:
                self._line.append(byte)
                if len(self._line) > MAX_COMMAND:
                    self._line = bytearray()
        self._last_rx = now

    def _data_mode_input(self, data: bytes, now: float) -> None:
        """Transparent data: to the server, except an escape between guard times."""
        out = bytearray()
        for byte in data:
            if self._plus is not None:
                if byte == 0x2B and len(self._plus) < 3 and now - self._plus_started <= self.escape_guard:
                    self._plus.append(byte)
                    continue
                out += self._plus
                self._plus = None
            if byte == 0x2B and now - self._last_rx >= self.escape_guard and not out:
                self._plus = bytearray([byte])
                self._plus_started = now
                continue
            out.append(byte)
        self._last_rx = now
        if out:
            how = self._dropped_how()
            if self._forward(bytes(out)):
                self._drop(how)

    def _escape_timer(self, now: float) -> None:
        plus = self._plus
        assert plus is not None
        if len(plus) == 3 and now - self._last_rx >= self.escape_guard:
            self._plus = None
            self._online = False
            self._lines("OK", junk=False)
        elif len(plus) < 3 and now - self._plus_started > self.escape_guard:
            self._plus = None
            how = self._dropped_how()
            if self._forward(bytes(plus)):
                self._drop(how)

    def _command_line(self, line: str) -> None:
        start = line.upper().find("AT")
        if start < 0:
            return  # no command in it: a modem ignores what comes before "AT"
        line = line[start:].strip()
        if not self._baud_locked:
            self._baud_locked = True  # autobauding: this AT only set the speed
            return
        self.commands.append(line)
        body = line[2:]
        if not body:
            self._ok()
            return
        match = _COMMAND.fullmatch(body)
        if match is None:
            self._error()
            return
        name = match["name"].upper()
        op = match["op"] or ""
        args = _params(match["args"]) if op == "=" else []
        try:
            handled = self._common(name, op, args, match["args"]) or getattr(self, f"_{self.family.lower()}")(name, op, args)
        except (IndexError, ValueError) as exc:
            log.debug("modem sim %s: bad parameters in %r: %s", self.path, line, exc)
            self._error(4)
            return
        if not handled:
            self._error()

    # -- commands every model knows --------------------------------------------------------

    def _common(self, name: str, op: str, args: list[str], raw: str) -> bool:
        if name in ("E0", "E1", "E"):
            self._echo = name == "E1"
            self._ok()
        elif name in ("V1", "Z", "&F", "&C1", "&D1", "&D0", "&C0", "&W", "+IPR", "+CFUN"):
            self._ok()
        elif name == "+CMEE" and op == "=":
            self._cmee = int(args[0])
            self._ok()
        elif name == "I":
            self._ok(*IDENTITY[self.model][0])
        elif name == "+CGMM" or name == "+GMM":
            self._ok(IDENTITY[self.model][1])
        elif name in ("+GMR", "+CGMR"):
            self._ok(IDENTITY[self.model][2])
        elif name == "+CPIN":
            self._cpin(op, args)
        elif name == "+CSQ":
            rssi = 99 if "no_network" in self._faults else self.rssi
            self._ok(f"+CSQ: {rssi},{99 if rssi == 99 else 0}")
        elif name in ("+CREG", "+CGREG", "+CEREG"):
            return self._reg(name[1:], op, args)
        elif name == "+CGATT":
            if op == "?":
                self._ok(f"+CGATT: {1 if self._registered() else 0}")
            elif op == "=":
                if args[0] == "1" and not self._registered():
                    self._error(30)
                else:
                    self._ok()
            else:
                return False
        elif name == "H":
            self._ok()
        elif name == "O":
            if self._sock is not None and self._transparent:
                self._lines("CONNECT 115200" if self.family == "SIM7600" else "CONNECT", junk=False)
                self._online = True
                if self._heldback:
                    self._emit(bytes(self._heldback))
                    self._heldback.clear()
            else:
                self._lines("NO CARRIER")
        else:
            return False
        return True

    def _sim_state(self) -> str:
        if "no_sim" in self._faults:
            return "NOT INSERTED"
        if "sim_pin" in self._faults and not self._pin_ok:
            return "SIM PIN"
        return "READY"

    def _cpin(self, op: str, args: list[str]) -> None:
        state = self._sim_state()
        if op == "?":
            if state == "NOT INSERTED":
                # 2G modules answer with the state; the LTE ones with a +CME ERROR.
                if self.family in ("SIM800", "M26"):
                    self._ok("+CPIN: NOT INSERTED")
                else:
                    self._error(10)
            else:
                self._ok(f"+CPIN: {state}")
        elif op == "=":
            if state == "NOT INSERTED":
                self._error(10)
            elif state == "READY":
                self._error(3)
            elif args[0] == self.pin:
                self._pin_ok = True
                self._ok()
                self._urc("+CPIN: READY", extra=PIN_SETTLE_S)
            else:
                self._error(16)
        else:
            self._error()

    def _registered_stat(self) -> int:
        if "no_network" in self._faults:
            return int(self._faults["no_network"].get("stat", 2))
        if self._sim_state() != "READY":
            return 0
        if self._reg_lost:
            return int(self._faults.get("registration_lost", {}).get("stat", 2))
        return 1

    def _registered(self) -> bool:
        return self._registered_stat() in (1, 5)

    def _reg(self, name: str, op: str, args: list[str]) -> bool:
        if name == "CEREG" and self.family in ("SIM800", "M26"):
            return False  # 2G modules have no +CEREG
        if op == "=":
            self._reg_n[name] = int(args[0])
            self._ok()
        elif op == "?":
            self._ok(f"+{name}: {self._reg_n[name]},{self._registered_stat()}")
        else:
            return False
        return True

    def _lose_registration(self, stat: int) -> None:
        self._reg_lost = True
        if self._online:
            # No URCs in data mode: the connection goes, the modem says so and falls back.
            self._drop("network")
            return
        for name, n in self._reg_n.items():
            if n and not (name == "CEREG" and self.family in ("SIM800", "M26")):
                self._urc(f"+{name}: {stat}")

    # -- the TCP side ----------------------------------------------------------------------

    def _open_socket(self, host: str, port: int) -> bool:
        if "server_refused" in self._faults:
            return False
        try:
            sock = socket.create_connection((host, port), timeout=2.0)
        except OSError as exc:
            log.debug("modem sim %s: connect to %s:%s failed: %s", self.path, host, port, exc)
            return False
        sock.settimeout(5.0)
        self._sock = sock
        self._peer = (host, port)
        self._rxbuf.clear()
        self._socket_closing = False
        self._heldback.clear()
        self._arm()
        return True

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        self._online = False
        self._plus = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _forward(self, data: bytes) -> bool:
        """Payload from the host to the server. True when a mid-frame drop is due now
        (the caller reports the send first, then calls :meth:`_drop`)."""
        if self._sock is None:
            return False
        dropped = self._faults.get("connection_dropped")
        due = False
        if dropped is not None and "after_bytes" in dropped:
            room = int(dropped["after_bytes"])
            data = data[:room]
            dropped["after_bytes"] = room - len(data)
            due = dropped["after_bytes"] == 0
        if data:
            try:
                self._sock.sendall(data)
                self.sent_to_server += len(data)
            except OSError as exc:
                log.debug("modem sim %s: send to the server failed: %s", self.path, exc)
                self._drop("remote")
                return False
        if due:
            self._faults.pop("connection_dropped")
        return due

    def _from_server(self, data: bytes) -> None:
        if self._online:
            self._emit(data, extra=-self._delay())
        elif self._transparent:
            self._heldback += data  # escaped: kept until ATO
        else:
            for i in range(0, len(data), MAX_REPORT):
                self._report(data[i : i + MAX_REPORT])

    def _dropped_how(self) -> str:
        return str(self._faults.get("connection_dropped", {}).get("how", "remote"))

    def _drop(self, how: str) -> None:
        """The connection goes: closed by the far end (``remote``) or with the PDP
        context (``network``); the host hears the model's report."""
        if self._sock is None:
            return
        transparent = self._transparent
        self._close_socket()
        self._transparent = False
        if transparent:
            # Transparent mode (in data mode or escaped): the modem says so in plain text
            # and is in command mode from then on.
            self._urc("NO CARRIER" if self.family == "EC2x" else "CLOSED")
            if how == "network" and self.family in ("SIM800", "M26"):
                self._urc("+PDP: DEACT" if self.family == "SIM800" else "+PDP DEACT")
        else:
            self._socket_closing = self.family == "EC2x"
            self._urc(CLOSE_REPORTS[(self.family, how)])
        if how == "network":
            self._pdp = False
            self._ip_state = "PDP DEACT"
        elif self.family in ("SIM800", "M26"):
            self._ip_state = "TCP CLOSED"

    def _send_data(self, payload: bytes) -> None:
        """The data after a send command's '>' arrived in full: the module takes it all
        (SEND OK), and a mid-frame drop then closes the connection."""
        how = self._dropped_how()
        drop = self._forward(payload)
        if self.family == "SIM7600":
            self._ok()
            self._urc(f"+CIPSEND: 0,{len(payload)},{len(payload)}")
        else:
            self._lines("SEND OK")
        if drop:
            self._drop(how)

    def _prompt(self, count: int) -> None:
        self._collect = count
        self._collected = bytearray()
        self._emit(b">" if self.family == "SIM7600" else b"\r\n> ")

    def _report(self, data: bytes) -> None:
        """Data from the server, in command mode, the way the model hands it over."""
        family = self.family
        if family == "SIM800":
            self._emit((b"\r\n+IPD,%d:" % len(data) if self._ciphead else b"") + data)
        elif family == "SIM7600":
            head = b""
            if self._cipsrip:
                head += f"\r\nRECV FROM:{self._peer[0]}:{self._peer[1]}".encode()
            if self._ciphead:
                head += b"\r\n+IPD%d\r\n" % len(data)
            self._emit(head + data)
        elif family == "M26":
            if self._qindi:
                empty = not self._rxbuf
                self._rxbuf += data
                if empty:
                    self._urc("+QIRDI: 0,1,0")
            else:
                self._emit(data)
        elif self._access == 1:
            self._emit(b'\r\n+QIURC: "recv",0,%d\r\n' % len(data) + data)
        else:
            empty = not self._rxbuf
            self._rxbuf += data
            if empty:
                self._urc('+QIURC: "recv",0')

    def _connected_open(self, ok_lines: tuple[str, ...], transparent: bool) -> None:
        """After a successful TCP open: the model's success lines, data mode if asked."""
        self._transparent = transparent
        self._lines(*ok_lines, extra=self.connect_delay, junk=False)
        if transparent:
            self._online = True
            self._last_rx = time.monotonic()

    # -- the 2G TCPIP state machine of SIM800 and M26 -----------------------------------
    #
    # Both follow the same design (SIM800 AT manual, AT+CIPSTATUS states; M26 AT+QISTAT):
    # IP INITIAL -> (task started, APN set) IP START -> (context activated) IP GPRSACT ->
    # (local address asked) IP STATUS -> CONNECT OK / TCP CLOSED; shutting the context
    # down returns to IP INITIAL. Each step is refused in the wrong state.

    def _ip_shut(self, done: str) -> None:
        self._close_socket()
        self._transparent = False
        self._pdp = False
        self._ip_state = "IP INITIAL"
        self._rxbuf.clear()
        self._lines(done)

    def _ip_mode(self, value: str) -> int | None:
        """A transparent-mode switch: only in IP INITIAL."""
        if self._ip_state != "IP INITIAL":
            self._error()
            return None
        self._ok()
        return int(value)

    def _ip_start(self, apn: str | None) -> None:
        if self._ip_state != "IP INITIAL":
            self._error()
            return
        if apn is not None:
            self._apn_set = apn
        self._ip_state = "IP START"
        self._ok()

    def _ip_activate(self) -> None:
        if self._ip_state != "IP START" or not self._registered() or not self._apn_ok():
            self._lines("ERROR", extra=self.activate_delay)
            return
        self._ip_state = "IP GPRSACT"
        self._pdp = True
        self._lines("OK", extra=self.activate_delay)

    def _ip_address(self) -> None:
        if self._ip_state not in ("IP GPRSACT", "IP STATUS"):
            self._error()
            return
        self._ip_state = "IP STATUS"
        self._lines(MODEM_IP)

    def _ip_open(self, host: str, port: str, transparent: bool, *fail: str) -> None:
        if self._ip_state not in ("IP STATUS", "TCP CLOSED"):
            self._error()
            return
        self._ok()
        if self._open_socket(host, int(port)):
            self._ip_state = "CONNECT OK"
            self._connected_open(("CONNECT",) if transparent else ("CONNECT OK",), transparent)
        else:
            self._ip_state = "TCP CLOSED"
            self._lines(*fail, "CONNECT FAIL", extra=self.connect_delay, junk=False)

    def _ip_send(self, count: str) -> None:
        if self._sock is None or self._transparent:
            self._error()
        else:
            self._prompt(int(count))

    def _ip_close(self) -> None:
        if self._sock is None:
            self._error()
            return
        self._close_socket()
        self._transparent = False
        self._ip_state = "TCP CLOSED"
        self._lines("CLOSE OK")

    def _apn_ok(self) -> bool:
        return self.apn is None or self._apn_set == self.apn

    # -- SIMCom SIM800 -----------------------------------------------------------------

    def _sim800(self, name: str, op: str, args: list[str]) -> bool:
        if name == "+CIPSHUT":
            self._ip_shut("SHUT OK")
        elif name in ("+CIPMUX", "+CIPQSEND", "+CIPSPRT", "+CIPCCFG", "+CIPSRIP"):
            self._ok()
        elif name == "+CIPHEAD" and op == "=":
            self._ciphead = int(args[0])
            self._ok()
        elif name == "+CIPMODE" and op == "=":
            mode = self._ip_mode(args[0])
            self._cipmode = self._cipmode if mode is None else mode
        elif name == "+CSTT" and op == "=":
            self._ip_start(args[0])
        elif name == "+CIICR":
            self._ip_activate()
        elif name == "+CIFSR":
            self._ip_address()
        elif name == "+CIPSTATUS":
            self._ok()
            self._urc(f"STATE: {self._ip_state}")
        elif name == "+CIPSTART" and op == "=":
            self._ip_open(args[1], args[2], bool(self._cipmode), "STATE: TCP CLOSED")
        elif name == "+CIPSEND" and op == "=":
            self._ip_send(args[0])
        elif name == "+CIPCLOSE":
            self._ip_close()
        else:
            return False
        return True

    # -- SIMCom SIM7600 ----------------------------------------------------------------

    def _sim7600(self, name: str, op: str, args: list[str]) -> bool:
        if name == "+CGDCONT" and op == "=":
            self._apn_set = args[2]
            self._ok()
        elif name in ("+CGAUTH", "+CIPCCFG", "+CIPTIMEOUT", "+CIPSENDMODE"):
            self._ok()
        elif name == "+CIPMODE" and op == "=":
            if self._pdp:
                self._error()
            else:
                self._cipmode = int(args[0])
                self._ok()
        elif name == "+CIPSRIP" and op == "=":
            self._cipsrip = int(args[0])
            self._ok()
        elif name == "+CIPHEAD" and op == "=":
            self._ciphead = int(args[0])
            self._ok()
        elif name == "+NETOPEN":
            if op == "?":
                self._ok(f"+NETOPEN: {int(self._pdp)}")
            elif self._pdp:
                self._lines("+IP ERROR: Network is already opened", "ERROR")
            else:
                self._ok()
                up = self._registered() and self._apn_ok()
                self._pdp = up
                self._urc(f"+NETOPEN: {0 if up else 1}", extra=self.activate_delay)
        elif name == "+NETCLOSE":
            if not self._pdp:
                self._lines("+NETCLOSE: 2", "ERROR")
            else:
                self._close_socket()
                self._transparent = False
                self._pdp = False
                self._ok()
                self._urc("+NETCLOSE: 0")
        elif name == "+CIPOPEN" and op == "=":
            if not self._pdp or self._sock is not None:
                self._error()
                return True
            opened = self._open_socket(args[2], int(args[3]))
            if self._cipmode:
                if opened:
                    self._connected_open(("CONNECT 115200",), True)
                else:
                    self._lines("CONNECT FAIL", extra=self.connect_delay, junk=False)
            else:
                self._ok()
                if opened:
                    self._connected_open(("+CIPOPEN: 0,0",), False)
                else:
                    # TCPIP manual error 1 "Network failure"; which code a refused
                    # connection gives on a real module is not documented: assumed.
                    self._urc("+CIPOPEN: 0,1", extra=self.connect_delay)
        elif name == "+CIPSEND" and op == "=":
            if self._sock is None or self._transparent:
                self._error()
            else:
                self._prompt(int(args[1]))
        elif name == "+CIPCLOSE" and op == "=":
            if self._sock is None:
                self._lines("+CIPCLOSE: 0,4", "ERROR")
            else:
                self._close_socket()
                self._transparent = False
                self._ok()
                self._urc("+CIPCLOSE: 0,0")
        else:
            return False
        return True

    # -- Quectel M26 -------------------------------------------------------------------

    def _m26(self, name: str, op: str, args: list[str]) -> bool:
        if name in ("+QIFGCNT", "+QIMUX", "+QITCFG", "+QIDNSIP", "+QIHEAD", "+QISDE"):
            self._ok()
        elif name == "+QICSGP" and op == "=":
            self._apn_set = args[1]
            self._ok()
        elif name == "+QIMODE" and op == "=":
            mode = self._ip_mode(args[0])
            self._qimode = self._qimode if mode is None else mode
        elif name == "+QINDI" and op == "=":
            self._qindi = int(args[0])
            self._ok()
        elif name == "+QIREGAPP":
            self._ip_start(args[0] if args else None)
        elif name == "+QIACT":
            self._ip_activate()
        elif name == "+QILOCIP":
            self._ip_address()
        elif name == "+QIOPEN" and op == "=":
            self._ip_open(args[1], args[2], bool(self._qimode))
        elif name == "+QISEND" and op == "=":
            self._ip_send(args[0])
        elif name == "+QIRD" and op == "=":
            if self._rxbuf:
                count = min(int(args[3]), len(self._rxbuf))
                data = bytes(self._rxbuf[:count])
                del self._rxbuf[:count]
                head = f"\r\n+QIRD: {self._peer[0]}:{self._peer[1]},TCP,{count}\r\n".encode()
                self._junk_now()
                self._emit(head + data + b"\r\n\r\nOK\r\n")
            elif self._sock is None and self._ip_state not in ("TCP CLOSED", "CONNECT OK"):
                self._error()
            else:
                self._ok()
        elif name == "+QICLOSE":
            self._ip_close()
        elif name == "+QIDEACT":
            self._ip_shut("DEACT OK")
        else:
            return False
        return True

    # -- Quectel EC20 / EC25 -------------------------------------------------------------

    def _ec2x(self, name: str, op: str, args: list[str]) -> bool:
        if name == "+QICSGP" and op == "=":
            self._apn_set = args[2]
            self._ok()
        elif name == "+QIACT":
            if op == "?":
                self._ok(*([f'+QIACT: 1,1,1,"{MODEM_IP}"'] if self._pdp else []))
            elif self._pdp:
                self._error()
            elif not self._registered() or not self._apn_ok():
                self._lines("ERROR", extra=self.activate_delay)
            else:
                self._pdp = True
                self._lines("OK", extra=self.activate_delay)
        elif name == "+QIDEACT":
            self._close_socket()
            self._transparent = False
            self._pdp = False
            self._rxbuf.clear()
            self._ok()
        elif name == "+QIOPEN" and op == "=":
            access = int(args[6]) if len(args) > 6 else 0
            if self._sock is not None or self._socket_closing:
                self._ok()
                self._urc("+QIOPEN: 0,563")  # socket identity has been used
                return True
            if not self._pdp:
                self._ok()
                self._urc("+QIOPEN: 0,561")  # open PDP context failed
                return True
            self._access = access
            opened = self._open_socket(args[3], int(args[4]))
            if access == 2:
                if opened:
                    self._connected_open(("CONNECT",), True)
                else:
                    self._lines("ERROR", extra=self.connect_delay)
            else:
                self._ok()
                if opened:
                    self._connected_open(("+QIOPEN: 0,0",), False)
                else:
                    self._urc("+QIOPEN: 0,566", extra=self.connect_delay)  # socket connect failed
        elif name == "+QISEND" and op == "=":
            if self._sock is None or self._transparent:
                self._error()
            else:
                self._prompt(int(args[1]))
        elif name == "+QIRD" and op == "=":
            if self._sock is None and not self._socket_closing:
                self._error()
                return True
            count = min(int(args[1]) if len(args) > 1 else MAX_REPORT, len(self._rxbuf))
            data = bytes(self._rxbuf[:count])
            del self._rxbuf[:count]
            self._junk_now()
            self._emit(f"\r\n+QIRD: {count}\r\n".encode() + data + b"\r\n\r\nOK\r\n")
        elif name == "+QICLOSE" and op == "=":
            self._close_socket()
            self._transparent = False
            self._socket_closing = False
            self._rxbuf.clear()
            self._ok()
        elif name == "+QISWTMD":
            self._ok()
        else:
            return False
        return True


def _fault_items(
    faults: Mapping[str, Mapping[str, Any] | bool] | Iterable[str] | None,
) -> list[tuple[str, dict[str, Any]]]:
    if faults is None:
        return []
    if isinstance(faults, Mapping):
        items = []
        for name, options in faults.items():
            if options is False:
                continue
            items.append((name, dict(options) if isinstance(options, Mapping) else {}))
        return items
    return [(name, {}) for name in faults]
