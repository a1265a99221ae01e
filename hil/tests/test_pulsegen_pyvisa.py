"""A lab's own pyvisa script (pyvisa-py backend, TCPIP SOCKET resource) drives the server."""

from __future__ import annotations

import pytest
import pyvisa

from meterhub_hil.pulsegen.backends import SimBackend
from meterhub_hil.pulsegen.instrument import Identity, PulseGenerator
from meterhub_hil.pulsegen.server import serve_in_thread


@pytest.fixture
def instrument():
    backend = SimBackend({1: 17, 2: 27})
    running = serve_in_thread(PulseGenerator(backend, Identity(serial="VISA1", firmware="test")))
    host, port = running.address
    rm = pyvisa.ResourceManager("@py")
    # serial-visa-peers.md B2: both terminations must be set (the defaults are None and CR LF)
    inst = rm.open_resource(f"TCPIP::{host}::{port}::SOCKET", read_termination="\n",
                            write_termination="\n", timeout=10_000)
    yield inst
    inst.close()
    rm.close()
    running.stop()
    backend.close()


def test_identify(instrument):
    manufacturer, model, serial, firmware = instrument.query("*IDN?").split(",")
    assert (manufacturer, model, serial, firmware) == ("meterhub", "meterhub-pulsegen", "VISA1", "test")


def test_the_acceptance_sequence_through_pyvisa(instrument):
    instrument.write("SOUR1:PULS:FREQ 1000")
    instrument.write("SOUR1:PULS:COUN 500")
    instrument.write("OUTP1 ON")
    instrument.write("INIT1")
    assert instrument.query("*OPC?") == "1"
    assert instrument.query("SOUR1:PULS:SENT?") == "500"
    assert instrument.query("SYST:ERR?") == '0,"No error"'


def test_numbers_read_back_with_query_ascii_values(instrument):
    instrument.write("SOURce2:PULSe:FREQuency 12.5 Hz;WIDTh 30 ms;COUNt 7")
    assert instrument.query_ascii_values("SOUR2:PULS:FREQ?;WIDT?;COUN?", separator=";") == [12.5, 0.03, 7.0]


def test_errors_are_read_from_the_queue(instrument):
    instrument.write("SOUR1:PULS:FREQ -5")
    instrument.write("SOUR1:PULS:WIDT 1 s")  # longer than the 0.1 s period: refused at INIT
    instrument.write("OUTP1 ON")
    instrument.write("INIT1")
    code, text = instrument.query("SYST:ERR?").split(",", 1)
    assert code == "-222" and text.startswith('"Data out of range')
    assert instrument.query("SYST:ERR?").startswith("-221,")
    assert instrument.query("SYST:ERR?") == '0,"No error"'


def test_a_small_s0_campaign(instrument):
    """What a lab script does: program both channels, start both, wait, check the counts."""
    for channel in (1, 2):
        instrument.write(f"SOUR{channel}:PULS:FREQ 1 kHz;WIDT 0.2 ms;COUN {100 * channel}")
        instrument.write(f"OUTP{channel} ON")
    instrument.write("INIT1;INIT2")
    instrument.query("*OPC?")
    assert [int(instrument.query(f"SOUR{c}:PULS:SENT?")) for c in (1, 2)] == [100, 200]
