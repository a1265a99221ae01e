"""Store schema version 5: a head-end's terminals, allowlist and request queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from meterhub.model import HeadEndRequest, RequestState
from meterhub.store import SCHEMA_VERSION, SqliteStore, StoreError, open_store

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(str(tmp_path / "head.db"))
    yield s
    s.close()


def test_a_v4_file_gets_the_head_end_tables(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    with open_store(f"sqlite:///{path}") as s:
        for table in ("terminals", "allowed_terminals", "requests"):
            s._conn.execute(f"DROP TABLE {table}")
        s._conn.execute("ALTER TABLE readings DROP COLUMN relays")  # version 6's
        s._conn.execute("PRAGMA user_version = 4")
    with open_store(f"sqlite:///{path}") as s:
        assert s.schema_version == SCHEMA_VERSION == 6
        s.allow_terminals(["32010001"])
        assert s.allowed_terminals() == ["32010001"]


def test_the_allowlist_adds_once_and_removes(store: SqliteStore) -> None:
    store.allow_terminals(["32010002", "32010001", "32010001"])
    assert store.allowed_terminals() == ["32010001", "32010002"]
    store.allow_terminals(["32010002", "99999999"], allowed=False)
    assert store.allowed_terminals() == ["32010001"]


def test_a_terminal_logs_in_heartbeats_and_goes_offline(store: SqliteStore) -> None:
    store.terminal_seen("32010001", node="a", peer="10.0.0.1:5000", at=T0, login=True)
    store.terminal_seen("32010001", node="a", peer="10.0.0.1:5000", at=T0 + timedelta(minutes=1), heartbeat=True)
    store.terminal_seen("32010001", node="a", peer="10.0.0.1:5000", at=T0 + timedelta(minutes=2), heartbeat=True)
    (t,) = store.terminals()
    assert (t.online, t.node, t.login, t.seen, t.heartbeats) == (True, "a", T0, T0 + timedelta(minutes=2), 2)
    store.terminal_seen("32010001", node="a", peer="", at=T0 + timedelta(minutes=3), online=False)
    assert store.terminals(online=True) == [] and store.terminals(online=False)[0].login == T0


def test_the_end_of_a_connection_on_another_node_leaves_the_terminal_online(store: SqliteStore) -> None:
    store.terminal_seen("32010001", node="a", peer="p1", at=T0, login=True)
    store.terminal_seen("32010001", node="b", peer="p2", at=T0 + timedelta(seconds=5), login=True)
    store.terminal_seen("32010001", node="a", peer="p1", at=T0 + timedelta(seconds=6), online=False)
    (t,) = store.terminals()
    assert (t.online, t.node, t.peer) == (True, "b", "p2")


def test_a_node_starting_again_takes_its_terminals_offline(store: SqliteStore) -> None:
    store.terminal_seen("32010001", node="a", peer="p", at=T0, login=True)
    store.terminal_seen("32010002", node="b", peer="p", at=T0, login=True)
    assert store.terminals_offline("a") == 1
    assert [t.name for t in store.terminals(online=True)] == ["32010002"]


def test_requests_are_claimed_once_by_the_node_holding_their_terminal(store: SqliteStore) -> None:
    first = HeadEndRequest("32010001", "read", {"afn": 12, "points": [1], "fns": [129]}, created=T0)
    other = HeadEndRequest("32010002", "read", {"afn": 12, "points": [1], "fns": [129]}, created=T0)
    second = HeadEndRequest("32010001", "command", {"action": "set_time"}, credential="t1", created=T0 + timedelta(seconds=1))
    for r in (second, other, first):
        store.add_request(r)
    claimed = store.claim_requests(["32010001"], "a", at=T0 + timedelta(seconds=2))
    assert [c.request for c in claimed] == [first, second]
    assert {c.state for c in claimed} == {RequestState.CLAIMED} and {c.node for c in claimed} == {"a"}
    assert store.claim_requests(["32010001"], "b", at=T0 + timedelta(seconds=2)) == []
    assert store.request(other.id).state is RequestState.QUEUED


def test_a_request_nobody_took_in_time_fails_instead_of_being_claimed(store: SqliteStore) -> None:
    late = HeadEndRequest("32010001", "read", {}, created=T0, timeout=5)
    store.add_request(late)
    assert store.claim_requests(["32010001"], "a", at=T0 + timedelta(seconds=6)) == []
    record = store.request(late.id)
    assert record.state is RequestState.FAILED and "timeout" in record.reason


def test_a_request_ends_once_with_its_answer(store: SqliteStore) -> None:
    request = HeadEndRequest("32010001", "read", {"afn": 12}, created=T0)
    store.add_request(request)
    store.claim_requests(["32010001"], "a", at=T0)
    done = store.finish_request(request.id, RequestState.ANSWERED, answer={"items": [{"fn": 129, "total": "1.50"}]})
    assert done.state is RequestState.ANSWERED and done.answer == {"items": [{"fn": 129, "total": "1.50"}]}
    with pytest.raises(StoreError, match="already answered"):
        store.finish_request(request.id, RequestState.FAILED, reason="late")
    with pytest.raises(StoreError, match="no request"):
        store.finish_request("nope", RequestState.FAILED)
    with pytest.raises(ValueError, match="answered or failed"):
        store.finish_request(request.id, RequestState.CLAIMED)


def test_a_request_id_is_queued_once(store: SqliteStore) -> None:
    request = HeadEndRequest("32010001", "read", {}, created=T0)
    store.add_request(request)
    with pytest.raises(StoreError, match="already in store"):
        store.add_request(request)
