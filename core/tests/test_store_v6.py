"""Store schema version 6: the carrier relays a reading came through (``Reading.relays``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from meterhub.model import Reading
from meterhub.store import SCHEMA_VERSION, open_store

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def test_a_v5_file_gets_the_relays_column_and_keeps_its_readings(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    old = Reading("000000000001", "1-0:1.8.0", Decimal("12.5"), "kWh", T0, channel="carrier", route=("c1",))
    with open_store(f"sqlite:///{path}") as s:
        s.add_readings([old])
        s._conn.execute("ALTER TABLE readings DROP COLUMN relays")  # the file as version 5 left it
        s._conn.execute("PRAGMA user_version = 5")
    with open_store(f"sqlite:///{path}") as s:
        assert s.schema_version == SCHEMA_VERSION == 6
        assert s.readings() == [old]
        deep = Reading("000000000002", "1-0:1.8.0", Decimal("3"), "kWh", T0, channel="carrier", relays=4)
        s.add_readings([deep])
        assert [(r.meter, r.relays) for r in s.readings()] == [("000000000001", 0), ("000000000002", 4)]
