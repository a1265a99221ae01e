"""The modem driver end to end: concentrator -> simulated modem on a pty -> real TCP on
127.0.0.1 -> a recording master station, for every model in both modes, and every fault
the simulator has."""

from __future__ import annotations

import asyncio
import logging
import random
import socket

import attrs
import pytest
from meterhub_gprs.modem import (
    ModemConnector,
    ModemError,
    ModemStream,
    ModemTimeout,
    NotRegistered,
    SimError,
)
from meterhub_gprs.modem_sim import MODELS
from meterhub_gprs.stream import ConnectFailed, ConnectionLost

pytestmark = pytest.mark.timeout(30)

MODES = ("command", "transparent")
ROUTES = [pytest.param(model, mode, "buffer", id=f"{model}-{mode}") for model in MODELS for mode in MODES] + [
    pytest.param(model, "command", "push", id=f"{model}-command-push") for model in ("EC20", "EC25")
]

#: The report each model gives when the master station hangs up (command mode) and
#: when the PDP context goes.
REMOTE_CLOSE = {
    "SIM800": "CLOSED",
    "SIM7600": "+IPCLOSE: 0,1",
    "M26": "CLOSED",
    "EC20": '+QIURC: "closed",0',
    "EC25": '+QIURC: "closed",0',
}
NETWORK_CLOSE = {
    "SIM800": "+PDP: DEACT",
    "SIM7600": "+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY",
    "M26": "+PDP DEACT",
    "EC20": '+QIURC: "pdpdeact",1',
    "EC25": '+QIURC: "pdpdeact",1',
}


def frame(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return b"\x68" + bytes(rng.randrange(256) for _ in range(size - 2)) + b"\x16"


# -- bytes, both ways -------------------------------------------------------------------


@pytest.mark.parametrize(("model", "mode", "receive"), ROUTES)
def test_bytes_that_look_like_modem_talk_arrive_exactly_both_ways(make_sim, kit, model, mode, receive):
    sim = make_sim(model)

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, mode=mode, receive=receive).connect()
            await stream.send(kit.TRICKY)
            back = await kit.receive_exactly(stream, len(kit.TRICKY))
            await stream.close()
            return server.got, back

    got, back = asyncio.run(scenario())
    assert got == kit.TRICKY
    assert back == kit.TRICKY


@pytest.mark.parametrize("model", MODELS)
def test_a_frame_longer_than_one_send_command_is_split_and_arrives_whole(make_sim, kit, model):
    sim = make_sim(model)
    data = frame(5000)

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server).connect()
            await stream.send(data)
            back = await kit.receive_exactly(stream, len(data))
            await stream.close()
            return server.got, back

    got, back = asyncio.run(scenario())
    assert got == data
    assert back == data
    assert sum(1 for c in sim.commands if "SEND=" in c) > 1  # more than one send command


@pytest.mark.parametrize(("model", "mode", "receive"), ROUTES)
def test_what_the_master_sends_first_arrives(make_sim, kit, model, mode, receive):
    sim = make_sim(model)
    request, answer = frame(40, seed=2), frame(60, seed=3)

    async def scenario():
        async with kit.server(echo=False) as server:
            stream = await kit.connector(sim, server, mode=mode, receive=receive).connect()
            assert await server.wait_connected()
            await server.send(request)
            got = await kit.receive_exactly(stream, len(request))
            await stream.send(answer)
            assert await server.wait_for(lambda: len(server.got) >= len(answer))
            await stream.close()
            return got, server.got

    got, at_server = asyncio.run(scenario())
    assert got == request
    assert at_server == answer


def test_a_plus_escape_in_the_payload_after_silence_is_sent_as_data(make_sim, kit):
    """+++ followed at once by more bytes is payload, even after a quiet line."""
    sim = make_sim("EC25")
    data = b"+++AT\r\x16"

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, mode="transparent").connect()
            await asyncio.sleep(3 * kit.FAST.escape_guard)
            await stream.send(data)
            back = await kit.receive_exactly(stream, len(data))
            online = sim.online
            await stream.close()
            return server.got, back, online

    got, back, online = asyncio.run(scenario())
    assert (got, back) == (data, data)
    assert online


