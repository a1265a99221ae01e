"""Daily freeze records (DL/T 645-2007 05 06 xx NN): the driver's ``read_frozen`` against
simulated meters with a history, over a pseudo-terminal and the real RS485 SerialLink, and
against scripted meters for the answers a simulated meter does not give."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from meterhub.api import FrozenReader
from meterhub.channels.halfduplex import HalfDuplexChannel
from meterhub.errors import NotSupported
from meterhub.model import Measurement, Meter, SerialSettings
from meterhub.protocols import dlt645
from meterhub.protocols import dlt645_data as data
from meterhub.protocols.dlt645 import Control, Frame, StreamDecoder
from meterhub.protocols.dlt645_driver import Dlt645_1997Driver, Dlt645Driver
from meterhub.protocols.dlt645_sim import FORWARD, REVERSE, SimulatedMeter, slow_delay
from meterhub.simulator import PtyBus

link_module = pytest.importorskip("meterhub.channels.serial", reason="the end-to-end tests run over the rs485 plugin's SerialLink")
SerialLink = link_module.SerialLink

ADDRESS = "000000000042"
SETTINGS = SerialSettings(115200, 8, "E", 1)
NOW = datetime(2024, 3, 5, 12, 0)  # wall clock of the tests: noon
HISTORY = timedelta(days=10)  # installed 2024-02-24 12:00: midnights 02-25 .. 03-05 frozen
DRIVER = Dlt645Driver()
TIMEOUT = DRIVER.transaction_timeout(SETTINGS)
FORWARD_OBIS = ["1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.8.3", "1-0:1.8.4"]
REVERSE_OBIS = ["1-0:2.8.0", "1-0:2.8.1", "1-0:2.8.2", "1-0:2.8.3", "1-0:2.8.4"]

T = TypeVar("T")


def _sim(now: datetime = NOW, history: timedelta = HISTORY) -> SimulatedMeter:
    """A household with PV (so both blocks move), installed at ``now - history``."""
    return SimulatedMeter(ADDRESS, seed=7, pv=True, clock=lambda: now, history=history)


def _meter() -> Meter:
    return Meter(address=ADDRESS, protocol="dlt645", channel="bus1")


def _over_pty(devices: Sequence[Any], scenario: Callable[[HalfDuplexChannel], Awaitable[T]]) -> T:
    async def go() -> T:
        async with SerialLink("bus1", pty.port, SETTINGS) as link:
            return await scenario(HalfDuplexChannel("bus1", link))

    pty = PtyBus(devices, settings=SETTINGS, turnaround=0.01, slow_delay=slow_delay(SETTINGS))
    with pty:
        return asyncio.run(go())


def _read_frozen(sim: SimulatedMeter, back: int) -> list[Measurement]:
    return list(_over_pty([sim], lambda bus: DRIVER.read_frozen(bus, _meter(), back, TIMEOUT)))


def _registers_at(midnight: datetime) -> dict[str, Decimal]:
    """What the registers showed at ``midnight``: a twin of the meter (same seed, installed
    at the same instant) whose clock stops there."""
    twin = _sim(midnight, HISTORY - (NOW - midnight))
    return {
        **{obis: twin.energy(FORWARD, tariff) for tariff, obis in enumerate(FORWARD_OBIS)},
        **{obis: twin.energy(REVERSE, tariff) for tariff, obis in enumerate(REVERSE_OBIS)},
    }


def test_the_driver_is_a_frozen_reader_of_62_daily_records():
    assert isinstance(DRIVER, FrozenReader)
    assert DRIVER.frozen_depth == 62


def test_the_last_record_holds_the_registers_at_the_meters_last_midnight():
    record = _read_frozen(_sim(), 1)
    assert {m.quantity: m.value for m in record} == _registers_at(datetime(2024, 3, 5, 0, 0))


def test_the_fifth_record_back_holds_the_registers_four_midnights_earlier():
    record = _read_frozen(_sim(), 5)
    assert {m.quantity: m.value for m in record} == _registers_at(datetime(2024, 3, 1, 0, 0))


def test_a_record_carries_its_freeze_time_as_naive_local_time_and_period_1():
    record = _read_frozen(_sim(), 5)
    assert {(m.data_time, m.period, m.unit) for m in record} == {(datetime(2024, 3, 1, 0, 0), 1, "kWh")}


def test_a_record_gives_forward_then_reverse_total_and_tariffs():
    assert [m.quantity for m in _read_frozen(_sim(), 1)] == FORWARD_OBIS + REVERSE_OBIS


def test_the_oldest_record_is_the_first_midnight_after_installation():
    record = _read_frozen(_sim(), 10)
    assert record[0].data_time == datetime(2024, 2, 25, 0, 0)  # 2024 is a leap year: 02-29 is one of the ten


def test_a_record_older_than_the_meters_history_is_not_supported():
    with pytest.raises(NotSupported, match="holds no daily freeze time, last 11"):
        _read_frozen(_sim(), 11)


def test_the_record_of_a_freeze_that_happened_by_the_meters_clock_follows_that_clock():
    sim = SimulatedMeter(ADDRESS, seed=7, clock=lambda: NOW, history=HISTORY, clock_offset=timedelta(minutes=-3))
    assert _read_frozen(sim, 1)[0].data_time == datetime(2024, 3, 5, 0, 0)  # its midnight was 00:03 on the wall


@pytest.mark.parametrize("back", [0, 63, -1])
def test_back_outside_the_62_records_is_refused_before_anything_is_sent(back):
    with pytest.raises(ValueError, match="back must be 1..62"):
        asyncio.run(DRIVER.read_frozen(None, _meter(), back, TIMEOUT))  # type: ignore[arg-type]


def test_a_1997_meter_keeps_no_daily_freeze_records():
    with pytest.raises(NotSupported, match="no daily freeze records"):
        asyncio.run(Dlt645_1997Driver().read_frozen(None, _meter(), 1, TIMEOUT))  # type: ignore[arg-type]


def test_the_frozen_items_are_in_the_table_the_driver_and_simulator_share():
    item = data.ITEMS[0x05060105]
    assert (item.fmt, item.unit, item.block) == ("XXXXXX.XX", "kWh", True)
    assert data.freeze_di(data.DAILY_FREEZE, data.FREEZE_REVERSE, 62) == 0x0506023E


# --- answers a simulated meter does not give: a scripted meter on the same pty -------------


class ScriptedMeter:
    """A DL/T 645-2007 meter (a :class:`meterhub.simulator.SimDevice`) answering reads from
    ``answers`` (DI -> payload, or a list of payloads given in turn, the last one kept);
    a DI it lacks gets the abnormal reply "no data" (SERR 02h)."""

    protocol = "dlt645"
    fault = None

    def __init__(self, answers: dict[int, bytes | list[bytes]]) -> None:
        self.address = ADDRESS
        self.answers = answers
        self.asked: list[int] = []

    def new_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def handle(self, request: Frame) -> list[bytes]:
        if request.is_reply or request.function != Control.READ:
            return []
        di = dlt645.parse_read_request(request)
        self.asked.append(di)
        answer = self.answers.get(di)
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if answer is None:
            return [dlt645.encode(dlt645.abnormal_reply(ADDRESS, Control.READ, 0x02))]
        return [dlt645.encode(dlt645.read_reply(ADDRESS, di, answer))]


def _time(when: str) -> bytes:
    return data.encode_value(data.ITEMS[0x05060001], when)


def _block(*values: str | None) -> bytes:
    return data.encode_block(data.ITEMS[0x05060101], [None if v is None else Decimal(v) for v in values])


def _scripted(answers: dict[int, bytes | list[bytes]]) -> tuple[list[Measurement], ScriptedMeter]:
    meter = ScriptedMeter(answers)
    record = _over_pty([meter], lambda bus: DRIVER.read_frozen(bus, _meter(), 1, TIMEOUT))
    return list(record), meter


def test_a_meter_without_reverse_records_gives_the_forward_block_alone():
    record, _ = _scripted({0x05060001: _time("2015-10-09T00:00"), 0x05060101: _block("12.34", "1", "2", "3", "6.34")})
    assert [(m.quantity, m.value) for m in record] == [
        ("1-0:1.8.0", Decimal("12.34")), ("1-0:1.8.1", Decimal("1.00")), ("1-0:1.8.2", Decimal("2.00")),
        ("1-0:1.8.3", Decimal("3.00")), ("1-0:1.8.4", Decimal("6.34")),
    ]


def test_a_forward_block_of_ff_is_not_supported():
    with pytest.raises(NotSupported, match="not supported"):
        _scripted({0x05060001: _time("2015-10-09T00:00"), 0x05060101: _block(None, None, None, None, None)})


def test_tariffs_a_meter_sends_as_ff_are_left_out():
    record, _ = _scripted({0x05060001: _time("2015-10-09T00:00"), 0x05060101: _block("12.34", None, None, None, None),
                           0x05060201: _block("0.50", None, None, None, None)})
    assert [(m.quantity, m.value) for m in record] == [("1-0:1.8.0", Decimal("12.34")), ("1-0:2.8.0", Decimal("0.50"))]


def test_a_freeze_while_the_record_is_read_makes_the_driver_read_the_shifted_record():
    # The meter freezes between the first time read and the second: record 1 is now a day newer.
    times = [_time("2024-03-04T00:00"), _time("2024-03-05T00:00")]
    blocks = [_block("10.00", "1", "2", "3", "4"), _block("11.00", "1", "2", "3", "5")]
    record, meter = _scripted({0x05060001: times, 0x05060101: blocks})
    assert (record[0].data_time, record[0].value) == (datetime(2024, 3, 5, 0, 0), Decimal("11.00"))
    assert meter.asked == [0x05060001, 0x05060101, 0x05060201, 0x05060001,
                           0x05060101, 0x05060201, 0x05060001]
