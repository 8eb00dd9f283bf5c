"""The root imports a command's module only when that command runs: start-up stays short."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from smartstart.cli.main import ROOT, _load, app


@pytest.mark.parametrize("name", list(ROOT))
def test_the_listed_help_is_the_commands_own(name: str) -> None:
    real = _load(name)
    assert real.help is not None
    assert real.help.strip().splitlines()[0] == ROOT[name].help


def test_the_root_lists_every_command_in_order() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    names = list(ROOT)
    lines = [line for line in result.output.splitlines() if line.startswith("│ ")]
    listed = [line.split()[1] for line in lines if line.split()[1] in names]
    assert listed == names


def _imported_after(*argv: str) -> set[str]:
    """Modules a fresh interpreter has imported after running `smartstart ARGV`."""
    code = (
        "import sys, json\n"
        "from smartstart.cli.main import app\n"
        f"sys.argv = ['smartstart', *{list(argv)!r}]\n"
        "try:\n    app()\n"
        "except SystemExit:\n    pass\n"
        "print('\\n' + json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_the_roots_help_imports_no_command_module_and_no_driver() -> None:
    loaded = _imported_after("--help")
    assert not {m for m in loaded if m.startswith("smartstart.cli.") and m != "smartstart.cli.main"}
    assert not loaded & {"psycopg", "pydantic", "sqlalchemy", "fastapi"}


def test_one_group_imports_only_itself() -> None:
    loaded = _imported_after("users", "--help")
    assert "smartstart.cli.users" in loaded
    others = {f"smartstart.cli.{lazy.module}" for lazy in ROOT.values()} - {"smartstart.cli.users"}
    assert not loaded & others
    assert not loaded & {"sqlalchemy", "fastapi", "alembic", "uvicorn"}


def test_completing_a_command_name_imports_no_command_module() -> None:
    code = (
        "import os, sys, json\n"
        "os.environ.update(_SMARTSTART_COMPLETE='complete_bash', COMP_WORDS='smartstart us',"
        " COMP_CWORD='1')\n"
        "from smartstart.cli.main import app\n"
        "try:\n    app(prog_name='smartstart')\n"
        "except SystemExit:\n    pass\n"
        "cli = sorted(m for m in sys.modules if m.startswith('smartstart.cli.'))\n"
        "print('\\n' + json.dumps(cli))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    lines = out.strip().splitlines()
    assert "users" in lines[0]
    assert json.loads(lines[-1]) == ["smartstart.cli.main"]


def test_the_users_groups_help_and_completion_import_no_driver() -> None:
    """Building the group (for its help, or to complete a word) needs no database."""
    assert not _imported_after("users", "--help") & {"psycopg", "smartstart.domain.users"}
    code = (
        "import os, sys, json\n"
        "os.environ.update(_SMARTSTART_COMPLETE='complete_bash',"
        " COMP_WORDS='smartstart users list --li', COMP_CWORD='3')\n"
        "from smartstart.cli.main import app\n"
        "try:\n    app(prog_name='smartstart')\n"
        "except SystemExit:\n    pass\n"
        "print('\\n' + json.dumps('psycopg' in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    lines = out.strip().splitlines()
    assert "--limit" in lines[0] and json.loads(lines[-1]) is False
