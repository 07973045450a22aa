"""A real, throwaway PostgreSQL server for tests and benchmarks (Debian's packaged binaries).

``PostgresServer.start()`` runs ``initdb`` and ``pg_ctl`` from the newest
``/usr/lib/postgresql/<version>/bin`` in a fresh temp dir, listening on 127.0.0.1 on a free
port with ``trust`` auth and its unix socket in that temp dir. PostgreSQL refuses to run as
root, so as root every server command runs as the ``postgres`` system user via ``runuser``.
``stop()`` is ``pg_ctl stop -m immediate`` and removes the temp dir.

Fixtures (import them into a conftest or test module):
``postgres_dsn`` (session) is a DSN to a fresh database on the session's server;
``audit_dsn`` (function) is a DSN to a new ``test_<uuid>`` database on that server.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

__all__ = ["PostgresServer", "PostgresUnavailable", "audit_dsn", "find_bindir", "postgres_dsn"]

PG_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "install it with 'apt-get install postgresql' (the CI setup does)"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why and what to install."""


def find_bindir(root: Path = PG_ROOT) -> Path:
    """The ``bin`` directory of the newest installed PostgreSQL major version."""
    versions = []
    if root.is_dir():
        for child in root.iterdir():
            if re.fullmatch(r"\d+(\.\d+)?", child.name) and (child / "bin" / "initdb").exists():
                versions.append((tuple(int(p) for p in child.name.split(".")), child / "bin"))
    if not versions:
        raise PostgresUnavailable(f"no PostgreSQL server binaries under {root}; {INSTALL_HINT}")
    return max(versions)[1]


#: Starts of one ``PostgresServer.start`` (each on a newly picked port) before it gives up.
START_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throwaway PostgreSQL cluster; use ``start()`` and ``stop()`` (or ``with``)."""

    host = "127.0.0.1"
    user = "postgres"

    def __init__(self, root: Path, bindir: Path, port: int) -> None:
        self.root = root
        self.bindir = bindir
        self.port = port
        self.data = root / "data"
        self.logfile = root / "server.log"
        self._stopped = False

    @staticmethod
    def _as_server_user(argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", "postgres", "--", *argv]

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_server_user(list(argv)),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )

    @classmethod
    def start(cls, *, durable: bool = False,
              ports: Callable[[], int] = _free_port) -> PostgresServer:
        """Initialise and start a server. ``durable=False`` turns fsync off (tests only).
        ``ports`` picks the port of each attempt: PostgreSQL cannot bind port 0 and name the
        one it got, so a port free when picked may be taken before it binds; the start is
        then made again on the next pick."""
        bindir = find_bindir()
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, and PostgreSQL refuses root, but there is no 'postgres' "
                    f"system user to run it as; {INSTALL_HINT} (it creates the user)"
                ) from None
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root but 'runuser' is not installed")
        root = Path(tempfile.mkdtemp(prefix="wingman-pg-"))
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        server = cls(root, bindir, 0)
        try:
            init = server._run(
                str(bindir / "initdb"), "-D", str(server.data), "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
            )
            if init.returncode != 0:
                raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-2000:]}")
            server._start_listening(durable, ports)
        except BaseException:
            server._stopped = True
            shutil.rmtree(root, ignore_errors=True)
            raise
        atexit.register(server.stop)
        return server

    def _start_listening(self, durable: bool, ports: Callable[[], int]) -> None:
        options = [f"-c unix_socket_directories={self.root}", "-c listen_addresses=127.0.0.1"]
        if not durable:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        last = ""
        for _attempt in range(START_ATTEMPTS):  # a port may be taken between pick and bind
            self.port = ports()
            started = self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
                "-w", "-t", "60", "-o", " ".join([*options, f"-p {self.port}"]), "start",
            )
            if started.returncode == 0:
                self._wait_ready()
                return
            last = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            last = last or started.stderr.strip()
        raise PostgresUnavailable(f"PostgreSQL did not start: {last}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database (default ``test_<uuid>``) and return its DSN."""
        name = name or f"test_{uuid.uuid4().hex}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        """Stop immediately (no checkpoint) and remove the temp dir; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        pid = self.postmaster_pid()
        try:
            result = self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                "-t", "30", "stop", timeout=60,
            )
            failed = result.returncode != 0
        except subprocess.TimeoutExpired:
            failed = True
        if failed and pid is not None:
            # Our own postmaster did not stop: kill it so no stray server outlives the tests.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN to a fresh database on a PostgreSQL server started once per session."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")
    try:
        yield server.create_database("wingman_session")
    finally:
        server.stop()


@pytest.fixture
def audit_dsn(postgres_dsn: str) -> Iterator[str]:
    """A DSN to a brand-new ``test_<uuid>`` database on the session server."""
    params = conninfo_to_dict(postgres_dsn)
    name = f"test_{uuid.uuid4().hex}"
    admin = f"postgresql://{params['user']}@{params['host']}:{params['port']}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://{params['user']}@{params['host']}:{params['port']}/{name}"
    finally:
        with contextlib.suppress(psycopg.Error), psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
