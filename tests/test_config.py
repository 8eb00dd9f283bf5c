"""Settings: defaults are the guide's, unsafe ones are refused outside development."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from smartstart.config import Settings


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


def test_defaults_are_the_guides_connection() -> None:
    s = make()
    assert s.embedded
    assert s.url_for() == (
        "postgresql://smartstart_user:smartstart_password@127.0.0.1:5432/smartstart_db"
    )
    assert s.api_port == 5002


def test_password_with_url_metacharacters_is_quoted() -> None:
    s = make(db_password=SecretStr("p@ss:w/rd#"))
    assert "p%40ss%3Aw%2Frd%23@" in s.url_for()


def test_external_url_is_used_verbatim_and_other_databases_derived() -> None:
    s = make(database_url=SecretStr("postgresql://u:p@db.internal:6543/app"))
    assert not s.embedded
    assert s.url_for() == "postgresql://u:p@db.internal:6543/app"
    assert s.url_for("other") == "postgresql://u:p@db.internal:6543/other"
    assert s.sqlalchemy_url().startswith("postgresql+psycopg://u:p@db.internal:6543/")


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTSTART_PG_PORT", "6000")
    monkeypatch.setenv("SMARTSTART_API_PORT", "7000")
    s = make()
    assert (s.pg_port, s.api_port) == (6000, 7000)


def test_bad_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTSTART_PG_PORT", "99999")
    with pytest.raises(ValidationError, match="pg_port"):
        make()


def test_production_refuses_the_guides_default_password() -> None:
    with pytest.raises(ValidationError, match="SMARTSTART_DB_PASSWORD"):
        make(env="production", cookie_secure=True)


def test_production_refuses_insecure_cookies() -> None:
    with pytest.raises(ValidationError, match="SMARTSTART_COOKIE_SECURE"):
        make(env="production", db_password=SecretStr("a real secret"))


def test_production_with_real_settings_is_accepted() -> None:
    s = make(env="production", db_password=SecretStr("a real secret"), cookie_secure=True)
    assert s.env == "production"
