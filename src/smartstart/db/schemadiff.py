"""What differs between the live database and the models, each difference with its side
and the SQL that would make the database match the models.

One comparison serves `db check` (the descriptions) and `db diff` (the SQL): Alembic's
autogenerate operations for what it compares (tables, columns, types, indexes, unique and
foreign keys), rendered to PostgreSQL SQL offline, and the catalog comparison of triggers and
CHECK constraints that Alembic does not make.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, Literal, TypedDict

from sqlalchemy import create_engine, pool

Side = Literal["database", "models", "both"]


class Difference(TypedDict):
    """One difference: on which side it is, the line `db check` prints, and the fix as SQL."""

    side: Side
    description: str
    sql: str


def _side(description: str) -> Side:
    if description.startswith("only in the database"):
        return "database"
    if description.startswith("only in the models"):
        return "models"
    return "both"


def _flatten(operations: list[Any]) -> Iterator[Any]:
    from alembic.operations import ops

    for op in operations:
        if isinstance(op, ops.OpContainer):  # ModifyTableOps: one per table
            yield from _flatten(op.ops)
        else:
            yield op


def _render(op: Any) -> str:
    """The PostgreSQL statements that carry out one autogenerate operation."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    out = io.StringIO()
    ctx = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": out, "literal_binds": True},
    )
    Operations(ctx).invoke(op)
    lines = [ln for ln in out.getvalue().strip().splitlines() if ln.strip()]
    return "\n".join(lines)


def model_differences(url: str) -> list[Difference]:
    """Alembic's comparison of the models with the database, each with its SQL."""
    from alembic.autogenerate import produce_migrations
    from alembic.runtime.migration import MigrationContext

    from smartstart.db.migrate import _describe
    from smartstart.db.models import Base

    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            script = produce_migrations(ctx, Base.metadata)
    finally:
        engine.dispose()
    out: list[Difference] = []
    upgrade = script.upgrade_ops
    for op in _flatten(upgrade.ops if upgrade is not None else []):
        diff = op.to_diff_tuple()
        description = _describe(diff)
        out.append(Difference(side=_side(description), description=description, sql=_render(op)))
    return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def catalog_differences(url: str) -> list[Difference]:
    """Triggers and CHECK constraints missing, disabled or unexpected, with their SQL."""
    from sqlalchemy import CheckConstraint
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import AddConstraint

    from smartstart.db.migrate import catalog_rows
    from smartstart.db.models import TRIGGERS, Base

    model_checks = {
        (t.name, str(c.name)): c
        for t in Base.metadata.sorted_tables
        for c in t.constraints
        if isinstance(c, CheckConstraint)
    }
    triggers, checks = catalog_rows(url)
    out: list[Difference] = []

    def add(description: str, statement: str) -> None:
        out.append(Difference(side=_side(description), description=description, sql=statement))

    present = {(table, name) for table, name, _ in triggers}
    for table, names in sorted(TRIGGERS.items()):
        for name in sorted(names - {n for t, n in present if t == table}):
            add(
                f"only in the models: trigger {name} on {table} (its invariant is not enforced)",
                f"-- trigger {name} on {table}: its definition is in the migrations, not the "
                "models; recreate it by migrating down past and up to the revision that made it",
            )
    for table, name, enabled in sorted(triggers):
        if name not in TRIGGERS.get(table, frozenset()):
            add(
                f"only in the database: trigger {name} on {table}",
                f"DROP TRIGGER {_quote(name)} ON {_quote(table)};",
            )
        elif enabled == "D":
            add(
                f"disabled trigger: {name} on {table} (its invariant is not enforced)",
                f"ALTER TABLE {_quote(table)} ENABLE TRIGGER {_quote(name)};",
            )
    for table, name in sorted(set(model_checks) - checks):
        dialect: Any = postgresql.dialect()  # type: ignore[no-untyped-call]
        ddl = AddConstraint(model_checks[(table, name)]).compile(dialect=dialect)
        add(f"only in the models: check constraint {name} on {table}", f"{ddl};".strip())
    for table, name in sorted(checks - set(model_checks)):
        add(
            f"only in the database: check constraint {name} on {table}",
            f"ALTER TABLE {_quote(table)} DROP CONSTRAINT {_quote(name)};",
        )
    return out


def differences(url: str, current: str | None, head: str | None) -> list[Difference]:
    """Every difference; the catalog's only at head (triggers come and go with revisions)."""
    out = model_differences(url) if current is not None else []
    if current == head:
        out += catalog_differences(url)
    return out
