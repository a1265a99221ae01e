"""A Q/GDW 1376.1 master station over TCP: the sessions with the terminals.

Concentrators ("terminals") connect to it, log in, send heartbeats and active reports;
it confirms them, keeps readings once, and asks connected terminals for data with
:meth:`MasterStation.request`. Frames are found and decoded with the core codec
(:mod:`meterhub.protocols.gdw1376_1` and its data module); this module only runs the
sessions. Alone it keeps what it receives in memory (a test and demo tool: ``meterhub
gprs master``); the head-end (:mod:`meterhub.headend.server`) stores it.

Frames from the network are never trusted (the limits are constructor arguments, with
safe defaults): a connection must log in (AFN 02 F1, from an allowed terminal) within
``login_s`` and frames before its login are ignored; one that brings no valid frame for
``idle_periods`` heartbeat periods is closed (noise and half frames do not keep it open),
and so is one that takes nothing sent to it for as long (its answers pile up unread);
one that sends more than ``max_damaged`` damaged frames, or frames faster than
``max_frames_s`` (with a burst of ``burst``), is dropped; past ``max_connections`` new
connections are closed at once; a frame's length field is bounded by ``max_user_data``,
and so is what is held of a half frame. A login for a terminal that is online on another
connection is refused while that connection brought a frame within the last heartbeat
period, and takes it over after (a terminal coming back after its old connection died
silently).

Decisions (README §3, gdw1376-details.md; [U] where no source here settles it):

* Login, logout and heartbeat (AFN 02, C = C9h) are answered AFN 00 F1 with C = 0Bh
  (PRM = 0, link status), SEQ = 6xh: FIR FIN, RSEQ = the request's PSEQ [V vector].
  The answer echoes the terminal's MSA (0 on frames a terminal starts) and never the
  heartbeat's clock (details §2.6).
* An active report (AFN 0C/0D/0E, PRM = 1) with CON = 1 is answered AFN 00 F1 with
  function 0 (confirm, C = 00h), RSEQ = its PSEQ; one whose items cannot be decoded is
  answered AFN 00 F2 (denied). A report sent again is confirmed again, stored once.
* Requests carry a non-zero MSA (``msa``, default 1): the terminal echoes it, so it is
  part of what matches an answer to its request, with the address, AFN and RSEQ.
* PSEQ is the low nibble of a per-terminal frame counter (README §3.4). The first frame
  of an answer has RSEQ = PSEQ; in a multi-frame answer (FIR ... FIN) each further frame
  is taken with RSEQ = PSEQ + its index mod 16 (the standard's text as recalled [U]) or
  RSEQ = PSEQ again (what simpler terminals do). A single answer need not set FIR
  (details §2.7). One request at a time is outstanding per terminal.
* Function codes of requests follow the codec's notes: 1 for AFN 01, 10 for AFN 04, 05,
  06 and 0F, 11 for the others. FCV = 1 only for functions 10 and 11 (IEC 60870-5-2
  heritage [U]), and only when ``frame_count`` is on; FCB then alternates per request to
  a terminal. Off by default: the captured masters send FCV = 0.
* PW (16 bytes, downlink AFN 01, 04, 05, 06, 0F, 10) is all zero unless given: a master
  that runs no authentication sends zeros (details §2.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import attrs

from ..errors import (
    FrameError,
    LinkError,
    MeterError,
    MeterhubError,
    MeterTimeout,
)
from ..protocols import gdw1376_1_data as data
from ..protocols.gdw1376_1 import (
    MAX_USER_DATA,
    MIN_USER_DATA,
    PROTOCOL_2013,
    PW_SIZE,
    SEQ_MASK,
    Afn,
    DataUnit,
    Direction,
    Frame,
    PrimaryFunction,
    SecondaryFunction,
    StreamDecoder,
    carries_pw,
    encode,
    pack_units,
)

log = logging.getLogger(__name__)

TerminalId = tuple[str, int]  #: (A1 area code as printed, A2 terminal address)

#: Largest single read from a connection (a frame holds at most 16383 bytes of user data).
MAX_READ = 65536

#: The heartbeat period a terminal is assumed to use when none is given (AFN 04 F1 sets it
#: in minutes; 15 min is a guess [U]) and how many silent periods end a connection.
DEFAULT_HEARTBEAT_S = 15 * 60.0
IDLE_PERIODS = 3

#: How long a request waits for its answer: a GPRS round trip takes a few seconds, and a
#: terminal may read a meter (about 1 s per DL/T 645 exchange at 2400 bit/s) before it
#: answers.
DEFAULT_ANSWER_S = 30.0

#: How long a connection being closed may take to send what is left for it; then it is cut.
CLOSE_S = 1.0

#: The limits on what the network may do (see the module docstring).
DEFAULT_LOGIN_S = 30.0
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_MAX_DAMAGED = 20
DEFAULT_MAX_FRAMES_S = 20.0
DEFAULT_BURST = 100

#: Active reports the master stores: class 1, 2 and 3 data.
REPORT_AFNS = frozenset({Afn.CLASS1, Afn.CLASS2, Afn.CLASS3})

#: Request function codes by AFN (the codec's notes on PrimaryFunction).
_SEND_AFNS = frozenset({Afn.SET, Afn.CONTROL, Afn.AUTHENTICATE, Afn.FILE})

#: Primary functions whose frames count with FCB when FCV = 1 [U].
_COUNTED = frozenset({PrimaryFunction.USER_DATA, PrimaryFunction.REQUEST_CLASS1, PrimaryFunction.REQUEST_CLASS2})

#: AFN 0A F10 serials :func:`serve` asks for when it learns a terminal's meters.
ARCHIVE_QUERY_SPAN = 32


class RequestDenied(MeterError):
    """The terminal answered a request with AFN 00 F2 (all denied) or an F3 that denies
    some data unit; ``results`` holds the F3 results, if any, and ``items`` the items of
    the answer's other frames (a multi-frame answer may deny only its last units)."""

    def __init__(self, message: str, *, results: tuple[data.UnitResult, ...] = (), items: tuple[data.Item, ...] = ()) -> None:
        super().__init__(message, reason="denied")
        self.results = results
        self.items = items


