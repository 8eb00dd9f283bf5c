"""Every `smartstart …` command that a message or a document names exists."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from smartstart.cli.main import command_tree

ROOT = Path(__file__).parents[1]
HELP = {"-h", "--help"}
# `smartstart` as a command (not smartstart_db, smartstart.cli, demo.smartstart.example),
# with what follows it up to the end of the code span, cell, quote or sentence.
MENTION = re.compile(r"(?<![\w./-])smartstart((?:[ \t]+[^\s`\"'(),;:]+)*)")
PLACEHOLDER = re.compile(r"^[^a-z]|…|\.\.\.|^[a-z]*[A-Z<]")


def texts() -> Iterator[tuple[str, str]]:
    """(where, text) of every string in src/ and every line of README.md and docs/*.md."""
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield f"{path.relative_to(ROOT)}:{node.lineno}", node.value
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            yield f"{path.relative_to(ROOT)}:{number}", line


def options(cmd: Any) -> set[str]:
    found = set(HELP)
    for param in cmd.params:
        found.update(param.opts, param.secondary_opts)
    return found


def alternatives(word: str) -> list[str]:
    return [w for w in re.split(r"\\?\||/", word.strip("[]{}.…")) if w]


@lru_cache
def root() -> Any:
    return command_tree()


def problems(words: list[str]) -> Iterator[str]:
    """What in `smartstart WORDS…` names no command or option of the app."""
    cmd = root()
    for word in words:
        is_group = hasattr(cmd, "commands")
        if word == "--":
            return  # only arguments follow
        if word.lstrip("[").startswith("-"):
            for option in alternatives(word.lstrip("[")):
                option = option.split("=")[0]
                if option.startswith("-") and option not in options(cmd):
                    yield f"no option {option} of `{cmd.name}`"
            continue
        if not is_group or PLACEHOLDER.search(word):
            continue  # an argument, or a placeholder such as COMMAND or …
        names = alternatives(word)
        missing = [n for n in names if n not in cmd.commands]
        if missing:
            yield f"no command {' '.join(missing)} in `{cmd.name}`"
            return
        if len(names) > 1:
            return
        cmd = cmd.commands[names[0]]


def test_every_named_command_exists() -> None:
    wrong = []
    for where, text in texts():
        for match in MENTION.finditer(text):
            for problem in problems(match.group(1).split()):
                wrong.append(f"{where}: `smartstart{match.group(1)}`: {problem}")
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_a_command_that_does_not_exist() -> None:
    assert list(problems(["physician", "--fix"])) == ["no command physician in `smartstart`"]
    assert list(problems(["doctor", "--cure"])) == ["no option --cure of `doctor`"]
    assert list(problems(["db", "nonesuch"])) == ["no command nonesuch in `db`"]
    assert list(problems(["db", "reset", "--bogus"])) == ["no option --bogus of `reset`"]
    assert list(problems(["db", "start\\|stop", "[--json]"])) == []
    assert list(problems(["users", "show", "USER", "--json"])) == []
