"""The lookup API as clients meet it: a real uvicorn server (`precompute api` in a child
process) on the real database, with serving rows inserted through the writer role."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_support import FEATURES, Api, seeded_database, served
from conftest import created_key, fetch_all, run_cli

from local.embedded_pg import embedded_server
from lookup_api.core.db import Database, DatabaseDown, InvalidValue, QueryTimeout
from precompute import database
from precompute.settings import Settings


@pytest.fixture(scope="module")
def api(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    log = tmp_path_factory.mktemp("api") / "api.log"
    with (
        seeded_database(admin_url, settings) as url,
        served(
            url,
            log,
            PRECOMPUTE_API_KEY_CACHE_SECONDS="0",  # revocation is seen at once
            PRECOMPUTE_API_MAX_PENDING_REQUESTS="3",
        ) as api,
    ):
        yield api


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
        ("/v1/predictions/c0", {"model": "churn", "version": 2**31}, 400, "invalid_request"),
        # PostgreSQL refuses a NUL in text: the request is invalid, not the server broken.
        ("/v1/predictions/c0", {"model": "ch\x00urn"}, 400, "invalid_request"),
        ("/v1/runs/a%00b", {}, 400, "invalid_request"),
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

    key = created_key(run_cli("api-key", "create", "short-lived", env=api.env))
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
    text = api.get("/metrics", api.reader_key).text
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


def test_a_score_request_is_checked_queued_and_readable(api: Api) -> None:
    body = {"model": "churn", "entity_id": "new-1", "features": FEATURES}
    submitted = api.post("/v1/score-requests", api.submit_key, json=body)
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["request_id"]
    assert submitted.json()["state"] == "pending"
    stored = fetch_all(
        api.admin_url,
        "SELECT entity_id, features, state FROM precompute.score_requests WHERE request_id = %s",
        (request_id,),
    )
    assert stored == [("new-1", FEATURES, "pending")]
    shown = api.get(f"/v1/score-requests/{request_id}", api.submit_key).json()
    assert (shown["state"], shown["model"], shown["score"]) == ("pending", "churn", None)
    fetch_all(api.admin_url, "DELETE FROM precompute.score_requests")


@pytest.mark.parametrize(
    ("change", "status", "code", "says"),
    [
        ({"model": "nope"}, 404, "unknown_model", "nope"),
        (
            {"features": FEATURES | {"age": 150.0}},
            400,
            "invalid_features",
            "age: must be at least 18 and at most 120",
        ),
        (
            {"features": FEATURES | {"plan": "gold"}},
            400,
            "invalid_features",
            "plan: must be one of",
        ),
        ({"features": FEATURES | {"tenure_months": "x"}}, 400, "invalid_features", "whole number"),
        (
            {"features": FEATURES | {"colour": "red"}},
            400,
            "invalid_features",
            "colour: not a feature",
        ),
        (
            {"features": {k: v for k, v in FEATURES.items() if k != "age"}},
            400,
            "invalid_features",
            "age: a value is required",
        ),
        ({"entity_id": ""}, 400, "invalid_entity_id", "empty"),
        ({"callback_url": "not a url"}, 400, "invalid_request", "callback_url"),
        ({"features": FEATURES | {"plan": "x" * 20_000}}, 413, "payload_too_large", "bytes"),
    ],
)
def test_a_bad_score_request_is_refused_saying_why(
    api: Api, change: dict[str, Any], status: int, code: str, says: str
) -> None:
    body = {"model": "churn", "entity_id": "new-2", "features": FEATURES} | change
    response = api.post("/v1/score-requests", api.submit_key, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and says in error["message"]


def test_score_requests_need_their_scope_and_a_key_has_a_pending_limit(api: Api) -> None:
    body = {"model": "churn", "entity_id": "new-3", "features": FEATURES}
    assert api.post("/v1/score-requests", api.reader_key, json=body).status_code == 403
    assert api.post("/v1/score-requests", None, json=body).status_code == 401
    try:
        for _ in range(3):  # the server's limit is 3 pending requests per key
            assert api.post("/v1/score-requests", api.submit_key, json=body).status_code == 202
        refused = api.post("/v1/score-requests", api.submit_key, json=body)
        assert refused.status_code == 429 and "limit is 3" in refused.json()["error"]["message"]
    finally:
        fetch_all(api.admin_url, "DELETE FROM precompute.score_requests")
    assert api.get("/v1/score-requests/not-a-uuid", api.reader_key).status_code == 400
    unknown = api.get(f"/v1/score-requests/{uuid.uuid4()}", api.reader_key)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_request"


def test_a_stopped_database_gives_503_and_the_server_recovers_without_a_restart(
    api: Api, settings: Settings
) -> None:
    if not settings.embedded_database:
        pytest.skip("needs the embedded server, which this test stops and starts")
    assert api.get("/v1/predictions/c0", api.reader_key, model="churn").status_code == 200
    server = embedded_server(settings)
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


def test_the_pool_cancels_slow_statements_and_tells_a_down_server_from_bad_input(
    api: Api, settings: Settings
) -> None:
    """The three ways a query fails, each mapped to its own answer (503, 503, 400) above."""

    async def scenario() -> None:
        db = Database(database.with_role(api.admin_url, "reader", settings), 1, 100)
        await db.open()
        try:
            with pytest.raises(QueryTimeout, match="statement timeout"):
                await db.query("SELECT pg_sleep(2)")
            assert (await db.query("SELECT 1"))[0][0] == 1  # the connection is still good
            with pytest.raises(InvalidValue):
                await db.query("SELECT $1::text", "a\x00b")
        finally:
            await db.close()
        nowhere = Database("postgresql://reader:x@127.0.0.1:1/precompute", 1, 100)
        await nowhere.open()  # an empty pool: the API starts while the database is down
        with pytest.raises(DatabaseDown):
            await nowhere.query("SELECT 1")
        await nowhere.close()

    asyncio.run(scenario())
