"""The ``mqtt`` uplink: readings and events from the outbox to an MQTT broker.

::

    uplinks:
      - protocol: mqtt
        server: localhost:1883      # host[:port]; port 1883, or 8883 with tls
        site: home                  # topic level; default: the terminal: slugged, else meterhub
        credential: mqtt-home       # secret-store entry with username and password
        tls: true                   # or {ca: FILE, cert: FILE, key: FILE, insecure: false}

Each connection publishes ``online`` (retained) on the availability topic, whose last
will is ``offline``; then the Home Assistant discovery; then the outbox, in order, with
QoS 1. Outbox items are acknowledged only after the broker confirmed every message of
their batch, so a broker outage loses nothing: what was not confirmed is offered again
after the reconnection (a state sent twice is the same state). A lost connection is
retried with a doubling back-off; bad settings or credentials end :meth:`MqttUplink.run`
with the reason, and the core's uplink runner reports it and runs the uplink again.

Commands from MQTT are off unless ``commands: true``: then ``.../<meter>/command/<name>``
goes through the command path every origin uses (policy hooks, credentials from the
secret store, the audit trail), answered on ``.../command/<name>/result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from meterhub.errors import did_you_mean as _suggest
from meterhub.uplinks import restart_delay

from .publish import QOS, BadCommand, Message, command_result, item_messages, parse_command
from .topics import (
    DEFAULT_PREFIX,
    DISCOVERY_PREFIX,
    OFFLINE,
    ONLINE,
    availability_topic,
    meter_ids,
    result_topic,
    slug,
)

if TYPE_CHECKING:
    import aiomqtt
    from meterhub.api import Terminal
    from meterhub.model import Meter, UplinkConfig
    from meterhub.secrets import SecretStore

log = logging.getLogger(__name__)

DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
DEFAULT_KEEPALIVE_S = 60
#: MQTT 3.1.1 §3.1.2.10: the keep-alive is a 16-bit number of seconds (0 would switch it
#: off, and with it the broker's detection of a dead connection that fires the last will).
KEEPALIVE_RANGE = (1, 65535)
#: Items taken from the outbox per batch: their messages are in flight together and the
#: batch is acknowledged once the broker confirmed every one.
BATCH = 200
#: Publications awaiting their PUBACK at once (paho's own limit of messages in flight).
IN_FLIGHT = 20
#: How long an idle uplink waits for news before it looks at the outbox again anyway.
IDLE_POLL_S = 5.0
#: Seconds the broker has to confirm a publication (PUBACK) or a connection (CONNACK)
#: before the connection is taken for dead and made again.
BROKER_TIMEOUT_S = 10.0
#: The back-off between connection attempts: from the first, doubling, up to the last;
#: each wait is drawn within +-JITTER of it so that many hubs do not come back at once.
RECONNECT_INITIAL_S, RECONNECT_MAX_S, JITTER = 1.0, 60.0, 0.2
#: A connection that lasted this long starts the back-off afresh when it is lost; one that
#: the broker drops at once (another client with the same id) keeps doubling it.
HEALTHY_S = RECONNECT_MAX_S
#: When stopped, how long the uplink tries to say ``offline`` itself (a clean disconnect
#: does not fire the last will).
GOODBYE_S = 2.0
#: The secret-store fields of a broker credential.
CREDENTIAL_FIELDS = ("username", "password")

#: CONNACK codes of a broker that cannot take the connection now but may later: MQTT 3.1.1
#: return code 3 (server unavailable) and the MQTT 5 reason codes paho maps it and its
#: like to (0x88 server unavailable, 0x89 server busy, 0x9F connection rate exceeded).
TRANSIENT_CONNACK = frozenset({3, 0x88, 0x89, 0x9F})

#: The uplink's setting (Terminal.keep_settings) listing the discovery topics it published.
DISCOVERED_KEY = "discovered"
OPTIONS = ("server", "site", "topic_prefix", "client_id", "keepalive", "credential", "tls", "discovery",
           "discovery_prefix", "commands", "retain")
TLS_OPTIONS = ("ca", "cert", "key", "insecure")


class BrokerRefused(Exception):
    """The broker refused the connection (bad credentials, not authorised, a client id it
    will not take): not an outage to wait out, a setting to fix; ends :meth:`MqttUplink.run`."""


@attrs.frozen
class Tls:
    """TLS to the broker: the CA file (None: the system's), a client certificate and key,
    and ``insecure`` (the broker's host name is not checked against its certificate)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False


@attrs.frozen
class MqttSettings:
    """A validated ``mqtt`` uplink section with its defaults filled in."""

    host: str
    port: int
    site: str
    topic_prefix: str = DEFAULT_PREFIX
    client_id: str = ""
    keepalive: int = DEFAULT_KEEPALIVE_S
    credential: str = ""
    tls: Tls | None = None
    discovery: bool = True
    discovery_prefix: str = DISCOVERY_PREFIX
    commands: bool = False
    retain: bool = True


# --- the site file's section --------------------------------------------------------------------


def split_server(server: str, *, tls: bool = False) -> tuple[str, int]:
    """``host[:port]`` (``[::1]:1883`` for an IPv6 address) as host and port; ValueError
    saying what is wrong."""
    text = server.strip()
    if not text:
        raise ValueError("must be host[:port], got nothing")
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"must be host[:port] ([address]:port for IPv6), got {server!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError(f"an IPv6 address needs brackets: [{text}]:port")
    else:
        host = text
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"must be host[:port], got {server!r}")
    if not port_text:
        return host, DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    if not port_text.isdigit():
        raise ValueError(f"port must be a number, got {port_text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1..65535)")
    return host, port


def _topic_levels(text: Any, what: str) -> str | None:
    """Problem with a topic prefix (one or more levels), or None."""
    if not isinstance(text, str) or not text:
        return f"must be {what} (text), got {text!r}"
    if any(c in text for c in "+#\0"):
        return f"must not contain the MQTT wildcards + or #, got {text!r}"
    if any(not level for level in text.split("/")):
        return f"must not have empty levels (a leading, trailing or double /), got {text!r}"
    return None


def _check_tls(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, bool):
        return []
    if not isinstance(value, Mapping):
        return [("tls", f"must be true, false or a mapping with {', '.join(TLS_OPTIONS)}, got {value!r}")]
    problems = []
    for key in value:
        if key not in TLS_OPTIONS:
            problems.append((f"tls.{key}", f"unknown key{_suggest(str(key), TLS_OPTIONS)} "
                                           f"(tls takes {', '.join(TLS_OPTIONS)})"))
    for key in ("ca", "cert", "key"):
        path = value.get(key)
        if path is None:
            continue
        if not isinstance(path, str) or not path.strip():
            problems.append((f"tls.{key}", f"must be a file path, got {path!r}"))
        elif not os.path.isfile(path):
            problems.append((f"tls.{key}", f"no such file: {path}"))
    if value.get("key") is not None and value.get("cert") is None:
        problems.append(("tls.key", "a client key needs its certificate: give tls.cert too"))
    if "insecure" in value and not isinstance(value["insecure"], bool):
        problems.append(("tls.insecure", f"must be true or false, got {value['insecure']!r}"))
    return problems


def validate_options(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem with an ``mqtt`` section's keys as ``(key, message)`` pairs."""
    problems: list[tuple[str, str]] = []
    for key in options:
        if key not in OPTIONS:
            problems.append((str(key), f"unknown key{_suggest(str(key), OPTIONS)} "
                                       f"(the mqtt uplink takes {', '.join(OPTIONS)})"))
    tls = options.get("tls", False)
    problems += _check_tls(tls)
    server = options.get("server")
    if server is None:
        problems.append(("", "missing required key server (the broker, host[:port])"))
    elif not isinstance(server, str):
        problems.append(("server", f"must be host[:port], got {server!r}"))
    else:
        try:
            split_server(server, tls=tls is not False)
        except ValueError as exc:
            problems.append(("server", str(exc)))
    site = options.get("site")
    if site is not None and (not isinstance(site, str) or slug(site) != site):
        suggestion = f" (e.g. {slug(str(site))!r})" if isinstance(site, (str, int)) else ""
        problems.append(("site", f"must be one topic level of lower-case letters, digits, _ and -, got {site!r}"
                                 f"{suggestion}"))
    for key, what in (("topic_prefix", "topic levels"), ("discovery_prefix", "topic levels")):
        if key in options:
            problem = _topic_levels(options[key], what)
            if problem:
                problems.append((key, problem))
    client_id = options.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not client_id.strip()):
        problems.append(("client_id", f"must be non-empty text, got {client_id!r}"))
    keepalive = options.get("keepalive")
    if keepalive is not None:
        low, high = KEEPALIVE_RANGE
        if isinstance(keepalive, bool) or not isinstance(keepalive, int):
            problems.append(("keepalive", f"must be whole seconds ({low}..{high}), got {keepalive!r}"))
        elif not low <= keepalive <= high:
            problems.append(("keepalive", f"{keepalive} s is out of range ({low}..{high} s)"))
    credential = options.get("credential")
    if credential is not None and (not isinstance(credential, str) or not credential.strip()):
        problems.append(("credential", f"must be the name of a secret-store entry, got {credential!r}"))
    for key in ("discovery", "commands", "retain"):
        if key in options and not isinstance(options[key], bool):
            problems.append((key, f"must be true or false, got {options[key]!r}"))
    return problems


def settings_for(options: Mapping[str, Any], terminal: str = "") -> MqttSettings:
    """The settings of a validated section; ``terminal`` (the site's ``terminal:``) names
    the site when the section does not."""
    tls_option = options.get("tls", False)
    tls: Tls | None = None
    if isinstance(tls_option, Mapping):
        tls = Tls(ca=tls_option.get("ca"), cert=tls_option.get("cert"), key=tls_option.get("key"),
                  insecure=bool(tls_option.get("insecure", False)))
    elif tls_option:
        tls = Tls()
    host, port = split_server(str(options["server"]), tls=tls is not None)
    site = options.get("site") or (slug(terminal) if terminal.strip() else "meterhub")
    return MqttSettings(
        host=host, port=port, site=site,
        topic_prefix=options.get("topic_prefix", DEFAULT_PREFIX),
        client_id=options.get("client_id") or f"meterhub-{site}",
        keepalive=int(options.get("keepalive", DEFAULT_KEEPALIVE_S)),
        credential=options.get("credential", ""),
        tls=tls,
        discovery=options.get("discovery", True),
        discovery_prefix=options.get("discovery_prefix", DISCOVERY_PREFIX),
        commands=options.get("commands", False),
        retain=options.get("retain", True),
    )


def tls_context(tls: Tls) -> ssl.SSLContext:
    """The client's TLS context: the broker's certificate checked against ``ca`` (or the
    system's CAs), a client certificate where given, the host name unchecked if insecure."""
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert:
        context.load_cert_chain(tls.cert, tls.key)
    if tls.insecure:
        context.check_hostname = False
    return context


def reconnect_delay(failures: int, *, initial: float = RECONNECT_INITIAL_S, maximum: float = RECONNECT_MAX_S,
                    jitter: float = JITTER, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``failures``-th failed connection in a row: ``initial``,
    doubling, capped at ``maximum``, spread by +-``jitter`` (never above ``maximum``)."""
    base = restart_delay(failures, initial=initial, maximum=maximum)
    return min(base * (1 + jitter * (2 * rand() - 1)), maximum)


# --- the running uplink ---------------------------------------------------------------------------


def discovery_for(settings: MqttSettings, terminal: Terminal, ids: Mapping[str, str]) -> list[tuple[str, str]]:
    """The Home Assistant discovery messages of the site's meters (topic, JSON payload)."""
    from .discovery import discovery_messages

    return discovery_messages(site=settings.site, prefix=settings.topic_prefix,
                              discovery_prefix=settings.discovery_prefix, meters=terminal.meters(), ids=ids,
                              interval=terminal.schedule.interval, terminal=terminal.terminal)


class MqttUplink:
    """A running ``mqtt`` uplink (:class:`meterhub.api.Uplink`).

    ``secrets`` gives the secret store (looked up at each connection, so a credential that
    changes is taken up without a restart); ``reconnect`` is the back-off's (initial,
    maximum) seconds.
    """

    def __init__(self, settings: MqttSettings, terminal: Terminal, *,
                 secrets: Callable[[], SecretStore] | None = None,
                 reconnect: tuple[float, float] = (RECONNECT_INITIAL_S, RECONNECT_MAX_S)) -> None:
        self.settings = settings
        self.terminal = terminal
        self._secrets = secrets or _default_secrets
        self._reconnect = reconnect
        self.connections = 0  #: connections made so far (a test sees a reconnection)
        self._commands: set[asyncio.Task[None]] = set()
        #: discovery topics published (retained), kept in the uplink's settings; None until
        #: read back from there, so a restart still removes the sensors of meters gone meanwhile
        self._discovered: frozenset[str] | None = None
        self._discovered_meters: tuple[Meter, ...] = ()  #: the meters they describe

    @property
    def availability(self) -> str:
        return availability_topic(self.settings.topic_prefix, self.settings.site)

    async def run(self) -> None:
        import aiomqtt

        loop = asyncio.get_running_loop()
        failures = 0
        try:
            while True:
                client = self._client()
                connected: float | None = None
                try:
                    async with client:
                        connected = loop.time()
                        self.connections += 1
                        log.info("mqtt uplink %s connected to %s:%d", self.terminal.name, self.settings.host,
                                 self.settings.port)
                        await self._session(client)
                except aiomqtt.MqttCodeError as exc:
                    if _refused(exc):
                        raise BrokerRefused(f"broker {self.settings.host}:{self.settings.port} refused the "
                                            f"connection: {exc}") from None
                    failures += 1
                    self._lost(exc, failures, was_connected=connected is not None)
                except aiomqtt.MqttError as exc:
                    failures += 1
                    self._lost(exc, failures, was_connected=connected is not None)
                if connected is not None and loop.time() - connected >= HEALTHY_S:
                    failures = 1  # it was working: this is a new outage, not the same one going on
                initial, maximum = self._reconnect
                await asyncio.sleep(reconnect_delay(failures, initial=initial, maximum=maximum))
        finally:
            for task in self._commands:
                task.cancel()

    def _lost(self, exc: Exception, failures: int, *, was_connected: bool) -> None:
        """A connection attempt failed or a connection ended: logged each time; an
        ``uplink_disconnected`` event when a working connection was lost (not for each
        failed attempt of an outage), so the outage is on record and reaches the other uplinks."""
        if was_connected:
            from meterhub.model import Event

            self.terminal.raise_event(Event("uplink_disconnected", source=self.terminal.name, severity="warning",
                                            data={"uplink": self.terminal.name, "protocol": "mqtt",
                                                  "broker": f"{self.settings.host}:{self.settings.port}",
                                                  "reason": str(exc) or type(exc).__name__}))
        log.warning("mqtt uplink %s: no connection to %s:%d (%s); trying again (attempt %d)", self.terminal.name,
                    self.settings.host, self.settings.port, str(exc) or type(exc).__name__, failures + 1)

    def _client(self) -> aiomqtt.Client:
        import aiomqtt

        settings = self.settings
        username = password = None
        if settings.credential:
            # CredentialError (no such entry, an unusable secrets file) ends run(): the
            # runner reports it as uplink_failed with this message
            entry = self._secrets().get(settings.credential)
            username, password = entry.get("username"), entry.get("password")
            if not username:
                from meterhub.errors import CredentialError

                raise CredentialError(f"credential entry {settings.credential!r} has no username field "
                                      f"(the mqtt uplink needs username and password)")
        client = aiomqtt.Client(
            settings.host, settings.port, username=username, password=password, identifier=settings.client_id,
            keepalive=settings.keepalive, timeout=BROKER_TIMEOUT_S,
            will=aiomqtt.Will(self.availability, OFFLINE, qos=QOS, retain=True),
            tls_context=tls_context(settings.tls) if settings.tls is not None else None,
        )
        # a window's publications are in flight together by design, with command results
        # beside them: no warning for those
        client.pending_calls_threshold = 2 * IN_FLIGHT
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection: availability, discovery, the outbox and the commands, until
        the connection is lost (MqttError) or the uplink is stopped."""
        settings = self.settings
        try:
            if settings.commands:  # before "online": a command sent once online is heard
                await client.subscribe(f"{settings.topic_prefix}/{settings.site}/+/command/+", qos=QOS)
            await client.publish(self.availability, ONLINE, qos=QOS, retain=True)
            await self._discover(client)
            await _first_of(self._listen(client), self._deliver(client))
        except asyncio.CancelledError:
            # stopped: say offline before the clean disconnect (which does not fire the will)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.publish(self.availability, OFFLINE, qos=QOS, retain=True), GOODBYE_S)
            raise

    async def _discover(self, client: aiomqtt.Client) -> None:
        """Publish the Home Assistant discovery of the site's meters as they are now (at
        each connection, and when a master station changed them), and an empty config
        for each sensor published before that is gone (Home Assistant then removes it)."""
        if not self.settings.discovery:
            return
        if self._discovered is None:
            kept = (await self.terminal.settings()).get(DISCOVERED_KEY) or []
            self._discovered = frozenset(str(topic) for topic in kept)
        meters = tuple(self.terminal.meters())
        messages = discovery_for(self.settings, self.terminal, meter_ids(meters))
        published = frozenset(topic for topic, _ in messages)
        gone = self._discovered - published
        await _publish_all(client, [*(Message(topic, payload, retain=True) for topic, payload in messages),
                                    *(Message(topic, "", retain=True) for topic in sorted(gone))])
        if published != self._discovered:
            await self.terminal.keep_settings({DISCOVERED_KEY: sorted(published)})
        self._discovered = published
        self._discovered_meters = meters

    async def _deliver(self, client: aiomqtt.Client) -> None:
        """The outbox, in order, batch by batch: acknowledged once the broker confirmed all."""
        settings = self.settings
        while True:
            if settings.discovery and tuple(self.terminal.meters()) != self._discovered_meters:
                await self._discover(client)
            items = await self.terminal.outbox(BATCH)
            if not items:
                await self.terminal.wait_outbox(IDLE_POLL_S)
                continue
            ids = meter_ids(self.terminal.meters())
            messages = [m for item in items for m in item_messages(
                item, prefix=settings.topic_prefix, site=settings.site, ids=ids, retain=settings.retain)]
            # once _publish_all returns, the broker has confirmed every message of the batch;
            # if it raises (MqttError), nothing of the batch is acknowledged
            await _publish_all(client, messages)
            await self.terminal.ack([item.id for item in items])

    async def _listen(self, client: aiomqtt.Client) -> None:
        """Incoming messages (commands, when on) until the connection is lost: the
        iteration raises MqttError then, which also ends the delivery of the session."""
        async for message in client.messages:
            if self.settings.commands:
                payload = message.payload
                raw = payload.encode() if isinstance(payload, str) else bytes(payload or b"")
                task = asyncio.get_running_loop().create_task(self._command(client, str(message.topic), raw))
                self._commands.add(task)
                task.add_done_callback(self._commands.discard)

    async def _command(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        """Carry out a command message and publish its outcome; never raises."""
        from meterhub.errors import CommandRefused
        from meterhub.model import new_command_id

        settings = self.settings
        base = f"{settings.topic_prefix}/{settings.site}/"
        parts = topic.removeprefix(base).split("/") if topic.startswith(base) else []
        if len(parts) != 3 or parts[1] != "command":
            log.warning("mqtt uplink %s: ignored a message on %s (not a command topic)", self.terminal.name, topic)
            return
        level, name = parts[0], parts[2]
        ids = meter_ids(self.terminal.meters())
        meters = {ids[m.key]: m for m in self.terminal.meters()}
        command_id, state, answer, reason = new_command_id(), "refused", None, ""
        try:
            meter = meters.get(level)
            if meter is None:
                raise BadCommand(f"no meter {level!r} at site {settings.site}")
            command = parse_command(payload, name=name, meter=meter)
            command_id = command.id
            answer = await self.terminal.execute(meter, command)
            state = "answered"
        except (BadCommand, CommandRefused) as exc:
            reason = str(exc)
        except Exception as exc:  # the driver's, the meter's or the line's failure: an answer, not a crash
            state, reason = "failed", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if state != "answered":
            log.warning("mqtt uplink %s: command %s on %s %s: %s", self.terminal.name, name, level, state, reason)
        body = command_result(command_id, state, answer=answer, reason=reason)
        try:
            await client.publish(result_topic(settings.topic_prefix, settings.site, level, name), body, qos=QOS)
        except Exception as exc:  # the connection went meanwhile: the journal has the outcome
            log.warning("mqtt uplink %s: the result of command %s could not be published: %s", self.terminal.name,
                        command_id, exc)


async def _publish_all(client: aiomqtt.Client, messages: Sequence[Message]) -> None:
    """Publish ``messages`` and return once the broker confirmed each one.

    aiomqtt's publish returns, for QoS 1, once paho's on_publish fired, which paho does when
    the broker's PUBACK arrived (MQTT 3.1.1 §4.3.2); one that does not come within
    BROKER_TIMEOUT_S raises MqttError. They go in windows of IN_FLIGHT, not all at once:
    each publication's timeout runs from its call, and on a slow link the tail of a long
    list would wait out its time behind the head.
    """
    for start in range(0, len(messages), IN_FLIGHT):
        await asyncio.gather(*(client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                               for m in messages[start:start + IN_FLIGHT]))


async def _first_of(*coroutines: Any) -> None:
    """Run the coroutines together until the first ends; cancel the others and raise
    what ended it (they run forever, so ending is an error)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()  # raises its error


def _refused(exc: Exception) -> bool:
    """Whether a connection error is the broker's refusal (CONNACK with an error code: bad
    credentials, not authorised, a client id it will not take), as opposed to an outage
    (no route, no answer, "server unavailable" or "busy"), which is waited out."""
    from aiomqtt.exceptions import MqttConnectError

    if not isinstance(exc, MqttConnectError):
        return False
    code = getattr(exc.rc, "value", exc.rc)
    return code not in TRANSIENT_CONNACK


def _default_secrets() -> SecretStore:
    from meterhub.secrets import default_secrets

    return default_secrets(fields=CREDENTIAL_FIELDS)


class MqttUplinkDriver:
    """Makes ``mqtt`` uplinks (:class:`meterhub.api.UplinkDriver`)."""

    name = "mqtt"
    description = "readings and events to an MQTT broker (QoS 1, retained states, last will, HA discovery)"

    def __init__(self, *, secrets: Callable[[], SecretStore] | None = None,
                 reconnect: tuple[float, float] = (RECONNECT_INITIAL_S, RECONNECT_MAX_S)) -> None:
        self._secrets = secrets
        self._reconnect = reconnect

    def validate(self, config: UplinkConfig) -> list[tuple[str, str]]:
        return validate_options(config.options)

    def create(self, config: UplinkConfig, terminal: Terminal) -> MqttUplink:
        return MqttUplink(settings_for(config.options, terminal.terminal), terminal, secrets=self._secrets,
                          reconnect=self._reconnect)
