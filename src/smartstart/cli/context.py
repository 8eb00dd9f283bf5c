"""Database access for domain commands: one transaction per command, the CLI actor."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from smartstart.cli.common import settings
from smartstart.db.engine import connect
from smartstart.domain.audit import Actor


@contextmanager
def transaction() -> Iterator[tuple[psycopg.Connection[Any], Actor]]:
    """A connection in one transaction (committed on success) and the acting operator."""
    with connect(settings()) as conn:
        yield conn, Actor.operator()
