"""smartstart.domain.journey on a fresh seeded database (the guide's eight stages)."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.db.seed import JOURNEY_STAGES
from smartstart.domain import journey
from smartstart.domain.audit import Actor
from smartstart.domain.errors import Conflict, Invalid, NotFound
from smartstart.domain.resolve import resolve_user

Conn = psycopg.Connection[Any]
PW = "$2b$12$" + "a" * 53
ACTOR = Actor.operator()
_n = itertools.count()


def one(conn: Conn, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def new_user(conn: Conn, xp: int = 0) -> str:
    n = next(_n)
    return str(
        one(
            conn,
            'INSERT INTO "User" (email, username, password, xp) VALUES (%s, %s, %s, %s)'
            " RETURNING id",
            [f"journey{n}@example.com", f"journey{n}", PW, xp],
        )
    )


def stage_ids(conn: Conn) -> dict[str, str]:
    return dict(conn.execute('SELECT name, id FROM "JourneyStage"').fetchall())


def xp_of(conn: Conn, user_id: str) -> int:
    return int(one(conn, 'SELECT xp FROM "User" WHERE id = %s', [user_id]))


def audits(conn: Conn, action: str, resource_id: str | None = None) -> int:
    query = "SELECT count(*) FROM audit_log WHERE action = %s"
    params: list[Any] = [action]
    if resource_id is not None:
        query += ' AND "resourceId" = %s'
        params.append(resource_id)
    return int(one(conn, query, params))


@pytest.fixture
def user(seeded_conn: Conn) -> str:
    return new_user(seeded_conn)


@pytest.fixture
def stages(seeded_conn: Conn) -> dict[str, str]:
    return stage_ids(seeded_conn)


def listed(conn: Conn, settings: Settings, **kw: Any) -> list[dict[str, Any]]:
    """The stages on the first page (the seed's eight fit in one)."""
    return journey.list_stages(conn, settings=settings, **kw).items


# -- stages -------------------------------------------------------------------------------


def test_list_stages_is_active_only_and_ordered(
    seeded_conn: Conn, seeded_settings: Settings, stages: dict[str, str]
) -> None:
    assert [s["name"] for s in listed(seeded_conn, seeded_settings)] == [
        s.name for s in JOURNEY_STAGES
    ]
    journey.deactivate_stage(seeded_conn, ACTOR, stages["Mentorship"])
    assert "Mentorship" not in [s["name"] for s in listed(seeded_conn, seeded_settings)]
    every = listed(seeded_conn, seeded_settings, include_inactive=True)
    assert [s["name"] for s in every][-1] == "Mentorship"
    first = journey.list_stages(seeded_conn, settings=seeded_settings, limit=2)
    page = journey.list_stages(
        seeded_conn, settings=seeded_settings, limit=3, cursor=first.next_cursor
    )
    assert [s["order"] for s in page.items] == [3, 4, 5]


def test_create_stage_defaults_to_the_end_and_audits_once(seeded_conn: Conn) -> None:
    row = journey.create_stage(
        seeded_conn, ACTOR, name="  Graduation ", xp_reward=500, description="Done"
    )
    assert (row["name"], row["order"], row["xpReward"], row["active"]) == (
        "Graduation",
        len(JOURNEY_STAGES) + 1,
        500,
        True,
    )
    assert audits(seeded_conn, "journey_stage.create", row["id"]) == 1
    assert journey.resolve_stage(seeded_conn, row["id"])["description"] == "Done"


def test_create_stage_conflicts_name_the_field(seeded_conn: Conn) -> None:
    with pytest.raises(Conflict) as name:
        journey.create_stage(seeded_conn, ACTOR, name="Welcome")
    assert name.value.field == "name"
    with pytest.raises(Conflict) as order:
        journey.create_stage(seeded_conn, ACTOR, name="Elsewhere", order=3)
    assert order.value.field == "order"
    assert audits(seeded_conn, "journey_stage.create") == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "Ok", "xp_reward": -1},
        {"name": "Ok", "order": 0},
        {"name": "Ok", "description": "d" * 2001},
    ],
)
def test_create_stage_rejects_bad_values(seeded_conn: Conn, fields: dict[str, Any]) -> None:
    with pytest.raises(Invalid):
        journey.create_stage(seeded_conn, ACTOR, **fields)


