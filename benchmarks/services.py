"""Data services: what a prepaid meter's balance costs a visit after a year of charges.

A visit charges the stretch it read and decides the supply by the meter's balance. The
ledger of a meter read every 15 minutes grows by one charge a visit: 35,040 entries a
year. ``prepay_visit_ms`` is what a visit pays for the balance with the running tally
(:func:`meterhub.prepay.tally`: the last hour's entries re-read, the older ones' sum
kept); ``prepay_whole_ledger_ms`` is summing the whole ledger, as each visit did before;
``prepay_tally_speedup`` is their ratio, timed alternately in one run.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from meterhub import prepay
from meterhub.model import Event
from meterhub.store import open_store

from .figures import Figure, median_time

KEY = "bus1/dlt645:000000000001"
VISIT = timedelta(minutes=15)


def run(quick: bool) -> list[Figure]:
    entries = 35_040 // (4 if quick else 1)  # a year of 15-minute visits (a quarter for --quick)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp, open_store(f"sqlite:///{Path(tmp) / 'ledger.db'}") as store:
        store.add_event(prepay.recharge_event(KEY, "000000000001", Decimal(10000), at=start))
        for n in range(1, entries):
            store.add_event(Event(prepay.CHARGE, KEY, start + n * VISIT,
                                  data={"meter": "000000000001", "amount": "0.12"}))
        now = start + entries * VISIT
        _, kept = prepay.tally(store, KEY, prepay.Tally(), now=now)  # what the previous visit kept
        runs = 5 if quick else 15
        tally_s, whole_s = [], []
        for _ in range(runs):  # alternately: the host's noise falls on both alike
            tally_s.append(median_time(lambda: prepay.tally(store, KEY, kept, now=now + VISIT), runs=3))
            whole_s.append(median_time(lambda: prepay.balance(store, KEY), runs=1))
        tally_ms, whole_ms = sorted(tally_s)[runs // 2] * 1000, sorted(whole_s)[runs // 2] * 1000
    note = f"{entries:,} ledger entries of one meter"
    return [
        Figure("prepay_visit_ms", tally_ms, "ms", goal=5.0, note=note),
        Figure("prepay_whole_ledger_ms", whole_ms, "ms", note=note + "; what a visit paid before the tally"),
        Figure("prepay_tally_speedup", whole_ms / tally_ms, "x", better="higher", note=note),
    ]
