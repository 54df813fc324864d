"""PostgreSQL's own programs (initdb, pg_ctl, postgres) as the embedded server runs them: from
the `pgserver` wheel, and under root as the unprivileged system user `precompute`, since
PostgreSQL refuses to run as root."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import subprocess
from pathlib import Path

from precompute.errors import PrecomputeError

SERVER_USER = "precompute"


class EmbeddedServerError(PrecomputeError):
    """The embedded PostgreSQL server could not be started, stopped or reached."""


def binaries_dir() -> Path:
    """Where pgserver's bundled PostgreSQL programs are installed."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(
            "the pgserver package is not installed: run `make setup`, or set DATABASE_URL"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def server_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as under root (created on first use)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVER_USER)
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SERVER_USER,
        ],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(SERVER_USER)


def check_reachable(data_dir: Path, user: pwd.struct_passwd) -> None:
    """Fail clearly when the server user cannot reach the data folder or the programs."""
    probe = subprocess.run(
        ["test", "-w", str(data_dir), "-a", "-x", str(binaries_dir() / "postgres")],
        user=user.pw_uid,
        group=user.pw_gid,
        check=False,
    )
    if probe.returncode != 0:
        raise EmbeddedServerError(
            f"PostgreSQL refuses to run as root, so it runs as the user '{user.pw_name}', "
            f"who cannot reach {data_dir} or {binaries_dir()}: a parent folder is not "
            "searchable by other users (a home folder with mode 700?). Move the project, "
            "or set PRECOMPUTE_PG_DIR to a folder that user can reach."
        )


def run_as_server_user(command: list[str], what: str, root: Path, log_file: Path) -> None:
    """Run one of the programs in `root`; on failure, its output and the server log's tail."""
    user = server_user()
    # pg_ctl start leaves the server running: its output must not be a pipe we wait on.
    output = root / f".{what.replace(' ', '-')}.out"
    with output.open("w") as out:
        if user is not None:
            os.chown(output, user.pw_uid, user.pw_gid)
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            cwd=root,
            check=False,
        )
    text = output.read_text().strip()
    output.unlink(missing_ok=True)
    if result.returncode != 0:
        log_tail = ""
        if log_file.is_file():
            log_tail = "\n".join(log_file.read_text().splitlines()[-15:])
        raise EmbeddedServerError(
            f"{what} failed (exit {result.returncode}) in {root}:\n{text}"
            + (f"\n--- last lines of {log_file} ---\n{log_tail}" if log_tail else "")
        )
