"""Every command has help text and an entry in docs/cli.md."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smartstart.cli.main import command_tree

DOCS = Path(__file__).parents[1] / "docs" / "cli.md"


def commands() -> Iterator[tuple[str, Any]]:
    root = command_tree()

    def walk(cmd: Any, path: str) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "commands"):  # a group (Typer vendors its own click)
            for name, sub in cmd.commands.items():
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, cmd

    yield from walk(root, "smartstart")


def test_every_command_has_help_text() -> None:
    missing = [path for path, cmd in commands() if not (cmd.help or "").strip()]
    assert missing == []


def test_every_command_is_documented() -> None:
    headings = set(re.findall(r"^### (smartstart[\w -]*?)\s*$", DOCS.read_text(), re.M))
    missing = [path for path, _ in commands() if path not in headings]
    assert missing == [], f"add a '### <command>' section to docs/cli.md for: {missing}"


def test_docs_name_no_command_that_does_not_exist() -> None:
    headings = set(re.findall(r"^### (smartstart[\w -]*?)\s*$", DOCS.read_text(), re.M))
    assert headings - {path for path, _ in commands()} == set()


def test_every_group_has_help() -> None:
    root = command_tree()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        assert (cmd.help or "").strip(), name


def test_relative_links_resolve_in_a_clone() -> None:
    # README used to link to ../shared/…, outside the repository.
    root = Path(__file__).parents[1]
    broken = []
    for page in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z]+:", path):
                resolved = (page.parent / path).resolve()
                if not resolved.is_relative_to(root) or not resolved.exists():
                    broken.append(f"{page.relative_to(root)}: {target}")
    assert broken == []