def test_a_payload_ending_in_cr_lf_is_delivered_after_the_drop_silence(make_sim, kit):
    sim = make_sim("SIM800")
    data = b"meter 1 ok\r\n"

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, mode="transparent").connect()
            await stream.send(data)
            back = await kit.receive_exactly(stream, len(data))
            await stream.send(b"still open")
            again = await kit.receive_exactly(stream, 10)
            await stream.close()
            return back, again

    assert asyncio.run(scenario()) == (data, b"still open")


@pytest.mark.parametrize("model", MODELS)
def test_a_drop_report_inside_the_payload_is_not_a_drop(make_sim, kit, model):
    sim = make_sim(model)
    timeouts = attrs.evolve(kit.FAST, drop_silence=0.6)  # far longer than the gap below
    report = b"\r\nNO CARRIER\r\n" if model.startswith("EC") else b"\r\nCLOSED\r\n"

    async def scenario():
        async with kit.server(echo=False) as server:
            stream = await kit.connector(sim, server, mode="transparent", timeouts=timeouts).connect()
            assert await server.wait_connected()
            await server.send(b"abc" + report + b"def")
            first = await kit.receive_exactly(stream, 6 + len(report))
            await server.send(report)  # exactly the report, then more soon after
            await asyncio.sleep(0.05)
            await server.send(b"\x16")
            second = await kit.receive_exactly(stream, len(report) + 1)
            await stream.send(b"alive")
            assert await server.wait_for(lambda: server.got == b"alive")
            await stream.close()
            return first, second

    first, second = asyncio.run(scenario())
    assert first == b"abc" + report + b"def"
    assert second == report + b"\x16"


# -- signal and identification ----------------------------------------------------------


@pytest.mark.parametrize(("rssi", "dbm"), [(20, -73), (0, -113), (31, -51), (99, None)])
def test_signal_quality_goes_to_the_metrics(make_sim, kit, rssi, dbm):
    sim = make_sim("EC20", rssi=rssi)
    seen: list[tuple[str, float]] = []

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, metrics=lambda name, value: seen.append((name, value))).connect()
            await stream.close()

    asyncio.run(scenario())
    expected = [("csq", rssi)] + ([("signal_dbm", dbm)] if dbm is not None else [])
    assert seen == expected


def test_a_failing_metrics_sink_does_not_stop_the_connection(make_sim, kit, caplog):
    sim = make_sim("SIM800")

    def broken(name, value):
        raise RuntimeError("sink down")

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, metrics=broken).connect()
            await stream.close()

    asyncio.run(scenario())
    assert any("metrics callback failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("model", "family"), [("SIM800", "SIM800"), ("SIM7600", "SIM7600"), ("M26", "M26"), ("EC20", "EC2x"), ("EC25", "EC2x")])
def test_the_model_is_identified_and_described(make_sim, kit, model, family):
    sim = make_sim(model)

    async def scenario():
        async with kit.server() as server:
            modem = kit.connector(sim, server)
            before = modem.describe()
            stream = await modem.connect()
            await stream.close()
            return before, modem.describe(), stream

    before, after, stream = asyncio.run(scenario())
    assert sim.path in before and "cmnet" in before
    assert after.startswith(f"modem {family} on {sim.path}")
    assert isinstance(stream, ModemStream)


# -- garbage ----------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "mode", "receive"), ROUTES)
def test_garbage_urcs_are_logged_and_skipped(make_sim, kit, model, mode, receive, caplog):
    caplog.set_level(logging.INFO, logger="meterhub_gprs.modem")
    sim = make_sim(model, faults={"garbage_urcs": {"interval": 0.03}})

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, mode=mode, receive=receive).connect()
            await stream.send(kit.TRICKY)
            back = await kit.receive_exactly(stream, len(kit.TRICKY))
            await asyncio.sleep(0.1)
            await stream.close()
            return server.got, back

    got, back = asyncio.run(scenario())
    assert (got, back) == (kit.TRICKY, kit.TRICKY)
    if mode == "command":
        assert any("unexpected line" in r.getMessage() for r in caplog.records)


