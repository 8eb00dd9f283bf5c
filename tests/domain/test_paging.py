"""The one cursor codec and limit rule (domain.paging), without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from smartstart.config import Settings
from smartstart.domain import paging
from smartstart.domain.errors import Invalid
from tests.cursors import forgeries


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, home=tmp_path)  # type: ignore[call-arg]


USERS = paging.Keyset("users", ("ts", "str"), {"sort": "createdAt", "q": None})
ROLES = paging.Keyset("roles", ("str",), {})
WHEN = datetime(2025, 1, 31, 14, 0, 0, 123456, tzinfo=UTC)


def test_a_cursor_round_trips_its_position_and_is_opaque(settings: Settings) -> None:
    cursor = USERS.cursor(settings, (WHEN, "user-1"))
    assert USERS.after(settings, cursor) == (WHEN, "user-1")
    assert "user-1" not in cursor and "2025" not in cursor  # opaque, not readable JSON
    assert USERS.after(settings, None) is None


@pytest.mark.parametrize(
    "kind",
    ["edited payload", "edited tag", "another listing", "NUL", "truncated", "no tag", "garbage"]
    + ["huge"],
)
def test_every_forged_cursor_is_invalid(settings: Settings, kind: str) -> None:
    genuine = USERS.cursor(settings, (WHEN, "user-1"))
    forged = forgeries(genuine, ROLES.cursor(settings, ("ADMIN",)))[kind]
    with pytest.raises(Invalid) as e:
        USERS.after(settings, forged)
    assert e.value.details == {"field": "cursor"}
    assert "cursor is invalid" in str(e.value)


def test_a_cursor_is_bound_to_its_sort_and_filters(settings: Settings) -> None:
    cursor = USERS.cursor(settings, (WHEN, "user-1"))
    other = paging.Keyset("users", ("ts", "str"), {"sort": "createdAt", "q": "ada"})
    with pytest.raises(Invalid, match="another sort or filter"):
        other.after(settings, cursor)


def test_a_cursor_of_another_installation_is_invalid(settings: Settings, tmp_path: Path) -> None:
    cursor = ROLES.cursor(settings, ("ADMIN",))
    elsewhere = Settings(_env_file=None, home=tmp_path / "other")  # type: ignore[call-arg]
    with pytest.raises(Invalid):
        ROLES.after(elsewhere, cursor)


def test_page_takes_one_row_more_to_know_there_is_a_next_page(settings: Settings) -> None:
    rows = [{"name": n} for n in ("A", "B", "C")]
    last = ROLES.page(settings, rows, 3, lambda r: (r["name"],))
    assert last == paging.Page(rows, None)
    first = ROLES.page(settings, rows, 2, lambda r: (r["name"],))
    assert first.items == rows[:2] and first.next_cursor is not None
    assert ROLES.after(settings, first.next_cursor) == ("B",)
    assert first.as_dict() == {"items": rows[:2], "next_cursor": first.next_cursor}


@pytest.mark.parametrize("limit", [0, -1, 501, 10**9, True, "50", 2.5, None])
def test_one_limit_rule(limit: object) -> None:
    with pytest.raises(Invalid) as e:
        paging.check_limit(limit)
    assert str(e.value) == "limit must be a whole number from 1 to 500"
    assert e.value.details == {"field": "limit", "min": 1, "max": 500}


def test_limits_in_range_pass() -> None:
    assert [paging.check_limit(n) for n in (1, 50, 500)] == [1, 50, 500]
    assert paging.DEFAULT_LIMIT == 50 and paging.MAX_LIMIT == 500
