"""A simulated site for the data services (``meterhub demo --services``): a month of
history to bill, a prepaid meter to cut off and restore, and one injected fault per alarm.

Every meter is a protocol simulator on one pseudo-terminal, read over the real RS485 path
by the real concentrator; the bills, the relay commands and the alarms are what the
concentrator made of the frames, checked against the simulators' own state by the tests.

The demo's alarm thresholds are scaled to a run of seconds (a leak is "continuous" after
two seconds, a meter "offline" after two visits); the site file it writes says so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import attrs

from .model import Event, Site
from .protocols import cjt188_sim, dlt645_sim
from .simulator import Fault, PtyBus

#: The demo bus: DL/T 645 and CJ/T 188 meters at one format (19200 8E1 and quick meters keep the month's
#: back-fill, 4 frames per day, to seconds).
BAUDRATE = 19200
TIMEZONE = "Asia/Shanghai"

HOME = "000000000101"  #: a household with a month and more of history: the bill
PREPAID = "000000000102"  #: prepaid, opening balance 0: cut off, then restored by a recharge
TAMPERED = "000000000103"  #: wired backwards, battery low, clock 10 min fast; cover opened, magnet later
DRIFTING = "000000000104"  #: clock 2 min fast: the time sync corrects it
WEAK = "000000000105"  #: three-phase: L1 sagging, L3 lost, frequency high
DEAD = "000000000106"  #: silent: offline
WATER = "00000000000201"  #: CJ/T 188 cold water: a burst pipe and a low battery

ELECTRIC = ["energy_import", "energy_import_t1", "energy_import_t2", "energy_import_t3", "energy_import_t4"]
QUANTITIES: Mapping[str, list[str]] = {
    HOME: [*ELECTRIC, "power_import", "voltage_l1", "current_l1", "clock"],
    PREPAID: [*ELECTRIC, "status_word_3"],
    TAMPERED: ["energy_import", "energy_export", "power_import", "status_word_1", "cover_open_count",
               "magnetic_count", "clock"],
    DRIFTING: ["energy_import", "clock"],
    WEAK: ["energy_import", "voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3",
           "frequency"],
    DEAD: ["energy_import"],
    WATER: ["water_volume", "battery_low", "valve_state"],
}
NAMES = {HOME: "flat 1", PREPAID: "flat 2 (prepaid)", TAMPERED: "shop", DRIFTING: "flat 3",
         WEAK: "workshop", DEAD: "garage", WATER: "flat 1 water"}

SERVICES_YAML = """\
timezone: {timezone}
tariffs:
  residential:                         # Beijing-style TOU with monthly tiers (阶梯+峰谷)
    commodity: electricity
    schedule:
      weekdays: ["00:00 valley", "08:00 flat", "10:00 peak", "11:00 sharp", "13:00 flat", "17:00 peak",
                 "19:00 sharp", "21:00 peak", "22:00 flat", "23:00 valley"]
    prices: {{sharp: "1.2283", peak: "1.0228", flat: "0.5583", valley: "0.2888"}}
    tiers: [{{upto: 200, adder: "0"}}, {{upto: 400, adder: "0.05"}}, {{adder: "0.30"}}]
    fixed: [{{description: meter service fee, amount: "2.00"}}]
  water:
    commodity: water
    tier_basis: annual
    tiers: [{{upto: 180, price: "3.45"}}, {{upto: 260, price: "4.83"}}, {{price: "5.83"}}]
freeze: {{daily: "00:00", monthly_day: 1, backfill_days: 62}}
prepayment: {{disconnect: true, reconnect: true, credential: dlt645, opening_balance: "0"}}
# demo thresholds: seconds where a utility would use a day (leak), visits where it would use a day (offline)
alarms:
  offline: {{rounds: 2}}
  clock_drift: {{limit: 5m}}
  reverse_energy: true
  continuous_flow: {{hours: "0.0005", min_flow: "0.01"}}
  tamper: true
  balance_low: {{threshold: "20"}}
  voltage: {{nominal: 220}}
  current_imbalance: {{limit: 30%}}
  frequency: {{nominal: 50, deviation: "0.2"}}