# -- SIM --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_no_sim_card_is_a_clear_error(make_sim, kit, model):
    sim = make_sim(model, faults=["no_sim"])

    async def scenario():
        async with kit.server() as server:
            await kit.connector(sim, server).connect()

    with pytest.raises(SimError, match="no SIM card in the modem"):
        asyncio.run(scenario())


def test_a_sim_that_wants_its_pin_without_one_configured(make_sim, kit):
    sim = make_sim("SIM7600", faults=["sim_pin"])

    async def scenario():
        async with kit.server() as server:
            await kit.connector(sim, server).connect()

    with pytest.raises(SimError, match="needs its PIN"):
        asyncio.run(scenario())


def test_the_right_pin_unlocks_the_sim(make_sim, kit):
    sim = make_sim("M26", faults=["sim_pin"], pin="4321")

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, pin="4321").connect()
            await stream.send(b"\x68\x16")
            back = await kit.receive_exactly(stream, 2)
            await stream.close()
            return back

    assert asyncio.run(scenario()) == b"\x68\x16"
    assert 'AT+CPIN="4321"' in sim.commands


def test_a_wrong_pin_is_refused_clearly(make_sim, kit, caplog):
    caplog.set_level(logging.DEBUG, logger="meterhub_gprs.modem")
    sim = make_sim("EC25", faults=["sim_pin"], pin="4321")

    async def scenario():
        async with kit.server() as server:
            await kit.connector(sim, server, pin="1111").connect()

    with pytest.raises(SimError, match="refused the PIN") as caught:
        asyncio.run(scenario())
    assert "1111" not in str(caught.value)
    assert not any("1111" in r.getMessage() for r in caplog.records)  # the PIN is never logged


# -- registration -----------------------------------------------------------------------


@pytest.mark.parametrize(("stat", "said"), [(2, "searching"), (3, "registration denied"), (0, "not registered, not searching")])
def test_no_network_is_a_clear_error(make_sim, kit, stat, said):
    sim = make_sim("SIM800", faults={"no_network": {"stat": stat}})

    async def scenario():
        async with kit.server() as server:
            await kit.connector(sim, server).connect()

    with pytest.raises(NotRegistered, match=f"not registered on the network after 1 s \\({said}"):
        asyncio.run(scenario())


@pytest.mark.parametrize("model", MODELS)
def test_lost_registration_ends_the_connection(make_sim, kit, model):
    sim = make_sim(model)

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server).connect()
            sim.lose_registration()
            with pytest.raises(ConnectionLost, match="registration lost") as caught:
                await kit.receive_exactly(stream, 1)
            with pytest.raises(ConnectionLost):
                await stream.send(b"\x68\x16")
            await stream.close()
            return caught.value

    asyncio.run(scenario())


@pytest.mark.parametrize("model", ["SIM800", "EC20"])
def test_lost_registration_in_transparent_mode_is_seen_by_the_drop_report(make_sim, kit, model):
    sim = make_sim(model)

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, mode="transparent").connect()
            sim.lose_registration()
            with pytest.raises(ConnectionLost, match="the modem reported (CLOSED|NO CARRIER)"):
                await kit.receive_exactly(stream, 1)
            await stream.close()

    asyncio.run(scenario())


