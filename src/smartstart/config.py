"""Settings, read from `SMARTSTART_*` environment variables and `.env`."""

from __future__ import annotations

import os
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

UNSAFE_DEFAULT_PASSWORD = "smartstart_password"  # noqa: S105 - the guide's documented default
ENV_PREFIX = "smartstart_"


def _from_environment(env_file: str | Path | None) -> dict[str, str]:
    """`SMARTSTART_*` values (names in any case): the environment's over those of env_file."""
    found: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        found.update((k.lower(), v) for k, v in dotenv_values(env_file).items() if v is not None)
    found.update((k.lower(), v) for k, v in os.environ.items())
    return {
        name: value
        for key, value in found.items()
        if key.startswith(ENV_PREFIX) and (name := key[len(ENV_PREFIX) :]) in Settings.model_fields
    }


class Settings(BaseModel):
    """Everything configurable; defaults are the guide's development setup.

    Read from `SMARTSTART_*` environment variables, then `.env`, then the defaults; what
    the constructor is given wins. (A plain model rather than pydantic-settings, whose
    import alone costs a CLI command about a sixth of its start-up.)
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def __init__(self, _env_file: str | Path | None = ".env", **values: Any) -> None:
        super().__init__(**{**_from_environment(_env_file), **values})

    env: Literal["development", "test", "production"] = "development"
    database_url: SecretStr | None = None
    home: Path = Path(".smartstart")
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_host: str = "127.0.0.1"
    pg_bin: Path | None = None
    pg_user: str = "postgres"  # OS user that runs the embedded server when we are root
    db_name: str = "smartstart_db"
    db_user: str = "smartstart_user"
    db_password: SecretStr = SecretStr(UNSAFE_DEFAULT_PASSWORD)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=5002, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)
    api_access_log: bool = True  # a line per request in the Brain's log
    admin_password: SecretStr | None = None
    session_lifetime_hours: float = Field(default=24.0, gt=0)
    session_idle_minutes: float = Field(default=120.0, gt=0)
    cookie_secure: bool = False
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    # Signs cursors, CSRF tokens and device cookies; generated into $SMARTSTART_HOME when unset.
    secret_key: SecretStr | None = Field(default=None, min_length=32)
    # Peers whose X-Forwarded-For the Brain believes (comma-separated IPs or CIDRs).
    trusted_proxies: str = ""
    # Browser origins (scheme://host[:port], comma-separated) allowed to call the API; none
    # by default. "*" allows any origin, but then without cookies.
    cors_origins: str = ""
    # Bounds on the Brain's database work: a lock held elsewhere is a 409, not a hang.
    # 0 sends no setting (e.g. behind a PgBouncer that refuses the `options` parameter).
    api_lock_timeout_ms: int = Field(default=3000, ge=0, le=600_000)
    api_statement_timeout_ms: int = Field(default=30_000, ge=0, le=3_600_000)
    # The embedded cluster archives every WAL segment into $SMARTSTART_HOME/wal (point-in-time
    # recovery); takes effect at the server's next start.
    wal_archive: bool = True
    # The Brain's log: JSON lines (json), lines for a person (text), or json unless
    # its stderr is a terminal (auto).
    log_format: Literal["auto", "json", "text"] = "auto"
    # Scheduled jobs, run by the Brain exactly once per slot however many workers
    # (services/scheduler.py). Unset: on when SMARTSTART_ENV=production, off otherwise.
    schedule_enabled: bool | None = None
    schedule_poll_seconds: float = Field(default=30.0, gt=0, le=3600)
    # A slot missed (the Brain was down) is still run this long after its time.
    schedule_grace_minutes: float = Field(default=60.0, ge=0)
    # Cron expressions (UTC; a sixth field is seconds); empty: that job never runs.
    backup_schedule: str = "0 3 * * *"
    backup_keep: int = Field(default=7, ge=1, le=10_000)  # scheduled backups kept
    cleanup_schedule: str = "30 3 * * *"
    cleanup_audit_days: int = Field(default=30, ge=1, le=100_000)
    cleanup_inactive_days: int = Field(default=90, ge=1, le=100_000)
    # Statistics history (`db stats --since`): the Brain's scheduler snapshots
    # pg_stat_statements and table sizes at these slots (cron, UTC; empty: never), and keeps
    # them this long.
    stats_snapshot_schedule: str = "*/5 * * * *"
    stats_retention_days: float = Field(default=7.0, gt=0, le=3650)
    # /metrics' health gauges are recomputed in the background at most this often (0: off).
    health_metrics_seconds: float = Field(default=60.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        if (
            self.env == "production"
            and self.database_url is None
            and (self.db_password.get_secret_value() == UNSAFE_DEFAULT_PASSWORD)
        ):
            raise ValueError(
                "SMARTSTART_DB_PASSWORD is the guide's default password; "
                "set a real one (or SMARTSTART_DATABASE_URL) when SMARTSTART_ENV=production"
            )
        if self.env == "production" and not self.cookie_secure:
            raise ValueError("SMARTSTART_COOKIE_SECURE must be true when SMARTSTART_ENV=production")
        if self.env == "production" and self.bcrypt_rounds < 12:
            raise ValueError("SMARTSTART_BCRYPT_ROUNDS below 12 is for tests only")
        self.trusted_networks()  # a typo must stop the start, not silently trust nobody
        if self.scheduler_on:  # croniter takes ~0.1 s to import: not for every command
            self._check_schedules()
        self.cors_origin_list()
        return self

    @property
    def scheduler_on(self) -> bool:
        """Whether the Brain runs the scheduled jobs."""
        if self.schedule_enabled is None:
            return self.env == "production"
        return self.schedule_enabled

    def _check_schedules(self) -> None:
        from croniter import croniter

        for name in ("backup_schedule", "cleanup_schedule", "stats_snapshot_schedule"):
            cron = getattr(self, name).strip()
            if cron and ("\x00" in cron or len(cron) > 200 or not croniter.is_valid(cron)):
                raise ValueError(
                    f"SMARTSTART_{name.upper()}: {cron[:80]!r} is not a cron expression "
                    "(e.g. '0 3 * * *': minute hour day month weekday, UTC)"
                )

    def trusted_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """SMARTSTART_TRUSTED_PROXIES as networks."""
        out = []
        for item in self.trusted_proxies.split(","):
            if item.strip():
                try:
                    out.append(ip_network(item.strip(), strict=False))
                except ValueError as e:
                    raise ValueError(f"SMARTSTART_TRUSTED_PROXIES: {item.strip()!r}: {e}") from e
        return tuple(out)

    def cors_origin_list(self) -> list[str]:
        """SMARTSTART_CORS_ORIGINS as origins (no path, no trailing slash)."""
        out = []
        for item in self.cors_origins.split(","):
            origin = item.strip()
            if not origin:
                continue
            if origin != "*" and (
                not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1]
            ):
                raise ValueError(
                    f"SMARTSTART_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com"
                )
            out.append(origin)
        return out

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def embedded(self) -> bool:
        """True when SmartStart runs its own PostgreSQL."""
        return self.database_url is None

    def url_for(self, dbname: str | None = None) -> str:
        """libpq URL for the platform database (or another database on the same server)."""
        if self.database_url is not None:
            url = self.database_url.get_secret_value()
            if dbname is None:
                return url
            return _replace_dbname(url, dbname)
        password = quote(self.db_password.get_secret_value(), safe="")
        return (
            f"postgresql://{quote(self.db_user, safe='')}:{password}"
            f"@{self.pg_host}:{self.pg_port}/{dbname or self.db_name}"
        )

    def sqlalchemy_url(self, dbname: str | None = None) -> str:
        url = self.url_for(dbname)
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url


def _replace_dbname(url: str, dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=dbname).render_as_string(hide_password=False)


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, with what the embedded cluster recorded filled in."""
    from smartstart import recorded

    return recorded.apply(Settings())