class RequestTimeout(MeterTimeout):
    """The terminal did not answer a request (completely) in time."""


class TerminalOffline(LinkError):
    """The terminal is not connected, or its connection went away during a request."""


def terminal_name(terminal: TerminalId) -> str:
    """The vendors' way of printing a terminal: A1 then A2 in hex, "0200" + 1234h = "02001234"."""
    return f"{terminal[0]}{terminal[1]:04X}"


_TERMINAL = re.compile(r"(?P<area>[0-9A-Fa-f]{4})(?:(?P<hex>[0-9A-Fa-f]{4})|/(?P<dec>\d{1,5}))")


def parse_terminal(value: str | TerminalId) -> TerminalId:
    """A terminal from "02001234" (A1 A2 in hex) or "0200/4660" (A2 in decimal), or a tuple."""
    if isinstance(value, tuple):
        area, address = value
        return (str(area).upper(), int(address))
    match = _TERMINAL.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"a terminal is A1 A2 as 8 hex digits ('02001234') or 'AREA/ADDRESS' ('0200/4660'), got {value!r}")
    address = int(match["hex"], 16) if match["hex"] else int(match["dec"])
    if not 1 <= address <= 0xFFFF:
        raise ValueError(f"terminal address A2 is 1..65535, got {address} in {value!r}")
    return (match["area"].upper(), address)


def request_function(afn: int) -> PrimaryFunction:
    """The function code of a master's request of ``afn``."""
    if afn == Afn.RESET:
        return PrimaryFunction.RESET
    return PrimaryFunction.REQUEST_CLASS1 if afn in _SEND_AFNS else PrimaryFunction.REQUEST_CLASS2


def describe(afn: int, units: Iterable[DataUnit]) -> str:
    """"AFN 0C F129 p1" for messages."""
    parts = []
    for u in units:
        points = "all points" if u.points is None else ",".join(f"p{p}" for p in u.points)
        parts.append(f"{'+'.join(f'F{f}' for f in u.functions)} {points}")
    return f"AFN {afn:02X} " + "; ".join(parts)


@attrs.frozen
class Reading:
    """One item of an active report, as stored: who sent it, the AFN and the item."""

    terminal: TerminalId
    afn: int
    point: int | None
    fn: int
    value: Any


