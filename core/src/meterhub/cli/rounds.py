"""One reading round of a site, with a progress bar on a terminal (read, run --once, demo)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .common import _user_errors

if TYPE_CHECKING:
    from ..model import Site
    from ..plugins import Plugins


@attrs.frozen
class _Once:
    """One round's report and the channels that were down at its end (name: reason)."""

    report: Any  #: the runtime's RoundReport
    channel_errors: Mapping[str, str]
    #: uplinks whose outbox was not empty when the round's wait for them ended: items left
    outbox_left: Mapping[str, int] = attrs.field(factory=dict)


#: After a single round (``run --once``), how long the configured uplinks get to send what
#: it queued before meterhub exits; what they have not acknowledged by then stays in the
#: outbox and goes out on the next run.
UPLINK_DRAIN_S = 10.0


def _run_once(site: Site, plugins: Plugins, *, progress: bool = True) -> _Once:
    import asyncio

    from ..runtime import Concentrator
    from ..store import open_store

    from ..uplinks import UplinkRunner

    async def once() -> _Once:
        with open_store(site.store) as store, _Progress(enabled=progress) as bar:
            conc = Concentrator(site, plugins=plugins, store=store, progress=bar.update)
            await conc.open()
            try:
                async with UplinkRunner(conc, plugins.uplinks()) as uplinks:
                    report = await conc.run_round()
                    left: dict[str, int] = {}
                    if site.uplinks and not await uplinks.drain(UPLINK_DRAIN_S):
                        for name in uplinks.terminals:
                            left[name] = await conc.store_call(lambda st, n=name: st.outbox_size(n))
                return _Once(report, conc.channel_errors(), {n: c for n, c in left.items() if c})
            finally:
                await conc.close()

    with _user_errors():
        return asyncio.run(once())


class _Progress:
    """A rich progress bar on stderr while a round runs, only when stderr is a terminal."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]reading"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, kind: str, info: dict[str, Any]) -> None:
        if self._progress is None:
            return
        if kind == "round_started":
            self._task = self._progress.add_task("", total=info.get("meters"))
        elif kind == "meter_done" and self._task is not None:
            self._progress.update(self._task, advance=1, description=str(info.get("meter", "")))
