"""Store schema version 4: the settings a running concentrator was given (by a master
station) outlive a restart."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from meterhub.store import SCHEMA_VERSION, SqliteStore, open_store


def v3_file(path: Path) -> Path:
    """A store as schema version 3 left it: today's schema without what versions 4 to 6 added."""
    with open_store(f"sqlite:///{path}") as s:
        for table in ("settings", "terminals", "allowed_terminals", "requests"):
            s._conn.execute(f"DROP TABLE {table}")
        s._conn.execute("ALTER TABLE readings DROP COLUMN relays")
        s._conn.execute("PRAGMA user_version = 3")
    return path


def test_a_v3_file_gets_the_settings_table(tmp_path: Path) -> None:
    path = v3_file(tmp_path / "v3.db")
    with sqlite3.connect(path) as conn:
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'settings'").fetchall()
    conn.close()
    with open_store(f"sqlite:///{path}") as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.settings("up") == {}
        s.put_settings("up", {"heartbeat_s": 300})
        assert s.settings("up") == {"heartbeat_s": 300}


def test_settings_outlive_a_reopen_and_stay_in_their_scope(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with open_store(url) as s:
        s.put_settings("master", {"server": ["10.0.0.1", 4001], "apn": "cmnet", "offset_s": Decimal("-1.50")})
        s.put_settings("archive", {"7": {"address": "000000000007"}})
    with open_store(url) as s:
        assert s.settings("master") == {"apn": "cmnet", "offset_s": "-1.50", "server": ["10.0.0.1", 4001]}
        assert s.settings("archive") == {"7": {"address": "000000000007"}}
        assert s.settings("other") == {}


def test_a_put_replaces_its_keys_and_none_deletes(tmp_path: Path) -> None:
    with SqliteStore(str(tmp_path / "s.db")) as s:
        s.put_settings("up", {"a": 1, "b": 2})
        s.put_settings("up", {"a": 3, "b": None, "c": datetime(2026, 12, 3, 8, 0, tzinfo=UTC)})
        assert s.settings("up") == {"a": 3, "c": "2026-12-03T08:00:00+00:00"}


def test_a_value_json_cannot_hold_stores_nothing_of_the_call(tmp_path: Path) -> None:
    with SqliteStore(str(tmp_path / "s.db")) as s:
        s.put_settings("up", {"a": 1})
        with pytest.raises(TypeError):
            s.put_settings("up", {"a": 2, "b": object()})
        assert s.settings("up") == {"a": 1}
