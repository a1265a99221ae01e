"""The mqtt uplink against a real Mosquitto broker, fed from an in-memory outbox: topics,
exact states, attributes, frozen values, events, acknowledgements, availability and the
last will, credentials, and commands switched off or refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from meterhub.errors import CredentialNotFound
from meterhub.model import Command, Event, Meter, Quality, Reading, UplinkConfig
from meterhub_mqtt.uplink import BrokerRefused, MqttUplink, MqttUplinkDriver, reconnect_delay, settings_for

ADDRESS = "000000000001"
METER = Meter(address=ADDRESS, protocol="dlt645", channel="bus1", quantities=("1-0:1.8.0",), point=1)
AT = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)
WAIT_S = 20.0


def reading(value: Decimal | None, *, quality: Quality = Quality.OK, period: int | None = None,
            data_time: datetime | None = None, quantity: str = "1-0:1.8.0") -> Reading:
    return Reading(ADDRESS, quantity, value, "kWh", AT, quality=quality, channel="bus1", protocol="dlt645",
                   period=period, data_time=data_time, detail="" if quality is Quality.OK else "no answer")


def uplink(address: tuple[str, int], terminal: Any, site: str, **options: Any) -> MqttUplink:
    config = UplinkConfig("mqtt", "mqtt", {"server": f"{address[0]}:{address[1]}", "site": site,
                                           "discovery": False, **options})
    assert MqttUplinkDriver().validate(config) == []
    return MqttUplinkDriver(reconnect=(0.1, 0.5)).create(config, terminal)


@contextlib.asynccontextmanager
async def running(up: MqttUplink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.get_running_loop().create_task(up.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: Any, timeout: float = WAIT_S) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.01)
    return True


# --- the section ---------------------------------------------------------------------------------


def problems(**options: Any) -> dict[str, str]:
    return dict(MqttUplinkDriver().validate(UplinkConfig("mqtt", "mqtt", options)))


def test_a_good_section_has_no_problems(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here\n")
    assert problems(server="broker.local:8883", site="home", topic_prefix="hub/meters", client_id="hub-1",
                    keepalive=30, credential="mqtt-home", tls={"ca": str(ca), "insecure": False},
                    discovery=True, discovery_prefix="homeassistant", commands=False, retain=True) == {}


def test_an_unknown_key_is_named_with_a_suggestion():
    assert "did you mean 'keepalive'?" in problems(server="h", keepalive_s=30)["keepalive_s"]


def test_server_is_required():
    assert "missing required key server" in problems(site="home")[""]


@pytest.mark.parametrize(("server", "message"), [
    ("broker:70000", "out of range"),
    ("broker:0", "out of range"),
    ("broker:mqtt", "must be a number"),
    ("::1:1883", "brackets"),
    ("", "got nothing"),
])
def test_a_bad_server_is_reported(server, message):
    assert message in problems(server=server)["server"]


def test_port_defaults_to_1883_and_to_8883_with_tls():
    assert (settings_for({"server": "broker"}).port, settings_for({"server": "broker", "tls": True}).port) == (1883, 8883)
    assert settings_for({"server": "[::1]:1884"}).host == "::1"


def test_missing_tls_files_are_reported_per_key(tmp_path):
    config = UplinkConfig("mqtt", "mqtt", {"server": "h", "tls": {"ca": str(tmp_path / "ca.pem"),
                                                                 "key": str(tmp_path / "k.pem"), "verify": True}})
    found = [(key, message.split(":")[0]) for key, message in MqttUplinkDriver().validate(config)]
    assert sorted(found) == [("tls.ca", "no such file"), ("tls.key", "a client key needs its certificate"),
                             ("tls.key", "no such file"), ("tls.verify", "unknown key (tls takes ca, cert, key, insecure)")]


@pytest.mark.parametrize("keepalive", [0, 70000, "60", True])
def test_keepalive_must_be_whole_seconds_in_range(keepalive):
    assert "keepalive" in problems(server="h", keepalive=keepalive)


def test_site_and_prefixes_must_be_topic_levels():
    found = problems(server="h", site="My Home", topic_prefix="a/+/b", discovery_prefix="ha/", commands="yes")
    assert "'my_home'" in found["site"]
    assert "wildcards" in found["topic_prefix"]
    assert "empty levels" in found["discovery_prefix"]
    assert "true or false" in found["commands"]


def test_defaults_come_from_the_terminal_name():
    settings = settings_for({"server": "broker"}, "Hub 7")
    assert (settings.site, settings.client_id, settings.topic_prefix, settings.keepalive) == (
        "hub_7", "meterhub-hub_7", "meterhub", 60)
    assert (settings.discovery, settings.commands, settings.retain) == (True, False, True)
    assert settings_for({"server": "broker"}).site == "meterhub"


def test_reconnect_delay_doubles_from_one_second_to_sixty_with_jitter():
    middle = [reconnect_delay(n, rand=lambda: 0.5) for n in (1, 2, 3, 7, 20)]
    assert middle == [1.0, 2.0, 4.0, 60.0, 60.0]
    assert reconnect_delay(2, rand=lambda: 0.0) == pytest.approx(1.6)  # 2 s - 20 %
    assert reconnect_delay(20, rand=lambda: 1.0) == 60.0  # never above the maximum


# --- states and attributes --------------------------------------------------------------------------


def test_a_good_reading_publishes_its_exact_decimal_and_attributes(mosquitto, memory_terminal, subscribe):
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/exact/#"]) as sub, running(uplink(mosquitto, terminal, "exact")):
            ids = terminal.enqueue(reading(Decimal("1234.560")))
            state = f"meterhub/exact/{ADDRESS}/energy_import/state"
            attributes = f"meterhub/exact/{ADDRESS}/energy_import/attributes"
            assert await sub.wait_for(lambda s: s.on(state) and s.on(attributes))
            assert await until(lambda: terminal.acked == ids)
        assert sub.last(state) == "1234.560"  # every digit the meter gave, trailing zero too
        assert Decimal(sub.last(state)) == Decimal("1234.560")
        assert json.loads(sub.last(attributes)) == {
            "unit": "kWh", "quality": "ok", "timestamp": "2026-12-03T10:15:00+00:00", "obis": "1-0:1.8.0",
            "route": "", "data_time": None, "period": None, "detail": "", "meter": ADDRESS, "protocol": "dlt645",
            "channel": "bus1"}

    asyncio.run(main())


def test_a_failed_reading_publishes_its_quality_never_a_number(mosquitto, memory_terminal, subscribe):
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/failed/#"]) as sub, running(uplink(mosquitto, terminal, "failed")):
            terminal.enqueue(reading(None, quality=Quality.TIMEOUT))
            attributes = f"meterhub/failed/{ADDRESS}/energy_import/attributes"
            assert await sub.wait_for(lambda s: s.on(attributes))
        assert sub.last(f"meterhub/failed/{ADDRESS}/energy_import/state") == "timeout"
        body = json.loads(sub.last(attributes))
        assert (body["quality"], body["detail"]) == ("timeout", "no answer")

    asyncio.run(main())


def test_states_are_retained_for_a_subscriber_that_comes_later(mosquitto, memory_terminal, subscribe):
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with running(uplink(mosquitto, terminal, "late")):
            ids = terminal.enqueue(reading(Decimal("7.5")), reading(Decimal("0.25"), quantity="1-0:1.7.0"))
            assert await until(lambda: terminal.acked == ids)
        async with subscribe(mosquitto, ["meterhub/late/#"]) as sub:
            assert await sub.wait_for(lambda s: len(s.messages) >= 5)  # 2 states, 2 attributes, status
        states = {m.topic: (m.payload, m.retain) for m in sub.messages if m.topic.endswith("/state")}
        assert states == {f"meterhub/late/{ADDRESS}/energy_import/state": ("7.5", True),
                          f"meterhub/late/{ADDRESS}/power_import/state": ("0.25", True)}

    asyncio.run(main())


def test_retain_false_sends_states_unretained(mosquitto, memory_terminal, subscribe):
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/plain/#"]) as sub, \
                running(uplink(mosquitto, terminal, "plain", retain=False)):
            terminal.enqueue(reading(Decimal("3")))
            state = f"meterhub/plain/{ADDRESS}/energy_import/state"
            assert await sub.wait_for(lambda s: s.on(state))
        async with subscribe(mosquitto, ["meterhub/plain/#"]) as later:
            # the retained status comes with whatever else is retained under the prefix
            assert await later.wait_for(lambda s: s.on("meterhub/plain/status"))
        assert [m.retain for m in sub.on(state)] == [False]
        assert [m.topic for m in later.messages if m.topic.endswith("/state")] == []

    asyncio.run(main())


def test_a_frozen_value_goes_to_its_frozen_topic_not_the_state(mosquitto, memory_terminal, subscribe):
    terminal = memory_terminal([METER])
    boundary = datetime(2026, 12, 3, 0, 0)  # the meter's own (naive local) freeze time

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/frozen/#"]) as sub, running(uplink(mosquitto, terminal, "frozen")):
            ids = terminal.enqueue(reading(Decimal("1200.01"), period=1, data_time=boundary),
                                 reading(Decimal("1234.56")))
            assert await until(lambda: terminal.acked == ids)
            assert await sub.wait_for(lambda s: s.on(f"meterhub/frozen/{ADDRESS}/energy_import/state"))
        assert [m.payload for m in sub.on(f"meterhub/frozen/{ADDRESS}/energy_import/state")] == ["1234.56"]
        frozen = json.loads(sub.last(f"meterhub/frozen/{ADDRESS}/energy_import/frozen"), parse_float=Decimal)
        assert (frozen["value"], frozen["period"], frozen["data_time"]) == (Decimal("1200.01"), 1,
                                                                            "2026-12-03T00:00:00")

    asyncio.run(main())


def test_events_go_to_the_events_topic_unretained(mosquitto, memory_terminal, subscribe):
    terminal = memory_terminal([METER])
    event = Event("meter_dead", source=f"bus1/dlt645:{ADDRESS}", timestamp=AT, severity="warning",
                  data={"failures": 3})

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/ev/events"]) as sub, running(uplink(mosquitto, terminal, "ev")):
            (item,) = terminal.enqueue(event)
            assert await sub.wait_for(lambda s: s.on("meterhub/ev/events"))
        (message,) = sub.on("meterhub/ev/events")
        assert not message.retain
        assert json.loads(message.payload) == {"id": item, "kind": "meter_dead", "source": f"bus1/dlt645:{ADDRESS}",
                                               "timestamp": "2026-12-03T10:15:00+00:00", "severity": "warning",
                                               "data": {"failures": 3}}

    asyncio.run(main())


def test_a_meter_sharing_its_address_is_named_with_its_protocol(mosquitto, memory_terminal, subscribe):
    other = Meter(address=ADDRESS, protocol="modbus", channel="bus1", quantities=("1-0:1.8.0",))
    terminal = memory_terminal([METER, other])

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/twins/+/+/state"]) as sub, \
                running(uplink(mosquitto, terminal, "twins")):
            terminal.enqueue(reading(Decimal("1")), Reading(ADDRESS, "1-0:1.8.0", Decimal("2"), "kWh", AT,
                                                          channel="bus1", protocol="modbus"))
            assert await sub.wait_for(lambda s: len(s.messages) == 2)
        assert {m.topic: m.payload for m in sub.messages} == {
            f"meterhub/twins/dlt645-{ADDRESS}/energy_import/state": "1",
            f"meterhub/twins/modbus-{ADDRESS}/energy_import/state": "2"}

    asyncio.run(main())


# --- availability and the last will -------------------------------------------------------------------


def test_it_says_online_and_offline_when_stopped(mosquitto, memory_terminal, subscribe):
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/avail/status"]) as sub:
            async with running(uplink(mosquitto, terminal, "avail")):
                assert await sub.wait_for(lambda s: s.last("meterhub/avail/status") == "online")
            assert await sub.wait_for(lambda s: s.last("meterhub/avail/status") == "offline")
        assert [m.payload for m in sub.messages] == ["online", "offline"]

    asyncio.run(main())


WILL_SCRIPT = """
import asyncio, sys
from meterhub.model import UplinkConfig
from meterhub.testing import MemoryTerminal
from meterhub_mqtt.uplink import MqttUplinkDriver

