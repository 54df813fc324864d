"""The lookup API as clients meet it: a real uvicorn server (`precompute api` in a child
process) on the real database, with serving rows inserted through the writer role."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import create_database, drop_database, fetch_all, run_cli

from precompute import database, migrations
from precompute.settings import Settings


@dataclass(frozen=True)
class Api:
    base: str
    env: dict[str, str]
    log: Path
    admin_url: str
    reader_key: str
    submit_key: str

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        return httpx.get(self.base + path, params=params, headers=_auth(key), timeout=10)

    def post(self, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = _auth(key) | kwargs.pop("headers", {})
        return httpx.post(self.base + path, headers=headers, timeout=10, **kwargs)


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SEED = """
INSERT INTO precompute.models (name, task) VALUES ('churn', 'classification');
INSERT INTO precompute.model_versions
    (model_id, version, model_kind, bundle_uri, bundle_sha256, input_schema)
SELECT model_id, v, 'logistic_regression', 'file:///nowhere/v' || v || '.zip', repeat('0', 64), '{}'
  FROM precompute.models, generate_series(1, 2) v;
INSERT INTO precompute.model_aliases (model_id, alias, version_id)
SELECT model_id, CASE version WHEN 1 THEN 'champion' ELSE 'challenger' END, version_id
  FROM precompute.model_versions;
