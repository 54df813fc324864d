"""Score requests as clients meet them when things go wrong: another key asking for a request it
did not make, a client retrying a submission, a reply lost between PostgreSQL and the API, and
requests kept past their retention."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from api_support import FEATURES, Api, seeded_database, served
from conftest import fetch_all
from pydantic import SecretStr

from jobs import maintenance
from precompute.database import Database
from precompute.settings import Settings

BODY = {"model": "churn", "entity_id": "e-1", "features": FEATURES}


@pytest.fixture(scope="module")
def url(admin_url: str, settings: Settings) -> Iterator[str]:
    with seeded_database(admin_url, settings) as url:
        yield url


@pytest.fixture(scope="module")
def api(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with served(url, tmp_path_factory.mktemp("requests") / "api.log") as api:
        yield api


def requests_for(api: Api, entity_id: str) -> list[str]:
    rows = fetch_all(
        api.admin_url,
        "SELECT request_id::text FROM precompute.score_requests WHERE entity_id = %s",
        (entity_id,),
    )
    return [row[0] for row in rows]


def submit(api: Api, key: str, body: dict[str, Any], idempotency_key: str) -> httpx.Response:
    return api.post(
        "/v1/score-requests", key, json=body, headers={"Idempotency-Key": idempotency_key}
    )


def test_a_request_is_shown_only_to_the_key_that_made_it(api: Api) -> None:
    made = api.post("/v1/score-requests", api.submit_key, json=BODY | {"entity_id": "mine"})
    request_id = made.json()["request_id"]
    assert api.get(f"/v1/score-requests/{request_id}", api.submit_key).status_code == 200
    other_submitter = api.new_key("other-submitter", "score-requests:write")
    nobodys_id = str(uuid.uuid4())
    nobodys = api.get(f"/v1/score-requests/{nobodys_id}", api.submit_key).json()["error"]
    for key in (other_submitter, api.reader_key):
        refused = api.get(f"/v1/score-requests/{request_id}", key)
        # Exactly what an id nobody made gets: the answer tells nothing about whose it is.
        assert refused.status_code == 404
        error = refused.json()["error"]
        assert error["code"] == nobodys["code"] == "unknown_request"
        assert error["message"].replace(request_id, "ID") == nobodys["message"].replace(
            nobodys_id, "ID"
        )


def test_the_same_idempotency_key_and_request_give_the_first_request_again(api: Api) -> None:
    first = submit(api, api.submit_key, BODY | {"entity_id": "retried"}, "order-1")
    # The same request, written differently: other key order, other spacing.
    again = api.post(
        "/v1/score-requests",
        api.submit_key,
        content=json.dumps(
            dict(reversed(list((BODY | {"entity_id": "retried"}).items()))), indent=2
        ),
        headers={"Idempotency-Key": "order-1", "Content-Type": "application/json"},
    )
    assert (first.status_code, again.status_code) == (202, 202), again.text
    assert again.json() == first.json()
    assert requests_for(api, "retried") == [first.json()["request_id"]]


def test_a_different_request_under_a_used_idempotency_key_is_a_conflict(api: Api) -> None:
    first = submit(api, api.submit_key, BODY | {"entity_id": "first"}, "order-2")
    other = submit(api, api.submit_key, BODY | {"entity_id": "second"}, "order-2")
    assert first.status_code == 202 and other.status_code == 409
    error = other.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert "order-2" in error["message"] and first.json()["request_id"] in error["message"]
    assert requests_for(api, "second") == []


def test_idempotency_keys_belong_to_one_api_key(api: Api) -> None:
    another = api.new_key("another-submitter", "score-requests:write")
    mine = submit(api, api.submit_key, BODY | {"entity_id": "shared"}, "order-3")
    theirs = submit(api, another, BODY | {"entity_id": "shared"}, "order-3")
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["request_id"] != theirs.json()["request_id"]


def test_simultaneous_retries_make_one_request(api: Api) -> None:
    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.base, timeout=10) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/score-requests",
                        json=BODY | {"entity_id": "racing"},
                        headers={
                            "Authorization": f"Bearer {api.submit_key}",
                            "Idempotency-Key": "order-4",
                        },
                    )
                    for _ in range(12)
                )
            )

    answers = asyncio.run(all_at_once())
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["request_id"] for a in answers}) == 1
    assert len(requests_for(api, "racing")) == 1


@pytest.mark.parametrize("idempotency_key", ["", "x" * 256, "has space", "tab\there", "é"])
def test_a_malformed_idempotency_key_is_refused(api: Api, idempotency_key: str) -> None:
    response = api.post(
        "/v1/score-requests",
        api.submit_key,
        json=BODY,
        headers={b"Idempotency-Key": idempotency_key.encode()},
    )
    assert response.status_code == 400, response.text
    assert "Idempotency-Key" in response.json()["error"]["message"]


class LostReply:
    """A TCP proxy in front of PostgreSQL that loses one reply: the first time a client runs a
    statement containing `marker`, the server runs it and commits, and the proxy then closes the
    connection instead of passing the completion on. Everything else passes through."""

    def __init__(self, target_port: int, marker: bytes) -> None:
        self.target_port = target_port
        self.marker = marker
        self.lost = threading.Event()
        self._armed = False
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._pipe, "127.0.0.1", 0)
        )
        self.port: int = self._server.sockets[0].getsockname()[1]
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _pipe(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection("127.0.0.1", self.target_port)
        armed = asyncio.Event()

        async def upstream() -> None:
            while data := await client.read(65536):
                if not self._armed and self.marker in data:
                    self._armed = True
                    armed.set()
                to_server.write(data)
                await to_server.drain()
            to_server.close()  # each side's end is passed on: asyncpg waits for the server's

        async def downstream() -> None:
            # Once armed, read the server's messages (type byte, length) and hold back from the
            # CommandComplete on; its ReadyForQuery means the implicit transaction committed.
            pending, completing = b"", False
            while data := await server.read(65536):
                if not armed.is_set():
                    to_client.write(data)
                    await to_client.drain()
                    continue
                pending += data
                while len(pending) >= 5 and len(pending) >= 1 + int.from_bytes(pending[1:5]):
                    size = 1 + int.from_bytes(pending[1:5])
                    message, pending = pending[:size], pending[size:]
                    completing = completing or message[:1] == b"C"
                    if completing and message[:1] == b"Z":
                        self.lost.set()
                        to_client.close()
                        to_server.close()
                        return
                    if not completing:
                        to_client.write(message)
                await to_client.drain()
            to_client.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)


def test_a_reply_lost_after_the_insert_makes_no_second_request(url: str, tmp_path: Path) -> None:
    """The pool retries a statement once on a new connection when the old one fails; when the
    first try had committed, the retry must find the request, not make a second one."""
    parts = urlsplit(url)
    assert parts.port is not None
    proxy = LostReply(parts.port, b"INSERT INTO precompute.score_requests")
    through_proxy = urlunsplit(
        parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{proxy.port}"))
    )
    try:
        with served(through_proxy, tmp_path / "api.log", ("proxied-r", "proxied-s")) as api:
            response = api.post(
                "/v1/score-requests", api.submit_key, json=BODY | {"entity_id": "lost-reply"}
            )
    finally:
        proxy.close()
    assert proxy.lost.is_set(), "the proxy never cut a reply: the test did not test anything"
    assert response.status_code == 202, response.text
    rows = fetch_all(
        url, "SELECT request_id::text FROM precompute.score_requests WHERE entity_id = 'lost-reply'"
    )
    assert rows == [(response.json()["request_id"],)]


def test_maintenance_deletes_finished_requests_past_retention(url: str, settings: Settings) -> None:
    fetch_all(
        url,
        """
        INSERT INTO precompute.runs (run_id, mode, state, finished_at)
        VALUES ('old-run', 'full', 'succeeded', now() - interval '100 days');
        INSERT INTO precompute.score_requests
            (model_id, entity_id, features, state, score, error, run_id, callback_state, updated_at)
        VALUES
            (1, 'old-done', '{}', 'done', 0.5, NULL, 'old-run', 'delivered',
             now() - interval '31 days'),
            (1, 'old-failed', '{}', 'failed', NULL, 'no', NULL, 'none', now() - interval '31 days'),
            (1, 'old-pending', '{}', 'pending', NULL, NULL, NULL, 'none',
             now() - interval '31 days'),
            (1, 'old-callback-due', '{}', 'done', 0.5, NULL, NULL, 'pending',
             now() - interval '31 days'),
            (1, 'recent-done', '{}', 'done', 0.5, NULL, NULL, 'none', now() - interval '29 days');
        """,
    )
    db = Database.from_settings(settings.model_copy(update={"database_url": SecretStr(url)}))
    assert maintenance.remove_finished_requests(db, kept_days=30) == 2
    left = fetch_all(
        url,
        "SELECT entity_id FROM precompute.score_requests"
        " WHERE entity_id LIKE 'old-%%' OR entity_id LIKE 'recent-%%' ORDER BY 1",
    )
    assert left == [("old-callback-due",), ("old-pending",), ("recent-done",)]
    # The run the deleted request pointed at is no longer held back.
    assert maintenance.remove_old_runs(db, settings.run_records_kept_days) >= 1
    assert fetch_all(url, "SELECT 1 FROM precompute.runs WHERE run_id = 'old-run'") == []
