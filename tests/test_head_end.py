"""The head-end end to end, real everything: simulated DL/T 645 meters on a pty, ``meterhub
run`` with the ``gdw1376.1`` uplink through a simulated EC20 modem on a pty (its TCP real), and
``meterhub head-end`` on a SQLite file or a PostgreSQL database, each a process of its own;
requests and commands through ``meterhub head-end request|command``, which meet the head-end
only in the store."""

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
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from meterhub.plugins import get_plugins
from meterhub.simsite import MeterSpec, site_text, start_bus
from meterhub_gprs.modem_sim import ModemSim
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
    """Meters -> ``meterhub run`` (terminal 3201/1) -> simulated EC20 -> ``meterhub head-end``
    on ``db`` (a SQLite file by default)."""

    def __init__(self, root: Path, db: str | None = None, *, meters: int = 2, interval: str = "3s",
                 realtime: str = "2") -> None:
        self.root = root
        self.db = db or str(root / "he.db")
        self.hub_db = root / "hub.db"
        self.head_end_log = root / "head-end.log"
        (root / "allow.txt").write_text("# the utility's terminals\n3201/1\n", encoding="utf-8")
        self.meters = start_bus(get_plugins().simulators(), [MeterSpec("dlt645", meters)], seed=5, baudrate=9600)
        for entry in self.meters.entries:
            entry["quantities"] = ["energy_import", "energy_import_t1", "energy_import_t2", "energy_import_t3",
                                   "energy_import_t4"]
        self.modem = ModemSim("EC20", apn="cmnet").start()
        self.realtime = realtime
        self.port = 0
        self.head_end = self.start_head_end()
        self.site = self._site(root / "site.yaml", 1, interval)
        self.concentrator = _start(["run", str(self.site)], root, root / "run.log")

    def start_head_end(self) -> subprocess.Popen[bytes]:
        """(Re)start the head-end; on the port it had, if it had one."""
        self.head_end_log.write_bytes(b"")
        process = _start(["head-end", "--listen", f"127.0.0.1:{self.port}", "--db", self.db, "--allow", "allow.txt",
                          "--realtime", self.realtime, "--heartbeat", "5", "-v"], self.root, self.head_end_log,
                         env={"METERHUB_SECRET_T1_PASSWORD": PW})
        self.port = int(_until(self._port, "the head-end to listen"))
        return process

    def _port(self) -> str | None:
        match = re.search(rb"listening on 127\.0\.0\.1:(\d+)", self.head_end_log.read_bytes())
        return match and match.group(1).decode()

    def _site(self, path: Path, address: int, interval: str) -> Path:
        path.write_text(
            site_text({"bus1": self.meters}, store=f"sqlite:///{self.hub_db}", interval=interval, retries=1)
            + f"uplink: {{protocol: gdw1376.1, transport: gprs, port: {self.modem.path}, apn: cmnet, "
              f'server: "127.0.0.1:{self.port}", area_code: "3201", terminal_address: {address}, heartbeat_s: 5, '
              f'password: "{PW}"}}\n', encoding="utf-8")
        return path

    def stop(self) -> None:
        _stop(self.concentrator)
        _stop(self.head_end)
        self.modem.stop()
        self.meters.stop()

    def head_end_cmd(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = meterhub("head-end", *args, "--db", self.db, cwd=self.root, env=env)
        assert_no_traceback(result)
        return result

    def at_head_end(self, **filters: str) -> list[dict[str, Any]]:
        """What the head-end stored, as ``meterhub export --json`` gives it (any backend)."""
        result = meterhub("export", "--db", self.db, "--format", "json", *(a for k, v in filters.items()
                                                                           for a in (f"--{k}", v)), cwd=self.root)
        assert_no_traceback(result)
        return json.loads(result.stdout, parse_float=Decimal) if result.returncode == 0 else []

    def stored_at_head_end(self, point: int) -> list[dict[str, Any]]:
        return [r for r in self.at_head_end(meter=str(point), quantity="1-0:1.8.0")
                if r["terminal"] == TERMINAL and r["period"] is None]

    def stored_at_hub(self, address: str) -> set[Decimal]:
        return {Decimal(r["value"]) for r in _rows(self.hub_db, "SELECT value FROM readings WHERE meter = ? AND "
                                                   "quantity = '1-0:1.8.0' AND quality = 'ok'", address)}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def chain(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    db = request.getfixturevalue("postgres_server").create_database() if request.param == "postgres" else None
    made = Chain(tmp_path_factory.mktemp("head-end"), db)
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
    assert {(r["terminal"], r["channel"], r["protocol"]) for r in chain.at_head_end()} == {(TERMINAL, "", "gdw1376.1")}


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
    listed = meterhub("commands", "--db", chain.db, "--json", cwd=chain.root)
    journal = [(c["command"], c["state"], c["channel"]) for c in json.loads(listed.stdout)]
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
    terminals = json.loads(chain.head_end_cmd("terminals", "--json").stdout)
    assert [t["terminal"] for t in terminals] == [TERMINAL]
    assert chain.at_head_end(terminal="3201/2") == []


def _minute(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp).replace(second=0, microsecond=0)


def test_a_head_end_killed_mid_ingest_and_restarted_has_every_reading_the_terminal_handed_over(
        tmp_path: Path) -> None:
    chain = Chain(tmp_path, meters=4, interval="2s", realtime="0")  # active reports only
    try:
        _until(lambda: len(chain.at_head_end(quantity="1-0:1.8.0")) >= 4, "the first reports")
        # F129 carries its read time to the minute, and the head-end keeps one per point and
        # minute: killed near a minute's end, the readings span two minutes of reports
        _until(lambda: 50 <= datetime.now().second < 57, "a minute's end", timeout=70)
        chain.head_end.kill()  # kill -9: no logout, no flush, mid-ingest
        chain.head_end.wait()
        time.sleep(5)  # the concentrator reads on; its uplink finds no master
        waiting = _rows(chain.hub_db, "SELECT count(*) AS n FROM outbox")[0]["n"]
        chain.head_end = chain.start_head_end()
        time.sleep(4)
        _until(lambda: _rows(chain.hub_db, "SELECT count(*) AS n FROM outbox")[0]["n"] == 0, "the outbox to drain")
        handed_over = _rows(chain.hub_db, "SELECT meter, value, timestamp FROM readings r WHERE quantity = "
                            "'1-0:1.8.0' AND quality = 'ok' AND NOT EXISTS (SELECT 1 FROM outbox o "
                            "WHERE o.kind = 'reading' AND o.ref = r.id)")
    finally:
        chain.stop()
    points = {entry["address"]: n for n, entry in enumerate(chain.meters.entries, 1)}
    at_head_end = {(int(r["meter"]), _minute(r["timestamp"])): Decimal(r["value"])
                   for r in chain.at_head_end(quantity="1-0:1.8.0")}
    stored: dict[tuple[int, datetime], set[Decimal]] = {}
    for r in handed_over:
        stored.setdefault((points[r["meter"]], _minute(r["timestamp"])), set()).add(Decimal(r["value"]))
    # reports waited for the restart (a second minute of them is usual but not sure on a loaded host)
    assert waiting > 0 and len(stored) >= len(points)
    missing = sorted(set(stored) - set(at_head_end))
    assert missing == [], f"acknowledged by the head-end but not stored there: {missing}"
    assert all(at_head_end[key] in values for key, values in stored.items())
    assert b"logged in" in chain.head_end_log.read_bytes()  # the restarted node took the terminal back


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_contract_a_login_and_heartbeats_are_confirmed_through_50_hostile_connections(tmp_path: Path) -> None:
    import asyncio

    from meterhub.protocols import gdw1376_1 as g
    from meterhub.protocols import gdw1376_1_data as d

    db = tmp_path / "he.db"
    assert meterhub("head-end", "allow", "3201/1", "--db", str(db), cwd=tmp_path).returncode == 0
    port = _free_port()
    log = tmp_path / "head-end.log"
    process = _start(["head-end", "--listen", f"127.0.0.1:{port}", "--db", str(db), "--login-timeout", "3"],
                     tmp_path, log)
    heartbeat = g.encode(g.Frame(g.Direction.UP, True, g.PrimaryFunction.LINK_TEST, "3201", 1, g.Afn.LINK,
                                 g.pack_units([d.unit([0], [3])]), seq=1, con=True))

    async def hostile(n: int) -> None:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            kind = n % 5
            if kind == 0:
                writer.write(os.urandom(4096))  # garbage
            elif kind == 1:
                writer.write(bytes.fromhex("68 FE FF FE FF 68"))  # a length past the standard's
            elif kind == 2:
                writer.write(_login_frame(1)[:9])  # half a frame, then silence
            elif kind == 3:
                writer.write(_login_frame(2))  # not on the allowlist
            else:
                for byte in _login_frame(1)[:-1]:  # slow-loris
                    writer.write(bytes((byte,)))
                    await writer.drain()
                    await asyncio.sleep(0.05)
            with contextlib.suppress(OSError):
                await writer.drain()
            await asyncio.sleep(1)
            writer.close()

    async def good() -> tuple[g.Frame, g.Frame]:
        await asyncio.sleep(0.3)  # the hostile ones are in by now
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        decoder = g.StreamDecoder()
        frames: list[g.Frame] = []

        async def next_frame() -> g.Frame:
            """The head-end's next answer (its own requests, such as the archive query a
            login brings, are not what this terminal waits for)."""
            while True:
                while not frames:
                    frames.extend(f for f in decoder.feed(await asyncio.wait_for(reader.read(4096), 10))
                                  if isinstance(f, g.Frame))
                frame = frames.pop(0)
                if not frame.prm:
                    return frame

        writer.write(_login_frame(1))
        login = await next_frame()
        writer.write(heartbeat)
        beat = await next_frame()
        writer.close()
        return login, beat

    async def scenario() -> tuple[g.Frame, g.Frame]:
        results = await asyncio.gather(good(), *(hostile(n) for n in range(50)))
        return results[0]

    try:
        _until(lambda: b"listening on" in log.read_bytes(), "the head-end to listen")
        login, beat = asyncio.run(scenario())
        assert process.poll() is None, log.read_text()  # it stayed up
    finally:
        _stop(process)
    for answer, seq in ((login, 0), (beat, 1)):
        assert (answer.afn, answer.seq, answer.prm) == (g.Afn.CONFIRM, seq, False)
        assert [i.fn for i in d.items(answer)] == [1]  # AFN 00 F1


def test_a_trip_the_meter_has_no_credentials_for_is_denied_and_journalled_at_both_ends(chain: Chain) -> None:
    result = chain.head_end_cmd("command", "trip", "--terminal", "3201/1", "--point", "1", "--credential", "t1")
    assert result.returncode == 1 and "denied" in result.stderr
    listed = json.loads(meterhub("commands", "--db", chain.db, "--json", cwd=chain.root).stdout)
    assert [(c["command"], c["state"], c["meter"]) for c in listed][-1] == ("trip", "failed", "1")
    at_terminal = _rows(chain.hub_db, "SELECT * FROM commands WHERE name = 'relay'")
    assert [(r["state"], r["meter"], r["origin"]) for r in at_terminal][-1] == (
        "refused", chain.meters.entries[0]["address"], "uplink")
