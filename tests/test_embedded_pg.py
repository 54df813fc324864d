"""The embedded PostgreSQL server: `precompute db start|stop|status|url` as documented.

Each test runs its own server in a private folder on a free port, through the real CLI.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import fetch_all, free_port, run_cli

from local.embedded_pg import EmbeddedPostgres
from precompute import database
from precompute.database import DatabaseUnavailable


@dataclass
class Cli:
    pg_dir: Path
    port: int

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        return env | {"PRECOMPUTE_PG_DIR": str(self.pg_dir), "PRECOMPUTE_PG_PORT": str(self.port)}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env)

    @property
    def server(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.pg_dir, self.port, "precompute")


@pytest.fixture
def cli(shared_tmp: Path) -> Iterator[Cli]:
    tool = Cli(shared_tmp / "pg", free_port())
    yield tool
    tool("db", "stop")


def query(url: str, statement: str) -> object:
    rows = fetch_all(url, statement)
    return rows[0][0] if rows else None


def test_status_before_the_first_start_says_not_initialised(cli: Cli) -> None:
    result = cli("db", "status")
    assert result.returncode == 3
    assert result.stdout.startswith("not initialised")


def test_start_initialises_and_serves_a_real_database(cli: Cli) -> None:
    result = cli("db", "start")
    assert result.returncode == 0, result.stderr
    assert "initialised a new cluster" in result.stdout
    assert f"on 127.0.0.1:{cli.port}" in result.stdout

    url = cli("db", "url").stdout.strip()
    assert f"@127.0.0.1:{cli.port}/precompute" in url
    assert query(url, "SELECT current_database()") == "precompute"


def test_starting_twice_is_harmless(cli: Cli) -> None:
    cli("db", "start")
    pid = cli.server.status().pid

    again = cli("db", "start")

    assert again.returncode == 0, again.stderr
    assert f"already running (PID {pid})" in again.stdout
    assert cli.server.status().pid == pid


def test_stop_stops_and_status_reports_it(cli: Cli) -> None:
    cli("db", "start")
    url = cli("db", "url").stdout.strip()

    stopped = cli("db", "stop")
    status = cli("db", "status")

    assert stopped.returncode == 0 and stopped.stdout.startswith("database: stopped")
    assert status.returncode == 3 and status.stdout.startswith("stopped")
    with pytest.raises(database.DatabaseUnavailable, match="cannot connect"):
        database.connect(url)
    assert cli("db", "stop").stdout.strip() == "database: not running"


def test_data_survives_a_restart(cli: Cli) -> None:
    cli("db", "start")
    url = cli("db", "url").stdout.strip()
    query(url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")

    cli("db", "stop")
    cli("db", "start")

    assert query(url, "SELECT x FROM kept") == 42


def test_a_stale_pid_file_of_a_dead_server_is_reported_and_replaced(cli: Cli) -> None:
    cli("db", "start")
    cli("db", "stop")
    child = subprocess.Popen(["true"])
    child.wait()  # its PID is free now: a server that died
    (cli.pg_dir / "data" / "postmaster.pid").write_text(f"{child.pid}\n")

    status = cli("db", "status")
    started = cli("db", "start")

    assert f"stale {cli.pg_dir / 'data' / 'postmaster.pid'}: PID {child.pid}" in status.stdout
    assert started.returncode == 0, started.stderr
    assert "removed it" in started.stdout and "started" in started.stdout


def test_a_pid_file_naming_another_live_program_is_reported_and_replaced(cli: Cli) -> None:
    cli("db", "start")
    cli("db", "stop")
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            (cli.pg_dir / "data" / "postmaster.pid").write_text(f"{other.pid}\n")
            started = cli("db", "start")
        finally:
            other.kill()

    assert started.returncode == 0, started.stderr
    assert f"PID {other.pid} now belongs to another program (sleep 60)" in started.stdout


def test_a_port_in_use_is_refused_with_a_clear_message(cli: Cli) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cli.port))
        squatter.listen()
        result = cli("db", "start")

    assert result.returncode == 1
    assert f"127.0.0.1:{cli.port} is already in use by another program" in result.stderr
    assert "PRECOMPUTE_PG_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_running_server_on_another_port_is_not_silently_reused(cli: Cli) -> None:
    cli("db", "start")
    moved = Cli(cli.pg_dir, free_port())

    result = moved("db", "start")

    assert result.returncode == 1
    assert f"running on port {cli.port}" in result.stderr


def test_url_before_init_is_a_clear_error(cli: Cli) -> None:
    # The URL is the core's (every stage reads it), so its error is the core's too.
    with pytest.raises(DatabaseUnavailable, match="not initialised: run `precompute db start`"):
        cli.server.admin_url()


def test_concurrent_starts_do_not_race(cli: Cli) -> None:
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", "db", "start"],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in starts]

    assert [p.returncode for p in starts] == [0, 0, 0], outputs
    stdouts = [out for out, _ in outputs]
    assert sum("initialised a new cluster" in out for out in stdouts) == 1
    assert sum("already running" in out for out in stdouts) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_a_folder_the_server_user_cannot_reach_is_refused_clearly(shared_tmp: Path) -> None:
    private = shared_tmp / "home"
    private.mkdir(mode=0o700)  # like a checkout inside /root
    blocked = Cli(private / "pg", free_port())

    result = blocked("db", "start")

    assert result.returncode == 1
    assert "runs as the user 'precompute', who cannot reach" in result.stderr
    assert "PRECOMPUTE_PG_DIR" in result.stderr and "Traceback" not in result.stderr
