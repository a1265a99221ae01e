"""The head-end end to end, real everything: simulated DL/T 645 meters on a pty, ``meterhub
run`` with the ``gdw1376.1`` uplink over TCP, and ``meterhub head-end`` on a SQLite file, each
a process of its own; requests and commands through ``meterhub head-end request|command``,
which meet the head-end only in the store."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from meterhub.plugins import get_plugins
from meterhub.simsite import MeterSpec, start_bus, site_text
from system_helpers import assert_no_traceback, meterhub

pytestmark = pytest.mark.timeout(180)

PW = "00112233445566778899aabbccddeeff"
TERMINAL = "32010001"
#: Generous waits: the suite runs two workers on a loaded 2-core machine.
WAIT_S = 60.0


def _start(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", "meterhub.cli", *args], cwd=cwd, stdout=out,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _until(condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(db: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not made yet, or busy for a moment
        return []


class Chain:
    """Two meters -> ``meterhub run`` (terminal 3201/1) -> ``meterhub head-end``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.head_end_db = root / "he.db"
        self.hub_db = root / "hub.db"
        self.head_end_log = root / "head-end.log"
        (root / "allow.txt").write_text("# the utility's terminals\n3201/1\n", encoding="utf-8")
        self.meters = start_bus(get_plugins().simulators(), [MeterSpec("dlt645", 2)], seed=5, baudrate=9600)
        for entry in self.meters.entries:
            entry["quantities"] = ["energy_import", "energy_import_t1", "energy_import_t2", "energy_import_t3",
                                   "energy_import_t4"]
        self.head_end = _start(["head-end", "--listen", "127.0.0.1:0", "--db", str(self.head_end_db), "--allow",
                                "allow.txt", "--realtime", "2", "--heartbeat", "5", "-v"], root, self.head_end_log,
                               env={"METERHUB_SECRET_T1_PASSWORD": PW})
        self.port = int(_until(self._port, "the head-end to listen"))
        self.site = self._site(root / "site.yaml", 1)
        self.concentrator = _start(["run", str(self.site)], root, root / "run.log")

    def _port(self) -> str | None:
        match = re.search(rb"listening on 127\.0\.0\.1:(\d+)", self.head_end_log.read_bytes())
        return match and match.group(1).decode()

    def _site(self, path: Path, address: int, db: Path | None = None) -> Path:
        path.write_text(
            site_text({"bus1": self.meters}, store=f"sqlite:///{db or self.hub_db}", interval="3s", retries=1)
            + f'uplink: {{protocol: gdw1376.1, transport: tcp, server: "127.0.0.1:{self.port}", area_code: "3201", '
              f'terminal_address: {address}, heartbeat_s: 5, password: "{PW}"}}\n', encoding="utf-8")
        return path

    def stop(self) -> None:
        _stop(self.concentrator)
        _stop(self.head_end)
        self.meters.stop()

    def head_end_cmd(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = meterhub("head-end", *args, "--db", str(self.head_end_db), cwd=self.root, env=env)
        assert_no_traceback(result)
        return result

    def stored_at_head_end(self, point: int) -> list[sqlite3.Row]:
        return _rows(self.head_end_db, "SELECT * FROM readings WHERE terminal = ? AND meter = ? AND quantity = "
                     "'1-0:1.8.0' AND period IS NULL ORDER BY timestamp", TERMINAL, str(point))

    def stored_at_hub(self, address: str) -> set[Decimal]:
        return {Decimal(r["value"]) for r in _rows(self.hub_db, "SELECT value FROM readings WHERE meter = ? AND "
                                                   "quantity = '1-0:1.8.0' AND quality = 'ok'", address)}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    made = Chain(tmp_path_factory.mktemp("head-end"))
    try:
        _until(lambda: made.stored_at_head_end(1) and made.stored_at_head_end(2), "readings at the head-end")
        yield made
    finally:
        made.stop()


def test_every_reading_at_the_head_end_is_one_the_meter_gave_keyed_by_terminal_and_point(chain: Chain) -> None:
    addresses = {1: chain.meters.entries[0]["address"], 2: chain.meters.entries[1]["address"]}
    for point, address in addresses.items():
        at_head_end = {Decimal(r["value"]) for r in chain.stored_at_head_end(point)}
        assert at_head_end and at_head_end <= chain.stored_at_hub(address)
    rows = _rows(chain.head_end_db, "SELECT DISTINCT terminal, channel, protocol FROM readings")
    assert [tuple(r) for r in rows] == [(TERMINAL, "", "gdw1376.1")]


def test_the_terminal_is_online_on_the_node_that_holds_it(chain: Chain) -> None:
    result = chain.head_end_cmd("terminals", "--json")
    assert result.returncode == 0, result.stderr
    (terminal,) = json.loads(result.stdout)
    assert terminal["terminal"] == TERMINAL and terminal["online"]
    assert terminal["node"] and terminal["heartbeats"] >= 0


def test_a_request_reaches_the_terminal_and_answers_with_what_the_concentrator_read(chain: Chain) -> None:
    result = chain.head_end_cmd("request", "--terminal", "3201/1", "--point", "1", "--fn", "129", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["state"] == "answered" and record["node"]
    (item,) = record["answer"]["items"]
    assert (item["point"], item["fn"]) == (1, 129)
    assert Decimal(item["value"]["values"][0]) in chain.stored_at_hub(chain.meters.entries[0]["address"])


def test_a_request_for_a_terminal_nobody_holds_fails_naming_it(chain: Chain) -> None:
    result = chain.head_end_cmd("request", "--terminal", "3201/9", "--fn", "2", "--timeout", "1")
    assert result.returncode == 1
    assert "32010009 is not online on any head-end node" in result.stderr


def test_a_command_without_credentials_is_refused_and_with_them_sets_the_terminals_clock(chain: Chain) -> None:
    refused = chain.head_end_cmd("command", "set-time", "--terminal", "3201/1")
    assert refused.returncode == 1 and "needs credentials" in refused.stderr
    done = chain.head_end_cmd("command", "set-time", "--terminal", "3201/1", "--credential", "t1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == {"confirmed": True}
    journal = [(r["name"], r["state"], r["channel"]) for r in _rows(chain.head_end_db,
                                                                   "SELECT * FROM commands ORDER BY requested")]
    assert journal[-2:] == [("set_time", "refused", TERMINAL), ("set_time", "answered", TERMINAL)]
    at_terminal = _rows(chain.hub_db, "SELECT * FROM commands WHERE name = 'set_clock'")
    assert [(r["state"], r["issuer"]) for r in at_terminal] == [("answered", "gdw1376.1 master 1")]


def _login_frame(address: int) -> bytes:
    from meterhub.protocols import gdw1376_1 as g
    from meterhub.protocols import gdw1376_1_data as d

    return g.encode(g.Frame(g.Direction.UP, True, g.PrimaryFunction.LINK_TEST, "3201", address, g.Afn.LINK,
                            g.pack_units([d.unit([0], [1])]), seq=0, con=True))


def test_a_terminal_not_on_the_allowlist_is_refused_and_not_recorded(chain: Chain) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", chain.port), timeout=WAIT_S) as stranger:
        stranger.sendall(_login_frame(2))
        assert stranger.recv(4096) == b""  # closed without a confirm
    assert b"terminal 32010002 is not allowed" in chain.head_end_log.read_bytes()
    assert not _rows(chain.head_end_db, "SELECT * FROM terminals WHERE name = '32010002'")
    assert not _rows(chain.head_end_db, "SELECT * FROM readings WHERE terminal = '32010002'")
