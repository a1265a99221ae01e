"""MQTT topic names: one place, so the publisher, the discovery and the lint agree.

``<prefix>/<site>/<meter>/<alias>/state`` carries a reading's exact decimal value (or its
quality when it failed), ``.../attributes`` a JSON object with its unit, quality,
timestamp, OBIS code and route; ``<prefix>/<site>/status`` is ``online`` or ``offline``
(the last will); ``<prefix>/<site>/<meter>/command/<name>`` takes commands when they are
switched on, answered on ``.../command/<name>/result``. Names are lower-case slugs that
people can guess: a meter is its address, unless another meter of the site shares it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from meterhub.model import Meter

DEFAULT_PREFIX = "meterhub"
DISCOVERY_PREFIX = "homeassistant"
ONLINE, OFFLINE = "online", "offline"

_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def slug(text: str) -> str:
    """``text`` as a topic level: lower case, letters, digits, ``_`` and ``-`` only (MQTT
    wildcards ``+`` ``#`` and the level separator ``/`` can never appear)."""
    return _UNSAFE.sub("_", str(text).strip().lower()).strip("_") or "_"


def meter_ids(meters: Sequence[Meter]) -> dict[str, str]:
    """Each meter's topic level by its key (``channel/protocol:address``): its address;
    ``protocol-address`` where two protocols share the address; ``channel-protocol-address``
    where two channels do."""
    ids: dict[str, str] = {}
    for meter in meters:
        for candidate in (meter.address, f"{meter.protocol}-{meter.address}",
                          f"{meter.channel}-{meter.protocol}-{meter.address}"):
            shared = [m for m in meters if m.key != meter.key and _level(m, candidate, meter) == slug(candidate)]
            if not shared:
                ids[meter.key] = slug(candidate)
                break
        else:
            ids[meter.key] = slug(meter.key)
    return ids


def _level(other: Meter, candidate: str, meter: Meter) -> str:
    """The same kind of name as ``candidate`` (for ``meter``) for ``other``."""
    if candidate == meter.address:
        return slug(other.address)
    if candidate == f"{meter.protocol}-{meter.address}":
        return slug(f"{other.protocol}-{other.address}")
    return slug(f"{other.channel}-{other.protocol}-{other.address}")


def state_topic(prefix: str, site: str, meter: str, alias: str) -> str:
    return f"{prefix}/{site}/{meter}/{alias}/state"


def attributes_topic(prefix: str, site: str, meter: str, alias: str) -> str:
    return f"{prefix}/{site}/{meter}/{alias}/attributes"


def availability_topic(prefix: str, site: str) -> str:
    return f"{prefix}/{site}/status"


def command_topic(prefix: str, site: str, meter: str, command: str) -> str:
    return f"{prefix}/{site}/{meter}/command/{command}"


def result_topic(prefix: str, site: str, meter: str, command: str) -> str:
    return f"{prefix}/{site}/{meter}/command/{command}/result"
