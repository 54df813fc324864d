"""The embedded PostgreSQL server the project starts and owns when DATABASE_URL is not set.

It uses the PostgreSQL 16 binaries that the `pgserver` wheel ships, so a fresh machine needs no
apt packages and every machine runs the same server version. The project drives them with
`initdb`/`pg_ctl` itself (not pgserver's Python API, which stops the server when the last Python
process using it exits): the server outlives any one command, like a system service.

PostgreSQL refuses to run as root, so under root the server runs as the unprivileged system user
`precompute`, which owns the data folder (`local/pg_programs.py` runs the programs).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from local.pg_programs import (
    EmbeddedServerError,
    binaries_dir,
    check_reachable,
    run_as_server_user,
    server_user,
)
from precompute.database import EMBEDDED_PASSWORD_FILE, EMBEDDED_SUPERUSER, embedded_admin_url
from precompute.private_files import write_private
from precompute.settings import Settings

START_TIMEOUT_S = 60

# Written on every start so that tuning changes apply without a re-init. Loopback only.
CONFIG_TEMPLATE = """\
# Managed by precompute (embedded_pg.py); rewritten at each start.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
max_connections = 100
shared_buffers = '256MB'
password_encryption = 'scram-sha-256'
logging_collector = off
log_min_messages = warning
"""


@dataclass(frozen=True)
class ServerStatus:
    """What `precompute db status` reports."""

    state: str  # "running", "stopped" or "not initialised"
    pid: int | None
    detail: str


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    """The embedded server described by the settings (whether or not it is running)."""
    return EmbeddedPostgres(settings.pg_dir, settings.pg_port, settings.pg_database)


class EmbeddedPostgres:
    """One PostgreSQL server with its data, log and admin password under `root`."""

    def __init__(self, root: Path, port: int, database: str) -> None:
        self.root = root
        self.port = port
        self.database = database
        self.data_dir = root / "data"
        self.log_file = root / "server.log"
        self.password_file = root / EMBEDDED_PASSWORD_FILE

    # ---- queries -------------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def admin_url(self, database: str | None = None) -> str:
        """Superuser URL over loopback TCP, with the password generated at init."""
        return embedded_admin_url(self.root, self.port, database or self.database)

    def status(self) -> ServerStatus:
        if not self.initialised:
            return ServerStatus("not initialised", None, f"no data folder at {self.data_dir}")
        pid, note = self._server_pid()
        if pid is not None:
            return ServerStatus("running", pid, f"PID {pid}, 127.0.0.1:{self._running_port()}")
        return ServerStatus("stopped", None, note or f"data in {self.data_dir}")

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Start the server (initialising it first if needed); harmless when already running."""
        with self._exclusive():
            return self._start()

    def stop(self) -> str:
        """Stop the server with a fast shutdown; harmless when it is not running."""
        with self._exclusive():
            return self._stop()

    # ---- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise start/stop: `make test` and `make demo` (or two DAG tasks) may race."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _start(self) -> str:
        notes: list[str] = []
        if not self.initialised:
            self._initdb()
            notes.append(f"initialised a new cluster in {self.data_dir}")
        pid, stale_note = self._server_pid()
        if pid is not None:
            running_port = self._running_port()
            if running_port != self.port:
                raise EmbeddedServerError(
                    f"the embedded server (PID {pid}) is running on port {running_port}, "
                    f"but PRECOMPUTE_PG_PORT is {self.port}: run `precompute db stop` first"
                )
            self._ensure_database()
            return f"already running (PID {pid}) on 127.0.0.1:{self.port}"
        if stale_note:
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
            notes.append(stale_note + "; removed it")
        self._refuse_port_in_use()
        (self.data_dir / "precompute.conf").write_text(CONFIG_TEMPLATE.format(port=self.port))
        self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log_file))
        self._ensure_database()
        pid, _ = self._server_pid()
        notes.append(f"started (PID {pid}) on 127.0.0.1:{self.port}")
        return "; ".join(notes)

    def _stop(self) -> str:
        if not self.initialised:
            return "not initialised: nothing to stop"
        pid, _ = self._server_pid()
        if pid is None:
            return "not running"
        self._pg_ctl("stop", "-w", "-m", "fast", "-t", str(START_TIMEOUT_S))
        return f"stopped (was PID {pid})"

    def _server_pid(self) -> tuple[int | None, str | None]:
        """The live postmaster's PID, or None with a note when postmaster.pid is stale."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return None, None
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return None, f"{pid_file} is unreadable (a crash mid-write?)"
        if not _alive(pid):
            return None, f"stale {pid_file}: PID {pid} is not running (server crashed?)"
        command = _process_command(pid)
        if "postgres" not in command:
            return None, (
                f"stale {pid_file}: PID {pid} now belongs to another program ({command or '?'})"
            )
        return pid, None

    def _running_port(self) -> int:
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else self.port

    def _refuse_port_in_use(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: ignore connections in TIME_WAIT, but still fail on a live listener.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise EmbeddedServerError(
                    f"127.0.0.1:{self.port} is already in use by another program, so the "
                    f"embedded PostgreSQL cannot listen there ({exc.strerror}). Stop that "
                    "program or set PRECOMPUTE_PG_PORT to a free port."
                ) from None

    def _initdb(self) -> None:
        user = server_user()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-made folder from an interrupted init
        self.data_dir.mkdir(mode=0o700)
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            check_reachable(self.data_dir, user)
        password = secrets.token_urlsafe(24)
        pwfile = self.root / ".initdb-password"
        write_private(pwfile, password + "\n")
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            run_as_server_user(
                [
                    str(binaries_dir() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    f"--username={EMBEDDED_SUPERUSER}",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                "initdb",
                self.root,
                self.log_file,
            )
        except EmbeddedServerError:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:  # appending keeps its owner
            conf.write("\ninclude_if_exists = 'precompute.conf'\n")
        write_private(self.password_file, password + "\n")

    def _pg_ctl(self, *args: str) -> None:
        command = [str(binaries_dir() / "pg_ctl"), "-D", str(self.data_dir), *args]
        run_as_server_user(command, f"pg_ctl {args[0]}", self.root, self.log_file)

    def _ensure_database(self) -> None:
        """Create the project's database on first start."""
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = psycopg2.connect(self.admin_url("postgres"), connect_timeout=5)
                break
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"the embedded server started but refuses connections: {exc}"
                    ) from None
                time.sleep(0.2)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        finally:
            conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()
