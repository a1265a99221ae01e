"""The uplink runtime: every configured uplink runs beside the reading rounds, with its
own terminal facade onto the concentrator, and is restarted with back-off when it fails.

An uplink never takes the concentrator down: when its ``run`` raises (or returns), the
failure is logged and raised as an ``uplink_failed`` event, and the uplink is made and
run again after a back-off that doubles per failure in a row (from
:data:`RESTART_INITIAL_S` up to :data:`RESTART_MAX_S`). Nothing it had not acknowledged is
lost meanwhile: readings and events wait in the store's outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from .api import Terminal, UplinkDriver
from .model import (
    Command,
    Event,
    Meter,
    Origin,
    OutboxItem,
    Reading,
    Schedule,
    UplinkConfig,
)
from .stats import meter_key

if TYPE_CHECKING:
    from .runtime import Concentrator

log = logging.getLogger(__name__)

#: The first wait before a failed uplink is run again, in seconds; it doubles per
#: failure in a row up to RESTART_MAX_S.
RESTART_INITIAL_S = 1.0
RESTART_MAX_S = 300.0
#: An uplink that ran this long before failing starts its back-off afresh: it was
#: working, and the failure is news, not the same outage going on.
HEALTHY_RUN_S = RESTART_MAX_S


def restart_delay(failures: int, *, initial: float = RESTART_INITIAL_S, maximum: float = RESTART_MAX_S) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: ``initial``, doubling,
    capped at ``maximum`` (1, 2, 4, ... s). An uplink's own reconnections take it as the
    base of their back-off, jittered their way."""
    return min(initial * 2 ** min(max(failures - 1, 0), 32), maximum)


class ConcentratorTerminal:
    """One uplink's :class:`~meterhub.api.Terminal` onto a running :class:`Concentrator`."""

    def __init__(self, name: str, concentrator: Concentrator) -> None:
        self.name = name
        self.terminal = concentrator.site.terminal
        self._c = concentrator
        self._queued = asyncio.Event()
        self._scope = f"uplink/{name}"  #: its settings' scope in the store
        concentrator.on_queued(self._queued.set)

    def _meter(self, point: int) -> Meter:
        meter = self.points().get(point)
        if meter is None:
            raise KeyError(f"no meter at measuring point {point}")
        return meter

    def points(self) -> Mapping[int, Meter]:
        return {m.point: m for m in self._c.site.meters if m.point is not None}

    def meters(self) -> Sequence[Meter]:
        return tuple(self._c.site.meters)

    @property
    def schedule(self) -> Schedule:
        return self._c.site.schedule

    async def latest(self, point: int | None = None) -> list[Reading]:
        meters = [self._meter(point)] if point is not None else list(self.points().values())
        wanted = {m.key for m in meters}
        readings = await self._c.store_call(lambda store: store.latest(terminal=self.terminal))
        return [r for r in readings if meter_key(r) in wanted]

    async def frozen(self, point: int, *, period: int | None = None) -> list[Reading]:
        meter = self._meter(point)
        readings = await self._c.store_call(lambda store: store.readings(meter=meter.address, protocol=meter.protocol,
                                                                         channel=meter.channel))
        found = [r for r in readings if r.ok and r.period is not None and (period is None or r.period == period)]
        return sorted(found, key=lambda r: (r.data_time or r.timestamp), reverse=True)

    async def read_now(self, point: int) -> list[Reading]:
        return await self._c.read_meter(self._meter(point))

    async def set_meter(self, point: int, meter: Meter | None) -> None:
        await self._c.set_meter(point, meter)

    async def events(self, *, since: datetime | None = None, limit: int | None = None) -> list[Event]:
        return await self._c.store_call(lambda store: store.events(since=since, limit=limit))

    def raise_event(self, event: Event) -> None:
        self._c.raise_event(event)

    async def execute(self, point: int | Meter, command: Command) -> Mapping[str, Any]:
        meter = point if isinstance(point, Meter) else self._meter(point)
        if isinstance(point, Meter) and point not in self._c.site.meters:
            raise KeyError(f"meter {point.label} on channel {point.channel} is not one of this site's")
        command = attrs.evolve(command, meter=meter.address, protocol=meter.protocol, channel=meter.channel,
                               origin=Origin.UPLINK, issuer=command.issuer or self.name)
        return await self._c.execute(meter, command)

    async def command(self, command: Command,
                      carry: Callable[[Command], Awaitable[Mapping[str, Any]]]) -> Mapping[str, Any]:
        command = attrs.evolve(command, origin=Origin.UPLINK, issuer=command.issuer or self.name)
        return await self._c.execute_local(command, carry)

    async def settings(self) -> dict[str, Any]:
        return await self._c.store_call(lambda store: store.settings(self._scope))

    async def keep_settings(self, values: Mapping[str, Any]) -> None:
        wanted = dict(values)
        await self._c.store_call(lambda store: store.put_settings(self._scope, wanted))

    async def outbox(self, limit: int = 100) -> list[OutboxItem]:
        return await self._c.store_call(lambda store: store.outbox_items(self.name, limit=limit))

    async def ack(self, ids: Collection[int]) -> int:
        wanted = list(ids)
        return await self._c.store_call(lambda store: store.ack(self.name, wanted))

    async def wait_outbox(self, timeout: float | None = None) -> bool:
        return await take_news(self._queued, timeout)