@attrs.define
class TerminalState:
    """What the master knows of a terminal: whether it is connected and logged in, when
    it logged in and last sent a heartbeat (event-loop time), and from where."""

    terminal: TerminalId
    peer: str = ""
    online: bool = False
    logged_in_at: float | None = None
    last_heartbeat: float | None = None
    heartbeats: int = 0


def _when(value: Any) -> Any:
    """The read time that tells a stored reading from a new one: the item's read time,
    with the day or month of frozen data; the whole value for items without one (events)."""
    if hasattr(value, "read_time"):
        return value.read_time
    reading = getattr(value, "reading", None)
    if reading is not None:
        tag = attrs.astuple(value, recurse=False)[0]
        return (tag, reading.read_time)
    return value


@attrs.define(eq=False)
class _Pending:
    """The request a terminal's next answer frames belong to."""

    afn: int
    pseq: int
    what: str
    done: asyncio.Future[list[Frame]]
    frames: list[Frame] = attrs.Factory(list)

    def accepts(self, seq: int) -> bool:
        if not self.frames:
            return seq == self.pseq
        return seq in (self.pseq, (self.pseq + len(self.frames)) & SEQ_MASK)


class _Session:
    """One TCP connection from a terminal."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, now: float,
                 max_user_data: int = MAX_USER_DATA, burst: int = DEFAULT_BURST,
                 send_s: float = DEFAULT_HEARTBEAT_S * IDLE_PERIODS) -> None:
        self.reader = reader
        self.writer = writer
        self.send_s = send_s
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.decoder = StreamDecoder(max_user_data)
        self.terminal: TerminalId | None = None
        self.opened = now
        self.last_frame = now
        self.damaged = 0
        self.tokens = float(burst)  # the flood limit's bucket
        self.tokens_at = now
        self.pfc = 0  # frame counter; PSEQ is its low nibble
        self.fcb = False
        self.lock = asyncio.Lock()  # one outstanding request
        self.pending: _Pending | None = None
        self.closed = False

    async def send(self, frame: Frame) -> None:
        """Write ``frame``. A peer that does not take what is sent within ``send_s`` (it
        reads nothing: the buffers fill and the write waits) is cut off with a
        ConnectionError, as one that sends nothing is: a wait without end would keep the
        connection open past every limit, since none runs while it waits."""
        self.writer.write(encode(frame))
        try:
            await asyncio.wait_for(self.writer.drain(), self.send_s)
        except TimeoutError:
            self.writer.transport.abort()
            raise ConnectionError(f"{self.peer} took nothing sent to it for {self.send_s:g} s") from None


def _reply(request: Frame, function: int, fn: int, master: int | None = None) -> Frame:
    """An AFN 00 answer (F1 confirm, F2 deny) to a frame the terminal started."""
    return Frame(
        direction=Direction.DOWN,
        prm=False,
        function=function,
        area=request.area,
        terminal=request.terminal,
        afn=Afn.CONFIRM,
        payload=pack_units([DataUnit((0,), (fn,))]),
        master=request.master if master is None else master,
        seq=request.seq,
    )


class MasterStation:
    """An asyncio master station: accepts terminals, confirms their link frames and
    reports, stores readings once, and sends requests (see the module for the rules).

    ``allow`` (a set of (area, address)) limits who may talk to it: others are logged
    and disconnected without a confirm. A connection that brings no valid frame for
    ``idle_periods`` × ``heartbeat_s`` is closed (noise does not keep it open).
    Requests to one terminal are sent one after another; ``answer_s`` bounds the wait
    for each answer once its request is sent.
    """

    def __init__(
        self,
        *,
        allow: Iterable[TerminalId | str] | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        idle_periods: float = IDLE_PERIODS,
        answer_s: float = DEFAULT_ANSWER_S,
        msa: int = 1,
        frame_count: bool = False,
        confirm_delay: float = 0.0,
        login_s: float = DEFAULT_LOGIN_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_damaged: int = DEFAULT_MAX_DAMAGED,
        max_frames_s: float = DEFAULT_MAX_FRAMES_S,
        burst: int = DEFAULT_BURST,
        max_user_data: int = MAX_USER_DATA,
    ) -> None:
        if not 1 <= msa <= 127:
            raise ValueError(f"a master's requests carry MSA 1..127, got {msa}")
        for name, value in (("login_s", login_s), ("max_connections", max_connections),
                            ("max_damaged", max_damaged), ("max_frames_s", max_frames_s), ("burst", burst),
                            ("heartbeat_s", heartbeat_s), ("idle_periods", idle_periods), ("answer_s", answer_s)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        # checked here, not first in each connection's decoder: there it would fail every connection
        if not MIN_USER_DATA <= max_user_data <= MAX_USER_DATA:
            raise ValueError(f"max_user_data must be {MIN_USER_DATA}..{MAX_USER_DATA} bytes, got {max_user_data!r}")
        self.login_s = login_s
        self.max_connections = max_connections
        self.max_damaged = max_damaged
        self.max_frames_s = max_frames_s
        self.burst = burst
        self.max_user_data = max_user_data
        self.refused_connections = 0  #: connections closed at once: max_connections were open
        self.allow = None if allow is None else frozenset(parse_terminal(t) for t in allow)
        self.heartbeat_s = heartbeat_s
        self.idle_s = heartbeat_s * idle_periods
        self.answer_s = answer_s
        self.msa = msa
        self.frame_count = frame_count
        #: Seconds an active report's confirm is held back after its items are stored (tests:
        #: a terminal killed or cut off in that window must send the report again). Settable.
        self.confirm_delay = confirm_delay
        self.port = 0
        self.terminals: dict[TerminalId, TerminalState] = {}
        self.received: list[Reading] = []  #: stored report items, in arrival order, no duplicates
        self.duplicates = 0  #: report items received again and not stored
        self.skipped_frames = 0  #: damaged frames (bad checksum) seen
        self._keys: set[tuple[Any, ...]] = set()
        self._sessions: dict[TerminalId, _Session] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()  #: handlers recording the end of their connection
        self._server: asyncio.AbstractServer | None = None
        self._changed: asyncio.Condition | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> MasterStation:
        """Listen on ``host``:``port`` (0: a free port, then in ``port``)."""
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("1376.1 master listening on %s:%d", host, self.port)
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers - self._closing):  # a closing one finishes recording its end
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (checked on every change of state); False on timeout."""
        assert self._changed is not None, "start() the master first"
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(predicate)
        except TimeoutError:
            return predicate()
        return True

    @property
    def online(self) -> list[TerminalId]:
        """The terminals connected and logged in (or heart-beating) now."""
        return [t for t, state in self.terminals.items() if state.online]

    # --- connections ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._handlers) >= self.max_connections:
            self.refused_connections += 1
            if self.refused_connections % 100 == 1:  # a flood of connections logs now and then, not each
                log.warning("%d connections open (max_connections): new ones are closed at once (%d so far)",
                            len(self._handlers), self.refused_connections)
            writer.close()
            return
        self._handlers.add(task)
        session = _Session(reader, writer, self._now(), self.max_user_data, self.burst, send_s=self.idle_s)
        log.info("connection from %s", session.peer)
        why = "closed by the terminal"
        try:
            why = await self._run(session)
        except asyncio.CancelledError:
            why = "master stopping"
        except (ConnectionError, OSError) as exc:
            why = f"connection failed: {exc}"
        finally:
            # stop() waits for the handlers, cancelling those not closing yet: the end of
            # the connection is recorded before the station (and the head-end's store) stops
            self._closing.add(task)
            try:
                await self._drop(session, why)
            finally:
                self._closing.discard(task)
                self._handlers.discard(task)

    async def _run(self, session: _Session) -> str:
        """Read and handle frames until the connection ends; returns why it ended."""
        while True:
            if session.terminal is None:
                remaining = session.opened + self.login_s - self._now()
                if remaining <= 0:
                    return f"no login within {self.login_s:g} s"
            else:
                remaining = session.last_frame + self.idle_s - self._now()
                if remaining <= 0:
                    return f"no frame for {self.idle_s:g} s"
            try:
                chunk = await asyncio.wait_for(session.reader.read(MAX_READ), remaining)
            except TimeoutError:
                continue
            if not chunk:
                return "closed by the terminal"
            for found in session.decoder.feed(chunk):
                if isinstance(found, FrameError):
                    self.skipped_frames += 1
                    session.damaged += 1
                    log.info("%s: damaged frame skipped: %s", session.peer, found)
                    if session.damaged > self.max_damaged:
                        return f"more than {self.max_damaged} damaged frames"
                    continue
                if not self._take_token(session):
                    return f"frames faster than {self.max_frames_s:g}/s"
                refusal = await self._on_frame(session, found)
                if refusal is not None:
                    return refusal

    def _take_token(self, session: _Session) -> bool:
        """The flood limit: a bucket of ``burst`` frames refilled at ``max_frames_s``."""
        now = self._now()
        session.tokens = min(float(self.burst), session.tokens + (now - session.tokens_at) * self.max_frames_s)
        session.tokens_at = now
        if session.tokens < 1:
            return False
        session.tokens -= 1
        return True

    async def _drop(self, session: _Session, why: str) -> None:
        session.closed = True
        session.writer.close()
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await asyncio.wait_for(session.writer.wait_closed(), CLOSE_S)
        if session.writer.transport.get_write_buffer_size():
            session.writer.transport.abort()  # what is left waits for a peer that takes nothing: not kept for it
        if session.pending is not None and not session.pending.done.done():
            session.pending.done.set_exception(TerminalOffline(f"connection of {session.peer} ended during {session.pending.what}: {why}"))
        name = terminal_name(session.terminal) if session.terminal else "(not logged in)"
        log.info("%s %s: connection ended: %s", session.peer, name, why)
        if session.terminal is not None and self._sessions.get(session.terminal) is session:
            del self._sessions[session.terminal]
            self.terminals[session.terminal].online = False
            try:
                await self._gone(session.terminal, session.peer)
            except Exception:  # the connection is gone whatever its record says
                log.exception("%s: recording the end of %s's connection failed", session.peer, name)
        if self._changed is not None:
            await self._notify()

    # --- frames from terminals ------------------------------------------------------------

    async def _on_frame(self, session: _Session, frame: Frame) -> str | None:
        """Handle one frame; returns a reason to close the connection, or None."""
        terminal = (frame.area, frame.terminal)
        if frame.direction is not Direction.UP:
            log.warning("%s: downlink frame from a terminal's connection ignored (AFN %02X)", session.peer, frame.afn)
            return None
        if session.terminal is None:
            if not (frame.prm and frame.afn == Afn.LINK and any(1 in u.functions for u in _units(frame))):
                log.info("%s: AFN %02X before a login ignored", session.peer, frame.afn)
                return None
            if not await self._allows(terminal):
                log.warning("%s: terminal %s is not allowed; not confirmed, disconnecting", session.peer,
                            terminal_name(terminal))
                return f"terminal {terminal_name(terminal)} not allowed"
            refusal = self._bind(session, terminal)
            if refusal is not None:
                return refusal
        elif session.terminal != terminal:
            log.warning("%s: frame from %s on the connection of %s ignored", session.peer, terminal_name(terminal), terminal_name(session.terminal))
            return None
        session.last_frame = self._now()
        if frame.prm:
            await self._on_primary(session, frame)
        else:
            self._on_answer(session, frame)
        await self._notify()
        return None

    async def _allows(self, terminal: TerminalId) -> bool:
        """Whether ``terminal`` may log in (``allow``; the head-end asks its store)."""
        return self.allow is None or terminal in self.allow

    def _bind(self, session: _Session, terminal: TerminalId) -> str | None:
        """Make ``session`` the terminal's connection; a reason to refuse it, or None."""
        old = self._sessions.get(terminal)
        if old is not None and old is not session and not old.closed:
            quiet = self._now() - old.last_frame
            if quiet < self.heartbeat_s:
                log.warning("%s: terminal %s logs in while online on %s (heard %.0f s ago); refused",
                            session.peer, terminal_name(terminal), old.peer, quiet)
                return f"terminal {terminal_name(terminal)} is online on another connection"
            log.info("%s: terminal %s connected again; closing its old connection %s (quiet for %.0f s)",
                     session.peer, terminal_name(terminal), old.peer, quiet)
            old.terminal = None  # its end no longer takes the terminal offline
            old.closed = True
            old.writer.close()
        session.terminal = terminal
        self._sessions[terminal] = session
        state = self.terminals.setdefault(terminal, TerminalState(terminal))
        state.peer = session.peer
        state.online = True
        return None

    async def _on_primary(self, session: _Session, frame: Frame) -> None:
        terminal = (frame.area, frame.terminal)
        state = self.terminals[terminal]
        name = terminal_name(terminal)
        if frame.afn == Afn.LINK:
            functions = {fn for u in _units(frame) for fn in u.functions}
            now = self._now()
            if 1 in functions:
                state.logged_in_at = now
                state.online = True
                log.info("%s: terminal %s logged in", session.peer, name)
            if 3 in functions:
                state.last_heartbeat = now
                state.heartbeats += 1
                state.online = True
                log.debug("%s: heartbeat from %s", session.peer, name)
            if 2 in functions:
                state.online = False
                log.info("%s: terminal %s logged out", session.peer, name)
            # confirmed first: the record of a login or heartbeat is the head-end's own
            # business, and the terminal's link must not wait for a store's disk
            await session.send(_reply(frame, SecondaryFunction.LINK_STATUS, 1))
            await self._seen(terminal, session.peer, login=1 in functions, heartbeat=3 in functions)
            return
        if frame.afn in REPORT_AFNS:
            try:
                found = data.items(frame)
            except FrameError as exc:
                log.warning("%s: report from %s not understood, denied: %s", session.peer, name, exc)
                if frame.con:
                    await session.send(_reply(frame, SecondaryFunction.CONFIRM, 2))
                return
            try:
                await self._store(terminal, frame.afn, found)
            except Exception:  # not stored: not confirmed, so the terminal sends it again
                log.exception("%s: report AFN %02X from %s could not be stored; not confirmed", session.peer,
                              frame.afn, name)
                return
            if frame.con:
                if self.confirm_delay > 0:
                    await self._notify()  # what was stored is visible while the confirm waits
                    await asyncio.sleep(self.confirm_delay)
                await session.send(_reply(frame, SecondaryFunction.CONFIRM, 1))
            return
        log.warning("%s: unexpected AFN %02X frame from %s%s", session.peer, frame.afn, name, ", denied" if frame.con else "")
        if frame.con:
            await session.send(_reply(frame, SecondaryFunction.CONFIRM, 2))

    async def _seen(self, terminal: TerminalId, peer: str, *, login: bool, heartbeat: bool) -> None:
        """A terminal's login or heartbeat came (the head-end records it)."""

    async def _gone(self, terminal: TerminalId, peer: str) -> None:
        """A terminal's connection ended (the head-end records it)."""

    async def _store(self, terminal: TerminalId, afn: int, found: Iterable[data.Item]) -> None:
        """Keep a report's items, each once; confirmed once this returns (it raises: not
        confirmed, the terminal sends the report again)."""
        stored = again = 0
        for item in found:
            key = (terminal, afn, item.point, item.fn, _when(item.value))
            if key in self._keys:
                again += 1
                continue
            self._keys.add(key)
            self.received.append(Reading(terminal, afn, item.point, item.fn, item.value))
            stored += 1
        self.duplicates += again
        log.info("report AFN %02X from %s: %d item(s) stored, %d already had", afn, terminal_name(terminal), stored, again)

    def _on_answer(self, session: _Session, frame: Frame) -> None:
        pending = session.pending
        if pending is None or pending.done.done():
            log.warning("%s: answer AFN %02X RSEQ %d with no request outstanding, dropped", session.peer, frame.afn, frame.seq)
            return
        if frame.master != self.msa or frame.afn not in (pending.afn, Afn.CONFIRM) or not pending.accepts(frame.seq):
            log.warning(
                "%s: answer AFN %02X RSEQ %d MSA %d does not match %s (PSEQ %d, MSA %d), dropped",
                session.peer,
                frame.afn,
                frame.seq,
                frame.master,
                pending.what,
                pending.pseq,
                self.msa,
            )
            return
        pending.frames.append(frame)
        if frame.fin or frame.afn == Afn.CONFIRM:
            pending.done.set_result(pending.frames)

    # --- requests ------------------------------------------------------------------------

    async def request(
        self,
        terminal: TerminalId | str,
        afn: int,
        units: Iterable[DataUnit],
        *,
        pw: bytes | None = None,
        timeout: float | None = None,
    ) -> tuple[data.Item, ...]:
        """Send a request of ``afn`` with ``units`` to a connected terminal and return the
        items of its answer (every frame of a multi-frame answer, in order).

        Raises :class:`TerminalOffline`, :class:`RequestTimeout`, :class:`RequestDenied`,
        or :class:`FrameError` for an answer whose items cannot be decoded."""
        terminal = parse_terminal(terminal)
        units = tuple(units)
        what = f"{describe(afn, units)} to {terminal_name(terminal)}"
        session = self._sessions.get(terminal)
        if session is None or session.closed:
            raise TerminalOffline(f"terminal {terminal_name(terminal)} is not connected; cannot send {what}")
        if carries_pw(Direction.DOWN, afn) and pw is None:
            pw = bytes(PW_SIZE[PROTOCOL_2013])  # no authentication: zeros (details §2.5)
        timeout = self.answer_s if timeout is None else timeout
        async with session.lock:
            pseq = session.pfc & SEQ_MASK
            session.pfc = (session.pfc + 1) & 0xFF
            function = request_function(afn)
            fcv = self.frame_count and function in _COUNTED
            if fcv:
                session.fcb = not session.fcb
            frame = Frame(
                direction=Direction.DOWN,
                prm=True,
                function=function,
                area=terminal[0],
                terminal=terminal[1],
                afn=afn,
                payload=pack_units(units),
                master=self.msa,
                seq=pseq,
                fcb=fcv and session.fcb,
                fcv=fcv,
                pw=pw,
            )
            pending = _Pending(afn, pseq, what, asyncio.get_running_loop().create_future())
            session.pending = pending
            try:
                await session.send(frame)
                frames = await asyncio.wait_for(asyncio.shield(pending.done), timeout)
            except TimeoutError:
                got = f"; {len(pending.frames)} frame(s) of a multi-frame answer came" if pending.frames else ""
                raise RequestTimeout(f"terminal {terminal_name(terminal)} did not answer {what} (PSEQ {pseq}) within {timeout:g} s{got}") from None
            except (ConnectionError, OSError) as exc:
                raise TerminalOffline(f"could not send {what}: {exc}") from exc
            finally:
                session.pending = None
        return _answer_items(frames, what)

    async def read_energy(self, terminal: TerminalId | str, point: int, *, timeout: float | None = None) -> data.TariffEnergy:
        """AFN 0C F129: the current forward active energy (total and tariffs) of ``point``."""
        return _one(await self.request(terminal, Afn.CLASS1, [DataUnit((point,), (129,))], timeout=timeout), 129)

    async def read_clock(self, terminal: TerminalId | str, *, timeout: float | None = None) -> data.Clock | None:
        """AFN 0C F2: the terminal's clock (None if it sent no valid time)."""
        return _one(await self.request(terminal, Afn.CLASS1, [DataUnit((0,), (2,))], timeout=timeout), 2)

    async def set_time(
        self, terminal: TerminalId | str, time: datetime, *, pw: bytes | None = None, timeout: float | None = None
    ) -> None:
        """AFN 05 F31: set the terminal's clock to ``time`` (whole seconds); raises unless confirmed."""
        unit = data.unit((0,), (31,), [data.ClockSet(data.Clock.at(time))])
        await self.request(terminal, Afn.CONTROL, [unit], pw=pw, timeout=timeout)

    async def query_archive(
        self, terminal: TerminalId | str, serials: Iterable[int], *, timeout: float | None = None
    ) -> tuple[data.MeterRecord, ...]:
        """AFN 0A F10: the meter records with these serials (those the terminal has)."""
        unit = data.unit((0,), (10,), [data.ArchiveQuery(tuple(serials))])
        found = await self.request(terminal, Afn.QUERY, [unit], timeout=timeout)
        return tuple(record for item in found if item.fn == 10 for record in item.value.records)


