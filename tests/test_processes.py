"""`precompute down` stops what the project started, and only that: a PID file whose process has
gone (and whose PID the system gave to another program) never signals that program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

from local.processes import Service
from precompute.process_identity import start_time


def down(var_dir: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    # An external DATABASE_URL, so `down` leaves the shared embedded server alone.
    env = os.environ | {"PRECOMPUTE_VAR_DIR": str(var_dir), "DATABASE_URL": database_url}
    return run_cli("down", env=env)


def test_down_stops_a_server_it_started_with_its_children(
    tmp_path: Path, fresh_database: str
) -> None:
    service = Service("airflow", tmp_path / "run" / "airflow.pid", tmp_path / "log" / "a.log")
    # Started by a process that exits, as `precompute demo` does: the server outlives it.
    starter = (
        "import os; from pathlib import Path; from local.processes import Service; "
        f"s = Service('airflow', Path({str(service.pid_file)!r}), Path({str(service.log)!r})); "
        "print(s.start(['sh', '-c', 'sleep 300 & sleep 300'], os.environ))"
    )
    started = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True)
    pid = int(started.stdout)
    assert service.pid() == pid

    done = down(tmp_path, fresh_database)

    assert done.returncode == 0, done.stderr
    assert f"airflow: stopped (was PID {pid})" in done.stdout
    assert start_time(pid) is None
    assert not service.pid_file.exists()


def test_down_never_signals_a_program_that_took_over_a_stale_pid(
    tmp_path: Path, fresh_database: str
) -> None:
    # Another program now holds the PID in the file: same number, another start time.
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / "airflow.pid").write_text(f"{bystander.pid} 1")
        (run_dir / "lookup-api.pid").write_text(str(bystander.pid))  # an older file: no time

        done = down(tmp_path, fresh_database)

        assert done.returncode == 0, done.stderr
        assert "airflow: not running (removed a stale PID file)" in done.stdout
        assert "lookup-api: not running (removed a stale PID file)" in done.stdout
        assert bystander.poll() is None, "down killed a process it did not start"
    finally:
        bystander.kill()
        bystander.wait()
