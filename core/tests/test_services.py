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


# --- freezes at the edge of a boundary: what was read before it never stands for it -------


class FreezeHost:
    """The concentrator as the freezes see it: what they store and raise is kept; a
    meter's freeze records, when it keeps them, are ``records`` (newest first)."""

    def __init__(self, site: Site, records: list[list[object]] | None = None) -> None:
        from types import SimpleNamespace

        self.site = site
        self.records = records
        self.stored: list[object] = []
        self.events: list[object] = []
        driver = RecordKeeper() if records is not None else object()
        self.plugins = SimpleNamespace(meter_drivers=lambda: {"dlt645": driver})

    async def store_readings(self, readings: list[object]) -> None:
        self.stored += readings

    def raise_event(self, event: object) -> None:
        self.events.append(event)

    async def store_call(self, fn: object) -> None:
        return None

    async def read_frozen(self, meter: Meter, back: int) -> list[object]:
        from meterhub.errors import NotSupported

        assert self.records is not None
        if back > len(self.records):
            raise NotSupported("no such record")
        return self.records[back - 1]


class RecordKeeper:
    """A driver that reads a meter's freeze records (:class:`meterhub.api.FrozenReader`)."""

    frozen_depth = 62

    async def read_frozen(self, bus: object, meter: Meter, back: int, timeout: float) -> list[object]:
        raise AssertionError("the host reads them")


def _freezing(host: FreezeHost, last: datetime | None = None, profile: datetime | None = None) -> services.Services:
    service = services.Services(host, None, SHANGHAI)  # type: ignore[arg-type]
    state = {"daily": last.isoformat()} if last else {}
    if profile:
        state["profile"] = profile.isoformat()
    service._freezes = {METER.key: state}
    return service


def _energy(at: datetime, value: str = "100.00") -> object:
    from decimal import Decimal

    from meterhub.model import Reading

    return Reading(METER.address, "1-0:1.8.0", Decimal(value), "kWh", at, channel="bus1", protocol="dlt645")


METER = Meter("000000000001", "dlt645", "bus1", quantities=("1-0:1.8.0",))
MIDNIGHT = local(2026, 12, 4, 0, 0)


def _freeze_site(**freeze: object) -> Site:
    from meterhub.model import FreezeConfig

    return Site(meters=(METER,), timezone="Asia/Shanghai", freeze=FreezeConfig(**freeze))


def test_a_value_read_just_before_midnight_is_not_the_midnight_freeze() -> None:
    import asyncio

    host = FreezeHost(_freeze_site())
    service = _freezing(host, last=MIDNIGHT - timedelta(days=1))
    tick = timedelta(milliseconds=100)
    asyncio.run(service._freeze(METER, [_energy(MIDNIGHT - tick)], MIDNIGHT + tick))  # the visit ends after it
    assert host.stored == [] and host.events == []
    later = MIDNIGHT + timedelta(minutes=5)
    asyncio.run(service._freeze(METER, [_energy(later, "100.02")], later))
    (frozen,) = host.stored
    assert (frozen.timestamp, frozen.data_time, str(frozen.value)) == (MIDNIGHT, later, "100.02")


def test_a_load_profile_point_is_never_made_of_a_value_read_before_its_boundary() -> None:
    import asyncio

    host = FreezeHost(_freeze_site(profile_interval=60.0))
    minute = local(2026, 12, 4, 12, 1)
    service = _freezing(host, last=MIDNIGHT, profile=minute - timedelta(minutes=1))
    tick = timedelta(milliseconds=100)
    asyncio.run(service._freeze(METER, [_energy(minute - tick)], minute + tick))
    assert [r for r in host.stored if r.period == 0] == []
    asyncio.run(service._freeze(METER, [_energy(minute + timedelta(seconds=2))], minute + timedelta(seconds=2)))
    (point,) = [r for r in host.stored if r.period == 0]
    assert point.timestamp == minute and point.data_time == minute + timedelta(seconds=2)


def test_a_meter_whose_clock_lags_has_its_new_freeze_looked_for_again_not_missed() -> None:
    """Just after midnight a meter a few seconds behind has not frozen the day yet: the
    boundary is neither filled nor reported missed until RECORD_SLACK has passed."""
    import asyncio

    from decimal import Decimal

    from meterhub.freezes import RECORD_SLACK
    from meterhub.model import Measurement

    def record(day: datetime, value: str) -> list[object]:
        naive = day.astimezone(SHANGHAI).replace(tzinfo=None)
        return [Measurement(Decimal(value), "kWh", naive, 1, "1-0:1.8.0")]

    yesterday = MIDNIGHT - timedelta(days=1)
    host = FreezeHost(_freeze_site(), records=[record(yesterday, "90.00")])
    service = _freezing(host, last=yesterday)
    soon = MIDNIGHT + timedelta(seconds=10)
    asyncio.run(service._freeze(METER, [_energy(soon)], soon))
    assert host.stored == [] and host.events == []
    assert service._freezes[METER.key]["daily"] == yesterday.isoformat()
    host.records.insert(0, record(MIDNIGHT + timedelta(seconds=20), "100.00"))  # it froze, 20 s late by our clock
    later = MIDNIGHT + timedelta(minutes=2)
    asyncio.run(service._freeze(METER, [_energy(later)], later))
    (frozen,) = host.stored
    assert frozen.timestamp == MIDNIGHT and str(frozen.value) == "100.00" and host.events == []
    # a meter that still has no record once the slack has passed: reported missed
    host2 = FreezeHost(_freeze_site(), records=[record(yesterday, "90.00")])
    service2 = _freezing(host2, last=yesterday)
    late = MIDNIGHT + RECORD_SLACK + timedelta(minutes=1)
    asyncio.run(service2._freeze(METER, [_energy(late)], late))
    (missed,) = host2.events
    assert missed.kind == "freeze_missed" and missed.data["boundaries"] == [MIDNIGHT.isoformat()]
