"""The head-end's HTTP API: a real HeadEnd on a SQLite store file, its API on 127.0.0.1,
a scripted 1376.1 terminal over real TCP that logs in, is read on the schedule and sends
active reports; every endpoint asked with aiohttp's client and checked against the store."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp")

from meterhub.headend import http
from meterhub.headend.http import HeadEndApi, plain
from meterhub.headend.server import HeadEnd, reads_scope
from meterhub.jsonout import (
    command_to_dict,
    event_to_dict,
    reading_to_dict,
    terminal_to_dict,
)
from meterhub.model import RequestState
from meterhub.plugins import Plugins
from meterhub.protocols import gdw1376_1_data as data
from meterhub.protocols.gdw1376_1 import Afn, DataUnit, Frame, SecondaryFunction
from meterhub.secrets import EnvSecrets
from meterhub.store import open_store
from meterhub.store.writer import StoreWriter
from meterhub.testing import gdw1376
from meterhub.testing.gdw1376 import ScriptedTerminal, until

pytestmark = pytest.mark.timeout(60)

AREA, ADDRESS = "3201", 1
NAME = "32010001"
ZONE = timezone(timedelta(hours=8))  #: the terminals' local time: China Standard Time
WAIT_S = 10.0  #: a bound on what should happen within a few round trips
TOKEN = "s3cret-api-token"
PW = "00112233445566778899aabbccddeeff"  #: the terminal's PW, in the node's secret store
#: the node's environment: the API token and the terminal's password
SECRETS = {"METERHUB_SECRET_HEAD_END_API_TOKEN": TOKEN, "METERHUB_SECRET_T_3201_1_PASSWORD": PW}
POINTS = [1, 2]  #: the terminal's archive; it answers the scheduled read for point 1 alone
REPORTED = data.TariffEnergy(datetime(2026, 12, 3, 16, 5), [Decimal("12.34"), Decimal("1.5")])
READ = data.TariffEnergy(datetime(2026, 12, 3, 16, 0), [Decimal("12.30"), Decimal("1.25")])
FAILURE = data.ReadFailure(datetime(2026, 12, 3, 16, 30), data.PointFlag(2, True), None, None, None)


def answer(request: Frame, afn: int, units: list[DataUnit], function: int = SecondaryFunction.USER_DATA) -> Frame:
    return gdw1376.answer(request, afn, units, function)


def respond(request: Frame) -> list[Frame]:
    """The terminal: its archive has points 1 and 2, it has the energy of point 1 alone,
    and it confirms every command."""
    if request.afn == Afn.QUERY:
        records = [data.MeterRecord(p, p, 1, None, data.MeterProtocol.DLT645_2007, f"{p:012d}") for p in POINTS]
        return [answer(request, Afn.QUERY, [data.unit([0], [10], [data.MeterArchive(records)])])]
    if request.afn == Afn.CLASS1:
        return [answer(request, Afn.CLASS1, [data.unit([1], [129], [READ])])]
    if request.afn == Afn.CONTROL:
        return [answer(request, Afn.CONFIRM, [data.unit([0], [1])], SecondaryFunction.CONFIRM)]
    return []


def Terminal(port: int, respond: Callable[[Frame], list[Frame]]) -> ScriptedTerminal:
    return ScriptedTerminal(port, respond, area=AREA, address=ADDRESS)


class Site:
    """A node with its API and a terminal that has logged in, been read and reported."""

    def __init__(self, db: Path, node: HeadEnd, api: HeadEndApi, client: Any) -> None:
        self.db = db
        self.node = node
        self.url = f"http://127.0.0.1:{api.port}"
        self.client = client

    def store(self) -> Any:
        return open_store(f"sqlite:///{self.db}")

    async def get(self, path: str, *, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.client.get(self.url + path, headers=headers) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()

    async def post(self, path: str, body: Any, *, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.client.post(self.url + path, data=raw, headers=headers) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()

    async def answered(self, id: str, token: str | None = None) -> Any:
        """The request's record once it ended."""
        async def ended() -> Any:
            status, record = await self.get(f"/api/requests/{id}", token=token)
            assert status == 200
            return record if record["state"] in ("answered", "failed") else None

        deadline = asyncio.get_running_loop().time() + WAIT_S
        while (record := await ended()) is None:
            assert asyncio.get_running_loop().time() < deadline, f"request {id} did not end"
            await asyncio.sleep(0.05)
        return record


