"""DNS-SD advertisement: skipped on loopback and without zeroconf, correct records otherwise.

No multicast leaves this machine: the registering class is replaced by a recorder.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from meterhub_hil.pulsegen import mdns
from meterhub_hil.pulsegen.instrument import Identity

IDENTITY = Identity(serial="PI-7", firmware="0.1.0+lgpio")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.1.1"])
def test_loopback_hosts_are_not_advertised(host):
    assert mdns.advertised_addresses(host) == []


def test_a_specific_address_is_advertised_as_it_is():
    assert mdns.advertised_addresses("192.0.2.10") == ["192.0.2.10"]


def test_the_wildcard_address_advertises_no_loopback_address():
    assert all(not a.startswith("127.") for a in mdns.advertised_addresses("0.0.0.0"))


def test_loopback_skips_with_a_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="meterhub_hil.pulsegen"):
        assert asyncio.run(mdns.advertise("127.0.0.1", 5025, IDENTITY)) is None
    assert "loopback" in caplog.text


def test_without_zeroconf_the_server_logs_and_carries_on(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "zeroconf", None)
    monkeypatch.setitem(sys.modules, "zeroconf.asyncio", None)
    with caplog.at_level(logging.INFO, logger="meterhub_hil.pulsegen"):
        assert asyncio.run(mdns.advertise("192.0.2.10", 5025, IDENTITY)) is None
    assert "pip install zeroconf" in caplog.text


class RecordingZeroconf:
    """Stands in for zeroconf.asyncio.AsyncZeroconf: records instead of multicasting."""

    instances: list[RecordingZeroconf] = []

    def __init__(self, *args, **kwargs) -> None:
        self.registered, self.unregistered, self.closed = [], [], False
        RecordingZeroconf.instances.append(self)

    async def async_register_service(self, info):
        self.registered.append(info)

    async def async_unregister_service(self, info):
        self.unregistered.append(info)

    async def async_close(self):
        self.closed = True


def test_the_service_is_a_scpi_raw_record_with_lxi_txt_keys(monkeypatch):
    zeroconf_asyncio = pytest.importorskip("zeroconf.asyncio")
    monkeypatch.setattr(zeroconf_asyncio, "AsyncZeroconf", RecordingZeroconf)
    RecordingZeroconf.instances.clear()

    async def scenario():
        advertisement = await mdns.advertise("192.0.2.10", 5025, IDENTITY, instance="bench pulsegen")
        assert advertisement is not None
        await advertisement.close()

    asyncio.run(scenario())
    (zc,) = RecordingZeroconf.instances
    (info,) = zc.registered
    assert info.type == "_scpi-raw._tcp.local."
    assert info.name == "bench pulsegen._scpi-raw._tcp.local."
    assert info.port == 5025
    assert info.parsed_addresses() == ["192.0.2.10"]
    assert info.properties[b"Model"] == b"meterhub-pulsegen"
    assert info.properties[b"SerialNumber"] == b"PI-7"
    assert info.properties[b"FirmwareVersion"] == b"0.1.0+lgpio"
    assert zc.unregistered == [info] and zc.closed


def test_a_failed_registration_is_logged_and_not_fatal(monkeypatch, caplog):
    zeroconf_asyncio = pytest.importorskip("zeroconf.asyncio")

    class Failing(RecordingZeroconf):
        async def async_register_service(self, info):
            raise OSError("no multicast route")

    monkeypatch.setattr(zeroconf_asyncio, "AsyncZeroconf", Failing)
    with caplog.at_level(logging.WARNING, logger="meterhub_hil.pulsegen"):
        assert asyncio.run(mdns.advertise("192.0.2.10", 5025, IDENTITY)) is None
    assert "no multicast route" in caplog.text
