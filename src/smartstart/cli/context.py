"""Database access for domain commands: one transaction per command, the CLI actor."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from smartstart.cli.common import settings
from smartstart.domain.actor import Actor

if TYPE_CHECKING:
    import psycopg


@contextmanager
def transaction() -> Iterator[tuple[psycopg.Connection[Any], Actor]]:
    """A connection in one transaction (committed on success) and the acting operator."""
    # The driver is imported here, when a command runs: its module's help and completion
    # do without it.
    from smartstart.db.engine import connect

    with connect(settings()) as conn:
        yield conn, Actor.operator()
