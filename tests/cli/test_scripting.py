"""The CLI in scripts: questions on stderr, never in stdout; no terminal, no password
prompt; `-h` everywhere; flags without a `<bool>` in help. Through CliRunner and real
processes with pipes (and a pseudo-terminal where someone types)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from smartstart.cli.main import app
from smartstart.config import Settings
from tests.conftest import process_env

PW = "a perfectly fine passphrase"
SMARTSTART = str(Path(sys.executable).with_name("smartstart"))
runner = CliRunner()


def commands() -> Iterator[list[str]]:
    """Every command's words, groups included (`users`, `users list`, …)."""

    def walk(command: Any, words: list[str]) -> Iterator[list[str]]:
        yield words
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*words, name])

    yield from walk(get_command(app), [])


@pytest.fixture
def env(seeded_settings: Settings) -> dict[str, str]:
    return {**process_env(seeded_settings), "SMARTSTART_BCRYPT_ROUNDS": "4"}


@pytest.fixture
def db(seeded_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(seeded_settings.url_for(), autocommit=True) as conn:
        yield conn


def users_named(db: psycopg.Connection[Any], username: str) -> int:
    row = db.execute('SELECT count(*) FROM "User" WHERE username = %s', [username]).fetchone()
    assert row is not None
    return int(row[0])


def smartstart(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The real command, stdin, stdout and stderr all pipes."""
    return subprocess.run(
        [SMARTSTART, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


# -- help -------------------------------------------------------------------------------


def test_dash_h_is_help_and_no_flag_shows_a_type() -> None:
    for words in commands():
        short = runner.invoke(app, [*words, "-h"], terminal_width=200)
        assert short.exit_code == 0, (words, short.output)
        assert f"Usage: smartstart {' '.join(words)}".strip() in short.output, words
        # Typer 0.29 shows every flag as `--json <bool>`: a flag takes no value.
        assert "<bool>" not in short.output, (words, short.output)
    for words in ([], ["users", "list"]):
        short, long = (runner.invoke(app, [*words, h]).output for h in ("-h", "--help"))
        assert short == long


def test_help_in_a_pipe() -> None:
    done = subprocess.run(
        [SMARTSTART, "users", "list", "-h"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--json" in done.stdout and "<bool>" not in done.stdout


# -- passwords --------------------------------------------------------------------------


def test_no_terminal_no_password_prompt(db: psycopg.Connection[Any], env: dict[str, str]) -> None:
    # Without --password or --password-stdin, and nobody at a terminal to ask: one line on
    # stderr (no GetPassWarning, no echoed secret read from the pipe), nothing made.
    done = smartstart(
        env, "users", "create", "--email", "piped@example.com", "--username", "piped",
        stdin=f"{PW}\n{PW}\n",
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: no new password given and no terminal to ask on: pass it with --password-stdin"
    ]
    assert users_named(db, "piped") == 0
    # The same through CliRunner (whose stdin is no terminal either).
    result = runner.invoke(app, ["users", "passwd", "admin"], input=f"{PW}\n{PW}\n")
    assert result.exit_code == 1 and "no terminal to ask on" in result.output
    # The way a script gives it.
    given = smartstart(
        env, "users", "create", "--email", "piped@example.com", "--username", "piped",
        "--password-stdin", "--json", stdin=f"{PW}\n",
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout)["username"] == "piped"


def read_until(fd: int, text: str, timeout: float = 30) -> str:
    """Read fd until text has appeared; all that was read."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"waited for {text!r}, got {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096).decode()
            assert chunk, f"ended before {text!r}: {seen!r}"
            seen += chunk
    return seen


def test_password_prompts_go_to_stderr_and_json_stays_clean(
    db: psycopg.Connection[Any], env: dict[str, str]
) -> None:
    # Someone types at a terminal while stdout goes into a pipe (`... --json > user.json`).
    master, slave = pty.openpty()
    err_read, err_write = os.pipe()
    proc = subprocess.Popen(
        [SMARTSTART, "users", "create", "--email", "typed@example.com", "--username", "typed",
         "--json"],
        env=env, stdin=slave, stdout=subprocess.PIPE, stderr=err_write,
        start_new_session=True,  # no controlling terminal: getpass uses stdin, the pty
    )  # fmt: skip
    os.close(slave)
    os.close(err_write)
    try:
        # getpass writes the prompt's last space once echo is off (which flushes what was
        # typed before): type after it.
        asked = read_until(err_read, "New password: ")
        os.write(master, f"{PW}\n".encode())
        asked += read_until(err_read, "Repeat for confirmation: ")
        os.write(master, f"{PW}\n".encode())
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=60) == 0, (out, asked)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(err_read)
    assert json.loads(out)["username"] == "typed"  # stdout is the JSON and nothing else
    assert PW not in out + asked
    assert users_named(db, "typed") == 1


# -- confirmations ----------------------------------------------------------------------


def test_questions_go_to_stderr_and_an_answer_comes_from_stdin(
    db: psycopg.Connection[Any], env: dict[str, str]
) -> None:
    for name in ("kept", "gone"):
        made = smartstart(
            env, "users", "create", "--email", f"{name}@example.com", "--username", name,
            "--password-stdin", stdin=f"{PW}\n",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
    # No answer (stdin ends): a clear refusal, nothing deleted.
    unanswered = smartstart(env, "users", "delete", "kept")
    assert unanswered.returncode == 1
    assert "Delete kept" in unanswered.stderr and "Delete" not in unanswered.stdout
    assert "not confirmed" in unanswered.stderr and "--yes" in unanswered.stderr
    assert "Aborted" not in unanswered.stderr + unanswered.stdout
    assert users_named(db, "kept") == 1
    # `echo y | smartstart users delete gone`: the question on stderr, the result on stdout.
    answered = smartstart(env, "users", "delete", "gone", stdin="y\n")
    assert answered.returncode == 0, answered.stderr
    assert "Delete gone" in answered.stderr
    assert "Delete gone" not in answered.stdout and "deleted gone" in answered.stdout
    assert users_named(db, "gone") == 0
