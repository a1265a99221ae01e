"""The concentrator's data services: freezes, prepayment, alarms and time sync.

After each meter's visit the concentrator hands its readings to :class:`Services`, which

1. freezes the registers at the boundaries passed since the last visit (the meter's own
   freeze records where its driver reads them, :class:`meterhub.api.FrozenReader`; the
   values just read otherwise: see :mod:`meterhub.freezes`), and keeps a load profile;
2. charges a prepaid meter's consumption to its balance (:mod:`meterhub.prepay`), and cuts
   or restores its supply through the command path (policy hooks, credentials, audit);
3. runs the site's alarm rules (:mod:`meterhub.alarms`) and raises what they find.

After each round it keeps the alarm rules' memory in the store and, when due, sets the
DL/T 645 meters' clocks by broadcast, measuring their drift before and after.

Services reach the meters and the store only through the concentrator's public methods
(:class:`ServiceHost`): the same doors a plugin or an uplink has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any, Protocol

import attrs

from . import freezes, prepay
from .alarms import AlarmEngine, MeterView, rules_from_config
from .billing import BILLING_SCOPE, billing_settings
from .errors import CommandRefused, MeterhubError, NotSupported
from .model import (
    Command,
    Event,
    Measurement,
    Meter,
    Origin,
    Quality,
    Reading,
    SerialSettings,
    Site,
    local_zone,
    utcnow,
)
from .plugins import Plugins
from .store import Store
from .tariffs import ENERGY_TOU, EXACT, TOTAL_REGISTERS

log = logging.getLogger(__name__)

#: Settings scopes the services keep in the store (``Store.settings``).
FREEZE_SCOPE = "freezes"
PREPAY_SCOPE = "prepayment"
ALARM_SCOPE = "alarms"
TIME_SYNC_SCOPE = "time_sync"
CLOCK = "0-0:1.0.0"
#: Meter protocols whose clocks a DL/T 645 broadcast sets.
BROADCAST_PROTOCOLS = ("dlt645",)


class ServiceHost(Protocol):
    """What the services need of the concentrator (:class:`meterhub.runtime.Concentrator`)."""

    site: Site
    plugins: Plugins

    async def store_call(self, fn: Any) -> Any: ...
    def raise_event(self, event: Event) -> None: ...
    async def execute(self, meter: Meter, command: Command) -> Mapping[str, Any]: ...
    async def read_frozen(self, meter: Meter, back: int) -> Sequence[Measurement]: ...
    async def read_quantities(self, meter: Meter, quantities: Sequence[str]) -> list[Reading]: ...
    async def store_readings(self, readings: Sequence[Reading]) -> None: ...


def wanted(site: Site) -> bool:
    """Whether ``site`` asks for any data service."""
    return bool(site.freeze or site.alarms or site.time_sync or site.tariffs
                or any(m.prepaid for m in site.meters))


def _registers(readings: Sequence[Reading], quantities: Sequence[str]) -> dict[str, Reading]:
    return {r.quantity: r for r in readings
            if r.quality is Quality.OK and r.period is None and r.quantity in quantities and isinstance(r.value, Decimal)}


#: DL/T 645 running status word 3 (04 00 05 03), bit 4: the relay is open [V: 0050h open].
STATUS_WORD_3 = "0-0:96.5.3"
RELAY_OPEN_BIT = 1 << 4
#: CJ/T 188 ST D1 D0 as meterhub reads it: "open", "closed" or "abnormal".
VALVE_STATE = "0-0:96.3.10"


def supply_seen(readings: Sequence[Reading]) -> bool | None:
    """Whether the meter itself says its supply is on (relay closed, valve open), from its
    status word 3 or valve state read this visit; None when it said neither."""
    for reading in readings:
        if reading.quality is not Quality.OK:
            continue
        if reading.quantity == STATUS_WORD_3:
            word = _word(reading.value)
            if word is not None:
                return not word & RELAY_OPEN_BIT
        if reading.quantity == VALVE_STATE and reading.value in ("open", "closed"):
            return reading.value == "open"
    return None


def _word(value: object) -> int | None:
    """A status word as read: a whole Decimal (the DL/T 645 driver's) or hex text."""
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def _year_to_date(state: Mapping[str, Any], month_start: Mapping[str, Decimal]) -> Decimal:
    """What a prepaid meter consumed this year before the month (annual tiers), by the one
    total register both the year's and the month's start hold."""
    year_start = state.get("year_start") or {}
    for obis in TOTAL_REGISTERS:
        if obis in year_start and obis in month_start:
            return max(month_start[obis] - Decimal(year_start[obis]), Decimal(0))
    return Decimal(0)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@attrs.define
class Services:
    """One concentrator's data services (see the module docstring)."""

    host: ServiceHost
    engine: AlarmEngine | None = None
    zone: Any = None
    _freezes: dict[str, Any] = attrs.field(factory=dict)  #: meter key -> {"daily": iso, "profile": iso}
    _prepay: dict[str, Any] = attrs.field(factory=dict)  #: meter key -> charging state
    _sync: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def for_site(cls, host: ServiceHost) -> Services:
        site = host.site
        rules = rules_from_config(dict(site.alarms), host.plugins.alarm_rules()) if site.alarms else []
        return cls(host, AlarmEngine(rules) if rules else None, local_zone(site.timezone))

    @property
    def site(self) -> Site:
        return self.host.site

    async def start(self) -> None:
        """Keep the billing set-up in the store (``meterhub bill`` reads it) and take up
        the state a previous run left."""
        site = self.site
        opening = site.prepayment.opening_balance if site.prepayment else Decimal(0)

        def load(store: Store) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
            store.put_settings(BILLING_SCOPE, billing_settings(site))
            store.put_settings(PREPAY_SCOPE, {"opening_balance": str(opening)})
            return (store.settings(FREEZE_SCOPE), store.settings(PREPAY_SCOPE + ".state"),
                    store.settings(ALARM_SCOPE), store.settings(TIME_SYNC_SCOPE))

        self._freezes, self._prepay, alarm_memory, self._sync = await self.host.store_call(load)
        if self.engine is not None and alarm_memory.get("memory"):
            self.engine.restore(alarm_memory["memory"])

    # -- after each visit -------------------------------------------------------------

    async def after_visit(self, meter: Meter, readings: Sequence[Reading]) -> None:
        """Freeze, charge and check one meter after it was read. A service that fails is
        logged and raised as a ``service_failed`` event; the round goes on."""
        now = utcnow()
        balance = None
        for name, step in (("freeze", self._freeze), ("prepayment", self._charge)):
            try:
                result = await step(meter, readings, now)
            except (MeterhubError, ValueError, ArithmeticError) as exc:
                log.warning("%s of %s failed: %s", name, meter.key, exc)
                self.host.raise_event(Event("service_failed", source=meter.key, severity="warning",
                                            data={"service": name, "meter": meter.address, "error": str(exc)}))
                continue
            if name == "prepayment":
                balance = result
        if self.engine is not None:
            view = MeterView(meter.key, meter, tuple(readings), now, self.zone, balance)
            for event in self.engine.check(view):
                self.host.raise_event(event)

    # freezes

    def _frozen_quantities(self, meter: Meter) -> tuple[str, ...]:
        config = self.site.freeze
        assert config is not None
        chosen = config.quantities or freezes.FROZEN_BY_DEFAULT
        return tuple(q for q in meter.quantities if q in chosen)

    async def _freeze(self, meter: Meter, readings: Sequence[Reading], now: datetime) -> None:
        config = self.site.freeze
        if config is None:
            return
        quantities = self._frozen_quantities(meter)
        if not quantities:
            return
        state = dict(self._freezes.get(meter.key) or {})
        last = _parse(state.get("daily"))
        records = self._reads_records(meter)
        if last is None and records:  # a new meter: its records back as far as back-filling goes
            last = now - timedelta(days=config.backfill_days)
        due = freezes.daily_boundaries(last, now, config.daily, self.zone, limit=max(config.backfill_days, 1))
        stored: list[Reading] = []
        if due and any(r.quality is Quality.OK for r in readings):  # an unreachable meter: next visit
            if records:
                frozen, done = await self._from_records(meter, quantities, due, now, first="daily" not in state)
            else:
                frozen, done = self._from_reading(meter, readings, quantities, due)
            stored += frozen
            if done is not None:
                state["daily"] = _iso(done)
        if config.profile_interval:
            profile_quantities = tuple(q for q in (config.profile_quantities or quantities) if q in meter.quantities)
            stored += self._profile(meter, readings, profile_quantities, state)
        if stored:
            await self.host.store_readings(stored)
        if state != self._freezes.get(meter.key):
            self._freezes[meter.key] = state
            await self.host.store_call(lambda store: store.put_settings(FREEZE_SCOPE, {meter.key: state}))

    def _reads_records(self, meter: Meter) -> bool:
        from .api import FrozenReader

        driver = self.host.plugins.meter_drivers().get(meter.protocol)
        return not meter.hops and isinstance(driver, FrozenReader) and driver.frozen_depth > 0

    def _frozen(self, meter: Meter, source: Reading | Measurement, quantity: str, boundary: datetime,
                data_time: datetime, detail: str, unit: str) -> Reading:
        return Reading(
            meter=meter.address, quantity=quantity, value=source.value, unit=unit, timestamp=boundary,
            channel=meter.channel, protocol=meter.protocol, route=meter.route.collectors, data_time=data_time,
            period=freezes.FROZEN_PERIOD, detail=detail, terminal=self.site.terminal,
        )

    async def _from_records(self, meter: Meter, quantities: Sequence[str], due: Sequence[datetime],
                            now: datetime, *, first: bool) -> tuple[list[Reading], datetime | None]:
        """The meter's own freeze records for the ``due`` boundaries, newest first, until
        one is older than the oldest wanted or the meter keeps no more. Boundaries without
        a record are reported missed, except on a meter's ``first`` visit, where they only
        predate its records."""
        from .api import FrozenReader

        driver = self.host.plugins.meter_drivers()[meter.protocol]
        assert isinstance(driver, FrozenReader)
        wanted_left = set(due)
        found: list[Reading] = []
        depth = min(int(driver.frozen_depth), len(due) + 2)  # a record or two more: a clock a little off
        for back in range(1, depth + 1):
            try:
                record = await self.host.read_frozen(meter, back)
            except NotSupported:
                break
            times = [m.data_time for m in record if m.data_time is not None]
            if not times:
                break
            boundary = freezes.record_boundary(times[0], wanted_left, self.zone)
            record_at = times[0].replace(tzinfo=self.zone).astimezone(UTC) if times[0].tzinfo is None else times[0]
            if boundary is not None:
                wanted_left.discard(boundary)
                late = freezes.lateness(boundary, now)
                detail = f"back-filled from the meter's freeze record, {late}" if late else ""
                for m in record:
                    if m.quantity in quantities:
                        found.append(self._frozen(meter, m, m.quantity, boundary, record_at, detail, m.unit))
            if record_at < min(due) - freezes.RECORD_SLACK or not wanted_left:
                break
        # a boundary just passed that the meter has not recorded yet: its clock may be a
        # little behind ours. Neither missed nor done: the next visit looks again.
        pending = {b for b in wanted_left if now - b < freezes.RECORD_SLACK}
        wanted_left -= pending
        done = max((b for b in due if b not in pending), default=None)
        if wanted_left and first:
            found_times = [r.timestamp for r in found]
            wanted_left = {b for b in wanted_left if found_times and b > min(found_times)}
        if wanted_left:
            missed = sorted(wanted_left)
            self.host.raise_event(Event("freeze_missed", source=meter.key, severity="warning", data={
                "meter": meter.address, "boundaries": [_iso(b) for b in missed],
                "reason": "the meter keeps no freeze record for them"}))
        return found, done

    def _from_reading(self, meter: Meter, readings: Sequence[Reading], quantities: Sequence[str],
                      due: Sequence[datetime]) -> tuple[list[Reading], datetime | None]:
        """The values just read stand for the latest boundary passed before they were read
        (one passed while the visit went on is the next visit's); older ones are missed."""
        values = _registers(readings, quantities)
        if not values:
            return [], None  # nothing read: try again at the next visit
        read_at = min(r.timestamp for r in values.values())
        missed, latest = freezes.split_missed(b for b in due if b <= read_at)
        if latest is None:
            return [], None
        if missed:
            self.host.raise_event(Event("freeze_missed", source=meter.key, severity="warning", data={
                "meter": meter.address, "boundaries": [_iso(b) for b in missed],
                "reason": "the meter was not read between them and keeps no freeze records"}))
        found = []
        for quantity, reading in values.items():
            late = freezes.lateness(latest, reading.timestamp)
            detail = f"back-filled: {late}" if late else ""
            found.append(self._frozen(meter, reading, quantity, latest, reading.timestamp, detail, reading.unit))
        return found, latest

    def _profile(self, meter: Meter, readings: Sequence[Reading], quantities: Sequence[str],
                 state: dict[str, Any]) -> list[Reading]:
        config = self.site.freeze
        assert config is not None and config.profile_interval
        values = _registers(readings, quantities)
        if not values:
            return []
        interval = timedelta(seconds=config.profile_interval)
        last = _parse(state.get("profile"))
        # a point stands for a boundary passed before its values were read, never one after
        due = freezes.profile_boundaries(last, min(r.timestamp for r in values.values()), config.profile_interval)
        points = []
        for boundary in due:
            if any(r.timestamp - boundary > interval for r in values.values()):
                continue  # read more than an interval after it: no point for it
            for quantity, reading in values.items():
                points.append(attrs.evolve(
                    reading, timestamp=boundary, data_time=reading.timestamp, period=freezes.PROFILE_PERIOD,
                    detail="", attempts=1, latency=None))
        if due:
            state["profile"] = _iso(max(due))
        return points

    # prepayment

    async def _charge(self, meter: Meter, readings: Sequence[Reading], now: datetime) -> Decimal | None:
        config = self.site.prepayment
        if not meter.prepaid or config is None:
            return None
        tariff = self.site.tariffs.get(meter.tariff)
        if tariff is None:
            raise MeterhubError(f"prepaid meter {meter.label} has no tariff to charge by")
        registers = {q: r.value for q, r in _registers(readings, (*TOTAL_REGISTERS, *ENERGY_TOU)).items()}
        state = dict(self._prepay.get(meter.key) or {"supply": "on"})
        previous = {q: Decimal(v) for q, v in (state.get("registers") or {}).items()}
        if previous and not set(previous) <= set(registers):
            registers = {}  # a register was not read: charge from the same start next time
        local = now.astimezone(self.zone)
        month, year = local.strftime("%Y-%m"), local.strftime("%Y")
        if registers and previous:
            kept = {q: str(v) for q, v in previous.items()}
            if state.get("year") != year:  # a new year: annual tiers start from here
                state["year"], state["year_start"] = year, kept
            if state.get("month") != month:  # a new month: monthly tiers start from here
                state["month"], state["month_start"] = month, kept
            month_start = {q: Decimal(v) for q, v in state["month_start"].items()}
            since = _parse(state.get("at")) or now
            charge = prepay.charge(tariff, meter=meter.address, previous=previous, current=registers,
                                   month_start=month_start, since=since, until=now, zone=self.zone,
                                   year_to_date_before=_year_to_date(state, month_start))
            if charge.amount:
                event = prepay.charge_event(meter.key, meter.address, charge)
                await self.host.store_call(lambda store: store.add_event(event))
        elif registers and not previous:
            first = {q: str(v) for q, v in registers.items()}
            state.update(month=month, month_start=first, year=year, year_start=first)
        if registers:
            state["registers"] = {q: str(v) for q, v in registers.items()}
            state["at"] = _iso(now)
        kept = prepay.Tally.from_json(state.get("tally"))
        total, kept = await self.host.store_call(lambda store: prepay.tally(store, meter.key, kept, now=now))
        state["tally"] = kept.to_json()
        with localcontext(EXACT):
            balance = config.opening_balance + total
        commanded_on = state.get("supply", "on") == "on"
        actual_on = supply_seen(readings)
        if actual_on is not None and actual_on != commanded_on:
            # the meter says otherwise: a relay closed by hand, a trip that did not take
            self.host.raise_event(Event("supply_mismatch", source=meter.key, severity="alarm", data={
                "meter": meter.address, "commanded": "on" if commanded_on else "off",
                "meter_says": "on" if actual_on else "off", "balance": str(balance)}))
        supply_on = commanded_on if actual_on is None else actual_on
        decision = prepay.decide(balance, supply_on=supply_on, config=config)
        if decision is not None and registers:  # only a meter that just answered is sent a command
            command = prepay.supply_command(meter, decision, config)
            try:
                await self.host.execute(meter, command)
            except CommandRefused as exc:
                log.warning("prepayment: %s of %s refused: %s", decision, meter.key, exc)
            except MeterhubError as exc:
                log.warning("prepayment: %s of %s failed: %s", decision, meter.key, exc)
            else:
                state["supply"] = "off" if decision == "disconnect" else "on"
                self.host.raise_event(Event(
                    "supply_disconnected" if decision == "disconnect" else "supply_reconnected", source=meter.key,
                    severity="alarm" if decision == "disconnect" else "info",
                    data={"meter": meter.address, "balance": str(balance), "command": command.id}))
        self._prepay[meter.key] = state
        await self.host.store_call(lambda store: store.put_settings(PREPAY_SCOPE + ".state", {meter.key: state}))
        return balance

    # -- after each round -------------------------------------------------------------

    async def after_round(self) -> None:
        """Keep the alarm rules' memory, and sync the meters' clocks when it is time."""
        if self.engine is not None:
            memory = self.engine.memory()
            await self.host.store_call(lambda store: store.put_settings(ALARM_SCOPE, {"memory": memory}))
        if self.sync_due(utcnow()):
            await self.time_sync()

    def sync_due(self, now: datetime) -> bool:
        config = self.site.time_sync
        if config is None:
            return False
        last = _parse(self._sync.get("last"))
        local = now.astimezone(self.zone)
        if local.time() < config.at:
            return False
        return last is None or now - last >= timedelta(seconds=config.every) - timedelta(hours=1)

    async def time_sync(self) -> list[Event]:
        """Broadcast the time on every channel with DL/T 645 meters, once per character
        format its meters use (a mixed-rate bus gets one broadcast per rate), each meter's
        drift read before and after. Meters behind collectors are included: a collector
        passes a broadcast on (a carrier module sends it to every node), and the drift read
        after says whether it did. A meter whose clock is beyond the broadcast window is not
        corrected (meters refuse it) and raises ``clock_beyond_sync``. Returns the
        ``time_sync`` events raised (one per meter that answered)."""
        config = self.site.time_sync
        window = config.window if config is not None else 300.0
        by_line: dict[tuple[str, SerialSettings | None], list[Meter]] = {}
        for meter in self.site.meters:
            if meter.protocol in BROADCAST_PROTOCOLS:
                channel = self.site.channels.get(meter.channel)
                own = meter.settings if channel is None or meter.settings != channel.settings else None
                by_line.setdefault((meter.channel, own), []).append(meter)
        raised: list[Event] = []
        for (channel, _settings), meters in by_line.items():
            before = {m.key: await self._drift(m) for m in meters}
            reachable = [m for m in meters if before[m.key] is not None]
            if not reachable:
                continue
            sender = min(reachable, key=lambda m: len(m.hops))  # one wired to the channel, where there is one
            sent_at = datetime.now(self.zone).replace(tzinfo=None)
            command = Command(meter=sender.address, protocol=sender.protocol, name="time_sync",
                              args={"time": sent_at.isoformat(timespec="seconds"), "broadcast": True},
                              origin=Origin.SCHEDULE, issuer="time-sync")
            try:
                await self.host.execute(sender, command)
            except MeterhubError as exc:
                log.warning("time sync of channel %s failed: %s", channel, exc)
                continue
            for meter in meters:
                drift = before[meter.key]
                if drift is None:
                    continue
                after = await self._drift(meter)
                data = {"meter": meter.address, "channel": channel, "drift_before": str(round(drift)),
                        "drift_after": None if after is None else str(round(after)), "command": command.id}
                if abs(drift) > window:
                    self.host.raise_event(Event("clock_beyond_sync", source=meter.key, severity="alarm", data={
                        **data, "window": f"{window:.0f}",
                        "reason": "the meter refuses a broadcast this far from its clock: set it with an authenticated write"}))
                event = Event("time_sync", source=meter.key, data=data)
                self.host.raise_event(event)
                raised.append(event)
        self._sync = {"last": _iso(utcnow())}
        await self.host.store_call(lambda store: store.put_settings(TIME_SYNC_SCOPE, self._sync))
        return raised

    async def _drift(self, meter: Meter) -> float | None:
        """The meter's clock minus ours, in seconds (None: it did not answer)."""
        readings = await self.host.read_quantities(meter, [CLOCK])
        clock = next((r for r in readings if r.quantity == CLOCK and r.quality is Quality.OK), None)
        if clock is None or not isinstance(clock.value, str):
            return None
        meter_time = datetime.fromisoformat(clock.value)
        if meter_time.tzinfo is None:
            meter_time = meter_time.replace(tzinfo=self.zone)
        reference = clock.timestamp - timedelta(seconds=(clock.latency or 0.0) / 2)
        return (meter_time - reference).total_seconds()
