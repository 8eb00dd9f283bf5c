"""Which role runs migrations: the owner of the platform's schema.

Before `smartstart security harden` that is the app's role, and migrations connect as it,
as always. After, the schema belongs to a NOLOGIN owner role and the app's role may only
read and write rows: on the embedded cluster migrations then connect as the local
superuser over the private socket and act as the owner (`role` set at connection start),
so every object they create belongs to the owner.
"""

from __future__ import annotations

from urllib.parse import quote

from smartstart.config import Settings
from smartstart.db.engine import connect
from smartstart.errors import DatabaseUnavailable, SmartStartError
from smartstart.pg import security
from smartstart.pg.cluster import SUPERUSER, Cluster


def schema_owner(settings: Settings) -> str | None:
    """The role migrations must act as, when it is not the app's role; None otherwise."""
    with connect(settings) as conn:
        if not security.is_hardened(conn, settings.db_user):
            return None
        return security.schema_owner(conn)


def migration_url(settings: Settings) -> str:
    """The SQLAlchemy URL migrations run on."""
    url = settings.sqlalchemy_url()
    try:
        owner = schema_owner(settings)
    except DatabaseUnavailable:
        return url  # the caller's own connection reports it, with its fix
    if owner is None:
        return url
    if not settings.embedded:
        raise SmartStartError(
            f"the schema belongs to {owner!r} (hardened): {settings.db_user!r} may only read "
            "and write rows, not run migrations",
            f"run them with SMARTSTART_DATABASE_URL naming {owner!r} or a role that can SET "
            f"ROLE {owner}",
        )
    cluster = Cluster.from_settings(settings)
    options = quote(f"-c role={owner}", safe="")
    return (
        f"postgresql+psycopg://{SUPERUSER}@/{quote(settings.db_name, safe='')}"
        f"?host={quote(str(cluster.socket_dir), safe='')}&port={cluster.port}&options={options}"
    )
