"""The Database object every entry point builds once and passes down."""

from __future__ import annotations

from pydantic import SecretStr

from precompute.database import Database
from precompute.settings import Settings


def test_each_role_gets_its_own_credentials_on_the_same_server() -> None:
    settings = Settings(
        database_url=SecretStr("postgresql+psycopg2://admin:adm1n@db.example:5433/scores"),
        writer_password=SecretStr("wr1ter"),
        reader_password=SecretStr("re@der/x"),
    )
    db = Database.from_settings(settings)
    assert db.url("admin") == "postgresql://admin:adm1n@db.example:5433/scores"
    assert db.url("writer") == "postgresql://precompute_writer:wr1ter@db.example:5433/scores"
    # Characters that mean something in a URL are quoted, not passed through.
    assert db.url("reader") == "postgresql://precompute_reader:re%40der%2Fx@db.example:5433/scores"
    assert "check DATABASE_URL" in db.hint


def test_its_repr_shows_no_password() -> None:
    # It is passed everywhere, so it turns up in tracebacks and test reports.
    settings = Settings(
        database_url=SecretStr("postgresql://admin:adm1n@db.example/scores"),
        writer_password=SecretStr("wr1ter"),
    )
    shown = repr(Database.from_settings(settings))
    assert "adm1n" not in shown and "wr1ter" not in shown, shown
