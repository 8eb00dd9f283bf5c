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
    fail,
    handle_errors,
    print_json,
    print_table,
)
from smartstart.cli.common import settings as get_settings
from smartstart.cli.pitr import ToLatestOpt, ToTimeOpt
from smartstart.config import Settings
from smartstart.db.backups import size_text
from smartstart.domain.actor import Actor
from smartstart.errors import SmartStartError

if TYPE_CHECKING:
    from smartstart.pg.pitr import PrunePlan
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
    actor = Actor.operator()
    with backups.failure_audited(s, actor, "backup.restore", file.name, kind=plan.source.kind):
        done = backups.restore(s, plan, say=say or (lambda _: None))
    backups.audit_restore(s, plan, done, actor)
    return done


@handle_errors
def restore(
    file: Annotated[
        str | None,
        typer.Argument(
            help="A backup: ours (custom or plain, gzipped or not) or the guide's pg_dump output;"
            " none with --to-time/--to-latest."
        ),
    ] = None,
    to_time: ToTimeOpt = None,
    to_latest: ToLatestOpt = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into a new database, check it, then switch it in (old one kept).

    With --to-time WHEN or --to-latest instead of FILE: point-in-time recovery of the
    embedded cluster from its base backups and archived WAL.
    """
    s = get_settings()
    if to_time is not None or to_latest:
        if file is not None:
            raise fail("give a backup FILE or --to-time/--to-latest, not both")
        from smartstart.cli.pitr import restore_to

        restore_to(s, to_time, to_latest, yes, dry_run, as_json)
        return
    if file is None:
        raise fail("give the backup FILE to restore (or --to-time WHEN / --to-latest)")
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
    physical = _physical_plan(s, keep, older_than)
    rows += _physical_rows(physical)
    doomed = [i.name for i in plan.deleted] + _physical_doomed(physical)
    if as_json and dry_run:
        print_json({"items": rows, "deleted": doomed, "dry_run": True})
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
    confirm(f"Delete {len(doomed)} backup(s), database(s) and archive file(s)?", yes)
    errors = backups.prune(s, plan)
    backups.audit_prune(s, plan, errors, Actor.operator())
    if physical is not None:
        from smartstart.pg import pitr

        pitr.prune(physical)
    if as_json:
        print_json({"items": rows, "deleted": doomed, "errors": errors})
    if errors:
        raise fail(f"could not delete {len(errors)}: {errors[0]}")
    if not as_json:
        _say(f"deleted {len(doomed)}")


def _physical_plan(s: Settings, keep: int | None, older_than: str | None) -> PrunePlan | None:
    """What the same rule prunes of the embedded cluster's base backups and WAL archive."""
    from smartstart.cli.pitr import archive_dir, base_dir
    from smartstart.pg import pitr
    from smartstart.pg.prune import parse_age

    if not s.embedded or not base_dir(s).is_dir():
        return None
    age = parse_age(older_than) if older_than is not None else None
    return pitr.plan_prune(base_dir(s), archive_dir(s), s.home_dir, keep=keep, older_than=age)


def _physical_rows(plan: PrunePlan | None) -> list[dict[str, str]]:
    if plan is None:
        return []
    rows = [
        {
            "what": "base backup",
            "name": b.path.name,
            "age": b.manifest.started_at[:19].replace("T", " "),
            "size": size_text(b.manifest.size),
            "verified": "",
            "action": action,
        }
        for bases, action in (
            (plan.base_backups, "delete"),
            (plan.kept_backups, "keep (WAL replay starts from it)"),
        )
        for b in bases
    ]
    if plan.wal_files:
        rows.append(
            {
                "what": "WAL",
                "name": f"{len(plan.wal_files)} archived segment(s)",
                "age": "",
                "size": "",
                "verified": "",
                "action": "delete (older than every kept base backup needs)",
            }
        )
    rows += [
        {
            "what": "data dir",
            "name": d.name,
            "age": "",
            "size": "",
            "verified": "",
            "action": "delete",
        }
        for d in plan.data_dirs
    ]
    return rows


def _physical_doomed(plan: PrunePlan | None) -> list[str]:
    if plan is None:
        return []
    return [
        *(b.path.name for b in plan.base_backups),
        *(p.name for p in plan.wal_files),
        *(d.name for d in plan.data_dirs),
    ]