config = UplinkConfig("mqtt", "mqtt", {"server": sys.argv[1], "site": "will", "discovery": False})
asyncio.run(MqttUplinkDriver().create(config, MemoryTerminal(name="mqtt")).run())
"""


def test_the_last_will_says_offline_when_the_process_dies(mosquitto, subscribe, tmp_path):
    script = tmp_path / "uplink.py"
    script.write_text(textwrap.dedent(WILL_SCRIPT), encoding="utf-8")

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/will/status"]) as sub:
            proc = subprocess.Popen([sys.executable, str(script), f"{mosquitto[0]}:{mosquitto[1]}"],
                                    stderr=subprocess.PIPE)
            try:
                assert await sub.wait_for(lambda s: s.last("meterhub/will/status") == "online"), \
                    proc.stderr.read().decode() if proc.poll() is not None else "no online"
            finally:
                os.kill(proc.pid, signal.SIGKILL)  # no clean disconnect: the broker sends the will
                proc.wait()
            assert await sub.wait_for(lambda s: s.last("meterhub/will/status") == "offline")
        assert [m.payload for m in sub.messages] == ["online", "offline"]

    asyncio.run(main())


# --- credentials ----------------------------------------------------------------------------------------


def test_it_connects_with_credentials_from_the_secret_store(password_broker, memory_terminal, subscribe,
                                                              monkeypatch):
    monkeypatch.setenv("METERHUB_SECRET_MQTT_HOME_USERNAME", "hub")
    monkeypatch.setenv("METERHUB_SECRET_MQTT_HOME_PASSWORD", "s3cret")
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with subscribe(password_broker.address, ["meterhub/auth/#"], username="hub", password="s3cret") as sub, \
                running(uplink(password_broker.address, terminal, "auth", credential="mqtt-home")):
            terminal.enqueue(reading(Decimal("42.0")))
            assert await sub.wait_for(lambda s: s.on(f"meterhub/auth/{ADDRESS}/energy_import/state"))
        assert sub.last(f"meterhub/auth/{ADDRESS}/energy_import/state") == "42.0"

    asyncio.run(main())


def test_a_missing_credential_entry_ends_the_uplink_naming_it(password_broker, memory_terminal, monkeypatch):
    monkeypatch.delenv("METERHUB_SECRET_MQTT_NOWHERE_USERNAME", raising=False)
    monkeypatch.delenv("METERHUB_SECRETS", raising=False)
    monkeypatch.setenv("HOME", str(password_broker.config.parent))  # no secrets file of the user's either
    up = uplink(password_broker.address, memory_terminal([METER]), "auth", credential="mqtt-nowhere")
    with pytest.raises(CredentialNotFound, match="'mqtt-nowhere'"):
        asyncio.run(asyncio.wait_for(up.run(), WAIT_S))


def test_a_broker_refusing_anonymous_clients_ends_the_uplink(password_broker, memory_terminal):
    up = uplink(password_broker.address, memory_terminal([METER]), "auth")
    with pytest.raises(BrokerRefused, match="refused the connection"):
        asyncio.run(asyncio.wait_for(up.run(), WAIT_S))


def test_it_connects_over_tls_checking_the_brokers_certificate(tls_broker, memory_terminal, subscribe):
    import ssl

    mqtt, ca = tls_broker
    terminal = memory_terminal([METER])
    checked = ssl.create_default_context(cafile=str(ca))

    async def main() -> None:
        async with subscribe(mqtt.address, ["meterhub/tls/#"], tls_context=checked) as sub, \
                running(uplink(mqtt.address, terminal, "tls", tls={"ca": str(ca)})) as task:
            terminal.enqueue(reading(Decimal("0.001")))
            assert await sub.wait_for(lambda s: s.on(f"meterhub/tls/{ADDRESS}/energy_import/state") or task.done())
        assert sub.last(f"meterhub/tls/{ADDRESS}/energy_import/state") == "0.001"

    asyncio.run(main())


# --- commands ------------------------------------------------------------------------------------------


async def _command(address: tuple[str, int], topic: str, payload: str) -> None:
    import aiomqtt

    async with aiomqtt.Client(*address) as client:
        await client.publish(topic, payload, qos=1)


def test_commands_are_off_by_default(mosquitto, memory_terminal, subscribe):
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/off/#"]) as sub, running(uplink(mosquitto, terminal, "off")):
            assert await sub.wait_for(lambda s: s.last("meterhub/off/status") == "online")
            await _command(mosquitto, f"meterhub/off/{ADDRESS}/command/relay", '{"args": {"action": "trip"}}')
            # a marker published after the command: once it is here, an answer would have been too
            await _command(mosquitto, "meterhub/off/marker", "x")
            assert await sub.wait_for(lambda s: s.on("meterhub/off/marker"))
            await asyncio.sleep(0.5)
        assert terminal.executed == []
        assert not any(m.topic.endswith("/result") for m in sub.messages)

    asyncio.run(main())


@pytest.mark.parametrize(("meter", "payload", "reason"), [
    (ADDRESS, "{not json", "payload is not JSON"),
    (ADDRESS, '{"args": [1, 2]}', "args must be a JSON object"),
    (ADDRESS, '{"password": "123456"}', "unknown key(s) password"),
    ("999999999999", "", "no meter '999999999999'"),
])
def test_a_bad_command_message_is_refused_not_executed(mosquitto, memory_terminal, subscribe, meter, payload,
                                                          reason):
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/bad/+/command/+/result", "meterhub/bad/status"]) as sub, \
                running(uplink(mosquitto, terminal, "bad", commands=True)):
            assert await sub.wait_for(lambda s: s.last("meterhub/bad/status") == "online")
            await _command(mosquitto, f"meterhub/bad/{meter}/command/relay", payload)
            assert await sub.wait_for(lambda s: s.on(f"meterhub/bad/{meter}/command/relay/result"))
        result = json.loads(sub.last(f"meterhub/bad/{meter}/command/relay/result"))
        assert result["state"] == "refused" and reason in result["reason"]
        assert terminal.executed == []

    asyncio.run(main())


def test_a_command_the_meter_cannot_carry_out_is_answered_failed(mosquitto, memory_terminal, subscribe):
    from meterhub.errors import NotSupported

    async def cannot(meter: Meter, command: Command) -> dict[str, Any]:
        raise NotSupported(f"{meter.protocol} has no command {command.name!r}")

    terminal = memory_terminal([METER])
    terminal.answer = cannot  # the meter has the command sent and answers that it has no such command
    topic = f"meterhub/nosuch/{ADDRESS}/command/warp"

    async def main() -> None:
        async with subscribe(mosquitto, [f"{topic}/result", "meterhub/nosuch/status"]) as sub, \
                running(uplink(mosquitto, terminal, "nosuch", commands=True)):
            assert await sub.wait_for(lambda s: s.last("meterhub/nosuch/status") == "online")
            await _command(mosquitto, topic, '{"args": {"speed": 9}, "issuer": "bridge"}')
            assert await sub.wait_for(lambda s: s.on(f"{topic}/result"))
        result = json.loads(sub.last(f"{topic}/result"))
        ((meter, command),) = terminal.executed
        assert (meter, command.name, dict(command.args), command.issuer, command.origin.value) == (
            METER, "warp", {"speed": 9}, "bridge", "uplink")
        assert result == {"id": command.id, "state": "failed", "reason": "NotSupported: dlt645 has no command 'warp'"}

    asyncio.run(main())


def test_credentials_may_come_from_the_secrets_file(password_broker, memory_terminal, subscribe, monkeypatch,
                                                    tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text('mqtt-file:\n  username: hub\n  password: "s3cret"\n', encoding="utf-8")
    secrets.chmod(0o600)
    monkeypatch.setenv("METERHUB_SECRETS", str(secrets))
    terminal = memory_terminal([METER])

    async def main() -> None:
        async with subscribe(password_broker.address, ["meterhub/file/status"], username="hub",
                             password="s3cret") as sub, \
                running(uplink(password_broker.address, terminal, "file", credential="mqtt-file")):
            assert await sub.wait_for(lambda s: s.last("meterhub/file/status") == "online")

    asyncio.run(main())


# --- acknowledged after PUBACK, not before ------------------------------------------------------------


class SilentBroker:
    """A broker that takes the connection and every PUBLISH but answers PUBACK only when
    told: MQTT 3.1.1 §2.2 fixed header, §3.3 PUBLISH (topic, then the packet id at QoS 1)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, int]] = []  #: (topic, packet id) in arrival order
        self.writer: asyncio.StreamWriter | None = None
        self.news = asyncio.Event()

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return "127.0.0.1", self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                kind = (await reader.readexactly(1))[0] >> 4
                length, shift = 0, 0
                while True:  # remaining length: 7 bits a byte, low first
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                if kind == 1:  # CONNECT -> CONNACK, accepted
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 3:  # PUBLISH (QoS 1): topic length, topic, packet id
                    size = int.from_bytes(body[:2], "big")
                    self.published.append((body[2:2 + size].decode(), int.from_bytes(body[2 + size:4 + size], "big")))
                    self.news.set()

    def puback(self) -> None:
        assert self.writer is not None
        for _, packet_id in self.published:
            self.writer.write(b"\x40\x02" + packet_id.to_bytes(2, "big"))


