"""The probe link's echo removal, on a scripted serial line (the echo arrives in pieces,
before or mixed with the meter's answer), and DL/T 645 over infrared end to end."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from meterhub.model import SerialSettings
from meterhub_infrared.probe import ProbeLink


class Line:
    """A serial link whose reads hand out scripted chunks (the echo and the meter's answer)."""

    name = "probe"

    def __init__(self, *chunks: bytes) -> None:
        self.settings = SerialSettings(1200, 8, "E", 1)
        self.chunks = deque(chunks)
        self.written = bytearray()

    async def write(self, data: bytes) -> None:
        self.written += data

    async def read(self, timeout: float) -> bytes:
        if self.chunks:
            return self.chunks.popleft()
        await asyncio.sleep(min(timeout, 0.01))
        return b""


def run(link: ProbeLink, request: bytes, reads: int) -> bytes:
    async def main() -> bytes:
        await link.write(request)
        got = b""
        for _ in range(reads):
            got += await link.read(0.2)
        return got

    return asyncio.run(main())


@pytest.mark.parametrize("pieces", [[b"REQUEST", b"ANSWER"], [b"REQ", b"UEST", b"ANSWER"], [b"REQUESTANSWER"],
                                    [b"REQUESTANS", b"WER"]])
def test_the_echo_is_removed_however_it_arrives(pieces):
    link = ProbeLink(Line(*pieces), "auto")
    assert run(link, b"REQUEST", len(pieces)) == b"ANSWER"
    assert link.echo == "on" and link.echoes == len(b"REQUEST")


def test_a_probe_that_does_not_echo_is_learnt_and_its_answers_pass_untouched():
    link = ProbeLink(Line(b"ANSWER"), "auto")
    assert run(link, b"REQUEST", 1) == b"ANSWER"
    assert link.echo == "off" and link.echoes == 0


def test_an_answer_that_happens_to_begin_like_the_request_is_kept_when_echo_is_off():
    link = ProbeLink(Line(b"REQUEST-like answer"), "off")
    assert run(link, b"REQUEST", 1) == b"REQUEST-like answer"


def test_an_echo_broken_off_by_noise_leaves_the_rest_to_the_decoder():
    link = ProbeLink(Line(b"REQ\xffjunk", b"ANSWER"), "on")
    assert run(link, b"REQUEST", 2) == b"\xffjunkANSWER"


def test_an_unknown_echo_mode_is_refused():
    with pytest.raises(ValueError, match="echo"):
        ProbeLink(Line(), "sometimes")
