"""The throwaway PostgreSQL server of meterhub.testing.postgres and its fixtures."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from meterhub.testing.postgres import (
    Binaries,
    PostgresServer,
    PostgresServerError,
    PostgresUnavailable,
    find_binaries,
    free_port,
)

if TYPE_CHECKING:
    import psycopg

#: Enough for a loopback connection to a server that is up; a refused one fails at once.
CONNECT_TIMEOUT_S = 10


def _connect(url: str) -> psycopg.Connection:
    """psycopg is imported here, not at the top: without it the server fixtures skip (or
    fail, under METERHUB_REQUIRE_SERVERS=1) with the reason, and the finder tests still run."""
    import psycopg

    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S)


def _fake_program(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def _table_names(url: str) -> list[str]:
    with _connect(url) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return [name for (name,) in rows]


# -- the fixtures ----------------------------------------------------------------------


def test_postgres_url_is_a_working_database(postgres_url: str) -> None:
    with _connect(postgres_url) as conn:
        conn.execute("CREATE TABLE reading (meter text, kwh numeric)")
        conn.execute("INSERT INTO reading VALUES ('000000123456', 1234.56), ('000000123457', 7.5)")
        rows = conn.execute("SELECT meter, kwh FROM reading ORDER BY meter").fetchall()
    assert [(meter, str(kwh)) for meter, kwh in rows] == [("000000123456", "1234.56"), ("000000123457", "7.5")]


def test_postgres_url_starts_empty(postgres_url: str) -> None:
    assert _table_names(postgres_url) == []


def test_each_database_is_separate(postgres_server: PostgresServer, postgres_url: str) -> None:
    other = postgres_server.create_database()
    assert other != postgres_url
    with _connect(postgres_url) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
    assert _table_names(postgres_url) == ["only_here"]
    assert _table_names(other) == []


def test_server_url_is_the_admin_database(postgres_server: PostgresServer) -> None:
    with _connect(postgres_server.url) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == ("postgres", "meterhub")


# -- the binaries finder ---------------------------------------------------------------


def test_finder_explains_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(PostgresUnavailable) as caught:
        find_binaries(path=str(empty), versions_root=tmp_path / "postgresql")
    message = str(caught.value)
    assert "initdb and pg_ctl not found" in message
    assert str(empty) in message
    assert f"{tmp_path / 'postgresql'}/*/bin" in message


def test_finder_names_the_one_missing_program(tmp_path: Path) -> None:
    _fake_program(tmp_path / "bin" / "initdb")
    with pytest.raises(PostgresUnavailable, match="PostgreSQL's pg_ctl not found"):
        find_binaries(path=str(tmp_path / "bin"), versions_root=tmp_path / "postgresql")


def test_finder_prefers_path(tmp_path: Path) -> None:
    on_path = Binaries(_fake_program(tmp_path / "bin" / "initdb"), _fake_program(tmp_path / "bin" / "pg_ctl"))
    _fake_program(tmp_path / "postgresql" / "16" / "bin" / "initdb")
    _fake_program(tmp_path / "postgresql" / "16" / "bin" / "pg_ctl")
    assert find_binaries(path=str(tmp_path / "bin"), versions_root=tmp_path / "postgresql") == on_path


def test_finder_takes_the_newest_complete_version(tmp_path: Path) -> None:
    root = tmp_path / "postgresql"
    for version in ("9.6", "15"):
        _fake_program(root / version / "bin" / "initdb")
        _fake_program(root / version / "bin" / "pg_ctl")
    _fake_program(root / "16" / "bin" / "initdb")  # half an install: no pg_ctl
    found = find_binaries(path=str(tmp_path / "empty"), versions_root=root)
    assert found == Binaries(root / "15" / "bin" / "initdb", root / "15" / "bin" / "pg_ctl")


# -- the server's lifecycle: each test starts a server of its own (about a second), and
# asks for postgres_server only to be skipped, or failed, as the fixtures are.


def test_directory_is_gone_after_exit(postgres_server: PostgresServer) -> None:
    import psycopg

    with PostgresServer(postgres_server.binaries) as server:
        directory = server.directory
        assert directory is not None and (directory / "data" / "PG_VERSION").exists()
        url = server.url
    assert not directory.exists()
    with pytest.raises(psycopg.OperationalError):
        _connect(url)


def test_start_failure_quotes_the_log_and_cleans_up(postgres_server: PostgresServer) -> None:
    server = PostgresServer(postgres_server.binaries, settings={"no_such_setting": "1"})
    with pytest.raises(PostgresServerError, match='unrecognized configuration parameter "no_such_setting"') as caught:
        server.start()
    log = re.search(r"last lines of (\S+):", str(caught.value))
    assert log is not None
    assert not Path(log[1]).parent.exists()
    assert server.directory is None


def test_taken_port_is_skipped(postgres_server: PostgresServer) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        spare = free_port()
        with PostgresServer(postgres_server.binaries, ports=[taken, spare]) as server:
            assert server.port == spare
            with _connect(server.url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_missing_server_skips_but_fails_where_servers_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    from meterhub.testing import pytest_plugin

    monkeypatch.delenv(pytest_plugin.REQUIRE_SERVERS, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no initdb"):
        pytest_plugin._unavailable("no initdb")
    monkeypatch.setenv(pytest_plugin.REQUIRE_SERVERS, "1")
    with pytest.raises(pytest.fail.Exception, match="METERHUB_REQUIRE_SERVERS=1 but no initdb"):
        pytest_plugin._unavailable("no initdb")
