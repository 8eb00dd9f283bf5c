"""Settings, read from `SMARTSTART_*` environment variables and `.env`."""

from __future__ import annotations

import os
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from smartstart.configvalues import Limits, Secret, fields_of, validate

UNSAFE_DEFAULT_PASSWORD = "smartstart_password"  # noqa: S105 - the guide's documented default
ENV_PREFIX = "smartstart_"
__all__ = ["ENV_PREFIX", "UNSAFE_DEFAULT_PASSWORD", "Secret", "Settings", "get_settings"]


def _from_environment(env_file: str | Path | None) -> dict[str, str]:
    """`SMARTSTART_*` values (names in any case): the environment's over those of env_file."""
    found: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        found.update((k.lower(), v) for k, v in dotenv_values(env_file).items() if v is not None)
    found.update((k.lower(), v) for k, v in os.environ.items())
    names = fields_of(Settings)
    return {
        name: value
        for key, value in found.items()
        if key.startswith(ENV_PREFIX) and (name := key[len(ENV_PREFIX) :]) in names
    }


class Settings:
    """Everything configurable; defaults are the guide's development setup.

    Read from `SMARTSTART_*` environment variables, then `.env`, then the defaults; what
    the constructor is given wins; names it does not know are ignored. Values are checked
    as the pydantic model of these fields would (configvalues.py: the usual values without
    importing pydantic, whose import and model are a sixth of a CLI command's start-up;
    anything else by pydantic, which raises its ValidationError).
    """

    env: Literal["development", "test", "production"] = "development"
    database_url: Secret | None = None
    home: Path = Path(".smartstart")
    pg_port: Annotated[int, Limits(ge=1, le=65535)] = 5432
    pg_host: str = "127.0.0.1"
    pg_bin: Path | None = None
    pg_user: str = "postgres"  # OS user that runs the embedded server when we are root
    db_name: str = "smartstart_db"
    db_user: str = "smartstart_user"
    db_password: Secret = Secret(UNSAFE_DEFAULT_PASSWORD)
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Limits(ge=1, le=65535)] = 5002
    api_workers: Annotated[int, Limits(ge=1, le=64)] = 1
    api_access_log: bool = True  # a line per request in the Brain's log
    admin_password: Secret | None = None
    session_lifetime_hours: Annotated[float, Limits(gt=0)] = 24.0
    session_idle_minutes: Annotated[float, Limits(gt=0)] = 120.0
    cookie_secure: bool = False
    bcrypt_rounds: Annotated[int, Limits(ge=4, le=16)] = 12
    # Signs cursors, CSRF tokens and device cookies; generated into $SMARTSTART_HOME when unset.
    secret_key: Annotated[Secret | None, Limits(min_length=32)] = None
    # Peers whose X-Forwarded-For the Brain believes (comma-separated IPs or CIDRs).
    trusted_proxies: str = ""
    # Browser origins (scheme://host[:port], comma-separated) allowed to call the API; none
    # by default. "*" allows any origin, but then without cookies.
    cors_origins: str = ""
    # Bounds on the Brain's database work: a lock held elsewhere is a 409, not a hang.
    # 0 sends no setting (e.g. behind a PgBouncer that refuses the `options` parameter).
    api_lock_timeout_ms: Annotated[int, Limits(ge=0, le=600_000)] = 3000
    api_statement_timeout_ms: Annotated[int, Limits(ge=0, le=3_600_000)] = 30_000
    # The embedded cluster archives every WAL segment into $SMARTSTART_HOME/wal (point-in-time
    # recovery); takes effect at the server's next start.
    wal_archive: bool = True
    # The Brain's log: JSON lines (json), lines for a person (text), or json unless
    # its stderr is a terminal (auto).
    log_format: Literal["auto", "json", "text"] = "auto"
    # Scheduled jobs, run by the Brain exactly once per slot however many workers
    # (services/scheduler.py). Unset: on when SMARTSTART_ENV=production, off otherwise.
    schedule_enabled: bool | None = None
    schedule_poll_seconds: Annotated[float, Limits(gt=0, le=3600)] = 30.0
    # A slot missed (the Brain was down) is still run this long after its time.
    schedule_grace_minutes: Annotated[float, Limits(ge=0)] = 60.0
    # Cron expressions (UTC; a sixth field is seconds); empty: that job never runs.
    backup_schedule: str = "0 3 * * *"
    backup_keep: Annotated[int, Limits(ge=1, le=10_000)] = 7  # scheduled backups kept
    cleanup_schedule: str = "30 3 * * *"
    cleanup_audit_days: Annotated[int, Limits(ge=1, le=100_000)] = 30
    cleanup_inactive_days: Annotated[int, Limits(ge=1, le=100_000)] = 90
    # Statistics history (`db stats --since`): the Brain's scheduler snapshots
    # pg_stat_statements and table sizes at these slots (cron, UTC; empty: never), and keeps
    # them this long.
    stats_snapshot_schedule: str = "*/5 * * * *"
    stats_retention_days: Annotated[float, Limits(gt=0, le=3650)] = 7.0
    # /metrics' health gauges are recomputed in the background at most this often (0: off).
    health_metrics_seconds: Annotated[float, Limits(ge=0, le=86_400)] = 60.0

    model_fields_set: set[str]  # the fields given (by the environment, .env or the caller)

    def __init__(self, _env_file: str | Path | None = ".env", **values: Any) -> None:
        given = {**_from_environment(_env_file), **values}
        self.__dict__.update(validate(Settings, given, check))
        self.model_fields_set = set(given) & fields_of(Settings).keys()

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Settings:
        """A copy with update's values (not checked again, as pydantic's model_copy)."""
        copied = object.__new__(Settings)
        copied.__dict__.update(self.__dict__)
        copied.model_fields_set = self.model_fields_set | set(update or ())
        copied.__dict__.update(update or {})
        return copied

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in fields_of(Settings))

    __hash__ = None  # type: ignore[assignment]  # mutable, like the model it replaces

    def __repr__(self) -> str:
        values = ", ".join(f"{f}={getattr(self, f)!r}" for f in fields_of(Settings))
        return f"Settings({values})"

    @property
    def scheduler_on(self) -> bool:
        """Whether the Brain runs the scheduled jobs."""
        return _scheduler_on(self.env, self.schedule_enabled)

    def trusted_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """SMARTSTART_TRUSTED_PROXIES as networks."""
        return _networks(self.trusted_proxies)

    def cors_origin_list(self) -> list[str]:
        """SMARTSTART_CORS_ORIGINS as origins (no path, no trailing slash)."""
        return _origins(self.cors_origins)

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


