"""The channel contract proved from outside the core: ACME's MX4 multiplexer
(examples/vendor-plugin, ``transport: acme-mx4``) carries four transactions at once over
one TCP connection and reports what its ports hear on their own.

The envelope codec is tested without a socket; the channel against the simulated MX4 on
a real loopback TCP socket, with meterhub's simulated DL/T 645 meters behind its ports
and a real SQLite file as the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from system_helpers import assert_no_traceback, meterhub, parse_json

pytest.importorskip("meterhub_acme", reason="examples/vendor-plugin is not installed")

from meterhub.errors import ChecksumError, ConfigError, FrameError, TruncatedFrame
from meterhub.model import ChannelConfig, Quality, SerialSettings
from meterhub.protocols import dlt645
from meterhub.protocols.dlt645_data import ITEMS, decode_value, encode_value
from meterhub.protocols.dlt645_sim import COVER_OPEN_EVENTS, FORWARD, SimulatedMeter
from meterhub_acme import mx4
from meterhub_acme.mux import Mx4Transport, report_of
from meterhub_acme.mx4_sim import Mx4Sim, start_mx4_sim

#: The simulated meters' clock stands still, so their registers do too: a stored value can
#: be compared with the meter's own to the last digit.
FROZEN = datetime(2024, 5, 1, 12, 0, 0)

VOLTAGE_L1 = 0x02010100  #: DL/T 645-2007 DI of phase A voltage (XXX.X V)


# --- the envelope, by hand ------------------------------------------------------------

#: A DL/T 645 read of forward active energy (DI 00 01 00 00) from meter 000000000001:
#: FE×4 wake-up, 68, address 01 00 00 00 00 00 (least significant first), 68, C=11 (read),
#: L=04, the DI 00 00 01 00 sent +33h, CS=B3, 16.
READ_ENERGY = bytes.fromhex("FEFEFEFE 68 010000000000 68 11 04 33333433 B3 16")

#: That read as the master sends it to MX4 port 2 with tag 1: A5, tag 01, port 02,
#: length 00 14 (20 bytes, big-endian), the read, CRC-16/MODBUS D21Ah sent low byte first.
REQUEST_ENVELOPE = bytes.fromhex("A5 01 02 0014") + READ_ENERGY + bytes.fromhex("1AD2")

#: Meter 000000000010 reporting on its own on port 3: tag 00, port 03, 19 bytes: its read
#: reply (C=91) to DI 03 30 0D 00 (meter cover opened, count) with the count 000003, all
#: +33h (33 40 63 36 | 36 33 33), CS=20, 16. CRC 40B2h.
COVER_REPORT = bytes.fromhex("68 100000000000 68 91 07 33406336 363333 20 16")
REPORT_ENVELOPE = bytes.fromhex("A5 00 03 0013") + COVER_REPORT + bytes.fromhex("B240")

#: The shortest envelope: tag 0, port 1, nothing carried; CRC D939h.
EMPTY_ENVELOPE = bytes.fromhex("A5 00 01 0000 39D9")


def test_crc16_modbus_gives_the_catalogued_check_value():
    assert mx4.crc16_modbus(b"123456789") == 0x4B37  # the CRC catalogue's check value for CRC-16/MODBUS


@pytest.mark.parametrize(("wire", "envelope"), [
    (REQUEST_ENVELOPE, mx4.Envelope(1, 2, READ_ENERGY)),
    (REPORT_ENVELOPE, mx4.Envelope(0, 3, COVER_REPORT)),
    (EMPTY_ENVELOPE, mx4.Envelope(0, 1, b"")),
], ids=["request", "report", "empty"])
def test_envelopes_written_out_by_hand_encode_and_decode(wire, envelope):
    assert mx4.encode(envelope) == wire
    assert mx4.decode(wire) == envelope


def test_the_hand_written_report_holds_the_meters_frame():
    frame = dlt645.decode(mx4.decode(REPORT_ENVELOPE).payload)
    di, payload = dlt645.parse_read_reply(frame)
    assert (frame.address, di, decode_value(ITEMS[di], payload)) == ("000000000010", COVER_OPEN_EVENTS, Decimal(3))


def test_a_wrong_crc_is_a_checksum_error():
    damaged = REQUEST_ENVELOPE[:-1] + bytes([REQUEST_ENVELOPE[-1] ^ 0x01])
    with pytest.raises(ChecksumError, match="CRC"):
        mx4.decode(damaged)


@pytest.mark.parametrize(("wire", "error", "message"), [
    (REQUEST_ENVELOPE[:-3], TruncatedFrame, "needs 27 bytes"),
    (REQUEST_ENVELOPE[:4], TruncatedFrame, "header"),
    (REQUEST_ENVELOPE + b"\x00", FrameError, "after the end"),
    (bytes.fromhex("A5 01 05 0000 0000"), FrameError, "port 5"),
    (bytes.fromhex("A5 01 01 0201"), FrameError, "at most 512"),
    (bytes.fromhex("5A 01 01 0000 0000"), FrameError, "starts with A5"),
])
def test_what_is_not_one_whole_envelope_says_why(wire, error, message):
    with pytest.raises(error, match=message):
        mx4.decode(wire)


def test_an_envelope_may_not_carry_more_than_the_mx4_buffers():
    with pytest.raises(ValueError, match="at most 512"):
        mx4.Envelope(1, 1, bytes(513))


def test_the_stream_decoder_skips_garbage_and_finds_what_follows():
    decoder = mx4.StreamDecoder()
    found = decoder.feed(b"\x00\x13\xa5\xff" + REQUEST_ENVELOPE + b"\x01\x02" + REPORT_ENVELOPE[:10])
    assert found == [mx4.Envelope(1, 2, READ_ENERGY)]
    assert decoder.skipped == 6 and decoder.pending == 10
    assert decoder.feed(REPORT_ENVELOPE[10:]) == [mx4.Envelope(0, 3, COVER_REPORT)]


def test_the_stream_decoder_reports_a_damaged_envelope_and_goes_on():
    damaged = REQUEST_ENVELOPE[:-2] + b"\x00\x00"
    found = mx4.StreamDecoder().feed(damaged + EMPTY_ENVELOPE)
    assert isinstance(found[0], ChecksumError) and found[1:] == [mx4.Envelope(0, 1, b"")]


envelopes = st.builds(mx4.Envelope, st.integers(0, 255), st.sampled_from(list(mx4.PORTS)),
                      st.binary(max_size=mx4.MAX_PAYLOAD))


@given(envelopes)
def test_every_envelope_decodes_to_itself(envelope):
    assert mx4.decode(mx4.encode(envelope)) == envelope


@given(st.lists(envelopes, max_size=4), st.data())
def test_a_stream_of_envelopes_decodes_however_it_is_cut(sent, data):
    stream = b"".join(mx4.encode(e) for e in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = mx4.StreamDecoder()
    found = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        found += decoder.feed(stream[start:end])
    assert found == sent and decoder.skipped == 0 and decoder.pending == 0


@given(st.binary(max_size=600))
def test_any_bytes_give_envelopes_or_frame_errors_and_nothing_else(garbage):
    for item in mx4.StreamDecoder().feed(garbage):
        assert isinstance(item, (mx4.Envelope, FrameError))


@given(st.binary(max_size=64).filter(lambda b: mx4.START not in b), envelopes)
def test_garbage_before_an_envelope_is_skipped_and_counted(garbage, envelope):
    decoder = mx4.StreamDecoder()
    assert decoder.feed(garbage + mx4.encode(envelope)) == [envelope]
    assert decoder.skipped == len(garbage)


# --- what a report says ---------------------------------------------------------------


def test_an_event_record_heard_on_its_own_is_the_meters_event_report():
    report = report_of(dlt645.decode(COVER_REPORT), port=3, raw=COVER_REPORT)
    assert (report.kind, report.address, report.protocol, report.severity) == (
        "meter_event", "000000000010", "dlt645", "warning")
    assert dict(report.data) == {"mx4_port": 3, "tag": 0, "control": "91", "di": "03300D00",
                                 "item": "meter cover opened, total count", "value": "3"}
    assert report.frame == COVER_REPORT and not report.measurements


def test_any_other_frame_heard_on_its_own_is_reported_without_a_value_to_store():
    energy = ITEMS[0x00010000]
    frame = dlt645.read_reply("000000000007", energy.di, encode_value(energy, Decimal("1234.56")))
    report = report_of(frame, port=1)
    assert (report.kind, report.data["di"], report.data["value"]) == ("unsolicited_frame", "00010000", "1234.56")
    assert not report.measurements  # an answer nobody waits for any more is no reading


# --- the transport checks the channel -----------------------------------------------------


def channel(port: str = "tcp://192.0.2.10:4001", **options: object) -> ChannelConfig:
    options.setdefault("mx4_ports", {1: ["000000000001"], 2: ["000000000002"]})
    return ChannelConfig("mx4", "acme-mx4", port, SerialSettings(2400, 8, "E", 1), options)


def test_a_good_mx4_channel_has_no_problems():
    assert Mx4Transport().validate(channel()) == []


@pytest.mark.parametrize(("config", "key", "message"), [
    (channel("192.0.2.10:4001"), "port", "tcp://host:port"),
    (channel("tcp://192.0.2.10"), "port", "TCP port"),
    (channel("tcp://:4001"), "port", "no host"),
    (channel(mx4_ports={5: ["000000000001"]}), "mx4_ports.5", "ports 1..4"),
    (channel(mx4_ports={1: [1]}), "mx4_ports.1[0]", "in quotes"),
    (channel(mx4_ports={1: ["000000000001"], 2: ["000000000001"]}), "mx4_ports.2[0]", "already on port 1"),
    (channel(mx4_ports={1: "000000000001"}), "mx4_ports.1", "a list"),
    (channel(mx4_ports=None), "mx4_ports", "missing"),
    (channel(mx4_port={1: []}), "mx4_port", "unknown key"),
    (ChannelConfig("mx4", "acme-mx4", "tcp://h:1", SerialSettings(300, 8, "E", 1), {"mx4_ports": {}}), "baudrate",
     "not 300"),
])
def test_the_transport_says_what_is_wrong_with_a_channel(config, key, message):
    problems = dict(Mx4Transport().validate(config))
    assert key in problems and message in problems[key], problems


def test_a_site_file_with_a_bad_port_map_names_the_line(tmp_path):
    from meterhub.config import load_site
    from meterhub.plugins import get_plugins

    site = tmp_path / "site.yaml"
    site.write_text(
        "channels:\n"
        "  mx4:\n"
        "    transport: acme-mx4\n"
        "    port: tcp://192.0.2.10:4001\n"
        "    mx4_ports:\n"
        "      1: [000000000001]\n"
        "meters:\n"
        '  - {address: "000000000001", channel: mx4, protocol: dlt645}\n', encoding="utf-8")
    plugins = get_plugins()
    with pytest.raises(ConfigError) as caught:
        load_site(site, drivers=plugins.meter_drivers(), transports=plugins.transports())
    assert "mx4_ports" in str(caught.value) and "in quotes" in str(caught.value)


# --- a 32-meter site through the real CLI -------------------------------------------------


@pytest.fixture
def site_mx4() -> Iterator[Mx4Sim]:
    """4 ports × 8 simulated DL/T 645 meters (000000000001..32, port 1 first) at 2400 8E1."""
    _, _, sim = start_mx4_sim(8, clock=lambda: FROZEN, seed=3)
    yield sim
    sim.stop()


def write_mx4_site(path: Path, sim: Mx4Sim, *, quantities: str = "[energy_import, voltage_l1]",
                   more_meters: str = "", retries: int = 1) -> Path:
    """A site file for the simulated MX4: its port map, and its meters listed port by port
    (all of port 1, then port 2, ...). The channel's ``lane`` is the port, so the
    concentrator keeps all four ports busy whatever the order of the file."""
    ports = sim.mx4_ports()
    turns = [(port, address) for port, addresses in ports.items() for address in addresses]
    port_map = "\n".join(f"      {port}: [{', '.join(repr(a) for a in addresses)}]" for port, addresses in ports.items())
    meters = "\n".join(f'  - {{address: "{address}", channel: mx4, protocol: dlt645, point: {i}, '
                       f"quantities: {quantities}}}" for i, (_, address) in enumerate(turns, 1))
    path.write_text(
        "channels:\n"
        "  mx4:\n"
        "    transport: acme-mx4\n"
        f"    port: tcp://{sim.host}:{sim.tcp_port}\n"
        "    baudrate: 2400\n"
        "    parity: E\n"
        f"    mx4_ports:\n{port_map}\n"
        f"meters:\n{meters}\n{more_meters}"
        f"schedule: {{interval: 15m, retries: {retries}}}\n"
        f"store: sqlite:///{path.parent / 'site.db'}\n",
        encoding="utf-8",
    )
    return path


def own_value(meter: SimulatedMeter, di: int) -> Decimal | str:
    """What the simulated meter itself answers for ``di``, straight from its handler (no
    MX4, no TCP, no channel in between)."""
    frame = dlt645.decode(meter.handle(dlt645.read_request(meter.address, di))[0])
    got, payload = dlt645.parse_read_reply(frame)
    assert got == di
    return decode_value(ITEMS[di], payload)


def test_a_32_meter_site_is_read_through_the_mx4_four_at_a_time(tmp_path, site_mx4):
    sim = site_mx4
    site = write_mx4_site(tmp_path / "site.yaml", sim)
    # Reports sent while the round is under way: one from a configured meter (port 2) once
    # all four ports are busy, one from a meter nobody configured (port 4).
    sim.report("000000000010", when_in_flight=4)
    sim.report("000000009999", port=4, when_in_flight=3)

    started = time.monotonic()
    result = meterhub("run", str(site), "--once", "--json")
    print(f"round of 64 readings through the MX4 took {time.monotonic() - started:.1f} s (CLI start included)")
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    printed = parse_json(result.stdout)
    assert len(printed) == 64 and {r["quality"] for r in printed} == {"ok"}

    # The concurrency, as the MX4 saw it: four transactions at once, never two on one port.
    assert sim.peak_in_flight == 4
    assert set(sim.peak_per_port.values()) == {1}
    assert sim.requests == 64 and sim.answers == 64 and sim.rejected_in == 0

    from meterhub.store import open_store

    with open_store(f"sqlite:///{tmp_path / 'site.db'}") as store:
        readings = store.readings(channel="mx4")
        events = store.events()
    assert len(readings) == 64 and all(r.quality is Quality.OK for r in readings)
    stored = {(r.meter, r.quantity): r.value for r in readings}
    for meters in sim.ports.values():
        for meter in meters:
            assert stored[(meter.address, "1-0:1.8.0")] == meter.energy(FORWARD), meter
            assert stored[(meter.address, "1-0:32.7.0")] == own_value(meter, VOLTAGE_L1), meter

    # Both reports went out while transactions were in flight, and both are stored.
    assert sim.wait_reports(2)
    assert {(r.address, r.port, r.tag) for r in sim.reports} == {("000000000010", 2, 0), ("000000009999", 4, 0)}
    assert all(r.in_flight >= 1 for r in sim.reports), sim.reports
    reports = {e.source: e for e in events if e.kind == "meter_event"}
    assert set(reports) == {"mx4/dlt645:000000000010", "mx4/dlt645:000000009999"}
    known, stranger = reports["mx4/dlt645:000000000010"], reports["mx4/dlt645:000000009999"]
    assert known.data["known"] is True and stranger.data["known"] is False
    assert (known.data["di"], known.data["mx4_port"]) == ("03300D00", 2)
    assert known.data["value"] == str(sim.device("000000000010")[1].events[COVER_OPEN_EVENTS])
    assert stranger.data["value"] == "1" and stranger.data["mx4_port"] == 4


# --- the channel's own rules, in process ------------------------------------------------


async def read_round(site_path: Path, after_open: Callable[[], None] | None = None):
    """One round of the site through the concentrator, in this process; also the events.
    ``after_open`` is called once the channels are open."""
    from meterhub.config import load_site
    from meterhub.plugins import get_plugins
    from meterhub.runtime import Concentrator
    from meterhub.store import open_store

    plugins = get_plugins()
    site = load_site(site_path, drivers=plugins.meter_drivers(), transports=plugins.transports())
    with open_store(site.store) as store:
        async with Concentrator(site, plugins=plugins, store=store) as conc:
            if after_open is not None:
                after_open()
                await asyncio.sleep(0.1)  # the simulator's thread sends it meanwhile
            report = await conc.run_round()
        return report, store.events()


@pytest.fixture
def small_mx4() -> Iterator[Mx4Sim]:
    """Two simulated DL/T 645 meters on each of ports 1 and 2 (000000000001..4)."""
    _, _, sim = start_mx4_sim(2, ports=2, clock=lambda: FROZEN)
    yield sim
    sim.stop()


@pytest.mark.parametrize("slow", [2.5, 3.6], ids=["within the window: its tag", "after the window: tag 0"])
def test_an_answer_later_than_its_timeout_is_reported_late_and_not_taken(tmp_path, small_mx4, slow):
    sim = small_mx4
    sim.slow_delay = slow  # the answer comes after the 2.08 s timeout, within the 4.2 s guard
    sim.set_fault("000000000002", "slow")
    site = write_mx4_site(tmp_path / "site.yaml", sim, quantities="[energy_import]", retries=0)
    report, events = asyncio.run(read_round(site))
    by_meter = {r.meter: r for r in report.readings}
    slow_one = by_meter.pop("000000000002")
    assert slow_one.quality is Quality.TIMEOUT and slow_one.value is None
    assert "dropped" in slow_one.detail
    assert {r.quality for r in by_meter.values()} == {Quality.OK}
    (late,) = [e for e in events if e.kind == "late_answer"]
    assert late.source == "mx4/dlt645:000000000002"
    assert slow < late.data["began_after"] < late.data["timeout"] * 2


def test_a_meter_on_none_of_the_ports_is_a_site_file_error_at_its_line(tmp_path, small_mx4):
    from meterhub.config import load_site
    from meterhub.plugins import get_plugins

    stray = '  - {address: "000000000077", channel: mx4, protocol: dlt645, quantities: [energy_import]}\n'
    site = write_mx4_site(tmp_path / "site.yaml", small_mx4, quantities="[energy_import]", more_meters=stray)
    line = site.read_text().splitlines().index(stray.rstrip("\n")) + 1
    plugins = get_plugins()
    with pytest.raises(ConfigError) as caught:
        load_site(site, drivers=plugins.meter_drivers(), transports=plugins.transports())
    (issue,) = caught.value.issues
    assert (issue.line, issue.key.endswith(".address")) == (line, True)
    assert "000000000077 is on none of the MX4 ports" in issue.message


def test_a_meter_on_none_of_the_ports_of_a_hand_built_site_is_refused_and_the_others_are_read(small_mx4):
    from meterhub.model import ChannelConfig, Meter, SerialSettings, Site
    from meterhub.plugins import get_plugins
    from meterhub.runtime import Concentrator
    from meterhub.store import open_store

    ports = small_mx4.mx4_ports()
    channel = ChannelConfig("mx4", "acme-mx4", f"tcp://{small_mx4.host}:{small_mx4.tcp_port}",
                            SerialSettings(2400, 8, "E", 1), {"mx4_ports": {p: list(a) for p, a in ports.items()}})
    known = next(iter(ports.values()))[0]
    meters = (Meter(known, "dlt645", "mx4", ("1-0:1.8.0",)), Meter("000000000077", "dlt645", "mx4", ("1-0:1.8.0",)))
    site = Site(channels={"mx4": channel}, meters=meters, store="sqlite:///:memory:")

    async def once():
        with open_store(site.store) as store:
            async with Concentrator(site, plugins=get_plugins(), store=store) as conc:
                return await conc.run_round()

    by_meter = {r.meter: r for r in asyncio.run(once()).readings}
    assert by_meter[known].quality is Quality.OK
    refused = by_meter["000000000077"]
    assert refused.quality is Quality.NOT_SUPPORTED and "none of the MX4's ports" in refused.detail


def test_garbage_on_the_tcp_stream_costs_nothing_but_a_warning(tmp_path, small_mx4, caplog):
    sim = small_mx4
    damaged = bytearray(mx4.encode(mx4.Envelope(200, 1, READ_ENERGY)))
    damaged[-1] ^= 0xFF
    site = write_mx4_site(tmp_path / "site.yaml", sim, quantities="[energy_import]")

    def garbage() -> None:
        assert sim.wait_clients()
        sim.send_raw(b"\x00\xa5\x01garbage" + bytes(damaged))

    report, _ = asyncio.run(read_round(site, after_open=garbage))
    assert {r.quality for r in report.readings} == {Quality.OK}
    assert "were no envelope" in caplog.text and "damaged envelope" in caplog.text


def test_what_comes_instead_of_an_answer_fails_as_on_a_half_duplex_line(tmp_path, small_mx4):
    sim = small_mx4
    sim.set_fault("000000000001", "bad_checksum")  # port 1
    sim.set_fault("000000000002", "silence")  # port 1
    sim.set_fault("000000000003", "wrong_address")  # port 2
    site = write_mx4_site(tmp_path / "site.yaml", sim, quantities="[energy_import]", retries=0)
    report, _ = asyncio.run(read_round(site))
    quality = {r.meter: r.quality for r in report.readings}
    assert quality == {"000000000001": Quality.CHECKSUM_ERROR, "000000000002": Quality.TIMEOUT,
                       "000000000003": Quality.UNEXPECTED_REPLY, "000000000004": Quality.OK}
    assert all(r.value is None for r in report.readings if r.meter != "000000000004")


def test_a_session_holds_its_port_and_leaves_the_others_free(small_mx4):
    from meterhub.model import Meter
    from meterhub.protocols.dlt645_driver import Dlt645Driver

    sim = small_mx4
    config = ChannelConfig("mx4", "acme-mx4", f"tcp://{sim.host}:{sim.tcp_port}", SerialSettings(2400, 8, "E", 1),
                           {"mx4_ports": sim.mx4_ports()})
    meters = {a: Meter(a, "dlt645", "mx4", ("1-0:1.8.0",)) for a in ("000000000001", "000000000002", "000000000003")}
    driver = Dlt645Driver()
    done: dict[str, float] = {}

    async def scenario() -> None:
        channel = Mx4Transport().create_channel(config)
        await channel.open()
        try:
            async def read(address: str) -> None:
                conduit = channel.towards(meters[address])
                timeout = channel.answer_time(meters[address], driver.transaction_timeout(channel.settings))
                assert (await driver.read(conduit, meters[address], "1-0:1.8.0", timeout)).value
                done[address] = time.monotonic()

            async def session() -> None:
                conduit = channel.towards(meters["000000000001"])
                async with conduit.session():
                    await read("000000000001")
                    await asyncio.sleep(0.5)  # others asked meanwhile
                    await read("000000000001")
                    done["session"] = time.monotonic()

            first = asyncio.create_task(session())
            await asyncio.sleep(0.1)
            await asyncio.gather(first, read("000000000002"), read("000000000003"))
        finally:
            await channel.close()

    asyncio.run(scenario())
    assert done["000000000002"] > done["session"]  # same port: it waited for the session to end
    assert done["000000000003"] < done["session"]  # port 2 was free all along
    assert sim.peak_per_port[1] == 1
