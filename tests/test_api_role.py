"""The lookup API's own role, precompute_api: what the API needs and nothing more."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from api_support import FEATURES, Api, seeded_database, served
from conftest import fetch_all
from psycopg2 import errors

from lookup_api.core import keys
from precompute import database
from precompute.settings import Settings

OTHER_KEY = keys.new_key()


@pytest.fixture(scope="module")
def url(admin_url: str, settings: Settings) -> Iterator[str]:
    """The seeded database, plus a score request of another key (with features)."""
    with seeded_database(admin_url, settings) as url:
        writer = database.with_role(url, "writer", settings)
        fetch_all(
            writer,
            "INSERT INTO precompute.api_keys (name, key_prefix, key_sha256, scopes)"
            " VALUES ('other', %s, %s, '{score-requests:write}')",
            (OTHER_KEY[:10], keys.key_hash(OTHER_KEY)),
        )
        fetch_all(
            writer,
            "INSERT INTO precompute.score_requests (model_id, entity_id, features, api_key_id)"
            " SELECT 1, 'theirs', '{\"age\": 50}', key_id FROM precompute.api_keys",
        )
        yield url


@pytest.fixture
def api_role(url: str, settings: Settings) -> Iterator[psycopg2.extensions.connection]:
    conn = database.connect(database.with_role(url, "api", settings))
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE precompute.api_keys SET revoked_at = NULL",
        "DELETE FROM precompute.api_keys",
        "SELECT key_sha256 FROM precompute.api_keys",
        "SELECT count(*) FROM precompute.api_keys",
        "UPDATE precompute.runs SET state = 'failed'",
        "UPDATE precompute.run_reports SET html = ''",
        "INSERT INTO precompute.run_reports (run_id, html) VALUES ('seed-run', '')",
        "DELETE FROM precompute.run_reports",
        "DELETE FROM precompute.predictions",
        "TRUNCATE precompute.predictions",
        "UPDATE precompute.model_aliases SET version_id = version_id",
        "INSERT INTO precompute.models (name, task) VALUES ('m', 'regression')",
        "SELECT bundle_uri FROM precompute.model_versions",
        "SELECT features FROM precompute.score_requests",
        "SELECT callback_url FROM precompute.score_requests",
        "UPDATE precompute.score_requests SET state = 'done', score = 1",
        "DELETE FROM precompute.score_requests",
        "CREATE TABLE precompute.mine (x int)",
        "CREATE TABLE analytics.mine (x int)",
        "CREATE TABLE staging.mine (x int)",
        "CREATE TABLE serving.mine (x int)",
        "CREATE TABLE public.mine (x int)",
        "CREATE TEMP TABLE mine (x int)",
        "CREATE SCHEMA mine",
        "CREATE FUNCTION public.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ],
)
def test_the_api_role_is_refused_what_the_api_does_not_need(
    api_role: psycopg2.extensions.connection, statement: str
) -> None:
    with api_role.cursor() as cur, pytest.raises(errors.InsufficientPrivilege):
        cur.execute(statement)


def test_the_api_role_checks_keys_without_reading_the_key_table(
    api_role: psycopg2.extensions.connection,
) -> None:
    with api_role.cursor() as cur:
        cur.execute("SELECT name FROM precompute.api_key_for(%s)", (keys.key_hash(OTHER_KEY),))
        assert cur.fetchall() == [("other",)]


def test_the_api_serves_and_queues_connected_as_its_own_role(
    url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with served(url, tmp_path_factory.mktemp("role") / "api.log") as api:
        _use_every_route(api)
        roles = fetch_all(
            url,
            "SELECT DISTINCT usename FROM pg_stat_activity"
            " WHERE application_name = 'precompute-lookup-api' AND datname = current_database()",
        )
    assert roles == [("precompute_api",)]


def _use_every_route(api: Api) -> None:
    assert api.get("/v1/predictions/c0", api.reader_key, model="churn").json()["score"] == 0.9
    batch = api.post(
        "/v1/predictions:batchGet", api.reader_key, params={"model": "churn"}, json={"ids": ["c1"]}
    )
    assert batch.status_code == 200
    assert api.get("/v1/models", api.reader_key).status_code == 200
    assert api.get("/v1/models/churn", api.reader_key).status_code == 200
    assert api.get("/v1/runs/seed-run", api.reader_key).status_code == 200
    submitted = api.post(
        "/v1/score-requests",
        api.submit_key,
        json={"model": "churn", "entity_id": "role-1", "features": FEATURES},
        headers={"Idempotency-Key": "role-1"},
    )
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["request_id"]
    assert api.get(f"/v1/score-requests/{request_id}", api.submit_key).status_code == 200
    assert api.get("/readyz").status_code == 200