def test_registration_lost_a_while_after_connecting(make_sim, kit):
    sim = make_sim("SIM7600", faults={"registration_lost": {"after": 0.2, "stat": 3}})

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server).connect()
            await stream.send(b"\x68\x16")
            assert await kit.receive_exactly(stream, 2) == b"\x68\x16"
            with pytest.raises(ConnectionLost, match=r"\+C(G|E)?REG: 3: registration denied"):
                await kit.receive_exactly(stream, 1)
            await stream.close()

    asyncio.run(scenario())


# -- drops ------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "mode", "receive"), ROUTES)
def test_the_master_hanging_up_is_a_lost_connection(make_sim, kit, model, mode, receive):
    sim = make_sim(model)

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, mode=mode, receive=receive).connect()
            assert await server.wait_connected()
            await server.hang_up()
            with pytest.raises(ConnectionLost) as caught:
                await kit.receive_exactly(stream, 1)
            with pytest.raises(ConnectionLost):
                await stream.receive(0.1)  # and again: the stream stays lost
            await stream.close()
            return str(caught.value)

    message = asyncio.run(scenario())
    expected = REMOTE_CLOSE[model] if mode == "command" else ("NO CARRIER" if model.startswith("EC") else "CLOSED")
    assert expected in message


@pytest.mark.parametrize("model", MODELS)
def test_the_network_dropping_the_pdp_context_is_a_lost_connection(make_sim, kit, model):
    sim = make_sim(model)

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server).connect()
            sim.drop_connection(how="network")
            with pytest.raises(ConnectionLost) as caught:
                await kit.receive_exactly(stream, 1)
            await stream.close()
            return str(caught.value)

    assert NETWORK_CLOSE[model] in asyncio.run(scenario())


def test_a_drop_a_while_after_connecting(make_sim, kit):
    sim = make_sim("M26", faults={"connection_dropped": {"after": 0.2}})

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, mode="transparent").connect()
            await stream.send(b"\x68\x16")
            assert await kit.receive_exactly(stream, 2) == b"\x68\x16"
            with pytest.raises(ConnectionLost, match="CLOSED"):
                await kit.receive_exactly(stream, 1)
            await stream.close()

    asyncio.run(scenario())


def test_a_frame_is_not_typed_into_a_modem_that_just_reported_a_drop(make_sim, kit):
    """Transparent mode: the modem said CLOSED and is taking commands again; a frame sent
    before the verdict waits for it instead of reaching the AT interpreter."""
    sim = make_sim("SIM800")
    timeouts = attrs.evolve(kit.FAST, drop_silence=1.0)

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server, mode="transparent", timeouts=timeouts).connect()
            sim.drop_connection()
            await asyncio.sleep(0.3)  # the report has arrived; the verdict is still pending
            with pytest.raises(ConnectionLost, match="reported CLOSED"):
                await stream.send(b"\x68AT+CPOWD=1\r\x16")
            await stream.close()

    asyncio.run(scenario())
    assert not any("CPOWD" in command for command in sim.commands)


@pytest.mark.parametrize(("model", "mode", "receive"), ROUTES)
def test_a_drop_in_the_middle_of_a_frame(make_sim, kit, model, mode, receive):
    sim = make_sim(model)
    data, cut = frame(300), 117

    async def scenario():
        async with kit.server(echo=False) as server:
            stream = await kit.connector(sim, server, mode=mode, receive=receive).connect()
            sim.drop_connection(after_bytes=cut)
            with pytest.raises(ConnectionLost):
                await stream.send(data)  # accepted by the modem, then the connection went
                await kit.receive_exactly(stream, 1)
            with pytest.raises(ConnectionLost):
                await stream.send(data)
            assert await server.wait_for(lambda: server.closed[-1])
            await stream.close()
            return server.got

    assert asyncio.run(scenario()) == data[:cut]


