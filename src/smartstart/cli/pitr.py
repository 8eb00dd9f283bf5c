"""Point-in-time recovery faces: `db backup --physical`, `db restore --to-time/--to-latest`,
and the recoverable window in `db backups` (the logic is pg.basebackup and pg.pitr)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smartstart.cli.common import confirm, console, fail, parse_when, print_json, print_table
from smartstart.config import Settings

if TYPE_CHECKING:
    from smartstart.pg.basebackup import ListedBase
    from smartstart.pg.cluster import Cluster
    from smartstart.pg.pitr import Restored, RestorePlan, Window

ToTimeOpt = Annotated[
    datetime | None,
    typer.Option(
        "--to-time",
        parser=parse_when,
        metavar="WHEN",
        help="Point-in-time recovery of the embedded cluster to this moment (UTC unless a zone "
        "is given), from a base backup and the WAL archive.",
    ),
]
ToLatestOpt = Annotated[
    bool,
    typer.Option(
        "--to-latest", help="Point-in-time recovery to the last commit in the WAL archive."
    ),
]
PhysicalOpt = Annotated[
    bool,
    typer.Option(
        "--physical",
        help="A base backup of the whole embedded cluster (pg_basebackup) for point-in-time "
        "recovery, into $SMARTSTART_HOME/basebackups.",
    ),
]


def base_dir(s: Settings) -> Path:
    return s.home_dir / "basebackups"


def archive_dir(s: Settings) -> Path:
    return s.home_dir / "wal"


def _cluster(s: Settings) -> Cluster:
    from smartstart.services.database import cluster_for

    return cluster_for(s)


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else value.isoformat()
    return text[:19].replace("T", " ")


def backup_physical(s: Settings, note: str | None, who: str, as_json: bool) -> None:
    """`db backup --physical`."""
    import psycopg

    from smartstart.cli.backup import _size, audit_done
    from smartstart.db import backups
    from smartstart.domain.actor import Actor
    from smartstart.pg.backup import alembic_revision
    from smartstart.pg.basebackup import base_backup

    cluster = _cluster(s)
    revision = None
    if cluster.status().running:
        try:
            with psycopg.connect(s.url_for(), connect_timeout=5) as conn:
                revision = alembic_revision(conn)
        except psycopg.Error:
            revision = None  # the platform database may not exist yet: the backup still can
    actor = Actor.operator()
    with (
        backups.failure_audited(s, actor, "backup.create", "-", format="physical"),
        console.status("pg_basebackup …") if console.is_terminal else _nothing(),
    ):
        made = base_backup(cluster, base_dir(s), who=who, note=note, revision=revision)
    m = made.manifest
    audit_done(
        s,
        actor,
        "backup.create",
        made.path.name,
        format="physical",
        size=m.size,
        start_wal=m.start_wal,
        stop_wal=m.stop_wal,
        revision=m.revision,
        seconds=m.seconds,
        note=note,
    )
    if as_json:
        print_json({"path": str(made.path), **asdict(m)})
        return
    console.print(
        f"[green]•[/] wrote base backup {made.path} ({_size(m.size)}, WAL {m.start_wal} … "
        f"{m.stop_wal}) in {m.seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def window_json(win: Window) -> dict[str, Any]:
    return {
        "earliest": win.earliest and win.earliest.isoformat(),
        "latest": win.latest and win.latest.isoformat(),
        "segments": win.segments,
        "first_wal": win.first_wal,
        "last_wal": win.last_wal,
        "missing": list(win.missing),
    }


def base_row(b: ListedBase) -> dict[str, Any]:
    return {"path": str(b.path), "present": b.present, **asdict(b.manifest)}


def current_window(s: Settings) -> Window | None:
    """The recoverable window of the embedded cluster (None for an external database)."""
    if not s.embedded:
        return None
    from smartstart.errors import SmartStartError
    from smartstart.pg.cluster import Cluster
    from smartstart.pg.pitr import window

    if not base_dir(s).is_dir() and not archive_dir(s).is_dir():
        return None  # never archived here: nothing to say
    try:
        bin_dir = Cluster.from_settings(s).bin_dir
    except SmartStartError:
        return None  # no server installation here (pg_waldump is part of it)
    return window(bin_dir, base_dir(s), archive_dir(s))


def show_window(win: Window) -> None:
    """The recoverable window and the base backups, for `db backups`."""
    from smartstart.cli.backup import _age, _size

    console.print(f"recoverable window: {win.describe()}", highlight=False, soft_wrap=True)
    if win.missing:
        console.print(
            f"[red]WAL archive gap[/]: {', '.join(win.missing[:3])} missing", highlight=False
        )
    if not win.base_backups:
        return
    rows = [
        {
            "base backup": b.path.name,
            "age": _age(b.manifest.finished_at),
            "size": _size(b.manifest.size),
            "WAL from": b.manifest.start_wal,
            "revision": b.manifest.revision or "",
            "note": b.manifest.note or "",
        }
        for b in win.base_backups
    ]
    print_table(rows, ["base backup", "age", "size", "WAL from", "revision", "note"])


def _platform_check(s: Settings) -> Any:
    """db check and the platform's integrity checks, run on the recovered cluster; then its
    RBAC version continued above the current one's (as a logical restore does).

    A check that cannot run refuses the swap; a finding (a CRIT integrity check) is shown,
    since the past being restored may well have had it."""
    from smartstart import health
    from smartstart.cli.backup import _schema_check
    from smartstart.db.backups import continue_rbac_version
    from smartstart.domain import integrity

    def check(side: Cluster) -> list[str]:
        on_side = s.model_copy(update={"pg_port": side.port})
        problems = _schema_check(on_side)(s.db_name)
        failed = (health.State.ERROR, health.State.TIMEOUT)
        for r in health.run(on_side, integrity.CHECKS, health.HealthConfig(timeout=30)):
            if r.state in failed:
                problems.append(f"{r.name}: {r.state.name} {r.reason}")
            elif r.state is not health.State.OK:
                typer.echo(f"note: {r.name} is {r.state.name} in the recovered data", err=True)
        if not problems:  # the main server still runs: its version is the one to pass
            continue_rbac_version(s, on_side.url_for())
        return problems

    return check


def restore_to(
    s: Settings, to_time: datetime | None, to_latest: bool, yes: bool, dry_run: bool, as_json: bool
) -> None:
    """`db restore --to-time WHEN | --to-latest`."""
    from smartstart.pg import pitr

    if (to_time is None) == (not to_latest):
        raise fail("give exactly one of --to-time WHEN and --to-latest")
    cluster = _cluster(s)
    until = None
    if cluster.status().running:
        # The archive then holds every commit made until now (a dry run too: it changes no
        # data, and its answer is then the real one).
        until = pitr.flush_archive(cluster)
    plan = pitr.plan_restore(cluster, base_dir(s), archive_dir(s), to_time, until)
    target = "the last commit in the WAL archive" if to_time is None else _when(to_time) + " UTC"
    if as_json and dry_run:
        print_json(
            {
                "target": to_time and to_time.isoformat(),
                "replay_to_end": plan.replay_to_end,
                "base_backup": base_row(plan.base),
                "window": window_json(plan.window),
                "data_dir": str(plan.data_dir),
                "keep_as": str(plan.keep_as),
                "dry_run": True,
            }
        )
        return
    err = typer.echo
    err(
        f"restore the embedded cluster to {target}: from base backup {plan.base.path.name}, "
        f"replaying the WAL archive (window {plan.window.describe()}); the current data "
        f"directory is kept as {plan.keep_as}",
        err=True,
    )
    if dry_run:
        err("dry run: nothing was changed", err=True)
        return
    confirm("The server restarts and everything after the target is set aside. Continue?", yes)
    done = _audited_restore(s, cluster, plan)
    if as_json:
        print_json(
            {
                "target": to_time and to_time.isoformat(),
                "replayed_to": done.replayed_to and done.replayed_to.isoformat(),
                "base_backup": str(plan.base.path),
                "kept": str(done.kept),
                "seconds": done.seconds,
                "phases": done.phases,
            }
        )
        return
    console.print(
        f"[green]•[/] restored to {_when(done.replayed_to)} (last transaction replayed) in "
        f"{done.seconds:.1f} s; the previous data directory is kept in {done.kept}",
        highlight=False,
        soft_wrap=True,
    )


def _audited_restore(s: Settings, cluster: Cluster, plan: RestorePlan) -> Restored:
    """pitr.restore, audited as `backup.restore` (kind pitr) in the database it leaves.

    The row is written after the swap, into the recovered database: one written before
    would be history after the target, set aside with the old data directory. A failure
    is audited in the database as it then is: the current one, untouched or put back."""
    from smartstart.cli.backup import audit_done
    from smartstart.db import backups
    from smartstart.domain.actor import Actor
    from smartstart.pg import pitr

    actor, name = Actor.operator(), plan.base.path.name
    target = {"target": plan.target and plan.target.isoformat(), "to_latest": plan.target is None}
    with backups.failure_audited(s, actor, "backup.restore", name, kind="pitr", **target):
        done = pitr.restore(
            cluster,
            plan,
            archive_dir(s),
            _platform_check(s),
            say=lambda line: typer.echo(f"• {line}", err=True),
        )
    audit_done(
        s,
        actor,
        "backup.restore",
        name,
        kind="pitr",
        **target,
        replayed_to=done.replayed_to and done.replayed_to.isoformat(),
        kept=str(done.kept),
        seconds=done.seconds,
    )
    return done
