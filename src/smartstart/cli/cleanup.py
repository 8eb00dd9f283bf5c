"""`smartstart cleanup …`: the guide's Data Cleanup, in batches, over smartstart.domain.cleanup."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, timedelta
from typing import Annotated

import typer

from smartstart.cli.common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    confirm,
    console,
    counting_bar,
    handle_errors,
    print_json,
    print_table,
    settings,
)
from smartstart.config import Settings
from smartstart.db.engine import connect
from smartstart.domain import cleanup
from smartstart.domain.actor import Actor

app = typer.Typer(
    help="Delete old audit rows and dead sessions, mark inactive users INACTIVE.",
    no_args_is_help=True,
)

_DURATION = re.compile(r"(\d{1,6})\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta:
    """30d, 12h, 90m or 2w: a positive span of time."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None:
        raise typer.BadParameter(f"{value[:80]!r} is not a duration: give e.g. 90m, 12h, 30d or 2w")
    span = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if span <= timedelta(0):
        raise typer.BadParameter("the duration must be more than 0")
    return span


def retention(
    s: Settings, older_than: timedelta | None = None, inactive_for: timedelta | None = None
) -> cleanup.Retention:
    """The settings' retention periods, with what the command line chose instead."""
    return cleanup.Retention(
        audit_older_than=older_than or timedelta(days=s.cleanup_audit_days),
        inactive_for=inactive_for or timedelta(days=s.cleanup_inactive_days),
        session_idle=timedelta(minutes=s.session_idle_minutes),
    )


OlderThanOpt = Annotated[
    timedelta | None,
    typer.Option(
        "--older-than",
        parser=parse_duration,
        metavar="AGE",
        help="Audit rows older than this (30d, 12h, 2w; default SMARTSTART_CLEANUP_AUDIT_DAYS).",
    ),
]
InactiveForOpt = Annotated[
    timedelta | None,
    typer.Option(
        "--inactive-for",
        parser=parse_duration,
        metavar="AGE",
        help="Users not active for this long (90d; default SMARTSTART_CLEANUP_INACTIVE_DAYS).",
    ),
]
BatchOpt = Annotated[
    int,
    typer.Option(
        "--batch-size",
        min=1,
        max=100_000,
        help="Rows per batch (each its own transaction, followed by as long a rest).",
    ),
]

_WHAT = {
    "audit-logs": "audit rows to delete",
    "inactive-users": "ACTIVE users to mark INACTIVE",
    "sessions": "expired or revoked sessions to delete",
}


def _show(plan: cleanup.CleanupPlan) -> None:
    rows = [
        {
            "step": s.kind,
            "rows": s.count,
            "what": _WHAT[s.kind],
            "cutoff (UTC)": s.cutoff.astimezone(UTC).strftime("%F %T"),
            "kept": ", ".join(s.kept) + " (last ACTIVE SUPER_ADMIN)" if s.kept else "",
        }
        for s in plan.steps
    ]
    print_table(rows, ["step", "rows", "what", "cutoff (UTC)", "kept"], title="Cleanup")


def _plan_json(
    plan: cleanup.CleanupPlan, result: cleanup.CleanupResult | None
) -> dict[str, object]:
    return {
        "dry_run": result is None,
        "steps": [
            {
                "kind": s.kind,
                "cutoff": s.cutoff.isoformat(),
                "planned": s.count,
                "done": None if result is None else result.done.get(s.kind, 0),
                "kept": list(s.kept),
            }
            for s in plan.steps
        ],
        "batches": None if result is None else result.batches,
        "seconds": None if result is None else result.seconds,
    }


@contextmanager
def _progress(plan: cleanup.CleanupPlan) -> Iterator[cleanup.Progress | None]:
    """A progress bar per step on a terminal; nothing into a pipe."""
    if not console.is_terminal:
        yield None
        return
    with counting_bar() as bar:
        tasks = {s.kind: bar.add_task(s.kind, total=s.count) for s in plan.steps}
        yield lambda kind, n: bar.advance(tasks[kind], n)


def run(
    kinds: Sequence[cleanup.Kind],
    options: tuple[int, bool, bool, bool],
    older_than: timedelta | None = None,
    inactive_for: timedelta | None = None,
) -> None:
    """Plan, show, confirm (no transaction open), then clean in batches.

    options: the commands' shared --batch-size, --dry-run, --yes and --json.
    """
    batch_size, dry_run, yes, as_json = options
    s = settings()
    keep = retention(s, older_than, inactive_for)
    with connect(s) as conn, conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        plan = cleanup.plan_cleanup(conn, kinds, keep)
    if dry_run or not any(step.count for step in plan.steps):
        if as_json:
            print_json(_plan_json(plan, None))
        else:
            _show(plan)
            if not dry_run:
                console.print("nothing to clean up", highlight=False)
        return
    if not as_json:
        _show(plan)
    confirm(f"clean up {sum(step.count for step in plan.steps)} rows?", yes)
    with connect(s, autocommit=True) as conn, _progress(plan) as progress:
        result = cleanup.execute(
            conn, Actor.operator(), plan, batch_size=batch_size, progress=progress
        )
    if as_json:
        print_json(_plan_json(plan, result))
        return
    done = ", ".join(f"{kind} {n}" for kind, n in result.done.items())
    console.print(
        f"[green]•[/] cleaned up: {done} ({result.batches} batches, {result.seconds:.1f} s)",
        highlight=False,
    )


@app.command("audit-logs")
@handle_errors
def audit_logs(
    older_than: OlderThanOpt = None,
    batch_size: BatchOpt = cleanup.DEFAULT_BATCH,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete audit rows older than --older-than (the guide's DELETE, in batches)."""
    run(["audit-logs"], (batch_size, dry_run, yes, as_json), older_than=older_than)


@app.command("inactive-users")
@handle_errors
def inactive_users(
    inactive_for: InactiveForOpt = None,
    batch_size: BatchOpt = cleanup.DEFAULT_BATCH,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Mark ACTIVE users not seen for --inactive-for INACTIVE (their sessions end).

    Never the last ACTIVE SUPER_ADMIN. Each batch's users are named in an audit row.
    """
    run(["inactive-users"], (batch_size, dry_run, yes, as_json), inactive_for=inactive_for)


@app.command("sessions")
@handle_errors
def sessions(
    batch_size: BatchOpt = cleanup.DEFAULT_BATCH,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete expired, idle-expired and revoked sessions."""
    run(["sessions"], (batch_size, dry_run, yes, as_json))


@app.command("all")
@handle_errors
def all_(
    older_than: OlderThanOpt = None,
    inactive_for: InactiveForOpt = None,
    batch_size: BatchOpt = cleanup.DEFAULT_BATCH,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Inactive users, then sessions, then audit rows (what the Brain runs on schedule)."""
    run(cleanup.KINDS, (batch_size, dry_run, yes, as_json), older_than, inactive_for)
