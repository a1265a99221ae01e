"""Site files: YAML in, a validated :class:`~meterhub.model.Site` out.

Every mistake in a file is collected into one :class:`~meterhub.errors.ConfigError`, each
issue naming the file, the 1-based line and the key path (``meters[2].quantities[1]``), so
a user fixes a site file in one pass instead of one error per run. Lines come from
PyYAML's composed nodes (SafeLoader semantics); the values themselves are checked here,
and channel settings are also handed to the channel's transport for its own checks. The
file's size, nesting and every number and duration in it are bounded, so no file can
hang the loader or hand the runtime a value it cannot use.

The format, top-level keys and defaults::

    channels:      name -> {transport, port, baudrate, parity, bytesize, stopbits, <transport options>}
    meters:        list of {address, protocol, channel | collector, quantities, point, name,
                            timeout, retries, baudrate, parity, bytesize, stopbits, options, credential}
    collectors:    name -> {channel | collector, address, protocol, relay_delay, <options>}  (optional)
    schedule:      {interval, retries, backoff_initial, backoff_max}       (optional)
    store:         sqlite:///meterhub.db                                   (optional)
    uplink:        {protocol, name, <the uplink driver's keys>}            (optional)
    uplinks:       a list of such mappings, for several uplinks at once    (optional)
    terminal:      this concentrator's identity (area code/address)        (optional)

A collector reached through another names it as ``collector:`` (a relay chain); a
meter's route is its channel, then every collector from the concentrator outwards.

Top-level keys starting with ``x-`` are ignored, so they can hold YAML anchors
(``x-dlt645: &dlt645 {...}`` then ``<<: *dlt645`` in each meter).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from datetime import time
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

import attrs

from .api import (
    MeterDriver,
    MeterValidator,
    PlacementValidator,
    ProfileFolders,
    Transport,
    TransportDefaults,
    UplinkDriver,
)
from .errors import ConfigError, ConfigIssue, UnknownQuantity
from .errors import did_you_mean as _suggest
from .model import (
    DEFAULT_STORE,
    PARITIES,
    ChannelConfig,
    Collector,
    FreezeConfig,
    Hop,
    Meter,
    PrepayConfig,
    Schedule,
    SerialSettings,
    Site,
    TimeSyncConfig,
    UplinkConfig,
    local_zone,
)
from .quantities import VOCABULARY, resolve
from .yamlnodes import Node as _Node
from .yamlnodes import child_path as _child_path
from .yamlnodes import clip as _clip
from .yamlnodes import compose_into as _compose
from .yamlnodes import locate as _locate
from .yamlnodes import plain as _plain
from .yamlnodes import read_document, too_large
from .yamlnodes import shorten as _shorten

__all__ = ["DEFAULT_QUANTITY", "load_alarms", "load_site", "parse_duration", "parse_site"]

TOP_KEYS = (
    "channels", "meters", "collectors", "schedule", "store", "uplink", "uplinks", "terminal", "profiles",
    "timezone", "tariffs", "alarms", "freeze", "prepayment", "time_sync",
)  # fmt: skip
#: top-level keys with this prefix are free for YAML anchors (docker-compose's convention)
EXTENSION_PREFIX = "x-"
SERIAL_KEYS = ("baudrate", "parity", "bytesize", "stopbits")
CHANNEL_KEYS = ("transport", "port", *SERIAL_KEYS)  # any other key is a transport option
METER_KEYS = (
    "address", "protocol", "channel", "collector", "quantities", "point", "name",
    "timeout", "retries", *SERIAL_KEYS, "options", "credential", "tariff", "prepaid",
)  # fmt: skip
COLLECTOR_KEYS = ("channel", "collector", "address", "protocol", "relay_delay")  # any other key is a collector option
UPLINK_KEYS = ("protocol", "name")  # any other key is the uplink driver's
#: The longest a relay may add to an answer: as long as a meter's whole timeout may be.
LONGEST_RELAY_DELAY = 60.0
#: Collector and uplink names appear in routes (``bus1/c1/c2``) and outbox queues.
NAME_SEPARATOR = "/"
SCHEDULE_KEYS = ("interval", "retries", "backoff_initial", "backoff_max")
FREEZE_KEYS = ("daily", "monthly_day", "quantities", "profile", "backfill_days")
PROFILE_KEYS = ("interval", "quantities")
PREPAY_KEYS = ("disconnect", "reconnect", "credential", "opening_balance")
TIME_SYNC_KEYS = ("at", "every", "window")
#: The latest settlement day: every month has it (February's 28th).
LAST_SETTLEMENT_DAY = 28
#: How far back a meter's daily freeze records reach (DL/T 645 keeps 62) and so back-filling.
MAX_BACKFILL_DAYS = 366
#: The widest broadcast-time window: meters refuse larger corrections (DL/T 645: ±5 min).
LONGEST_SYNC_WINDOW = 3600.0
_TIME_OF_DAY = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")

#: what a meter reads when its ``quantities`` are left out: the billing register
DEFAULT_QUANTITY = "1-0:1.8.0"
#: bound on retries so that one dead meter cannot hold its bus for a whole round
MAX_RETRIES = 10
#: The largest site file read, in bytes. A concentrator serves at most 2040 measuring
#: points (Q/GDW 1376.1), and even 10,000 meters written out at 400 bytes each, comments
#: included, fit. A larger file is something else given by mistake (a log, a database)
#: and would take tens of seconds and hundreds of MB to parse.
MAX_SITE_FILE_BYTES = 4 * 1024 * 1024
#: The longest interval and back-off, in seconds: a year. A yearly reading is the rarest
#: schedule in metering; a longer one is a slip (3000000d) and would overflow the runtime's
#: date arithmetic (a datetime ends in the year 9999).
LONGEST_SCHEDULE = 366 * 24 * 3600.0
#: The longest wait for a meter's answer, in seconds. A request and an answer of 255 bytes
#: each at 300 bit/s (11 bits a character) take 19 s; a minute leaves room for a modem on
#: the way, and a longer wait would hold the whole bus for each unanswered attempt.
LONGEST_METER_TIMEOUT = 60.0
#: The fastest baud rate: termios' B4000000, Linux's highest (meters use 300 to 115200).
#: Its transport says which rates a port takes; this bound keeps timing maths (bit times,
#: gaps) away from numbers no float holds.
MAX_BAUDRATE = 4_000_000
#: Q/GDW 1376.1 DA: pn = (DA2 - 1) * 8 + bit + 1 with DA2 in 1..255, so pn 1..2040;
#: pn 0 is the terminal itself, not a measuring point
POINT_RANGE = (1, 2040)
STORE_SCHEME = "sqlite:///"

#: pyserial's parity letters, with the words people also write
PARITY_NAMES = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}
BYTESIZES = (5, 6, 7, 8)
STOPBITS = (1, 1.5, 2)

_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)")
_DURATION_FULL = re.compile(rf"(?:\s*{_NUMBER}\s*(?:ms|s|m|h|d))+\s*")
_PLAIN_NUMBER = re.compile(rf"\s*{_NUMBER}\s*")

def parse_duration(text: str | float) -> float:
    """Seconds in a duration: a number of seconds (``90``) or units ``ms s m h d`` (``1h30m``).

    Raises ``ValueError`` with a message a user can act on for anything else, including
    negative numbers and booleans (YAML reads ``yes`` as true).
    """
    hint = "write seconds (90) or a duration such as 30s, 15m, 1h30m, 1d"
    shown = _shorten(text) if isinstance(text, str) else _clip(repr(text))
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"not a duration: {shown}; {hint}")
    if isinstance(text, (int, float)):
        if isinstance(text, float) and not math.isfinite(text):
            raise ValueError(f"not a duration: {shown}; {hint}")
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {shown}")
        return _finite_seconds(text, shown)
    spelled = text.strip().lower()
    if _PLAIN_NUMBER.fullmatch(spelled):
        return _finite_seconds(float(spelled), shown)
    if spelled.startswith("-"):
        raise ValueError(f"a duration cannot be negative: {shown}")
    if not spelled or not _DURATION_FULL.fullmatch(spelled):
        raise ValueError(f"not a duration: {shown}; {hint}")
    units = [unit for _, unit in _DURATION_PART.findall(spelled)]
    if len(units) != len(set(units)):
        raise ValueError(f"not a duration: {shown} (a unit appears twice); {hint}")
    seconds = sum(float(number) * _SECONDS[unit] for number, unit in _DURATION_PART.findall(spelled))
    return _finite_seconds(seconds, shown)


def _finite_seconds(seconds: float, shown: str) -> float:
    """``seconds`` as a float; ValueError for a number of seconds too large for one (a
    300-digit number: float() gives infinity for text, OverflowError for an int)."""
    try:
        result = float(seconds)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise ValueError(f"a duration too long to count: {shown}")
    return result


def load_site(
    path: str | os.PathLike[str],
    *,
    drivers: Mapping[str, MeterDriver],
    transports: Mapping[str, Transport],
    uplinks: Mapping[str, UplinkDriver] | None = None,
) -> Site:
    """Read and validate a site file; raise :class:`ConfigError` listing every problem.
    ``uplinks`` are the installed uplink drivers; an uplink section naming another (or
    with none given) is an error, never ignored."""
    filename = os.fspath(path)
    text = read_document(filename, max_bytes=MAX_SITE_FILE_BYTES, what="a site file",
                         hint="10,000 meters fit in fewer")
    return parse_site(text, filename=filename, drivers=drivers, transports=transports, uplinks=uplinks)


def parse_site(
    text: str,
    *,
    filename: str,
    drivers: Mapping[str, MeterDriver],
    transports: Mapping[str, Transport],
    uplinks: Mapping[str, UplinkDriver] | None = None,
) -> Site:
    """Validate the text of a site file; raise :class:`ConfigError` listing every problem."""
    if len(text) > MAX_SITE_FILE_BYTES:  # a character takes at least a byte: a file read fits
        raise ConfigError([ConfigIssue(filename, None, "", too_large(len(text), MAX_SITE_FILE_BYTES, "characters",
                                                                   "a site file", "10,000 meters fit in fewer"))])
    issues: list[ConfigIssue] = []
    root = _compose(text, filename, issues)
    site = None
    if root is not None:
        site = _SiteBuilder(filename, issues, drivers, transports, uplinks or {}).build(root)
    elif not issues:
        issues.append(ConfigIssue(filename, None, "", "the file is empty: it needs at least channels: and meters:"))
    if issues or site is None:
        raise ConfigError(sorted(issues, key=lambda i: i.line or 0))
    return site


def load_alarms(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``alarms:`` section of a YAML file (a site file, or a file holding only that
    section, as a head-end uses), validated by the installed rule types; raise
    :class:`ConfigError` naming file, line and key of every problem."""
    filename = os.fspath(path)
    text = read_document(filename, max_bytes=MAX_SITE_FILE_BYTES, what="an alarms file")
    issues: list[ConfigIssue] = []
    root = _compose(text, filename, issues)
    section: dict[str, Any] = {}
    if root is not None:
        builder = _SiteBuilder(filename, issues, {}, {}, {})
        if root.kind != "map" or root.get("alarms") is None:
            issues.append(ConfigIssue(filename, root.line, "", "no alarms: section (a mapping of alarm rules)"))
        else:
            section = builder.alarms(root, root.get("alarms"))
    elif not issues:
        issues.append(ConfigIssue(filename, None, "", "the file is empty: it needs an alarms: section"))
    if issues:
        raise ConfigError(sorted(issues, key=lambda i: i.line or 0))
    return section


