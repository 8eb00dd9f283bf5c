"""`smartstart db queries / cancel / terminate / top / explain`: live sessions and plans."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.live import Live
from rich.table import Table

from smartstart.cli.common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    confirm,
    console,
    handle_errors,
    print_json,
    print_table,
    settings,
)
from smartstart.cli.context import transaction
from smartstart.config import Settings
from smartstart.db.engine import connect
from smartstart.domain import dbops
from smartstart.pg import activity, explain
from smartstart.pg.activity import Session, Signal
from smartstart.pg.checks import own_sessions_only

AllOpt = Annotated[
    bool, typer.Option("--all", help="Include idle sessions and other databases' sessions.")
]
PidArg = Annotated[
    int, typer.Argument(help="The server process id (from `smartstart db queries`).")
]
COLUMNS = ("pid", "user", "state", "seconds", "wait", "blocked_by", "application", "query")


def _row(s: Session, width: int = 120) -> dict[str, object]:
    wait = f"{s.wait_event_type}:{s.wait_event}" if s.wait_event_type else ""
    return {
        "pid": s.pid,
        "database": s.database,
        "user": s.user,
        "state": s.state,
        "seconds": "" if s.seconds is None else f"{s.seconds:.1f}",
        "wait": wait,
        "blocked_by": ",".join(map(str, s.blocked_by)),
        "application": s.application,
        "query": " ".join((s.query or "").split())[:width],
    }


def _sessions(s: Settings, everything: bool) -> tuple[list[Session], str | None]:
    with connect(s, autocommit=True) as conn:
        found = activity.sessions(conn, active_only=not everything, all_databases=everything)
        return found, own_sessions_only(conn)


def queries(as_json: JsonOpt = False, everything: AllOpt = False) -> None:
    """Live queries of this database: duration, state, wait event and who blocks them."""
    found, limited = _sessions(settings(), everything)
    if as_json:
        print_json({"items": [q.as_json() for q in found], "next_cursor": None, "note": limited})
        return
    if not found:
        none = (
            "No other client session on the server."
            if everything
            else "No other session is running a query on this database."
        )
        console.print(none, highlight=False)
    else:
        columns = ("database", *COLUMNS) if everything else COLUMNS
        print_table([_row(q) for q in found], columns)
    if limited:
        console.print(f"[yellow]note:[/] {limited}", highlight=False)


def _stop(pid: int, kind: Signal, yes: bool, dry_run: bool, as_json: bool) -> None:
    activity.check_pid(pid)
    with transaction() as (conn, actor):
        target = dbops.plan_signal(conn, actor, pid)
    what = "cancel the query of" if kind == "cancel" else "terminate"
    label = f"pid {pid} ({target.user}, {target.application or 'no application'}, {target.state})"
    if dry_run:
        console.print(f"would {what} {label}: {target.query or ''}; nothing was changed")
        return
    confirm(f"{what.capitalize()} {label}?\n  {(target.query or '')[:200]}\n", yes)
    with transaction() as (conn, actor):
        done = dbops.signal(conn, actor, pid, kind)
        conn.commit()
    if as_json:
        print_json({"signal": kind, "session": done.as_json()})
    else:
        verb = "cancelled the query of" if kind == "cancel" else "terminated"
        console.print(f"[green]•[/] {verb} pid {pid}", highlight=False)


def cancel(
    pid: PidArg, yes: YesOpt = False, dry_run: DryRunOpt = False, as_json: JsonOpt = False
) -> None:
    """Cancel a session's running query (pg_cancel_backend); asks first, audited."""
    _stop(pid, "cancel", yes, dry_run, as_json)


def terminate(
    pid: PidArg, yes: YesOpt = False, dry_run: DryRunOpt = False, as_json: JsonOpt = False
) -> None:
    """End a session (pg_terminate_backend), rolling back its transaction; asks first, audited."""
    _stop(pid, "terminate", yes, dry_run, as_json)


def pg_activity_command(s: Settings) -> tuple[list[str], str | None] | None:
    """pg_activity's command line for the platform database, and the password (None: the
    program is not installed)."""
    program = shutil.which("pg_activity") or shutil.which(
        "pg_activity", path=str(Path(sys.executable).parent)
    )
    if program is None:
        return None
    params = conninfo_to_dict(s.url_for())
    password = params.pop("password", None)
    return [program, "--no-db-size", make_conninfo("", **params)], (
        None if password is None else str(password)
    )


def _frame(found: list[Session], limited: str | None) -> Table:
    table = Table(title=f"smartstart db top — {time.strftime('%H:%M:%S')} — Ctrl-C to quit")
    for column in COLUMNS:
        if column == "query":
            table.add_column(column, overflow="fold", ratio=1)
        else:
            table.add_column(column, no_wrap=column in ("pid", "seconds", "state"))
    for q in found:
        table.add_row(*(str(_row(q, 200)[c]) for c in COLUMNS))
    if limited:
        table.caption = limited
    return table


def top(
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, max=3600, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one frame of the built-in view and exit.")
    ] = False,
    builtin: Annotated[
        bool, typer.Option("--builtin", help="The built-in view even when pg_activity is there.")
    ] = False,
) -> None:
    """A refreshing live view of the sessions: pg_activity when installed, else built in."""
    s = settings()
    launch = None if (once or builtin) else pg_activity_command(s)
    if launch is not None:
        args, password = launch
        # The password through a private passfile: the process list shows arguments.
        with tempfile.TemporaryDirectory(prefix="smartstart-top-") as tmp:
            passfile = Path(tmp) / "pgpass"
            passfile.touch(mode=0o600)
            escaped = (password or "").replace("\\", "\\\\").replace(":", "\\:")
            passfile.write_text(f"*:*:*:*:{escaped}\n" if password else "")
            env = {**os.environ, "PGPASSFILE": str(passfile)}
            env.pop("PGPASSWORD", None)
            raise typer.Exit(subprocess.call(args, env=env))
    if once:
        console.print(_frame(*_sessions(s, False)))
        return
    try:
        with Live(_frame(*_sessions(s, False)), console=console.rich, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(_frame(*_sessions(s, False)))
    except KeyboardInterrupt:
        return


def explain_(
    statement: Annotated[str, typer.Argument(metavar="SQL", help="The one statement to explain.")],
    analyze: Annotated[
        bool,
        typer.Option(
            "--analyze",
            help="Run it and show real timings (a write runs in a transaction rolled back).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a statement's plan (with timings under --analyze); nothing it writes is kept."""
    explain.check_sql(statement)
    with connect(settings(), autocommit=True) as conn:
        found = explain.explain(conn, statement, analyze=analyze)
    if as_json:
        print_json(found.as_json())
        return
    for line in found.text:
        console.print(line, highlight=False, soft_wrap=True)
    timing: list[str] = []
    if found.planning_ms is not None:
        timing.append(f"planning {found.planning_ms:.3f} ms")
    if found.execution_ms is not None:
        timing.append(f"execution {found.execution_ms:.3f} ms")
    if timing:
        console.print(", ".join(timing) + (" (rolled back)" if analyze else ""), highlight=False)


def register(app: typer.Typer) -> None:
    """Add `queries`, `cancel`, `terminate`, `top` and `explain` to the `db` group."""
    app.command("queries")(handle_errors(queries))
    app.command("cancel")(handle_errors(cancel))
    app.command("terminate")(handle_errors(terminate))
    app.command("top")(handle_errors(top))
    app.command("explain")(handle_errors(explain_))