def _units(frame: Frame) -> tuple[DataUnit, ...]:
    try:
        return data.units(frame)
    except FrameError:
        return ()


def _answer_items(frames: list[Frame], what: str) -> tuple[data.Item, ...]:
    """The items of every answer frame; RequestDenied if an AFN 00 frame among them
    denies the request or part of it (the items that did come go with the error)."""
    given: list[data.Item] = []
    verdicts: list[data.Item] = []
    for frame in frames:
        try:
            found = data.items(frame)
        except FrameError as exc:
            raise FrameError(f"answer to {what} cannot be decoded: {exc}") from exc
        (verdicts if frame.afn == Afn.CONFIRM else given).extend(found)
    for item in verdicts:
        if item.fn == 2:
            raise RequestDenied(f"{what} denied (AFN 00 F2)", items=tuple(given))
        if item.fn == 3 and not all(r.confirmed for r in item.value.results):
            denied = [r for r in item.value.results if not r.confirmed]
            units = ", ".join(describe(item.value.afn, [DataUnit(r.points, r.functions)]) + f" error {r.error}" for r in denied)
            raise RequestDenied(f"{what} denied in part (AFN 00 F3): {units}", results=item.value.results, items=tuple(given))
    return tuple(given + verdicts)


def _one(found: tuple[data.Item, ...], fn: int) -> Any:
    values = [item.value for item in found if item.fn == fn]
    if len(values) != 1:
        raise FrameError(f"expected one F{fn} item in the answer, got {len(values)} (items {[i.fn for i in found]})")
    return values[0]


