"""Plain output: what a command writes into a pipe without Rich is what Rich would write."""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys
from typing import Any

import pytest
from rich.console import Console

from smartstart.cli import common, output, terminal
from smartstart.config import Settings
from tests.conftest import process_env

ID = "01a228c4-8952-7000-8000-03dae17e5685"
TABLES: list[tuple[str | None, list[dict[str, Any]], list[str] | None]] = [
    (None, [{"id": ID, "email": "a@example.com", "name": "Ada", "xp": 30}], None),
    ("Journey stages", [{"order": 1, "title": "Welcome aboard", "xp": 10}], None),
    ("A title wider than the table", [{"a": 1}], None),  # Rich wraps it: Rich writes
    ("Audit log (UTC)", [], ["id", "createdAt", "actor"]),
    (None, [{"name": "Zoë Ørsted", "city": "東京", "note": "naïve café"}], None),
    (None, [{"name": "[bold]not markup[/]", "note": ":smile: [/] \\[x]"}], None),
    (None, [{"note": "tab\there", "cr": "a\rb", "nl": "two\nlines"}], None),
    (None, [{"id": None, "email": "", "x": "y" * 150}], None),
    (None, [], None),
]


def rich_table(*table: Any) -> str:
    """The table as Rich writes it into a pipe."""
    out = io.StringIO()
    common._rich_table(Console(file=out, width=80), *_prepared(*table))
    return out.getvalue()


def _prepared(
    title: str | None, rows: list[dict[str, Any]], columns: list[str] | None
) -> tuple[list[list[str]], list[str], str | None, list[int]]:
    cols = columns if columns is not None else (list(rows[0]) if rows else [])
    cells = [["" if r.get(c) is None else str(r.get(c)) for c in cols] for r in rows]
    minimum = []
    for i, col in enumerate(cols):
        values = [r[i] for r in cells]
        minimum.append(max(map(len, [col, *values])) if common._whole(col, values) else 0)
    return cells, cols, title, minimum


@pytest.mark.parametrize("table", TABLES)
def test_a_plain_table_is_what_rich_draws_into_a_pipe(table: Any) -> None:
    cells, cols, title, minimum = _prepared(*table)
    plain = output.plain_table(cells, cols, title, list(minimum))
    if plain is None:  # left to Rich: only for what it would change or wrap
        control = any(c < " " for row in cells for value in row for c in value)
        assert not cols or control or "wider" in str(title)
        return
    assert plain == rich_table(*table)


def _random_tables(count: int) -> list[tuple[str | None, list[dict[str, Any]], list[str]]]:
    """Tables like the listings': ids and emails (whole), and text of words short and long."""
    rnd = random.Random(8)
    words = ["a", "bb", "ccc", "ACTIVE", "2026-11-29", "19:23:05.742581+00:00", "x" * 25]
    names = ["id", "email", "name", "role", "lastActive", "note", "createdAt", "action"]
    tables = []
    for _ in range(count):
        cols = [rnd.choice(names) + str(i) for i in range(rnd.randint(1, 9))]
        cols[0] = "id" if rnd.random() < 0.3 else cols[0]
        rows = []
        for _ in range(rnd.randint(0, 5)):
            row: dict[str, Any] = {}
            for c in cols:
                if c == "id":
                    row[c] = f"01a228c4-8952-7000-8000-{rnd.randint(0, 10**6):012d}"
                elif c.startswith("email"):
                    row[c] = f"user{rnd.randint(0, 999)}@demo.smartstart.example"
                else:
                    row[c] = " ".join(rnd.choice(words) for _ in range(rnd.randint(0, 5)))
            rows.append(row)
        tables.append((rnd.choice([None, None, "Audit log (UTC)", "T"]), rows, cols))
    return tables


@pytest.mark.parametrize("table", _random_tables(60))
def test_a_terminal_table_is_laid_out_as_rich_lays_it_out(table: Any) -> None:
    cells, cols, title, minimum = _prepared(*table)
    for width in (30, 60, 80, 120, 200):
        out = io.StringIO()
        rich = Console(file=out, force_terminal=True, color_system=None, width=width)
        common._rich_table(rich, cells, cols, title, minimum)
        mine = terminal.table(cells, cols, title, minimum, width)
        if mine is not None:  # None: Rich draws it (it squeezes every column)
            assert re.sub(r"\x1b\[[0-9;]*m", "", mine) == out.getvalue(), width


def test_print_table_writes_plain_into_a_pipe_and_rich_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stdout", piped)
    monkeypatch.setattr(common, "console", output.Stream())
    common.print_table([{"id": ID, "name": "[red]Ada[/]"}], title="T")
    assert "[red]Ada[/]" in piped.getvalue() and common.console._rich is None
    terminal = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=terminal, force_terminal=True, width=60))
    common.print_table([{"id": ID, "name": "[red]Ada[/]"}], title="T")
    assert "[red]Ada[/]" in terminal.getvalue() and "\x1b[" in terminal.getvalue()


@pytest.mark.parametrize("text", ["more: --cursor abc.def", "no user '[/x]' :smile:", "é 東京"])
def test_a_plain_line_is_what_rich_writes(text: str) -> None:
    plain, rich = io.StringIO(), io.StringIO()
    output.say(_stream_on(plain), ("error:", "bold red"), " " + text)
    output.say(Console(file=rich, width=20), ("error:", "bold red"), " " + text)
    assert plain.getvalue() == rich.getvalue() == f"error: {text}\n"


def _stream_on(file: io.StringIO) -> output.Stream:
    class OnFile(output.Stream):
        @property
        def file(self) -> Any:
            return file

    return OnFile()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_styles_and_a_table_fitted_to_its_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = Terminal()
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.setattr(common, "console", _stream_on(screen))
    assert output.plain_file(common.console) is None
    common.print_table([{"id": ID, "note": "a long note " * 8}], title="Notes")
    lines = screen.getvalue().splitlines()
    assert "\x1b[1m" in lines[2] and "\x1b[3mNotes" in lines[0]  # bold header, italic title
    assert ID in screen.getvalue() and len(re.sub(r"\x1b\[[0-9;]*m", "", lines[4])) == 60
    assert common.console._rich is None  # drawn without Rich


def test_rich_draws_where_it_must(monkeypatch: pytest.MonkeyPatch) -> None:
    assert output.terminal_file(_stream_on(io.StringIO())) is None  # not a terminal
    monkeypatch.setenv("TERM", "dumb")
    assert output.terminal_file(_stream_on(Terminal())) is None
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("FORCE_COLOR", "1")  # Rich's switch: a pipe that wants colours
    assert output.plain_file(_stream_on(io.StringIO())) is None
    assert output.terminal_file(_stream_on(Terminal())) is None
    assert terminal.table([["Zoë"]], ["name"], None, [0], 80) is None  # not ASCII


def test_a_listing_into_a_pipe_imports_neither_rich_nor_pydantic(
    seeded_settings: Settings,
) -> None:
    code = (
        "import sys, json\n"
        "from smartstart.cli.main import main\n"
        "sys.argv = ['smartstart', *sys.argv[1:]]\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    for args in (["users", "list", "--limit", "3"], ["audit", "list", "--json"]):
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=process_env(seeded_settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
        assert "smartstart.cli.users" in loaded or "smartstart.cli.audit" in loaded
        assert not {m.split(".")[0] for m in loaded} & {"rich", "pydantic", "sqlalchemy"}, args
        assert done.stdout.strip(), done.stderr
