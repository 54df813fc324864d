"""A real lookup API for the tests that take a client's path: `precompute api` (uvicorn) in a
child process, on a fresh migrated database with a model, two versions and a few predictions."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from conftest import create_database, created_key, drop_database, fetch_all, run_cli, serve_api

from precompute import database, migrations, serving_store
from precompute.settings import Settings


def models_seed(versions: int) -> str:
    """SQL: the model `churn` with `versions` versions, whose bundles are nowhere (what is
    served is seeded directly, never scored)."""
    return f"""
INSERT INTO precompute.models (name, task) VALUES ('churn', 'classification');
INSERT INTO precompute.model_versions
    (model_id, version, model_kind, bundle_uri, bundle_sha256, input_schema)
SELECT model_id, v, 'logistic_regression', 'file:///nowhere/v' || v || '.zip', repeat('0', 64),
       '{{"dataset": "customers", "version": 1}}'
  FROM precompute.models, generate_series(1, {versions}) v;
"""


SEED = (
    models_seed(2)
    + """
INSERT INTO precompute.model_aliases (model_id, alias, version_id)
SELECT model_id, CASE version WHEN 1 THEN 'champion' ELSE 'challenger' END, version_id
  FROM precompute.model_versions;
INSERT INTO precompute.runs (run_id, mode, batch_id, state, rows_scored, rows_published)
VALUES ('seed-run', 'incremental', 'b1', 'succeeded', 3, 3);
"""
)
# Served scores of entities c0, c1, c2 by version id.
SCORES = {1: (0.9, 0.2, 0.6), 2: (0.1, 0.8, 0.3)}
FEATURES = {
    "age": 41.0,
    "tenure_months": 12,
    "monthly_spend": 55.5,
    "support_calls": 2,
    "discount_rate": None,
    "plan": "plus",
    "region": "west",
    "autopay": True,
}


@dataclass(frozen=True)
class Api:
    base: str
    env: dict[str, str]
    log: Path
    admin_url: str
    reader_key: str
    submit_key: str

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        return httpx.get(self.base + path, params=params, headers=auth(key), timeout=10)

    def post(self, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = auth(key) | kwargs.pop("headers", {})
        return httpx.post(self.base + path, headers=headers, timeout=10, **kwargs)

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def new_key(self, name: str, *scopes: str) -> str:
        """A new API key (`precompute api-key create`) with these scopes (default: read)."""
        flags = [arg for scope in scopes for arg in ("--scope", scope)]
        return created_key(run_cli("api-key", "create", name, *flags, env=self.env))


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@contextmanager
def seeded_database(admin_url: str, settings: Settings) -> Iterator[str]:
    """A migrated database with the seed and its served predictions; its admin URL."""
    name = f"test_api_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    try:
        migrations.migrate(url, settings)
        writer = database.with_role(url, "writer", settings)
        fetch_all(writer, SEED)
        for version_id, scores in SCORES.items():
            fetch_all(
                writer,
                f"CREATE TABLE {serving_store.partition(version_id)} PARTITION OF "
                f"{serving_store.PREDICTIONS} FOR VALUES IN ({version_id})",
            )
            for i, score in enumerate(scores):
                fetch_all(
                    writer,
                    "INSERT INTO precompute.predictions VALUES (%s, %s, %s, %s, now(), 'seed-run')",
                    (version_id, f"c{i}", score, "true" if score > 0.5 else "false"),
                )
        yield url
    finally:
        drop_database(admin_url, name)


@contextmanager
def served(
    url: str, log: Path, keys: tuple[str, str] = ("reader-app", "submitter"), **variables: str
) -> Iterator[Api]:
    """The API on the database at `url` (admin URL) with these extra settings, and two new keys
    named `keys`: one to read, one to submit score requests."""
    env = os.environ | {"DATABASE_URL": url} | variables
    reader_key = created_key(run_cli("api-key", "create", keys[0], env=env))
    submit_key = created_key(
        run_cli("api-key", "create", keys[1], "--scope", "score-requests:write", env=env)
    )
    with serve_api(env, log) as base:
        yield Api(base, env, log, url, reader_key, submit_key)


def server_pid(port: int) -> int:
    """The process of `precompute api --port PORT` (one worker: uvicorn serves in it)."""
    wanted = ["api", "--port", str(port)]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "cli" in args and args[-len(wanted) - 1 : -1] == wanted:
            return int(proc.name)
    raise AssertionError(f"no API process listening on port {port}")


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")
