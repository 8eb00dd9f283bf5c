"""Whole-database operations on the platform database: counts and reset."""

from __future__ import annotations

import contextlib
from typing import Any, NotRequired, TypedDict

import psycopg
from psycopg import sql

from smartstart.config import Settings
from smartstart.db.engine import connect
from smartstart.errors import SmartStartError


def table_counts(settings: Settings) -> dict[str, int]:
    """Exact row count of every table in the public schema."""
    with connect(settings) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        counts: dict[str, int] = {}
        for name in names:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
            ).fetchone()
            counts[name] = int(row[0]) if row else 0
        return counts


class ResetResult(TypedDict):
    """What `reset` made: the database, its revision, and the seed's credentials if any."""

    database: str
    revision: str | None
    seeded: bool
    credentials: dict[str, str]
    credentials_file: str | None
    credentials_kept: NotRequired[str | None]  # the previous credentials file, kept dated


def reset(
    settings: Settings, *, seed: bool = True, force: bool = False, empty: bool = False
) -> ResetResult:
    """Drop and recreate the platform database, migrate it and (optionally) seed it.

    empty: no migration and no seed either, the target of a restore from a plain dump.
    """
    from smartstart.services import database

    if settings.embedded:
        cluster = database.cluster_for(settings)
        database.start_database(settings)
        with cluster.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(settings.db_name)
                )
            )
        database.start_database(settings)  # recreates the database, owner and extension
    else:
        if not force:
            raise SmartStartError(
                "refusing to reset a database SmartStart does not manage (SMARTSTART_DATABASE_URL)",
                "add --force if you really mean to drop every table in it",
            )
        with connect(settings, autocommit=True) as conn:
            _recreate_public_schema(conn)
    if empty:
        return {
            "database": settings.db_name,
            "revision": None,
            "seeded": False,
            "credentials": {},
            "credentials_file": None,
        }
    ready = database.ensure_database(settings, seed_if_empty=seed)
    return {
        "database": settings.db_name,
        "revision": ready.revision,
        "seeded": ready.seeded,
        "credentials": ready.credentials,
        "credentials_file": str(ready.credentials_file) if ready.credentials_file else None,
        "credentials_kept": str(ready.credentials_kept) if ready.credentials_kept else None,
    }


def _recreate_public_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    with contextlib.suppress(psycopg.Error):  # monitoring is optional on a server not ours
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