def _describe(node: _Node) -> str:
    """What a node is, in words, for 'must be X, got Y' messages."""
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "a list"
    value = node.value
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{_shorten(node.raw)} (which YAML reads as {str(value).lower()}; quote it if you meant text)"
    if isinstance(value, (int, float)):
        return f"the number {_clip(node.raw)}"
    if isinstance(value, str):
        return f"the text {_shorten(value)}"
    return f"{_shorten(node.raw)} ({type(value).__name__})"


def _known(what: str, names: Iterable[str]) -> str:
    names = sorted(names)
    return f"known {what}: {', '.join(names)}" if names else f"no {what} is installed"


# -- validation --------------------------------------------------------------------


class _SiteBuilder:
    """Checks a converted file key by key, recording an issue for each problem found."""

    def __init__(
        self,
        filename: str,
        issues: list[ConfigIssue],
        drivers: Mapping[str, MeterDriver],
        transports: Mapping[str, Transport],
        uplinks: Mapping[str, UplinkDriver],
    ) -> None:
        self.filename = filename
        self.issues = issues
        self.drivers = drivers
        self.transports = transports
        self.uplink_drivers = uplinks
        self._channel_nodes: dict[str, _Node] = {}  # every channel named, even a broken one
        self._collector_nodes: dict[str, _Node] = {}  # every collector named, even a broken one
        self._offers: dict[tuple[int, type], bool] = {}  # capability checks, per plugin (see offers)

    # -- recording -----------------------------------------------------------------

    def issue(self, line: int | None, key: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.filename, line, key, message))

    def bad(self, node: _Node, message: str) -> None:
        self.issue(node.line, node.path, message)

    def missing(self, parent: _Node, key: str) -> None:
        self.issue(parent.line, _child_path(parent.path, key), "missing required key")

    # -- typed values (None = absent, or wrong and already reported) ---------------

    def mapping(self, node: _Node | None, what: str = "a mapping") -> dict[str, _Node] | None:
        if node is None or node.is_null or node.broken:
            return None
        if node.kind != "map":
            self.bad(node, f"must be {what}, got {_describe(node)}")
            return None
        return node.value

    def sequence(self, node: _Node | None, what: str = "a list") -> list[_Node] | None:
        if node is None or node.is_null or node.broken:
            return None
        if node.kind != "seq":
            self.bad(node, f"must be {what}, got {_describe(node)}")
            return None
        return node.value

    def text(self, node: _Node | None, *, numbers_ok: bool = False) -> str | None:
        """A string; with ``numbers_ok`` a number is taken as the text it was written as."""
        if node is None or node.broken:
            return None
        if node.kind == "scalar" and isinstance(node.value, str):
            if not node.value.strip():
                self.bad(node, "must not be empty")
                return None
            problem = _unwritable(node.value)
            if problem is not None:
                self.bad(node, problem)
                return None
            return node.value
        if numbers_ok and node.kind == "scalar" and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.raw
        self.bad(node, f"must be text, got {_describe(node)}")
        return None

    def integer(self, node: _Node | None, low: int, high: int | None = None) -> int | None:
        """A whole number from ``low`` to ``high``. Every number in a site file is bounded, so
        that nothing downstream (timing maths, a date) meets one it cannot hold; a caller
        without ``high`` checks its own ceiling (:meth:`baudrate`)."""
        if node is None or node.broken:
            return None
        value = node.value if node.kind == "scalar" else None
        range_text = f"from {low} to {high}" if high is not None else f"of at least {low}"
        if not isinstance(value, int) or isinstance(value, bool):
            self.bad(node, f"must be a whole number {range_text}, got {_describe(node)}")
            return None
        if value < low or (high is not None and value > high):
            self.bad(node, f"must be a whole number {range_text}, got {_clip(node.raw)}")
            return None
        return value

    def duration(self, node: _Node | None, longest: float) -> float | None:
        """A duration in seconds (``90``, ``30s``, ``15m``, ``1h30m``), above zero and at most
        ``longest``: the runtime adds it to clocks and dates, which end somewhere."""
        if node is None or node.broken:
            return None
        if node.kind != "scalar":
            self.bad(node, f"must be a duration such as 30s or 15m, got {_describe(node)}")
            return None
        try:
            seconds = parse_duration(node.value)
        except ValueError as exc:
            self.bad(node, str(exc))
            return None
        if seconds <= 0:
            self.bad(node, f"must be longer than zero, got {_clip(node.raw)}")
            return None
        if seconds > longest:
            self.bad(node, f"must be at most {_duration_text(longest)}, got {_clip(node.raw)}")
            return None
        return seconds

    def check_keys(self, node: _Node, known: tuple[str, ...]) -> None:
        for key, child in node.value.items():
            if key not in known:
                hint = _suggest(key, known) or f"; {_known('keys', known)}"
                self.bad(child, f"unknown key {_shorten(key)}{hint}")

    # -- the file --------------------------------------------------------------------

    def build(self, root: _Node) -> Site | None:
        if root.kind != "map":
            self.issue(root.line, "", f"the file must be a mapping with channels: and meters:, got {_describe(root)}")
            return None
        for key, child in root.value.items():
            if key not in TOP_KEYS and not key.startswith(EXTENSION_PREFIX):
                hint = _suggest(key, TOP_KEYS) or "; " + _known("keys", TOP_KEYS)
                self.bad(child, f"unknown top-level key {_shorten(key)}{hint}")
        for key in ("channels", "meters"):
            if key not in root.value:
                self.missing(root, key)
        self.profile_dirs(root.get("profiles"))  # before the meters: they name the profiles
        channels = self.channels(root.get("channels"))
        collectors = self.collectors(root.get("collectors"))
        meters = self.meters(root.get("meters"), channels, collectors)
        schedule = self.schedule(root.get("schedule"))
        store = self.store(root.get("store"))
        uplink_node = root.get("uplink")
        uplinks = self.uplinks(uplink_node, root.get("uplinks"))
        terminal_node = root.get("terminal")
        terminal = self.text(terminal_node, numbers_ok=True) if terminal_node is not None else None
        timezone = self.timezone(root.get("timezone"))
        tariffs, tariff_sources = self.tariffs(root, root.get("tariffs"))
        self.tariff_refs(meters, root.get("meters"), tariffs)
        alarms = self.alarms(root, root.get("alarms"))
        freeze = self.freeze(root.get("freeze"))
        prepayment = self.prepayment(root.get("prepayment"))
        time_sync = self.time_sync(root.get("time_sync"))
        return Site(
            channels=channels,
            meters=tuple(meters),
            collectors=collectors,
            schedule=schedule,
            store=store,
            uplink=_plain(uplink_node) if uplink_node is not None and uplink_node.kind == "map" else None,
            uplinks=uplinks,
            terminal=terminal or "",
            source=self.filename,
            timezone=timezone,
            tariffs=tariffs,
            tariff_sources=tariff_sources,
            alarms=alarms,
            freeze=freeze,
            prepayment=prepayment,
            time_sync=time_sync,
        )

    # -- uplinks -----------------------------------------------------------------------------

    def uplinks(self, single: _Node | None, several: _Node | None) -> list[UplinkConfig]:
        """``uplink:`` (one) and ``uplinks:`` (a list), each checked by its uplink driver."""
        nodes: list[_Node] = []
        if single is not None and self.mapping(single, "a mapping with protocol:") is not None:
            nodes.append(single)
        nodes += [item for item in self.sequence(several, "a list of uplinks, each a mapping with protocol:") or ()]
        result: list[UplinkConfig] = []
        names: dict[str, _Node] = {}
        for node in nodes:
            if node is not single and self.mapping(node, "a mapping with protocol:") is None:
                if node.is_null:
                    self.bad(node, "must be a mapping with protocol:, got nothing")
                continue
            protocol_node = node.get("protocol")
            if protocol_node is None:
                self.missing(node, "protocol")
                continue
            protocol = self.text(protocol_node)
            if protocol is None:
                continue
            driver = self.uplink_drivers.get(protocol)
            if driver is None:
                installed = _known("uplink protocols", self.uplink_drivers) if self.uplink_drivers else "no uplink plugin is installed"
                self.bad(protocol_node, f"unknown uplink protocol {_shorten(protocol)}"
                                        f"{_suggest(protocol, self.uplink_drivers)} ({installed})")
                continue
            name_node = node.get("name")
            name = self.name(name_node) if name_node is not None else protocol
            if name is None:
                continue
            if name in names:
                where = names[name]
                self.bad(name_node or protocol_node,
                         f"uplink name {_shorten(name)} is already used at line {where.line}; give each uplink its own name:")
                continue
            names[name] = node
            options = {key: _plain(child) for key, child in node.value.items() if key not in UPLINK_KEYS}
            config = UplinkConfig(name, protocol, options)
            try:
                problems = list(driver.validate(config))
            except Exception as exc:  # a driver bug must not hide the rest of the file's mistakes
                problems = [("", f"the {protocol} uplink could not check this section: {type(exc).__name__}: {exc}")]
            for key, message in problems:
                self.issue(_locate(node, key) if key else node.line, _child_path(node.path, key) if key else node.path,
                           message)
            result.append(config)
        return result

    def name(self, node: _Node) -> str | None:
        """A collector's or uplink's name: text without the route separator."""
        name = self.text(node, numbers_ok=True)
        if name is not None and NAME_SEPARATOR in name:
            self.bad(node, f"must not contain {NAME_SEPARATOR!r} (it separates the collectors of a route), "
                           f"got {_shorten(name)}")
            return None
        return name

    # -- profile folders ----------------------------------------------------------------

    def profile_dirs(self, node: _Node | None) -> None:
        """``profiles: [folder, ...]``: device profiles (YAML) a vendor keeps beside the site
        file, relative to it; every driver that takes profile folders loads each folder."""
        items = self.sequence(node, "a list of folders with device profiles")
        loaders = [d for d in self.drivers.values() if isinstance(d, ProfileFolders)]
        base = os.path.dirname(os.path.abspath(self.filename)) if not self.filename.startswith("<") else os.getcwd()
        for item in items or ():
            folder = self.text(item)
            if folder is None:
                continue
            path = os.path.join(base, os.path.expanduser(folder))
            if not os.path.isdir(path):
                self.bad(item, f"no such folder: {path}")
                continue
            if not loaders:
                self.bad(item, "no installed meter driver takes device profiles")
            for driver in loaders:
                try:
                    driver.load_profile_dir(path)
                except ConfigError as exc:  # the profile files' own file:line: key issues
                    self.issues.extend(exc.issues)
                except (OSError, ValueError) as exc:
                    self.bad(item, f"{driver.name} profiles in {path}: {exc}")
                except Exception as exc:  # a driver's bug (a YAML value it did not expect) must not end in a traceback
                    failure = f"{type(exc).__name__}: {exc}"
                    self.bad(item, f"the {driver.name} driver could not load the profiles in {path}: {failure}")

    # -- channels ----------------------------------------------------------------------

    def channels(self, node: _Node | None) -> dict[str, ChannelConfig]:
        entries = self.mapping(node, "a mapping of channel names to their settings")
        if entries is None:
            return {}
        result: dict[str, ChannelConfig] = {}
        for name, chan in entries.items():
            self._channel_nodes[name] = chan
            channel = self.channel(name, chan)
            if channel is not None:
                result[name] = channel
        return result

    def channel(self, name: str, node: _Node) -> ChannelConfig | None:
        if self.mapping(node, "a mapping with transport: and port:") is None:
            if node.is_null:
                self.bad(node, "must be a mapping with transport: and port:, got nothing")
            return None
        for key in ("transport", "port"):
            if node.get(key) is None:
                self.missing(node, key)
        transport_name = self.text(node.get("transport"))
        port = self.text(node.get("port"))
        known = self.transports.get(transport_name) if transport_name is not None else None
        # a carrier module's UART runs at 9600 8E1 unless the file says otherwise: the transport's own default
        base = known.default_settings if isinstance(known, TransportDefaults) else SerialSettings()
        settings, _, bad_keys = self.serial(node, base)
        if port is None:
            bad_keys.add("port")  # missing or wrong: reported already
        options = {key: _plain(child) for key, child in node.value.items() if key not in CHANNEL_KEYS}
        channel = ChannelConfig(name, transport_name or "", port or "", settings, options)
        if transport_name is not None:
            transport = self.transports.get(transport_name)
            if transport is None:
                self.bad(
                    node.value["transport"],
                    f"unknown transport {_shorten(transport_name)}{_suggest(transport_name, self.transports)}"
                    f" ({_known('transports', self.transports)})",
                )
            else:
                self.transport_issues(transport, channel, node, skip=bad_keys)
        return channel

    def transport_issues(
        self, transport: Transport, channel: ChannelConfig, node: _Node, *, skip: set[str], only: Iterable[str] | None = None
    ) -> None:
        """Report what the transport finds wrong, at the line of the key it names."""
        only = set(only) if only is not None else None
        prefix = f"channels.{channel.name}."
        for key, message in transport.validate(channel):
            key = key.removeprefix(prefix) if key else ""
            head = re.split(r"[.\[]", key, maxsplit=1)[0]
            if head in skip or (only is not None and head not in only):
                continue  # already reported by the generic checks, or not this node's key
            line = _locate(node, key)
            self.issue(line, _child_path(node.path, key) if key else node.path, message)

    def serial(self, node: _Node, base: SerialSettings) -> tuple[SerialSettings, set[str], set[str]]:
        """Serial settings from ``node`` over ``base``: (settings, keys given, keys wrong).

        These are the checks every serial link needs whatever its transport, so they are
        made even when the transport is unknown; the transport adds its own limits.
        """
        checks = {
            "baudrate": self.baudrate,
            "parity": self.parity,
            "bytesize": lambda n: self.choice(n, BYTESIZES, "data bits"),
            "stopbits": lambda n: self.choice(n, STOPBITS, "stop bits"),
        }
        changes: dict[str, Any] = {}
        given: set[str] = set()
        bad: set[str] = set()
        for key, check in checks.items():
            child = node.get(key)
            if child is None:
                continue
            given.add(key)
            value = check(child)
            if value is None:
                bad.add(key)
            else:
                changes[key] = value
        return attrs.evolve(base, **changes), given, bad

    def baudrate(self, node: _Node) -> int | None:
        """Bit/s: any whole number of at least 1, for its transport to say which its port takes,
        but no more than :data:`MAX_BAUDRATE`."""
        rate = self.integer(node, 1)
        if rate is not None and rate > MAX_BAUDRATE:
            self.bad(node, f"must be at most {MAX_BAUDRATE} bit/s, the fastest a serial port takes; got {_clip(node.raw)}")
            return None
        return rate

    def parity(self, node: _Node) -> str | None:
        if node.broken:
            return None
        if node.kind == "scalar" and isinstance(node.value, str):
            spelled = node.value.strip()
            parity = PARITY_NAMES.get(spelled.lower(), spelled.upper())
            if parity in PARITIES:
                return parity
        self.bad(node, f"must be one of {', '.join(PARITIES)} (or none, even, odd, mark, space), got {_describe(node)}")
        return None

    def choice(self, node: _Node, allowed: tuple[float, ...], unit: str) -> Any:
        if node.broken:
            return None
        value = node.value if node.kind == "scalar" else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value in allowed:
            return value
        names = ", ".join(f"{a:g}" for a in allowed[:-1]) + f" or {allowed[-1]:g}"
        self.bad(node, f"must be {names} {unit}, got {_describe(node)}")
        return None

    # -- collectors ----------------------------------------------------------------------

    def collectors(self, node: _Node | None) -> dict[str, Collector]:
        """``collectors:``: each sits on a channel or behind another collector (``collector:``);
        chains are followed to their channel, and an unknown link or a cycle is reported."""
        entries = self.mapping(node, "a mapping of collector names to their settings")
        self._collector_nodes = dict(entries or {})
        result: dict[str, Collector] = {}
        nodes: dict[str, _Node] = {}
        for name, coll in (entries or {}).items():
            if self.mapping(coll, "a mapping with channel: or collector:") is None:
                if coll.is_null:
                    self.bad(coll, "must be a mapping with channel: or collector:, got nothing")
                continue
            if NAME_SEPARATOR in name:
                self.bad(coll, f"collector name {_shorten(name)} must not contain {NAME_SEPARATOR!r} "
                               "(it separates the collectors of a route)")
                continue
            channel_node, via_node = coll.get("channel"), coll.get("collector")
            if channel_node is None and via_node is None:
                self.missing(coll, "channel")
            channel = self.channel_ref(channel_node)
            via = self.text(via_node, numbers_ok=True) if via_node is not None else None
            protocol = self.protocol(coll.get("protocol"))
            address = ""
            address_node = coll.get("address")
            if address_node is not None:
                address = self.address(address_node, protocol) or ""
            delay = self.relay_delay(coll.get("relay_delay"))
            options = {key: _plain(child) for key, child in coll.value.items() if key not in COLLECTOR_KEYS}
            result[name] = Collector(name, channel or "", address, protocol or "", options, via=via or "", delay=delay)
            nodes[name] = coll
        return self.chained(result, nodes)

    def relay_delay(self, node: _Node | None) -> float | None:
        """``relay_delay:``: what a collector adds to an answer; zero is allowed (a transparent hub)."""
        if node is None or node.broken:
            return None
        if node.kind == "scalar" and isinstance(node.value, (int, float)) and not isinstance(node.value, bool) \
                and node.value == 0:
            return 0.0
        return self.duration(node, LONGEST_RELAY_DELAY)

    def chained(self, collectors: dict[str, Collector], nodes: Mapping[str, _Node]) -> dict[str, Collector]:
        """Collectors behind collectors: each ``collector:`` must name a collector, the chain
        must end on a channel without coming back to where it started, and a collector's
        own ``channel:`` (if given) must be its chain's."""
        result = dict(collectors)
        broken: set[str] = set()
        for name, coll in collectors.items():
            seen = [name]
            current = coll
            while current.via:
                via_node = nodes[current.name].get("collector")
                assert via_node is not None
                nxt = collectors.get(current.via)
                if nxt is None:
                    if current.name == name:
                        self.bad(via_node, f"collector {_shorten(current.via)} is not defined"
                                           f"{_suggest(current.via, collectors)} ({_known('collectors', collectors)})")
                    broken.add(name)
                    break
                if nxt.name in seen:
                    if current.name == name or nxt.name == name:
                        cycle = " -> ".join([*seen[seen.index(nxt.name):], nxt.name])
                        self.bad(nodes[name], f"collector {_shorten(name)} is in a cycle of collectors: {cycle}"
                                              " (a chain must end on a channel)")
                    broken.add(name)
                    break
                seen.append(nxt.name)
                current = nxt
            if name in broken:
                continue
            channel = current.channel
            if coll.channel and channel and coll.channel != channel:
                self.bad(nodes[name].value["channel"], f"channel {_shorten(coll.channel)} differs from the channel "
                                                       f"{_shorten(channel)} of collector {_shorten(coll.via)}")
            result[name] = attrs.evolve(coll, channel=channel)
        return {name: coll for name, coll in result.items() if name not in broken}

    def hops(self, collectors: Mapping[str, Collector], name: str) -> tuple[Hop, ...]:
        """The relays from the concentrator out to collector ``name`` (a valid chain)."""
        chain: list[Hop] = []
        current: Collector | None = collectors.get(name)
        while current is not None and len(chain) <= len(collectors):
            chain.append(Hop(current.name, current.address, current.protocol, current.delay))
            current = collectors.get(current.via) if current.via else None
        return tuple(reversed(chain))

    # -- meters ----------------------------------------------------------------------------

    def meters(
        self, node: _Node | None, channels: Mapping[str, ChannelConfig], collectors: Mapping[str, Collector]
    ) -> list[Meter]:
        items = self.sequence(node, "a list of meters")
        result: list[Meter] = []
        addresses: dict[tuple[str, str, str], _Node] = {}
        points: dict[int, _Node] = {}
        unnumbered: list[tuple[int, int, _Node]] = []  # (index in result, position in the file, node)
        for position, item in enumerate(items or (), start=1):
            meter = self.meter(item, channels, collectors)
            if meter is None:
                continue
            if meter.point is None:
                unnumbered.append((len(result), position, item))
            result.append(meter)
            self.driver_issues(meter, item)
            self.placement_issues(meter, item, channels)
            # one address per protocol per channel: two meters answering the same frame collide
            # (a Modbus slave 1 and a DL/T 645 meter 000000000001 on one bus do not)
            if meter.address and meter.channel:
                where = (meter.channel, meter.protocol, meter.address)
                first = addresses.get(where)
                address_node = item.value["address"]
                if first is not None:
                    self.bad(
                        address_node,
                        f"address {meter.address} on channel {_shorten(meter.channel)} is already used by"
                        f" {first.path.rsplit('.', 1)[0]} (line {first.line})",
                    )
                else:
                    addresses[where] = address_node
            if meter.point is not None:
                point_node = item.value["point"]
                first = points.get(meter.point)
                if first is not None:
                    self.bad(
                        point_node,
                        f"measuring point {meter.point} is already used by {first.path.rsplit('.', 1)[0]} (line {first.line})",
                    )
                else:
                    points[meter.point] = point_node
        # A meter without ``point:`` is measuring point N, N its position in the file from 1
        # (Q/GDW 1376.1 pn; 0 is the terminal itself).
        for index, position, item in unnumbered:
            if position > POINT_RANGE[1]:
                break  # past the last pn 1376.1 can name: such meters have no measuring point
            first = points.get(position)
            if first is not None:
                self.bad(
                    item,
                    f"has no point: and its position makes it measuring point {position}, which"
                    f" {first.path.rsplit('.', 1)[0]} (line {first.line}) already has; give it a point:",
                )
                continue
            points[position] = item
            result[index] = attrs.evolve(result[index], point=position)
        return result

    def offers(self, plugin: object, capability: type) -> bool:
        """``isinstance(plugin, capability)``, asked once per plugin: a runtime-checkable
        Protocol check costs microseconds, and a site file asks it for every meter."""
        key = (id(plugin), capability)
        found = self._offers.get(key)
        if found is None:
            found = self._offers[key] = isinstance(plugin, capability)
        return found

    def placement_issues(self, meter: Meter, node: _Node, channels: Mapping[str, ChannelConfig]) -> None:
        """What the meter's channel's transport finds wrong with the meter there (a port map
        that does not name it), at the line of the key it names."""
        channel = channels.get(meter.channel)
        transport = self.transports.get(channel.transport) if channel is not None else None
        if channel is None or not self.offers(transport, PlacementValidator) or not meter.address:
            return
        try:
            problems = list(transport.validate_placement(channel, meter))
        except Exception as exc:  # a transport bug must not hide the rest of the file's mistakes
            problems = [("", f"the {channel.transport} transport could not check this meter: "
                             f"{type(exc).__name__}: {exc}")]
        for key, message in problems:
            self.issue(_locate(node, key) if key else node.line, _child_path(node.path, key) if key else node.path,
                       message)

    def driver_issues(self, meter: Meter, node: _Node) -> None:
        """What the meter's driver finds wrong with it (a Modbus profile that does not exist,
        a quantity the profile lacks), at the line of the key it names."""
        driver = self.drivers.get(meter.protocol)
        if not self.offers(driver, MeterValidator) or not meter.address:
            return
        try:
            problems = list(driver.validate_meter(meter))
        except Exception as exc:  # a driver bug must not hide the rest of the file's mistakes
            problems = [("", f"the {meter.protocol} driver could not check this meter: {type(exc).__name__}: {exc}")]
        for key, message in problems:
            self.issue(_locate(node, key) if key else node.line, _child_path(node.path, key) if key else node.path, message)

    def meter(
        self, node: _Node, channels: Mapping[str, ChannelConfig], collectors: Mapping[str, Collector]
    ) -> Meter | None:
        if self.mapping(node, "a mapping with address:, protocol: and channel:") is None:
            if node.is_null:
                self.bad(node, "must be a mapping with address:, protocol: and channel:, got nothing")
            return None
        self.check_keys(node, METER_KEYS)
        for key in ("address", "protocol"):
            if node.get(key) is None:
                self.missing(node, key)
        protocol = self.protocol(node.get("protocol"))
        driver = self.drivers.get(protocol) if protocol else None
        address = self.address(node.get("address"), protocol)

        channel = self.channel_ref(node.get("channel"))
        collector_node = node.get("collector")
        collector_name = self.text(collector_node, numbers_ok=True)
        hops: tuple[Hop, ...] = ()
        if collector_name is not None and collector_node is not None:
            collector = collectors.get(collector_name)
            if collector is not None:
                hops = self.hops(collectors, collector_name)
            if collector is None and collector_name in self._collector_nodes:
                pass  # defined, but broken: reported at the collector
            elif collector is None:
                self.bad(
                    collector_node,
                    f"collector {_shorten(collector_name)} is not defined{_suggest(collector_name, collectors)}"
                    f" ({_known('collectors', collectors) if collectors else 'there is no collectors: section'})",
                )
            elif channel is None and node.get("channel") is None:
                channel = collector.channel or None
            elif channel in self._channel_nodes and collector.channel and channel != collector.channel:
                self.bad(
                    node.value["channel"],
                    f"channel {_shorten(channel)} differs from the channel {_shorten(collector.channel)}"
                    f" of collector {_shorten(collector_name)}",
                )
        if node.get("channel") is None and collector_node is None:
            self.missing(node, "channel")

        quantities = self.quantities(node, driver)
        point = self.integer(node.get("point"), *POINT_RANGE)
        name = self.text(node.get("name"), numbers_ok=True)
        timeout = self.duration(node.get("timeout"), LONGEST_METER_TIMEOUT)
        retries = self.integer(node.get("retries"), 0, MAX_RETRIES)

        settings = None
        if any(node.get(key) is not None for key in SERIAL_KEYS):
            chan = channels.get(channel) if channel else None
            base = chan.settings if chan is not None else SerialSettings()
            settings, given, bad = self.serial(node, base)
            transport = self.transports.get(chan.transport) if chan is not None else None
            if transport is not None and chan is not None:
                # the channel's own keys were reported on the channel; check what this meter changes
                self.transport_issues(transport, attrs.evolve(chan, settings=settings), node, skip=bad, only=given)

        options_node = node.get("options")
        options = self.mapping(options_node, "a mapping of driver options")
        return Meter(
            address=address or "",
            protocol=protocol or "",
            channel=channel or "",
            quantities=quantities,
            point=point,
            name=name or "",
            timeout=timeout,
            retries=retries,
            settings=settings,
            options=_plain(options_node) if options is not None and options_node is not None else {},
            hops=hops,
            credential=self.text(node.get("credential"), numbers_ok=True) or "",
            tariff=self.text(node.get("tariff"), numbers_ok=True) or "",
            prepaid=bool(self.flag(node.get("prepaid"))),
        )

    def protocol(self, node: _Node | None) -> str | None:
        name = self.text(node)
        if name is not None and node is not None and name not in self.drivers:
            hint = f"{_suggest(name, self.drivers)} ({_known('protocols', self.drivers)})"
            self.bad(node, f"unknown protocol {_shorten(name)}{hint}")
        return name

    def channel_ref(self, node: _Node | None) -> str | None:
        name = self.text(node, numbers_ok=True)
        if name is not None and node is not None and name not in self._channel_nodes:
            defined = f"defined: {', '.join(self._channel_nodes)}" if self._channel_nodes else "no channel is defined"
            self.bad(node, f"channel {_shorten(name)} is not defined{_suggest(name, self._channel_nodes)} ({defined})")
        return name

    def address(self, node: _Node | None, protocol: str | None) -> str | None:
        """The meter address as written (digits keep their zeros), normalised by the driver."""
        if node is None or node.broken:
            return None
        if node.kind == "scalar" and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            # unquoted digits: YAML made a number of them, but the source text is the address
            if not node.raw.isdigit():
                self.bad(node, f"YAML reads {node.raw} as a number; write the address in quotes")
                return None
            address = node.raw
        else:
            address = self.text(node)
            if address is None:
                return None
        driver = self.drivers.get(protocol) if protocol else None
        if driver is None:
            return address
        try:
            return driver.normalize_address(address)
        except ValueError as exc:
            self.bad(node, f"invalid {protocol} address {_shorten(address)}: {exc}")
            return None

    def quantities(self, node: _Node, driver: MeterDriver | None) -> tuple[str, ...]:
        list_node = node.get("quantities")
        items = self.sequence(list_node, "a list of OBIS codes or aliases")
        supported = set(driver.supported_quantities()) if driver is not None else None
        if not items:
            if list_node is not None and items is None and not list_node.is_null:
                return ()  # not a list: reported
            if supported is not None and DEFAULT_QUANTITY not in supported:
                where = list_node if list_node is not None else node
                self.issue(
                    where.line,
                    _child_path(node.path, "quantities"),
                    f"no quantities listed and protocol {driver.name!r} cannot read the default {DEFAULT_QUANTITY};"
                    f" list what to read (it supports: {', '.join(sorted(supported))})",
                )
                return ()
            return (DEFAULT_QUANTITY,)
        result: list[str] = []
        seen: dict[str, _Node] = {}
        for item in items:
            name = self.text(item)
            if name is None:
                continue
            try:
                quantity = resolve(name)
            except UnknownQuantity as exc:
                self.bad(item, f"{exc}{_suggest(name, _quantity_names())}")
                continue
            if quantity.obis in seen:
                first = seen[quantity.obis]
                self.bad(item, f"{quantity.obis} ({quantity.alias}) is already listed as {first.path} (line {first.line})")
                continue
            seen[quantity.obis] = item
            if supported is not None and quantity.obis not in supported:
                self.bad(item, f"protocol {driver.name!r} cannot read {quantity.obis} ({quantity.alias})")
                continue
            result.append(quantity.obis)
        return tuple(result)

    # -- schedule, store ---------------------------------------------------------------

    def schedule(self, node: _Node | None) -> Schedule:
        default = Schedule()
        if self.mapping(node, "a mapping with interval:, retries:, backoff_initial:, backoff_max:") is None:
            return default
        assert node is not None
        self.check_keys(node, SCHEDULE_KEYS)
        interval = self.duration(node.get("interval"), LONGEST_SCHEDULE) or default.interval
        retries = self.integer(node.get("retries"), 0, MAX_RETRIES)
        initial_node = node.get("backoff_initial")
        backoff_initial = self.duration(initial_node, LONGEST_SCHEDULE) or interval
        max_node = node.get("backoff_max")
        backoff_max = self.duration(max_node, LONGEST_SCHEDULE)
        if backoff_max is None:
            backoff_max = max(default.backoff_max, backoff_initial)
        elif backoff_max < backoff_initial and max_node is not None:
            self.bad(max_node, f"must not be shorter than backoff_initial ({_seconds(backoff_initial)})")
        return Schedule(
            interval=interval,
            retries=default.retries if retries is None else retries,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )

    # -- data services: time zone, tariffs, alarms, freezes, prepayment, time sync --------

    def flag(self, node: _Node | None) -> bool | None:
        """``true`` or ``false``."""
        if node is None or node.broken:
            return None
        if node.kind == "scalar" and isinstance(node.value, bool):
            return node.value
        self.bad(node, f"must be true or false, got {_describe(node)}")
        return None

    def time_of_day(self, node: _Node | None) -> time | None:
        """``HH:MM`` local time (as written: YAML 1.1 would read an unquoted 03:00 as 180)."""
        if node is None or node.broken:
            return None
        found = _TIME_OF_DAY.match(node.raw.strip("'\"")) if node.kind == "scalar" else None
        if found is None or int(found.group(1)) > 23 or int(found.group(2)) > 59:
            self.bad(node, f"must be a time of day HH:MM such as 00:00, got {_describe(node)}")
            return None
        return time(int(found.group(1)), int(found.group(2)))

    def external(self, root: _Node, exc: ValueError) -> None:
        """An issue from a plugin's or a service's own check, whose message starts with the
        key path it is about (``tariffs.home.tiers[1].upto: ...``): placed at that key's line."""
        text = str(exc)
        path, sep, message = text.partition(": ")
        if not sep or " " in path:
            self.issue(root.line, "", text)
            return
        self.issue(_locate(root, path), path, message)

    def timezone(self, node: _Node | None) -> str:
        name = self.text(node) if node is not None else None
        if not name:
            return ""
        try:
            local_zone(name)
        except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError
            assert node is not None
            self.bad(node, f"unknown time zone {_shorten(name)}; write an IANA name such as Asia/Shanghai")
            return ""
        return name

    def tariffs(self, root: _Node, node: _Node | None) -> tuple[dict[str, Any], dict[str, Any]]:
        if node is None or self.mapping(node, "a mapping of tariff names to tariffs") is None:
            return {}, {}
        from .plugins import get_plugins
        from .tariffs import tariffs_from_config

        sources = _plain(node)
        made: dict[str, Any] = {}
        for name in sources:  # one entry at a time, so every broken tariff is reported
            try:
                made.update(tariffs_from_config({name: sources[name]}, get_plugins().tariff_schemes()))
            except ValueError as exc:
                self.external(root, exc)
        return made, sources

    def tariff_refs(self, meters: Iterable[Meter], nodes: _Node | None, tariffs: Mapping[str, Any]) -> None:
        """Each meter's ``tariff:`` names a tariff; a prepaid meter has one to charge by."""
        if nodes is None or nodes.kind != "seq":
            return
        by_line = {child.line: child for child in nodes.value if child.kind == "map"}
        for node in by_line.values():
            tariff_node = node.get("tariff")
            name = self.text(tariff_node, numbers_ok=True) if tariff_node is not None else None
            if tariff_node is not None and name and name not in tariffs:
                self.bad(tariff_node, f"tariff {_shorten(name)} is not defined{_suggest(name, tariffs)}"
                                      f" ({_known('tariffs', tariffs) if tariffs else 'there is no tariffs: section'})")
            prepaid = node.get("prepaid")
            if prepaid is not None and prepaid.value is True and tariff_node is None:
                self.bad(prepaid, "a prepaid meter needs a tariff: to charge its consumption by")

    def alarms(self, root: _Node, node: _Node | None) -> dict[str, Any]:
        if node is None or self.mapping(node, "a mapping of alarm rules to their options") is None:
            return {}
        from .alarms import rules_from_config
        from .plugins import get_plugins

        section = _plain(node)
        try:
            rules_from_config(section, get_plugins().alarm_rules())
        except ValueError as exc:
            self.external(root, exc)
            return {}
        return section

    def freeze(self, node: _Node | None) -> FreezeConfig | None:
        if node is None or self.mapping(node, "a mapping with daily:, monthly_day:, quantities:, profile:") is None:
            return None
        self.check_keys(node, FREEZE_KEYS)
        default = FreezeConfig()
        daily = self.time_of_day(node.get("daily")) or default.daily
        day = self.integer(node.get("monthly_day"), 1, LAST_SETTLEMENT_DAY)
        backfill = self.integer(node.get("backfill_days"), 0, MAX_BACKFILL_DAYS)
        quantities = self.quantities(node, None) if node.get("quantities") is not None else ()
        interval = None
        profile_quantities: tuple[str, ...] = ()
        profile = node.get("profile")
        if profile is not None and self.mapping(profile, "a mapping with interval: and quantities:") is not None:
            self.check_keys(profile, PROFILE_KEYS)
            if profile.get("interval") is None:
                self.missing(profile, "interval")
            interval = self.duration(profile.get("interval"), 86400.0)
            if interval is not None and 86400 % interval:
                self.bad(profile.value["interval"], "must divide a day evenly (5m, 15m, 30m, 1h ...)")
                interval = None
            if profile.get("quantities") is not None:
                profile_quantities = self.quantities(profile, None)
        return FreezeConfig(
            daily=daily,
            monthly_day=default.monthly_day if day is None else day,
            quantities=quantities,
            profile_interval=interval,
            profile_quantities=profile_quantities,
            backfill_days=default.backfill_days if backfill is None else backfill,
        )

    def prepayment(self, node: _Node | None) -> PrepayConfig | None:
        if node is None:
            return None
        if node.kind == "scalar" and node.value is True:
            return PrepayConfig()
        if self.mapping(node, "a mapping with disconnect:, reconnect:, credential:, opening_balance:") is None:
            return None
        self.check_keys(node, PREPAY_KEYS)
        default = PrepayConfig()
        disconnect = self.flag(node.get("disconnect"))
        reconnect = self.flag(node.get("reconnect"))
        credential = self.text(node.get("credential"), numbers_ok=True)
        opening = default.opening_balance
        opening_node = node.get("opening_balance")
        if opening_node is not None and not opening_node.broken:
            try:
                opening = Decimal(opening_node.raw.strip("'\"")) if opening_node.kind == "scalar" else Decimal("NaN")
            except InvalidOperation:
                opening = Decimal("NaN")
            if not opening.is_finite() or opening != opening.quantize(Decimal("0.01"), rounding=ROUND_DOWN):
                self.bad(opening_node, f"must be an amount of money such as 50 or 12.50, got {_describe(opening_node)}")
                opening = default.opening_balance
        return PrepayConfig(
            disconnect=default.disconnect if disconnect is None else disconnect,
            reconnect=default.reconnect if reconnect is None else reconnect,
            credential=default.credential if credential is None else credential,
            opening_balance=opening,
        )

    def time_sync(self, node: _Node | None) -> TimeSyncConfig | None:
        if node is None:
            return None
        if node.kind == "scalar" and node.value is True:
            return TimeSyncConfig()
        if self.mapping(node, "a mapping with at:, every: and window:") is None:
            return None
        self.check_keys(node, TIME_SYNC_KEYS)
        default = TimeSyncConfig()
        return TimeSyncConfig(
            at=self.time_of_day(node.get("at")) or default.at,
            every=self.duration(node.get("every"), LONGEST_SCHEDULE) or default.every,
            window=self.duration(node.get("window"), LONGEST_SYNC_WINDOW) or default.window,
        )

    def store(self, node: _Node | None) -> str:
        if node is None or node.is_null:
            return DEFAULT_STORE
        url = self.text(node)
        if url is None:
            return DEFAULT_STORE
        if not url.startswith(STORE_SCHEME) or len(url) == len(STORE_SCHEME):
            self.bad(
                node,
                f"must be a SQLite URL such as {DEFAULT_STORE} (sqlite:////abs/path.db for an absolute path),"
                f" got {_shorten(url)}",
            )
            return DEFAULT_STORE
        return url


def _seconds(seconds: float) -> str:
    return f"{seconds:g} s"


def _duration_text(seconds: float) -> str:
    """A bound as a user writes a duration: ``366d``, ``1m``, ``90s``."""
    for unit in ("d", "h", "m", "s"):
        size = _SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _unwritable(text: str) -> str | None:
    """Why ``text`` cannot be a name, port, path or URL, or None if it can.

    The YAML reader refuses control characters and lone surrogates written as they are, but
    a double-quoted string still spells them as escapes: ``"\\0"``, ``"\\ud800"``. A file
    name cannot hold NUL (POSIX), and a lone surrogate has no UTF-8 for SQLite or a port name.
    """
    if "\0" in text:
        return "must not hold a NUL character (\\0): no file name, port or URL can"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be Unicode text: it holds a lone surrogate (such as \\ud800), which is half a character"
    return None


def _quantity_names() -> list[str]:
    return [name for q in VOCABULARY for name in (q.obis, q.alias)]
