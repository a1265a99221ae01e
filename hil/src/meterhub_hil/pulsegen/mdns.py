"""mDNS/DNS-SD advertisement of the SCPI socket as ``_scpi-raw._tcp`` (optional ``zeroconf``).

The LXI Device Specification's mDNS/DNS-SD discovery uses ``_scpi-raw._tcp`` for raw
SCPI sockets, with the TXT keys used below, so VISA resource finders and lab tools find
the Pi by itself.
The ``zeroconf`` package is optional: without it (or on a loopback address) the server
logs one line and carries on.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from .instrument import Identity

log = logging.getLogger("meterhub_hil.pulsegen")

SERVICE_TYPE = "_scpi-raw._tcp.local."


def advertised_addresses(host: str) -> list[str]:
    """IPv4 addresses to announce for a server bound to ``host``; [] for loopback."""
    if host in ("", "0.0.0.0", "::"):
        return _local_addresses()
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return []
    return [] if address.is_loopback else [str(address)]


def _local_addresses() -> list[str]:
    """The host's non-loopback IPv4 addresses (the one with the default route first)."""
    found: list[str] = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent by a UDP connect
        found.append(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    try:
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    unique = dict.fromkeys(a for a in found if not ipaddress.ip_address(a).is_loopback)
    return list(unique)


class Advertisement:
    """A registered service; ``await close()`` withdraws it."""

    def __init__(self, zeroconf, info) -> None:
        self._zeroconf = zeroconf
        self.info = info

    async def close(self) -> None:
        try:
            await self._zeroconf.async_unregister_service(self.info)
        finally:
            await self._zeroconf.async_close()


async def advertise(host: str, port: int, identity: Identity, *, instance: str | None = None) -> Advertisement | None:
    """Announce the SCPI socket on the LAN; None (with a log line) when that cannot be done."""
    addresses = advertised_addresses(host)
    if not addresses:
        log.info("mDNS: %s is a loopback (or unknown) address; not advertising", host)
        return None
    try:
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
    except ImportError:
        log.info("mDNS: the zeroconf package is not installed (pip install zeroconf); not advertising")
        return None
    hostname = socket.gethostname().split(".")[0]
    name = instance or f"{identity.model} {hostname}"
    # TXT keys of the LXI Device Specification's DNS-SD records
    properties = {
        "txtvers": "1",
        "Manufacturer": identity.manufacturer,
        "Model": identity.model,
        "SerialNumber": identity.serial,
        "FirmwareVersion": identity.firmware,
    }
    info = AsyncServiceInfo(
        SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=port, parsed_addresses=addresses,
        properties=properties, server=f"{hostname}.local.",
    )
    zeroconf = AsyncZeroconf()
    try:
        await zeroconf.async_register_service(info)
    except Exception as exc:  # the server works without mDNS; say why it is missing
        log.warning("mDNS: registering %r failed (%s); not advertising", name, exc)
        await zeroconf.async_close()
        return None
    log.info("mDNS: advertising %r as %s on %s port %d", name, SERVICE_TYPE, ", ".join(addresses), port)
    return Advertisement(zeroconf, info)
