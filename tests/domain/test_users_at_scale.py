"""list_users' search and role filter in the shapes the 0004 indexes serve (issue 8)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from smartstart.config import Settings
from smartstart.db import demo
from smartstart.domain import users, usersearch
from smartstart.domain.errors import Invalid

Conn = psycopg.Connection[Any]
HASH = "$2b$04$" + "a" * 53


def _add(conn: Conn, email: str, username: str, name: str, role: str = "MEMBER") -> str:
    first, _, last = name.partition(" ")
    row = conn.execute(
        'INSERT INTO "User" (email, username, name, "firstName", "lastName", password, role)'
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        [email, username, name, first, last, HASH, role],
    ).fetchone()
    assert row is not None
    return str(row[0])


def _ids(conn: Conn, settings: Settings, **kw: Any) -> set[str]:
    page = users.list_users(conn, users.UserFilter(**kw), settings=settings, limit=500)
    return {u["id"] for u in page.items}


def test_search_of_three_or_more_characters_is_a_substring_of_any_field(
    seeded_conn: Conn, seeded_settings: Settings
) -> None:
    grace = _add(seeded_conn, "grace@navy.example", "ghopper", "Grace Hopper")
    alan = _add(seeded_conn, "alan@bletchley.example", "aturing", "Alan Turing")
    assert _ids(seeded_conn, seeded_settings, q="OPPE") == {grace}  # name, any case
    assert _ids(seeded_conn, seeded_settings, q="tchl") == {alan}  # email
    assert _ids(seeded_conn, seeded_settings, q="turi") == {alan}  # username and name
    assert _ids(seeded_conn, seeded_settings, q="zzqx") == set()
    # Fields are searched one by one: no match spans the end of one and the next.
    assert _ids(seeded_conn, seeded_settings, q="exampleghop") == set()


def test_search_of_two_characters_is_a_prefix_of_email_or_username(
    seeded_conn: Conn, seeded_settings: Settings
) -> None:
    grace = _add(seeded_conn, "grace@navy.example", "ghopper", "Grace Hopper")
    alan = _add(seeded_conn, "alan@bletchley.example", "gturing", "Alan Turing")
    assert _ids(seeded_conn, seeded_settings, q="Gr") == {grace}  # email prefix
    assert _ids(seeded_conn, seeded_settings, q="gt") == {alan}  # username prefix
    # Inside a word, two characters would need a scan of every user: no match.
    assert _ids(seeded_conn, seeded_settings, q="op") == set()
    assert _ids(seeded_conn, seeded_settings, q="%_") == set()  # taken literally


@pytest.mark.parametrize("q", ["g", "%", "\\", "é"])
def test_search_of_one_character_is_refused(
    seeded_conn: Conn, seeded_settings: Settings, q: str
) -> None:
    _add(seeded_conn, "grace@navy.example", "ghopper", "Grace Hopper")
    with pytest.raises(Invalid, match="search needs at least 2 characters") as refused:
        _ids(seeded_conn, seeded_settings, q=q)
    assert refused.value.details == {"field": "q", "min_length": 2}


def test_search_conditions_are_served_by_the_trigram_index(seeded_conn: Conn) -> None:
    # list_users' conditions name the index's expression (migration 0011) exactly.
    match, params = usersearch.conditions("kim.9")
    where = sql.SQL(" AND ").join(match)
    with seeded_conn.transaction():
        for walk in ("seqscan", "indexscan", "indexonlyscan"):
            seeded_conn.execute(f"SET LOCAL enable_{walk} = off")
        plan = "\n".join(
            r[0]
            for r in seeded_conn.execute(
                sql.SQL('EXPLAIN SELECT id FROM "User" u WHERE {}').format(where), params
            ).fetchall()
        )
    assert "User_searchText_trgm_idx" in plan
    # The separators are inside the trigrams: "kim.9" is one word, not "kim" and "9".
    assert "kimÐ9" in plan


@pytest.mark.parametrize("role", ["SUPER_ADMIN", "MODERATOR"])
def test_role_filter_finds_primary_and_additional_holders(
    seeded_conn: Conn, seeded_settings: Settings, role: str
) -> None:
    primary = _add(seeded_conn, "p@x.example", "p_holder", "Pat Primary", role)
    extra = _add(seeded_conn, "e@x.example", "e_holder", "Eve Extra")
    seeded_conn.execute(
        'INSERT INTO "UserRole" ("userId", "roleId") SELECT %s, id FROM "Role" WHERE name = %s',
        [extra, role],
    )
    found = _ids(seeded_conn, seeded_settings, role=role)
    assert {primary, extra} <= found
    holders = seeded_conn.execute(
        'SELECT count(*) FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId" WHERE r.name = %s',
        [role],
    ).fetchone()
    assert holders == (len(found),)
    assert _ids(seeded_conn, seeded_settings, role="NO_SUCH_ROLE") == set()


def test_listings_are_never_prepared(
    seeded_conn: Conn, seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A generic plan cannot tell a rare role or search from a common one: list_users
    # stays on custom plans however often it runs on a connection.
    seeded_conn.prepare_threshold = 0
    demo.demo_users(seeded_conn, 30, seed=3, rounds=4)
    for _ in range(3):
        users.list_users(seeded_conn, users.UserFilter(q="maya"), settings=seeded_settings)
        users.list_users(seeded_conn, users.UserFilter(role="ADMIN"), settings=seeded_settings)
    prepared = seeded_conn.execute(
        "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
        ['%FROM "User" u%'],
    ).fetchall()
    assert prepared == []


def test_level_filter_follows_the_xp_bands(seeded_conn: Conn, seeded_settings: Settings) -> None:
    by_xp = {}
    for xp in (0, 99, 100, 499, 500, 999, 1000, 5000):
        uid = _add(seeded_conn, f"xp{xp}@x.example", f"xp{xp}", f"Xp {xp}")
        seeded_conn.execute('UPDATE "User" SET xp = %s WHERE id = %s', [xp, uid])
        by_xp[xp] = uid
    found = {
        level: _ids(seeded_conn, seeded_settings, level=level) & set(by_xp.values())
        for level in ("OWLET", "FLEDGLING", "NIGHT_OWL", "WISE_OWL")
    }
    assert found == {
        "OWLET": {by_xp[0], by_xp[99]},
        "FLEDGLING": {by_xp[100], by_xp[499]},
        "NIGHT_OWL": {by_xp[500], by_xp[999]},
        "WISE_OWL": {by_xp[1000], by_xp[5000]},
    }


def test_role_filter_pages_merge_primary_and_additional_holders_in_order(
    seeded_conn: Conn, seeded_settings: Settings
) -> None:
    # Primary holders come from one index, additional ones from "UserRole": the pages
    # interleave both in createdAt order, each user once, nothing skipped.
    made = []
    for i in range(7):
        primary = i % 2 == 0
        uid = _add(
            seeded_conn, f"m{i}@x.example", f"m{i}", f"Mo {i}", "MODERATOR" if primary else "MEMBER"
        )
        seeded_conn.execute(
            'UPDATE "User" SET "createdAt" = now() - make_interval(days => %s) WHERE id = %s',
            [i, uid],
        )
        if not primary:
            seeded_conn.execute(
                'INSERT INTO "UserRole" ("userId", "roleId")'
                ' SELECT %s, id FROM "Role" WHERE name = %s',
                [uid, "MODERATOR"],
            )
        made.append(uid)
    seen: list[str] = []
    cursor = None
    while True:
        page = users.list_users(
            seeded_conn,
            users.UserFilter(role="MODERATOR"),
            settings=seeded_settings,
            limit=2,
            cursor=cursor,
        )
        seen.extend(u["id"] for u in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [u for u in seen if u in made] == made  # newest first
    assert len(seen) == len(set(seen))


def test_audit_listing_is_never_prepared(seeded_conn: Conn, seeded_settings: Settings) -> None:
    # LIMIT is a parameter: a generic plan would sort the log instead of walking its id index.
    from smartstart.domain import audit

    seeded_conn.prepare_threshold = 0
    for _ in range(3):
        audit.list_entries(seeded_conn, audit.AuditFilter(), settings=seeded_settings)
        audit.list_entries(
            seeded_conn, audit.AuditFilter(action="auth.*"), settings=seeded_settings
        )
    prepared = seeded_conn.execute(
        "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
        ["%FROM audit_log a%"],
    ).fetchall()
    assert prepared == []