async def take_news(flag: asyncio.Event, timeout: float | None) -> bool:
    """:meth:`~meterhub.api.Terminal.wait_outbox` over ``flag`` (set when something is
    queued): True at once if it is set, else once it is within ``timeout``; cleared. Not
    ``wait_for`` alone: with a timeout of 0 it gives up before looking at the flag."""
    if not flag.is_set():
        try:
            await asyncio.wait_for(flag.wait(), timeout)
        except TimeoutError:
            return False
    flag.clear()
    return True

def _cancelling() -> bool:
    """Whether the running task was asked to cancel (by :meth:`UplinkRunner.stop`), unlike a
    CancelledError of something an uplink awaited."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class UplinkRunner:
    """Runs the site's uplinks (:attr:`Site.uplinks`) beside a concentrator.

    ``clock`` and ``sleep`` are injectable for tests of the back-off.
    """

    def __init__(
        self,
        concentrator: Concentrator,
        drivers: Mapping[str, UplinkDriver],
        configs: Sequence[UplinkConfig] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.concentrator = concentrator
        self.drivers = drivers
        self.configs = tuple(configs if configs is not None else concentrator.site.uplinks)
        self.terminals: dict[str, ConcentratorTerminal] = {}
        self.failures: dict[str, int] = {}  #: failures in a row, per uplink name
        self._clock = clock
        self._sleep = sleep
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every configured uplink (an unknown protocol is an ``uplink_failed`` event:
        the site file loader refuses it, a hand-built Site may not)."""
        for config in self.configs:
            terminal = self.terminals[config.name] = ConcentratorTerminal(config.name, self.concentrator)
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._keep_running(config, terminal), name=f"meterhub uplink {config.name}"))

    async def stop(self) -> None:
        """Cancel every uplink and wait for them to finish."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []

    async def __aenter__(self) -> UplinkRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def drain(self, timeout: float) -> bool:
        """Wait until every uplink's outbox is empty, or ``timeout`` seconds; whether they are."""
        deadline = self._clock() + timeout
        while True:
            sizes = [await self.concentrator.store_call(lambda store, n=name: store.outbox_size(n))
                     for name in self.terminals]
            if not any(sizes):
                return True
            if self._clock() >= deadline:
                return False
            await asyncio.sleep(min(0.05, max(deadline - self._clock(), 0)))

    async def _keep_running(self, config: UplinkConfig, terminal: Terminal) -> None:
        driver = self.drivers.get(config.protocol)
        while True:
            started = self._clock()
            if driver is None:
                reason = f"no uplink driver {config.protocol!r} is installed"
            else:
                try:
                    uplink = driver.create(config, terminal)
                    await uplink.run()
                    reason = "stopped on its own (run returned)"
                except asyncio.CancelledError:
                    if _cancelling():
                        raise  # stop(): the uplink is being cancelled
                    # not this task's cancellation: something the uplink awaited was cancelled
                    log.debug("uplink %s was cancelled from within", config.name, exc_info=True)
                    reason = "CancelledError: something it awaited was cancelled"
                except Exception as exc:  # an uplink's bug or its network's trouble: restart it, keep reading
                    log.debug("uplink %s failed", config.name, exc_info=True)
                    reason = f"{type(exc).__name__}: {exc}"
                if _cancelling():
                    # stop() came and the uplink ended otherwise than cancelled (an error while
                    # closing, a return): it is stopped, not run again
                    raise asyncio.CancelledError
            if self._clock() - started >= HEALTHY_RUN_S:
                self.failures[config.name] = 0
            failures = self.failures[config.name] = self.failures.get(config.name, 0) + 1
            delay = restart_delay(failures)
            log.warning("uplink %s (%s) failed: %s; running it again in %.0f s", config.name, config.protocol,
                        reason, delay)
            self.concentrator.raise_event(Event(
                "uplink_failed", source=f"uplink/{config.name}", severity="warning",
                data={"uplink": config.name, "protocol": config.protocol, "reason": reason,
                      "failures": failures, "retry_in": delay},
            ))
            await self._sleep(delay)
