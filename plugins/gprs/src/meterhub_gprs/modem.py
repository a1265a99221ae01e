"""A cellular modem driven by AT commands as a :class:`~meterhub_gprs.stream.Connector`.

``ModemConnector.connect()`` brings a modem up on a serial port (AT sync, echo off,
verbose errors, identification, SIM, signal, registration, GPRS attach, PDP context)
and opens a TCP connection to the master station through the modem's own TCP/IP stack;
the :class:`ModemStream` it returns carries the bytes. Four command sets are spoken,
chosen from the modem's identification, each after its maker's manuals:

* SIMCom SIM800 (2G) — *SIM800 Series AT Command Manual V1.09* §8 and *SIM800 Series
  TCPIP Application Note V1.01/V1.02*: AT+CSTT / AT+CIICR / AT+CIFSR,
  AT+CIPSTART="TCP" → ``CONNECT OK`` | ``CONNECT FAIL``, AT+CIPSEND=<n> with ``>`` and
  ``SEND OK``, AT+CIPHEAD=1 for ``+IPD,<n>:<data>``, URCs ``CLOSED`` and ``+PDP: DEACT``,
  AT+CIPMODE=1 for transparent mode (``CONNECT``).
* SIMCom SIM7600 (LTE) — *SIM7500_SIM7600 Series AT Command Manual V1.08* and
  *SIM7500_SIM7600_SIM7800 Series TCPIP AT Command Manual V1.00*: AT+CGDCONT,
  AT+NETOPEN → ``+NETOPEN: 0``, AT+CIPOPEN=0,"TCP" → ``+CIPOPEN: 0,<err>``,
  AT+CIPSEND=0,<n> → ``OK`` + ``+CIPSEND: 0,<req>,<cnf>``, received data pushed as
  ``+IPD<n>`` (AT+CIPHEAD=1, AT+CIPSRIP=0; ``+RECEIVE,<link>,<n>`` when the modem is set
  to header type 1), URCs ``+IPCLOSE: 0,<reason>`` and
  ``+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY``.
* Quectel M26 (2G) — *Quectel M26 AT Commands Manual* (TCPIP chapter) and *Quectel GSM
  TCPIP Application Notes / Recommended Process V1.2*: AT+QICSGP, AT+QIREGAPP, AT+QIACT,
  AT+QIOPEN="TCP" → ``CONNECT OK``, AT+QISEND=<n>, AT+QINDI=1 so received data is
  announced by ``+QIRDI: 0,1,0`` and read binary-safe with AT+QIRD (``+QIRD:
  <ip>:<port>,TCP,<n>``), URCs ``CLOSED`` and ``+PDP DEACT``, AT+QIMODE=1 for
  transparent mode.
* Quectel EC20/EC25 (LTE) — *Quectel EC20 TCPIP AT Commands Manual V1.0* / *LTE Standard
  TCP/IP Application Note V1.1*: AT+QICSGP, AT+QIACT=1, AT+QIOPEN=1,0,"TCP",...,<access
  mode> with 0 buffer access (``+QIURC: "recv",0`` then AT+QIRD → ``+QIRD: <n>``), 1
  direct push (``+QIURC: "recv",0,<n>`` + data) or 2 transparent (``CONNECT``),
  AT+QISEND=0,<n>, URCs ``+QIURC: "closed",0`` and ``+QIURC: "pdpdeact",1``.

Every received byte is length-delimited in command mode (``+IPD``, ``+QIRD``, ...), so the
stream is binary-safe whatever the payload holds. In **transparent mode** the port carries
the payload itself, and the only sign of a drop is the text the modem puts on the port as
it falls back to command mode (``CLOSED``; ``NO CARRIER`` on Quectel LTE modules) — which
payload bytes can also spell. It is told apart by time, the mirror image of the ``+++``
escape's guard times: the modem writes ``\\r\\nCLOSED\\r\\n`` (a 2G module may add its
``+PDP DEACT`` line) and then nothing more, so exactly those bytes (:data:`DROP_REPORTS`)
at the end of what arrived are held back and taken for a drop only when the line then
stays silent for ``drop_silence``; anything that follows sooner proves them payload, and
they are delivered. A payload whose very last bytes are a drop report followed by silence
would be misread (never the case for Q/GDW 1376.1: a frame ends with 16H), and a payload
ending in CR LF is delivered ``drop_silence`` late. While such a verdict is pending a send
waits for it, so a frame is not typed into a modem that has just fallen back to command
mode. Command mode has none of this ambiguity and is the default; DCD (AT&C1) would settle
it on ports that wire it, and is not used here.

Closing: command mode closes the socket and the PDP context (AT+CIPCLOSE + AT+CIPSHUT,
AT+CIPCLOSE=0 + AT+NETCLOSE, AT+QICLOSE + AT+QIDEACT, AT+QICLOSE=0 + AT+QIDEACT=1);
transparent mode first leaves data mode with ``+++`` between guard times and its OK. No
ATH: these connections live in the module's own TCP stack, ATH hangs up CSD/PPP calls.

Not checked against real modules (the manuals were read, the hardware not at hand): the
SIM7600's transparent-mode drop text (``CLOSED`` assumed, ``NO CARRIER`` accepted too),
its AT+CGAUTH parameter order (password before user, as its manual has it) and the
+CIPOPEN error code of a refused connection (the simulator answers 1).

The AT engine (:class:`AtEngine`) knows no modem model: it sends a command, collects
lines until a final result code (OK, ERROR, +CME ERROR, +CMS ERROR or one the command
names) or a timeout, hands length-delimited data to a data handler and every line that
does not belong to the command to a URC handler. Its line splitter (:class:`AtReader`)
is sans-I/O.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

import attrs
from meterhub.api import Link
from meterhub.channels.serial import SerialLink
from meterhub.errors import LinkError
from meterhub.model import SerialSettings

from .stream import ConnectFailed, ConnectionLost

log = logging.getLogger(__name__)
T = TypeVar("T")

# -- figures ---------------------------------------------------------------------------

#: How long one read of the port waits before the reader looks at the clock (to confirm
#: a transparent-mode drop report): software scheduling, not line timing.
READ_SLICE_S = 0.05

#: A line longer than this with no CR/LF yet is handed on as it is (garbage on the port
#: must not grow the buffer without bound). Longer than any result line of these modems.
MAX_LINE = 1024
#: Filler that completes any fixed-length send a killed predecessor left open: the
#: largest send any supported model takes (SIM7600's 1500).
OPEN_SEND_FILLER = 1500

#: The longest ``+IPD,<n>[,<ip>:<port>]:`` header waited for before its ``:`` arrives.
MAX_INLINE_HEADER = 48

#: The escape sequence of V.25ter data mode and the guard time around it, held a little
#: longer than the modem's own (a timer on a busy host fires late, never early).
ESCAPE = b"+++"
GUARD_MARGIN = 1.25

#: 3GPP TS 27.007 §8.5 +CSQ <rssi>: 0 = -113 dBm or less ... 31 = -51 dBm or greater, in
#: 2 dBm steps; 99 = not known or not detectable.
CSQ_DBM_AT_ZERO = -113
CSQ_DBM_PER_STEP = 2
CSQ_MAX = 31
CSQ_UNKNOWN = 99

#: 3GPP TS 27.007 §7.2/§10.1.19/§10.1.22 <stat> of +CREG/+CGREG/+CEREG.
REGISTERED = (1, 5)
REGISTRATION_STATES = {
    0: "not registered, not searching",
    1: "registered, home network",
    2: "searching",
    3: "registration denied",
    4: "unknown",
    5: "registered, roaming",
}

#: Character format of every modem UART here: 8N1 (the modems' default and the only
#: format they autobaud on).
MODEM_FORMAT = {"bytesize": 8, "parity": "N", "stopbits": 1}

DEFAULT_BAUDRATE = 115200

_IPV4_LINE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_CME = re.compile(r"\+CM[ES] ERROR:\s*(.*)")


def csq_to_dbm(rssi: int) -> int | None:
    """Received signal strength in dBm for a +CSQ <rssi>; None for 99 (unknown)."""
    if rssi == CSQ_UNKNOWN or not 0 <= rssi <= CSQ_MAX:
        return None
    return CSQ_DBM_AT_ZERO + CSQ_DBM_PER_STEP * rssi


# -- errors ----------------------------------------------------------------------------


class ModemError(LinkError):
    """The modem cannot do what the link needs: it does not answer, is not a supported
    model, or refuses a step of bringing the data connection up."""


class ModemTimeout(ModemError):
    """The modem did not answer a command within its timeout."""


class AtError(ModemError):
    """A command answered ``ERROR``, ``+CME ERROR: ...`` or ``+CMS ERROR: ...``."""

    def __init__(self, message: str, *, command: str = "", final: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.final = final


class SimError(ModemError):
    """The SIM card is missing, locked, or refused the PIN."""


class NotRegistered(ModemError):
    """The modem did not register on a mobile network in time."""


# -- the line splitter (sans-I/O) ------------------------------------------------------

CR, LF, GT, SPACE = 0x0D, 0x0A, 0x3E, 0x20


@attrs.frozen
class Line:
    """One line the modem sent (without its CR/LF)."""

    text: str


@attrs.frozen
class Prompt:
    """The ``>`` a modem sends when it is ready for a command's data."""


