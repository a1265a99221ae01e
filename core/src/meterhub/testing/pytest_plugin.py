"""meterhub's pytest plugin (registered as ``pytest11`` entry point ``meterhub``): fixtures
for a real, throwaway PostgreSQL server, for meterhub's tests and a vendor plugin's alike.

* ``postgres_server``: a server of this pytest process (one per xdist worker), stopped and
  removed at the end of the session;
* ``postgres_url``: the URL of a fresh, empty database of its own, for one test.

Where PostgreSQL's binaries or psycopg are missing they skip with the reason, unless the
environment says ``METERHUB_REQUIRE_SERVERS=1`` (CI does): then they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from . import postgres

#: The environment variable that turns a missing server into a failure.
REQUIRE_SERVERS = "METERHUB_REQUIRE_SERVERS"


def servers_required() -> bool:
    return os.environ.get(REQUIRE_SERVERS) == "1"


def _unavailable(reason: str) -> None:
    if servers_required():
        pytest.fail(f"{REQUIRE_SERVERS}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """A PostgreSQL server of this pytest process, stopped and removed at the end."""
    reason = postgres.unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    with postgres.PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: postgres.PostgresServer) -> str:
    """The URL of a fresh, empty database of its own for one test."""
    return postgres_server.create_database()
