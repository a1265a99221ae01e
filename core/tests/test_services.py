"""The concentrator's data services, in parts that need no meter (the rest: tests/test_services_*.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
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


class SyncHost:
    """The concentrator as the time sync sees it: every meter's clock is 40 s fast until a
    broadcast in its character format reaches its channel."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.broadcasts: list[tuple[str, object, str]] = []  # (channel, settings, sender)
        self.events: list[object] = []

    async def read_quantities(self, meter: Meter, quantities: list[str]) -> list[object]:
        from meterhub.model import Reading

        now = datetime.now(UTC)
        synced = (meter.channel, self.format(meter)) in {(c, s) for c, s, _ in self.broadcasts}
        clock = now.astimezone(SHANGHAI).replace(tzinfo=None) + timedelta(seconds=0 if synced else 40)
        return [Reading(meter.address, services.CLOCK, clock.isoformat(timespec="seconds"), "", now)]

    async def execute(self, meter: Meter, command: object) -> dict[str, object]:
        assert command.name == "time_sync" and command.args["broadcast"] is True
        self.broadcasts.append((meter.channel, self.format(meter), meter.address))
        return {"reply": False}

    def format(self, meter: Meter) -> object:
        return meter.settings or self.site.channels[meter.channel].settings

    def raise_event(self, event: object) -> None:
        self.events.append(event)

    async def store_call(self, fn: object) -> None:
        return None


def test_a_broadcast_goes_out_once_per_character_format_and_reaches_meters_behind_collectors() -> None:
    import asyncio

    from meterhub.model import ChannelConfig, Hop, SerialSettings

    usual, slow = SerialSettings(2400, 8, "E", 1), SerialSettings(1200, 8, "E", 1)
    meters = (
        Meter("000000000002", "dlt645", "bus1", hops=(Hop("stairwell-a"),)),  # behind a collector
        Meter("000000000001", "dlt645", "bus1"),
        Meter("000000000003", "dlt645", "bus1", settings=slow),  # the same bus at another rate
        Meter("000000000005", "dlt645", "bus1", settings=usual),  # the bus's own format, spelt out
        Meter("000000000004", "dlt645", "bus2"),
        Meter("00000000000301", "cjt188", "bus1"),  # not DL/T 645: no broadcast time
    )
    channels = {name: ChannelConfig(name, "rs485", f"/dev/tty{name}", usual) for name in ("bus1", "bus2")}
    site = Site(meters=meters, channels=channels, timezone="Asia/Shanghai",
                time_sync=TimeSyncConfig(at=time(3, 0), every=86400.0))
    host = SyncHost(site)
    service = services.Services(host, None, SHANGHAI)  # type: ignore[arg-type]
    events = asyncio.run(service.time_sync())
    # the direct meter sends for bus1's own format, not the one behind the collector
    assert sorted(host.broadcasts, key=str) == sorted([("bus1", usual, "000000000001"), ("bus1", slow, "000000000003"),
                                                       ("bus2", usual, "000000000004")], key=str)
    drift = {e.data["meter"]: (int(e.data["drift_before"]), int(e.data["drift_after"])) for e in events}
    assert set(drift) == {"000000000001", "000000000002", "000000000003", "000000000004", "000000000005"}
    assert all(39 <= before <= 41 and -1 <= after <= 1 for before, after in drift.values())
