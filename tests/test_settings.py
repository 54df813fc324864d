"""The typed settings object and the database URLs derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn
from pydantic import ValidationError

from precompute import database
from precompute.errors import PrecomputeError
from precompute.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "PRECOMPUTE_VAR_DIR",
        "PRECOMPUTE_ENVIRONMENT",
        "PRECOMPUTE_CALLBACK_SECRET",
        "PRECOMPUTE_CALLBACK_ALLOWED_HOSTS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_embedded_defaults_live_under_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOMPUTE_VAR_DIR", str(tmp_path))

    settings = Settings()

    assert settings.lake_uri == str(tmp_path / "lake")
    assert settings.models_root == str(tmp_path / "models")
    assert settings.airflow_home == tmp_path / "airflow"
    assert settings.pg_dir == tmp_path / "pg"
    assert settings.embedded_database


def test_each_path_can_be_set_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOMPUTE_LAKE_URI", "s3://bucket/lake")
    monkeypatch.setenv("PRECOMPUTE_PG_PORT", "6543")

    settings = Settings()

    assert settings.lake_uri == "s3://bucket/lake"
    assert settings.pg_port == 6543


def test_a_bad_port_is_refused_with_the_setting_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOMPUTE_PG_PORT", "80")
    with pytest.raises(ValidationError, match="pg_port"):
        Settings()


def test_production_refuses_placeholder_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOMPUTE_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:s3cret@db.internal/precompute")
    monkeypatch.setenv("PRECOMPUTE_WRITER_PASSWORD", "a-real-secret")
    monkeypatch.setenv("PRECOMPUTE_CALLBACK_SECRET", "a-real-callback-key")
    monkeypatch.setenv("PRECOMPUTE_API_PASSWORD", "a-third-secret")

    with pytest.raises(ValidationError, match="PRECOMPUTE_READER_PASSWORD") as refused:
        Settings()
    assert "PRECOMPUTE_WRITER_PASSWORD" not in str(refused.value)

    monkeypatch.setenv("PRECOMPUTE_READER_PASSWORD", "another-real-secret")
    assert Settings().environment == "production"


def test_production_needs_an_external_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOMPUTE_ENVIRONMENT", "production")
    monkeypatch.setenv("PRECOMPUTE_WRITER_PASSWORD", "w")
    monkeypatch.setenv("PRECOMPUTE_READER_PASSWORD", "r")
    monkeypatch.setenv("PRECOMPUTE_CALLBACK_SECRET", "k")
    monkeypatch.setenv("PRECOMPUTE_API_PASSWORD", "a")
    with pytest.raises(ValidationError, match="production needs DATABASE_URL"):
        Settings()


def _production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRECOMPUTE_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:s3cret@db.internal/precompute")
    monkeypatch.setenv("PRECOMPUTE_WRITER_PASSWORD", "w")
    monkeypatch.setenv("PRECOMPUTE_READER_PASSWORD", "r")


def test_production_refuses_the_placeholder_callback_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _production(monkeypatch)
    monkeypatch.setenv("PRECOMPUTE_API_PASSWORD", "a")
    with pytest.raises(ValidationError, match="placeholder for PRECOMPUTE_CALLBACK_SECRET"):
        Settings()
    monkeypatch.setenv("PRECOMPUTE_CALLBACK_SECRET", "a-real-callback-key")
    assert Settings().callback_secret.get_secret_value() == "a-real-callback-key"


def test_production_refuses_the_api_roles_placeholder_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _production(monkeypatch)
    monkeypatch.setenv("PRECOMPUTE_CALLBACK_SECRET", "k")
    with pytest.raises(ValidationError, match="placeholder for PRECOMPUTE_API_PASSWORD"):
        Settings()


def test_allowed_callback_hosts_are_a_comma_separated_list_of_hosts_and_networks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRECOMPUTE_CALLBACK_ALLOWED_HOSTS", "127.0.0.1, hooks.internal,10.0.0.0/8")
    assert Settings().callback_allowed_hosts == ["127.0.0.1", "hooks.internal", "10.0.0.0/8"]
    monkeypatch.setenv("PRECOMPUTE_CALLBACK_ALLOWED_HOSTS", "10.0.0.0/33")
    with pytest.raises(ValidationError, match=r"10\.0\.0\.0/33"):
        Settings()


def test_role_urls_keep_server_and_database_and_quote_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://admin:pw@db.internal:6432/scoring")
    monkeypatch.setenv("PRECOMPUTE_READER_PASSWORD", "p@ss:w/rd%")
    settings = Settings()

    reader = parse_dsn(database.database_url(settings, "reader"))
    admin = parse_dsn(database.database_url(settings, "admin"))
    api = parse_dsn(database.database_url(settings, "api"))

    assert reader == {
        "user": "precompute_reader",
        "password": "p@ss:w/rd%",
        "host": "db.internal",
        "port": "6432",
        "dbname": "scoring",
    }
    assert admin["user"] == "admin" and admin["dbname"] == "scoring"
    assert (api["user"], api["host"], api["dbname"]) == ("precompute_api", "db.internal", "scoring")
    assert not settings.embedded_database


def test_a_non_postgres_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u:p@host/db")
    with pytest.raises(PrecomputeError, match="must be a postgresql:// URL, not mysql://"):
        database.admin_url(Settings())


def test_redacted_urls_hide_the_password() -> None:
    assert database.redacted("postgresql://u:secret@h:1/d") == "postgresql://u:***@h:1/d"
