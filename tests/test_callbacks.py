"""Callback delivery against real receivers on 127.0.0.1, hostile ones included.

Each receiver is a real TCP server in this process that reads the POST and then does what its
behaviour says: answers, never answers, trickles, answers garbage, redirects to the metadata
service, or hangs up. The callbacks are real rows in a database of this module's own, delivered
by `callbacks.deliver_due` (127.0.0.1 is allowed through PRECOMPUTE_CALLBACK_ALLOWED_HOSTS).
"""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import create_database, drop_database, fetch_all
from pydantic import SecretStr
from receivers import Receiver, answers, garbage, hangs_up, never_answers, redirects, trickles

from jobs import callbacks
from jobs.publish import _deliver_callbacks
from precompute import migrations
from precompute.database import Database
from precompute.settings import Settings, project_root

SECRET = "a-secret-of-this-deployment"


@dataclass(frozen=True)
class Db:
    admin_url: str
    settings: Settings


def deliver_due(settings: Settings, limit: int = 1000) -> callbacks.Delivery:
    """Deliver what is due with these settings' database and policy, as the command does."""
    policy = callbacks.CallbackPolicy.from_settings(settings)
    return callbacks.deliver_due(Database.from_settings(settings), policy, limit)


@pytest.fixture(scope="module")
def db(admin_url: str, settings: Settings) -> Iterator[Db]:
    name = f"test_callbacks_{uuid.uuid4().hex[:8]}"
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
        INSERT INTO precompute.runs (run_id, mode, state) VALUES ('run-1', 'requests', 'running');
        """,
    )
    job_settings = settings.model_copy(
        update={
            "database_url": SecretStr(url),
            "callback_allowed_hosts": ["127.0.0.1"],
            "callback_secret": SecretStr(SECRET),
            "callback_timeout_seconds": 2.0,
            "callback_backoff_seconds": 60.0,
            "callback_concurrency": 8,
            "callback_max_attempts": 3,
        }
    )
    try:
        yield Db(url, job_settings)
    finally:
        drop_database(admin_url, name)


@pytest.fixture(autouse=True)
def no_requests(db: Db) -> None:
    fetch_all(db.admin_url, "DELETE FROM precompute.score_requests")


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(behave: Callable[[socket.socket, threading.Event], None]) -> Receiver:
        started.append(Receiver(behave))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


def done_request(db: Db, callback_url: str, entity_id: str = "c1", due_ago: float = 0) -> str:
    """A request its run's publish has marked done, its callback due `due_ago` seconds ago."""
    rows = fetch_all(
        db.admin_url,
        """
        INSERT INTO precompute.score_requests
            (model_id, entity_id, features, state, run_id, model_version_id, score, label,
             callback_url, callback_state, next_callback_at)
        SELECT m.model_id, %s, '{}', 'done', 'run-1', v.version_id, 0.75, 'true', %s,
               'pending', now() - make_interval(secs => %s)
          FROM precompute.models m JOIN precompute.model_versions v USING (model_id)
        RETURNING request_id
        """,
        (entity_id, callback_url, due_ago),
    )
    return str(rows[0][0])


def callback(db: Db, request_id: str) -> tuple[Any, ...]:
    """(state, attempts, error, seconds until the next try)."""
    rows = fetch_all(
        db.admin_url,
        """
        SELECT callback_state, callback_attempts, callback_error,
               extract(epoch FROM next_callback_at - now())::float
          FROM precompute.score_requests WHERE request_id = %s
        """,
        (request_id,),
    )
    return tuple(rows[0])


