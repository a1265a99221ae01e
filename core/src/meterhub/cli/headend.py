"""``meterhub head-end``: the master station (serve), and what its users ask of it through
the store: reads and commands for a terminal (whichever node holds it), the terminals and
their allowlist."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from .common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Failure,
    _plugins,
    _setup_logging,
    _user_errors,
)

#: Where the head-end keeps its data when --db is not given: SQLite in the working directory.
DEFAULT_DB = "sqlite:///head-end.db"
#: Seconds a request or command waits for its answer, by default.
DEFAULT_TIMEOUT_S = 60.0
#: How often a waiting request looks at its row.
POLL_S = 0.2


def store_url(db: str) -> str:
    """``--db``: a store URL, or a plain file name for SQLite."""
    return db if "://" in db else f"sqlite:///{db}"


def _open(db: str) -> Any:
    from ..store import open_store

    with _user_errors():
        try:
            return open_store(store_url(db))
        except ValueError as exc:
            raise Failure(str(exc), EXIT_USAGE) from None


def _terminal(value: str) -> str:
    from ..headend.station import parse_terminal, terminal_name

    try:
        return terminal_name(parse_terminal(value))
    except ValueError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None


def read_allow_file(path: str) -> list[str]:
    """The terminals of an allowlist file: one per line (``3201/1`` or ``32010001``), blank
    lines and ``#`` comments ignored; a bad line is an error naming file and line."""
    from ..headend.station import parse_terminal, terminal_name

    names = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise Failure(f"cannot read the allowlist {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            names.append(terminal_name(parse_terminal(entry)))
        except ValueError as exc:
            raise Failure(f"{path}, line {number}: {exc}", EXIT_USAGE) from None
    return names


def _zone(name: str | None) -> Any:
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Failure(f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)", EXIT_USAGE) from None


@click.group("head-end", invoke_without_command=True)
@click.option("--listen", default="127.0.0.1:4001", show_default=True, help="HOST:PORT to accept terminals on.")
@click.option("--db", default=DEFAULT_DB, show_default=True,
              help="The store: a SQLite file (or sqlite:///FILE), or postgresql://... shared by several nodes.")
@click.option("--allow", "allow_file", default=None, metavar="FILE",
              help="Terminals allowed to log in, one per line (3201/1 or 32010001), besides the store's allowlist.")
@click.option("--allow-any", is_flag=True, help="Let every terminal log in (a lab, never a utility's network).")
@click.option("--node", default=None, help="This node's name in the store (default: host:port).")
@click.option("--timezone", "zone", default=None, metavar="ZONE",
              help="The terminals' local time zone (IANA name); default: this machine's.")
@click.option("--realtime", "realtime_s", type=click.FloatRange(min=0), default=900.0, show_default=True,
              metavar="SECONDS",
              help="Read every point's energy (AFN 0C F129) this often; 0: only active reports.")
@click.option("--frozen-days", type=click.IntRange(min=0), default=7, show_default=True,
              help="Back-fill the daily freezes (AFN 0D F161) of this many days; 0: none.")
@click.option("--frozen-months", type=click.IntRange(min=0), default=3, show_default=True,
              help="Back-fill the monthly freezes (AFN 0D F177) of this many months; 0: none.")
@click.option("--heartbeat", "heartbeat_s", type=click.FloatRange(min=0, min_open=True), default=900.0,
              show_default=True, metavar="SECONDS",
              help="The terminals' heartbeat period: three silent ones end a connection.")
@click.option("--login-timeout", "login_s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, metavar="SECONDS",
              help="A new connection must log in within this.")
@click.option("--max-connections", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--max-damaged", type=click.IntRange(min=1), default=20, show_default=True,
              help="A connection sending more damaged frames is dropped.")
@click.option("--max-frames-per-s", "max_frames_s", type=click.FloatRange(min=0, min_open=True), default=20.0,
              show_default=True,
              help="A connection sending frames faster (past a burst of 100) is dropped.")
@click.option("--http", "http_listen", default=None, metavar="HOST:PORT",
              help="Serve the JSON HTTP API on this port too (off unless given; bind it to a management network).")
@click.option("--http-token-entry", default="head-end-api", show_default=True, metavar="NAME",
              help="The secret-store entry whose token field the HTTP API's writes must bring (Bearer).")
@click.option("--http-auth-reads", is_flag=True, help="The HTTP API's reads need the token too.")
@click.option("--alarms", "alarms_file", default=None, metavar="FILE",
              help="Run these alarm rules (a YAML file's alarms: section; a site file works) on the values the "
                   "terminals send, as a concentrator runs them on its meters.")
@click.option("-v", "--verbose", count=True, help="-v: each login, report and request; -vv: debug.")
@click.pass_context
def headend_cmd(ctx: click.Context, listen: str, db: str, allow_file: str | None, allow_any: bool, node: str | None,
                zone: str | None, realtime_s: float, frozen_days: int, frozen_months: int, heartbeat_s: float,
                login_s: float, max_connections: int, max_damaged: int, max_frames_s: float, http_listen: str | None,
                http_token_entry: str, http_auth_reads: bool, alarms_file: str | None, verbose: int) -> None:
    """The master station: accepts concentrators (Q/GDW 1376.1 over TCP), checks each login
    against the allowlist, stores their reports and scheduled reads, and carries out the
    requests and commands queued for the terminals it holds. Several nodes may share one
    PostgreSQL store behind a TCP load balancer."""
    ctx.ensure_object(dict)
    ctx.obj["db"] = db
    if ctx.invoked_subcommand is not None:
        return
    _setup_logging(max(verbose, 1))
    from ..headend.station import parse_listen

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    http = None
    if http_listen is not None:
        try:
            from ..headend import http as _http  # noqa: F401  aiohttp: the headend extra, named if missing
        except ImportError as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
        try:
            http_host, http_port = parse_listen(http_listen)
        except ValueError:
            raise Failure(f"--http is HOST:PORT, e.g. 10.0.0.5:8080; got {http_listen!r}", EXIT_USAGE) from None
        http = {"host": http_host, "port": http_port, "token_entry": http_token_entry, "auth_reads": http_auth_reads}
    allow = read_allow_file(allow_file) if allow_file else []
    rules: list[Any] = []
    if alarms_file is not None:
        from ..alarms import rules_from_config
        from ..config import load_alarms

        with _user_errors():
            rules = rules_from_config(load_alarms(alarms_file), _plugins().alarm_rules())
    options = {"node": node, "zone": _zone(zone), "allow": allow, "allow_any": allow_any, "realtime_s": realtime_s,
               "frozen_days": frozen_days, "frozen_months": frozen_months, "heartbeat_s": heartbeat_s,
               "login_s": login_s, "max_connections": max_connections, "max_damaged": max_damaged,
               "max_frames_s": max_frames_s, "alarms": rules}
    with _user_errors():
        try:
            asyncio.run(_serve(store_url(db), host, port, options, http))
        except ValueError as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
        except OSError as exc:
            raise Failure(f"cannot listen on {listen}: {exc.strerror or exc}") from None


async def _serve(url: str, host: str, port: int, options: dict[str, Any], http: dict[str, Any] | None = None) -> None:
    """Run a node until SIGINT or SIGTERM; ``http``: where and how to serve its HTTP API too."""
    from ..headend.server import HeadEnd
    from ..secrets import default_secrets
    from ..store import open_store
    from ..store.writer import StoreWriter

    plugins = _plugins()
    writer = StoreWriter(lambda: open_store(url))
    await writer.start()
    try:
        allowed = await writer.call(lambda store: store.allowed_terminals())
        if not (options["allow"] or allowed or options["allow_any"]):
            click.echo("warning: no terminal is allowed to log in: give --allow FILE, add them with "
                       "`meterhub head-end allow TERMINAL...`, or --allow-any in a lab", err=True)
        head_end = HeadEnd(writer, plugins=plugins, secrets=default_secrets(), **options)
        await head_end.start(host, port)
        click.echo(f"head-end node {head_end.node} listening on {host}:{head_end.port}, store {url}", err=True)
        api = None
        try:
            if http is not None:
                api = await _start_api(head_end, http)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            collector = loop.create_task(_keep_collections_short())
            try:
                await stop.wait()
            finally:
                collector.cancel()
        finally:
            if api is not None:
                await api.stop()
            await head_end.stop()
    finally:
        await writer.close()


#: How often the objects alive are moved out of the collector's sight (gc.freeze), and how
#: often they are looked at again in one full collection, in seconds.
FREEZE_S = 5.0
FULL_COLLECTION_S = 1800.0


async def _keep_collections_short() -> None:
    """A node holding ten thousand connections holds millions of long-lived objects; each
    full collection of the cyclic garbage collector walked them all and stopped the event
    loop for 0.5-0.7 s every few seconds, freeing nothing (the head-end benchmark's p99 of
    the heartbeat confirms: 442 ms; with this, 48 ms). What is alive is frozen every 5 s (a
    constant-time move), and once in half an hour unfrozen for one full collection, so what
    became garbage meanwhile is not kept for good."""
    import gc

    since_full = 0.0
    while True:
        await asyncio.sleep(FREEZE_S)
        since_full += FREEZE_S
        if since_full >= FULL_COLLECTION_S:
            since_full = 0.0
            gc.unfreeze()
            gc.collect()
        gc.freeze()


async def _start_api(head_end: Any, http: dict[str, Any]) -> Any:
    """The node's HTTP API, started beside it; a warning when its writes would be refused."""
    from ..headend.http import HeadEndApi

    where = f"{http['host']}:{http['port']}"
    try:
        api = await HeadEndApi(head_end, token_entry=http["token_entry"], auth_reads=http["auth_reads"]).start(
            http["host"], http["port"])
    except OSError as exc:
        raise Failure(f"cannot serve the HTTP API on {where}: {exc.strerror or exc}") from None
    reads = "need the token" if http["auth_reads"] else "open: keep the port on a management network"
    click.echo(f"HTTP API on http://{http['host']}:{api.port}/api/ (reads {reads})", err=True)
    problem = await api.problem()
    if problem:
        click.echo(f"warning: the HTTP API refuses writes: {problem}", err=True)
    return api


def _db(ctx: click.Context, db: str | None) -> str:
    return db or (ctx.obj or {}).get("db") or DEFAULT_DB


def _wait(store: Any, id: str, timeout: float, terminal: str) -> Any:
    """The request's record once it ended; failed here when no node took it in time."""
    from ..model import RequestState
    from ..store import StoreError

    # the node's own wait first (its answer may come at the timeout), then ours
    deadline = time.monotonic() + timeout + min(5.0, max(1.0, timeout))
    while True:
        record = store.request(id)
        if record.state in (RequestState.ANSWERED, RequestState.FAILED):
            return record
        if time.monotonic() > deadline:
            why = (f"terminal {terminal} is not online on any head-end node (meterhub head-end terminals)"
                   if record.state is RequestState.QUEUED else f"node {record.node} took it but gave no answer")
            try:
                return store.finish_request(id, RequestState.FAILED, reason=f"no answer in time: {why}")
            except StoreError:
                continue  # it ended meanwhile
        time.sleep(POLL_S)


def _report(record: Any, as_json: bool) -> None:
    from ..model import RequestState

    if as_json:
        click.echo(json.dumps({"id": record.request.id, "terminal": record.request.terminal,
                               "state": record.state.value, "node": record.node, "reason": record.reason,
                               "answer": record.answer}, ensure_ascii=False, default=_plain))
    elif record.answer:
        for item in record.answer.get("items", []):
            click.echo(_item_line(item))
    if record.state is not RequestState.ANSWERED:
        raise Failure(f"{record.request.kind} for {record.request.terminal} failed: {record.reason}", EXIT_FAILED)


def _plain(value: Any) -> Any:
    """What json.dumps cannot take itself: the read-only mappings and tuples records hold."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _item_line(item: Mapping[str, Any]) -> str:
    value = item.get("value")
    if isinstance(value, Mapping) and "values" in value:
        total, *tariffs = value["values"]
        rest = " ".join(f"T{i}={v}" for i, v in enumerate(tariffs, 1) if v is not None)
        return f"p{item['point']} F{item['fn']} read {value.get('read_time')}: total {total} kWh {rest}".rstrip()
    return f"p{item['point']} F{item['fn']}: {json.dumps(value, ensure_ascii=False)}"


def _queue(db: str, request: Any, as_json: bool) -> None:
    store = _open(db)
    try:
        with _user_errors():
            store.add_request(request)
            record = _wait(store, request.id, request.timeout, request.terminal)
        _report(record, as_json)
    finally:
        store.close()


@headend_cmd.command("request")
@click.option("--db", default=None, help="The head-end's store (default: the group's --db).")
@click.option("--terminal", required=True, help="AREA/ADDRESS (3201/1) or 8 hex digits (32010001).")
@click.option("--point", "points", type=int, multiple=True, help="Measuring point (pn); repeatable; none: p0.")
@click.option("--fn", "fns", type=int, multiple=True, required=True, help="Fn, e.g. 129 (energy), 2 (clock); repeatable.")
@click.option("--afn", default="0C", show_default=True, help="AFN in hex: 0C real-time, 0D frozen, 0A parameters.")
@click.option("--day", default=None, metavar="YYYY-MM-DD", help="The day of class 2 daily data (AFN 0D F161).")
@click.option("--month", default=None, metavar="YYYY-MM", help="The month of class 2 monthly data (AFN 0D F177).")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True, metavar="SECONDS")
@click.option("--json", "as_json", is_flag=True, help="The request's record as JSON on stdout.")
@click.pass_context
def request_cmd(ctx: click.Context, db: str | None, terminal: str, points: tuple[int, ...], fns: tuple[int, ...],
                afn: str, day: str | None, month: str | None, timeout: float, as_json: bool) -> None:
    """Read data from a terminal, through whichever head-end node holds its connection;
    what comes back is stored too."""
    from ..model import HeadEndRequest

    try:
        afn_value = int(afn, 16)
        if day:
            date.fromisoformat(day)
        if month:
            datetime.strptime(month, "%Y-%m")
    except ValueError as exc:
        raise Failure(f"bad --afn, --day or --month: {exc}", EXIT_USAGE) from None
    args: dict[str, Any] = {"afn": afn_value, "points": list(points) or [0], "fns": list(fns)}
    if day:
        args["day"] = day
    if month:
        args["month"] = month
    from ..commands import local_issuer

    request = HeadEndRequest(_terminal(terminal), "read", args, issuer=local_issuer(), timeout=timeout)
    _queue(_db(ctx, db), request, as_json)


@headend_cmd.command("command")
@click.argument("action", type=click.Choice(["set-time", "trip", "permit-close", "allow-reports", "forbid-reports"]))
@click.option("--db", default=None, help="The head-end's store (default: the group's --db).")
@click.option("--terminal", required=True, help="AREA/ADDRESS (3201/1) or 8 hex digits (32010001).")
@click.option("--point", type=int, default=0, help="trip / permit-close: the measuring point whose relay is switched.")
@click.option("--time", "when", default=None, metavar="ISO", help="set-time: the time to set (default: now).")
@click.option("--credential", default="", metavar="REF",
              help="The secret-store entry whose password field is the terminal's PW (32 hex digits).")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True, metavar="SECONDS")
@click.option("--json", "as_json", is_flag=True, help="The request's record as JSON on stdout.")
@click.pass_context
def command_cmd(ctx: click.Context, action: str, db: str | None, terminal: str, point: int, when: str | None,
                credential: str, timeout: float, as_json: bool) -> None:
    """Send a control command (AFN 05) to a terminal through the command path: policy hooks,
    the PW from the secret store, the audit trail (meterhub commands --db ...)."""
    from ..model import HeadEndRequest

    args: dict[str, Any] = {"action": action.replace("-", "_")}
    if point:
        args["point"] = point
    if when:
        try:
            datetime.fromisoformat(when)
        except ValueError as exc:
            raise Failure(f"bad --time: {exc}", EXIT_USAGE) from None
        args["time"] = when
    from ..commands import local_issuer

    request = HeadEndRequest(_terminal(terminal), "command", args, issuer=local_issuer(), credential=credential,
                             timeout=timeout)
    _queue(_db(ctx, db), request, as_json)


@headend_cmd.command("terminals")
@click.option("--db", default=None, help="The head-end's store (default: the group's --db).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def terminals_cmd(ctx: click.Context, db: str | None, as_json: bool) -> None:
    """Every terminal seen: online or not, on which node, its last login and frame."""
    store = _open(_db(ctx, db))
    try:
        with _user_errors():
            terminals = store.terminals()
    finally:
        store.close()
    if as_json:
        from .. import jsonout

        click.echo(jsonout.dumps([jsonout.terminal_to_dict(t) for t in terminals]))
        return
    if not terminals:
        click.echo("no terminal has logged in yet", err=True)
    for t in terminals:
        state = f"online on {t.node} from {t.peer}" if t.online else "offline"
        seen = t.seen.astimezone().strftime("%Y-%m-%d %H:%M:%S") if t.seen else "-"
        click.echo(f"{t.name}  {state}  last frame {seen}  heartbeats {t.heartbeats}")


@headend_cmd.command("allow")
@click.argument("terminals", nargs=-1)
@click.option("--db", default=None, help="The head-end's store (default: the group's --db).")
@click.option("--remove", is_flag=True, help="Take them off the allowlist.")
@click.pass_context
def allow_cmd(ctx: click.Context, terminals: tuple[str, ...], db: str | None, remove: bool) -> None:
    """Add terminals to the store's allowlist (or --remove them); with none, list it."""
    names = [_terminal(t) for t in terminals]
    store = _open(_db(ctx, db))
    try:
        with _user_errors():
            if names:
                store.allow_terminals(names, allowed=not remove)
            listed = store.allowed_terminals()
    finally:
        store.close()
    for name in listed:
        click.echo(name)
    if not listed:
        click.echo("the allowlist is empty", err=True)


__all__ = ["DEFAULT_DB", "headend_cmd", "read_allow_file", "store_url"]