def test_items_are_acknowledged_only_after_the_brokers_puback(memory_terminal):
    terminal = memory_terminal([METER])
    broker = SilentBroker()

    async def main() -> None:
        address = await broker.start()
        ids = terminal.enqueue(reading(Decimal("5")))
        async with running(uplink(address, terminal, "silent")):
            # online, then the reading's state and attributes: all sent, none confirmed
            assert await until(lambda: len(broker.published) >= 1)
            broker.puback()  # "online" confirmed: the session goes on to the outbox
            assert await until(lambda: len(broker.published) == 3)
            await asyncio.sleep(0.3)  # room for a wrong, early acknowledgement
            assert terminal.acked == []
            broker.puback()
            assert await until(lambda: terminal.acked == ids)
        broker.server.close()

    asyncio.run(main())


# --- discovery follows the meters ---------------------------------------------------------------------


def test_discovery_follows_a_change_of_the_sites_meters(mosquitto, memory_terminal, subscribe):
    second = Meter(address="000000000002", protocol="dlt645", channel="bus1", quantities=("1-0:1.8.0",), point=2)
    terminal = memory_terminal([METER])
    node = "homeassistant/sensor/meterhub_moving"
    first_config, second_config = f"{node}/{ADDRESS}_energy_import/config", f"{node}/000000000002_energy_import/config"

    async def main() -> None:
        async with subscribe(mosquitto, [f"{node}/#"]) as sub, \
                running(uplink(mosquitto, terminal, "moving", discovery=True)):
            assert await sub.wait_for(lambda s: s.on(first_config))
            await terminal.set_meter(1, None)  # the first meter taken off, another put on
            await terminal.set_meter(2, second)
            assert await sub.wait_for(lambda s: s.on(second_config) and s.last(first_config) == "")
        assert json.loads(sub.last(second_config))["state_topic"] == "meterhub/moving/000000000002/energy_import/state"

    asyncio.run(main())


