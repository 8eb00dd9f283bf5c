"""Alembic, driven from code: upgrade, downgrade, revision, history, current, check."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str, stdout: Any = None) -> Config:
    cfg = Config(stdout=stdout or io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["url"] = url
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(url: str) -> str | None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "-1") -> None:
    command.downgrade(alembic_config(url), revision)


def revision(url: str, message: str, autogenerate: bool = False) -> list[str]:
    """Write a new revision file; return its path(s)."""
    scripts = command.revision(alembic_config(url), message=message, autogenerate=autogenerate)
    items = scripts if isinstance(scripts, list) else [scripts]
    return [s.path for s in items if s is not None]


def history() -> list[dict[str, Any]]:
    script = ScriptDirectory.from_config(alembic_config(""))
    return [
        {
            "revision": rev.revision,
            "down_revision": rev.down_revision,
            "message": rev.doc,
            "is_head": rev.is_head,
        }
        for rev in script.walk_revisions()
    ]


def diff(url: str) -> list[Any]:
    """Differences between the models and the database (empty when they agree)."""
    from alembic.autogenerate import compare_metadata

    from smartstart.db.models import Base

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()