@attrs.frozen
class Payload:
    """Length-delimited bytes after a header line: pushed by the modem on its own
    (``pushed``) or part of the answer to a read command."""

    header: str
    data: bytes
    pushed: bool


@attrs.frozen
class Data:
    """Bytes of a transparent-mode connection, as they came."""

    data: bytes


Event = Line | Prompt | Payload | Data


@attrs.frozen
class PayloadRule:
    """A header line after whose CR LF the modem sends exactly ``n`` raw bytes (the
    pattern's group ``n``), e.g. ``+QIRD: 12``."""

    pattern: re.Pattern[str]
    pushed: bool


@attrs.frozen
class InlineRule:
    """A header whose raw bytes follow on the same line, e.g. SIM800's ``+IPD,12:``
    (pattern on bytes with group ``n``; ``prefix`` is how every such header starts)."""

    prefix: bytes
    pattern: re.Pattern[bytes]


class AtReader:
    """Splits what a modem sends into :class:`Line`, :class:`Prompt`, :class:`Payload`
    and (in transparent mode) :class:`Data` events.

    Lines end at CR, LF or CR LF; blank lines are skipped. A line matching one of
    ``rules`` is followed by its payload, taken by count whatever the bytes are; so is an
    ``inline`` header. ``>`` at the start of a line is a prompt only while
    ``prompt_wanted`` is set (a command waits for it). ``raw`` hands every byte on as
    data: the modem is in transparent mode.
    """

    def __init__(self) -> None:
        self.rules: tuple[PayloadRule, ...] = ()
        self.inline: InlineRule | None = None
        self.prompt_wanted = False
        self._buf = bytearray()
        self._raw = False
        self._skip_lf = False
        self._after_prompt = False
        self._left = 0
        self._header = ""
        self._pushed = False
        self._payload = bytearray()

    @property
    def raw(self) -> bool:
        return self._raw

    def set_raw(self, raw: bool) -> None:
        """Switch between transparent data (``True``) and command-mode lines. The LF of
        the CR LF that ended ``CONNECT`` is still the modem's, not payload."""
        self._raw = raw
        if not raw:
            self._skip_lf = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def events(self) -> list[Event]:
        """Every complete event in what was fed so far (for tests and simple callers;
        the engine takes them one at a time, since an event may switch modes)."""
        out = []
        while (event := self.next_event()) is not None:
            out.append(event)
        return out

    def next_event(self) -> Event | None:
        buf = self._buf
        while True:
            if self._left:
                if self._skip_lf and buf:
                    if buf[0] == LF:
                        del buf[0]
                    self._skip_lf = False
                take = min(self._left, len(buf))
                self._payload += buf[:take]
                del buf[:take]
                self._left -= take
                if self._left:
                    return None
                return self._finish_payload()
            if self._raw:
                if self._skip_lf and buf:
                    self._skip_lf = False
                    if buf[0] == LF:
                        del buf[0]
                if not buf:
                    return None
                data = bytes(buf)
                buf.clear()
                return Data(data)
            if not buf:
                return None
            if self._skip_lf:
                self._skip_lf = False
                if buf[0] == LF:
                    del buf[0]
                continue
            if self._after_prompt:
                self._after_prompt = False
                if buf[0] == SPACE:
                    del buf[0]
                    continue
            first = buf[0]
            if first in (CR, LF):
                del buf[0]
                self._skip_lf = first == CR
                continue
            if self.prompt_wanted and first == GT:
                del buf[0]
                self._after_prompt = True
                return Prompt()
            inline = self._inline(buf)
            if inline is None:
                return None  # a data header is still arriving
            if inline:
                continue
            end = next((i for i, b in enumerate(buf) if b in (CR, LF)), -1)
            if end < 0:
                if len(buf) < MAX_LINE:
                    return None
                end = MAX_LINE
                text = buf[:end].decode("latin-1")
                del buf[:end]
            else:
                text = buf[:end].decode("latin-1")
                self._skip_lf = buf[end] == CR
                del buf[: end + 1]
            for rule in self.rules:
                match = rule.pattern.fullmatch(text.strip())
                if match:
                    self._start_payload(text.strip(), int(match["n"]), rule.pushed)
                    break
            else:
                return Line(text)
            if not self._left:
                return self._finish_payload()

    def _inline(self, buf: bytearray) -> bool | None:
        """True: an inline data header was taken off ``buf``; False: none there;
        None: one may be arriving (wait for more bytes)."""
        rule = self.inline
        if rule is None:
            return False
        head = bytes(buf[: len(rule.prefix)])
        if not rule.prefix.startswith(head):
            return False
        match = rule.pattern.match(bytes(buf[:MAX_INLINE_HEADER]))
        if match:
            header = match.group(0).decode("latin-1")
            del buf[: match.end()]
            self._start_payload(header, int(match["n"]), pushed=True)
            self._skip_lf = False  # the data follows the ':' at once
            return True
        if CR in buf[:MAX_INLINE_HEADER] or LF in buf[:MAX_INLINE_HEADER] or len(buf) >= MAX_INLINE_HEADER:
            return False  # not a header after all: an ordinary line
        return None

    def _start_payload(self, header: str, n: int, pushed: bool) -> None:
        self._header, self._left, self._pushed = header, n, pushed
        self._payload = bytearray()

    def _finish_payload(self) -> Payload:
        event = Payload(self._header, bytes(self._payload), self._pushed)
        self._payload = bytearray()
        self._header = ""
        return event


# -- transparent-mode drop reports (sans-I/O) ------------------------------------------

#: What modems put on the port when a transparent connection ends, byte for byte: SIM800,
#: SIM7600 and M26 report ``CLOSED``, Quectel's LTE modules ``NO CARRIER`` (either is
#: accepted from any model); a 2G module that lost its PDP context says so on the next
#: line. Nothing else counts: the fewer byte strings taken for a drop, the fewer payloads
#: that could be mistaken for one.
DROP_REPORTS: tuple[bytes, ...] = tuple(
    b"\r\n" + text + b"\r\n" + after
    for text in (b"CLOSED", b"NO CARRIER")
    for after in (b"", b"\r\n+PDP: DEACT\r\n", b"\r\n+PDP DEACT\r\n")
)
MAX_DROP_TAIL = max(len(report) for report in DROP_REPORTS)


def _suspect(tail: bytes) -> bool:
    """Whether ``tail`` is a drop report or the start of one."""
    return any(report.startswith(tail) for report in DROP_REPORTS)


class DropWatch:
    """Holds back transparent-mode bytes that may be the modem's drop report until the
    line has been silent for ``silence`` seconds (see the module docstring)."""

    def __init__(self, silence: float) -> None:
        self.silence = silence
        self._held = bytearray()
        self._last = 0.0

    @property
    def held(self) -> bytes:
        return bytes(self._held)

    def feed(self, data: bytes, now: float) -> bytes:
        """Take ``data`` (arrived at ``now``); return what can be delivered at once."""
        self._held += data
        self._last = now
        keep = self._suspect_from()
        out = bytes(self._held[:keep])
        del self._held[:keep]
        return out

    def poll(self, now: float) -> tuple[bytes, str | None]:
        """After the silence: ``(b"", report)`` for a drop, or the held bytes to deliver."""
        if not self._held or now - self._last < self.silence:
            return b"", None
        held = bytes(self._held)
        self._held.clear()
        if held in DROP_REPORTS:
            return b"", held.split(b"\r\n")[1].decode("ascii")
        return held, None

    def _suspect_from(self) -> int:
        held = self._held
        start = max(0, len(held) - MAX_DROP_TAIL)
        for i in range(start, len(held)):
            if held[i] == CR and _suspect(bytes(held[i:])):
                return i
        return len(held)


# -- the AT command engine -------------------------------------------------------------

_BASE_FINAL = re.compile(r"OK|ERROR|\+CM[ES] ERROR:.*")


def _is_error(final: str) -> bool:
    return final == "ERROR" or final.startswith(("+CME ERROR", "+CMS ERROR"))


@attrs.frozen
class Reply:
    """What a command got: its final result code, the information lines that belonged
    to it, data a read command returned, and the completion line that followed an OK."""

    command: str
    final: str
    lines: tuple[str, ...] = ()
    payload: bytes | None = None
    then: str | None = None

    @property
    def error(self) -> bool:
        return _is_error(self.final)


@attrs.define
class _Pending:
    command: str | None
    show: str
    prefix: str | None
    info: bool
    accept: Callable[[str], bool] | None
    finals: tuple[re.Pattern[str], ...]
    then: re.Pattern[str] | None
    data_mode_on: re.Pattern[str] | None
    done: asyncio.Future[str]
    prompt: asyncio.Future[None] | None
    then_line: asyncio.Future[str] | None
    lines: list[str] = attrs.Factory(list)
    payload: bytes | None = None
    final: str | None = None

    def futures(self) -> list[asyncio.Future[Any]]:
        return [f for f in (self.done, self.prompt, self.then_line) if f is not None]


