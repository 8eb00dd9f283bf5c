"""`smartstart security check`: the security advisor.

Findings are checks as data, like health's: server checks (pg.advisor), the platform's
(domain.security) and the deployment's settings (here), run and judged by smartstart.health
into OK / WARN / CRIT with the fix. How severe a finding is depends on the deployment: the
guide's default password is a warning on a development laptop and critical in production or
on a server reachable from the network, so the thresholds are chosen per settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import psycopg

from smartstart import health
from smartstart.config import UNSAFE_DEFAULT_PASSWORD, Settings
from smartstart.domain import passwords
from smartstart.domain import security as platform
from smartstart.errors import SmartStartError
from smartstart.pg import advisor as server
from smartstart.pg.checks import Check, Detail, Measurement

# The guide's own credentials: its URL's user and its read-only user.
GUIDE_CREDENTIALS = (
    ("smartstart_user", UNSAFE_DEFAULT_PASSWORD),
    ("readonly_user", "readonly_password"),
)
TIMEOUT = 5.0


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return host.startswith("/")  # a Unix socket directory


def exposed(settings: Settings) -> bool:
    """Whether the database or the Brain can be reached from beyond this machine."""
    return not (_loopback(_db_host(settings)) and _loopback(settings.api_host))


def _db_host(settings: Settings) -> str:
    info = psycopg.conninfo.conninfo_to_dict(settings.url_for())
    return str(info.get("host") or "")


def _weak(password: str) -> str | None:
    try:
        passwords.validate(password)
    except SmartStartError as e:
        return e.message
    return None


def database_passwords(settings: Settings) -> Callable[[psycopg.Connection[Any]], Measurement]:
    """The app's password (the guide's default, or weak), and the guide's default
    credentials tried against the server itself (its read-only user's, say)."""

    def run(_: psycopg.Connection[Any]) -> Measurement:
        info = psycopg.conninfo.conninfo_to_dict(settings.url_for())
        user, password = str(info.get("user") or ""), str(info.get("password") or "")
        found: list[Detail] = []
        if password == UNSAFE_DEFAULT_PASSWORD:
            found.append({"role": user, "problem": "the guide's default password"})
        elif password and (why := _weak(password)):
            found.append({"role": user, "problem": f"weak password: {why}"})
        for role, default in GUIDE_CREDENTIALS:
            if role == user:
                continue
            params = {**info, "user": role, "password": default, "connect_timeout": 3}
            with contextlib.suppress(psycopg.Error):
                psycopg.connect(**params).close()  # type: ignore[arg-type]
                found.append({"role": role, "problem": "accepts the guide's default password"})
        fix = None
        if found:
            weakest = str(found[0]["role"])
            fix = (
                f"ALTER ROLE \"{weakest}\" PASSWORD '…';  (as a superuser; for the app's role "
                "set SMARTSTART_DB_PASSWORD, and `smartstart db start` applies it)"
                if weakest == user and settings.embedded
                else f"ALTER ROLE \"{weakest}\" PASSWORD '…';  (or smartstart security "
                f"readonly-user {weakest} --password … for a read-only user)"
            )
        return Measurement(float(len(found)), "roles", tuple(found), fix=fix)

    return run


def production_settings(settings: Settings) -> Callable[[psycopg.Connection[Any]], Measurement]:
    """SMARTSTART_ENV, cookie security and trusted proxies, for a Brain others can reach."""

    def run(_: psycopg.Connection[Any]) -> Measurement:
        found: list[Detail] = []
        reachable = not _loopback(settings.api_host)
        if reachable and settings.env != "production":
            found.append(
                {
                    "setting": "SMARTSTART_ENV",
                    "value": settings.env,
                    "problem": f"the Brain listens on {settings.api_host}; production refuses "
                    "default passwords, insecure cookies and weak bcrypt costs",
                }
            )
        if reachable and not settings.cookie_secure:
            found.append(
                {
                    "setting": "SMARTSTART_COOKIE_SECURE",
                    "value": "false",
                    "problem": "session cookies would travel over plain HTTP",
                }
            )
        for network in settings.trusted_networks():
            if network.prefixlen < (8 if network.version == 4 else 32):
                found.append(
                    {
                        "setting": "SMARTSTART_TRUSTED_PROXIES",
                        "value": str(network),
                        "problem": "trusts X-Forwarded-For from far too many addresses: "
                        "clients can choose the address they are throttled and audited under",
                    }
                )
        fix = None
        if found:
            fix = {
                "SMARTSTART_ENV": "set SMARTSTART_ENV=production",
                "SMARTSTART_COOKIE_SECURE": "set SMARTSTART_COOKIE_SECURE=true (serve over HTTPS)",
                "SMARTSTART_TRUSTED_PROXIES": "list only your reverse proxies' addresses in "
                "SMARTSTART_TRUSTED_PROXIES",
            }[str(found[0]["setting"])]
        return Measurement(float(len(found)), "settings", tuple(found), fix=fix)

    return run


def _as_superuser(
    settings: Settings, check: Callable[[psycopg.Connection[Any]], Measurement]
) -> Callable[[psycopg.Connection[Any]], Measurement]:
    """On the embedded cluster, a superuser-only check runs through the local superuser."""
    if not settings.embedded:
        return check

    def run(_: psycopg.Connection[Any]) -> Measurement:
        from smartstart.services.database import cluster_for

        with cluster_for(settings).connect(settings.db_name) as conn:
            return check(conn)

    return run


def checks(settings: Settings) -> tuple[Check, ...]:
    """Every finding, with thresholds for this deployment."""
    serious = settings.env == "production" or exposed(settings)
    passwords_limits = {"crit": 1.0} if serious else {"warn": 1.0}
    return (
        Check(
            "database_passwords",
            "Default or weak database passwords",
            database_passwords(settings),
            **passwords_limits,  # type: ignore[arg-type]
        ),
        Check("app_superuser", "The app connects as a superuser", server.app_superuser, crit=1),
        Check(
            "create_on_public",
            "Roles that may create in schema public",
            server.create_on_public,
            warn=1,
        ),
        Check(
            "listen_addresses", "Server listens beyond loopback", server.listen_addresses, warn=1
        ),
        Check("ssl", "SSL off on a non-loopback server", server.ssl_exposed, crit=1),
        Check(
            "hba_trust",
            "trust lines in pg_hba.conf",
            _as_superuser(settings, server.hba_trust),
            crit=1,
        ),
        Check(
            "mutable_search_path",
            "Functions with a mutable search_path",
            server.mutable_search_path,
            warn=1,
        ),
        *platform.CHECKS,
        Check(
            "production_settings",
            "Production settings of the Brain",
            production_settings(settings),
            warn=1,
        ),
    )


def run(settings: Settings) -> list[health.CheckResult]:
    """Run every finding concurrently, each under its own statement timeout, and judge it."""
    return health.run(settings, checks(settings), health.HealthConfig(timeout=TIMEOUT))


def exit_code(results: list[health.CheckResult]) -> int:
    """2 on a CRIT finding; 0 otherwise (warnings are advice)."""
    return 2 if health.worst(results) is health.State.CRIT else 0
