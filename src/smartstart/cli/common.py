"""What every command group shares: console, options, errors, output."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import IO, TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from smartstart.cli import terminal
from smartstart.cli.output import (
    Stream,
    plain_file,
    plain_table,
    say,
    screen_width,
    terminal_file,
)
from smartstart.config import Settings, get_settings
from smartstart.errors import SmartStartError

if TYPE_CHECKING:
    from rich.console import Console

# Rich consoles made on first use: plain output (pipes, --json) never imports Rich.
console = Stream()
err_console = Stream(stderr=True)

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
    except ValueError as e:  # pydantic's ValidationError is one (and only then imported)
        from pydantic import ValidationError

        if not isinstance(e, ValidationError):
            raise
        parts = []
        for err in e.errors():
            name = "_".join(str(p) for p in err["loc"]).upper()
            where = f"SMARTSTART_{name}: " if name else ""
            parts.append(where + err["msg"].removeprefix("Value error, "))
        raise SmartStartError("invalid configuration: " + "; ".join(parts)) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    say(err_console, ("error:", "bold red"), " " + message)
    return typer.Exit(code)


def _nul_error(what: str) -> SmartStartError:
    return SmartStartError(
        f"the {what} is invalid: it contains a NUL character (\\0); nothing was changed"
    )


def _check_no_nul(kwargs: Mapping[str, object]) -> None:
    """Refuse a NUL in any string parameter: PostgreSQL text cannot hold one."""
    for name, value in kwargs.items():
        values = value if isinstance(value, list | tuple) else (value,)
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise _nul_error(name.rstrip("_").replace("_", "-"))


class _NulFreeStdin:
    """sys.stdin for a command: whatever it reads (--password-stdin, prompts) is refused
    when it holds a NUL, as arguments are."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def _checked(self, text: str) -> str:
        if "\x00" in text:
            raise _nul_error("input read from stdin")
        return text

    def read(self, size: int = -1) -> str:
        return self._checked(self._stream.read(size))

    def readline(self, size: int = -1) -> str:
        return self._checked(self._stream.readline(size))

    def readlines(self, hint: int = -1) -> list[str]:
        return [self._checked(line) for line in self._stream.readlines(hint)]

    def __iter__(self) -> Iterator[str]:
        return (self._checked(line) for line in self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def _nul_free_stdin() -> Iterator[None]:
    original = sys.stdin
    sys.stdin = _NulFreeStdin(original)
    try:
        yield
    finally:
        sys.stdin = original


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a SmartStartError into one line on stderr and exit status 1.

    Every command goes through here, so this is also the one place that refuses a NUL
    in any string input (arguments, options, stdin), before anything is changed.
    """

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            _check_no_nul(kwargs)
            with _nul_free_stdin():
                return func(*args, **kwargs)
        except SmartStartError as e:
            raise fail(str(e)) from None
        except Exception as e:
            # The driver is imported by the command that uses it, not to build the command
            # (help and completion never need it): no driver loaded, no driver error.
            psycopg = sys.modules.get("psycopg")
            driver_error = psycopg is not None and isinstance(e, psycopg.Error)
            if not driver_error and not type(e).__module__.startswith("sqlalchemy"):
                raise
            from smartstart.db.engine import explain_connect_error

            orig = getattr(e, "orig", None) or e
            connection_lost = psycopg is not None and isinstance(orig, psycopg.OperationalError)
            if connection_lost and "connection" in str(orig):
                raise fail(str(explain_connect_error(orig, settings()))) from None
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise fail(f"database error: {first}; nothing was changed") from None

    return wrapper


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _whole(column: str, values: Sequence[str]) -> bool:
    """Ids and emails are never cut: a piece of one is of no use."""
    name = column.lower()
    return (
        name in ("id", "email", "actor", "user", "username")
        or name.endswith(("id", "email"))
        or any("@" in v for v in values)
    )


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Iterable[str] | None = None,
    title: str | None = None,
) -> None:
    """Rows as a table; fitted to a terminal without cutting ids and emails, whole otherwise."""
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    cells = [["" if row.get(c) is None else str(row.get(c)) for c in cols] for row in rows]
    minimum = []  # a whole column's: its widest value (0: may be folded)
    for i, col in enumerate(cols):
        values = [r[i] for r in cells]
        minimum.append(max(map(len, [col, *values])) if _whole(col, values) else 0)
    text = None
    if (file := plain_file(console)) is not None:
        text = plain_table(cells, cols, title, list(minimum))
    elif (file := terminal_file(console)) is not None:
        text = terminal.table(cells, cols, title, minimum, screen_width())
    if file is not None and text is not None:
        file.write(text)
        file.flush()
        return
    _rich_table(
        console.rich if isinstance(console, Stream) else console, cells, cols, title, minimum
    )


def _rich_table(
    out: Console, cells: list[list[str]], cols: list[str], title: str | None, minimum: list[int]
) -> None:
    """The table drawn by Rich: values are text, never markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    heading = None if title is None else Text(title, style="table.title")
    table = Table(title=heading, show_lines=False)
    for col, width in zip(cols, minimum, strict=True):
        if width:
            table.add_column(col, no_wrap=True, min_width=width)
        else:
            table.add_column(col, overflow="fold")
    for r in cells:
        table.add_row(*map(Text, r))
    # Into a pipe or a file nothing is cut or folded; on a terminal, only other columns
    # are folded, and a table that still does not fit is printed wider than the screen.
    measured = out.measure(table, options=out.options.update_width(1_000_000))
    width = measured.maximum if not out.is_terminal else measured.minimum
    if width <= out.width:
        out.print(table)
        return
    wide = Console(
        file=out.file,
        width=width,
        force_terminal=out.is_terminal,
        color_system=out.color_system,  # type: ignore[arg-type]
    )
    wide.print(table)


_RELATIVE = re.compile(r"(\d{1,7})\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
WHEN_HELP = (
    "30m, 12h, 7d or 2w ago; today or yesterday (from 00:00 UTC); or an ISO 8601 date or "
    "datetime (UTC when no zone is given)."
)


def _shown(value: str, limit: int = 60) -> str:
    """A bad value as an error message quotes it: a megabyte of it is no help."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"… ({len(value):,} chars)"


def parse_when(value: str) -> datetime:
    """A point in time: a relative duration ago, today, yesterday, or ISO 8601 (UTC default)."""
    text = value.strip().lower()
    now = datetime.now(UTC)
    try:
        if match := _RELATIVE.fullmatch(text):
            return now - timedelta(**{_UNITS[match[2]]: int(match[1])})
        if text in ("now", "today", "yesterday"):
            if text == "now":
                return now
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            return midnight - timedelta(days=1 if text == "yesterday" else 0)
        parsed = datetime.fromisoformat(value.strip())
    except OverflowError:
        raise typer.BadParameter(f"{_shown(value)} is too far back") from None
    except ValueError:
        raise typer.BadParameter(
            f"{_shown(value)} is not a time: give 30m, 12h, 7d, 2w, today, yesterday or an "
            "ISO 8601 date or datetime (e.g. 2025-01-31 or 2025-01-31T14:00:00+01:00)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


WhenOpt = Annotated[
    datetime | None, typer.Option(parser=parse_when, metavar="WHEN", help=WHEN_HELP)
]


def interactive() -> bool:
    """Whether there is someone to ask: stdin is a terminal."""
    return sys.stdin.isatty()


def confirm(question: str, yes: bool) -> None:
    """Ask unless --yes; abort (exit 1, nothing changed) on no or on no answer at all."""
    if yes:
        return
    # The question goes to stderr: stdout stays the command's output (--json included).
    # The answer is read from stdin, a terminal or a script's pipe (`echo y | ...`).
    try:
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # stdin ended before an answer
        raise fail(
            "not confirmed (no answer on stdin; --yes skips the question); nothing was changed"
        ) from None
    if not agreed:
        raise fail("aborted; nothing was changed")


def ask_secret(label: str, instead: str = "--password-stdin") -> str:
    """A secret typed twice without echo, on stderr; without a terminal, a clear error."""
    if not interactive():
        # getpass would warn (GetPassWarning) and read the secret, echoed, from the pipe.
        raise SmartStartError(
            f"no {label.lower()} given and no terminal to ask on: pass it with {instead}"
        )
    return str(typer.prompt(label, hide_input=True, confirmation_prompt=True, err=True))


def counting_bar() -> Any:
    """A transient rich progress bar counting items (description, bar, N/M, time)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console.rich,
        transient=True,
    )
