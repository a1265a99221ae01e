"""Finding frames in a byte stream that holds noise, damaged frames and other traffic, sans-I/O.

Every protocol's stream decoder runs the same loop: any byte may start a frame
candidate; the candidate's header says how long it is; it is judged when its last byte
arrives (never by searching for an end byte); a bad candidate costs only its first byte,
so a real frame hidden behind a false start is still found, and a complete valid frame
is delivered even while an earlier candidate still waits for bytes. Decisions depend
only on the bytes up to a frame's end, so feeding byte by byte gives exactly what feeding
all at once gives. :class:`FrameFinder` is that loop; a protocol supplies what a frame
looks like through two callbacks:

``size(head) -> int | None``
    The total length of a frame that starts with ``head`` (at most ``lookahead`` bytes,
    the first being the candidate's first byte); ``None`` while more bytes are needed to
    tell; ``0`` when no frame can start there (a wrong start byte, an impossible header).
    Once it answers for a head it must give the same answer for any longer head (it reads
    a header, it does not guess).
``judge(body, aligned) -> frame | FrameError | None``
    The candidate's whole bytes, once they are there: the decoded frame, a
    :class:`~meterhub.errors.FrameError` instance for a damaged frame worth reporting, or
    ``None`` for noise. ``aligned`` says the candidate starts where a frame could start
    (the stream's start, or right after the previous frame). :func:`judge_by_decode`
    makes one from the codec's own ``decode``, so the stream and ``decode`` never disagree.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

from .errors import ChecksumError, FrameError

F = TypeVar("F")


def judge_by_decode(decode: Callable[[bytes], F]) -> Callable[[bytes, bool], F | FrameError | None]:
    """A ``judge`` that asks ``decode``: its frame; the ChecksumError it raises, as a
    damaged frame to report; any other FrameError (a wrong end byte, ...), as noise."""

    def judge(body: bytes, _aligned: bool) -> F | FrameError | None:
        try:
            return decode(body)
        except ChecksumError as exc:
            return exc.with_traceback(None)  # reported, not raised: no frames to keep alive
        except FrameError:
            return None

    return judge


def _search_for(starts: bytes | re.Pattern[bytes] | None) -> re.Pattern[bytes] | int | None:
    """How to look for candidate starts: one byte (``bytes.find``), a pattern, or None (every byte)."""
    if starts is None or isinstance(starts, re.Pattern):
        return starts
    values = sorted(set(starts))
    if len(values) == 1:
        return values[0]
    if not values:
        return re.compile(b"(?!)")  # nothing starts a frame
    return re.compile(b"[" + b"".join(re.escape(bytes((v,))) for v in values) + b"]")


class FrameFinder(Generic[F]):
    """The resynchronising frame search shared by the stream decoders (see the module).

    A protocol's ``StreamDecoder`` subclasses it and passes its callbacks; ``feed``,
    ``skipped`` and ``pending`` are what :class:`meterhub.api.StreamDecoder` asks for.

    ``wake_up`` is a byte that is not counted as noise between frames (DL/T 645's and
    CJ/T 188's FE preamble). ``singles`` maps single-character frames (M-Bus's E5) to a
    factory of their frame: they carry no checksum, so one is delivered only once no
    earlier candidate could still turn out to contain it, and dropped as data if a
    frame or damaged frame around it is judged.

    ``starts`` (optional) says where a frame can start, so that the search skips the
    other bytes at C speed instead of asking ``size`` about each; the result is the same.
    Either the bytes a frame can start with, or a compiled pattern that ``search`` finds
    at every position where ``size`` would not answer 0 from the bytes there (it sees
    the data up to the end of what has arrived: a pattern that looks past the first byte
    must also match where that byte has not arrived, e.g. with ``(?=[...]|\\Z)``).

    ``hold_errors`` treats a damaged frame as ``singles`` are treated: it is delivered
    only once no earlier candidate could still contain it, and dropped if a frame or
    damaged frame around it is judged. For protocols whose frame data can hold a short
    reportable header (Modbus: register values that read as an exception reply), so the
    inside of a valid frame never yields a reported error.

    How ``feed`` does it without a step per byte: the result is the one of the byte-wise
    loop the module describes, computed only at the moments where something can happen.

    * Candidates are opened only where ``starts`` allows (``bytes.find``/``re``); each is
      sized once, from as much of its header as has arrived, and sized again only when a
      later ``feed`` brings more of it. A sized candidate waits in a heap by its end.
    * Time then jumps from event to event: the end of the earliest-ending candidate, the
      arrival of a single character, the end of the data. Candidates that start before
      an event are opened first (they might end earlier); candidates are judged at their
      end in ascending start order, exactly as the byte-wise loop would.
    * Noise is counted and the buffer trimmed once per ``feed`` (and at each frame).
    * Only a held item (a single character, a held error) cares *when* a candidate that
      turned out to be no frame died; that moment is worked out, byte by byte, only for
      the few candidates in front of a held item (:meth:`_note_blockers`).
    """

    def __init__(
        self,
        size: Callable[[bytes], int | None],
        judge: Callable[[bytes, bool], F | FrameError | None],
        *,
        lookahead: int,
        wake_up: int | None = None,
        singles: Mapping[int, Callable[[], F]] | None = None,
        starts: bytes | re.Pattern[bytes] | None = None,
        hold_errors: bool = False,
    ) -> None:
        self.skipped = 0  #: noise bytes discarded so far (wake-up bytes excluded)
        self._size_of = size
        self._judge_of = judge
        self._lookahead = lookahead
        self._wake_up = wake_up
        self._singles = dict(singles or {})
        self._starts = _search_for(starts)
        self._single_chars = _search_for(bytes(self._singles)) if self._singles else None
        self._hold_errors = hold_errors
        self._buf = b""  # the bytes from _origin on that may still be needed (replaced, never grown in place)
        self._origin = 0  # stream position of _buf[0]
        self._counted = 0  # stream position up to which bytes were emitted or counted as noise
        self._frame_end = 0  # stream position just after the last frame found
        # Live candidates, start -> end (None until its length is known), in start order;
        # a candidate whose length came too late for its end is never judged (it stays).
        self._live: dict[int, int | None] = {}
        # heap of (end, start, whether to check _due_by) of the candidates to judge
        self._due: list[tuple[int, int, bool]] = []
        self._waiting: list[int] = []  # the live candidates whose length is not known yet, in start order
        # Candidates that said "no frame" from a head longer than what had arrived at the
        # time a held item needed them, start -> the stream position where they died.
        self._dying: dict[int, int] = {}
        # Items waiting for earlier candidates to die, in stream order: (position, the
        # damaged frame, or None for the single character at that position).
        self._held: list[tuple[int, FrameError | None]] = []

    @property
    def pending(self) -> int:
        """Bytes held because they may still become a frame (0 when nothing is waiting)."""
        return len(self._buf) if (self._live or self._held) else 0

    def feed(self, data: bytes) -> list[F | FrameError]:
        """Frames completed by ``data`` and FrameError instances for damaged ones, in order."""
        out: list[F | FrameError] = []
        origin = self._origin  # fixed until _trim
        first = origin + len(self._buf)
        buf = self._buf = self._buf + bytes(data)
        stop = origin + len(buf)
        if stop == first:
            return out
        if self._waiting:
            self._resize_waiting(first, stop)
        starts = self._positions(self._starts, first)
        singles = self._positions(self._single_chars, first) if self._single_chars is not None else ()
        # The next of each, stop when there is none (every moment of this feed is before stop).
        opened, next_start = 0, starts[0] if starts else stop
        arrived, next_single = 0, singles[0] if singles else stop
        due, last = self._due, stop - 1
        while True:
            # The next moment something happens: a candidate's end, a single character,
            # or the last byte; candidates starting up to then are opened first (one may
            # end earlier and become the next moment).
            now = due[0][0] - 1 if due and due[0][0] <= stop else last
            if next_single < now:
                now = next_single
            while next_start <= now:
                self._open(next_start)
                opened += 1
                next_start = starts[opened] if opened < len(starts) else stop
                if due and due[0][0] <= now:
                    now = due[0][0] - 1
            single = next_single == now
            if single:
                arrived += 1
                next_single = singles[arrived] if arrived < len(singles) else stop
            if single or self._held:
                self._at(now, single, out)
            elif due and due[0][0] == now + 1:
                self._judge(now, out)
            if now == last:
                break
        if self._dying:
            self._dying.clear()  # every candidate that was dying has died by the last byte
        self._trim(stop)
        return out

    # --- candidates -------------------------------------------------------------------

    def _positions(self, search: re.Pattern[bytes] | int | None, first: int) -> Sequence[int]:
        """The stream positions from ``first`` on where ``search`` finds a match (all
        positions if None), found at C speed."""
        origin, buf = self._origin, self._buf
        if search is None:
            return range(first, origin + len(buf))
        found = []
        if type(search) is int:
            find = buf.find
            at = find(search, first - origin)
            while at >= 0:
                found.append(at + origin)
                at = find(search, at + 1)
        else:  # one search per match, so that matches may overlap
            match = search.search(buf, first - origin)
            while match:
                found.append(match.start() + origin)
                match = search.search(buf, match.start() + 1)
        return found

    def _head(self, start: int, upto: int) -> bytes:
        """The candidate's head as the byte-wise loop saw it once ``upto`` was reached."""
        at = start - self._origin
        return self._buf[at : at + min(self._lookahead, upto - start)]

    def _open(self, start: int) -> None:
        """A new candidate at ``start``: sized from what has arrived."""
        at = start - self._origin
        head = self._buf[at : at + self._lookahead]
        size = self._size_of(head)
        if size is None:
            self._live[start] = None
            self._waiting.append(start)
        elif size != 0:
            self._sized(start, size, head)

    def _sized(self, start: int, size: int, head: bytes) -> None:
        """Record a candidate's length, which ``size`` gave from ``head``."""
        self._live[start] = start + size
        if size >= 1:  # (shorter is never judged, as in the byte-wise loop)
            # A length shorter than the head that told it is checked at its end (_due_by).
            heapq.heappush(self._due, (start + size, start, size < len(head)))

    def _resize_waiting(self, first: int, stop: int) -> None:
        """Size again, with the new bytes, the candidates whose length was not known yet."""
        waiting, self._waiting = self._waiting, []
        for start in waiting:
            if start + self._lookahead <= first:  # its whole head was there already and told nothing
                self._waiting.append(start)
                continue
            head = self._head(start, stop)
            size = self._size_of(head)
            if size is None:
                self._waiting.append(start)
            elif size != 0:
                self._sized(start, size, head)
            else:
                del self._live[start]
                if self._held and self._held[-1][0] > start:  # it held something back until it died
                    self._dying[start] = self._death(start, first, stop)

    def _death(self, start: int, known: int, stop: int) -> int:
        """Where a candidate said "no frame", its head up to ``known`` having told nothing
        and its head up to ``stop`` having said so: the last byte it needed."""
        for upto in range(known + 1, min(start + self._lookahead, stop) + 1):
            if self._size_of(self._head(start, upto)) is not None:
                return upto - 1
        return stop - 1  # (not reached with a consistent ``size``)

    # --- one moment -------------------------------------------------------------------

    def _at(self, now: int, single: bool, out: list[F | FrameError]) -> None:
        """What the byte-wise loop does when the byte at ``now`` arrives while something is
        held or the byte is a single character: judge, hold it, release."""
        if self._held:  # deaths since the last moment come before this byte's judgements
            self._release(now - 1, out)
        self._judge(now, out)
        if single:
            self._hold(now, now, None)
        if self._held:
            self._release(now, out)

    def _judge(self, now: int, out: list[F | FrameError]) -> None:
        """Judge the candidates that end with the byte at ``now``, in ascending start order
        (the earliest valid frame wins, and clears the others)."""
        due = self._due
        while due and due[0][0] == now + 1:
            end, start, check = heapq.heappop(due)
            if check and not self._due_by(start, end):
                continue
            del self._live[start]
            item = self._judge_of(self._buf[start - self._origin : end - self._origin], start == self._frame_end)
            if item is None:
                continue  # not a frame after all; skipped as noise once nothing else holds it
            if isinstance(item, FrameError):
                self._damaged(start, end, now, item, out)
                continue
            self._found(start, end, now, out)
            out.append(item)
            return

    def _due_by(self, start: int, end: int) -> bool:
        """Whether a candidate's length was known by the time its last byte arrived: the
        byte-wise loop judges it only then, and a length that needed more bytes than it
        counts leaves the candidate alive and never judged."""
        return self._size_of(self._head(start, end)) is not None

    def _damaged(self, start: int, end: int, now: int, item: FrameError, out: list[F | FrameError]) -> None:
        """A damaged frame from ``start`` to ``end``, judged at ``now``: reported, or held."""
        if self._held:  # structurally a frame, so what was held inside it was data
            self._held = [h for h in self._held if not start < h[0] < end]
        if not self._hold_errors:
            out.append(item)
        elif not self._hold(start, now, item):
            self._release(now, out)  # nothing can contain it: earlier held items go first
            out.append(item)

    def _found(self, start: int, end: int, now: int, out: list[F | FrameError]) -> None:
        """A valid frame from ``start`` to ``end``: every other candidate started inside it
        or is overtaken by it; what was held before it is now free, what was held inside
        it was data."""
        self._live.clear()
        self._due.clear()
        if self._waiting:
            self._waiting.clear()
        if self._dying:
            self._dying.clear()
        if self._held:
            self._held = [h for h in self._held if h[0] < start]
            self._release(now, out)
        if start > self._counted:
            self._count_noise(start)
        self._counted = self._frame_end = end

    # --- held items -------------------------------------------------------------------

    def _hold(self, at: int, now: int, item: FrameError | None) -> bool:
        """Hold the item at ``at`` (arrived or judged at ``now``) if an earlier candidate
        is alive; a held damaged frame returns True (a single character always joins the
        queue, to be released in order). The queue stays in stream order: what was held
        after a damaged frame's start lay inside it and has just been dropped."""
        self._note_blockers(at, now)
        if item is not None and not self._blocked(at, now):
            return False
        self._held.append((at, item))
        return True

    def _note_blockers(self, at: int, now: int) -> None:
        """Find the candidates before ``at`` that are alive at ``now`` only because their
        "no frame" came from bytes after ``now`` (the sizing looked ahead): remember when
        each dies. Only a candidate whose head was not whole at ``now`` can be one."""
        stop = self._origin + len(self._buf)
        for start in range(max(self._origin, self._frame_end, now - self._lookahead + 2), at):
            if start in self._live or start in self._dying:
                continue
            # (``starts`` is not asked: a pattern may skip a start whose head dies later)
            if self._size_of(self._head(start, now + 1)) is None:
                self._dying[start] = self._death(start, now + 1, stop)

    def _blocked(self, at: int, now: int) -> bool:
        """Whether a candidate starting before ``at`` is still alive at ``now``."""
        if next(iter(self._live), at) < at:
            return True
        return any(start < at and death > now for start, death in self._dying.items())

    def _release(self, now: int, out: list[F | FrameError]) -> None:
        """Deliver the held items no earlier candidate alive at ``now`` could contain."""
        while self._held:
            at, item = self._held[0]
            if self._blocked(at, now):
                return
            del self._held[0]
            if item is not None:
                out.append(item)  # a damaged frame's bytes stay noise
                continue
            self._count_noise(at)
            self._counted = at + 1
            out.append(self._singles[self._buf[at - self._origin]]())

    # --- bookkeeping ------------------------------------------------------------------

    def _count_noise(self, upto: int) -> None:
        """Count the bytes from the last one emitted or counted up to ``upto`` as noise."""
        if upto > self._counted:
            lo, hi = self._counted - self._origin, upto - self._origin
            self.skipped += hi - lo - (self._buf.count(self._wake_up, lo, hi) if self._wake_up is not None else 0)
            self._counted = upto

    def _trim(self, stop: int) -> None:
        """Count as noise and drop the bytes no live candidate or held item needs."""
        keep = next(iter(self._live), stop) if self._live else stop
        if self._held:  # in stream order
            keep = min(keep, self._held[0][0])
        if keep > self._origin:
            self._count_noise(keep)
            self._buf = self._buf[keep - self._origin :]
            self._origin = keep
