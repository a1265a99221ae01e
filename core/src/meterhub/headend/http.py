"""The head-end's JSON HTTP API, for operators and integrations: terminals (online state,
last frame, heartbeats), their meters' latest readings and read success rate, readings,
events, commands, and the requests queued for terminals.

A node serves it on a second port (``meterhub head-end --http HOST:PORT``) beside the
1376.1 one. Everything it reads comes from the store through the node's
:class:`~meterhub.store.writer.StoreWriter`, so the event loop that serves the terminals
never waits for a query; with several nodes on one PostgreSQL store any node's API shows
every terminal. Decimals are exact strings, times ISO 8601 in UTC.

Writes (``POST /api/requests``) need ``Authorization: Bearer TOKEN``, where TOKEN is the
``token`` field of a secret-store entry (:data:`DEFAULT_TOKEN_ENTRY` unless told), looked up
at each request so it can be changed without a restart. With no token configured every
write is refused. Reads need no token unless ``auth_reads``: bind the port to a
management network. The aiohttp package is the ``headend`` extra.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

try:
    from aiohttp import web
except ImportError as exc:  # the optional extra: say which one
    raise ImportError("the head-end's HTTP API needs aiohttp, the 'headend' extra of meterhub: "
                      "pip install 'meterhub[headend]' (from a checkout: pip install './core[headend]')") from exc

from ..errors import CredentialError, CredentialNotFound
from ..jsonout import (
    command_to_dict,
    decimal_text,
    event_to_dict,
    reading_to_dict,
    terminal_to_dict,
)
from ..model import (
    CommandState,
    HeadEndRequest,
    Origin,
    RequestRecord,
    RequestState,
    TerminalRecord,
    utcnow,
)
from ..secrets import env_name
from ..store import StoreError
from .server import COMMAND_ACTIONS, reads_scope
from .station import parse_terminal, terminal_name

if TYPE_CHECKING:
    from ..secrets import SecretStore
    from .server import HeadEnd

log = logging.getLogger(__name__)

#: The secret-store entry whose ``token`` field authorises writes, unless told otherwise.
DEFAULT_TOKEN_ENTRY = "head-end-api"
#: The largest request body taken: a request is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024
#: Rows a list gives unless ``limit`` says otherwise, and the most it may ask for.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
#: Seconds a queued request may wait for its answer, by default and at most.
DEFAULT_REQUEST_TIMEOUT_S = 60.0
MAX_REQUEST_TIMEOUT_S = 3600.0
#: Seconds past a request's timeout before the API, as its asker, fails it: the node's own
#: wait ends first (as ``meterhub head-end request`` waits).
EXPIRY_GRACE_S = 5.0
#: Seconds in-flight API requests get to finish when the node stops.
SHUTDOWN_GRACE_S = 5.0
#: Q/GDW 1376.1: measuring points are 0..2040, Fn 1..248.
MAX_POINT = 2040
MAX_FN = 248

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUANTITY = re.compile(r"[!-~]{1,64}")  # printable ASCII: an OBIS code or an alias


class _BadInput(Exception):
    """What the client sent cannot be used: a 400 with this message."""


class _Refused(Exception):
    """Not allowed: 401 (no or a wrong token) or 403 (no token configured)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- JSON ------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON data: Decimals as exact strings, times as ISO 8601 in UTC, enums as
    their values, mappings and sequences as objects and lists."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo is not None else value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(plain(data), ensure_ascii=False), status=status,
                        content_type="application/json", headers=headers)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


def reads_to_dict(kept: Mapping[str, Any]) -> dict[str, Any]:
    """A terminal's scheduled-read counts (its settings, :func:`~.server.reads_scope`):
    points asked and answered since ``since``, and ``rate`` = answered / asked (None before
    its first scheduled read)."""
    reads = kept.get("reads")
    reads = reads if isinstance(reads, Mapping) else {}
    asked, answered = int(reads.get("asked", 0)), int(reads.get("answered", 0))
    return {"asked": asked, "answered": answered, "rate": round(answered / asked, 4) if asked else None,
            "since": reads.get("since")}


def request_to_dict(record: RequestRecord) -> dict[str, Any]:
    """A queued request and how far it got: what ``head-end request --json`` prints, and
    what was asked."""
    r = record.request
    return {"id": r.id, "terminal": r.terminal, "kind": r.kind, "args": r.args, "credential": r.credential,
            "issuer": r.issuer, "origin": r.origin, "created": r.created, "timeout": r.timeout,
            "state": record.state, "updated": record.updated, "node": record.node, "reason": record.reason,
            "answer": record.answer}


