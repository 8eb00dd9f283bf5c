"""`smartstart doctor`: diagnose the database setup, and with --fix repair what is safe."""

from __future__ import annotations

from typing import Annotated

import typer

from smartstart import doctor as doctor_mod
from smartstart.cli.common import JsonOpt, console, err_console, handle_errors, print_json, settings
from smartstart.health import State

_STYLE = {State.OK: "green", State.WARN: "yellow", State.CRIT: "bold red"}


def doctor(
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Apply the safe fixes (start the server, reset the app's password, create "
            "the database or extension, migrate, remove a stale pid file) and say what was done.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Diagnose the guide's Troubleshooting problems: each finding, its evidence and the fix.

    Exit status: 0 nothing wrong, 1 a warning, 2 a critical problem (after --fix: what
    is left)."""
    s = settings()
    done: list[str] = []
    failed: list[str] = []
    if fix:
        repaired = doctor_mod.repair(s)
        findings, done, failed = repaired.findings, repaired.done, repaired.failed
    else:
        findings = doctor_mod.diagnose(s)
    if as_json:
        print_json(
            {
                "items": [f.as_json() for f in findings],
                "next_cursor": None,
                "fixed": done,
                "failed": failed,
            }
        )
    else:
        for line in done:
            console.print(f"[green]fixed:[/] {line}", highlight=False, soft_wrap=True)
        for line in failed:
            err_console.print(f"[bold red]fix failed:[/] {line}", highlight=False, soft_wrap=True)
        _show(findings, fixing=fix)
    worst = doctor_mod.worst(findings)
    if failed or worst is not State.OK:
        raise typer.Exit(2 if failed else worst.exit_code)


def _show(findings: list[doctor_mod.Finding], fixing: bool) -> None:
    for f in findings:
        style = _STYLE.get(f.state, "magenta")
        console.print(
            f"[{style}]{f.state.name:>4}[/]  {f.name}: {f.problem}", highlight=False, soft_wrap=True
        )
        if f.state is State.OK:
            continue
        if f.evidence:
            console.print(f"      evidence: {f.evidence}", highlight=False, soft_wrap=True)
        if f.fix:
            hint = "" if fixing or f.action is None else "  (safe: smartstart doctor --fix)"
            console.print(f"      fix: {f.fix}{hint}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `doctor` to the root command."""
    app.command("doctor")(handle_errors(doctor))
