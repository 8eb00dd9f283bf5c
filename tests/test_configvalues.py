"""Settings without pydantic on the way: the same values and the same errors as the pydantic
model they were (kept here as the reference), for every field and many spellings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from smartstart import config
from smartstart.config import UNSAFE_DEFAULT_PASSWORD, Settings
from smartstart.configvalues import Secret, fields_of


class Reference(BaseModel):
    """config.Settings as the pydantic model it was (its fields verbatim)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    env: Literal["development", "test", "production"] = "development"
    database_url: SecretStr | None = None
    home: Path = Path(".smartstart")
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_host: str = "127.0.0.1"
    pg_bin: Path | None = None
    pg_user: str = "postgres"
    db_name: str = "smartstart_db"
    db_user: str = "smartstart_user"
    db_password: SecretStr = SecretStr(UNSAFE_DEFAULT_PASSWORD)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=5002, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)
    api_access_log: bool = True
    admin_password: SecretStr | None = None
    session_lifetime_hours: float = Field(default=24.0, gt=0)
    session_idle_minutes: float = Field(default=120.0, gt=0)
    cookie_secure: bool = False
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    secret_key: SecretStr | None = Field(default=None, min_length=32)
    trusted_proxies: str = ""
    cors_origins: str = ""
    api_lock_timeout_ms: int = Field(default=3000, ge=0, le=600_000)
    api_statement_timeout_ms: int = Field(default=30_000, ge=0, le=3_600_000)
    wal_archive: bool = True
    log_format: Literal["auto", "json", "text"] = "auto"
    schedule_enabled: bool | None = None
    schedule_poll_seconds: float = Field(default=30.0, gt=0, le=3600)
    schedule_grace_minutes: float = Field(default=60.0, ge=0)
    backup_schedule: str = "0 3 * * *"
    backup_keep: int = Field(default=7, ge=1, le=10_000)
    cleanup_schedule: str = "30 3 * * *"
    cleanup_audit_days: int = Field(default=30, ge=1, le=100_000)
    cleanup_inactive_days: int = Field(default=90, ge=1, le=100_000)
    stats_snapshot_schedule: str = "*/5 * * * *"
    stats_retention_days: float = Field(default=7.0, gt=0, le=3650)
    health_metrics_seconds: float = Field(default=60.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Reference:
        config.check(self)  # the model's validator, moved verbatim into a function
        return self


Reference.__name__ = "Settings"  # how its errors are titled
Reference.model_rebuild(force=True)

SPELLINGS: list[Any] = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "+5",
    "4",
    "16",
    "17",
    "64",
    "65",
    "5432",
    " 5432",
    "05432",
    "1_000",
    "65535",
    "65536",
    "99999999999999999999",
    "5432.0",
    "1.5",
    "0.0",
    ".5",
    "30.",
    "1e3",
    "inf",
    "nan",
    "-0",
    "true",
    "True",
    "TRUE",
    " true",
    "false",
    "yes",
    "no",
    "on",
    "off",
    "t",
    "f",
    "y",
    "n",
    "2",
    "maybe",
    "development",
    "test",
    "production",
    "Production",
    "auto",
    "json",
    "text",
    "x" * 31,
    "x" * 32,
    "a\x00b",
    "/srv/smartstart",
    "~/x",
    "٥",
    "10.0.0.0/8",
    "10.0.0.1, not-an-ip",
    "https://app.example.com",
    "https://app.example.com/",
    "*",
    "0 3 * * *",
    "every day",
    0,
    1,
    -1,
    5432,
    70000,
    10**20,
    1.5,
    0.0,
    float("inf"),
    float("nan"),
    True,
    False,
    None,
    b"bytes",
    Path("/srv"),
    SecretStr("s" * 32),
    SecretStr("short"),
    ["a list"],
]


def outcome(make: Any, values: dict[str, Any]) -> tuple[str, Any]:
    """('ok', every field's value) or ('error', the error's text)."""
    try:
        made = make(**values)
    except ValidationError as e:
        return "error", str(e)
    shown = {}
    for name in fields_of(Settings):
        value = getattr(made, name)
        if hasattr(value, "get_secret_value"):
            value = ("secret", value.get_secret_value())
        elif isinstance(value, float) and value != value:
            value = "nan"
        shown[name] = (type(value).__name__, value)
    return "ok", shown


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_the_fields_are_the_models() -> None:
    assert list(fields_of(Settings)) == list(Reference.model_fields)
    assert outcome(settings, {}) == outcome(Reference, {})


@pytest.mark.parametrize("name", list(Reference.model_fields))
def test_every_spelling_of_every_field_is_taken_or_refused_alike(name: str) -> None:
    for value in SPELLINGS:
        assert outcome(settings, {name: value}) == outcome(Reference, {name: value}), value


@pytest.mark.parametrize(
    "values",
    [
        {"env": "production"},
        {"env": "production", "cookie_secure": "true"},
        {"env": "production", "db_password": "a real one", "cookie_secure": True},
        {
            "env": "production",
            "db_password": "a real one",
            "cookie_secure": "1",
            "bcrypt_rounds": 11,
        },
        {"env": "production", "database_url": "postgresql://u:p@h/d", "cookie_secure": "yes"},
        {"env": "production", "db_password": "x", "cookie_secure": True, "pg_port": "0"},
        {"trusted_proxies": "10.0.0.1, not-an-ip"},
        {"cors_origins": "https://a.example, ftp://b"},
        {"schedule_enabled": "true", "backup_schedule": "every day"},
        {"schedule_enabled": "true", "cleanup_schedule": "0 3 * *\x00 *"},
        {"env": "production", "db_password": "x", "cookie_secure": True, "backup_schedule": "x"},
        {"pg_port": "99999", "api_port": "0", "env": "staging"},
        {"secret_key": "short", "home": "", "not_a_setting": object()},
    ],
)
def test_values_together_are_taken_or_refused_alike(values: dict[str, Any]) -> None:
    assert outcome(settings, values) == outcome(Reference, values)


def test_a_copy_updates_without_checking_and_remembers_what_was_given() -> None:
    given = settings(pg_port="6000")
    copied = given.model_copy(update={"db_name": "other"})
    assert given.model_fields_set == {"pg_port"}
    assert copied.model_fields_set == {"pg_port", "db_name"}
    assert (copied.pg_port, copied.db_name, given.db_name) == (6000, "other", "smartstart_db")
    assert copied != given and copied.model_copy(update={"db_name": "smartstart_db"}) == given


def test_secrets_are_not_shown() -> None:
    made = settings(db_password="hunter2 hunter2", secret_key="k" * 40)
    assert "hunter2" not in repr(made) and "k" * 40 not in repr(made)
    assert made.db_password.get_secret_value() == "hunter2 hunter2"
    assert made.db_password == SecretStr("hunter2 hunter2")
    with pytest.raises(ValidationError) as refused:  # pydantic's words, with the secrets
        settings(db_password=made.db_password, secret_key=Secret("short secret"), pg_port="x")
    assert "hunter2" not in str(refused.value) and "short secret" not in str(refused.value)


def test_reading_the_settings_imports_no_pydantic() -> None:
    code = (
        "import sys\n"
        "from smartstart.config import Settings\n"
        "Settings(_env_file=None, pg_port='6000', cookie_secure='true', secret_key='k' * 40)\n"
        "print('pydantic' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