def test_update_stage_changes_only_what_differs(seeded_conn: Conn, stages: dict[str, str]) -> None:
    sid = stages["Welcome"]
    row = journey.update_stage(seeded_conn, ACTOR, sid, {"name": "Hello", "xpReward": 15})
    assert (row["name"], row["xpReward"]) == ("Hello", 15)
    assert audits(seeded_conn, "journey_stage.update", sid) == 1
    journey.update_stage(seeded_conn, ACTOR, sid, {"name": "Hello"})  # no-op
    assert audits(seeded_conn, "journey_stage.update", sid) == 1
    with pytest.raises(Conflict) as e:
        journey.update_stage(seeded_conn, ACTOR, sid, {"name": "Mentorship"})
    assert e.value.field == "name"
    with pytest.raises(Conflict) as e:
        journey.update_stage(seeded_conn, ACTOR, sid, {"order": 2})
    assert e.value.field == "order"
    with pytest.raises(Invalid):
        journey.update_stage(seeded_conn, ACTOR, sid, {"id": "other"})
    with pytest.raises(NotFound):
        journey.update_stage(seeded_conn, ACTOR, "no-such-stage", {"name": "X"})


def test_deactivate_is_its_own_audited_action(seeded_conn: Conn, stages: dict[str, str]) -> None:
    sid = stages["Mentorship"]
    assert journey.deactivate_stage(seeded_conn, ACTOR, sid)["active"] is False
    journey.deactivate_stage(seeded_conn, ACTOR, sid)  # already inactive: no-op
    assert audits(seeded_conn, "journey_stage.deactivate", sid) == 1
    journey.update_stage(seeded_conn, ACTOR, sid, {"active": True})
    assert audits(seeded_conn, "journey_stage.activate", sid) == 1


def test_delete_unused_stage(seeded_conn: Conn) -> None:
    row = journey.create_stage(seeded_conn, ACTOR, name="Temporary")
    journey.delete_stage(seeded_conn, ACTOR, row["id"])
    with pytest.raises(NotFound):
        journey.resolve_stage(seeded_conn, row["id"])
    assert audits(seeded_conn, "journey_stage.delete", row["id"]) == 1


def test_delete_stage_with_history_suggests_deactivate(
    seeded_conn: Conn, stages: dict[str, str]
) -> None:
    with pytest.raises(Conflict) as e:
        journey.delete_stage(seeded_conn, ACTOR, stages["Welcome"])  # seeded users have states
    assert e.value.details["suggestion"] == "deactivate"
    assert "deactivate" in str(e.value)
    assert journey.resolve_stage(seeded_conn, stages["Welcome"])["name"] == "Welcome"
    assert audits(seeded_conn, "journey_stage.delete") == 0


def test_plan_stage_delete_says_what_delete_would_do_and_writes_nothing(
    seeded_conn: Conn, stages: dict[str, str]
) -> None:
    row = journey.create_stage(seeded_conn, ACTOR, name="Planned")
    plan = journey.plan_stage_delete(seeded_conn, "planned")
    assert plan.stage == row and plan.states == 0 and plan.deletable
    used = journey.plan_stage_delete(seeded_conn, "Welcome")
    assert used.stage["id"] == stages["Welcome"] and used.states > 0 and not used.deletable
    assert audits(seeded_conn, "journey_stage.delete") == 0
    with pytest.raises(NotFound):
        journey.plan_stage_delete(seeded_conn, "no such stage")


def test_reorder_swaps_two_stages(
    seeded_conn: Conn, seeded_settings: Settings, stages: dict[str, str]
) -> None:
    ids = [s["id"] for s in listed(seeded_conn, seeded_settings)]
    ids[0], ids[1] = ids[1], ids[0]
    rows = journey.reorder_stages(seeded_conn, ACTOR, ids)
    assert [r["id"] for r in rows] == ids
    assert journey.resolve_stage(seeded_conn, stages["Email Verification"])["order"] == 1
    assert journey.resolve_stage(seeded_conn, stages["Welcome"])["order"] == 2
    assert audits(seeded_conn, "journey_stage.reorder") == 1
    journey.reorder_stages(seeded_conn, ACTOR, ids)  # same order: nothing to do
    assert audits(seeded_conn, "journey_stage.reorder") == 1


