"""The concentrator's data services, in parts that need no meter (the rest: tests/test_services_*.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from meterhub import services
from meterhub.model import Meter, Site, TimeSyncConfig

SHANGHAI = ZoneInfo("Asia/Shanghai")


def sync_service(last: datetime | None) -> services.Services:
    site = Site(timezone="Asia/Shanghai", time_sync=TimeSyncConfig(at=time(3, 0), every=86400.0))
    service = services.Services(SimpleNamespace(site=site), None, SHANGHAI)  # type: ignore[arg-type]
    service._sync = {"last": last.isoformat()} if last else {}
    return service


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI).astimezone(UTC)


def test_time_sync_waits_for_its_time_of_day() -> None:
    assert not sync_service(None).sync_due(local(2026, 12, 3, 2, 59))
    assert sync_service(None).sync_due(local(2026, 12, 3, 3, 0))


def test_time_sync_runs_once_a_day() -> None:
    synced = sync_service(local(2026, 12, 3, 3, 0, 5))
    assert not synced.sync_due(local(2026, 12, 3, 18, 0))  # done today
    assert not synced.sync_due(local(2026, 12, 4, 2, 59))  # tomorrow, before its time
    assert synced.sync_due(local(2026, 12, 4, 3, 0, 1))  # tomorrow at its time, a few seconds early or late


def test_no_time_sync_section_no_sync() -> None:
    service = services.Services(SimpleNamespace(site=Site()), None, SHANGHAI)  # type: ignore[arg-type]
    assert not service.sync_due(local(2026, 12, 3, 12, 0))


def test_a_site_asks_for_services_only_when_it_configures_one() -> None:
    meter = Meter("000000000001", "dlt645", "bus1")
    assert not services.wanted(Site(meters=(meter,)))
    assert services.wanted(Site(meters=(meter,), time_sync=TimeSyncConfig()))
    assert services.wanted(Site(meters=(meter,), alarms={"offline": True}))


def _reading(quantity: str, value: object, quality: str = "ok") -> object:
    from meterhub.model import Quality, Reading

    return Reading("000000000001", quantity, value, "", datetime(2026, 12, 3, tzinfo=UTC), quality=Quality(quality))


def test_the_supply_as_the_meter_itself_says() -> None:
    from decimal import Decimal

    word3, valve = services.STATUS_WORD_3, services.VALVE_STATE
    assert services.supply_seen([_reading(word3, Decimal(0x50))]) is False  # bit 4: relay open (captured 0050h)
    assert services.supply_seen([_reading(word3, Decimal(0))]) is True
    assert services.supply_seen([_reading(word3, "0050")]) is False
    assert services.supply_seen([_reading(valve, "closed")]) is False
    assert services.supply_seen([_reading(valve, "open")]) is True
    assert services.supply_seen([_reading(valve, "abnormal")]) is None
    assert services.supply_seen([_reading(word3, None, "timeout")]) is None
    assert services.supply_seen([]) is None
