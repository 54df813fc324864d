"""Hostile and careless input gets a 4xx saying what was wrong, and no answer carries what only the
server should know: database messages, file paths, tracebacks."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_support import FEATURES, Api, seeded_database, served
from conftest import fetch_all

from precompute import database
from precompute.settings import Settings

# What internals look like in a body: a traceback, a source file or a path on the server, a
# driver's or PostgreSQL's own words.
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|/work/|/usr/|/home/|/tmp/|asyncpg|psycopg|postgres|SQLSTATE"
    r"|ERROR:|DETAIL:|syntax|invalid input|violates|relation \"|column \"|contracts/",
    re.IGNORECASE,
)
SUBMIT = {"model": "churn", "entity_id": "e-1", "features": FEATURES}


@pytest.fixture(scope="module")
def api(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    with seeded_database(admin_url, settings) as url:
        # A model whose champion's input contract is missing from the server's contracts folder.
        fetch_all(
            database.with_role(url, "writer", settings),
            """
            INSERT INTO precompute.models (name, task) VALUES ('ghost', 'regression');
            INSERT INTO precompute.model_versions
                (model_id, version, model_kind, bundle_uri, bundle_sha256, input_schema)
            SELECT model_id, 1, 'linear_regression', 'file:///srv/models/ghost.zip',
                   repeat('0', 64), '{"dataset": "no-such-dataset", "version": 1}'
              FROM precompute.models WHERE name = 'ghost';
            INSERT INTO precompute.model_aliases (model_id, alias, version_id)
            SELECT model_id, 'champion', version_id FROM precompute.model_versions
             WHERE bundle_uri LIKE '%%ghost%%';
            """,
        )
        with served(url, tmp_path_factory.mktemp("errors") / "api.log") as api:
            key = api.new_key("both", "predictions:read", "score-requests:write")
            yield Api(api.base, api.env, api.log, api.admin_url, key, key)


def assert_no_internals(response: httpx.Response) -> dict[str, Any]:
    assert LEAKS.search(response.text) is None, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    return error


@pytest.mark.parametrize(
    "path",
    [
        "/v1/predictions/a%00b?model=churn",
        "/v1/predictions/c0?model=ch%00urn",
        "/v1/predictions/c0?model=churn&alias=%00",
        "/v1/predictions/%FF%FE%C0?model=churn",
        "/v1/predictions/c0?model=churn&version=99999999999999999999999999",
        "/v1/predictions/c0?model=churn&version=1e400",
        "/v1/predictions/c0?model=churn&version=-1",
        "/v1/predictions/c0?model=Robert');DROP TABLE precompute.models;--",
        "/v1/predictions/" + "x" * 5000 + "?model=churn",
        "/v1/models/%00",
        "/v1/models/nope",
        "/v1/runs/%00",
        "/v1/runs/" + "r" * 300,
        "/v1/score-requests/not-a-uuid",
        "/v1/score-requests/%00",
        "/v1/nothing-here",
    ],
)
def test_hostile_paths_and_parameters_get_a_4xx_without_internals(api: Api, path: str) -> None:
    response = httpx.get(api.base + path, headers={"Authorization": f"Bearer {api.reader_key}"})
    assert 400 <= response.status_code < 500, response.text
    assert_no_internals(response)


@pytest.mark.parametrize(
    "body",
    [
        b'{"ids": ["\xff\xfe"]}',  # not UTF-8
        b'{"ids": ["a\\u0000b"]}',
        b'{"ids": ["\\ud800"]}',  # a lone surrogate: valid JSON, not valid Unicode
        b'{"ids": [1' + b"0" * 400 + b"]}",
        b'{"ids": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"ids": "c0"}',
        b"<ids><id>c0</id></ids>",
        b'{"ids": [NaN]}',
        b"",
    ],
)
def test_hostile_batch_bodies_get_a_400_without_internals(api: Api, body: bytes) -> None:
    response = api.post(
        "/v1/predictions:batchGet",
        api.reader_key,
        params={"model": "churn"},
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert_no_internals(response)


@pytest.mark.parametrize(
    "change",
    [
        {"features": FEATURES | {"monthly_spend": 10**400}},
        {"features": FEATURES | {"monthly_spend": float("inf")}},
        {"features": FEATURES | {"monthly_spend": float("nan")}},
        {"features": FEATURES | {"plan": {"$ne": None}}},
        {"features": FEATURES | {"pl\x00an": "plus"}},
        {"features": FEATURES | {"plan": "plus\x00"}},
        {"features": FEATURES | {"\ud800": 1}},
        {"entity_id": "a\x00b"},
        {"model": "churn'; DROP TABLE precompute.models; --"},
        {"model": "nope"},
        {"callback_url": "file:///etc/passwd"},
    ],
)
def test_hostile_score_requests_get_a_4xx_without_internals(
    api: Api, change: dict[str, Any]
) -> None:
    # Written by hand: json.dumps would refuse some of these, as a careful client would.
    body = json.dumps(SUBMIT | change, allow_nan=True).encode("utf-8", "surrogatepass")
    response = api.post(
        "/v1/score-requests",
        api.submit_key,
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert_no_internals(response)


def test_a_missing_contract_is_a_500_that_names_no_path_and_logs_it(api: Api) -> None:
    response = api.post("/v1/score-requests", api.submit_key, json=SUBMIT | {"model": "ghost"})
    assert response.status_code == 500
    error = assert_no_internals(response)
    assert error["code"] == "contract_missing" and "ghost" in error["message"]
    logged = [json.loads(line) for line in api.log.read_text().splitlines() if '"detail"' in line]
    assert any("no-such-dataset" in line["detail"] for line in logged), "no detail in the log"


def test_a_request_line_that_is_not_utf8_is_refused_by_the_server(api: Api) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as client:
        client.sendall(b"GET /v1/predictions/\xff\xfe?model=churn HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400")
    assert LEAKS.search(answer.decode("latin-1")) is None
