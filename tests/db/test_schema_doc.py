"""docs/schema.md's trigger table is the trigger list, and the list is the database's."""

from __future__ import annotations

from typing import Any

import psycopg

from smartstart.db import triggers


def test_schema_doc_trigger_table_is_generated_from_the_list() -> None:
    documented = triggers.documented_table(triggers.SCHEMA_DOC.read_text())
    assert documented == triggers.markdown_table(), (
        "docs/schema.md's trigger table is stale: run `python -m smartstart.db.triggers`"
    )


def test_trigger_list_is_what_the_migrations_create(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT c.relname, t.tgname, p.proname FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
    ).fetchall()
    in_db: dict[str, set[str]] = {}
    for table, name, _ in rows:
        in_db.setdefault(table, set()).add(name)
    assert in_db == {table: set(names) for table, names in triggers.TRIGGERS.items()}
    functions = {name: f"{proname}()" for _, name, proname in rows}
    for t in triggers.TRIGGER_LIST:
        for name in t.names:
            assert functions[name] == t.function, name
