"""A throwaway PostgreSQL server for tests.

:class:`PostgresServer` runs ``initdb`` into a temporary directory, starts the server on a
free loopback port with durability switched off (a test database need not survive a crash),
hands out fresh databases, and on exit stops the server and removes the directory. As root
it runs the server as the ``postgres`` user, since ``initdb`` refuses to run as root.
Plain Python, no pytest: :mod:`meterhub.testing.pytest_plugin` turns it into fixtures.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Self

import attrs

from ..errors import MeterhubError

if TYPE_CHECKING:
    from types import TracebackType

#: Where Debian installs each major version's binaries (``/usr/lib/postgresql/15/bin``).
VERSIONS_ROOT = Path("/usr/lib/postgresql")

#: The superuser initdb creates; with ``-A trust`` it connects over TCP without a password.
USER = "meterhub"

#: The database every cluster has, used for administration (CREATE DATABASE).
ADMIN_DATABASE = "postgres"

#: The account the server runs as when we are root.
SERVER_ACCOUNT = "postgres"

#: How long ``pg_ctl -w`` waits for the server to accept connections or to stop. A start
#: takes well under a second; this leaves room for a loaded CI machine.
PG_CTL_TIMEOUT_S = 60

#: Ports tried before giving up, when another process takes the free port we picked
#: between picking it and the server binding it.
PORT_ATTEMPTS = 5

#: Lines of the server log quoted in a start error.
LOG_TAIL_LINES = 20

#: Settings for speed, not safety: nothing here has to survive a crash of the machine.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

#: What the postmaster logs when the TCP port is taken ("could not bind IPv4 address
#: "127.0.0.1": Address already in use" then "could not create any TCP/IP sockets").
_PORT_TAKEN = re.compile(r"Address already in use|could not create any TCP/IP sockets")


class PostgresUnavailable(MeterhubError):
    """PostgreSQL cannot be run here (binaries, the server account or psycopg missing);
    the message says what is missing and how to get it."""


class PostgresServerError(MeterhubError):
    """initdb, or the server's start or stop, failed; the message quotes their output or
    the end of the server log."""


@attrs.frozen
class Binaries:
    """The two programs a throwaway server needs."""

    initdb: Path
    pg_ctl: Path


def find_binaries(path: str | None = None, versions_root: Path = VERSIONS_ROOT) -> Binaries:
    """Find ``initdb`` and ``pg_ctl``: on ``path`` (default ``$PATH``) first, then in the
    newest ``versions_root/<version>/bin`` holding both (Debian does not put them on PATH).

    Raises :class:`PostgresUnavailable` saying where it looked.
    """
    initdb, pg_ctl = shutil.which("initdb", path=path), shutil.which("pg_ctl", path=path)
    if initdb and pg_ctl:
        return Binaries(Path(initdb), Path(pg_ctl))
    for bindir in sorted(versions_root.glob("*/bin"), key=_version_key, reverse=True):
        if _executable(bindir / "initdb") and _executable(bindir / "pg_ctl"):
            return Binaries(bindir / "initdb", bindir / "pg_ctl")
    missing = " and ".join(name for name, found in (("initdb", initdb), ("pg_ctl", pg_ctl)) if not found)
    searched = path if path is not None else os.environ.get("PATH", os.defpath)
    raise PostgresUnavailable(
        f"PostgreSQL's {missing} not found: not on PATH ({searched}) and no {versions_root}/*/bin"
        " holds both initdb and pg_ctl; install PostgreSQL (Debian: apt-get install postgresql)"
    )


def unavailable_reason(path: str | None = None, versions_root: Path = VERSIONS_ROOT) -> str | None:
    """Why a :class:`PostgresServer` cannot be used here, or None when it can: the
    binaries, the ``postgres`` account when running as root, and psycopg (to talk to it)."""
    try:
        find_binaries(path, versions_root)
    except PostgresUnavailable as exc:
        return str(exc)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            return f"running as root, and there is no {SERVER_ACCOUNT!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return f"running as root, and there is no runuser to run PostgreSQL as {SERVER_ACCOUNT!r}"
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg cannot be imported ({exc}); install meterhub[postgres]"
    return None


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now (another process may take it
    before we bind it: :meth:`PostgresServer.start` tries again then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A PostgreSQL cluster of its own in a temporary directory, on a loopback port.

    ``url`` connects to its ``postgres`` database as superuser ``meterhub``;
    :meth:`create_database` makes an empty database and returns its URL. Use as a context
    manager: the server is stopped and its directory removed on exit, errors or not.
    ``settings`` are extra server settings (``-c name=value``) on top of :data:`FAST_SETTINGS`;
    ``ports`` are the ports to try, in order (default: free ports picked when needed).
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        ports: Iterable[int] | None = None,
    ) -> None:
        self.binaries = binaries or find_binaries()
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.directory: Path | None = None  #: the temporary directory: data/, log, socket
        self.port: int | None = None
        self._ports: Iterator[int] = iter(ports) if ports is not None else (free_port() for _ in itertools.count())
        self._as_root = os.geteuid() == 0
        self._database_numbers = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Create the cluster and start the server; returns self. On failure everything
        made so far is stopped and removed, and :class:`PostgresServerError` raised."""
        try:
            self.directory = self._make_directory()
            self._initdb()
            self._start_on_a_free_port()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and remove its
        directory (idempotent)."""
        if self.directory is None:
            return
        directory, self.directory, self.port = self.directory, None, None
        failed = None
        # postmaster.pid exists from the server's start until it has shut down, also after
        # a start that pg_ctl gave up waiting for: that server must not outlive the tests.
        if (directory / "data" / "postmaster.pid").exists():
            done = self._run_pg_ctl(directory, "stop", "-m", "fast")
            if done.returncode != 0:
                done = self._run_pg_ctl(directory, "stop", "-m", "immediate")
                if done.returncode != 0:
                    failed = done
        shutil.rmtree(directory, ignore_errors=True)
        if failed is not None:
            raise PostgresServerError(
                f"PostgreSQL in {directory} did not stop (pg_ctl exit {failed.returncode}):\n{failed.stdout.strip()}"
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- use -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database, as superuser ``meterhub``."""
        return self.url_for(ADMIN_DATABASE)

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server, as superuser ``meterhub``."""
        if self.port is None:
            raise PostgresServerError("the PostgreSQL server is not running: start() it, or use it in a with block")
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (named ``test_<n>`` unless ``name`` is given) and
        return its URL. Cheap: a copy of the small template database."""
        import psycopg
        from psycopg import sql

        name = name or f"test_{next(self._database_numbers)}"
        # CREATE DATABASE cannot run inside a transaction block.
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    # -- steps -----------------------------------------------------------------------

    def _make_directory(self) -> Path:
        if not self._as_root:
            return Path(tempfile.mkdtemp(prefix="meterhub-pg-"))
        # The server runs as postgres, which must reach the directory through every parent.
        base = Path(tempfile.gettempdir())
        if not all(p.stat().st_mode & stat.S_IXOTH for p in (base, *base.parents)):
            base = Path("/tmp")
        directory = Path(tempfile.mkdtemp(prefix="meterhub-pg-", dir=base))
        directory.chmod(0o755)
        account = pwd.getpwnam(SERVER_ACCOUNT)
        os.chown(directory, account.pw_uid, account.pw_gid)
        return directory

    def _initdb(self) -> None:
        assert self.directory is not None
        done = self._run(
            self.directory,
            str(self.binaries.initdb),
            "-D", str(self.directory / "data"),
            "-A", "trust",
            "-U", USER,
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresServerError(f"initdb failed (exit {done.returncode}):\n{done.stdout.strip()}")

    def _start_on_a_free_port(self) -> None:
        assert self.directory is not None
        log = self.directory / "log"
        tail = "(no port to try)"
        for port in itertools.islice(self._ports, PORT_ATTEMPTS):
            log_start = log.stat().st_size if log.exists() else 0
            options = ["-p", str(port), "-k", str(self.directory), "-c", "listen_addresses=127.0.0.1"]
            options += [arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")]
            # pg_ctl hands -o to a shell command line: quote for sh.
            done = self._run_pg_ctl(self.directory, "start", "-o", shlex.join(options), "-l", str(log))
            if done.returncode == 0:
                self.port = port
                return
            tail = _tail(log, log_start)
            if not _PORT_TAKEN.search(tail):
                raise PostgresServerError(
                    f"PostgreSQL did not start on port {port} (pg_ctl exit {done.returncode}):\n"
                    f"{done.stdout.strip()}\nlast lines of {log}:\n{tail}"
                )
        raise PostgresServerError(
            f"PostgreSQL did not start: every port tried (at most {PORT_ATTEMPTS}) was taken; last lines of {log}:\n{tail}"
        )

    def _run_pg_ctl(self, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
        data = str(directory / "data")
        return self._run(directory, str(self.binaries.pg_ctl), "-D", data, "-w", "-t", str(PG_CTL_TIMEOUT_S), *args)

    def _run(self, directory: Path, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program in ``directory``, as the server account when we are root."""
        prefix = ["runuser", "-u", SERVER_ACCOUNT, "--"] if self._as_root else []
        # cwd: postgres may not be allowed into ours (/root), and initdb warns then.
        return subprocess.run(
            [*prefix, *argv],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )


def _version_key(bindir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/9.6/bin`` -> (9, 6), so 15 sorts after 9.6; unparsable first."""
    try:
        return tuple(int(part) for part in bindir.parent.name.split("."))
    except ValueError:
        return (-1,)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _tail(log: Path, offset: int) -> str:
    """The last lines the server wrote to ``log`` after ``offset``."""
    try:
        with log.open(encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            lines = f.read().splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(log empty)"


def main() -> None:
    """``python -m meterhub.testing.postgres``: a throwaway server to try the head-end on
    PostgreSQL; prints a fresh database's URL and runs until Ctrl-C, then removes it all."""
    import signal
    import sys

    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"error: {reason}")
    with PostgresServer() as server:
        print(server.create_database("meterhub"), flush=True)
        print("a throwaway PostgreSQL server (durability off); Ctrl-C stops and removes it", file=sys.stderr)
        stops = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # taken by sigwait, not by a handler
        signal.sigwait(stops)


if __name__ == "__main__":
    main()