@contextlib.asynccontextmanager
async def site(db: Path, *, environ: dict[str, str] | None = None, **api: Any) -> AsyncIterator[Site]:
    secrets = EnvSecrets(environ=SECRETS if environ is None else environ)
    writer = StoreWriter(lambda: open_store(f"sqlite:///{db}"))
    await writer.start()
    node = HeadEnd(writer, plugins=Plugins(load_entry_points=False), secrets=secrets, zone=ZONE, allow=["3201/1"],
                   answer_s=5.0, request_poll_s=0.05, realtime_s=600, frozen_days=0, frozen_months=0, node="he-1")
    await node.start("127.0.0.1", 0)
    server = await HeadEndApi(node, **api).start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client, Terminal(node.port, respond) as terminal:
            await terminal.report(Afn.CLASS1, [data.unit([1], [129], [REPORTED])])
            await terminal.report(Afn.CLASS3, [DataUnit([0], [1], data.EventReply(1, 0, 0, 1, [FAILURE]).encode())])
            with open_store(f"sqlite:///{db}") as store:  # the scheduled read, counted
                await until(lambda: store.settings(reads_scope(NAME)), "the scheduled read's counts")
            yield Site(db, node, server, client)
    finally:
        await server.stop()
        await node.stop()
        await writer.close()


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


# --- reads -------------------------------------------------------------------------------------


