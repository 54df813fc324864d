"""Callback URLs go only to public addresses: the rule itself, and the API refusing the rest.

The API is the real one (`precompute api`, uvicorn) on a database of this module's own.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from api_support import FEATURES
from conftest import create_database, created_key, drop_database, fetch_all, run_cli, serve_api

from precompute import migrations
from precompute.callback_targets import Allowed, RefusedTarget, is_public, resolve
from precompute.settings import Settings

NOT_PUBLIC = [
    "169.254.169.254",  # cloud metadata service
    "127.0.0.1",
    "127.8.9.10",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "::7f00:1",  # IPv4-compatible 127.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:55432/",  # the database's port
        "http://[::1]:8000/",
        "http://[::ffff:169.254.169.254]/",
        "http://localhost/",  # a name that resolves to loopback
        "http://LOCALHOST./",
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f.1/",
        "http://127.1/",
        "http://nothing.invalid/",  # does not resolve: refused alike, saying nothing more
    ],
)
def test_a_url_is_refused_unless_every_address_is_public(url: str) -> None:
    with pytest.raises(RefusedTarget, match="is not a public internet") as refused:
        resolve(url, Allowed())
    assert "127.0.0.1" not in str(refused.value) or "127.0.0.1" in url  # no DNS details


def test_a_public_url_resolves_to_the_addresses_to_connect_to() -> None:
    target = resolve("https://8.8.8.8:8443/hooks/a?b=1#frag", Allowed())
    assert (target.host, target.port, target.path, target.addresses) == (
        "8.8.8.8",
        8443,
        "/hooks/a?b=1",
        ("8.8.8.8",),
    )
    assert target.host_header == "8.8.8.8:8443"


def test_listed_hosts_and_networks_are_allowed_and_nothing_else() -> None:
    by_name = resolve("http://localhost:9/x", Allowed.parse(["localhost"]))
    assert by_name.addresses[0] in ("127.0.0.1", "::1") and by_name.host == "localhost"
    assert resolve("http://127.0.0.1:9/", Allowed.parse(["127.0.0.1"])).addresses == ("127.0.0.1",)
    assert resolve("http://10.9.8.7/", Allowed.parse(["10.0.0.0/8"])).addresses == ("10.9.8.7",)
    with pytest.raises(RefusedTarget):
        resolve("http://169.254.169.254/", Allowed.parse(["127.0.0.1", "10.0.0.0/8"]))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://8.8.8.8/", "must be an http:// or https:// URL"),
        ("file:///etc/passwd", "must be an http:// or https:// URL"),
        ("http:///nohost", "names no host"),
        ("http://8.8.8.8:99999/", "invalid host or port"),
        ("http://8.8.8.8/a b\r\nX-Injected: 1", "cannot hold unencoded"),
    ],
)
def test_what_is_not_an_http_url_is_refused(url: str, says: str) -> None:
    with pytest.raises(RefusedTarget, match=says):
        resolve(url, Allowed())


@dataclass(frozen=True)
class Api:
    base: str
    key: str
    admin_url: str

    def submit(self, callback_url: str) -> httpx.Response:
        body = {
            "model": "churn",
            "entity_id": "new-1",
            "features": FEATURES,
            "callback_url": callback_url,
        }
        auth = {"Authorization": f"Bearer {self.key}"}
        return httpx.post(f"{self.base}/v1/score-requests", json=body, headers=auth, timeout=10)


@pytest.fixture(scope="module")
def api(
    admin_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    name = f"test_callback_api_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    migrations.migrate(url, settings)
    fetch_all(
        url,
        """
        INSERT INTO precompute.models (name, task) VALUES ('churn', 'classification');
        INSERT INTO precompute.model_versions
            (model_id, version, model_kind, bundle_uri, bundle_sha256, input_schema)
        SELECT model_id, 1, 'logistic_regression', 'file:///nowhere.zip', repeat('0', 64),
               '{"dataset": "customers", "version": 1}'
          FROM precompute.models;
        INSERT INTO precompute.model_aliases (model_id, alias, version_id)
        SELECT model_id, 'champion', version_id FROM precompute.model_versions;
        """,
    )
    env = os.environ | {"DATABASE_URL": url}
    env.pop("PRECOMPUTE_CALLBACK_ALLOWED_HOSTS", None)
    key = created_key(
        run_cli("api-key", "create", "hooks", "--scope", "score-requests:write", env=env)
    )
    try:
        with serve_api(env, Path(tmp_path_factory.mktemp("api")) / "api.log") as base:
            yield Api(base, key, url)
    finally:
        drop_database(admin_url, name)


@pytest.mark.parametrize(
    ("callback_url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "address 169.254.169.254 is not a public"),
        ("http://127.0.0.1:55432/", "address 127.0.0.1 is not a public"),
        ("http://[::1]/hook", "address ::1 is not a public"),
        ("http://[::ffff:a9fe:a9fe]/", "is not a public internet address"),
        ("http://10.0.0.7/hook", "address 10.0.0.7 is not a public"),
        ("http://192.168.1.1/hook", "address 192.168.1.1 is not a public"),
        ("http://[fd00::1]/hook", "address fd00::1 is not a public"),
        ("http://0.0.0.0:8000/", "address 0.0.0.0 is not a public"),
        ("http://localhost:8000/hook", "host localhost is not a public internet host"),
        ("http://metadata.google.internal/", "host metadata.google.internal is not a public"),
        ("http://2130706433/", "127.0.0.1 is not a public"),  # the API's URL parser reads it so
    ],
)
def test_the_api_refuses_callbacks_to_non_public_addresses(
    api: Api, callback_url: str, says: str
) -> None:
    response = api.submit(callback_url)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_callback_url" and says in error["message"]
    assert "127.0.0.1" not in error["message"] or "127.0.0.1" in says  # nothing from DNS
    assert fetch_all(api.admin_url, "SELECT count(*) FROM precompute.score_requests") == [(0,)]


def test_the_api_accepts_a_callback_to_a_public_address(api: Api) -> None:
    response = api.submit("https://8.8.8.8/hooks/score?tenant=7")
    assert response.status_code == 202, response.text
    stored = fetch_all(api.admin_url, "SELECT callback_url FROM precompute.score_requests")
    assert stored == [("https://8.8.8.8/hooks/score?tenant=7",)]
    fetch_all(api.admin_url, "DELETE FROM precompute.score_requests")
