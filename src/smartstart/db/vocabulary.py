"""The schema's fixed vocabularies, importable without SQLAlchemy (the CLI starts fast)."""

from __future__ import annotations

USER_STATUSES = ("ACTIVE", "INACTIVE", "SUSPENDED", "PENDING")
JOURNEY_STATUSES = ("NOT_STARTED", "IN_PROGRESS", "COMPLETED", "SKIPPED")
# (name, lowest xp) in ascending order: the guide's XP bands.
LEVELS: tuple[tuple[str, int], ...] = (
    ("OWLET", 0),
    ("FLEDGLING", 100),
    ("NIGHT_OWL", 500),
    ("WISE_OWL", 1000),
)

# The text `list_users` searches; the GIN index of migration 0004 is on this expression.
SEARCH_TEXT = (
    "(((((((((email || '\n') || username) || '\n') || COALESCE(name, '')) || '\n')"
    " || COALESCE(\"firstName\", '')) || '\n') || COALESCE(\"lastName\", '')))"
)


def level_for(xp: int) -> str:
    """The level name for an XP total (the database trigger applies the same bands)."""
    name = LEVELS[0][0]
    for level, floor in LEVELS:
        if xp >= floor:
            name = level
    return name