# --- command-line use -------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """("127.0.0.1", 4001) from "127.0.0.1:4001"."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 0xFFFF:
        raise ValueError(f"--listen is HOST:PORT, e.g. 127.0.0.1:4001; got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def format_energy(terminal: TerminalId, point: int, energy: data.TariffEnergy) -> str:
    """One printed line of a F129 reading."""
    total, *tariffs = energy.values
    tariff_text = " ".join(f"T{i}={v}" for i, v in enumerate(tariffs, 1))
    return f"{terminal_name(terminal)} p{point} F129 read {energy.read_time or '?'}: total {total} kWh {tariff_text}".rstrip()


async def poll_once(master: MasterStation, points: dict[TerminalId, tuple[int, ...]], out: Callable[[str], None]) -> None:
    """Ask every online terminal for F129 of each measuring point of its archive (learnt
    once with AFN 0A F10, serials 1..ARCHIVE_QUERY_SPAN) and print the energies."""
    for terminal in master.online:
        try:
            if terminal not in points:
                records = await master.query_archive(terminal, range(1, ARCHIVE_QUERY_SPAN + 1))
                points[terminal] = tuple(sorted({r.point for r in records if r.point and r.protocol}))
                out(f"{terminal_name(terminal)}: archive points {', '.join(map(str, points[terminal])) or 'none'}")
            for point in points[terminal]:
                out(format_energy(terminal, point, await master.read_energy(terminal, point)))
        except MeterhubError as exc:
            out(f"{terminal_name(terminal)}: {exc}")


async def run_master(
    listen: str,
    allow: Iterable[TerminalId | str] | None = None,
    poll_s: float | None = None,
    *,
    out: Callable[[str], None] = print,
    run_for: float | None = None,
    **options: Any,
) -> MasterStation:
    """Run a master on ``listen`` (for ``run_for`` seconds, or until cancelled), polling
    every ``poll_s`` seconds; returns the master, stopped."""
    host, port = parse_listen(listen)
    master = MasterStation(allow=allow, **options)
    await master.start(host, port)
    out(f"1376.1 master listening on {host}:{master.port}")
    points: dict[TerminalId, tuple[int, ...]] = {}
    loop = asyncio.get_running_loop()
    end = None if run_for is None else loop.time() + run_for
    try:
        while end is None or loop.time() < end:
            step = poll_s if poll_s else 3600.0
            await asyncio.sleep(step if end is None else max(0.0, min(step, end - loop.time())))
            if poll_s and (end is None or loop.time() < end):
                await poll_once(master, points, out)
    finally:
        await master.stop()
    return master


def serve(listen: str, allow: Iterable[TerminalId | str] | None = None, poll_s: float | None = None, **options: Any) -> None:
    """Run the master station until interrupted (the ``meterhub gprs master`` command):
    logs logins, heartbeats and reports, and with ``poll_s`` prints every online
    terminal's F129 energies each ``poll_s`` seconds."""
    if poll_s is not None and poll_s <= 0:
        raise ValueError(f"poll interval must be positive, got {poll_s}")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_master(listen, allow, poll_s, **options))