# time_sync: the demo sets the clocks as its last step instead of on a schedule
"""


def history_for(today: date) -> timedelta:
    """History the household meter needs for its last full month's bill: back to a day
    before the first of last month."""
    first_of_last = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    return timedelta(days=(today - first_of_last).days + 1, hours=1)


def last_full_month(today: date) -> str:
    """``YYYY-MM`` of the month before ``today``'s."""
    return (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


@attrs.define
class ServicesSim:
    """The started simulated site: its bus, its meters by address, and what happened to them."""

    bus: PtyBus
    meters: dict[str, Any]

    @property
    def port(self) -> str:
        return self.bus.port

    def site_yaml(self, store: str) -> str:
        """The site file that reads every meter, with tariffs, freezes, prepayment, alarms
        and time sync on."""
        lines = ["# written by meterhub demo --services; every key is explained in examples/site.yaml",
                 "channels:",
                 f"  bus1: {{transport: rs485, port: {self.port}, baudrate: {BAUDRATE}, parity: E}}",
                 "meters:"]
        for point, (address, quantities) in enumerate(QUANTITIES.items(), start=1):
            entry: dict[str, Any] = {"address": address, "channel": "bus1", "point": point, "name": NAMES[address],
                                     "quantities": quantities}
            if address == WATER:
                entry.update(protocol="cjt188", options={"meter_type": "10"}, tariff="water")
            else:
                entry.update(protocol="dlt645")
                if address in (HOME, PREPAID):
                    entry["tariff"] = "residential"
                if address == PREPAID:
                    entry["prepaid"] = True
            lines.append(f"  - {json.dumps(entry, ensure_ascii=False)}")
        lines += ["schedule: {interval: 15m, retries: 1, backoff_initial: 15m}", f"store: {store}"]
        return "\n".join(lines) + "\n" + SERVICES_YAML.format(timezone=TIMEZONE)

    def tamper(self) -> None:
        """What happens at the shop between two rounds: its cover is opened, a magnet is put on it."""
        self.meters[TAMPERED].open_cover()
        self.meters[TAMPERED].magnetic_interference()

    def mend(self) -> None:
        """The workshop's L1 supply recovers (its sag ends)."""
        self.meters[WEAK].set_voltage(1, None)

    def stop(self) -> None:
        self.bus.stop()

    def __enter__(self) -> ServicesSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def site_clock() -> datetime:
    """The wall-clock time in the site's zone, naive, as the meters' clocks keep it."""
    return datetime.now(ZoneInfo(TIMEZONE)).replace(tzinfo=None)


def start_services_sim(*, seed: int = 7, today: date | None = None,
                       clock: Callable[[], datetime] = site_clock) -> ServicesSim:
    """The simulated site on a started pty bus (see the module docstring for each meter)."""
    today = today or clock().date()
    recent = timedelta(days=2, hours=1)
    dl = dlt645_sim.SimulatedMeter
    meters: dict[str, Any] = {
        HOME: dl(HOME, seed=seed, clock=clock, history=history_for(today)),
        PREPAID: dl(PREPAID, seed=seed, clock=clock, history=recent),
        TAMPERED: dl(TAMPERED, seed=seed, clock=clock, history=recent, reverse=True, battery_low=True,
                     clock_offset=timedelta(minutes=10)),
        DRIFTING: dl(DRIFTING, seed=seed, clock=clock, history=recent, clock_offset=timedelta(minutes=2)),
        WEAK: dl(WEAK, seed=seed, clock=clock, history=recent, phases=3),
        DEAD: dl(DEAD, seed=seed, clock=clock, fault=Fault.SILENCE),
        WATER: cjt188_sim.SimulatedCjt188Meter(WATER, seed=seed, clock=clock, battery_low=True),
    }
    meters[WEAK].set_voltage(1, Decimal("185.0"))
    meters[WEAK].set_voltage(3, Decimal(0))
    meters[WEAK].set_frequency(Decimal("50.6"))
    meters[WATER].leak(Decimal(30))  # a burst pipe: 30 m³/h, day and night
    settings = attrs.evolve(dlt645_sim.Dlt645Simulator.default_settings, baudrate=BAUDRATE)
    for meter in meters.values():
        meter.settings = settings
    bus = PtyBus(list(meters.values()), settings=settings, seed=seed, turnaround=(0.02, 0.03))
    return ServicesSim(bus.start(), meters)


@attrs.frozen
class DemoStep:
    """One step of the demo, the events it raised, and whether the prepaid meter's relay
    was open after it (as the simulated meter itself says)."""

    title: str
    events: tuple[Event, ...]
    prepaid_relay_open: bool


@attrs.frozen
class DemoResult:
    """What ``meterhub demo --services`` shows: the steps, and last month's bill of the
    household meter (or why there is none)."""

    steps: tuple[DemoStep, ...]
    period: str
    bill: Any = None  #: a :class:`meterhub.tariffs.Bill`
    bill_error: str = ""


def services_demo(db: str, *, plugins: Any, progress: Callable[[str], None] = lambda _: None) -> DemoResult:
    """Start the simulated site, run :func:`run_services_demo` storing into the SQLite file
    ``db`` (replaced), and bill the household meter's last full month from the store."""
    import os

    from .billing import BillingError, bill_meter
    from .config import parse_site
    from .model import local_zone
    from .store import open_store

    path = os.path.abspath(db)
    for leftover in (path, path + "-wal", path + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    with start_services_sim() as sim:
        site = parse_site(sim.site_yaml(f"sqlite:///{path}"), filename="<demo --services>",
                          drivers=plugins.meter_drivers(), transports=plugins.transports())
        with open_store(site.store) as store:
            steps = asyncio.run(run_services_demo(site, sim, store, plugins=plugins, progress=progress))
            period = last_full_month(site_clock().date())
            try:
                bill = bill_meter(store, site.tariffs["residential"], meter=HOME, period=period,
                                  zone=local_zone(TIMEZONE))
            except BillingError as exc:
                return DemoResult(tuple(steps), period, bill_error=str(exc))
    return DemoResult(tuple(steps), period, bill)


async def run_services_demo(site: Site, sim: ServicesSim, store: Any, *, plugins: Any,
                            recharge: Decimal = Decimal(50),
                            progress: Callable[[str], None] = lambda _: None) -> list[DemoStep]:
    """Three rounds and a time sync on the simulated site: round 1 back-fills the month's
    freezes and cuts off the empty prepaid meter; then the shop is tampered with and the
    prepaid meter recharged; round 2 restores its supply; the workshop's sag is mended;
    round 3; then the clocks are set. Returns each step with the events it raised."""
    from .commands import local_issuer
    from .prepay import recharge_event
    from .runtime import Concentrator
    from .secrets import Dlt645EnvSecrets

    # the simulated meters' password (PA 02, 000000) and an operator code: the demo's own,
    # never the environment's, which may hold a real site's
    secrets = Dlt645EnvSecrets({"METERHUB_DLT645_PASSWORD": "02000000", "METERHUB_DLT645_OPERATOR": "00000001"})
    prepaid = next(m for m in site.meters if m.address == PREPAID)
    steps: list[DemoStep] = []

    def since(count: int) -> tuple[Event, ...]:
        return tuple(store.events()[count:])

    async with Concentrator(site, plugins=plugins, store=store, secrets=secrets) as concentrator:
        for n, (title, before) in enumerate((
            ("round 1: the month back-filled from the meters' freeze records; the empty prepaid meter cut off", None),
            ("round 2: after the shop's cover was opened and a magnet put on it, and a recharge", "tamper"),
            ("round 3: after the workshop's L1 supply recovered", "mend"),
        ), start=1):
            if before == "tamper":
                sim.tamper()
                event = recharge_event(prepaid.key, PREPAID, recharge, reference="demo", issuer=local_issuer())
                await concentrator.store_call(lambda s: s.add_event(event))
            elif before == "mend":
                sim.mend()
            progress(f"round {n}...")
            await concentrator.flush()
            count = len(await concentrator.store_call(lambda s: s.events()))
            await concentrator.run_round()
            await concentrator.flush()
            steps.append(DemoStep(title, await concentrator.store_call(lambda s, c=count: since(c)),
                                  sim.meters[PREPAID].relay_open))
        progress("time sync...")
        count = len(await concentrator.store_call(lambda s: s.events()))
        assert concentrator.services is not None
        await concentrator.services.time_sync()
        await concentrator.flush()
        steps.append(DemoStep("time sync: the DL/T 645 clocks set by broadcast, drift measured before and after",
                              await concentrator.store_call(lambda s, c=count: since(c)),
                              sim.meters[PREPAID].relay_open))
    return steps


def alarm_lines(events: Sequence[Event]) -> list[str]:
    """One line per event worth a person's attention (warnings and alarms, supply changes,
    time syncs), as the demo prints them."""
    shown = []
    for event in events:
        if event.kind in ("round_finished", "command_executed", "prepay_charge") or (
                event.severity == "info" and event.kind not in (
                "supply_reconnected", "time_sync", "meter_online", "balance_restored") and
                not event.kind.startswith("pq_")):
            continue
        data = {k: v for k, v in event.data.items() if k not in ("rule", "protocol", "channel", "command")}
        figures = ", ".join(f"{k}={v}" for k, v in data.items() if v not in (None, ""))
        shown.append(f"  {event.severity:<7} {event.kind:<24} {event.source:<24} {figures}")
    return shown