def test_reorder_swap_inside_one_transaction(
    seeded_settings: Settings, stages: dict[str, str]
) -> None:
    with psycopg.connect(seeded_settings.url_for()) as conn:
        ids = [s["id"] for s in listed(conn, seeded_settings)]
        ids[2], ids[5] = ids[5], ids[2]
        journey.reorder_stages(conn, ACTOR, ids)
        # The transaction commits here, when the deferred unique check runs.
    with psycopg.connect(seeded_settings.url_for()) as conn:
        assert [s["id"] for s in listed(conn, seeded_settings)] == ids


def test_reorder_puts_unlisted_inactive_stages_last(
    seeded_conn: Conn, seeded_settings: Settings, stages: dict[str, str]
) -> None:
    journey.deactivate_stage(seeded_conn, ACTOR, stages["Welcome"])
    active = [s["id"] for s in listed(seeded_conn, seeded_settings)]
    rows = journey.reorder_stages(seeded_conn, ACTOR, list(reversed(active)))
    assert [r["id"] for r in rows] == [*reversed(active), stages["Welcome"]]
    assert [r["order"] for r in rows] == list(range(1, len(JOURNEY_STAGES) + 1))


def test_reorder_rejects_incomplete_unknown_and_repeated_lists(
    seeded_conn: Conn, seeded_settings: Settings, stages: dict[str, str]
) -> None:
    ids = [s["id"] for s in listed(seeded_conn, seeded_settings)]
    with pytest.raises(Invalid) as e:
        journey.reorder_stages(seeded_conn, ACTOR, ids[1:])
    assert e.value.details["missing"] == [ids[0]]
    with pytest.raises(Invalid) as e:
        journey.reorder_stages(seeded_conn, ACTOR, [*ids, "nope"])
    assert e.value.details["unknown"] == ["nope"]
    with pytest.raises(Invalid) as e:
        journey.reorder_stages(seeded_conn, ACTOR, [*ids, ids[0]])
    assert e.value.details["duplicates"] == [ids[0]]
    assert audits(seeded_conn, "journey_stage.reorder") == 0


def test_find_stage_by_name_or_id(seeded_conn: Conn, stages: dict[str, str]) -> None:
    assert journey.resolve_stage(seeded_conn, "Welcome")["id"] == stages["Welcome"]
    assert journey.resolve_stage(seeded_conn, "profile setup")["id"] == stages["Profile Setup"]
    assert journey.resolve_stage(seeded_conn, stages["Mentorship"])["name"] == "Mentorship"
    for ref in ("Nope", "x" * 500, "bad\x00id"):
        with pytest.raises(NotFound):
            journey.resolve_stage(seeded_conn, ref)


# -- progress -----------------------------------------------------------------------------


def test_a_new_users_journey_is_all_not_started(seeded_conn: Conn, user: str) -> None:
    data = journey.journey(seeded_conn, user)
    assert [s["name"] for s in data["stages"]] == [s.name for s in JOURNEY_STAGES]
    assert {s["status"] for s in data["stages"]} == {"NOT_STARTED"}
    assert (data["completed"], data["total"], data["user"]["xp"]) == (0, 8, 0)


