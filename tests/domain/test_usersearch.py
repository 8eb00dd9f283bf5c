"""Substring search in two steps (domain/usersearch.py): the same users as a plain filter."""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.domain import users, usersearch

Conn = psycopg.Connection[Any]
HASH = "$2b$04$" + "a" * 53


def _add(conn: Conn, email: str, username: str, name: str) -> str:
    first, _, last = name.partition(" ")
    row = conn.execute(
        'INSERT INTO "User" (email, username, name, "firstName", "lastName", password)'
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        [email, username, name, first, last, HASH],
    ).fetchone()
    assert row is not None
    return str(row[0])


def _all_pages(conn: Conn, settings: Settings, q: str, order: str, limit: int) -> list[str]:
    found: list[str] = []
    cursor = None
    while True:
        page = users.list_users(
            conn, users.UserFilter(q=q), settings=settings, order=order, limit=limit, cursor=cursor
        )
        found += [u["id"] for u in page.items]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def _first_page(conn: Conn, settings: Settings, q: str) -> set[str]:
    page = users.list_users(conn, users.UserFilter(q=q), settings=settings)
    return {u["id"] for u in page.items}


def _expected(conn: Conn, q: str, order: str) -> list[str]:
    """What a plain scan finds: q in any searched field, any case, in creation order."""
    rows = conn.execute(
        'SELECT id, "createdAt", email, username, name, "firstName", "lastName" FROM "User"'
    ).fetchall()
    needle = q.lower()
    hits = [r for r in rows if any(needle in (f or "").lower() for f in r[2:])]
    hits.sort(key=lambda r: (r[1], r[0]), reverse=order == "desc")
    return [r[0] for r in hits]


@pytest.fixture
def many_users(seeded_conn: Conn) -> Conn:
    """300 users whose names make common, rare and absent substrings, made in a shuffled order."""
    rnd = random.Random(5)
    firsts = ["maya", "kim", "ana", "omar", "lena", "jo"]
    lasts = ["kim", "okafor", "garcia", "lee", "tan"]
    rows = []
    for i in range(300):
        first, last = rnd.choice(firsts), rnd.choice(lasts)
        rows.append((f"{first}.{last}.{i}@ex.example", f"{first}_{last}{i}", f"{first} {last}"))
    rnd.shuffle(rows)
    with seeded_conn.cursor() as cur:
        # One by one, in the shuffled order: "createdAt" (now()) follows it.
        cur.executemany(
            'INSERT INTO "User" (email, username, name, "firstName", "lastName", password)'
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (email, username, name.title(), *name.title().split(" "), HASH)
                for email, username, name in rows
            ],
        )
    # The same instant for some: the id breaks the tie in the keyset.
    seeded_conn.execute(
        'UPDATE "User" SET "createdAt" = \'2026-01-01T00:00:00Z\' WHERE username LIKE %s',
        ["jo\\_%"],
    )
    return seeded_conn


@pytest.mark.parametrize("walk", [1, 5, 1000])  # users walked per row of the page
def test_every_page_holds_what_a_plain_scan_finds(
    many_users: Conn, seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch, walk: int
) -> None:
    # A short walk sends most pages to the trigram step, a long one keeps them in the walk.
    monkeypatch.setattr(usersearch, "WALK_PER_ROW", walk)
    for q in ("kim", "a.k", "ka.1", "o_g", "KIM.1", "garcia.29", "zz.qx"):
        for order in ("desc", "asc"):
            found = _all_pages(many_users, seeded_settings, q, order, limit=7)
            assert found == _expected(many_users, q, order), (q, order)