# --- what clients send -------------------------------------------------------------------------


def parse_time(text: str, name: str = "since") -> datetime:
    """A query's time: an ISO date or time, UTC unless it carries an offset. A ``+`` that
    arrived as a space (a URL's query turns an unescaped ``+`` into one) is taken back."""
    for candidate in (text.strip(), text.strip().replace(" ", "+")):
        try:
            moment = datetime.fromisoformat(candidate)
        except (ValueError, OverflowError):
            continue
        return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).astimezone(UTC)
    raise _BadInput(f"{name}={text!r}: expected an ISO date or time, e.g. 2026-12-03, 2026-12-03T08:00:00Z "
                    "or 2026-12-03T16:00:00%2B08:00 (UTC unless it carries an offset)")


def _terminal(value: str) -> str:
    try:
        return terminal_name(parse_terminal(value))
    except ValueError as exc:
        raise _BadInput(str(exc)) from None


def _whole(value: Any, name: str, low: int, high: int) -> int:
    """A JSON or query whole number in low..high (not a bool, not a fraction)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _BadInput(f"{name} must be a whole number {low}..{high}, got {value!r}")
    return value


def _query(request: web.Request, known: tuple[str, ...]) -> dict[str, str]:
    unknown = sorted(set(request.query) - set(known))
    if unknown:
        raise _BadInput(f"unknown parameter {unknown[0]!r} (known: {', '.join(known) or 'none'})")
    return {k: request.query[k] for k in known if k in request.query}


def _common(query: Mapping[str, str]) -> tuple[datetime | None, int]:
    since = parse_time(query["since"]) if "since" in query else None
    limit = _whole(query["limit"], "limit", 1, MAX_LIMIT) if "limit" in query else DEFAULT_LIMIT
    return since, limit


def _int_list(value: Any, name: str, low: int, high: int) -> list[int]:
    if not isinstance(value, list) or not value:
        raise _BadInput(f"args.{name} must be a non-empty list of whole numbers {low}..{high}, got {value!r}")
    return [_whole(v, f"args.{name}", low, high) for v in value]


def _read_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """A read's args, as the node's ``_read`` takes them: ``fns``, ``points`` (default [0]),
    ``afn`` (a number or 2 hex digits, default 0C), ``day`` or ``month``."""
    _only(args, ("afn", "points", "fns", "day", "month"), "a read's args")
    afn = args.get("afn", 0x0C)
    if isinstance(afn, str) and re.fullmatch(r"[0-9A-Fa-f]{1,2}", afn):
        afn = int(afn, 16)
    out: dict[str, Any] = {"afn": _whole(afn, "args.afn", 0, 0xFF),
                           "points": _int_list(args.get("points", [0]), "points", 0, MAX_POINT)}
    if "fns" not in args:
        raise _BadInput("a read names the Fn it asks for: args.fns, e.g. [129]")
    out["fns"] = _int_list(args["fns"], "fns", 1, MAX_FN)
    if "day" in args and "month" in args:
        raise _BadInput("a read asks for a day's or a month's frozen data, not both")
    try:
        if "day" in args:
            out["day"] = date.fromisoformat(str(args["day"])).isoformat()
        if "month" in args:
            out["month"] = datetime.strptime(str(args["month"]), "%Y-%m").strftime("%Y-%m")
    except ValueError:
        raise _BadInput(f"args.day is YYYY-MM-DD and args.month YYYY-MM, got {dict(args)!r}") from None
    return out


def _command_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """A command's args: ``action`` (set_time, trip, ...), ``point`` for a relay, ``time``
    for set_time. No secret: the PW comes from the node's secret store (``credential``)."""
    _only(args, ("action", "point", "time"), "a command's args")
    action = str(args.get("action", "")).replace("-", "_")
    if action not in COMMAND_ACTIONS:
        raise _BadInput(f"args.action must be one of {', '.join(COMMAND_ACTIONS)}, got {args.get('action')!r}")
    out: dict[str, Any] = {"action": action}
    if "point" in args:
        out["point"] = _whole(args["point"], "args.point", 1, MAX_POINT)
    elif action in ("trip", "permit_close"):
        raise _BadInput(f"{action} needs args.point: the measuring point whose meter's relay it switches")
    if "time" in args:
        try:
            datetime.fromisoformat(str(args["time"]))
        except ValueError:
            raise _BadInput(f"args.time must be an ISO time, got {args['time']!r}") from None
        out["time"] = str(args["time"])
    return out


