"""The module link's matching of answers to commands, without a port."""

from __future__ import annotations

import asyncio

from meterhub.protocols import gdw1376_2_data as units
from meterhub.protocols.gdw1376_2 import Addresses, Afn, UpInfo
from meterhub_plc.module import _Waiting, deny_text


def _answer(afn: int, fn: int, unit: object, source: str | None) -> object:
    addresses = Addresses(source, "000000000000") if source else None
    return units.unit_frame(afn, fn, unit, info=UpInfo(seq=9, module=addresses is not None), addresses=addresses,
                            prm=False)


def test_a_read_is_answered_only_from_the_node_it_went_to():
    waiting = _Waiting("F1 F1", asyncio.Future(loop=asyncio.new_event_loop()), 0.0, 1.0, Afn.CONCURRENT, "000000000007")
    assert waiting.answered_by(_answer(Afn.CONCURRENT, 1, units.ConcurrentRead(2, b""), "000000000007"))
    # a long given-up read of another node whose R6 came round again: not this read's answer
    assert not waiting.answered_by(_answer(Afn.CONCURRENT, 1, units.ConcurrentRead(2, b""), "000000000008"))
    assert not waiting.answered_by(_answer(Afn.ROUTE_FORWARD, 1, units.MonitorReply(0, 2, b""), "000000000007"))
    assert waiting.answered_by(_answer(Afn.CONFIRM, 2, units.Deny(units.DenyReason.BUSY), None))


def test_deny_codes_read_as_words_with_their_number():
    assert deny_text(9) == "busy (9)"
    assert deny_text(109) == "concurrency limit (109)"
    assert deny_text(50) == "reserved code (50)"