def test_a_restart_removes_the_sensors_of_meters_gone_while_it_was_down(mosquitto, memory_terminal, subscribe):
    """The topics it published are kept in the uplink's settings: the next run, with a
    meter taken off the site meanwhile, empties that meter's retained configs."""
    second = Meter(address="000000000002", protocol="dlt645", channel="bus1", quantities=("1-0:1.8.0",), point=2)
    terminal = memory_terminal([METER, second])
    node = "homeassistant/sensor/meterhub_restart"
    second_config = f"{node}/000000000002_energy_import/config"

    async def main() -> None:
        async with subscribe(mosquitto, [f"{node}/#"]) as sub:
            async with running(uplink(mosquitto, terminal, "restart", discovery=True)):
                assert await sub.wait_for(lambda s: bool(s.on(second_config)))
                for _ in range(200):  # kept once the broker acknowledged them all
                    if second_config in terminal.kept.get("discovered", ()):
                        break
                    await asyncio.sleep(0.02)
            assert second_config in terminal.kept["discovered"]
            await terminal.set_meter(2, None)  # taken off while meterhub was stopped
            async with running(uplink(mosquitto, terminal, "restart", discovery=True)):
                assert await sub.wait_for(lambda s: s.last(second_config) == "")
                for _ in range(200):
                    if second_config not in terminal.kept["discovered"]:
                        break
                    await asyncio.sleep(0.02)
        assert second_config not in terminal.kept["discovered"]

    asyncio.run(main())
