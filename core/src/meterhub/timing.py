"""Link timing derived from the baud rate and character format, never from magic numbers.

A half-duplex RS485 pair carries one frame at a time. Before the master may talk again,
the line must have been idle for an inter-frame gap, and after a meter's last byte the
master must give the meter's transceiver time to release the line (turnaround).
"""

from __future__ import annotations

import logging

from .model import SerialSettings

log = logging.getLogger(__name__)

#: Silence that delimits frames on a serial bus, in character times. Modbus over Serial
#: Line V1.02 §2.5.1.1 fixes it at 3.5; DL/T 645 gives no figure, so we use the same
#: well-known bound for every serial protocol.
INTER_FRAME_GAP_CHARS = 3.5

#: Above 19200 Bd Modbus V1.02 fixes the gap at 1.75 ms instead of scaling it further.
MIN_INTER_FRAME_GAP_S = 0.00175

#: An RS485 transceiver releases the line (driver-enable low) about one character after
#: its last stop bit; the next talker waits that long before driving the bus.
TURNAROUND_CHARS = 1.0


def char_time(settings: SerialSettings) -> float:
    """Seconds one character occupies on the wire (11 bits at 8E1: 4.58 ms at 2400 Bd)."""
    return settings.bits_per_char / settings.baudrate


def frame_time(nbytes: int, settings: SerialSettings) -> float:
    """Seconds ``nbytes`` characters take to send back to back."""
    return nbytes * char_time(settings)


def inter_frame_gap(settings: SerialSettings) -> float:
    """Idle time required between two frames on the bus."""
    return max(INTER_FRAME_GAP_CHARS * char_time(settings), MIN_INTER_FRAME_GAP_S)


def turnaround(settings: SerialSettings) -> float:
    """Time for the last talker's transceiver to release the line."""
    return TURNAROUND_CHARS * char_time(settings)


def line_quiet(settings: SerialSettings, gap: float | None = None, *, wake_up: int = 0) -> float:
    """The silence a frame needs before it goes out: the protocol's own inter-frame gap
    (``gap``; by default Modbus RTU's 3.5 characters, :func:`inter_frame_gap`) or the last
    talker's turnaround, whichever is longer (both run at once on a silent line). A
    protocol whose frames delimit themselves (start byte, length, end byte) needs no gap:
    ``gap=0`` leaves the turnaround alone.

    ``wake_up`` characters at the head of the frame (DL/T 645's and CJ/T 188's FEh) are
    there to be lost while a receiver wakes: they may go out during the turnaround, which
    shrinks by their time (four FEh cover a one-character turnaround)."""
    released = max(turnaround(settings) - wake_up * char_time(settings), 0.0)
    return max(inter_frame_gap(settings) if gap is None else gap, released)


def response_timeout(
    settings: SerialSettings,
    *,
    request_len: int,
    max_reply_len: int,
    max_response_delay: float,
) -> float:
    """How long to wait for a complete answer, counted from the start of our request.

    The request's own time on the wire, the meter's worst allowed response delay (a
    protocol figure, e.g. DL/T 645's 500 ms) and the longest reply's time on the wire.
    """
    return (
        frame_time(request_len, settings)
        + turnaround(settings)
        + max_response_delay
        + frame_time(max_reply_len, settings)
    )


def answer_deadline(
    settings: SerialSettings,
    *,
    request_len: int,
    max_response_delay: float,
    header_len: int,
) -> float:
    """By when an answer must have begun, counted from the start of our request.

    The request's own time on the wire, the turnaround, the meter's worst allowed response
    delay (a protocol figure, e.g. DL/T 645's 500 ms) and the ``header_len`` bytes that show
    a frame has begun (wake-up bytes and the start byte). An answer under way by then is
    heard to its end (:meth:`meterhub.channels.HalfDuplexChannel.transact`), however long it is, so a dead
    meter costs this, not the longest answer's wire time.
    """
    return (
        frame_time(request_len, settings)
        + turnaround(settings)
        + max_response_delay
        + frame_time(header_len, settings)
    )


def at_least(wait: float, minimum: float, what: str) -> float:
    """``wait``, raised to ``minimum`` with a warning when it is shorter.

    ``minimum`` is the shortest wait in which an answer can arrive whole at all (the
    request and the answer on the wire, the turnaround, the meter's shortest response
    delay): a shorter wait could only ever catch the start of an answer, and the rest
    would land in the next request's window.
    """
    if wait >= minimum:
        return wait
    log.warning("%s cannot be answered within %.3f s: the request and its answer alone take %.3f s on the wire; "
                "waiting %.3f s", what, wait, minimum, minimum)
    return minimum


#: The longest frame of the serial meter protocols meterhub speaks: a DL/T 645 frame with
#: L = 255 (12 bytes of framing) after the four FEh wake-up bytes, 271 bytes; an M-Bus long
#: frame is 261. What a line carries without a gap, and what a relay may hold before it
#: passes a frame on.
LONGEST_FRAME_BYTES = 4 + 12 + 255


def relay_time(settings: SerialSettings, longest: int = LONGEST_FRAME_BYTES) -> float:
    """What a relay that stores and forwards (a collector, a multiplexer's port) adds
    before an answer begins: it hears the request out before passing it on and the answer
    out before passing it back (each at most ``longest`` bytes on the wire at
    ``settings``), and turns the line round both times. Conservative, as answers are
    shorter than the longest frame; a collector's ``relay_delay:`` says what it really takes."""
    return 2 * frame_time(longest, settings) + 2 * turnaround(settings)
