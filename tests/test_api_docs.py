"""The API's documentation as its readers meet it: Swagger UI in a real browser that can reach
nothing but the API, and an OpenAPI document that a fuzzer holds the live API to."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Api, seeded_database, served
from browser import page
from conftest import fetch_all

from lookup_api.api.schemas import NAME
from precompute import database
from precompute.settings import Settings

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def api(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    with seeded_database(admin_url, settings) as url:
        # The documented examples (model churn, entity c42) find a prediction, whose run has
        # a report.
        fetch_all(
            database.with_role(url, "writer", settings),
            "INSERT INTO precompute.predictions VALUES (1, 'c42', 0.7, 'true', now(), 'seed-run');"
            "INSERT INTO precompute.run_reports VALUES ('seed-run', '<!DOCTYPE html>', now())",
        )
        with served(url, tmp_path_factory.mktemp("docs") / "api.log") as api:
            yield api


def test_the_docs_page_lists_the_routes_with_nothing_loaded_from_outside(api: Api) -> None:
    with page("api-docs") as browsing:
        errors: list[str] = []
        browsing.page.on("pageerror", lambda error: errors.append(str(error)))
        browsing.page.goto(api.base + "/docs", wait_until="networkidle")
        assert browsing.refused == [], "the docs page asked for something off the API's host"
        for path in ("/v1/predictions/{entity_id}", "/v1/predictions:batchGet", "/v1/models"):
            summary = browsing.page.locator(f'.opblock-summary-path[data-path="{path}"]')
            summary.first.wait_for(timeout=20_000)
        assert "/v1/score-requests" in browsing.page.inner_text(".swagger-ui")
        assert errors == []
    assert browsing.refused == [], "the docs page asked for something off the API's host"


def test_the_default_cdn_pages_are_gone(api: Api) -> None:
    docs = api.get("/docs").text
    assert "cdn.jsdelivr.net" not in docs and "fastapi.tiangolo.com" not in docs
    assert api.get("/redoc").status_code == 404
    assert api.get("/static/docs/swagger-ui-bundle.js").status_code == 200


def test_the_document_declares_every_status_and_no_422(api: Api) -> None:
    document = api.get("/openapi.json").json()
    declared = {
        (method.upper(), path): set(operation["responses"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert declared[("GET", "/v1/predictions/{entity_id}")] == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "503",
    }
    assert declared[("POST", "/v1/predictions:batchGet")] == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "413",
        "503",
    }
    assert declared[("POST", "/v1/score-requests")] == {
        "202",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "429",
        "503",
    }
    assert declared[("GET", "/v1/runs/{run_id}/report")] == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "503",
    }
    report = document["paths"]["/v1/runs/{run_id}/report"]["get"]
    assert set(report["responses"]["200"]["content"]) == {"text/html"}
    assert {"HTTPBearer": []} in report["security"] and {"HTTPBasic": []} in report["security"]
    assert all("422" not in statuses for statuses in declared.values())
    assert "HTTPValidationError" not in document["components"]["schemas"]
    unauthenticated = document["paths"]["/v1/models"]["get"]["responses"]["401"]
    schema = unauthenticated["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    # The report's success is a page, its errors the same JSON as everywhere.
    assert report["responses"]["404"]["content"] == unauthenticated["content"]


def test_the_document_states_the_limits(api: Api, settings: Settings) -> None:
    document = api.get("/openapi.json").json()
    entity = document["paths"]["/v1/predictions/{entity_id}"]["get"]["parameters"][0]["schema"]
    assert (entity["minLength"], entity["maxLength"]) == (1, 256)
    assert entity["pattern"] == r"^[^\x00-\x1f\x7f]*$"
    ids = document["components"]["schemas"]["BatchGet"]["properties"]["ids"]
    assert ids["maxItems"] == 1000 and ids["items"]["maxLength"] == 256
    batch = document["paths"]["/v1/predictions:batchGet"]["post"]
    assert batch["requestBody"]["x-max-bytes"] == settings.api_max_batch_bytes
    submit = document["paths"]["/v1/score-requests"]["post"]
    assert submit["requestBody"]["x-max-bytes"] == settings.api_max_request_bytes
    version = document["paths"]["/v1/predictions/{entity_id}"]["get"]["parameters"][3]["schema"]
    assert version["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}


def test_the_documented_name_rule_is_the_registrys(api: Api) -> None:
    checks = fetch_all(
        api.admin_url,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid IN ('precompute.models'::regclass, 'precompute.model_aliases'::regclass)"
        " AND contype = 'c'",
    )
    assert sum(f"'{NAME}'" in check for (check,) in checks) == 2, checks


def test_schemathesis_finds_no_server_error_and_no_departure_from_the_document(
    api: Api, tmp_path: Path
) -> None:
    """Every check Schemathesis has, against the live server and database (see the config)."""
    key = api.new_key("schemathesis", "predictions:read", "score-requests:write")
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            api.base + "/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {key}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