def _resolve(future: asyncio.Future[Any] | None, value: Any) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _never(line: str) -> bool:
    return False


class AtEngine:
    """Commands and answers over a :class:`~meterhub.api.Link`, with unsolicited result
    codes and pushed data routed to handlers while commands run.

    A background task reads the link; :meth:`command` sends one command and waits for
    its final result. ``on_urc`` gets every line that is not part of a command's answer,
    ``on_data`` every pushed payload and all transparent-mode bytes, ``on_tick`` the loop
    time after every read slice, ``on_failure`` the error that ended the reader (the
    port failed). ``is_urc`` tells unsolicited lines from information lines of commands
    that answer with untagged text (ATI, AT+CIFSR).
    """

    def __init__(self, link: Link, *, name: str | None = None) -> None:
        self.link = link
        self.name = name or str(getattr(link, "url", "modem"))
        self.reader = AtReader()
        self.on_urc: Callable[[str], None] = self._unhandled_urc
        self.on_data: Callable[[bytes], None] = self._unhandled_data
        self.on_tick: Callable[[float], None] | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        self.is_urc: Callable[[str], bool] = _never
        self.lock = asyncio.Lock()
        self.failure: LinkError | None = None
        self.last_tx = 0.0  #: loop time the last byte was handed to the link
        self._pending: _Pending | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<AtEngine {self.name}>"

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading the (open) link."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"at-reader {self.name}")

    async def stop(self) -> None:
        """Stop reading (idempotent); the link stays open."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.link.read(READ_SLICE_S)
                if data:
                    self.reader.feed(data)
                    self._drain()
                if self.on_tick is not None:
                    self.on_tick(loop.time())
        except LinkError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug here would otherwise leave every command hanging
            log.exception("%s: the AT reader failed", self.name)
            self._fail(LinkError(f"the AT reader failed: {exc!r}"))

    def _fail(self, exc: LinkError) -> None:
        log.warning("%s: reading the modem failed: %s", self.name, exc)
        self.failure = exc
        pending = self._pending
        if pending is not None:
            for future in pending.futures():
                if not future.done():
                    future.set_exception(LinkError(f"{self.name}: {exc}"))
        if self.on_failure is not None:
            self.on_failure(exc)

    def _drain(self) -> None:
        while (event := self.reader.next_event()) is not None:
            try:
                self._dispatch(event)
            except Exception:  # a handler's bug must not stop the reader; say so loudly
                log.exception("%s: handling %r failed", self.name, event)

    # -- dispatch -------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Line):
            self._line(event.text)
        elif isinstance(event, Data):
            self.on_data(event.data)
        elif isinstance(event, Payload):
            self._payload(event)
        else:
            pending = self._pending
            if pending is not None and pending.prompt is not None:
                _resolve(pending.prompt, None)
            else:
                log.debug("%s: a '>' prompt nobody waits for", self.name)

    def _payload(self, event: Payload) -> None:
        if event.pushed:
            log.debug("%s < %s (%d bytes)", self.name, event.header, len(event.data))
            self.on_data(event.data)
            return
        pending = self._pending
        if pending is not None and pending.final is None:
            pending.lines.append(event.header)
            pending.payload = (pending.payload or b"") + event.data
        else:
            log.warning("%s: %d bytes after %r that no command asked for: dropped", self.name, len(event.data), event.header)

    def _line(self, text: str) -> None:
        line = text.strip()
        if not line:
            return
        log.debug("%s < %s", self.name, line)
        p = self._pending
        if p is not None:
            if p.final is None:
                if p.command is not None and line == p.command:
                    return  # the modem's echo (before ATE0 took effect)
                if _BASE_FINAL.fullmatch(line) or any(f.fullmatch(line) for f in p.finals):
                    p.final = line
                    self._data_mode(p, line)
                    _resolve(p.done, line)
                    return
            if p.then is not None and p.then_line is not None and not p.then_line.done() and p.then.fullmatch(line):
                self._data_mode(p, line)
                _resolve(p.then_line, line)
                return
            if p.final is None:
                if p.prefix is not None and line.startswith(p.prefix) and (p.accept is None or p.accept(line)):
                    p.lines.append(line)
                    return
                if p.info and not self.is_urc(line):
                    p.lines.append(line)
                    return
        self.on_urc(line)

    def _data_mode(self, pending: _Pending, line: str) -> None:
        # Synchronously, before the next byte is parsed: what follows CONNECT is payload.
        if pending.data_mode_on is not None and pending.data_mode_on.fullmatch(line):
            self.reader.set_raw(True)

    def _unhandled_urc(self, line: str) -> None:
        log.info("%s: unsolicited %r skipped", self.name, line)

    def _unhandled_data(self, data: bytes) -> None:
        log.warning("%s: %d bytes of data with no stream to take them: dropped", self.name, len(data))

    # -- commands -------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Put raw bytes on the port (transparent-mode payload, the escape sequence)."""
        await self.link.write(data)
        self.last_tx = asyncio.get_running_loop().time()

    async def command(
        self,
        command: str,
        *,
        timeout: float,
        prefix: str | None = None,
        info: bool = False,
        accept: Callable[[str], bool] | None = None,
        finals: Sequence[re.Pattern[str]] = (),
        then: re.Pattern[str] | None = None,
        then_timeout: float | None = None,
        data: bytes | None = None,
        data_mode_on: re.Pattern[str] | None = None,
        check: bool = True,
        show: str | None = None,
    ) -> Reply:
        """Send ``command`` (CR added) and wait up to ``timeout`` for its final result.

        ``prefix``: information lines starting with it belong to the answer (``accept``
        may refuse some, e.g. a URC of the same name); ``info``: untagged lines that are
        not URCs do too. ``finals``: result codes of this command besides OK/ERROR/+CME
        ERROR/+CMS ERROR (``SEND OK``, an IP address). ``then``: after OK, wait up to
        ``then_timeout`` for this completion line (``CONNECT OK``, ``+QIOPEN: 0,0``).
        ``data``: sent after the ``>`` prompt. ``data_mode_on``: the result line after
        which the port carries transparent data. ``check``: raise :class:`AtError` on an
        error result. ``show``: what logs and errors say instead of a secret-bearing
        command. Raises :class:`ModemTimeout` when no answer comes in time.
        """
        async with self.lock:
            return await self._transact(
                command, show or command, timeout=timeout, prefix=prefix, info=info, accept=accept,
                finals=tuple(finals), then=then, then_timeout=then_timeout, data=data,
                data_mode_on=data_mode_on, check=check,
            )  # fmt: skip

    async def expect(self, pattern: re.Pattern[str], timeout: float) -> str:
        """Wait up to ``timeout`` for a line matching ``pattern`` (or OK/ERROR), sending
        nothing: the answer to bytes already written (the escape sequence)."""
        async with self.lock:
            reply = await self._transact(
                None, f"a line like {pattern.pattern!r}", timeout=timeout, prefix=None, info=False,
                accept=None, finals=(pattern,), then=None, then_timeout=None, data=None,
                data_mode_on=None, check=False,
            )  # fmt: skip
        return reply.final

    async def _transact(
        self,
        command: str | None,
        show: str,
        *,
        timeout: float,
        prefix: str | None,
        info: bool,
        accept: Callable[[str], bool] | None,
        finals: tuple[re.Pattern[str], ...],
        then: re.Pattern[str] | None,
        then_timeout: float | None,
        data: bytes | None,
        data_mode_on: re.Pattern[str] | None,
        check: bool,
    ) -> Reply:
        if self.failure is not None:
            raise LinkError(f"{self.name}: {self.failure}")
        loop = asyncio.get_running_loop()
        pending = _Pending(
            command, show, prefix, info, accept, finals, then, data_mode_on,
            done=loop.create_future(),
            prompt=loop.create_future() if data is not None else None,
            then_line=loop.create_future() if then is not None else None,
        )  # fmt: skip
        self._pending = pending
        try:
            exchange = self._exchange(command, show, data, pending, timeout, then_timeout, check)
            # a send the modem has taken runs to its end: see _finish_if_cancelled
            return await (exchange if data is None else _finish_if_cancelled(exchange))
        finally:
            self.reader.prompt_wanted = False
            if self._pending is pending:
                self._pending = None
            for future in pending.futures():
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved: a failure nobody awaited is not news
                else:
                    future.cancel()

    async def _exchange(self, command: str | None, show: str, data: bytes | None, pending: _Pending,
                        timeout: float, then_timeout: float | None, check: bool) -> Reply:
        """The command, the data after its ``>`` prompt, its answer and completion line."""
        if command is not None:
            log.debug("%s > %s", self.name, show)
            self.reader.prompt_wanted = data is not None
            await self.write(command.encode("ascii") + b"\r")
        if data is not None:
            assert pending.prompt is not None
            await self._first(pending.prompt, pending.done, timeout, show)
            self.reader.prompt_wanted = False
            if not pending.done.done():
                await self.write(data)
        final = await self._wait(pending.done, timeout, show, "answer")
        if check and _is_error(final):
            raise AtError(f"{self.name}: {show} failed: {final}", command=show, final=final)
        then_line = None
        if pending.then_line is not None and final == "OK":
            then_line = await self._wait(pending.then_line, then_timeout or timeout, show, "completion")
        return Reply(show, final, tuple(pending.lines), pending.payload, then_line)

    async def _wait(self, future: asyncio.Future[str], timeout: float, show: str, what: str) -> str:
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ModemTimeout(f"{self.name}: no {what} to {show} within {timeout:g} s") from None

    async def _first(self, prompt: asyncio.Future[None], done: asyncio.Future[str], timeout: float, show: str) -> None:
        finished, _ = await asyncio.wait([prompt, done], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not finished:
            raise ModemTimeout(f"{self.name}: no '>' prompt after {show} within {timeout:g} s")
        for future in finished:
            future.result()  # a failed port raises here


async def _finish_if_cancelled(step: Awaitable[T]) -> T:
    """Run ``step`` to its end even when the caller is cancelled meanwhile, then let the
    cancellation go on. A send command the modem has taken waits for its data: stopping
    between the command and the data would leave the modem taking the next command (a
    logout, the next connection's AT) as the data it was promised, and stopping before its
    answer would leave that answer to be taken as the next send's. ``step`` is bounded by
    its own timeouts."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.debug("a send finished after a stop failed", exc_info=task.exception())
        raise


# -- timeouts ---------------------------------------------------------------------------


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number > 0, not {value!r}")


@attrs.frozen
class ModemTimeouts:
    """How long each step may take, in seconds. The defaults are the manuals' maximum
    response times (the longest among the supported models) where they give one."""

    #: An ordinary command. The manuals give 300 ms for most; a module busy with its
    #: radio takes longer, and a timeout here ends the connection attempt.
    command: float = attrs.field(default=5.0, validator=_positive)
    #: Waiting for OK after each AT while synchronising (autobauding modems drop the
    #: first AT or two while they measure the speed).
    sync_interval: float = attrs.field(default=0.5, validator=_positive)
    sync_attempts: int = attrs.field(default=10, validator=_positive)
    #: The SIM to be ready (after power-up or PIN). Quectel's recommended process restarts
    #: the module when the SIM is not identified in 20 s.
    sim_ready: float = attrs.field(default=20.0, validator=_positive)
    #: Network registration. Quectel's recommended process: 90 s for CS registration.
    registration: float = attrs.field(default=90.0, validator=_positive)
    registration_poll: float = attrs.field(default=1.0, validator=_positive)
    #: AT+CGATT=1: 75 s (3GPP modules typically; SIM800 manual: 10 s).
    attach: float = attrs.field(default=75.0, validator=_positive)
    #: PDP activation: AT+QIACT 150 s (Quectel), AT+CIICR 85 s (SIM800), AT+NETOPEN 120 s (SIM7600).
    activate: float = attrs.field(default=150.0, validator=_positive)
    #: TCP connect: AT+CIPSTART 160 s from IP INITIAL (SIM800), AT+QIOPEN 150 s (EC2x).
    open: float = attrs.field(default=160.0, validator=_positive)
    #: SEND OK after the data. The manuals allow minutes (SIM800: 645 s without a TCP ACK);
    #: an uplink that waits that long is better off reconnecting.
    send: float = attrs.field(default=30.0, validator=_positive)
    #: AT+QICLOSE 10 s (EC2x); AT+CIPCLOSE alike.
    close: float = attrs.field(default=10.0, validator=_positive)
    #: Tearing the PDP context down: AT+CIPSHUT 65 s (SIM800), AT+QIDEACT 40 s (Quectel).
    deactivate: float = attrs.field(default=65.0, validator=_positive)
    #: The +++ guard time: SIM800 asks 1 s before and 0.5 s after, Quectel 1 s each side.
    escape_guard: float = attrs.field(default=1.0, validator=_positive)
    #: Silence after a transparent-mode drop report before it is believed.
    drop_silence: float = attrs.field(default=0.5, validator=_positive)


# -- command sets -----------------------------------------------------------------------


class UrcKind(enum.Enum):
    DATA = "data"  #: received data waits in the modem's buffer
    CLOSED = "closed"  #: the connection or the PDP context is gone
    REGISTRATION = "registration"  #: a +CREG/+CGREG/+CEREG report (detail: <stat>)
    INFO = "info"  #: a known, harmless report


_REG_URC = re.compile(r"\+C(?:G|E)?REG: (\d)")  # n=1 form: <stat> alone
_INFO_COMMON = re.compile(
    r"RDY|Call Ready|SMS Ready|PB DONE|SMS DONE|\+CPIN: READY|\+CFUN: \d|\+CTZV:.*|\+QNITZ:.*|\*PSUTTZ:.*|"
    r"DST:.*|\+QIND:.*|\+QUSIM:.*|\+CGEV:.*"
)

MODES = ("command", "transparent")
RECEIVE_MODES = ("buffer", "push")


def _quoted(value: str) -> str:
    if '"' in value or "\r" in value or "\n" in value:
        raise ValueError(f"{value!r} cannot be sent inside an AT string parameter")
    return f'"{value}"'


def _ok(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class CommandSet:
    """How one family of modems does PDP and TCP with AT commands (see the module
    docstring for the manuals). Subclasses fill in the commands; the connector and the
    stream use only these methods."""

    name: ClassVar[str] = ""
    #: substrings of ATI/AT+CGMM answers that identify the family
    models: ClassVar[tuple[str, ...]] = ()
    #: LTE modules report PS registration with +CEREG
    lte: ClassVar[bool] = False
    #: bytes one send command may carry (the manuals' maximum for a send is larger; this
    #: leaves room on every firmware seen)
    max_chunk: ClassVar[int] = 1024

    def __init__(self, engine: AtEngine, *, mode: str, receive: str, timeouts: ModemTimeouts) -> None:
        self.engine = engine
        self.mode = mode
        self.receive = receive
        self.t = timeouts

    @property
    def transparent(self) -> bool:
        return self.mode == "transparent"

    @property
    def buffered(self) -> bool:
        """Received data stays in the modem until a read command fetches it."""
        return False

    def payload_rules(self) -> tuple[PayloadRule, ...]:
        return ()

    def inline_rule(self) -> InlineRule | None:
        return None

    def classify(self, line: str) -> tuple[UrcKind, str] | None:
        match = _REG_URC.fullmatch(line)
        if match:
            return UrcKind.REGISTRATION, match[1]
        if _INFO_COMMON.fullmatch(line):
            return UrcKind.INFO, line
        return None

    async def cmd(self, command: str, **kwargs: Any) -> Reply:
        kwargs.setdefault("timeout", self.t.command)
        return await self.engine.command(command, **kwargs)

    async def activate(self, apn: str, user: str | None, password: str | None) -> None:
        raise NotImplementedError

    async def open(self, host: str, port: int) -> None:
        raise NotImplementedError

    async def send(self, data: bytes) -> None:
        """Send one chunk in command mode; raises AtError if the modem refuses it."""
        raise NotImplementedError

    async def fetch(self) -> bytes:
        """Read what the modem buffered (buffered receive only); b"" when empty."""
        return b""

    async def close(self) -> None:
        """Close the TCP connection and deactivate the PDP context (best effort)."""
        raise NotImplementedError

    def _refused(self, what: str, reply: Reply) -> AtError:
        return AtError(f"{what} not sent: {reply.final}", command=what, final=reply.final)

    async def _open_then_connect(self, command: str, host: str, port: int) -> None:
        """Open a connection the 2G way (SIM800 AT+CIPSTART, M26 AT+QIOPEN): OK, then
        ``CONNECT OK`` (``CONNECT`` in transparent mode) or ``CONNECT FAIL``."""
        reply = await self.cmd(
            command,
            then=_CONNECT_RESULT,
            then_timeout=self.t.open,
            data_mode_on=_ok("CONNECT") if self.transparent else None,
            check=False,
        )
        if reply.then not in ("CONNECT OK", "CONNECT"):
            raise _connect_failed(self.engine, host, port, reply.then or reply.final)

    async def _open_then_code(
        self, command: str, result: re.Pattern[str], errors: dict[int, str], host: str, port: int
    ) -> None:
        """Open a connection the LTE way (SIM7600 AT+CIPOPEN, EC2x AT+QIOPEN): OK, then
        ``result`` whose group 1 is 0 or an error code explained by ``errors``."""
        reply = await self.cmd(command, then=result, then_timeout=self.t.open, check=False)
        if reply.error:
            raise _connect_failed(self.engine, host, port, reply.final)
        match = result.fullmatch(reply.then or "")
        code = int(match[1]) if match else -1
        if code != 0:
            raise _connect_failed(self.engine, host, port, f"{reply.then}: {errors.get(code, 'error')}")

    async def _open_transparent(self, command: str, host: str, port: int) -> None:
        """Open in transparent mode where the answer is ``CONNECT [<baud>]`` itself, or
        ``CONNECT FAIL``/``ERROR`` (SIM7600 with AT+CIPMODE=1, EC2x access mode 2). An OK
        first, then CONNECT, is taken too."""
        reply = await self.cmd(
            command, finals=[_CONNECT_BAUD, _ok("CONNECT FAIL")], then=_CONNECT_BAUD, then_timeout=self.t.open,
            timeout=self.t.open, data_mode_on=_CONNECT_BAUD, check=False,
        )  # fmt: skip
        if not (_CONNECT_BAUD.fullmatch(reply.final) or reply.then):
            raise _connect_failed(self.engine, host, port, reply.final)

    async def _send_until_send_ok(self, command: str, data: bytes) -> None:
        """``command`` (AT+CIPSEND=<n>, AT+QISEND=...), the data after the prompt, and
        ``SEND OK`` — or ``SEND FAIL``/``ERROR``, raised as :class:`AtError`."""
        reply = await self.cmd(command, data=data, finals=[_SEND_RESULT], check=False, timeout=self.t.send)
        if reply.final != "SEND OK":
            raise self._refused(command, reply)


_CONNECT_RESULT = _ok(r"CONNECT OK|CONNECT FAIL|ALREADY CONNECT|CONNECT")
_SEND_RESULT = _ok(r"SEND OK|SEND FAIL")
_CONNECT_BAUD = _ok(r"CONNECT(?: \d+)?")


def _connect_failed(engine: AtEngine, host: str, port: int, why: str) -> ConnectFailed:
    return ConnectFailed(
        f"{engine.name}: the modem could not connect to {host}:{port} ({why}): "
        "is the master station running and reachable from the mobile network?"
    )


def _pdp_failed(engine: AtEngine, apn: str, exc: ModemError) -> ModemError:
    return ModemError(
        f"{engine.name}: could not activate the data connection with APN {apn!r} "
        f"({exc}): check the APN, its user and password"
    )


async def _best_effort(engine: AtEngine, step: str, coro: Any) -> Reply | None:
    try:
        return await coro
    except (ModemError, LinkError) as exc:
        log.info("%s: %s: %s", engine.name, step, exc)
        return None


class Sim800(CommandSet):
    """SIMCom SIM800 series (and SIM900/SIM800-compatible firmware)."""

    name = "SIM800"
    models = ("SIM800", "SIM900", "SIM868", "SIM808")
    max_chunk = 1024  # AT+CIPSEND? reports 1460 on most firmware; 1024 is safe on all

    def inline_rule(self) -> InlineRule | None:
        # AT+CIPHEAD=1: "+IPD,<len>:<data>" (with AT+CIPSHOWTP/CIPSRIP more fields before ':')
        return InlineRule(b"+IPD,", re.compile(rb"\+IPD,(?P<n>\d+)(?:,[^:\r\n]*)?:"))

    def classify(self, line: str) -> tuple[UrcKind, str] | None:
        if line in ("CLOSED", "+PDP: DEACT"):
            return UrcKind.CLOSED, line
        if line.startswith("STATE:"):
            return UrcKind.INFO, line
        return super().classify(line)

    async def activate(self, apn: str, user: str | None, password: str | None) -> None:
        e, t = self.engine, self.t
        # AT+CSTT is accepted only in IP INITIAL: shut whatever an earlier session left.
        await self.cmd("AT+CIPSHUT", finals=[_ok("SHUT OK")], timeout=t.deactivate)
        await self.cmd("AT+CIPMUX=0")
        await self.cmd(f"AT+CIPMODE={1 if self.transparent else 0}")
        if not self.transparent:
            await self.cmd("AT+CIPHEAD=1")  # "+IPD,<len>:" before received data
            await self.cmd("AT+CIPQSEND=0")  # "SEND OK" once the data is out
        cstt = f"AT+CSTT={_quoted(apn)},{_quoted(user or '')},{_quoted(password or '')}"
        try:
            await self.cmd(cstt, show=f"AT+CSTT={_quoted(apn)},...")
            await self.cmd("AT+CIICR", timeout=t.activate)
            await self.cmd("AT+CIFSR", info=True, finals=[_IPV4_LINE])
        except ModemError as exc:
            raise _pdp_failed(e, apn, exc) from exc

    async def open(self, host: str, port: int) -> None:
        await self._open_then_connect(f'AT+CIPSTART="TCP",{_quoted(host)},"{port}"', host, port)

    async def send(self, data: bytes) -> None:
        await self._send_until_send_ok(f"AT+CIPSEND={len(data)}", data)

    async def close(self) -> None:
        e, t = self.engine, self.t
        await _best_effort(e, "AT+CIPCLOSE", self.cmd("AT+CIPCLOSE", finals=[_ok("CLOSE OK")], timeout=t.close))
        await _best_effort(e, "AT+CIPSHUT", self.cmd("AT+CIPSHUT", finals=[_ok("SHUT OK")], timeout=t.deactivate))


class Sim7600(CommandSet):
    """SIMCom SIM7500/SIM7600 series (LTE Cat-1/Cat-4)."""

    name = "SIM7600"
    models = ("SIM7600", "SIM7500", "SIM7800")
    lte = True
    max_chunk = 1500  # AT+CIPSEND: <length> 1..1500 in command mode

    _NETOPEN = _ok(r"\+NETOPEN: (\d+)")
    _NETCLOSE = _ok(r"\+NETCLOSE: (\d+)")
    _CIPOPEN = _ok(r"\+CIPOPEN: 0,(\d+)")
    _CIPCLOSE = _ok(r"\+CIPCLOSE: 0,(\d+)")
    _CIPSEND = _ok(r"\+CIPSEND: 0,(-?\d+),(-?\d+)")
    #: +CIPOPEN <err> (TCPIP AT Command Manual, summary of error codes)
    ERRORS: ClassVar[dict[int, str]] = {
        1: "network failure", 2: "network not opened", 3: "wrong parameter",
        4: "operation not supported", 5: "failed to create socket", 6: "failed to bind socket",
        7: "TCP server is already listening", 8: "busy", 9: "sockets opened", 10: "timeout",
        11: "DNS parse failed", 255: "unknown error",
    }  # fmt: skip

    def payload_rules(self) -> tuple[PayloadRule, ...]:
        return (
            PayloadRule(re.compile(r"\+IPD(?P<n>\d+)"), pushed=True),  # AT+CIPHEAD=1, header type 0
            PayloadRule(re.compile(r"\+RECEIVE,\d+,(?P<n>\d+)"), pushed=True),  # AT+CIPCCFG header type 1
        )

    def classify(self, line: str) -> tuple[UrcKind, str] | None:
        if line.startswith(("+IPCLOSE:", "+CIPEVENT:")) or line in ("CLOSED", "+PDP: DEACT"):
            return UrcKind.CLOSED, line
        if line.startswith(("RECV FROM:", "+CIPERROR:")):
            return UrcKind.INFO, line
        return super().classify(line)

    async def activate(self, apn: str, user: str | None, password: str | None) -> None:
        e, t = self.engine, self.t
        # AT+CIPMODE must be set while the network is closed: close a stale one first.
        stale = await _best_effort(e, "AT+NETCLOSE", self.cmd("AT+NETCLOSE", check=False, then=self._NETCLOSE))
        log.debug("%s: closing a stale network: %s", e.name, stale and (stale.then or stale.final))
        try:
            await self.cmd(f'AT+CGDCONT=1,"IP",{_quoted(apn)}')
            if user:
                # SIM7500/SIM7600 AT manual: AT+CGAUTH=<cid>[,<auth_type>[,<passwd>[,<user>]]]
                # (password BEFORE user, unlike most modems; 3 = PAP or CHAP). Not checked
                # on a real module here: if authentication fails, suspect this order first.
                await self.cmd(
                    f"AT+CGAUTH=1,3,{_quoted(password or '')},{_quoted(user)}", show="AT+CGAUTH=1,3,..."
                )
            await self.cmd(f"AT+CIPMODE={1 if self.transparent else 0}")
            if not self.transparent:
                await self.cmd("AT+CIPSRIP=0")  # no "RECV FROM:" line before data
                await self.cmd("AT+CIPHEAD=1")  # "+IPD<len>" before data
            reply = await self.cmd("AT+NETOPEN", check=False, then=self._NETOPEN, then_timeout=t.activate)
            if reply.error and not any("already opened" in line for line in reply.lines):
                raise AtError(f"{e.name}: AT+NETOPEN failed: {reply.final}", command="AT+NETOPEN", final=reply.final)
            if reply.then is not None and reply.then != "+NETOPEN: 0":
                raise ModemError(f"{e.name}: AT+NETOPEN answered {reply.then}")
        except ModemError as exc:
            raise _pdp_failed(e, apn, exc) from exc

    async def open(self, host: str, port: int) -> None:
        command = f'AT+CIPOPEN=0,"TCP",{_quoted(host)},{port}'
        if self.transparent:
            await self._open_transparent(command, host, port)
        else:
            await self._open_then_code(command, self._CIPOPEN, self.ERRORS, host, port)

    async def send(self, data: bytes) -> None:
        reply = await self.cmd(
            f"AT+CIPSEND=0,{len(data)}", data=data, then=self._CIPSEND, check=False, timeout=self.t.send
        )
        match = self._CIPSEND.fullmatch(reply.then or "")
        if reply.final != "OK" or match is None or int(match[2]) != len(data):
            raise self._refused("AT+CIPSEND", attrs.evolve(reply, final=reply.then or reply.final))

    async def close(self) -> None:
        e, t = self.engine, self.t
        await _best_effort(
            e, "AT+CIPCLOSE=0", self.cmd("AT+CIPCLOSE=0", check=False, then=self._CIPCLOSE, timeout=t.close)
        )
        await _best_effort(
            e, "AT+NETCLOSE", self.cmd("AT+NETCLOSE", check=False, then=self._NETCLOSE, timeout=t.deactivate)
        )


class QuectelM26(CommandSet):
    """Quectel M26 (and the M95/M66/MC60 family with the same TCPIP commands)."""

    name = "M26"
    models = ("M26", "M95", "M66", "MC60")
    max_chunk = 1024  # AT+QISEND: up to 1460 bytes

    @property
    def buffered(self) -> bool:
        return not self.transparent

    def payload_rules(self) -> tuple[PayloadRule, ...]:
        # AT+QIRD=0,1,0,<len> -> "+QIRD: <ip>:<port>,TCP,<len>" CR LF <data> CR LF OK
        return (PayloadRule(re.compile(r"\+QIRD: [^,]*,(?:TCP|UDP),(?P<n>\d+)"), pushed=False),)

    def classify(self, line: str) -> tuple[UrcKind, str] | None:
        if line.startswith("+QIRDI:"):
            return UrcKind.DATA, line
        if line in ("CLOSED", "+PDP DEACT"):
            return UrcKind.CLOSED, line
        return super().classify(line)

    async def activate(self, apn: str, user: str | None, password: str | None) -> None:
        e, t = self.engine, self.t
        # AT+QIREGAPP is accepted only in IP INITIAL: deactivate whatever is left.
        await _best_effort(e, "AT+QIDEACT", self.cmd("AT+QIDEACT", finals=[_ok("DEACT OK")], timeout=t.deactivate))
        try:
            await self.cmd("AT+QIFGCNT=0")  # foreground context 0
            creds = f"{_quoted(apn)},{_quoted(user or '')},{_quoted(password or '')}"
            await self.cmd(f"AT+QICSGP=1,{creds}", show=f"AT+QICSGP=1,{_quoted(apn)},...")  # 1 = GPRS
            await self.cmd("AT+QIMUX=0")
            await self.cmd(f"AT+QIMODE={1 if self.transparent else 0}")
            if self.transparent:
                # AT+QITCFG=<NmRetry>,<WaitTm>,<SendSz>,<esc>: the manual's defaults, with
                # esc=1 so +++ returns to command mode.
                await self.cmd("AT+QITCFG=3,2,512,1")
            else:
                await self.cmd("AT+QINDI=1")  # announce data with +QIRDI, read it with AT+QIRD
            await self.cmd("AT+QIREGAPP")
            await self.cmd("AT+QIACT", timeout=t.activate)
            await self.cmd("AT+QILOCIP", info=True, finals=[_IPV4_LINE])
        except ModemError as exc:
            raise _pdp_failed(e, apn, exc) from exc

    async def open(self, host: str, port: int) -> None:
        dns = 0
        try:
            ipaddress.ip_address(host)
        except ValueError:
            dns = 1
        await self.cmd(f"AT+QIDNSIP={dns}")  # 0: the host is an IP address, 1: a name
        await self._open_then_connect(f'AT+QIOPEN="TCP",{_quoted(host)},"{port}"', host, port)

    async def send(self, data: bytes) -> None:
        await self._send_until_send_ok(f"AT+QISEND={len(data)}", data)

    async def fetch(self) -> bytes:
        # <id>=0 foreground context, <sc>=1 client, <sid>=0 the single connection
        reply = await self.cmd("AT+QIRD=0,1,0,1500", check=False)
        return reply.payload or b""

    async def close(self) -> None:
        e, t = self.engine, self.t
        await _best_effort(e, "AT+QICLOSE", self.cmd("AT+QICLOSE", finals=[_ok("CLOSE OK")], timeout=t.close))
        await _best_effort(e, "AT+QIDEACT", self.cmd("AT+QIDEACT", finals=[_ok("DEACT OK")], timeout=t.deactivate))


class QuectelEc2x(CommandSet):
    """Quectel EC20/EC25 (and EC21/EG91, same TCP/IP command set)."""

    name = "EC2x"
    models = ("EC20", "EC25", "EC21", "EG91", "EG95")
    lte = True
    max_chunk = 1460  # AT+QISEND: <send_length> up to 1460

    _QIOPEN = _ok(r"\+QIOPEN: 0,(\d+)")
    _ACTIVE = _ok(r'\+QIACT: 1,1,.*')
    #: Quectel TCP/IP manuals, summary of error codes (+QIOPEN: <connectID>,<err>)
    ERRORS: ClassVar[dict[int, str]] = {
        550: "unknown error", 551: "operation blocked", 552: "invalid parameters", 553: "memory not enough",
        554: "create socket failed", 555: "operation not supported", 556: "socket bind failed",
        557: "socket listen failed", 558: "socket write failed", 559: "socket read failed",
        560: "socket accept failed", 561: "open PDP context failed", 562: "close PDP context failed",
        563: "socket identity has been used", 564: "DNS busy", 565: "DNS parse failed",
        566: "socket connect failed", 567: "socket has been closed", 568: "operation busy",
        569: "operation timeout", 570: "PDP context broken down", 571: "cancel send",
        572: "operation not allowed", 573: "APN not configured", 574: "port busy",
    }  # fmt: skip

    @property
    def buffered(self) -> bool:
        return not self.transparent and self.receive == "buffer"

    @property
    def access_mode(self) -> int:
        if self.transparent:
            return 2
        return 0 if self.receive == "buffer" else 1

    def payload_rules(self) -> tuple[PayloadRule, ...]:
        return (
            PayloadRule(re.compile(r"\+QIRD: (?P<n>\d+)"), pushed=False),  # buffer access: AT+QIRD
            PayloadRule(re.compile(r'\+QIURC: "recv",0,(?P<n>\d+)'), pushed=True),  # direct push
        )

    def classify(self, line: str) -> tuple[UrcKind, str] | None:
        if line.startswith('+QIURC: "recv"'):
            return UrcKind.DATA, line
        if line.startswith(('+QIURC: "closed"', '+QIURC: "pdpdeact"')) or line == "NO CARRIER":
            return UrcKind.CLOSED, line
        return super().classify(line)

    async def activate(self, apn: str, user: str | None, password: str | None) -> None:
        e, t = self.engine, self.t
        auth = 3 if user else 0  # 0 none, 3 PAP or CHAP
        creds = f"{_quoted(apn)},{_quoted(user or '')},{_quoted(password or '')},{auth}"
        try:
            await self.cmd(f"AT+QICSGP=1,1,{creds}", show=f"AT+QICSGP=1,1,{_quoted(apn)},...")  # 1 = IPv4
            state = await self.cmd("AT+QIACT?", prefix="+QIACT:")
            if not any(self._ACTIVE.fullmatch(line) for line in state.lines):
                await self.cmd("AT+QIACT=1", timeout=t.activate)
        except ModemError as exc:
            raise _pdp_failed(e, apn, exc) from exc

    async def open(self, host: str, port: int) -> None:
        e, t = self.engine, self.t
        # A socket left "closing" by an earlier session makes QIOPEN fail with 563.
        await _best_effort(e, "AT+QICLOSE=0", self.cmd("AT+QICLOSE=0", timeout=t.close))
        command = f'AT+QIOPEN=1,0,"TCP",{_quoted(host)},{port},0,{self.access_mode}'
        if self.transparent:
            await self._open_transparent(command, host, port)
        else:
            await self._open_then_code(command, self._QIOPEN, self.ERRORS, host, port)

    async def send(self, data: bytes) -> None:
        await self._send_until_send_ok(f"AT+QISEND=0,{len(data)}", data)

    async def fetch(self) -> bytes:
        reply = await self.cmd("AT+QIRD=0,1500", check=False)
        return reply.payload or b""

    async def close(self) -> None:
        e, t = self.engine, self.t
        await _best_effort(e, "AT+QICLOSE=0", self.cmd("AT+QICLOSE=0", timeout=t.close))
        await _best_effort(e, "AT+QIDEACT=1", self.cmd("AT+QIDEACT=1", timeout=t.deactivate))


COMMAND_SETS: tuple[type[CommandSet], ...] = (Sim800, Sim7600, QuectelM26, QuectelEc2x)


def command_set_for(identification: str) -> type[CommandSet] | None:
    """The command set whose model names appear in ATI/AT+CGMM text, if any."""
    text = identification.upper()
    for family in COMMAND_SETS:
        if any(model in text for model in family.models):
            return family
    return None


# -- the stream -------------------------------------------------------------------------


class ModemStream:
    """A :class:`~meterhub_gprs.stream.ByteStream` through a modem's TCP connection."""

    def __init__(self, engine: AtEngine, commands: CommandSet, link: Link, *, peer: str) -> None:
        self.engine = engine
        self.commands = commands
        self.peer = peer
        self._link = link
        self._rx = bytearray()
        self._wake = asyncio.Event()
        self._lost: ConnectionLost | None = None
        self._closed = False
        self._fetcher: asyncio.Task[None] | None = None
        self._fetch_again = False
        self._watch = DropWatch(commands.t.drop_silence) if commands.transparent else None
        engine.on_urc = self._on_urc
        engine.on_data = self._on_data
        engine.on_tick = self._on_tick
        engine.on_failure = self._on_failure

    def __repr__(self) -> str:
        state = "closed" if self._closed else "lost" if self._lost else "open"
        return f"<ModemStream {self.commands.name} {self.commands.mode} to {self.peer} {state}>"

    @property
    def lost(self) -> ConnectionLost | None:
        return self._lost

    # -- events from the engine -------------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        if data:
            self._rx += data
            self._wake.set()

    def _lose(self, why: str) -> None:
        if self._lost is None:
            self._lost = ConnectionLost(f"{self.engine.name}: connection to {self.peer} lost: {why}")
            log.info("%s", self._lost)
        self._wake.set()

    def _on_data(self, data: bytes) -> None:
        if self._watch is not None:
            if self._lost is not None:
                return  # the modem is back in command mode: not payload
            data = self._watch.feed(data, asyncio.get_running_loop().time())
        self._deliver(data)

    def _on_tick(self, now: float) -> None:
        if self._watch is None or self._lost is not None:
            return
        data, report = self._watch.poll(now)
        self._deliver(data)
        if report is not None:
            self.engine.reader.set_raw(False)  # the modem is in command mode now
            self._lose(f"the modem reported {report}")

    def _on_failure(self, exc: BaseException) -> None:
        self._lose(f"the serial port failed ({exc})")

    def _on_urc(self, line: str) -> None:
        kind = self.commands.classify(line)
        if kind is None:
            log.info("%s: skipped an unexpected line from the modem: %r", self.engine.name, line)
            return
        what, detail = kind
        if what is UrcKind.DATA:
            if self.commands.buffered:
                self._fetch()
            else:
                log.info("%s: a data report in a mode that pushes data, skipped: %r", self.engine.name, line)
        elif what is UrcKind.CLOSED:
            if self.commands.buffered and self._lost is None:
                self._fetch(then_lose=line)  # what the modem still holds arrived before the drop
            else:
                self._lose(f"the modem reported {line}")
        elif what is UrcKind.REGISTRATION:
            stat = int(detail)
            if stat not in REGISTERED:
                self._lose(f"network registration lost ({line}: {REGISTRATION_STATES.get(stat, 'unknown')})")
        else:
            log.debug("%s: %s", self.engine.name, line)

    def _fetch(self, then_lose: str | None = None) -> None:
        """Read the modem's buffer until it is empty (buffered receive)."""
        if self._closed:
            return
        if self._fetcher is not None and not self._fetcher.done():
            self._fetch_again = True
            if then_lose is not None:
                self._fetcher.add_done_callback(lambda _: self._lose(f"the modem reported {then_lose}"))
            return
        self._fetcher = asyncio.get_running_loop().create_task(self._fetch_loop(then_lose))

    async def _fetch_loop(self, then_lose: str | None) -> None:
        try:
            while True:
                self._fetch_again = False
                data = await self.commands.fetch()
                self._deliver(data)
                if not data and not self._fetch_again:
                    break
        except (ModemError, LinkError) as exc:
            if then_lose is None:
                self._lose(f"reading the modem's buffer failed ({exc})")
        finally:
            if then_lose is not None:
                self._lose(f"the modem reported {then_lose}")

    # -- ByteStream -------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise ConnectionLost(f"{self.engine.name}: connection to {self.peer} is closed")
        if self._lost is not None:
            raise self._lost

    async def send(self, data: bytes) -> None:
        self._check()
        if not data:
            return
        if self._watch is not None:
            await self._verdict()
            self._check()
            await self._guarded(self.engine.write(data))
            return
        step = self.commands.max_chunk
        for start in range(0, len(data), step):
            self._check()
            await self._guarded(self.commands.send(bytes(data[start : start + step])))

    async def _verdict(self) -> None:
        """While what arrived last may be the modem's drop report, wait for the verdict
        (at most the drop silence and a read slice): a frame written into a modem that
        fell back to command mode would be read as AT commands."""
        assert self._watch is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._watch.silence + 2 * READ_SLICE_S
        while self._watch.held and self._lost is None and loop.time() < deadline:
            await asyncio.sleep(READ_SLICE_S)

    async def _guarded(self, coro: Any) -> None:
        """Run a send; a modem that refuses it or a port that fails ends the stream (a
        loss reported meanwhile, say CLOSED before SEND FAIL, is the one raised)."""
        try:
            await coro
        except LinkError as exc:  # ModemError (refused, no answer) is a LinkError
            self._lose(f"sending failed ({exc})")
            assert self._lost is not None
            raise self._lost from exc

    async def receive(self, timeout: float) -> bytes:
        if self._closed:
            raise ConnectionLost(f"{self.engine.name}: connection to {self.peer} is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            if self._rx:
                data = bytes(self._rx)
                self._rx.clear()
                return data
            if self._lost is not None:
                raise self._lost
            remaining = deadline - loop.time()
            if remaining <= 0:
                return b""
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        try:
            if self._fetcher is not None:
                self._fetcher.cancel()
                await asyncio.wait([self._fetcher])
            if self.engine.failure is None:
                if self.commands.transparent and self._lost is None and self.engine.reader.raw:
                    await self._escape()
                self.engine.reader.set_raw(False)
                await self.commands.close()
        finally:
            await self.engine.stop()
            await self._link.close()

    async def _escape(self) -> None:
        """Back to command mode with +++ between guard times (V.25ter; the manuals'
        sequence: silence, "+++" within the guard time, silence, then OK)."""
        engine = self.engine
        loop = asyncio.get_running_loop()
        guard = self.commands.t.escape_guard * GUARD_MARGIN
        async with engine.lock:
            await asyncio.sleep(max(0.0, engine.last_tx + guard - loop.time()))
            await engine.write(ESCAPE)
            engine.reader.set_raw(False)  # the OK comes as a line; payload meanwhile is junk
        try:
            await engine.expect(_ok("OK"), guard + self.commands.t.command)
        except (ModemError, LinkError) as exc:
            log.info("%s: leaving transparent mode: %s", engine.name, exc)


# -- the connector ----------------------------------------------------------------------


class ModemConnector:
    """Brings a cellular modem up on a serial port and connects to the master station.

    ``url``: any pyserial URL of the modem's AT port. ``server``: ``(host, port)`` of the
    master station. ``mode``: ``"command"`` (length-delimited sends and receives, binary
    safe, URCs at any time) or ``"transparent"`` (the port carries the payload; drops
    are seen as explained in the module docstring). ``receive``: for modems that offer
    both (EC20/EC25), received data kept in the modem and read with AT+QIRD
    (``"buffer"``) or pushed in +QIURC reports (``"push"``). ``model``: a model name to
    use instead of the one the modem reports. ``metrics(name, value)`` gets
    ``signal_dbm`` and ``csq`` at each connect.
    """

    def __init__(
        self,
        url: str,
        *,
        apn: str,
        server: tuple[str, int],
        baudrate: int = DEFAULT_BAUDRATE,
        apn_user: str | None = None,
        apn_password: str | None = None,
        pin: str | None = None,
        metrics: Callable[[str, float], None] | None = None,
        mode: str = "command",
        receive: str = "buffer",
        model: str | None = None,
        timeouts: ModemTimeouts | None = None,
        name: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if receive not in RECEIVE_MODES:
            raise ValueError(f"receive must be one of {', '.join(RECEIVE_MODES)}, not {receive!r}")
        host, port = server
        if not host or isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"server must be (host, port 1..65535), not {server!r}")
        _quoted(host)
        _quoted(apn)
        for value in (apn_user, apn_password):
            if value is not None:
                _quoted(value)
        if pin is not None and not re.fullmatch(r"\d{4,8}", pin):
            raise ValueError("pin must be 4 to 8 digits")
        if model is not None and command_set_for(model) is None:
            raise ValueError(f"unknown modem model {model!r}; supported: {supported_models()}")
        self.url = url
        self.apn = apn
        self.server = (host, port)
        self.baudrate = baudrate
        self.apn_user = apn_user
        self.apn_password = apn_password
        self.pin = pin
        self.metrics = metrics
        self.mode = mode
        self.receive = receive
        self.model = model
        self.timeouts = timeouts or ModemTimeouts()
        self.name = name or url
        self.identified: str | None = None  #: the model found at the last connect
        self._stray_at = 0.0  # loop time of the last OK/ERROR no command was waiting for

    def __repr__(self) -> str:
        return f"<ModemConnector {self.describe()}>"

    def describe(self) -> str:
        what = f"modem {self.identified}" if self.identified else "modem"
        host, port = self.server
        return f"{what} on {self.url} ({self.mode} mode, APN {self.apn!r}) to {host}:{port}"

    async def connect(self) -> ModemStream:
        link = SerialLink(self.name, self.url, SerialSettings(self.baudrate, **MODEM_FORMAT))
        await link.open()
        engine = AtEngine(link, name=self.name)
        engine.on_urc = self._bring_up_urc
        try:
            await engine.start()
            commands = await self._bring_up(engine)
            stream = ModemStream(engine, commands, link, peer=f"{self.server[0]}:{self.server[1]}")
            await commands.open(*self.server)
            log.info("%s: connected to %s:%s", self.name, *self.server)
            return stream
        except BaseException:
            await engine.stop()
            await link.close()
            raise

    def _bring_up_urc(self, line: str) -> None:
        if line in ("OK", "ERROR"):
            self._stray_at = asyncio.get_running_loop().time()  # a late answer to an AT
        log.debug("%s: while bringing the modem up: %r", self.name, line)

    async def _bring_up(self, engine: AtEngine) -> CommandSet:
        t = self.timeouts
        await self._sync(engine)
        await engine.command("ATE0", timeout=t.command)
        await engine.command("AT+CMEE=2", timeout=t.command, check=False)  # errors as text
        family = await self._identify(engine)
        commands = family(engine, mode=self.mode, receive=self.receive, timeouts=t)
        engine.is_urc = lambda line: commands.classify(line) is not None
        engine.reader.rules = commands.payload_rules()
        engine.reader.inline = commands.inline_rule()
        await self._check_sim(engine)
        await self._signal(engine)
        await self._register(engine, commands)
        await self._attach(engine)
        await commands.activate(self.apn, self.apn_user, self.apn_password)
        return commands

    async def _sync(self, engine: AtEngine) -> None:
        """AT until OK: an autobauding modem learns the speed from the first ATs, a modem
        left in data mode by an earlier session hears +++ half-way through, and one left
        waiting for the data of a fixed-length send (the earlier process was killed after
        the prompt) gets filler bytes to complete it three quarters through: NULs, which
        the master's frame search skips as noise, then ESC, which cancels an open SIMCom
        send instead."""
        t = self.timeouts
        for attempt in range(t.sync_attempts):
            if attempt == t.sync_attempts // 2:
                await asyncio.sleep(t.escape_guard * GUARD_MARGIN)
                await engine.write(ESCAPE)
                await asyncio.sleep(t.escape_guard * GUARD_MARGIN)
            elif attempt == t.sync_attempts * 3 // 4:
                await engine.write(bytes(OPEN_SEND_FILLER) + b"\x1b")
            try:
                await engine.command("AT", timeout=t.sync_interval)
            except AtError:
                continue  # junk before AT in the modem's line buffer: it talks, try again
            except ModemTimeout:
                continue
            await self._settle(t.sync_interval * (attempt + 1))
            return
        raise ModemTimeout(
            f"{self.name}: no answer to AT after {t.sync_attempts} tries at {self.baudrate} Bd: "
            "check the modem's power, the wiring and the baud rate"
        )

    async def _settle(self, longest: float) -> None:
        """Let the answers to earlier ATs arrive before the next command: one may have
        got an earlier AT's OK, and a slow modem answers the rest later. Waits for two
        sync intervals without a stray OK or ERROR (the ATs went out one interval apart),
        at most ``longest`` (the time the ATs took) more."""
        loop = asyncio.get_running_loop()
        quiet = 2 * self.timeouts.sync_interval
        deadline = loop.time() + longest + quiet
        while True:
            wake = max(self._stray_at, loop.time()) + quiet
            if wake >= deadline:
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                return
            await asyncio.sleep(wake - loop.time())
            if loop.time() - self._stray_at >= quiet:
                return

    async def _identify(self, engine: AtEngine) -> type[CommandSet]:
        t = self.timeouts
        texts = []
        for command in ("ATI", "AT+CGMM"):
            reply = await engine.command(command, timeout=t.command, info=True, check=False)
            texts.extend(reply.lines)
        identification = " / ".join(texts)
        family = command_set_for(self.model or identification)
        if family is None:
            raise ModemError(
                f"{self.name}: unsupported modem {identification or '(no identification)'!r}; "
                f"supported: {supported_models()} (set model= to force one)"
            )
        revision = await engine.command("AT+GMR", timeout=t.command, info=True, check=False)
        self.identified = family.name
        log.info("%s: %s (%s) as %s", self.name, identification, " ".join(revision.lines), family.name)
        return family

    async def _check_sim(self, engine: AtEngine) -> None:
        t = self.timeouts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t.sim_ready
        pin_sent = False
        while True:
            reply = await engine.command("AT+CPIN?", timeout=t.command, prefix="+CPIN:", check=False)
            state = reply.lines[-1].partition(":")[2].strip() if reply.lines else ""
            error = _CME.fullmatch(reply.final)
            reason = (error[1] if error else state).strip()
            if state == "READY":
                return
            if "NOT INSERTED" in reason.upper() or reason == "10":
                raise SimError(f"{self.name}: no SIM card in the modem ({reply.lines[-1] if state else reply.final})")
            if state == "SIM PIN" and not pin_sent:
                if self.pin is None:
                    raise SimError(f"{self.name}: the SIM needs its PIN (+CPIN: SIM PIN): set the modem's pin")
                try:
                    await engine.command(f'AT+CPIN="{self.pin}"', timeout=t.command, show="AT+CPIN=<pin>")
                except AtError as exc:
                    raise SimError(
                        f"{self.name}: the SIM refused the PIN ({exc.final}): check the pin setting "
                        "(after three wrong PINs the SIM needs its PUK)"
                    ) from exc
                pin_sent = True
            elif state in ("SIM PUK", "SIM PIN2", "SIM PUK2", "PH-SIM PIN"):
                raise SimError(f"{self.name}: the SIM is locked ({state}): unlock it in a phone")
            if loop.time() >= deadline:
                raise SimError(
                    f"{self.name}: the SIM is not ready after {t.sim_ready:g} s "
                    f"({reply.lines[-1] if reply.lines else reply.final})"
                )
            await asyncio.sleep(t.registration_poll)

    async def _signal(self, engine: AtEngine) -> None:
        reply = await engine.command("AT+CSQ", timeout=self.timeouts.command, prefix="+CSQ:", check=False)
        match = re.fullmatch(r"\+CSQ:\s*(\d+),\s*(\d+)", reply.lines[-1]) if reply.lines else None
        if match is None:
            log.warning("%s: no signal quality from AT+CSQ (%s)", self.name, reply.final)
            return
        rssi = int(match[1])
        dbm = csq_to_dbm(rssi)
        log.info("%s: signal %s (+CSQ %d)", self.name, "unknown" if dbm is None else f"{dbm} dBm", rssi)
        self._metric("csq", rssi)
        if dbm is not None:
            self._metric("signal_dbm", dbm)

    def _metric(self, name: str, value: float) -> None:
        if self.metrics is None:
            return
        try:
            self.metrics(name, value)
        except Exception:  # a broken metrics sink must not stop the uplink; say so loudly
            log.exception("%s: the metrics callback failed on %s=%s", self.name, name, value)

    async def _register(self, engine: AtEngine, commands: CommandSet) -> None:
        t = self.timeouts
        queries = ["CGREG", "CEREG"] if commands.lte else ["CGREG"]
        # URC mode n=1: "+CxREG: <stat>" on every change, so a lost registration is seen.
        for name in ["CREG", *queries]:
            await engine.command(f"AT+{name}=1", timeout=t.command, check=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t.registration
        states: list[int] = []
        while True:
            states = []
            for name in queries:
                reply = await engine.command(
                    f"AT+{name}?", timeout=t.command, prefix=f"+{name}:", accept=lambda line: "," in line, check=False
                )
                match = re.fullmatch(rf"\+{name}:\s*\d+,\s*(\d+).*", reply.lines[-1]) if reply.lines else None
                if match:
                    states.append(int(match[1]))
            if any(stat in REGISTERED for stat in states):
                return
            if loop.time() >= deadline:
                break
            await asyncio.sleep(t.registration_poll)
        worst = 3 if 3 in states else 2 if 2 in states else states[0] if states else 4
        hint = {
            3: "the network refused the SIM: check its subscription for data",
            2: "check the antenna and the coverage",
            0: "the modem is not even searching: check the SIM's subscription and the antenna",
        }.get(worst, "check the antenna, the coverage and the SIM")
        raise NotRegistered(
            f"{self.name}: not registered on the network after {t.registration:g} s "
            f"({REGISTRATION_STATES.get(worst, 'unknown')}): {hint}"
        )

    async def _attach(self, engine: AtEngine) -> None:
        t = self.timeouts
        reply = await engine.command("AT+CGATT?", timeout=t.command, prefix="+CGATT:", check=False)
        if reply.lines and reply.lines[-1].replace(" ", "") == "+CGATT:1":
            return
        try:
            await engine.command("AT+CGATT=1", timeout=t.attach)
        except AtError as exc:
            raise ModemError(f"{self.name}: GPRS attach refused ({exc.final}): check the SIM's data subscription") from exc


def supported_models() -> str:
    return ", ".join(model for family in COMMAND_SETS for model in family.models)
