"""Migrations: up, down, up again on data; every revision reversible; drift is seen."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.db import migrate
from smartstart.db.models import Base

PW = "$2b$12$" + "a" * 53


def inventory(url: str) -> dict[str, set[str]]:
    """What the schema defines in `public`, by kind (alembic_version excluded)."""
    with psycopg.connect(url) as c:
        q = {
            "tables": "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'",
            "indexes": "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'",
            "functions": "SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = 'public' "
            "AND p.proname LIKE 'smartstart%%'",
            "triggers": "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND NOT t.tgisinternal",
            "constraints": "SELECT conname FROM pg_constraint c JOIN pg_namespace n "
            "ON n.oid = c.connamespace WHERE n.nspname = 'public' "
            "AND conname <> 'alembic_version_pkc'",
            "sequences": "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'",
            "types": "SELECT t.typname FROM pg_type t JOIN pg_namespace n "
            "ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')",
        }
        return {kind: {r[0] for r in c.execute(sql).fetchall()} for kind, sql in q.items()}


def add_data(url: str) -> None:
    with psycopg.connect(url) as c:
        c.execute("INSERT INTO \"Role\" (name) VALUES ('MEMBER'), ('ADMIN')")
        c.execute(
            'INSERT INTO "User" (email, username, password, role, xp) '
            "VALUES ('a@example.com', 'a', %s, 'ADMIN', 700)",
            [PW],
        )
        c.execute('INSERT INTO "JourneyStage" (name, "order", "xpReward") VALUES (\'S\', 1, 5)')
        c.execute(
            'INSERT INTO "UserJourneyState" ("userId", "stageId", status) '
            'SELECT u.id, s.id, \'COMPLETED\' FROM "User" u, "JourneyStage" s'
        )
        c.execute(
            'INSERT INTO "Session" ("tokenHash", "userId", "expiresAt") '
            "SELECT 'tok', id, now() + interval '1 day' FROM \"User\""
        )
        c.execute("INSERT INTO audit_log (action) VALUES ('test')")


def kinds_and_names(differences: list[Any]) -> set[tuple[str, str | None]]:
    """(kind, object name) for each autogenerate difference (column changes come as lists)."""
    out: set[tuple[str, str | None]] = set()
    for d in differences:
        for item in d if isinstance(d, list) else [d]:
            kind, *rest = item
            obj = rest[-1] if rest else None
            name = getattr(obj, "name", None)
            if kind.startswith("modify_"):
                name = item[3]  # (kind, schema, table, column, info, old, new)
            out.add((kind, name))
    return out


def model_tables() -> set[str]:
    return set(Base.metadata.tables)


def revisions_oldest_first() -> list[dict[str, Any]]:
    return list(reversed(migrate.history()))


@pytest.fixture
def url(db_settings: Settings) -> str:
    return db_settings.sqlalchemy_url()


def test_fresh_database_matches_the_models(url: str, db_settings: Settings) -> None:
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.diff(url) == []
    inv = inventory(db_settings.url_for())
    assert inv["tables"] == model_tables()
    assert inv["functions"] and inv["triggers"]


def test_up_down_up_with_data(url: str, db_settings: Settings) -> None:
    libpq = db_settings.url_for()
    at_head = inventory(libpq)
    add_data(libpq)

    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    gone = inventory(libpq)
    assert gone == {kind: set() for kind in gone}, "objects left behind by the downgrade"

    migrate.upgrade(url, "head")
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.diff(url) == []
    assert inventory(libpq) == at_head  # triggers and functions too, not only what alembic sees
    with psycopg.connect(libpq) as c:
        assert c.execute('SELECT count(*) FROM "User"').fetchone() == (0,)
    # The recreated triggers work: the data can be loaded again, with levels derived.
    add_data(libpq)
    with psycopg.connect(libpq) as c:
        assert c.execute('SELECT level, xp FROM "User"').fetchone() == ("NIGHT_OWL", 705)


def test_every_revision_downgrades_and_upgrades_stepwise(url: str, db_settings: Settings) -> None:
    revs = revisions_oldest_first()
    assert revs, "no revisions"
    assert revs[0]["down_revision"] is None
    for older, newer in zip(revs, revs[1:], strict=False):
        assert newer["down_revision"] == older["revision"], "history is not linear"
    snapshots: dict[str, dict[str, set[str]]] = {}

    # Down, one step at a time, from head to base.
    for rev in reversed(revs):
        assert migrate.current_revision(url) == rev["revision"]
        snapshots[rev["revision"]] = inventory(db_settings.url_for())
        migrate.downgrade(url, "-1")
        assert migrate.current_revision(url) == rev["down_revision"]
    empty = inventory(db_settings.url_for())
    assert empty == {kind: set() for kind in empty}

    # Up again, one step at a time: each revision recreates exactly what it had.
    for rev in revs:
        migrate.upgrade(url, "+1")
        assert migrate.current_revision(url) == rev["revision"]
        assert inventory(db_settings.url_for()) == snapshots[rev["revision"]], rev["revision"]
    assert migrate.diff(url) == []


def test_added_column_is_drift(url: str, db_settings: Settings) -> None:
    with psycopg.connect(db_settings.url_for()) as c:
        c.execute('ALTER TABLE "User" ADD COLUMN "newField" VARCHAR(255)')
    differences = migrate.diff(url)
    assert differences
    assert "newField" in repr(differences)
    assert ("remove_column", "newField") in kinds_and_names(differences)


def test_dropped_index_is_drift(url: str, db_settings: Settings) -> None:
    with psycopg.connect(db_settings.url_for()) as c:
        c.execute('DROP INDEX "User_xp_id_idx"')
    differences = migrate.diff(url)
    assert differences
    assert "User_xp_id_idx" in repr(differences)
    assert ("add_index", "User_xp_id_idx") in kinds_and_names(differences)


def test_guide_index_and_constraint_are_drift(url: str, db_settings: Settings) -> None:
    """The rest of the guide's Data Migration examples, run by hand, also show up."""
    with psycopg.connect(db_settings.url_for()) as c:
        c.execute('CREATE INDEX idx_user_email ON "User"(email)')
        c.execute('ALTER TABLE "User" ADD CONSTRAINT unique_username UNIQUE (username)')
    differences = migrate.diff(url)
    assert ("remove_index", "idx_user_email") in kinds_and_names(differences)
    assert ("remove_constraint", "unique_username") in kinds_and_names(differences)


def test_check_says_which_side_each_difference_is_on(url: str, db_settings: Settings) -> None:
    """The guide's ADD COLUMN by hand is only in the database; autogenerate would drop it."""
    with psycopg.connect(db_settings.url_for()) as c:
        c.execute('ALTER TABLE "User" ADD COLUMN "newField" VARCHAR(255)')
        c.execute('DROP INDEX "User_xp_id_idx"')
        c.execute('ALTER TABLE "User" ALTER COLUMN reputation TYPE bigint')
        c.execute(
            'CREATE TRIGGER "User_extra" BEFORE UPDATE ON "User" FOR EACH ROW'
            " EXECUTE FUNCTION smartstart_touch_updated_at()"
        )
    result = migrate.check(url)
    assert not result["ok"]
    differences = result["differences"]
    assert "only in the database: column User.newField" in differences
    assert "only in the models: index User_xp_id_idx on User" in differences
    assert "only in the database: trigger User_extra on User" in differences
    changed = [d for d in differences if d.startswith("differs: column User.reputation type")]
    assert changed and "in the database" in changed[0] and "in the models" in changed[0]