def test_the_terminals_list_is_the_stores(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            status, body = await s.get("/api/terminals")
            with s.store() as store:
                expected = [plain(terminal_to_dict(t)) for t in store.terminals()]
            assert status == 200 and body == {"terminals": expected}
            (terminal,) = body["terminals"]
            assert terminal["terminal"] == NAME and terminal["online"] is True and terminal["node"] == "he-1"
            assert terminal["seen"].endswith("+00:00")

    run(scenario)


def test_health_names_the_node_and_the_terminals_it_holds(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            status, body = await s.get("/api/health")
            assert status == 200
            assert body["node"] == "he-1" and body["terminals"] == [NAME] and body["uptime_s"] >= 0

    run(scenario)


def test_a_terminal_shows_each_points_latest_readings_and_its_read_rate(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            status, body = await s.get("/api/terminals/3201%2F1")
            with s.store() as store:
                latest = store.latest(terminal=NAME)
                kept = store.settings(reads_scope(NAME))["reads"]
            assert status == 200 and body["terminal"] == NAME and body["online"] is True
            # the scheduled read asked for points 1 and 2; the terminal had point 1's energy alone
            assert body["reads"] == {"asked": 2, "answered": 1, "rate": 0.5, "since": kept["since"]}
            (meter,) = body["meters"]
            assert meter["point"] == 1
            assert meter["readings"] == [plain(reading_to_dict(r)) for r in latest]
            # the report's values (16:05 local) are newer than the scheduled read's (16:00): exact digits
            assert {r["quantity"]: r["value"] for r in meter["readings"]} == {"1-0:1.8.0": "12.3400",
                                                                              "1-0:1.8.1": "1.5000"}
            assert {r["timestamp"] for r in meter["readings"]} == {"2026-12-03T08:05:00+00:00"}

    run(scenario)


def test_a_terminals_readings_are_filtered_as_asked(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            status, body = await s.get("/api/terminals/32010001/readings?quantity=1-0:1.8.0&point=1"
                                       "&since=2026-12-03T16:00:00%2B08:00&limit=10")
            with s.store() as store:
                stored = store.readings(terminal=NAME, quantity="1-0:1.8.0", meter="1")
            assert status == 200 and body["terminal"] == NAME
            assert body["readings"] == [plain(reading_to_dict(r)) for r in stored]
            assert [r["value"] for r in body["readings"]] == ["12.3000", "12.3400"]  # the read, then the report
            _, later = await s.get("/api/terminals/32010001/readings?since=2026-12-03T08:01:00Z")
            assert {r["value"] for r in later["readings"]} == {"12.3400", "1.5000"}
            _, first = await s.get("/api/terminals/32010001/readings?limit=1")
            assert len(first["readings"]) == 1

    run(scenario)


def test_events_are_the_stores(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            status, body = await s.get("/api/events?kind=meter_read_failure&terminal=3201/1")
            with s.store() as store:
                stored = store.events(kind="meter_read_failure")
            assert status == 200 and body == {"events": [plain(event_to_dict(e)) for e in stored]}
            (event,) = body["events"]
            assert event["source"] == NAME and event["data"]["point"] == 2
            assert event["timestamp"] == "2026-12-03T08:30:00+00:00"
            _, none = await s.get("/api/events?since=2026-12-04")
            assert none == {"events": []}

    run(scenario)


def test_an_unknown_terminal_or_request_is_404(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            for path in ("/api/terminals/32019999", "/api/terminals/3201%2F9/readings",
                         "/api/requests/00000000000000000000000000000000", "/api/nothing"):
                status, body = await s.get(path)
                assert status == 404 and body["error"], path

    run(scenario)


# --- writes ------------------------------------------------------------------------------------


READ_REQUEST = {"terminal": "3201/1", "kind": "read", "args": {"points": [1], "fns": [129]}, "timeout": 10}


def test_writes_are_refused_while_no_token_is_configured(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db", environ={}) as s:
            status, body = await s.post("/api/requests", READ_REQUEST, token="anything")
            assert status == 403
            assert "METERHUB_SECRET_HEAD_END_API_TOKEN" in body["error"] and "head-end-api" in body["error"]
            with s.store() as store:
                assert store.claim_requests([NAME], "nobody") == []  # nothing was queued

    run(scenario)


def test_writes_without_the_right_token_are_401(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            for token in (None, "wrong", TOKEN + "x"):
                status, body = await s.post("/api/requests", READ_REQUEST, token=token)
                assert status == 401 and "Bearer" in body["error"], token

    run(scenario)


def test_the_token_entry_is_the_one_named(tmp_path: Path) -> None:
    async def scenario() -> None:
        environ = {"METERHUB_SECRET_OPS_TOKEN": "ops-token"}
        async with site(tmp_path / "he.db", environ=environ, token_entry="ops") as s:
            status, _ = await s.post("/api/requests", READ_REQUEST, token="ops-token")
            assert status == 202

    run(scenario)


def test_an_authenticated_read_is_queued_and_answered_by_the_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            status, queued = await s.post("/api/requests", {**READ_REQUEST, "issuer": "alice"}, token=TOKEN)
            assert status == 202 and queued["state"] == "queued"
            record = await s.answered(queued["id"])
            assert record["state"] == "answered" and record["node"] == "he-1"
            assert record["issuer"].startswith("alice (http 127.0.0.1")
            (item,) = record["answer"]["items"]
            assert (item["point"], item["fn"], item["value"]["values"]) == (1, 129, ["12.3000", "1.2500"])
            with s.store() as store:
                assert store.request(queued["id"]).state is RequestState.ANSWERED

    run(scenario)


def test_an_authenticated_command_is_sent_and_audited(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            body = {"terminal": "32010001", "kind": "command", "args": {"action": "set-time"},
                    "credential": "t-3201-1", "timeout": 10}
            status, queued = await s.post("/api/requests", body, token=TOKEN)
            assert status == 202
            record = await s.answered(queued["id"])
            assert record["state"] == "answered" and record["answer"] == {"confirmed": True}
            status, listed = await s.get("/api/commands?state=answered")
            with s.store() as store:
                expected = [plain(command_to_dict(r)) for r in store.commands(state=None)]
            assert status == 200 and listed == {"commands": expected}
            (command,) = listed["commands"]
            assert (command["id"], command["command"], command["channel"]) == (queued["id"], "set_time", NAME)
            assert PW not in json.dumps(listed)

    run(scenario)


def test_a_request_no_node_takes_fails_once_its_time_is_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "EXPIRY_GRACE_S", 0.0)

    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            body = {**READ_REQUEST, "terminal": "3201/2", "timeout": 0.2}
            status, queued = await s.post("/api/requests", body, token=TOKEN)
            assert status == 202
            await asyncio.sleep(0.3)
            record = await s.answered(queued["id"])
            assert record["state"] == "failed" and "3201" in record["reason"] and "not online" in record["reason"]

    run(scenario)


def test_reads_need_the_token_when_told(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db", auth_reads=True) as s:
            for path in ("/api/terminals", "/api/health", "/api/events"):
                assert (await s.get(path))[0] == 401, path
                assert (await s.get(path, token="wrong"))[0] == 401, path
                assert (await s.get(path, token=TOKEN))[0] == 200, path

    run(scenario)


# --- bad input -----------------------------------------------------------------------------------


BAD_READS = [
    "/api/terminals/zz01",  # not a terminal
    "/api/terminals/3201%2F70000",  # A2 out of range
    "/api/terminals/32010001/readings?since=yesterday",
    "/api/terminals/32010001/readings?limit=0",
    "/api/terminals/32010001/readings?limit=many",
    "/api/terminals/32010001/readings?point=-1",
    "/api/terminals/32010001/readings?meter=1",  # not a parameter of this endpoint
    "/api/events?since=2026-13-01",
    "/api/events?terminal=nope",
    "/api/commands?state=lost",
    "/api/requests/not%20an%20id",
]


def test_bad_queries_are_400_with_a_json_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            for path in BAD_READS:
                status, body = await s.get(path)
                assert status == 400 and isinstance(body["error"], str) and "Traceback" not in body["error"], path

    run(scenario)


BAD_BODIES: list[Any] = [
    b"{not json",
    b"\xff\xfe\x00",
    b"[" * 30_000 + b"]" * 30_000,  # deep, under the size bound
    b'{"terminal": "3201/1", "kind": "read", "args": {"fns": [129]}, "pad": "' + b"x" * (64 * 1024) + b'"}',
    [],
    {"kind": "read", "args": {"fns": [129]}},  # no terminal
    {**READ_REQUEST, "terminal": "32/1"},
    {**READ_REQUEST, "kind": "write"},
    {**READ_REQUEST, "args": {"points": [1]}},  # no fns
    {**READ_REQUEST, "args": {"fns": [129], "points": [True]}},
    {**READ_REQUEST, "args": {"fns": [129], "day": "2026-02-30"}},
    {**READ_REQUEST, "args": {"fns": [129], "password": "00"}},  # never a secret in a request
    {**READ_REQUEST, "timeout": 0},
    {**READ_REQUEST, "timeout": "10"},
    {**READ_REQUEST, "extra": 1},
    {"terminal": "3201/1", "kind": "command", "args": {"action": "set_time"}},  # no credential
    {"terminal": "3201/1", "kind": "command", "args": {"action": "trip"}, "credential": "t-3201-1"},  # no point
    {"terminal": "3201/1", "kind": "command", "args": {"action": "explode"}, "credential": "t-3201-1"},
]


def test_bad_bodies_are_400_with_a_json_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with site(tmp_path / "he.db") as s:
            for body in BAD_BODIES:
                status, answer = await s.post("/api/requests", body, token=TOKEN)
                assert status == 400 and isinstance(answer["error"], str), (body[:80] if isinstance(body, bytes)
                                                                            else body)
            with s.store() as store:  # nothing was queued
                assert store.claim_requests([NAME, "32010002"], "nobody") == []

    run(scenario)
