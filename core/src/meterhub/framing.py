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
``judge(body, aligned) -> frame | FrameError | None``
    The candidate's whole bytes, once they are there: the decoded frame, a
    :class:`~meterhub.errors.FrameError` instance for a damaged frame worth reporting, or
    ``None`` for noise. ``aligned`` says the candidate starts where a frame could start
    (the stream's start, or right after the previous frame). :func:`judge_by_decode`
    makes one from the codec's own ``decode``, so the stream and ``decode`` never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


class FrameFinder(Generic[F]):
    """The resynchronising frame search shared by the stream decoders (see the module).

    A protocol's ``StreamDecoder`` subclasses it and passes its callbacks; ``feed``,
    ``skipped`` and ``pending`` are what :class:`meterhub.api.StreamDecoder` asks for.

    ``wake_up`` is a byte that is not counted as noise between frames (DL/T 645's and
    CJ/T 188's FE preamble). ``singles`` maps single-character frames (M-Bus's E5) to a
    factory of their frame: they carry no checksum, so one is delivered only once no
    earlier candidate could still turn out to contain it, and dropped as data if a
    frame or damaged frame around it is judged.
    """

    def __init__(
        self,
        size: Callable[[bytes], int | None],
        judge: Callable[[bytes, bool], F | FrameError | None],
        *,
        lookahead: int,
        wake_up: int | None = None,
        singles: Mapping[int, Callable[[], F]] | None = None,
    ) -> None:
        self.skipped = 0  #: noise bytes discarded so far (wake-up bytes excluded)
        self._size_of = size
        self._judge_of = judge
        self._lookahead = lookahead
        self._wake_up = wake_up
        self._singles = dict(singles or {})
        self._buf = bytearray()
        self._origin = 0  # stream position of _buf[0]
        self._counted = 0  # stream position up to which bytes were emitted or counted as noise
        self._frame_end = 0  # stream position just after the last frame found
        self._live: dict[int, int | None] = {}  # candidate start -> end (None until its length is known)
        self._held: list[int] = []  # single characters waiting for earlier candidates to die

    @property
    def pending(self) -> int:
        """Bytes held because they may still become a frame (0 when nothing is waiting)."""
        return len(self._buf) if (self._live or self._held) else 0

    def feed(self, data: bytes) -> list[F | FrameError]:
        """Frames completed by ``data`` and FrameError instances for damaged ones, in order."""
        out: list[F | FrameError] = []
        for byte in bytes(data):
            pos = self._origin + len(self._buf)
            self._buf.append(byte)
            self._live[pos] = None
            done: list[int] = []
            for start, end in list(self._live.items()):
                if end is None:
                    at = start - self._origin
                    size = self._size_of(bytes(self._buf[at : at + self._lookahead]))
                    if size == 0:
                        del self._live[start]
                        continue
                    if size is None:
                        continue
                    end = self._live[start] = start + size
                if end == pos + 1:
                    done.append(start)
            for start in done:  # ascending: the earliest valid candidate wins
                item = self._settle(start, pos + 1, out)
                if item is not None:
                    out.append(item)
                    if not isinstance(item, FrameError):
                        break
            if byte in self._singles:
                self._held.append(pos)
            self._release(out)
            self._trim()
        return out

    def _settle(self, start: int, end: int, out: list[F | FrameError]) -> F | FrameError | None:
        del self._live[start]
        body = bytes(self._buf[start - self._origin : end - self._origin])
        item = self._judge_of(body, start == self._frame_end)
        if item is None:
            return None  # not a frame after all; skipped as noise once nothing else holds it
        if isinstance(item, FrameError):
            # Structurally a frame, so a single character inside it was data.
            self._held = [p for p in self._held if not start < p < end]
            return item
        # A valid frame: every other candidate started inside it or is overtaken by it;
        # single characters before it are now free, those inside it were data.
        self._live.clear()
        self._held = [p for p in self._held if p < start]
        self._release(out)
        self._count_noise(start)
        self._counted = self._frame_end = end
        return item

    def _release(self, out: list[F | FrameError]) -> None:
        while self._held:
            at = self._held[0]
            if any(s < at for s in self._live):
                return
            self._held.pop(0)
            self._count_noise(at)
            self._counted = at + 1
            out.append(self._singles[self._buf[at - self._origin]]())

    def _count_noise(self, upto: int) -> None:
        if upto > self._counted:
            gap = self._buf[self._counted - self._origin : upto - self._origin]
            self.skipped += len(gap) - (gap.count(self._wake_up) if self._wake_up is not None else 0)
            self._counted = upto

    def _trim(self) -> None:
        keep = min(self._live, default=self._origin + len(self._buf))
        if self._held:  # in stream order
            keep = min(keep, self._held[0])
        self._count_noise(keep)
        del self._buf[: keep - self._origin]
        self._origin = keep