@pytest.mark.parametrize(("model", "mode", "receive"), ROUTES)
def test_what_arrived_before_a_drop_is_delivered_before_the_loss(make_sim, kit, model, mode, receive):
    sim = make_sim(model)
    last_words = frame(200, seed=9)

    async def scenario():
        async with kit.server(echo=False) as server:
            stream = await kit.connector(sim, server, mode=mode, receive=receive).connect()
            assert await server.wait_connected()
            await server.send(last_words)
            await server.hang_up()
            got = bytearray()
            with pytest.raises(ConnectionLost):
                while True:
                    got += await stream.receive(kit.ARRIVAL_S)
            await stream.close()
            return bytes(got)

    assert asyncio.run(scenario()) == last_words


# -- slow modems ------------------------------------------------------------------------


def test_a_slow_modem_within_its_timeouts_still_connects(make_sim, kit):
    sim = make_sim("SIM800", faults={"slow": {"delay": 0.15}})  # slower than an AT sync round

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server).connect()
            await stream.send(kit.TRICKY)
            back = await kit.receive_exactly(stream, len(kit.TRICKY))
            await stream.close()
            return back

    assert asyncio.run(scenario()) == kit.TRICKY


@pytest.mark.parametrize("model", MODELS)
def test_a_send_stopped_after_its_command_still_gives_the_modem_its_data(make_sim, kit, model):
    """Cancelled while the modem's '>' prompt is on its way: the driver sends the data it
    promised before it stops, so the next command is not typed in as data."""
    sim = make_sim(model)
    first, second = frame(40, seed=1), frame(30, seed=2)

    async def scenario():
        async with kit.server(echo=False) as server:
            stream = await kit.connector(sim, server).connect()
            sim.set_fault("slow", delay=0.3)  # the prompt comes 0.3 s after the send command
            sends = sum(1 for c in sim.commands if "SEND=" in c)
            task = asyncio.get_running_loop().create_task(stream.send(first))
            while sum(1 for c in sim.commands if "SEND=" in c) == sends:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            sim.set_fault("slow", on=False)
            await stream.send(second)
            await server.wait_for(lambda: len(server.got) >= len(first) + len(second))
            await stream.close()
            return server.got

    assert asyncio.run(scenario()) == first + second


def test_a_modem_too_slow_for_its_timeouts_is_a_clear_error(make_sim, kit):
    sim = make_sim("EC20", faults={"slow": {"delay": 5.0}})

    async def scenario():
        async with kit.server() as server:
            await kit.connector(sim, server).connect()

    with pytest.raises(ModemTimeout, match="no answer to AT after 10 tries at 115200 Bd"):
        asyncio.run(scenario())


def test_a_modem_that_stops_answering_mid_way_is_a_timeout_naming_the_command(make_sim, kit):
    sim = make_sim("SIM7600")

    async def scenario():
        async with kit.server() as server:
            modem = kit.connector(sim, server)
            stream = await modem.connect()
            await stream.close()
            sim.set_fault("slow", delay=5.0)
            await modem.connect()

    with pytest.raises(ModemTimeout, match="no answer"):
        asyncio.run(scenario())


# -- the master station cannot be reached ------------------------------------------------


@pytest.mark.parametrize(("model", "mode", "receive"), ROUTES)
def test_a_refused_connection_is_a_connect_failure(make_sim, kit, model, mode, receive):
    sim = make_sim(model, faults=["server_refused"])

    async def scenario():
        async with kit.server() as server:
            await kit.connector(sim, server, mode=mode, receive=receive).connect()

    with pytest.raises(ConnectFailed, match="could not connect to 127.0.0.1"):
        asyncio.run(scenario())


def test_a_port_nobody_listens_on_is_a_connect_failure(make_sim, kit):
    sim = make_sim("EC20")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()
    with pytest.raises(ConnectFailed, match=r"\+QIOPEN: 0,566: socket connect failed"):
        asyncio.run(kit.connector(sim, free).connect())


def test_an_apn_the_network_refuses_is_a_clear_error(make_sim, kit):
    sim = make_sim("M26", apn="cmiot")

    async def scenario():
        async with kit.server() as server:
            await kit.connector(sim, server, apn="cmnet").connect()

    with pytest.raises(ModemError, match="could not activate the data connection with APN 'cmnet'"):
        asyncio.run(scenario())


