"""Alembic, driven from code: upgrade, downgrade, revision, history, current, check."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from sqlalchemy import create_engine, pool

# Alembic is imported where it is used: it costs ~0.5 s, and most commands never need it.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str, stdout: Any = None) -> Config:
    from alembic.config import Config

    cfg = Config(stdout=stdout or io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["url"] = url
    return cfg


def head_revision() -> str | None:
    return _script().get_current_head()


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "-1") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def revision(url: str, message: str, autogenerate: bool = False) -> list[str]:
    """Write a new revision file; return its path(s)."""
    from alembic import command

    scripts = command.revision(alembic_config(url), message=message, autogenerate=autogenerate)
    items = scripts if isinstance(scripts, list) else [scripts]
    return [s.path for s in items if s is not None]


class Revision(TypedDict):
    """One migration of the history."""

    revision: str
    down_revision: str | list[str] | tuple[str, ...] | None
    message: str
    is_head: bool


class CheckResult(TypedDict):
    """Where the database stands against head and the models."""

    ok: bool
    current: str | None
    head: str | None
    differences: list[str]


def history() -> list[Revision]:
    script = _script()
    return [
        Revision(
            revision=rev.revision,
            down_revision=rev.down_revision,
            message=rev.doc,
            is_head=rev.is_head,
        )
        for rev in script.walk_revisions()
    ]


def diff(url: str) -> list[Any]:
    """Differences between the models and the database (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from smartstart.db.models import Base

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(""))


def pending(url: str, target: str = "head") -> list[str]:
    """Revisions an upgrade to target would apply, oldest first."""
    current = current_revision(url)
    revs = _script().iterate_revisions(target, current or "base")
    return [r.revision for r in revs][::-1]


def reverted(url: str, target: str = "-1") -> list[str]:
    """Revisions a downgrade to target would revert, newest first."""
    current = current_revision(url)
    if current is None:
        return []
    script = _script()
    if target.startswith("-") and target[1:].isdigit():
        steps = int(target[1:])
        revs = list(script.iterate_revisions(current, "base"))
        return [r.revision for r in revs[:steps]]
    dest = None if target == "base" else target
    return [
        r.revision for r in script.iterate_revisions(current, dest or "base") if r.revision != dest
    ]


def check(url: str) -> CheckResult:
    """At head and no drift between models and database? With the differences spelt out."""
    from smartstart.db.schemadiff import differences

    current, head = current_revision(url), head_revision()
    found = [d["description"] for d in differences(url, current, head)]
    return CheckResult(
        ok=current == head and not found,
        current=current,
        head=head,
        differences=found,
    )


_WHAT = {"column": "column", "index": "index", "constraint": "constraint", "table": "table"}
_WHAT.update({"fk": "foreign key", "unique": "unique constraint", "check": "check constraint"})


def _describe(d: Any) -> str:
    """One readable line for an autogenerate difference, naming the side it is on.

    "add_*" means autogenerate would create it: it exists only in the models. "remove_*"
    means it exists only in the database (autogenerate would drop it: edit the models)."""
    if isinstance(d, list):  # column modifications come grouped
        return "; ".join(_describe(x) for x in d)
    kind, *rest = d
    if kind.startswith("modify_"):
        _, schema, table, column, info, old, new = d
        what = kind.removeprefix("modify_")
        return (
            f"differs: column {table}.{column} {what}: {old!r} in the database,"
            f" {new!r} in the models"
        )
    action, _, what = kind.partition("_")
    side = "only in the models" if action == "add" else "only in the database"
    if what == "column":
        table, column = rest[-2], rest[-1]
        return f"{side}: column {table}.{column.name}"
    obj = rest[-1] if rest else None
    name = getattr(obj, "name", None) or obj
    table = getattr(getattr(obj, "table", None), "name", None)
    return f"{side}: {_WHAT.get(what, what)} {name}" + (f" on {table}" if table else "")


def catalog_drift(url: str) -> list[str]:
    """Triggers and CHECK constraints missing, disabled or unexpected (Alembic ignores them)."""
    from smartstart.db.schemadiff import catalog_differences

    return [d["description"] for d in catalog_differences(url)]


def catalog_rows(url: str) -> tuple[list[tuple[str, str, str]], set[tuple[str, str]]]:
    """(table, trigger, enabled) of every user trigger, and (table, name) of every CHECK."""
    from sqlalchemy import text

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            triggers = [
                (str(r[0]), str(r[1]), str(r[2]))
                for r in conn.execute(
                    text(
                        "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t"
                        " JOIN pg_class c ON c.oid = t.tgrelid"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = current_schema() AND NOT t.tgisinternal"
                    )
                )
            ]
            checks = {
                (str(r[0]), str(r[1]))
                for r in conn.execute(
                    text(
                        "SELECT c.relname, k.conname FROM pg_constraint k"
                        " JOIN pg_class c ON c.oid = k.conrelid"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = current_schema() AND k.contype = 'c'"
                    )
                )
            }
    finally:
        engine.dispose()
    return triggers, checks
