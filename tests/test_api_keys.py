"""API keys under attack: tokens that cannot be keys cost no query, a flood of made-up keys does
not push the real ones out of the cache, and /metrics is only as open as the setting says."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import Api, seeded_database, served

from precompute.settings import Settings

FLOOD = 20_000


@pytest.fixture(scope="module")
def database_url(admin_url: str, settings: Settings) -> Iterator[str]:
    with seeded_database(admin_url, settings) as url:
        yield url


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    log = tmp_path_factory.mktemp("keys") / "api.log"
    with served(database_url, log, PRECOMPUTE_API_KEY_CACHE_SECONDS="600") as api:
        yield api


def key_checks(api: Api) -> dict[str, float]:
    """lookup_key_checks_total by result, read with the (cached) reader key."""
    text = api.get("/metrics", api.reader_key).text
    found = re.findall(r'^lookup_key_checks_total\{result="(\w+)"\} (\S+)$', text, re.M)
    return {result: float(value) for result, value in found}


@pytest.mark.parametrize(
    "token",
    [
        "pc_not-a-key",
        "pc_" + "a" * 42,  # one short
        "pc_" + "a" * 44,  # one long
        "pc_" + "a" * 42 + "=",  # padded base64
        "pc_" + "a" * 42 + "+",  # standard, not URL-safe, base64
        "xx_" + "a" * 43,
        "a" * 46,
        "pc_" + "\u00e9" * 43,
    ],
)
def test_a_token_that_cannot_be_a_key_is_refused_without_a_database_check(
    api: Api, token: str
) -> None:
    before = key_checks(api)
    response = httpx.get(
        api.base + "/v1/models", headers={b"Authorization": f"Bearer {token}".encode()}, timeout=10
    )
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_key"
    assert key_checks(api) == before


def test_a_flood_of_unknown_keys_does_not_push_out_the_valid_ones(api: Api) -> None:
    assert api.get("/v1/models", api.reader_key).status_code == 200  # checked once, remembered

    async def flood(connections: int = 8) -> list[int]:
        # Plain keep-alive HTTP/1.1 on a few sockets: an HTTP client library would spend more of
        # the two cores than the server does.
        async def one_connection(count: int) -> list[int]:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            statuses = []
            for _ in range(count):
                token = "pc_" + secrets.token_urlsafe(32)  # well formed, and unknown
                writer.write(
                    f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"content-length: (\d+)", head, re.I)
                assert length is not None
                await reader.readexactly(int(length[1]))
                statuses.append(int(head.split(b" ", 2)[1]))
            writer.close()
            return statuses

        per_connection = await asyncio.gather(
            *(one_connection(FLOOD // connections) for _ in range(connections))
        )
        return [status for statuses in per_connection for status in statuses]

    assert set(asyncio.run(flood())) == {401}
    before = key_checks(api)
    assert before["unknown"] >= FLOOD
    for _ in range(50):
        assert api.get("/v1/models", api.reader_key).status_code == 200
        assert api.get("/v1/predictions/c0", api.reader_key, model="churn").status_code == 200
    assert key_checks(api) == before, "a valid key went back to the database"


def test_unusual_methods_share_one_metrics_label(api: Api) -> None:
    for method in ("PROPFIND", "MKCOL", "LOCK", "SEARCH", "PURGE"):
        assert httpx.request(method, api.base + "/v1/models", timeout=10).status_code == 405
    text = api.get("/metrics", api.reader_key).text
    assert 'method="other"' in text
    assert not re.search(r'method="(PROPFIND|MKCOL|LOCK|SEARCH|PURGE)"', text)


@pytest.mark.parametrize(
    ("exposure", "anonymous", "read_key", "submit_key"),
    [("off", 404, 404, 404), ("key", 401, 200, 403), ("open", 200, 200, 200)],
)
def test_metrics_are_exposed_as_the_setting_says(
    database_url: str,
    tmp_path: Path,
    exposure: str,
    anonymous: int,
    read_key: int,
    submit_key: int,
) -> None:
    keys = (f"metrics-{exposure}-reader", f"metrics-{exposure}-submitter")
    log = tmp_path / "api.log"
    with served(database_url, log, keys, PRECOMPUTE_API_METRICS=exposure) as api:
        answers = (
            api.get("/metrics").status_code,
            api.get("/metrics", api.reader_key).status_code,
            api.get("/metrics", api.submit_key).status_code,
        )
        documented = "/metrics" in api.get("/openapi.json").json()["paths"]
    assert answers == (anonymous, read_key, submit_key)
    assert documented == (exposure != "off")
