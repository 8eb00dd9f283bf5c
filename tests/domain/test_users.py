"""domain.users on a fresh seeded database (autocommit connection: each call commits)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.db.seed import ROLE_PERMISSIONS
from smartstart.domain import passwords, sessions, users, xp
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Conflict, Forbidden, Invalid, NotFound
from smartstart.domain.resolve import UserRow, resolve_user

Conn = psycopg.Connection[Any]
CLI = Actor.operator()
PW = "a perfectly fine passphrase"
ADMIN_EMAIL = "admin@alicesolutionsgroup.com"
_n = itertools.count()


@pytest.fixture
def make(seeded_conn: Conn) -> Callable[..., dict[str, Any]]:
    """Create a user through the domain (bcrypt cost 4)."""

    def make(role: str = "MEMBER", **kw: Any) -> dict[str, Any]:
        n = next(_n)
        kw.setdefault("email", f"user{n}@example.com")
        kw.setdefault("username", f"user{n}")
        kw.setdefault("password", PW)
        actor = kw.pop("actor", CLI)
        return users.create(seeded_conn, actor, role=role, rounds=4, **kw)

    return make


def as_(permissions: frozenset[str]) -> Actor:
    """A signed-in user (not in the database) holding these permissions."""
    return Actor(label="test-actor", permissions=permissions)


def admin_id(conn: Conn) -> str:
    return str(resolve_user(conn, ADMIN_EMAIL)["id"])


def audit_rows(conn: Conn, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            'SELECT action, details FROM audit_log WHERE "resourceId" = %s ORDER BY id',
            [user_id],
        )
    ]


def live_sessions(conn: Conn, user_id: str) -> int:
    row = conn.execute(
        'SELECT count(*) FROM "Session" WHERE "userId" = %s AND "revokedAt" IS NULL', [user_id]
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- create / get / find -------------------------------------------------------------


def test_create_returns_the_public_row_and_audits_it_without_the_hash(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    user = make(name="Ada Lovelace", first_name="Ada", last_name="Lovelace")
    assert "password" not in user
    assert user["level"] == "OWLET" and user["status"] == "ACTIVE" and user["role"] == "MEMBER"
    stored = seeded_conn.execute(
        'SELECT password FROM "User" WHERE id = %s', [user["id"]]
    ).fetchone()
    assert stored is not None and stored[0].startswith("$2b$04$")
    assert passwords.verify(PW, stored[0])
    rows = audit_rows(seeded_conn, user["id"])
    assert [a for a, _ in rows] == ["users.create"]
    assert rows[0][1]["after"]["email"] == user["email"]
    assert "$2b$" not in json.dumps(rows[0][1])
    assert resolve_user(seeded_conn, user["id"]) == user


def test_duplicate_email_in_any_case_and_duplicate_username_are_conflicts(
    make: Callable[..., dict[str, Any]],
) -> None:
    make(email="Taken@Example.com", username="taken")
    with pytest.raises(Conflict) as e:
        make(email="taken@EXAMPLE.com")
    assert e.value.field == "email" and e.value.status == 409
    with pytest.raises(Conflict) as e:
        make(username="taken")
    assert e.value.field == "username"


INVALID_CREATES: list[tuple[dict[str, Any], str]] = [
    ({"password": "password1234"}, "password"),  # on the common list
    ({"password": "short"}, "password"),
    ({"email": "not-an-email"}, "email"),
    ({"username": "has space"}, "username"),
    ({"role": "NO_SUCH_ROLE"}, "role"),
    ({"status": "BANNED"}, "status"),
    ({"name": "x\x00y"}, "name"),
]


def test_create_rejects_invalid_input(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    before = seeded_conn.execute('SELECT count(*) FROM "User"').fetchone()
    for kw, field in INVALID_CREATES:
        with pytest.raises(Invalid) as e:
            make(**kw)
        assert e.value.details["field"] == field, kw
    assert seeded_conn.execute('SELECT count(*) FROM "User"').fetchone() == before


def test_nobody_creates_a_user_with_a_role_granting_more_than_they_hold(
    make: Callable[..., dict[str, Any]],
) -> None:
    admin_perms = frozenset(ROLE_PERMISSIONS["ADMIN"])
    with pytest.raises(Forbidden) as e:
        make("SUPER_ADMIN", actor=as_(admin_perms))
    assert "db:restore" in e.value.details["missing"]
    assert make("ADMIN", actor=as_(admin_perms))["role"] == "ADMIN"


def test_unknown_or_malformed_ids_are_not_found(seeded_conn: Conn) -> None:
    for bad in ["nope", "", "x" * 500, "a\x00b", '\'; DROP TABLE "User"; --']:
        with pytest.raises(NotFound):
            resolve_user(seeded_conn, bad)
        with pytest.raises(NotFound):
            resolve_user(seeded_conn, bad)
        with pytest.raises(NotFound):
            users.suspend(seeded_conn, CLI, bad)
        with pytest.raises(NotFound):
            users.add_xp(seeded_conn, CLI, bad, 1, "test")


def test_find_by_id_email_in_any_case_or_username(seeded_conn: Conn) -> None:
    uid = admin_id(seeded_conn)
    assert resolve_user(seeded_conn, uid)["id"] == uid
    assert resolve_user(seeded_conn, "ADMIN@AliceSolutionsGroup.com")["id"] == uid
    assert resolve_user(seeded_conn, "admin")["id"] == uid


# -- list ------------------------------------------------------------------------------


def test_search_filters_and_sort(
    seeded_conn: Conn, seeded_settings: Settings, make: Callable[..., dict[str, Any]]
) -> None:
    ls = partial(users.list_users, seeded_conn, settings=seeded_settings)
    a = make(name="Grace Hopper", email="grace@navy.example", username="grace")
    b = make("MODERATOR", name="Alan Turing", username="alan_t")
    c = make(name="Katherine Johnson", status="SUSPENDED")
    users.set_xp(seeded_conn, CLI, b["id"], 600)
    ids = lambda page: [u["id"] for u in page.items]  # noqa: E731

    assert ids(ls(users.UserFilter(q="HOPPER"))) == [a["id"]]
    assert ids(ls(users.UserFilter(q="navy.EX"))) == [a["id"]]
    assert ids(ls(users.UserFilter(role="MODERATOR"))) == [b["id"]]
    assert ids(ls(users.UserFilter(status="SUSPENDED"))) == [c["id"]]
    assert ids(ls(users.UserFilter(level="NIGHT_OWL"))) == [b["id"]]
    top = ls(sort="xp", order="desc", limit=1)
    assert ids(top) == [b["id"]]
    by_email = ls(sort="email", order="asc", limit=500).items
    assert [u["email"].lower() for u in by_email] == sorted(u["email"].lower() for u in by_email)


def test_sql_metacharacters_in_search_are_taken_literally(
    seeded_conn: Conn, seeded_settings: Settings, make: Callable[..., dict[str, Any]]
) -> None:
    ls = partial(users.list_users, seeded_conn, settings=seeded_settings)
    pct = make(name="100% sure")
    under = make(name="snake_case")
    make(name="snakeXcase")
    make(name="back\\slash")
    assert [u["id"] for u in ls(users.UserFilter(q="0% s")).items] == [pct["id"]]
    found = ls(users.UserFilter(q="e_c")).items
    assert [u["id"] for u in found] == [under["id"]]
    assert len(ls(users.UserFilter(q="k\\s")).items) == 1
    assert ls(users.UserFilter(q="' OR 1=1 --")).items == []
    assert ls(users.UserFilter(q='\'); DROP TABLE "User"; --')).items == []
    assert seeded_conn.execute('SELECT count(*) FROM "User"').fetchone() == (6,)


def test_cursor_walks_every_page_without_duplicates(
    seeded_conn: Conn, seeded_settings: Settings, make: Callable[..., dict[str, Any]]
) -> None:
    ls = partial(users.list_users, seeded_conn, settings=seeded_settings)
    for i in range(9):
        u = make()
        # Ties on xp and on timestamps: the id breaks them, so nothing repeats or is skipped.
        users.set_xp(seeded_conn, CLI, u["id"], (i % 3) * 10)
    seeded_conn.execute('UPDATE "User" SET "lastActive" = now() - interval \'1 day\'')
    everyone = {r[0] for r in seeded_conn.execute('SELECT id FROM "User"')}
    for sort in users.SORTS:
        for order in users.ORDERS:
            seen: list[str] = []
            cursor = None
            for _ in range(20):
                page = ls(sort=sort, order=order, limit=2, cursor=cursor)
                seen.extend(u["id"] for u in page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert len(seen) == len(set(seen)) == len(everyone), (sort, order)
            assert set(seen) == everyone
            whole = [u["id"] for u in ls(sort=sort, order=order).items]
            assert seen == whole, (sort, order)


def test_bad_cursor_sort_or_filter_values_are_invalid(
    seeded_conn: Conn, seeded_settings: Settings
) -> None:
    ls = partial(users.list_users, seeded_conn, settings=seeded_settings)
    page = ls(sort="xp", limit=1)
    assert page.next_cursor is not None
    for kwargs in (
        {"cursor": "not a cursor"},
        {"cursor": "eyJ4IjoxfQ"},  # {"x":1}
        {"cursor": page.next_cursor, "sort": "email"},  # another sort's cursor
        {"sort": "password"},
        {"sort": "xp; DROP TABLE x"},
        {"order": "sideways"},
        {"limit": 0},
        {"limit": 501},
    ):
        with pytest.raises(Invalid):
            ls(**kwargs)
    for f in (users.UserFilter(status="GONE"), users.UserFilter(level="EAGLE")):
        with pytest.raises(Invalid):
            ls(f)


# -- update / status / password / delete -------------------------------------------


def test_update_changes_fields_and_audits_before_and_after(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make()
    after = users.update(
        seeded_conn, CLI, u["id"], {"name": "New Name", "username": "renamed", "role": "MODERATOR"}
    )
    assert (after["name"], after["username"], after["role"]) == ("New Name", "renamed", "MODERATOR")
    action, details = audit_rows(seeded_conn, u["id"])[-1]
    assert action == "users.update"
    assert details["before"]["username"] == u["username"]
    assert details["after"]["username"] == "renamed"
    with pytest.raises(Invalid):
        users.update(seeded_conn, CLI, u["id"], {"password": "x"})
    with pytest.raises(Invalid):
        users.update(seeded_conn, CLI, u["id"], {"xp": 5})
    with pytest.raises(Invalid):
        users.update(seeded_conn, CLI, u["id"], {"username": None})
    with pytest.raises(Invalid):
        users.update(seeded_conn, CLI, u["id"], {})


def test_update_email_keeps_it_unique_in_any_case(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make()
    with pytest.raises(Conflict) as e:
        users.update(seeded_conn, CLI, u["id"], {"email": ADMIN_EMAIL.upper()})
    assert e.value.field == "email"
    with pytest.raises(Conflict) as e:
        users.update(seeded_conn, CLI, u["id"], {"username": "developer"})
    assert e.value.field == "username"
    assert users.update(seeded_conn, CLI, u["id"], {"email": "New@Example.com"})["email"] == (
        "New@Example.com"
    )


def test_suspend_and_deactivate_end_sessions_activate_restores(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make()
    token, _ = sessions.create(seeded_conn, u["id"], lifetime=timedelta(hours=1))
    assert users.suspend(seeded_conn, CLI, u["id"])["status"] == "SUSPENDED"
    assert live_sessions(seeded_conn, u["id"]) == 0
    assert sessions.resolve(seeded_conn, token, idle_timeout=timedelta(hours=1)) is None
    assert users.activate(seeded_conn, CLI, u["id"])["status"] == "ACTIVE"
    sessions.create(seeded_conn, u["id"], lifetime=timedelta(hours=1))
    assert users.deactivate(seeded_conn, CLI, u["id"])["status"] == "INACTIVE"
    assert live_sessions(seeded_conn, u["id"]) == 0
    actions = [a for a, _ in audit_rows(seeded_conn, u["id"])]
    assert actions == ["users.create", "users.suspend", "users.activate", "users.deactivate"]


def test_set_password_validates_hashes_and_ends_sessions(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make()
    sessions.create(seeded_conn, u["id"], lifetime=timedelta(hours=1))
    with pytest.raises(Invalid):
        users.set_password(seeded_conn, CLI, u["id"], "qwertyuiop123", rounds=4)
    assert live_sessions(seeded_conn, u["id"]) == 1
    users.set_password(seeded_conn, CLI, u["id"], "another fine passphrase", rounds=4)
    row = seeded_conn.execute('SELECT password FROM "User" WHERE id = %s', [u["id"]]).fetchone()
    assert row is not None and passwords.verify("another fine passphrase", row[0])
    assert live_sessions(seeded_conn, u["id"]) == 0
    action, details = audit_rows(seeded_conn, u["id"])[-1]
    assert action == "users.set_password" and details["sessionsRevoked"] == 1
    assert "$2b$" not in json.dumps(details)


def test_the_last_super_admin_is_protected_until_there_is_another(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    aid = admin_id(seeded_conn)
    for attempt in (
        lambda: users.suspend(seeded_conn, CLI, aid),
        lambda: users.deactivate(seeded_conn, CLI, aid),
        lambda: users.delete(seeded_conn, CLI, aid),
        lambda: users.update(seeded_conn, CLI, aid, {"role": "ADMIN"}),
        lambda: users.update(seeded_conn, CLI, aid, {"status": "PENDING"}),
    ):
        with pytest.raises(Conflict) as e:
            attempt()
        assert e.value.details["reason"] == "last_super_admin"
    assert resolve_user(seeded_conn, aid)["status"] == "ACTIVE"
    make("SUPER_ADMIN")
    assert users.update(seeded_conn, CLI, aid, {"role": "ADMIN"})["role"] == "ADMIN"


def test_nobody_acts_on_a_user_holding_permissions_they_lack(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    aid = admin_id(seeded_conn)
    admin_perms = frozenset(ROLE_PERMISSIONS["ADMIN"])
    moderator_perms = frozenset(ROLE_PERMISSIONS["MODERATOR"])
    make("SUPER_ADMIN")  # so that the last-SUPER_ADMIN rule is not what refuses
    for attempt in (
        lambda: users.set_password(
            seeded_conn, as_(admin_perms), aid, "hijacked passphrase", rounds=4
        ),
        lambda: users.suspend(seeded_conn, as_(admin_perms), aid),
        lambda: users.delete(seeded_conn, as_(admin_perms), aid),
        lambda: users.update(seeded_conn, as_(admin_perms), aid, {"name": "x"}),
    ):
        with pytest.raises(Forbidden) as e:
            attempt()
        assert e.value.details["reason"] == "outranked"
    member = make()
    # A moderator may suspend a member, but not promote one past themselves.
    users.suspend(seeded_conn, as_(moderator_perms), member["id"])
    with pytest.raises(Forbidden):
        users.update(seeded_conn, as_(moderator_perms), member["id"], {"role": "ADMIN"})


def test_delete_is_hard_cascades_and_keeps_the_before_image(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make("DEVELOPER")
    sessions.create(seeded_conn, u["id"], lifetime=timedelta(hours=1))
    seeded_conn.execute(
        'INSERT INTO "UserJourneyState" ("userId", "stageId", status)'
        ' SELECT %s, id, \'COMPLETED\' FROM "JourneyStage" WHERE "order" = 1',
        [u["id"]],
    )
    impact = users.delete(seeded_conn, CLI, u["id"])
    assert (impact.sessions, impact.journey_states, impact.role_assignments) == (1, 1, 1)
    for table in ("User", "Session", "UserJourneyState", "UserRole"):
        column = "id" if table == "User" else "userId"
        row = seeded_conn.execute(
            f'SELECT count(*) FROM "{table}" WHERE "{column}" = %s', [u["id"]]
        ).fetchone()
        assert row == (0,), table
    action, details = audit_rows(seeded_conn, u["id"])[-1]
    assert action == "users.delete"
    assert details["before"]["email"] == u["email"]
    assert details["removed"]["sessions"] == 1
    assert "$2b$" not in json.dumps(details)
    with pytest.raises(NotFound):
        users.delete(seeded_conn, CLI, u["id"])


def test_plan_delete_changes_nothing_and_refuses_what_delete_refuses(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make("DEVELOPER")
    sessions.create(seeded_conn, u["id"], lifetime=timedelta(hours=1))
    plan = users.plan_delete(seeded_conn, CLI, u["username"])
    assert isinstance(plan, users.DeletePlan)
    assert plan.user == resolve_user(seeded_conn, u["id"])
    assert (plan.sessions, plan.active_sessions, plan.journey_states) == (1, 1, 0)
    assert plan.role_assignments == 1
    assert resolve_user(seeded_conn, u["id"])["id"] == u["id"]  # still there
    assert [a for a, _ in audit_rows(seeded_conn, u["id"])] == ["users.create"]
    # Refused as the deletion would be: the last SUPER_ADMIN, an outranked actor.
    with pytest.raises(Conflict) as e:
        users.plan_delete(seeded_conn, CLI, ADMIN_EMAIL)
    assert e.value.details["reason"] == "last_super_admin"
    admin_perms = frozenset(ROLE_PERMISSIONS["ADMIN"])
    make("SUPER_ADMIN")
    with pytest.raises(Forbidden) as f:
        users.plan_delete(seeded_conn, as_(admin_perms), ADMIN_EMAIL)
    assert f.value.details["reason"] == "outranked"
    assert users.plan_delete(seeded_conn, CLI, ADMIN_EMAIL).user["role"] == "SUPER_ADMIN"
    # What delete returns is the same typed plan, and the audit row keeps its counts.
    done = users.delete(seeded_conn, CLI, u["id"])
    assert done == plan
    assert audit_rows(seeded_conn, u["id"])[-1][1]["removed"] == {
        "sessions": 1,
        "activeSessions": 1,
        "journeyStates": 0,
        "roleAssignments": 1,
    }


def test_every_write_and_listing_returns_exactly_a_user_row(
    seeded_settings: Settings, seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    shape = set(UserRow.__annotations__)
    u = make()
    rows = [
        u,
        users.update(seeded_conn, CLI, u["id"], {"name": "Typed"}),
        users.suspend(seeded_conn, CLI, u["id"]),
        users.activate(seeded_conn, CLI, u["id"]),
        users.set_password(seeded_conn, CLI, u["id"], "another fine passphrase", rounds=4),
        xp.add_xp(seeded_conn, CLI, u["id"], 5, "typed"),
        xp.set_reputation(seeded_conn, CLI, u["id"], 3),
        *users.list_users(seeded_conn, settings=seeded_settings, limit=3).items,
    ]
    for row in rows:
        assert set(row) == shape
    # The XP functions live in `xp`; `users` re-exports them for its callers.
    assert (users.add_xp, users.set_xp) == (xp.add_xp, xp.set_xp)
    assert (users.add_reputation, users.set_reputation) == (xp.add_reputation, xp.set_reputation)


# -- XP and reputation -------------------------------------------------------------


def test_xp_add_and_set_follow_levels_and_never_go_below_zero(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make()
    assert users.add_xp(seeded_conn, CLI, u["id"], 150, "bonus")["level"] == "FLEDGLING"
    assert users.add_xp(seeded_conn, CLI, u["id"], -50, "penalty")["xp"] == 100
    with pytest.raises(Invalid) as e:
        users.add_xp(seeded_conn, CLI, u["id"], -101, "too much")
    assert e.value.status == 422 and e.value.details["xp"] == 100
    with pytest.raises(Invalid):
        users.add_xp(seeded_conn, CLI, u["id"], 1, "")  # a reason is required
    with pytest.raises(Invalid):
        users.add_xp(seeded_conn, CLI, u["id"], 0, "nothing")
    with pytest.raises(Invalid):
        users.add_xp(seeded_conn, CLI, u["id"], 2**31 - 1, "overflow")
    assert users.set_xp(seeded_conn, CLI, u["id"], 1000)["level"] == "WISE_OWL"
    with pytest.raises(Invalid):
        users.set_xp(seeded_conn, CLI, u["id"], -1)
    assert users.set_xp(seeded_conn, CLI, u["id"], 0, "reset")["level"] == "OWLET"
    rows = audit_rows(seeded_conn, u["id"])
    assert [a for a, _ in rows][1:] == [
        "users.add_xp",
        "users.add_xp",
        "users.set_xp",
        "users.set_xp",
    ]
    assert rows[1][1]["before"] == {"xp": 0, "level": "OWLET"}
    assert rows[1][1]["after"] == {"xp": 150, "level": "FLEDGLING"}
    assert rows[1][1]["reason"] == "bonus"


def test_reputation_add_and_set(seeded_conn: Conn, make: Callable[..., dict[str, Any]]) -> None:
    u = make()
    assert users.add_reputation(seeded_conn, CLI, u["id"], -5, "spam")["reputation"] == -5
    assert users.set_reputation(seeded_conn, CLI, u["id"], 42)["reputation"] == 42
    actions = [a for a, _ in audit_rows(seeded_conn, u["id"])]
    assert actions[1:] == ["users.add_reputation", "users.set_reputation"]


def test_concurrent_xp_additions_are_never_lost(
    seeded_settings: Settings, seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make()
    users.set_xp(seeded_conn, CLI, u["id"], 50)
    start = threading.Barrier(20)

    def add_five() -> None:
        start.wait()
        for _ in range(5):
            # Its own connection and transaction per call, committed on exit.
            with psycopg.connect(seeded_settings.url_for()) as c:
                users.add_xp(c, CLI, u["id"], 1, "parallel")

    with ThreadPoolExecutor(20) as pool:
        for f in [pool.submit(add_five) for _ in range(20)]:
            f.result()
    after = resolve_user(seeded_conn, u["id"])
    assert (after["xp"], after["level"]) == (150, "FLEDGLING")
    row = seeded_conn.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'users.add_xp' AND \"resourceId\" = %s",
        [u["id"]],
    ).fetchone()
    assert row == (100,)


def test_a_database_check_the_domain_did_not_foresee_is_invalid_not_an_error(
    seeded_conn: Conn, make: Callable[..., dict[str, Any]]
) -> None:
    u = make()
    seeded_conn.execute(
        'ALTER TABLE "User" ADD CONSTRAINT "User_name_check" CHECK (name <> \'forbidden\')'
    )
    with pytest.raises(Invalid) as e:
        users.update(seeded_conn, CLI, u["id"], {"name": "forbidden"})
    assert e.value.details == {"field": "name", "constraint": "User_name_check"}
    with pytest.raises(Invalid):
        make(name="forbidden")
    assert resolve_user(seeded_conn, u["id"])["name"] is None
