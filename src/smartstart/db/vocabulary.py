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
# match stays inside one field.
SEARCH_TEXT = (
    "(((((((((email || '\n') || username) || '\n') || COALESCE(name, '')) || '\n')"
    " || COALESCE(\"firstName\", '')) || '\n') || COALESCE(\"lastName\", '')))"
)
# pg_trgm splits words at anything but letters and digits, so "kim.9" gave the trigrams
# of "kim" and of "9", which tens of thousands of users have. "User"."searchText" (0011)
# is the lower-cased text with the separators of emails, usernames and names made
# upper-case letters: they stay inside the trigrams, and since a lower-cased text holds no
# upper-case letter, a search made the same way matches exactly what it matched before.
# Letters whose lower case is rare (pg_trgm folds case): with "X" for ".", the trigrams
# of "rtx" matched every "smartstart.example" email. Nested replace(): about a tenth of
# translate()'s cost.
SEPARATORS = ((" ", "Þ"), (".", "Ð"), ("@", "Ŋ"), ("-", "Ƿ"), ("_", "Ȝ"), ("+", "Ʒ"))


def search_key(expression: str) -> str:
    """SQL: a text `expression` lower-cased with SEPARATORS made letters (as searchText)."""
    expression = f"lower({expression})"
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
