"""The outbox's promise, proved the hard way: "a kill -9 at any moment loses nothing and
duplicates nothing once the uplink acknowledges by id".

``meterhub run`` reads simulated DL/T 645 meters on a real pseudo-terminal every second,
stores into a SQLite file and feeds the built-in ``jsonl`` uplink; it is SIGKILLed again and
again (after random delays from a seeded RNG, and right after the uplink wrote to its file,
when its acknowledgement is still on the way), restarted each time, and finally run with
``--once`` so the uplink drains. Then every reading and event in the store must be in the
feed exactly once, under its own outbox id, and nothing else may be.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterhub.default_plugins.jsonl import last_id
from meterhub.plugins import get_plugins
from meterhub.simsite import MeterSpec, SimBus, site_text, start_bus
from system_helpers import assert_no_traceback, meterhub

SEED = 20260645
KILLS = 7
#: A kill that waits for the uplink to write gives up waiting after this long (the run is
#: killed all the same: any moment will do).
WRITE_WAIT_S = 6.0
#: How often the test looks at the feed's size while it waits for a write.
POLL_S = 0.0005


@pytest.fixture
def meters() -> Iterator[SimBus]:
    """Four simulated DL/T 645 meters at 9600 Bd on one pty, the fourth answering with bad
    checksums: failed and backed-off readings and meter_dead events are fed too."""
    sim = start_bus(get_plugins().simulators(), [MeterSpec("dlt645", 4)], seed=3, baudrate=9600,
                    faults={"000000000004": "bad_checksum"})
    for entry in sim.entries:
        entry["quantities"] = ["energy_import", "voltage_l1"]
    yield sim
    sim.stop()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _run_and_kill(site: Path, feed: Path, log: Path, *, after_write: bool, rng: random.Random) -> None:
    """Start ``meterhub run`` and SIGKILL it: after a random delay, or the moment the uplink
    has grown the feed a random number of times (its acknowledgement then still to come)."""
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, "-m", "meterhub.cli", "run", str(site)],
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            if after_write:
                writes, skip, size = 0, rng.randint(0, 8), _size(feed)
                deadline = time.monotonic() + WRITE_WAIT_S
                while writes <= skip and time.monotonic() < deadline and proc.poll() is None:
                    if _size(feed) != size:
                        writes, size = writes + 1, _size(feed)
                    else:
                        time.sleep(POLL_S)
            else:
                time.sleep(rng.uniform(0.3, 4.0))
            assert proc.poll() is None, f"meterhub run ended by itself: {log.read_text(encoding='utf-8')}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True)  # never creates the file meterhub makes
    conn.row_factory = sqlite3.Row
    return conn


def _written_not_acked(db: Path, feed: Path) -> int:
    """Items a killed run wrote to the feed but had not acknowledged: they will be offered again."""
    with contextlib.closing(_db(db)) as conn:
        try:
            return conn.execute("SELECT count(*) FROM outbox WHERE id <= ?", (last_id(str(feed)),)).fetchone()[0]
        except sqlite3.OperationalError:  # killed before the store was ever made
            return 0


def _reading_key(row: Any) -> tuple[Any, ...]:
    return (row["terminal"], row["channel"], row["protocol"], row["meter"], row["quantity"],
            datetime.fromisoformat(row["timestamp"]), row["period"])


def _reading_content(row: Any) -> tuple[Any, ...]:
    value = row["value"]
    return (row["quality"], None if value is None else Decimal(str(value)), row["unit"])


def _event_key(kind: str, row: Any, data: Any) -> tuple[Any, ...]:
    return (kind, row["source"], datetime.fromisoformat(row["timestamp"]), row["severity"],
            json.dumps(data, sort_keys=True, default=str))


def test_kill_9_at_any_moment_loses_nothing_and_duplicates_nothing(tmp_path, meters) -> None:
    db, feed = tmp_path / "hub.db", tmp_path / "feed.jsonl"
    site = tmp_path / "site.yaml"
    site.write_text(site_text({"bus1": meters}, store=f"sqlite:///{db}", interval="1s", retries=0)
                    + f"uplink: {{protocol: jsonl, path: {json.dumps(str(feed))}}}\n", encoding="utf-8")
    rng = random.Random(SEED)
    after_write = [True, False] * (KILLS // 2) + [False] * (KILLS % 2)
    rng.shuffle(after_write)
    reoffered = []
    for n, on_write in enumerate(after_write):
        _run_and_kill(site, feed, tmp_path / f"run{n}.log", after_write=on_write, rng=rng)
        reoffered.append(_written_not_acked(db, feed))
    fed_by_killed_runs = _size(feed)

    final = meterhub("run", str(site), "--once", timeout=60)
    assert final.returncode == 0, final.stderr
    assert_no_traceback(final)
    assert "has not taken" not in final.stderr, final.stderr

    with contextlib.closing(_db(db)) as conn:
        readings = conn.execute("SELECT * FROM readings ORDER BY id").fetchall()
        events = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
        waiting = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        (handed_out,) = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        rounds = conn.execute("SELECT count(*) FROM rounds").fetchone()[0]
    lines = [json.loads(line, parse_float=Decimal) for line in feed.read_text(encoding="utf-8").splitlines()]

    # the runs that were killed did real work: rounds stored and fed before the last run, and
    # kills that came between a write to the feed and its acknowledgement
    assert fed_by_killed_runs > 0 and rounds >= 2, (fed_by_killed_runs, rounds)
    assert any(reoffered), f"no kill came between a write and its acknowledgement: {reoffered}"
    assert waiting == 0
    # every outbox id ever handed out (AUTOINCREMENT, rolled back with a killed transaction)
    # is in the feed once: one id per stored reading and event, the uplink being the only one
    ids = [line["id"] for line in lines]
    assert len(ids) == len(set(ids)), [i for i, c in Counter(ids).items() if c > 1]
    assert sorted(ids) == list(range(1, handed_out + 1))
    assert handed_out == len(readings) + len(events)

    # by content: the feed holds exactly the stored readings and events, each once
    fed_readings = [line for line in lines if line["kind"] == "reading"]
    fed_events = [line for line in lines if line["kind"] == "event"]
    assert len(fed_readings) + len(fed_events) == len(lines)
    stored = {_reading_key(r): (r["id"], _reading_content(r)) for r in readings}
    assert len(stored) == len(readings)
    fed = Counter(_reading_key(line) for line in fed_readings)
    assert [k for k, c in fed.items() if c > 1] == []
    assert set(fed) == set(stored)
    assert {_reading_key(line): _reading_content(line) for line in fed_readings} == {
        k: content for k, (_, content) in stored.items()}
    stored_events = {_event_key(e["kind"], e, json.loads(e["data"], parse_float=Decimal)): e["id"] for e in events}
    assert len(stored_events) == len(events)
    fed_event_keys = Counter(_event_key(line["event"], line, line["data"]) for line in fed_events)
    assert [k for k, c in fed_event_keys.items() if c > 1] == []
    assert set(fed_event_keys) == set(stored_events)
    assert {k[0] for k in stored_events} >= {"round_finished", "meter_dead"}
    assert {r["quality"] for r in readings} >= {"ok", "checksum_error"}

    # and by id: each line's outbox id is its own row's (rows are queued in the order stored)
    by_id = sorted(lines, key=lambda line: line["id"])
    assert [stored[_reading_key(line)][0] for line in by_id if line["kind"] == "reading"] == [r["id"] for r in readings]
    assert [stored_events[_event_key(line["event"], line, line["data"])] for line in by_id
            if line["kind"] == "event"] == [e["id"] for e in events]
    print(f"{len(readings)} readings, {len(events)} events, {rounds} rounds; after each kill, items written "
          f"but not acknowledged: {reoffered}")