# -- close and reconnect -----------------------------------------------------------------


@pytest.mark.parametrize(("model", "mode", "receive"), ROUTES)
def test_close_hangs_up_and_the_modem_connects_again(make_sim, kit, model, mode, receive, caplog):
    caplog.set_level(logging.INFO, logger="meterhub_gprs.modem")
    sim = make_sim(model)

    async def scenario():
        async with kit.server() as server:
            modem = kit.connector(sim, server, mode=mode, receive=receive)
            first = await modem.connect()
            await first.send(b"\x68first\x16")
            assert await kit.receive_exactly(first, 7) == b"\x68first\x16"
            await first.close()
            await first.close()  # idempotent
            assert await server.wait_for(lambda: server.closed[0])
            closed_cleanly = not sim.connected and not sim.online
            second = await modem.connect()
            await second.send(b"\x68again\x16")
            back = await kit.receive_exactly(second, 7)
            await second.close()
            return closed_cleanly, back, list(server.received)

    closed_cleanly, back, received = asyncio.run(scenario())
    assert closed_cleanly
    assert back == b"\x68again\x16"
    assert [bytes(r) for r in received] == [b"\x68first\x16", b"\x68again\x16"]
    assert not any("leaving transparent mode" in r.getMessage() for r in caplog.records)  # +++ got its OK


def test_a_closed_stream_refuses_to_send_or_receive(make_sim, kit):
    sim = make_sim("SIM800")

    async def scenario():
        async with kit.server() as server:
            stream = await kit.connector(sim, server).connect()
            await stream.close()
            with pytest.raises(ConnectionLost, match="closed"):
                await stream.send(b"x")
            with pytest.raises(ConnectionLost, match="closed"):
                await stream.receive(0.1)

    asyncio.run(scenario())


def test_a_failed_connect_leaves_the_port_free_for_the_next_try(make_sim, kit):
    sim = make_sim("SIM7600", faults=["no_sim"])

    async def scenario():
        async with kit.server() as server:
            modem = kit.connector(sim, server)
            with pytest.raises(SimError):
                await modem.connect()
            sim.set_fault("no_sim", on=False)
            stream = await modem.connect()  # the port was closed: it opens again
            await stream.send(b"ok")
            back = await kit.receive_exactly(stream, 2)
            await stream.close()
            return back

    assert asyncio.run(scenario()) == b"ok"


def test_a_modem_left_in_data_mode_is_brought_back_with_the_escape(make_sim, kit):
    """An uplink that died without closing leaves the modem online; the next connect's
    AT sync falls back to +++ and carries on."""
    sim = make_sim("SIM800", autobaud=False)

    async def scenario():
        async with kit.server() as server:
            modem = kit.connector(sim, server, mode="transparent")
            stream = await modem.connect()
            await stream.engine.stop()  # as if the process died: no escape, no close
            await stream._link.close()
            assert sim.online
            again = await modem.connect()
            await again.send(b"\x68\x16")
            back = await kit.receive_exactly(again, 2)
            await again.close()
            return back

    assert asyncio.run(scenario()) == b"\x68\x16"


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"mode": "packet"}, "mode must be one of command, transparent"),
        ({"receive": "poll"}, "receive must be one of buffer, push"),
        ({"pin": "12"}, "pin must be 4 to 8 digits"),
        ({"model": "A7670"}, "unknown modem model 'A7670'"),
        ({"apn": 'cm"net'}, "cannot be sent inside an AT string"),
        ({"server": ("127.0.0.1", 0)}, "server must be"),
    ],
)
def test_bad_settings_are_refused_at_once(kwargs, said):
    settings = {"apn": "cmnet", "server": ("127.0.0.1", 5000), **kwargs}
    with pytest.raises(ValueError, match=said):
        ModemConnector("/dev/null", **settings)
