-- A schema-version-1 store as meterhub 6c21a9f wrote it (core/src/meterhub/store.py at that
-- commit): two rounds' readings of every kind (Decimals with their exponents, text values,
-- failed readings, a Beijing-time timestamp), events, a round summary, and, as v1 allowed,
-- one reading stored three times (ids 1, 9 and 10: re-delivered, then a different value).
-- Dumped with sqlite3's iterdump(), which leaves out PRAGMA user_version: added by hand
-- before COMMIT. test_store_v2.py rebuilds the file from this text and migrates it.
BEGIN TRANSACTION;
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    source      TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    severity    TEXT NOT NULL,
    data        TEXT NOT NULL
);
INSERT INTO "events" VALUES(1,'link_up','bus1','2024-03-01T11:59:59.000000+00:00','info','{"channel": "bus1", "port": "/dev/ttyUSB0"}');
INSERT INTO "events" VALUES(2,'meter_dead','bus1/dlt645:000000000002','2024-03-01T12:00:05.000000+00:00','warning','{"failed_rounds": 3, "list": [1, 2], "meter": "000000000002", "nested": {"ok": true}}');
INSERT INTO "events" VALUES(3,'alarm','bus2/modbus:1','2024-03-01T12:00:06.000000+00:00','alarm','{"value": "0.10"}');
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY,
    meter       TEXT NOT NULL,
    quantity    TEXT NOT NULL,
    value       TEXT,
    value_type  TEXT CHECK (value_type IN ('decimal', 'text')),
    unit        TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    quality     TEXT NOT NULL,
    error_code  INTEGER,
    detail      TEXT NOT NULL,
    channel     TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    latency     REAL
);
INSERT INTO "readings" VALUES(1,'000000000001','1-0:1.8.0','1234.56','decimal','kWh','2024-03-01T12:00:00.000000+00:00','ok',NULL,'','bus1','dlt645',1,0.123456789);
INSERT INTO "readings" VALUES(2,'000000000001','1-0:32.7.0','0.10','decimal','V','2024-03-01T12:00:00.000000+00:00','ok',NULL,'','bus1','dlt645',1,0.05);
INSERT INTO "readings" VALUES(3,'000000000001','0-0:1.0.0','2024-03-01T12:00:00','text','','2024-03-01T12:00:00.000000+00:00','ok',NULL,'','bus1','dlt645',1,0.07);
INSERT INTO "readings" VALUES(4,'000000000002','1-0:1.8.0',NULL,NULL,'kWh','2024-03-01T12:00:00.000000+00:00','timeout',NULL,'no answer after 3 attempts','bus1','dlt645',3,NULL);
INSERT INTO "readings" VALUES(5,'000000000003','1-0:1.8.0',NULL,NULL,'kWh','2024-03-01T12:00:00.000000+00:00','meter_error',2,'no requested data','bus1','dlt645',1,0.2);
INSERT INTO "readings" VALUES(6,'1','1-0:32.7.0','2.3E+2','decimal','V','2024-03-01T12:00:00.000000+00:00','ok',NULL,'','bus2','modbus',1,0.01);
INSERT INTO "readings" VALUES(7,'1','0-0:96.1.0','0042','text','','2024-03-01T12:00:00.000000+00:00','ok',NULL,'','bus2','mbus',1,0.3);
INSERT INTO "readings" VALUES(8,'000000000001','1-0:1.8.0','1234.70','decimal','kWh','2024-03-01T12:15:00.000000+00:00','ok',NULL,'','bus1','dlt645',2,0.5);
INSERT INTO "readings" VALUES(9,'000000000001','1-0:1.8.0','1234.56','decimal','kWh','2024-03-01T12:00:00.000000+00:00','ok',NULL,'','bus1','dlt645',1,0.123456789);
INSERT INTO "readings" VALUES(10,'000000000001','1-0:1.8.0','9999.99','decimal','kWh','2024-03-01T12:00:00.000000+00:00','ok',NULL,'','bus1','dlt645',1,NULL);
CREATE TABLE rounds (
    id          INTEGER PRIMARY KEY,
    started     TEXT NOT NULL,
    finished    TEXT NOT NULL,
    readings    INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    stats       TEXT NOT NULL
);
INSERT INTO "rounds" VALUES(1,'2024-03-01T12:00:00.000000+00:00','2024-03-01T12:00:07.000000+00:00',7,5,2,'{"channels": {"bus1": {"readings": 5}, "bus2": {"readings": 2}}, "meters": {"bus1/dlt645:000000000001": {"latency_mean": 0.25, "readings": 3, "success_rate": 1.0}}}');
CREATE INDEX readings_meter_quantity_time ON readings (meter, quantity, timestamp);
CREATE INDEX readings_time ON readings (timestamp);
CREATE INDEX events_time ON events (timestamp);
CREATE INDEX events_kind_time ON events (kind, timestamp);
PRAGMA user_version = 1;
COMMIT;
