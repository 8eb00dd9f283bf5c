"""What every command group shares: console, options, errors, output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

import psycopg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from smartstart.config import Settings, get_settings
from smartstart.db.engine import explain_connect_error
from smartstart.errors import SmartStartError

console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be done and change nothing.")
]

P = ParamSpec("P")
R = TypeVar("R")


def settings() -> Settings:
    """Settings, with a configuration mistake reported as one readable line."""
    try:
        return get_settings()
    except ValidationError as e:
        parts = []
        for err in e.errors():
            name = "_".join(str(p) for p in err["loc"]).upper()
            where = f"SMARTSTART_{name}: " if name else ""
            parts.append(where + err["msg"].removeprefix("Value error, "))
        raise SmartStartError("invalid configuration: " + "; ".join(parts)) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a SmartStartError into one line on stderr and exit status 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SmartStartError as e:
            raise fail(str(e)) from None
        except Exception as e:
            if not isinstance(e, psycopg.Error) and not type(e).__module__.startswith("sqlalchemy"):
                raise
            orig = getattr(e, "orig", None) or e
            if isinstance(orig, psycopg.OperationalError) and "connection" in str(orig):
                raise fail(str(explain_connect_error(orig, settings()))) from None
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise fail(f"database error: {first}; nothing was changed") from None

    return wrapper


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def print_table(
    rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None, title: str | None = None
) -> None:
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    table = Table(title=title, show_lines=False)
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in cols))
    console.print(table)


def confirm(question: str, yes: bool) -> None:
    """Ask unless --yes; abort (exit 1, nothing changed) on no or when there is no terminal."""
    if yes:
        return
    if not typer.confirm(question, default=False):
        raise fail("aborted; nothing was changed")