def test_completion_needs_the_stage_started_or_the_previous_done(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    with pytest.raises(Conflict) as e:
        journey.complete(seeded_conn, ACTOR, user, stages["Email Verification"])
    assert e.value.details["reason"] == "previous_stage_not_done"
    # The refused call left no state row behind.
    assert (
        one(seeded_conn, 'SELECT count(*) FROM "UserJourneyState" WHERE "userId" = %s', [user]) == 0
    )
    # The first stage can always be completed; then the next one can.
    assert journey.complete(seeded_conn, ACTOR, user, stages["Welcome"])["status"] == "COMPLETED"
    assert (
        journey.complete(seeded_conn, ACTOR, user, stages["Email Verification"])["xpAwarded"] == 20
    )
    # A started stage can be completed whatever came before it.
    journey.start(seeded_conn, ACTOR, user, stages["First Project"])
    done = journey.complete(seeded_conn, ACTOR, user, stages["First Project"])
    assert (done["status"], done["xpAwarded"], done["xp"]) == ("COMPLETED", 150, 180)
    with pytest.raises(Conflict):
        journey.complete(seeded_conn, ACTOR, user, stages["Skills Assessment"])


def test_skip_then_complete_the_next_stage(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    skipped = journey.skip(seeded_conn, ACTOR, user, stages["Welcome"])
    assert (skipped["status"], skipped["xpAwarded"], skipped["xp"]) == ("SKIPPED", 0, 0)
    done = journey.complete(seeded_conn, ACTOR, user, stages["Email Verification"])
    assert (done["xpAwarded"], xp_of(seeded_conn, user)) == (20, 20)
    # A skipped stage can still be started and completed later.
    journey.start(seeded_conn, ACTOR, user, stages["Welcome"])
    assert journey.complete(seeded_conn, ACTOR, user, stages["Welcome"])["xpAwarded"] == 10


def test_completed_stages_cannot_be_skipped_or_restarted(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    journey.complete(seeded_conn, ACTOR, user, stages["Welcome"])
    for action in (journey.skip, journey.start):
        with pytest.raises(Conflict) as e:
            action(seeded_conn, ACTOR, user, stages["Welcome"])
        assert e.value.details["reason"] == "completed"
    assert journey.journey(seeded_conn, user)["stages"][0]["status"] == "COMPLETED"


def test_start_and_skip_repeat_as_no_ops(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    sid = stages["Profile Setup"]
    assert journey.start(seeded_conn, ACTOR, user, sid)["changed"] is True
    again = journey.start(seeded_conn, ACTOR, user, sid)
    assert (again["changed"], again["status"]) == (False, "IN_PROGRESS")
    assert audits(seeded_conn, "journey.start", user) == 1
    journey.skip(seeded_conn, ACTOR, user, sid)
    assert journey.skip(seeded_conn, ACTOR, user, sid)["changed"] is False
    assert audits(seeded_conn, "journey.skip", user) == 1


def test_completing_twice_awards_once_and_audits_once(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    before = xp_of(seeded_conn, user)
    first = journey.complete(seeded_conn, ACTOR, user, stages["Welcome"])
    second = journey.complete(seeded_conn, ACTOR, user, stages["Welcome"])
    assert xp_of(seeded_conn, user) - before == 10
    assert (first["changed"], first["xpAwarded"]) == (True, 10)
    assert (second["changed"], second["xpAwarded"], second["xp"]) == (False, 0, 10)
    assert second["completedAt"] == first["completedAt"]
    assert audits(seeded_conn, "journey.complete", user) == 1


def test_each_change_records_one_audit_row_with_the_award(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    journey.start(seeded_conn, ACTOR, user, stages["Welcome"])
    journey.complete(seeded_conn, ACTOR, user, stages["Welcome"])
    rows = seeded_conn.execute(
        "SELECT action, actor, resource, details FROM audit_log"
        " WHERE \"resourceId\" = %s AND action LIKE 'journey.%%' ORDER BY id",
        [user],
    ).fetchall()
    assert [r[0] for r in rows] == ["journey.start", "journey.complete"]
    action, actor, resource, details = rows[1]
    assert (actor, resource) == (ACTOR.label, "journey")
    assert details["stageId"] == stages["Welcome"]
    assert details["before"] == {"status": "IN_PROGRESS"}
    assert details["after"]["status"] == "COMPLETED" and details["after"]["xpAwarded"] == 10


@pytest.mark.parametrize("started", [False, True], ids=["no-row-yet", "in-progress"])
def test_concurrent_completes_award_once(
    seeded_settings: Settings, seeded_conn: Conn, user: str, stages: dict[str, str], started: bool
) -> None:
    sid = stages["Welcome"]
    if started:
        journey.start(seeded_conn, ACTOR, user, sid)
    barrier = threading.Barrier(10)
    results: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with psycopg.connect(seeded_settings.url_for()) as conn:
                barrier.wait(timeout=10)
                results.append(journey.complete(conn, ACTOR, user, sid))
        except BaseException as e:  # reported by the main thread
            failures.append(e)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures, failures
    assert len(results) == 10
    assert xp_of(seeded_conn, user) == 10
    assert sum(r["xpAwarded"] for r in results) == 10
    assert sum(r["changed"] for r in results) == 1
    assert audits(seeded_conn, "journey.complete", user) == 1


def test_guide_raw_update_after_a_complete_awards_nothing_more(
    seeded_conn: Conn, stages: dict[str, str]
) -> None:
    admin = one(
        seeded_conn, "SELECT id FROM \"User\" WHERE email = 'admin@alicesolutionsgroup.com'"
    )
    start_xp = xp_of(seeded_conn, admin)
    assert journey.complete(seeded_conn, ACTOR, admin, stages["Profile Setup"])["xpAwarded"] == 50
    seeded_conn.execute(
        'UPDATE "UserJourneyState" SET status = \'COMPLETED\', "completedAt" = NOW()'
        ' WHERE "userId" = (SELECT id FROM "User" WHERE email = \'admin@alicesolutionsgroup.com\')'
        ' AND "stageId" = (SELECT id FROM "JourneyStage" WHERE name = \'Profile Setup\')'
    )
    assert xp_of(seeded_conn, admin) == start_xp + 50


def test_level_follows_xp_across_100_500_1000(
    seeded_conn: Conn, seeded_settings: Settings, user: str
) -> None:
    levels = []
    for stage in listed(seeded_conn, seeded_settings):
        result = journey.complete(seeded_conn, ACTOR, user, stage["id"])
        levels.append((result["xp"], result["level"]))
    # Rewards 10 20 50 75 150 200 250 300: cumulative 10 30 80 155 305 505 755 1055.
    assert levels == [
        (10, "OWLET"),
        (30, "OWLET"),
        (80, "OWLET"),
        (155, "FLEDGLING"),
        (305, "FLEDGLING"),
        (505, "NIGHT_OWL"),
        (755, "NIGHT_OWL"),
        (1055, "WISE_OWL"),
    ]


def test_inactive_stages_take_no_progress_and_are_passed_over(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    journey.deactivate_stage(seeded_conn, ACTOR, stages["Email Verification"])
    with pytest.raises(Conflict) as e:
        journey.start(seeded_conn, ACTOR, user, stages["Email Verification"])
    assert e.value.details["reason"] == "inactive"
    journey.complete(seeded_conn, ACTOR, user, stages["Welcome"])
    # The previous *active* stage of Profile Setup is now Welcome.
    assert journey.complete(seeded_conn, ACTOR, user, stages["Profile Setup"])["changed"]
    names = [s["name"] for s in journey.journey(seeded_conn, user)["stages"]]
    assert "Email Verification" not in names


def test_a_new_first_stage_can_always_be_completed(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    journey.deactivate_stage(seeded_conn, ACTOR, stages["Welcome"])
    assert journey.complete(seeded_conn, ACTOR, user, stages["Email Verification"])["changed"]


def test_unknown_users_and_stages_are_not_found(
    seeded_conn: Conn, user: str, stages: dict[str, str]
) -> None:
    with pytest.raises(NotFound):
        journey.complete(seeded_conn, ACTOR, user, "no-such-stage")
    with pytest.raises(NotFound):
        journey.complete(seeded_conn, ACTOR, "no-such-user", stages["Welcome"])
    with pytest.raises(NotFound):
        journey.journey(seeded_conn, "no-such-user")
    with pytest.raises(NotFound):
        journey.resolve_stage(seeded_conn, "x" * 1000)
    with pytest.raises(Invalid):
        journey.progress(seeded_conn, ACTOR, user, stages["Welcome"], "finish")


def test_resolve_user_by_email_username_or_id(seeded_conn: Conn, user: str) -> None:
    row = resolve_user(seeded_conn, user)
    for ref in (user, row["email"].upper(), row["username"]):
        assert resolve_user(seeded_conn, ref)["id"] == user
    with pytest.raises(NotFound):
        resolve_user(seeded_conn, "nobody@example.com")


def test_an_award_past_the_largest_xp_is_409_not_500(
    seeded_conn: Conn, stages: dict[str, str]
) -> None:
    rich = new_user(seeded_conn, xp=2**31 - 5)
    with pytest.raises(Conflict) as e:
        journey.complete(seeded_conn, ACTOR, rich, stages["Welcome"])
    assert e.value.details["reason"] == "xp_overflow"
    assert xp_of(seeded_conn, rich) == 2**31 - 5
