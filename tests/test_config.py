"""Settings: defaults are the guide's, unsafe ones are refused outside development."""

from __future__ import annotations

from pathlib import Path

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


def test_dotenv_under_the_environment_under_the_constructor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SMARTSTART_PG_PORT=6100\nsmartstart_api_port=7100\nSMARTSTART_DB_NAME=from_file\n"
        "SMARTSTART_NOT_A_SETTING=ignored\nOTHER=ignored\n"
    )
    monkeypatch.setenv("SMARTSTART_DB_NAME", "from_env")
    monkeypatch.setenv("smartstart_api_workers", "3")  # names in any case
    s = Settings(_env_file=env_file, db_user="given")
    assert (s.pg_port, s.api_port, s.db_name, s.api_workers) == (6100, 7100, "from_env", 3)
    assert s.db_user == "given"
    assert Settings(_env_file=env_file, pg_port=6200).pg_port == 6200
    assert Settings(_env_file=None).pg_port == 5432  # no file: the default
    monkeypatch.chdir(tmp_path)
    assert Settings().pg_port == 6100  # ./.env by default


def test_values_from_the_environment_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTSTART_COOKIE_SECURE", "true")
    monkeypatch.setenv("SMARTSTART_SESSION_IDLE_MINUTES", "30")
    monkeypatch.setenv("SMARTSTART_HOME", "/srv/smartstart")
    monkeypatch.setenv("SMARTSTART_DB_PASSWORD", "from the environment")
    s = make()
    assert s.cookie_secure is True and s.session_idle_minutes == 30.0
    assert s.home == Path("/srv/smartstart")
    assert s.db_password.get_secret_value() == "from the environment"
    monkeypatch.setenv("SMARTSTART_COOKIE_SECURE", "maybe")
    with pytest.raises(ValidationError, match="cookie_secure"):
        make()