def _only(value: Mapping[str, Any], known: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise _BadInput(f"{what}: unknown key {unknown[0]!r} (known: {', '.join(known)})")


def parse_request(body: Any, *, remote: str) -> HeadEndRequest:
    """The request a ``POST /api/requests`` body asks for, checked here (at the edge)
    rather than failing on the node: ``terminal``, ``kind`` (read or command), ``args``,
    ``credential`` (a command's secret-store entry), ``timeout`` (s), ``issuer``."""
    if not isinstance(body, Mapping):
        raise _BadInput('the body is a JSON object: {"terminal": ..., "kind": "read" or "command", "args": {...}}')
    _only(body, ("terminal", "kind", "args", "credential", "timeout", "issuer"), "the body")
    if not isinstance(body.get("terminal"), str):
        raise _BadInput("terminal is required: AREA/ADDRESS (3201/1) or 8 hex digits (32010001)")
    terminal = _terminal(body["terminal"])
    args = body.get("args", {})
    if not isinstance(args, Mapping):
        raise _BadInput(f"args must be an object, got {args!r}")
    credential = body.get("credential", "")
    if not isinstance(credential, str) or len(credential) > 200:
        raise _BadInput("credential must be the name of a secret-store entry")
    kind = body.get("kind")
    if kind == "read":
        checked = _read_args(args)
        if credential:
            raise _BadInput("a read takes no credential")
    elif kind == "command":
        checked = _command_args(args)
        if not credential.strip():
            raise _BadInput("a command names its credential: the node's secret-store entry whose password field "
                            "is the terminal's PW (32 hex digits)")
    else:
        raise _BadInput(f"kind must be 'read' or 'command', got {kind!r}")
    timeout = body.get("timeout", DEFAULT_REQUEST_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_REQUEST_TIMEOUT_S:
        raise _BadInput(f"timeout is seconds, 0 < timeout <= {MAX_REQUEST_TIMEOUT_S:g}, got {timeout!r}")
    issuer = body.get("issuer", "")
    if not isinstance(issuer, str) or len(issuer) > 200 or not issuer.isprintable():
        raise _BadInput("issuer is who asks: a short printable name")
    via = f"http {remote}"
    return HeadEndRequest(terminal, kind, checked, origin=Origin.API, issuer=f"{issuer} ({via})" if issuer else via,
                          credential=credential, timeout=float(timeout))


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _BadInput(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _BadInput(f"the body is larger than {MAX_BODY_BYTES} bytes") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _BadInput(f"the body is not JSON: {exc}") from None


# --- the application ---------------------------------------------------------------------------


class _Api:
    """The handlers of one node's API."""

    def __init__(self, head_end: HeadEnd, *, token_entry: str, auth_reads: bool, secrets: SecretStore) -> None:
        self.head_end = head_end
        self.writer = head_end.writer
        self.token_entry = token_entry
        self.auth_reads = auth_reads
        self.secrets = secrets
        self.started = time.monotonic()

    # -- authentication ---------------------------------------------------------------------

    def _token(self) -> str:
        """The configured token; _Refused (403) when there is none."""
        how = (f"set the token field of the secret-store entry {self.token_entry!r} on this node (the environment "
               f"variable {env_name(self.token_entry, 'token')} or the secrets file), or choose the entry with "
               "--http-token-entry")
        try:
            token = self.secrets.get(self.token_entry).get("token", "")
        except CredentialNotFound:
            token = ""
        except CredentialError as exc:
            raise _Refused(403, f"no API token can be had, so this is refused: {exc}") from None
        if not token:
            raise _Refused(403, f"no API token is configured, so this is refused: {how}")
        return token

    async def problem(self) -> str | None:
        """Why writes would be refused now (no token configured), or None."""
        try:
            await asyncio.to_thread(self._token)
        except _Refused as exc:
            return str(exc)
        return None

    async def authenticate(self, request: web.Request) -> None:
        token = await asyncio.to_thread(self._token)  # a secrets file or keyring: off the event loop
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given_bytes, token_bytes = given.strip().encode("utf-8", "replace"), token.encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, token_bytes):
            log.info("HTTP API: %s %s from %s refused: no or a wrong token", request.method, request.path,
                     request.remote)
            raise _Refused(401, "this needs the API token: Authorization: Bearer TOKEN")

    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        """Authentication, and every failure as a JSON ``{"error": ...}``, never a traceback."""
        try:
            if request.method not in ("GET", "HEAD") or self.auth_reads:
                await self.authenticate(request)
            return await handler(request)
        except _BadInput as exc:
            return _error(400, str(exc))
        except _Refused as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="meterhub head-end"'} if exc.status == 401 else None
            return _error(exc.status, str(exc), headers)
        except web.HTTPException as exc:  # no such path (404), method (405), ...
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _error(exc.status, f"{exc.reason.lower()}: {request.method} {request.path}", allow)
        except StoreError:
            log.exception("HTTP API: %s %s: the store failed", request.method, request.path)
            return _error(503, "the store cannot be used now; the node's log says why")
        except Exception:
            log.exception("HTTP API: %s %s failed", request.method, request.path)
            return _error(500, "internal error; the node's log says why")

    # -- reads ------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        _query(request, ())
        held = sorted(terminal_name(t) for t in self.head_end.online)
        uptime = round(time.monotonic() - self.started, 1)
        return _json({"node": self.head_end.node, "terminals": held, "uptime_s": uptime, "time": utcnow()})

    async def terminals(self, request: web.Request) -> web.Response:
        _query(request, ())
        found = await self.writer.call(lambda store: store.terminals())
        return _json({"terminals": [terminal_to_dict(t) for t in found]})

    async def terminal(self, request: web.Request) -> web.Response:
        _query(request, ())
        name = _terminal(request.match_info["terminal"])

        def look(store: Any) -> dict[str, Any] | None:
            record = _known(store, name)
            if record is None:
                return None
            meters: dict[str, list[Any]] = {}
            for reading in store.latest(terminal=name):
                meters.setdefault(reading.meter, []).append(reading_to_dict(reading))
            return {**terminal_to_dict(record), "reads": reads_to_dict(store.settings(reads_scope(name))),
                    "meters": [{"point": int(m) if m.isdigit() else m, "readings": rows}
                               for m, rows in sorted(meters.items(), key=lambda kv: _point_order(kv[0]))]}

        found = await self.writer.call(look)
        if found is None:
            return _unknown(name)
        return _json(found)

    async def readings(self, request: web.Request) -> web.Response:
        query = _query(request, ("since", "quantity", "point", "limit"))
        name = _terminal(request.match_info["terminal"])
        since, limit = _common(query)
        quantity = query.get("quantity")
        if quantity is not None and not _QUANTITY.fullmatch(quantity):
            raise _BadInput(f"quantity must be an OBIS code such as 1-0:1.8.0, got {quantity!r}")
        point = str(_whole(query["point"], "point", 0, MAX_POINT)) if "point" in query else None

        def look(store: Any) -> list[Any] | None:
            if _known(store, name) is None:
                return None
            return store.readings(terminal=name, meter=point, quantity=quantity, since=since, limit=limit)

        found = await self.writer.call(look)
        if found is None:
            return _unknown(name)
        return _json({"terminal": name, "readings": [reading_to_dict(r) for r in found]})

    async def events(self, request: web.Request) -> web.Response:
        query = _query(request, ("since", "kind", "terminal", "limit"))
        since, limit = _common(query)
        source = _terminal(query["terminal"]) if "terminal" in query else None
        kind = query.get("kind")
        found = await self.writer.call(lambda store: store.events(kind=kind, source=source, since=since, limit=limit))
        return _json({"events": [event_to_dict(e) for e in found]})

    async def commands(self, request: web.Request) -> web.Response:
        query = _query(request, ("since", "state", "limit"))
        since, limit = _common(query)
        try:
            state = CommandState(query["state"]) if "state" in query else None
        except ValueError:
            raise _BadInput(f"state must be one of {', '.join(s.value for s in CommandState)}, "
                            f"got {query['state']!r}") from None
        found = await self.writer.call(lambda store: store.commands(state=state, since=since, limit=limit))
        return _json({"commands": [command_to_dict(r) for r in found]})

    async def request_record(self, request: web.Request) -> web.Response:
        _query(request, ())
        id = request.match_info["id"]
        if not _REQUEST_ID.fullmatch(id):
            raise _BadInput(f"a request id is the 32 hex digits POST /api/requests gave, got {id!r}")
        record = await self.writer.call(lambda store: _expire(store, id))
        if record is None:
            return _error(404, f"no request {id}")
        return _json(request_to_dict(record))

    # -- writes -----------------------------------------------------------------------------

    async def add_request(self, request: web.Request) -> web.Response:
        _query(request, ())
        queued = parse_request(await _body(request), remote=request.remote or "?")
        await self.writer.call(lambda store: store.add_request(queued))
        log.info("HTTP API: %s %s for %s queued as %s (%s)", queued.kind, dict(queued.args), queued.terminal,
                 queued.id, queued.issuer)
        where = f"/api/requests/{queued.id}"
        return _json({"id": queued.id, "state": RequestState.QUEUED, "href": where}, 202, {"Location": where})


def _known(store: Any, name: str) -> TerminalRecord | None:
    return next((t for t in store.terminals() if t.name == name), None)


def _unknown(name: str) -> web.Response:
    return _error(404, f"no terminal {name} has logged in to a head-end of this store")


def _point_order(meter: str) -> tuple[int, str]:
    return (int(meter), "") if meter.isdigit() else (MAX_POINT + 1, meter)


def _expire(store: Any, id: str) -> RequestRecord | None:
    """A request's record; one that no node answered within its timeout (and
    :data:`EXPIRY_GRACE_S`) is failed first, as its asker would (``head-end request``)."""
    record = store.request(id)
    if record is None or record.state not in (RequestState.QUEUED, RequestState.CLAIMED):
        return record
    deadline = record.request.created + timedelta(seconds=record.request.timeout + EXPIRY_GRACE_S)
    if utcnow() <= deadline:
        return record
    why = (f"terminal {record.request.terminal} is not online on any head-end node"
           if record.state is RequestState.QUEUED else f"node {record.node} took it but gave no answer")
    try:
        return store.finish_request(id, RequestState.FAILED, reason=f"no answer in time: {why}")
    except StoreError:
        return store.request(id)  # it ended meanwhile


_API = web.AppKey("api", _Api)


def make_app(head_end: HeadEnd, *, token_entry: str = DEFAULT_TOKEN_ENTRY, auth_reads: bool = False,
             secrets: SecretStore | None = None) -> web.Application:
    """The API of ``head_end`` as an aiohttp application (see the module docstring);
    ``secrets``: where the token is looked up (default: the node's secret store)."""
    api = _Api(head_end, token_entry=token_entry, auth_reads=auth_reads,
               secrets=head_end.secrets if secrets is None else secrets)
    app = web.Application(middlewares=[api.guard], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/api/health", api.health)
    app.router.add_get("/api/terminals", api.terminals)
    app.router.add_get("/api/terminals/{terminal}", api.terminal)
    app.router.add_get("/api/terminals/{terminal}/readings", api.readings)
    app.router.add_get("/api/events", api.events)
    app.router.add_get("/api/commands", api.commands)
    app.router.add_post("/api/requests", api.add_request)
    app.router.add_get("/api/requests/{id}", api.request_record)
    app[_API] = api
    return app


class HeadEndApi:
    """The API served on its own port: ``await HeadEndApi(head_end).start(host, port)``
    (port 0: a free one, then in :attr:`port`) … ``await stop()``."""

    def __init__(self, head_end: HeadEnd, *, token_entry: str = DEFAULT_TOKEN_ENTRY, auth_reads: bool = False,
                 secrets: SecretStore | None = None) -> None:
        self.app = make_app(head_end, token_entry=token_entry, auth_reads=auth_reads, secrets=secrets)
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> HeadEndApi:
        runner = web.AppRunner(self.app, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("head-end HTTP API on %s:%d", host, self.port)
        return self

    async def problem(self) -> str | None:
        """Why writes are refused now (no token configured), or None: for a warning at start."""
        return await self.app[_API].problem()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


__all__ = ["DEFAULT_TOKEN_ENTRY", "MAX_BODY_BYTES", "HeadEndApi", "make_app", "parse_request", "parse_time", "plain",
           "reads_to_dict", "request_to_dict", "terminal_to_dict"]