def test_both_steps_are_taken_and_agree(
    many_users: Conn, seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []
    walk, trigrams = usersearch._walk, usersearch._from_trigrams

    def spy(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            taken.append(name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(usersearch, "_walk", spy("walk", walk))
    monkeypatch.setattr(usersearch, "_from_trigrams", spy("trigrams", trigrams))
    monkeypatch.setattr(usersearch, "WALK_PER_ROW", 7)  # 147 users for a page of 20
    common = users.list_users(
        many_users, users.UserFilter(q="kim"), settings=seeded_settings, limit=20
    )
    # the probe (29 users) found some but not all: the walk goes on from its last match
    assert taken == ["walk", "walk"] and len(common.items) == 20
    assert [u["id"] for u in common.items] == _expected(many_users, "kim", "desc")[:20]
    taken.clear()
    monkeypatch.setattr(usersearch, "WALK_PER_ROW", 100)  # a probe of 420 fills the page
    users.list_users(many_users, users.UserFilter(q="kim"), settings=seeded_settings, limit=20)
    assert taken == ["walk"]
    taken.clear()
    rare = users.list_users(many_users, users.UserFilter(q="garcia.29"), settings=seeded_settings)
    assert taken == ["walk", "trigrams"]  # none in the probe: no walk after it
    assert [u["id"] for u in rare.items] == _expected(many_users, "garcia.29", "desc")


def test_the_letters_standing_for_separators_are_not_separators(
    seeded_conn: Conn, seeded_settings: Settings
) -> None:
    # The search key has " " as "Þ" and "." as "Ð": a search finds the text itself only.
    spaced = _add(seeded_conn, "ms@ex.example", "ms", "Ma Þor")
    dotted = _add(seeded_conn, "jo.dan@ex.example", "jod", "Jo.Ðan Doe")

    found = {
        q: _first_page(seeded_conn, seeded_settings, q)
        for q in ("a þ", "A Þ", "aþþ", "aÞþ", "o.ð", "O.Ð", "oðð", "oÐð")
    }
    assert found == {
        "a þ": {spaced},
        "A Þ": {spaced},
        "aþþ": set(),
        "aÞþ": set(),
        "o.ð": {dotted},
        "O.Ð": {dotted},
        "oðð": set(),
        "oÐð": set(),
    }


@pytest.mark.parametrize("autocommit", [True, False])
def test_the_planner_is_left_as_it_was(seeded_settings: Settings, autocommit: bool) -> None:
    with psycopg.connect(seeded_settings.url_for(), autocommit=autocommit) as conn:
        users.list_users(conn, users.UserFilter(q="zz.qx"), settings=seeded_settings)
        settings = conn.execute(
            "SELECT current_setting('enable_seqscan'), current_setting('enable_indexscan'),"
            " current_setting('enable_indexonlyscan')"
        ).fetchone()
        assert settings == ("on", "on", "on")
        if not autocommit:
            conn.rollback()


def test_wildcards_in_the_search_are_taken_literally(
    seeded_conn: Conn, seeded_settings: Settings
) -> None:
    pct = _add(seeded_conn, "a%b@ex.example", "pct", "Per Cent")
    _add(seeded_conn, "axxb@ex.example", "xx", "Ex Ex")
    slash = _add(seeded_conn, "a\\b@ex.example", "bs", "Back Slash")
    assert _first_page(seeded_conn, seeded_settings, "a%b") == {pct}
    assert _first_page(seeded_conn, seeded_settings, "a\\b") == {slash}


@pytest.fixture(autouse=True)
def _no_remembered_trigrams() -> None:
    usersearch._common.clear()


@pytest.mark.parametrize(
    ("q", "pieces"),
    [
        ("Amara Co", ["Ama", "ara Co"]),  # "mar" is everyone's ("smartstart")
        ("h Martin", ["h Ma", "rtin"]),  # so are "mar" and "art"
        ("xmarx", ["xma", "arx"]),
        ("a%mar_b", ["ar_b"]),  # "a%ma" holds no trigram: "%" is no letter
        ("Ämara Co", ["ara Co"]),  # "Äma": no trigram pg_trgm surely reads as one
        ("ämarö", []),
        ("kim.9", []),  # no common trigram: q whole
        ("smartstart", []),  # only common ones: q whole
        ("ma", []),
    ],
)
def test_the_index_gets_the_parts_without_common_trigrams(q: str, pieces: list[str]) -> None:
    common = frozenset({"mar", "art", "sma", "rts", "tst", "sta", "tar"})
    assert usersearch.rare_pieces(q, common) == pieces


def test_a_search_with_common_trigrams_finds_what_a_plain_scan_finds(
    seeded_conn: Conn, seeded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(40):
        _add(seeded_conn, f"p{i}.staff@corp.example", f"p{i}", f"Per Son{i}")
    # "leyy" without "xampleyy" (the parts match, the whole does not), and the whole
    ashley = _add(seeded_conn, "ash@corp.example", "ashleyy", "Ashleyy Doe")
    whole = _add(seeded_conn, "bo@corp.exampleyy", "bo", "Bo Yy")
    seeded_conn.execute('ANALYZE "User"')
    common = usersearch.common_trigrams(seeded_conn)
    assert {"xam", "amp", "ple"} <= common and "ley" not in common
    assert usersearch.rare_pieces("xampleyy", common) == ["leyy"]
    monkeypatch.setattr(usersearch, "WALK_PER_ROW", 1)  # the trigram step
    for q in ("xampleyy", "ple.staff", "p1.staff@corp", "on1", "son3"):
        found = _all_pages(seeded_conn, seeded_settings, q, "desc", limit=5)
        assert found == _expected(seeded_conn, q, "desc"), q
    page = users.list_users(seeded_conn, users.UserFilter(q="xampleyy"), settings=seeded_settings)
    assert [u["id"] for u in page.items] == [whole] and ashley


def test_common_trigrams_are_read_again_after_a_while(
    seeded_conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert usersearch.common_trigrams(seeded_conn) == frozenset()  # no statistics yet
    for i in range(30):
        _add(seeded_conn, f"u{i}@same.example", f"u{i}", f"U {i}")
    seeded_conn.execute('ANALYZE "User"')
    assert usersearch.common_trigrams(seeded_conn) == frozenset()  # remembered
    monkeypatch.setattr(usersearch, "COMMON_TTL", 0.0)
    usersearch._common.clear()
    assert "sam" in usersearch.common_trigrams(seeded_conn)
