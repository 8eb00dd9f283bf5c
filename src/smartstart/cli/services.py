"""Whole-platform commands: up, down, restart, status, serve (and `logs`, in cli/logs.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from smartstart.cli.common import (
    JsonOpt,
    console,
    handle_errors,
    print_json,
    print_table,
    settings,
)
from smartstart.db import credentials
from smartstart.services import brain, database

if TYPE_CHECKING:
    from smartstart.services.jobs import JobStatus


def _say(message: str) -> None:
    console.print(f"[green]•[/] {message}", highlight=False)


def _announce_credentials(ready: database.DatabaseReady) -> None:
    if not ready.credentials:
        return
    console.print("[bold yellow]Initial passwords (shown once):[/]")
    for email, password in ready.credentials.items():
        console.print(f"  {email}  {password}", highlight=False)
    if ready.credentials_file:
        line = credentials.describe(ready.credentials_file, ready.credentials_kept)
        console.print(f"  also {line}", highlight=False)


@handle_errors
def up(
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run the Brain in the background and return.")
    ] = False,
) -> None:
    """Start everything: PostgreSQL (initialised on first run), migrations, seed data, the Brain."""
    s = settings()
    if detach:
        pid, ready = brain.start_detached(s, say=_say)
        _announce_credentials(ready)
        _say(f"the Brain is serving {brain.url(s)} (pid {pid}); `smartstart down` stops it")
        return
    sock = brain.claim(s)  # a taken port fails before anything is touched
    ready = database.ensure_database(s, say=_say)
    _announce_credentials(ready)
    _say(f"the Brain is serving {brain.url(s)} — Ctrl-C stops it")
    brain.run(s, sock)


@handle_errors
def serve(
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port to listen on (default: SMARTSTART_API_PORT)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes (default: SMARTSTART_API_WORKERS, 1)."),
    ] = None,
) -> None:
    """Serve the Brain in the foreground (database must already be up and migrated)."""
    overrides = {"api_port": port, "api_workers": workers}
    brain.run(settings().model_copy(update={k: v for k, v in overrides.items() if v is not None}))


@handle_errors
def down() -> None:
    """Stop the Brain and the embedded PostgreSQL."""
    s = settings()
    _say("stopped the Brain" if brain.stop(s) else "the Brain was not running")
    if s.embedded:
        stopped = database.stop_database(s)
        _say("stopped PostgreSQL" if stopped else "PostgreSQL was not running")
    else:
        _say("PostgreSQL is external (SMARTSTART_DATABASE_URL): left running")


@handle_errors
def restart() -> None:
    """Stop and start everything again (the Brain comes back detached, on its address)."""
    s = brain.as_running(settings())
    brain.stop(s)
    if s.embedded:
        database.stop_database(s)
    pid, ready = brain.start_detached(s, say=_say)
    _announce_credentials(ready)
    _say(f"the Brain is serving {brain.url(s)} (pid {pid})")


@handle_errors
def status(as_json: JsonOpt = False) -> None:
    """State, pid, port and URL of each service."""
    s = settings()
    rows = [database.status_row(s), brain.status_row(s)]
    from smartstart.services import jobs

    scheduled = jobs.status(s) if rows[0]["state"] == "running" or not s.embedded else None
    if as_json:
        print_json({"items": rows, "next_cursor": None, "jobs": scheduled})
        return
    shown = []
    for row in rows:
        up_s = row["uptime_seconds"]
        workers = row.get("workers")
        shown.append(
            {
                **row,
                "uptime": f"{int(up_s)}s" if up_s is not None else None,
                "workers": workers
                and f"{workers['alive']}/{workers['expected']}, {workers['restarts']} restarts",
            }
        )
    print_table(shown, ["service", "state", "pid", "port", "url", "version", "uptime", "workers"])
    archiving, via = rows[0].get("archiving"), rows[0].get("archiving_via")
    if archiving:
        note = " (archive_mode needs a restart: smartstart db restart)"
        console.print(
            f"WAL archiving: {archiving}{f' ({via})' if via else ''}"
            f"{note if archiving == 'pending restart' else ''}",
            highlight=False,
        )
    if scheduled:
        _show_jobs(scheduled)


def _show_jobs(scheduled: list[JobStatus]) -> None:
    """Scheduled jobs: last outcome and next slot; a job that failed for good in red."""
    print_table(
        [
            {
                **j,
                "last": j["last_slot"] and f"{j['last_slot'][:16]} {j['last_outcome']}",
                "next": (j["next_slot"] or "")[:16] if j["enabled"] else "scheduler off",
            }
            for j in scheduled
        ],
        ["job", "schedule", "last", "next"],
        title="Scheduled jobs (UTC)",
    )
    for j in scheduled:
        if j["failed"]:
            console.print(
                f"[bold red]•[/] {j['job']}: the run due {j['last_slot']} failed "
                f"(attempt {j['attempt']}): {j['error']}",
                highlight=False,
                soft_wrap=True,
            )


def register(app: typer.Typer) -> None:
    for command in (up, down, restart, status, serve):
        app.command()(command)
