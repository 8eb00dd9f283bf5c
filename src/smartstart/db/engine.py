"""Connections to the platform database, with errors a person can act on."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.config import Settings, get_settings
from smartstart.errors import DatabaseUnavailable


def explain_connect_error(err: Exception, settings: Settings) -> DatabaseUnavailable:
    """Turn a driver error into a cause and a fix a person can act on."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
    target = "SMARTSTART_DATABASE_URL" if not settings.embedded else "the embedded server"
    if "password authentication failed" in text:
        return DatabaseUnavailable(
            f"{target} refused the password for user {settings.db_user!r}"
            if settings.embedded
            else f"the server refused the credentials in SMARTSTART_DATABASE_URL: {text}",
            "run `smartstart doctor --fix`: it sets that user's password to "
            "SMARTSTART_DB_PASSWORD through the local superuser"
            if settings.embedded
            else "correct the user/password in SMARTSTART_DATABASE_URL",
        )
    if "does not exist" in text and "database" in text:
        return DatabaseUnavailable(
            text,
            "run `smartstart doctor --fix` (it creates the database and migrates it)"
            if settings.embedded
            else "create the database on that server (`smartstart doctor` shows the SQL)",
        )
    if "Connection refused" in text or "could not connect" in text or "timeout" in text.lower():
        return DatabaseUnavailable(
            f"cannot reach {target}: {text}",
            "run `smartstart db start` (`smartstart doctor` tells why it is down)"
            if settings.embedded
            else "check that the server in SMARTSTART_DATABASE_URL is running and reachable "
            "(`smartstart doctor` checks its host, port and credentials separately)",
        )
    return DatabaseUnavailable(f"cannot connect to {target}: {text}")


def connect(
    settings: Settings | None = None, dbname: str | None = None, **kwargs: Any
) -> psycopg.Connection[tuple[Any, ...]]:
    """A plain psycopg connection to the platform database, with readable errors."""
    settings = settings or get_settings()
    try:
        return psycopg.connect(settings.url_for(dbname), connect_timeout=5, **kwargs)
    except psycopg.OperationalError as e:
        raise explain_connect_error(e, settings) from e