def check(s: Any) -> None:
    """What no single value shows: raises ValueError (s: the settings, or pydantic's model
    of them, whose validator words the error)."""
    if (
        s.env == "production"
        and s.database_url is None
        and (s.db_password.get_secret_value() == UNSAFE_DEFAULT_PASSWORD)
    ):
        raise ValueError(
            "SMARTSTART_DB_PASSWORD is the guide's default password; "
            "set a real one (or SMARTSTART_DATABASE_URL) when SMARTSTART_ENV=production"
        )
    if s.env == "production" and not s.cookie_secure:
        raise ValueError("SMARTSTART_COOKIE_SECURE must be true when SMARTSTART_ENV=production")
    if s.env == "production" and s.bcrypt_rounds < 12:
        raise ValueError("SMARTSTART_BCRYPT_ROUNDS below 12 is for tests only")
    _networks(s.trusted_proxies)  # a typo must stop the start, not silently trust nobody
    if _scheduler_on(s.env, s.schedule_enabled):  # croniter takes ~0.1 s to import
        _check_schedules(s)
    _origins(s.cors_origins)


def _scheduler_on(env: str, enabled: bool | None) -> bool:
    return env == "production" if enabled is None else enabled


def _check_schedules(s: Any) -> None:
    from croniter import croniter

    for name in ("backup_schedule", "cleanup_schedule", "stats_snapshot_schedule"):
        cron = getattr(s, name).strip()
        if cron and ("\x00" in cron or len(cron) > 200 or not croniter.is_valid(cron)):
            raise ValueError(
                f"SMARTSTART_{name.upper()}: {cron[:80]!r} is not a cron expression "
                "(e.g. '0 3 * * *': minute hour day month weekday, UTC)"
            )


def _networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    out = []
    for item in text.split(","):
        if item.strip():
            try:
                out.append(ip_network(item.strip(), strict=False))
            except ValueError as e:
                raise ValueError(f"SMARTSTART_TRUSTED_PROXIES: {item.strip()!r}: {e}") from e
    return tuple(out)


def _origins(text: str) -> list[str]:
    out = []
    for item in text.split(","):
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


def _replace_dbname(url: str, dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=dbname).render_as_string(hide_password=False)


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, with what the embedded cluster recorded filled in."""
    from smartstart import recorded

    return recorded.apply(Settings())