INSERT INTO precompute.runs (run_id, mode, batch_id, state, rows_scored, rows_published)
VALUES ('seed-run', 'incremental', 'b1', 'succeeded', 3, 3);
"""


@pytest.fixture(scope="module")
def api(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    name = f"test_api_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    migrations.migrate(url, settings)
    writer = database.with_role(url, "writer", settings)
    fetch_all(writer, SEED)
    for version_id, scores in ((1, (0.9, 0.2, 0.6)), (2, (0.1, 0.8, 0.3))):
        fetch_all(
            writer,
            f"CREATE TABLE serving.predictions_v{version_id} PARTITION OF precompute.predictions "
            f"FOR VALUES IN ({version_id})",
        )
        for i, score in enumerate(scores):
            fetch_all(
                writer,
                "INSERT INTO precompute.predictions VALUES (%s, %s, %s, %s, now(), 'seed-run')",
                (version_id, f"c{i}", score, "true" if score > 0.5 else "false"),
            )
    env = os.environ | {
        "DATABASE_URL": url,
        "PRECOMPUTE_API_KEY_CACHE_SECONDS": "0",  # revocation is seen at once
    }
    reader_key = _created_key(run_cli("api-key", "create", "reader-app", env=env))
    submit_key = _created_key(
        run_cli("api-key", "create", "submitter", "--scope", "score-requests:write", env=env)
    )
    port = free_port()
    log = tmp_path_factory.mktemp("api") / "api.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "precompute.cli", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield Api(base, env, log, url, reader_key, submit_key)
    finally:
        server.terminate()
        server.wait(timeout=10)
        drop_database(admin_url, name)


def _created_key(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_health_readiness_and_the_openapi_document(api: Api) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/predictions/{entity_id}", "/v1/predictions:batchGet", "/v1/models"} <= set(paths)
    assert api.get("/docs").status_code == 200


def test_only_a_hash_of_a_key_is_stored_and_listing_shows_a_prefix(api: Api) -> None:
    stored = fetch_all(api.admin_url, "SELECT key_sha256 FROM precompute.api_keys")
    assert (hashlib.sha256(api.reader_key.encode()).hexdigest(),) in stored
    listed = run_cli("api-key", "list", env=api.env)
    assert listed.returncode == 0 and "reader-app" in listed.stdout
    assert api.reader_key not in listed.stdout and api.reader_key[:10] in listed.stdout


def test_a_lookup_answers_from_the_champion_unless_asked_otherwise(api: Api) -> None:
    hit = api.get("/v1/predictions/c0", api.reader_key, model="churn")
    assert hit.status_code == 200
    body = hit.json()
    assert {k: body[k] for k in ("entity_id", "model", "version", "score", "label", "run_id")} == {
        "entity_id": "c0",
        "model": "churn",
        "version": 1,
        "score": 0.9,
        "label": "true",
        "run_id": "seed-run",
    }
    assert body["scored_at"]
    assert (
        api.get("/v1/predictions/c0", api.reader_key, model="churn", version=2).json()["score"]
        == 0.1
    )
    assert (
        api.get("/v1/predictions/c0", api.reader_key, model="churn", alias="challenger").json()[
            "version"
        ]
        == 2
    )


def test_a_promotion_is_seen_by_the_next_lookup(api: Api) -> None:
    writer = database.with_role(api.admin_url, "writer", Settings())
    move = "UPDATE precompute.model_aliases SET version_id = %s WHERE alias = 'champion'"
    try:
        fetch_all(writer, move, (2,))
        assert api.get("/v1/predictions/c1", api.reader_key, model="churn").json()["score"] == 0.8
    finally:
        fetch_all(writer, move, (1,))
    assert api.get("/v1/predictions/c1", api.reader_key, model="churn").json()["score"] == 0.2


def test_batch_get_returns_the_found_and_lists_the_missing(api: Api) -> None:
    response = api.post(
        "/v1/predictions:batchGet",
        api.reader_key,
        params={"model": "churn"},
        json={"ids": ["c2", "nobody", "c0", "c2"]},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == ("churn", 1)
    assert sorted(p["entity_id"] for p in body["predictions"]) == ["c0", "c2"]
    assert body["missing"] == ["nobody"]


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/predictions/nobody", {"model": "churn"}, 404, "not_scored"),
        ("/v1/predictions/c0", {"model": "nope"}, 404, "unknown_model"),
        ("/v1/predictions/c0", {"model": "churn", "alias": "gold"}, 404, "unknown_version"),
        ("/v1/predictions/c0", {"model": "churn", "version": 9}, 404, "unknown_version"),
        ("/v1/predictions/c0", {}, 400, "invalid_request"),
        ("/v1/predictions/c0", {"model": "churn", "version": "x"}, 400, "invalid_request"),
        ("/v1/predictions/a%01b", {"model": "churn"}, 400, "invalid_entity_id"),
        ("/v1/predictions/" + "x" * 257, {"model": "churn"}, 400, "invalid_entity_id"),
        ("/v1/models/nope", {}, 404, "unknown_model"),
        ("/v1/runs/nope", {}, 404, "unknown_run"),
        ("/v1/nothing-here", {}, 404, "not_found"),
    ],
)
def test_bad_requests_get_a_4xx_saying_what_is_wrong(
    api: Api, path: str, params: dict[str, Any], status: int, code: str
) -> None:
    response = api.get(path, api.reader_key, **params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_malformed_and_oversized_batches_are_refused(api: Api) -> None:
    def post(**kwargs: Any) -> httpx.Response:
        return api.post(
            "/v1/predictions:batchGet", api.reader_key, params={"model": "churn"}, **kwargs
        )

    broken = post(content=b'{"ids": [', headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_request"
    wrong = post(json={"ids": "c0"})
    assert wrong.status_code == 400
    too_many = post(json={"ids": [f"c{i}" for i in range(1001)]})
    assert too_many.status_code == 400
    assert "limit is 1000" in too_many.json()["error"]["message"]
    empty_id = post(json={"ids": ["c0", ""]})
    assert empty_id.status_code == 400 and "empty" in empty_id.json()["error"]["message"]


def test_keys_are_required_and_scoped(api: Api) -> None:
    missing = api.get("/v1/predictions/c0", None, model="churn")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthenticated"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = api.get("/v1/predictions/c0", "pc_not-a-key", model="churn")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_key"
    scoped = api.get("/v1/predictions/c0", api.submit_key, model="churn")
    assert scoped.status_code == 403 and "predictions:read" in scoped.json()["error"]["message"]

    key = _created_key(run_cli("api-key", "create", "short-lived", env=api.env))
    assert api.get("/v1/models", key).status_code == 200
    assert run_cli("api-key", "revoke", "short-lived", env=api.env).returncode == 0
    assert api.get("/v1/models", key).status_code == 401


def test_models_and_runs(api: Api) -> None:
    models = api.get("/v1/models", api.reader_key).json()
    assert models == [
        {
            "name": "churn",
            "task": "classification",
            "description": "",
            "aliases": {"champion": 1, "challenger": 2},
            "versions": 2,
        }
    ]
    detail = api.get("/v1/models/churn", api.reader_key).json()
    assert [(v["version"], v["aliases"]) for v in detail["versions"]] == [
        (1, ["champion"]),
        (2, ["challenger"]),
    ]
    run = api.get("/v1/runs/seed-run", api.reader_key).json()
    assert (run["state"], run["rows_published"], run["stages"]) == ("succeeded", 3, [])


def test_metrics_count_requests_hits_and_misses(api: Api) -> None:
    api.get("/v1/predictions/c0", api.reader_key, model="churn")
    api.get("/v1/predictions/nobody", api.reader_key, model="churn")
    text = api.get("/metrics").text
    assert (
        'lookup_requests_total{method="GET",route="/v1/predictions/{entity_id}",status="200"}'
        in text
    )
    assert (
        'lookup_requests_total{method="GET",route="/v1/predictions/{entity_id}",status="404"}'
        in text
    )
    assert 'lookup_predictions_total{model="churn",result="hit"}' in text
    assert 'lookup_predictions_total{model="churn",result="miss"}' in text
    assert "lookup_request_seconds_bucket" in text


def test_every_request_is_one_json_log_line_without_key_material(api: Api) -> None:
    api.get("/v1/predictions/c0", api.reader_key, model="churn")
    time.sleep(0.2)
    lines = [json.loads(line) for line in api.log.read_text().splitlines() if line.startswith("{")]
    lookups = [line for line in lines if line["route"] == "/v1/predictions/{entity_id}"]
    assert lookups
    last = lookups[-1]
    assert {"status", "latency_ms", "model", "version", "hits", "misses", "key"} <= set(last)
    assert (last["model"], last["version"], last["key"]) == ("churn", 1, "reader-app")
    content = api.log.read_text()
    assert api.reader_key not in content and api.submit_key not in content


def test_a_stopped_database_gives_503_and_the_server_recovers_without_a_restart(
    api: Api, settings: Settings
) -> None:
    if not settings.embedded_database:
        pytest.skip("needs the embedded server, which this test stops and starts")
    assert api.get("/v1/predictions/c0", api.reader_key, model="churn").status_code == 200
    server = database.embedded_server(settings)
    server.stop()
    try:
        down = api.get("/v1/predictions/c0", api.reader_key, model="churn")
        assert down.status_code == 503, down.text
        assert down.headers["Retry-After"].isdigit()
        assert down.json()["error"]["code"] == "database_unavailable"
        assert api.get("/readyz").status_code == 503
        assert api.get("/healthz").status_code == 200
    finally:
        server.start()
    assert api.get("/readyz").status_code == 200
    assert api.get("/v1/predictions/c0", api.reader_key, model="churn").json()["score"] == 0.9
