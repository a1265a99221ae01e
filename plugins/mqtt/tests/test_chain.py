"""The mqtt uplink in the whole chain, real everything: simulated DL/T 645 meters on a pty,
the real concentrator (``Concentrator`` + ``UplinkRunner``, as ``meterhub run`` runs them)
with its store and outbox, a real Mosquitto broker and a subscriber: discovery, every
stored reading at the broker across an outage of the broker, and commands through the
command path and its journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from meterhub.config import load_site
from meterhub.jsonout import decimal_text
from meterhub.model import CommandState, Reading
from meterhub.plugins import get_plugins
from meterhub.quantities import resolve
from meterhub.runtime import Concentrator
from meterhub.simsite import MeterSpec, SimBus, site_text, start_bus
from meterhub.store import open_store
from meterhub.uplinks import UplinkRunner
from meterhub_mqtt.discovery import check_payload
from meterhub_mqtt.uplink import MqttUplinkDriver

METERS = 3
QUANTITIES = ("energy_import", "voltage_l1", "power_import")
#: Generous waits: two workers on a loaded two-core machine.
DRAIN_S = 30.0
WAIT_S = 30.0
#: The simulated meters' level-2 password (PA = 02, P2 P1 P0 = 000000) and an operator code.
DLT645_CREDENTIAL = {"METERHUB_DLT645_PASSWORD": "02000000", "METERHUB_DLT645_OPERATOR": "12345678"}


@pytest.fixture
def meters() -> Iterator[SimBus]:
    sim = start_bus(get_plugins().simulators(), [MeterSpec("dlt645", METERS)], seed=5, baudrate=9600)
    for entry in sim.entries:
        entry["quantities"] = list(QUANTITIES)
    yield sim
    sim.stop()


def write_site(folder: Path, meters: SimBus, address: tuple[str, int], site: str, **options: Any) -> Path:
    section = {"protocol": "mqtt", "server": f"{address[0]}:{address[1]}", "site": site, **options}
    path = folder / "site.yaml"
    path.write_text(site_text({"bus1": meters}, store=f"sqlite:///{folder / 'hub.db'}", interval="15m", retries=1)
                    + f"terminal: hub-{site}\nuplinks:\n  - {json.dumps(section)}\n", encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def concentrator(site_path: Path) -> AsyncIterator[tuple[Concentrator, UplinkRunner]]:
    """The concentrator and its mqtt uplink, with a short reconnection back-off."""
    plugins = get_plugins()
    uplinks = plugins.uplinks()
    assert "mqtt" in uplinks, "the mqtt plugin's entry point is not installed"
    site = load_site(str(site_path), drivers=plugins.meter_drivers(), transports=plugins.transports(),
                     uplinks=uplinks)
    with open_store(site.store) as store:
        conc = Concentrator(site, plugins=plugins, store=store)
        await conc.open()
        try:
            async with UplinkRunner(conc, {"mqtt": MqttUplinkDriver(reconnect=(0.2, 1.0))}) as runner:
                yield conc, runner
        finally:
            await conc.close()


def state_topic(site: str, reading: Reading) -> str:
    return f"meterhub/{site}/{reading.meter}/{resolve(reading.quantity).alias}/state"


def published(reading: Reading) -> str:
    return decimal_text(reading.value) if isinstance(reading.value, Decimal) else reading.quality.value


# --- discovery and states ------------------------------------------------------------------------


def test_every_meter_is_discovered_and_its_states_are_the_stored_readings(tmp_path, meters, mosquitto, subscribe):
    site = write_site(tmp_path, meters, mosquitto, "disco")

    async def main() -> None:
        async with subscribe(mosquitto, ["meterhub/disco/#"]) as sub:
            async with concentrator(site) as (conc, runner):
                report = await conc.run_round()
                assert await runner.drain(DRAIN_S)
                expected = {state_topic("disco", r): published(r) for r in report.readings}
                assert await sub.wait_for(lambda s: all(s.last(t) == v for t, v in expected.items()), WAIT_S), \
                    {t: (v, sub.last(t)) for t, v in expected.items() if sub.last(t) != v}
        # Home Assistant subscribes whenever it starts: the discovery is retained for it
        sensors = METERS * len(QUANTITIES) + 1  # one per (meter, quantity) and the concentrator's status
        async with subscribe(mosquitto, ["homeassistant/+/meterhub_disco/#"]) as ha:
            assert await ha.wait_for(lambda s: len(s.messages) >= sensors, WAIT_S)
        assert all(m.retain for m in ha.messages)
        configs = {m.topic: json.loads(m.payload) for m in ha.messages}
        assert len(configs) == sensors
        assert {t: check_payload(p) for t, p in configs.items() if check_payload(p)} == {}
        assert set(expected) <= {p["state_topic"] for p in configs.values()}
        # every meter's sensor is unavailable when the last will says offline; the
        # concentrator's own status sensor shows that topic as its state
        status = "meterhub/disco/status"
        assert [p.get("availability_topic") for p in configs.values() if p["state_topic"] != status] == \
            [status] * (sensors - 1)

    asyncio.run(main())


# --- an outage of the broker in the middle of the rounds -------------------------------------------


def test_a_broker_outage_between_rounds_loses_no_reading(tmp_path, meters, broker, subscribe):
    """Round 1 goes out; the broker stops; round 2 is read and waits in the outbox; the
    broker comes back and round 2 goes out. A subscriber with a persistent session (kept by
    the broker across its restart) gets every stored reading of both rounds."""
    persistence = tmp_path / "mosquitto-data"
    persistence.mkdir()
    mqtt = broker(persistence=persistence)
    mqtt.start()
    site = write_site(tmp_path, meters, mqtt.address, "outage")
    checker = {"identifier": "outage-checker", "clean_session": False}

    async def main() -> None:
        async with subscribe(mqtt.address, ["meterhub/outage/+/+/attributes", "meterhub/outage/status"], **checker):
            pass  # the session and its subscription stay at the broker; what comes is queued for it
        async with concentrator(site) as (conc, runner):
            first = await conc.run_round()
            assert await runner.drain(DRAIN_S)
            mqtt.stop()
            second = await conc.run_round()
            waiting = await conc.store_call(lambda store: store.outbox_size("mqtt"))
            assert waiting >= len(second.readings)  # nothing could go: it all waits
            mqtt.start()
            assert await runner.drain(DRAIN_S), "the outbox was not delivered after the broker came back"
            assert runner.failures.get("mqtt", 0) == 0  # the uplink reconnected by itself
            readings = [*first.readings, *second.readings]
            (lost,) = await conc.store_call(lambda store: store.events(kind="uplink_disconnected"))
            assert lost.source == "mqtt" and lost.data["broker"] == f"{mqtt.address[0]}:{mqtt.address[1]}"
        expected = {(r.meter, r.quantity, r.timestamp.isoformat(), r.quality.value) for r in readings}
        assert len(expected) == 2 * METERS * len(QUANTITIES)

        def got(s: Any) -> set[tuple[str, str, str, str]]:
            bodies = [json.loads(m.payload) for m in s.messages if m.topic.endswith("/attributes")]
            return {(b["meter"], b["obis"], b["timestamp"], b["quality"]) for b in bodies}

        async with subscribe(mqtt.address, [], **checker) as sub:
            assert await sub.wait_for(lambda s: expected <= got(s) and s.last("meterhub/outage/status") == "offline"
                                      and len(s.on("meterhub/outage/status")) >= 3, WAIT_S), sorted(expected - got(sub))
        assert got(sub) == expected  # and nothing that was not stored
        # online at each connection (the second after the broker came back), offline when
        # stopped (and, from the broker going down, the last will in between)
        statuses = [m.payload for m in sub.on("meterhub/outage/status")]
        assert (statuses[0], statuses.count("online"), statuses[-1]) == ("online", 2, "offline"), statuses

    asyncio.run(main())


# --- commands -------------------------------------------------------------------------------------------


async def send_command(address: tuple[str, int], topic: str, body: dict[str, Any]) -> None:
    import aiomqtt

    async with aiomqtt.Client(*address) as client:
        await client.publish(topic, json.dumps(body), qos=1)


@pytest.mark.parametrize("credential", ["dlt645", "nobody"])
def test_a_relay_command_goes_through_the_command_path(tmp_path, meters, mosquitto, subscribe, monkeypatch,
                                                       credential):
    """With commands on, a trip on the command topic reaches the meter through the policy
    hooks and the secret store and is journalled; a credential the store has not is refused
    with nothing sent."""
    for name, value in DLT645_CREDENTIAL.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))  # no secrets file of the user's
    monkeypatch.delenv("METERHUB_SECRETS", raising=False)
    site = write_site(tmp_path, meters, mosquitto, f"cmd-{credential}", commands=True)
    device = meters.bus.devices[1]
    base = f"meterhub/cmd-{credential}/{device.address}/command/relay"
    # confirm: an installed policy hook may ask it of a trip (the example vendor plugin does)
    body = {"args": {"action": "trip", "confirm": True}, "credential": credential, "issuer": "test"}

    async def main() -> list[Any]:
        async with subscribe(mosquitto, [f"{base}/result", f"meterhub/cmd-{credential}/status"]) as sub:
            async with concentrator(site) as (conc, _):
                assert await sub.wait_for(lambda s: s.last(f"meterhub/cmd-{credential}/status") == "online")
                before = meters.bus.frames_in
                await send_command(mosquitto, base, body)
                assert await sub.wait_for(lambda s: s.on(f"{base}/result"), WAIT_S)
                if credential == "nobody":
                    assert meters.bus.frames_in == before  # nothing sent
                records = await conc.store_call(lambda store: store.commands())
        result = json.loads(sub.last(f"{base}/result"))
        return [result, records]

    result, records = asyncio.run(main())
    (record,) = records
    assert (record.command.name, record.command.origin.value, record.command.meter) == ("relay", "uplink",
                                                                                        device.address)
    assert record.command.id == result["id"]
    if credential == "dlt645":
        assert result["state"] == "answered" and device.relay_open
        assert record.state is CommandState.ANSWERED
    else:
        assert result["state"] == "refused" and "'nobody'" in result["reason"]
        assert record.state is CommandState.REFUSED and not device.relay_open


def test_with_commands_off_a_command_message_does_nothing(tmp_path, meters, mosquitto, subscribe, monkeypatch):
    for name, value in DLT645_CREDENTIAL.items():
        monkeypatch.setenv(name, value)
    site = write_site(tmp_path, meters, mosquitto, "cmd-off")  # commands: false is the default
    device = meters.bus.devices[0]
    topic = f"meterhub/cmd-off/{device.address}/command/relay"
    body = {"args": {"action": "trip", "confirm": True}, "credential": "dlt645"}

    async def main() -> list[Any]:
        async with subscribe(mosquitto, ["meterhub/cmd-off/#"]) as sub:
            async with concentrator(site) as (conc, _):
                assert await sub.wait_for(lambda s: s.last("meterhub/cmd-off/status") == "online")
                before = meters.bus.frames_in
                await send_command(mosquitto, topic, body)
                await send_command(mosquitto, "meterhub/cmd-off/marker", {})
                assert await sub.wait_for(lambda s: s.on("meterhub/cmd-off/marker"))
                await asyncio.sleep(0.5)  # grace for a command task, were one started
                assert meters.bus.frames_in == before
                return [await conc.store_call(lambda store: store.commands()), sub.messages]

    records, messages = asyncio.run(main())
    assert records == []  # nothing in the audit trail
    assert not device.relay_open
    assert not any(m.topic.endswith("/result") for m in messages)


def test_a_missing_credential_is_an_uplink_failed_event_naming_it(tmp_path, meters, mosquitto, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no secrets file of the user's
    monkeypatch.delenv("METERHUB_SECRETS", raising=False)
    site = write_site(tmp_path, meters, mosquitto, "nocred", credential="mqtt-absent")

    async def main() -> list[Any]:
        async with concentrator(site) as (conc, runner):
            loop = asyncio.get_running_loop()
            end = loop.time() + WAIT_S
            while not runner.failures.get("mqtt") and loop.time() < end:
                await asyncio.sleep(0.01)
            await conc.flush()
            return await conc.store_call(lambda store: store.events())

    failed = [e for e in asyncio.run(main()) if e.kind == "uplink_failed"]
    assert failed, "no uplink_failed event"
    assert failed[0].data["uplink"] == "mqtt"
    assert "CredentialNotFound" in failed[0].data["reason"] and "'mqtt-absent'" in failed[0].data["reason"]