def test_hostile_receivers_fail_each_on_its_own_and_the_good_one_is_delivered_at_once(
    db: Db, receivers: Callable[..., Receiver]
) -> None:
    hostile = {
        "never answers": (receivers(never_answers), "no complete reply within 2 s"),
        "trickles": (receivers(trickles), "no complete reply within 2 s"),
        "garbage": (receivers(garbage), "the reply is not HTTP"),
        "redirect": (receivers(redirects), "HTTP 302; redirects are not followed"),
        "hangs up": (receivers(hangs_up), "closed the connection before a complete reply"),
        "server error": (receivers(answers(b"500 Oops")), "answered HTTP 500"),
    }
    good = receivers(answers(b"204 No Content"))
    # The hostile ones are due first, the good one last.
    ids = {what: done_request(db, r.url(), due_ago=60) for what, (r, _) in hostile.items()}
    good_id = done_request(db, good.url("/done?tenant=7"), due_ago=1)

    started = time.monotonic()
    result = deliver_due(db.settings)
    took = time.monotonic() - started

    assert result == callbacks.Delivery(delivered=1, retrying=len(hostile), failed=0)
    assert took < 2 + 1.5  # every delivery ran at once, each cut off at its deadline
    assert len(good.requests) == 1 and good.requests[0][0] - started < 1.0
    assert good.requests[0][1].startswith(b"POST /done?tenant=7 HTTP/1.1\r\n")
    assert good.header(0, "Host") == f"127.0.0.1:{good.port}"
    assert callback(db, good_id)[:3] == ("delivered", 1, None)
    for what, (receiver, says) in hostile.items():
        state, attempts, error, next_in = callback(db, ids[what])
        assert (state, attempts) == ("pending", 1), what
        assert says in error, (what, error)
        assert 55 < next_in <= 60, what  # moved back by the backoff, behind the others
        assert len(receiver.requests) == 1, what  # and the redirect was not followed


def test_deliveries_in_flight_are_bounded(db: Db, receivers: Callable[..., Receiver]) -> None:
    silent = receivers(never_answers)
    for i in range(4):
        done_request(db, silent.url(), entity_id=f"c{i}")
    two_at_once = db.settings.model_copy(
        update={"callback_concurrency": 2, "callback_timeout_seconds": 1.0}
    )

    started = time.monotonic()
    assert deliver_due(two_at_once) == callbacks.Delivery(0, 4, 0)

    assert silent.most_open == 2 and len(silent.requests) == 4
    assert 2.0 <= time.monotonic() - started < 3.5  # two rounds of one deadline each


def test_a_failing_callback_moves_behind_those_due_after_it(
    db: Db, receivers: Callable[..., Receiver]
) -> None:
    failing, good = receivers(hangs_up), receivers(answers(b"200 OK"))
    first = done_request(db, failing.url(), "c0", due_ago=30)
    others = [done_request(db, good.url(f"/c{i}"), f"c{i}", due_ago=20 - i) for i in (1, 2)]
    quick = db.settings.model_copy(update={"callback_backoff_seconds": 0.5})

    for _ in range(3):  # one callback per pass
        deliver_due(quick, limit=1)
        time.sleep(0.6)  # the failing one is due again: still not ahead of the others

    assert len(failing.requests) == 1
    assert [r[1].split(b" ")[1] for r in good.requests] == [b"/c1", b"/c2"]
    assert [callback(db, i)[0] for i in others] == ["delivered", "delivered"]
    deliver_due(quick, limit=1)
    assert len(failing.requests) == 2 and callback(db, first)[:2] == ("pending", 2)


