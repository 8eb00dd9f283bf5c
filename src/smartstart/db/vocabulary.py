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

# The text `list_users` searches: the searched fields joined by newlines, so that a
# match stays inside one field. Stored lower-cased as "User"."searchText" (0011).
SEARCH_TEXT = (
    "(((((((((email || '\n') || username) || '\n') || COALESCE(name, '')) || '\n')"
    " || COALESCE(\"firstName\", '')) || '\n') || COALESCE(\"lastName\", '')))"
)
# pg_trgm splits words at anything but letters and digits, so "kim.9" gave the trigrams
# of "kim" and of "9", which tens of thousands of users have: the trigram index ("User_
# searchText_trgm_idx", 0011) is on the text with the separators of emails, usernames and
# names made letters, which keeps them inside the trigrams. Lossy on purpose (a real "þ"
# looks like a "."): the search also matches the text itself. Nested replace(), not
# translate(): ~1.7 against ~16 µs a row, and the index rechecks every match with it.
SEPARATORS = ((" ", "ÿ"), (".", "þ"), ("@", "ð"), ("-", "ª"), ("_", "º"), ("+", "µ"))


def trigram_text(expression: str) -> str:
    """SQL: `expression` (a text) with SEPARATORS made letters, as the index has it."""
    for separator, letter in SEPARATORS:
        expression = f"replace({expression}, '{separator}', '{letter}')"
    return expression


def level_for(xp: int) -> str:
    """The level name for an XP total (the database trigger applies the same bands)."""
    name = LEVELS[0][0]
    for level, floor in LEVELS:
        if xp >= floor:
            name = level
    return name
