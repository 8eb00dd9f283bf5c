"""`smartstart db restore|prune`: put a backup in place of the platform database; retention."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from smartstart.cli.common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    confirm,
    console,
    err_console,
    handle_errors,
    print_json,
    print_table,
)
from smartstart.cli.common import settings as get_settings
from smartstart.config import Settings
from smartstart.db.backups import size_text
from smartstart.domain.actor import Actor
from smartstart.errors import SmartStartError

if TYPE_CHECKING:
    from smartstart.pg.restore import Restored


def register(app: typer.Typer) -> None:
    app.command("restore")(restore)
    app.command("prune")(prune)


def _say(message: str) -> None:
    console.print(f"[green]•[/] {message}", highlight=False, soft_wrap=True)


def logical_restore(s: Settings, file: Path, yes: bool, dry_run: bool) -> Restored | None:
    """The logical restore from a dump file (the command's default mode)."""
    from smartstart.db import backups

    if "\0" in str(file):
        raise SmartStartError("the file name contains a NUL character (\\0); nothing was changed")
    plan = backups.plan_restore(s, file)
    _say(backups.describe(plan))
    if dry_run:
        _say("nothing changed (dry run)")
        return None
    confirm(f"Replace {plan.database} with the contents of {file.name}?", yes)
    # Steps on a terminal only: a script's stderr is its one error line.
    say = (
        (lambda m: err_console.print(f"  {m}", highlight=False))
        if err_console.is_terminal
        else None
    )
    done = backups.restore(s, plan, say=say or (lambda _: None))
    backups.audit_restore(s, plan, done, Actor.operator())
    return done


@handle_errors
def restore(
    file: Annotated[
        str,
        typer.Argument(
            help="A backup: ours (custom or plain, gzipped or not) or the guide's pg_dump output."
        ),
    ],
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into a new database, check it, then switch it in (old one kept)."""
    s = get_settings()
    # Taken as text: a NUL makes the path-type conversion raise before any check.
    done = logical_restore(s, Path(file), yes, dry_run)
    if done is None:
        return
    if as_json:
        from dataclasses import asdict

        print_json(asdict(done))
        return
    kept = (
        f"; the previous database is kept as {done.kept_as} (smartstart db prune removes it)"
        if done.kept_as
        else ""
    )
    _say(f"restored {done.database} from {file} in {done.seconds:.1f} s{kept}")


@handle_errors
def prune(
    keep: Annotated[
        int | None,
        typer.Option("--keep", help="Keep the newest N backups (and set-aside databases)."),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Delete only what is older than this (30d, 12h, 2w)."),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where the backups are (default $SMARTSTART_HOME/backups)."),
    ] = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete old backups and the databases restores set aside (never the newest verified)."""
    from smartstart.cli.common import fail
    from smartstart.db import backups

    s = get_settings()
    if directory is not None and not directory.is_dir():
        raise fail(f"{directory} is not a directory")
    plan = backups.plan_prune(
        s, directory or backups.backup_dir(s), keep=keep, older_than=older_than
    )
    rows = [
        {
            "what": i.kind,
            "name": i.name,
            "age": i.at.isoformat()[:19].replace("T", " "),
            "size": size_text(i.size),
            "verified": "yes" if i.verified else "",
            "action": ("delete" if i.delete else "keep") + f" ({i.why})",
        }
        for i in plan.items
    ]
    doomed = plan.deleted
    if as_json and dry_run:
        print_json({"items": rows, "deleted": [i.name for i in doomed], "dry_run": True})
        return
    if not as_json:
        if rows:
            print_table(rows, ["what", "name", "age", "size", "verified", "action"])
        _say(f"{len(doomed)} to delete, {len(rows) - len(doomed)} kept")
    if dry_run or not doomed:
        if not as_json:
            _say("nothing changed" + (" (dry run)" if dry_run else ""))
        else:
            print_json({"items": rows, "deleted": [], "dry_run": dry_run})
        return
    confirm(f"Delete {len(doomed)} backup(s) and database(s)?", yes)
    errors = backups.prune(s, plan)
    backups.audit_prune(s, plan, errors, Actor.operator())
    if as_json:
        print_json({"items": rows, "deleted": [i.name for i in doomed], "errors": errors})
    if errors:
        raise fail(f"could not delete {len(errors)}: {errors[0]}")
    if not as_json:
        _say(f"deleted {len(doomed)}")
