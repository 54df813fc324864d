"""The `precompute` command against an external server given by DATABASE_URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

from precompute import migrations


def run(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=os.environ | {"DATABASE_URL": database_url})


def test_migrate_applies_every_file_then_reports_up_to_date(fresh_database: str) -> None:
    first = run("db", "migrate", database_url=fresh_database)
    second = run("db", "migrate", database_url=fresh_database)

    files = [m.filename for m in migrations.discover(migrations.migrations_dir())]
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in files]
    assert second.stdout.strip() == f"up to date: {len(files)} migrations already applied"


def test_start_and_stop_leave_an_external_server_alone(fresh_database: str) -> None:
    started = run("db", "start", database_url=fresh_database)
    stopped = run("db", "stop", database_url=fresh_database)
    status = run("db", "status", database_url=fresh_database)

    assert "using that server (reachable); nothing to start" in started.stdout
    assert "does not manage that server; nothing to stop" in stopped.stdout
    assert status.returncode == 0 and status.stdout.strip() == "external: reachable"


def test_an_unreachable_database_is_a_clear_error_without_the_password() -> None:
    down = "postgresql://admin:topsecret@127.0.0.1:1/precompute"

    migrate = run("db", "migrate", database_url=down)
    status = run("db", "status", database_url=down)

    assert migrate.returncode == 1
    assert migrate.stderr.startswith("error: cannot connect to postgresql://admin:***@127.0.0.1:1")
    # An external server is not ours to start: the hint points at the setting.
    assert "check DATABASE_URL and that the server is up" in migrate.stderr
    assert "precompute db start" not in migrate.stderr
    assert "topsecret" not in migrate.stderr and "Traceback" not in migrate.stderr
    assert status.returncode == 3 and "unreachable" in status.stdout


def test_settings_are_printed_with_secrets_masked(fresh_database: str) -> None:
    result = run("settings", database_url=fresh_database)

    assert result.returncode == 0
    assert "lake_uri = " in result.stdout and "pg_port = " in result.stdout
    assert "precompute-reader-dev" not in result.stdout
    assert fresh_database.split(":")[2].split("@")[0] not in result.stdout


def test_invalid_settings_are_named_by_their_variables() -> None:
    env = os.environ | {"PRECOMPUTE_ENVIRONMENT": "prod", "PRECOMPUTE_PG_PORT": "abc"}
    result = run_cli("db", "status", env=env)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: invalid settings:",
        "  PRECOMPUTE_ENVIRONMENT: Input should be 'development' or 'production' (got 'prod')",
        "  PRECOMPUTE_PG_PORT: Input should be a valid integer, unable to parse string as an"
        " integer (got 'abc')",
    ]


def test_a_database_behind_the_code_is_told_to_migrate(fresh_database: str) -> None:
    result = run("api-key", "list", database_url=fresh_database)  # never migrated
    assert result.returncode == 1
    assert "schema is older than this code" in result.stderr
    assert "run `precompute db migrate`" in result.stderr
    assert "Traceback" not in result.stderr


def test_spark_settings_that_hold_credentials_are_masked(fresh_database: str) -> None:
    conf = {
        "spark.hadoop.fs.s3a.secret.key": "s3-secret-value",
        "spark.hadoop.fs.s3a.access.key": "AKIAEXAMPLE",
        "spark.hadoop.fs.azure.sas.token": "sas-token-value",
        "spark.executor.memory": "3g",
    }
    env = os.environ | {"DATABASE_URL": fresh_database, "PRECOMPUTE_SPARK_CONF": json.dumps(conf)}
    result = run_cli("settings", env=env)

    assert result.returncode == 0, result.stderr
    assert "spark.executor.memory': '3g'" in result.stdout
    for secret in ("s3-secret-value", "AKIAEXAMPLE", "sas-token-value"):
        assert secret not in result.stdout


def test_the_stages_job_refuses_plans_it_cannot_read_in_one_line() -> None:
    """`spark-submit jobs/stages.py --plans JSON` is run by the scoring DAGs; one run by hand
    with a typo gets argparse's usage error, not a traceback."""
    bad = {
        "{bad": "argument --plans: not JSON: Expecting property name",
        '{"run_id": "x"}': "argument --plans: not a JSON list of planned runs (objects)",
        '[{"run_id": "x", "modee": "full"}]': (
            "argument --plans: planned run 1: unknown fields modee; missing fields mode, model, "
            "version, dataset, device, max_rejected_share"
        ),
    }
    for plans, message in bad.items():
        done = subprocess.run(
            [sys.executable, "jobs/stages.py", "--plans", plans],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done
        assert "Traceback" not in done.stderr and message in done.stderr.splitlines()[-1], done