def test_the_last_attempt_marks_the_callback_failed_with_the_reason(
    db: Db, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(redirects)
    request_id = done_request(db, receiver.url())
    once = db.settings.model_copy(update={"callback_max_attempts": 1})

    assert deliver_due(once) == callbacks.Delivery(0, 0, 1)

    state, attempts, error, next_in = callback(db, request_id)
    assert (state, attempts, next_in) == ("failed", 1, None)
    assert "redirects are not followed" in error


def test_addresses_that_are_not_public_are_never_posted_to(
    db: Db, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(answers(b"204 No Content"))
    # Stored as they are (an older API, or a row written by hand): delivery checks again.
    loopback = done_request(db, receiver.url(), "c1")
    metadata = done_request(db, "http://169.254.169.254/latest/meta-data/", "c2")
    strict = db.settings.model_copy(update={"callback_allowed_hosts": []})

    assert deliver_due(strict) == callbacks.Delivery(0, 2, 0)

    assert receiver.requests == []
    assert "127.0.0.1 is not a public internet address" in callback(db, loopback)[2]
    assert "169.254.169.254 is not a public internet address" in callback(db, metadata)[2]


def test_a_receiver_verifies_the_signature_and_a_tampered_body_fails(
    db: Db, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(answers(b"204 No Content"))
    request_id = done_request(db, receiver.url(), "c42")
    assert deliver_due(db.settings).delivered == 1

    verified = readme_verifier()  # the lines the README gives receivers
    _, _, body = receiver.requests[0]
    signature = receiver.header(0, "X-Precompute-Signature")
    assert re.fullmatch(r"t=[0-9]+,v1=[0-9a-f]{64}", signature)
    assert verified(SECRET.encode(), signature, body)
    assert b'"request_id":"' + request_id.encode() + b'"' in body
    assert not verified(SECRET.encode(), signature, body.replace(b"0.75", b"0.99"))
    assert not verified(b"another deployment's secret", signature, body)
    stale = callbacks.sign(SECRET.encode(), body, int(time.time()) - 3600)
    assert not verified(SECRET.encode(), stale, body)  # a replayed delivery


def readme_verifier() -> Callable[[bytes, str, bytes], bool]:
    """The receiver's check exactly as the README gives it."""
    readme = (project_root() / "README.md").read_text()
    code = re.search(r"```python\n(.*?def verified.*?)```", readme, re.S)
    assert code is not None, "the README no longer shows how to verify a callback"
    scope: dict[str, Any] = {}
    exec(code.group(1), scope)
    verify: Callable[[bytes, str, bytes], bool] = scope["verified"]
    return verify


def test_two_deliverers_never_post_the_same_callback(
    db: Db, receivers: Callable[..., Receiver]
) -> None:
    def slow_ok(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait(0.3)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    receiver = receivers(slow_ok)
    for i in range(6):
        done_request(db, receiver.url(f"/c{i}"), f"c{i}")
    two = db.settings.model_copy(update={"callback_concurrency": 2})
    results: list[callbacks.Delivery] = []
    deliverers = [
        threading.Thread(target=lambda: results.append(deliver_due(two))) for _ in range(2)
    ]
    for deliverer in deliverers:
        deliverer.start()
    for deliverer in deliverers:
        deliverer.join()

    paths = sorted(r[1].split(b" ")[1] for r in receiver.requests)
    assert paths == [f"/c{i}".encode() for i in range(6)]  # each exactly once
    assert sum(r.delivered for r in results) == 6


def test_a_deliverer_that_died_leaves_its_callback_to_the_next_after_the_lease(
    db: Db, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(answers(b"204 No Content"))
    request_id = done_request(db, receiver.url())
    connection = Database.from_settings(db.settings).connect()
    try:
        policy = callbacks.CallbackPolicy.from_settings(db.settings)
        assert len(callbacks.claim(connection, policy, 10)) == 1  # ...and then it died
    finally:
        connection.close()

    assert deliver_due(db.settings) == callbacks.Delivery(0, 0, 0)  # leased
    fetch_all(
        db.admin_url,
        "UPDATE precompute.score_requests SET callback_claimed_until = now() - interval '1s'",
    )
    assert deliver_due(db.settings) == callbacks.Delivery(1, 0, 0)
    assert callback(db, request_id)[:2] == ("delivered", 2)


def test_https_checks_the_certificate_against_the_url_host(
    db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, context = tls_server_context(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the receivers' CA is trusted here
    seen: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: seen.append(name)
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    replies: list[bytes] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = server.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    replies.append(tls.recv(65536))
                    tls.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    named = done_request(db, f"https://localhost:{port}/hook", "c1")
    by_address = done_request(db, f"https://127.0.0.1:{port}/hook", "c2")  # not in the cert
    allowed = db.settings.model_copy(update={"callback_allowed_hosts": ["localhost", "127.0.0.1"]})

    try:
        assert deliver_due(allowed) == callbacks.Delivery(1, 1, 0)
    finally:
        server.close()

    assert callback(db, named)[0] == "delivered"
    assert "localhost" in seen  # sent as SNI, though the connection went to an address
    assert replies[0].startswith(b"POST /hook HTTP/1.1\r\nHost: localhost:")
    assert "TLS certificate was refused" in callback(db, by_address)[2]


def tls_server_context(folder: Path, host: str) -> tuple[Path, ssl.SSLContext]:
    """A CA of the test's own and a server certificate it signed for `host`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = certificate("precompute test CA", ca_key, "precompute test CA", ca_key, ca=True)
    leaf = certificate(host, server_key, "precompute test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    cert_file.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


def test_a_committed_publish_is_never_failed_by_its_callbacks(db: Db) -> None:
    # The database gone by the time callbacks go out: a warning, not an exception.
    gone = db.settings.model_copy(
        update={"database_url": SecretStr("postgresql://nobody:x@127.0.0.1:1/none")}
    )
    _deliver_callbacks(Database.from_settings(gone), gone)
