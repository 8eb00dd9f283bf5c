"""`smartstart db backup|backups|verify`: logical backups of the platform database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from smartstart.cli.common import (
    JsonOpt,
    console,
    fail,
    handle_errors,
    print_json,
    print_table,
)
from smartstart.cli.common import settings as get_settings
from smartstart.cli.pitr import PhysicalOpt
from smartstart.config import Settings
from smartstart.errors import SmartStartError

if TYPE_CHECKING:
    from smartstart.domain.actor import Actor
    from smartstart.pg.backup import Listed, Manifest, Tools


def register(app: typer.Typer) -> None:
    """Add the backup commands to the `db` group."""
    app.command("backup")(backup)
    app.command("backups")(backups)
    app.command("verify")(verify)
    from smartstart.cli import restore

    restore.register(app)


def backup_dir(s: Settings) -> Path:
    from smartstart.db.backups import backup_dir as directory

    return directory(s)


def _tools(s: Settings) -> Tools:
    from smartstart.db.backups import tools

    return tools(s)


def _who() -> str:
    from smartstart.db.backups import cli_who

    return cli_who()


def _size(n: int) -> str:
    from smartstart.db.backups import size_text

    return size_text(n)


def _age(iso: str) -> str:
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{int(seconds // span)}{unit}"
    return f"{max(0, int(seconds))}s"


@handle_errors
def backup(
    fmt: Annotated[
        str, typer.Option("--format", "-F", help="custom (pg_restore; default) or plain (SQL).")
    ] = "custom",
    compress: Annotated[
        bool,
        typer.Option(
            "--compress", help="gzip a plain dump (.sql.gz); custom is always compressed."
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write, or a directory (default $SMARTSTART_HOME/backups).",
        ),
    ] = None,
    note: Annotated[
        str | None, typer.Option("--note", help="Why this backup (kept in its manifest).")
    ] = None,
    physical: PhysicalOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Dump the platform database (pg_dump) with a manifest beside it."""
    from smartstart.pg import backup as pgb

    if physical:
        from smartstart.cli.pitr import backup_physical

        if fmt != "custom" or compress or output is not None:
            raise fail("--physical takes none of --format, --compress and --output")
        return backup_physical(get_settings(), note, _who(), as_json)
    if fmt not in pgb.FORMATS:
        raise fail(f"unknown format {fmt!r}: choose custom or plain")
    s = get_settings()
    tools = _tools(s)
    path = pgb.choose_path(output, backup_dir(s), fmt, compress)
    manifest = _run_backup(s, path, tools, fmt, compress, note)
    if as_json:
        print_json({"path": str(path), **_manifest_row(manifest)})
        return
    console.print(
        f"[green]•[/] wrote {path} ({_size(manifest.size)}, {sum(manifest.rows.values())} rows, "
        f"revision {manifest.revision or 'none'}) in {manifest.seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


def _run_backup(
    s: Settings, path: Path, tools: Tools, fmt: str, compress: bool, note: str | None
) -> Manifest:
    """The backup, audited (`backup.create`; a failure too, with its error)."""
    from smartstart.db import backups
    from smartstart.domain.actor import Actor

    actor = Actor.operator()
    with backups.failure_audited(s, actor, "backup.create", path.name, format=fmt):
        made = _dump(s, path, tools, fmt, compress, note, actor.label)
    audit_done(
        s,
        actor,
        "backup.create",
        path.name,
        format=fmt,
        compressed=made.compressed,
        size=made.size,
        sha256=made.sha256,
        revision=made.revision,
        note=note,
    )
    return made


def audit_done(s: Settings, actor: Actor, action: str, resource_id: str, **details: Any) -> None:
    """The audit row of work that is done (`outcome: ok`); a row that cannot be written is a
    warning line, not a failure of the work."""
    from smartstart.db import backups

    why = backups.audit_quietly(s, actor, action, resource_id, outcome="ok", **details)
    if why is not None:
        typer.echo(f"warning: {why}", err=True)


def _dump(
    s: Settings, path: Path, tools: Tools, fmt: str, compress: bool, note: str | None, who: str
) -> Manifest:
    from smartstart.pg import backup as pgb

    kwargs: dict[str, Any] = {"fmt": fmt, "compress": compress, "note": note, "who": who}
    if not console.is_terminal:
        return pgb.backup(s.url_for(), path, tools, **kwargs)
    from rich.progress import DownloadColumn, Progress, SpinnerColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console.rich,
        transient=True,
    ) as progress:
        task = progress.add_task(f"pg_dump → {path.name}", total=None)
        return pgb.backup(
            s.url_for(),
            path,
            tools,
            progress=lambda done: progress.update(task, completed=done),
            **kwargs,
        )


def safety_backup(s: Settings, note: str) -> Path:
    """A custom-format backup before a destructive command; its failure stops the command."""
    from smartstart.pg.backup import choose_path

    try:
        path = choose_path(None, backup_dir(s), "custom", False)
        _run_backup(s, path, _tools(s), "custom", False, note)
    except SmartStartError as e:
        raise SmartStartError(
            f"the safety backup failed, so nothing was changed: {e}",
            "fix that, or add --no-backup to go on without one",
        ) from None
    return path


def _verified(m: Manifest) -> str:
    if m.verification is None:
        return "never"
    return ("ok " if m.verification.ok else "FAILED ") + m.verification.at[:16].replace("T", " ")


def _manifest_row(m: Manifest) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(m)


def _listed_row(item: Listed) -> dict[str, Any]:
    m = item.manifest
    return {
        "path": str(item.path),
        "present": item.present,
        "age": _age(m.started_at),
        **_manifest_row(m),
        "verified": None if m.verification is None else m.verification.ok,
    }


@handle_errors
def backups(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to look (default $SMARTSTART_HOME/backups)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the backups (with their manifests), newest first."""
    from smartstart.pg.backup import list_backups

    where = directory or backup_dir(get_settings())
    if directory is not None and not directory.is_dir():
        raise fail(f"{directory} is not a directory")
    items = list_backups(where)
    from smartstart.cli import pitr

    win = pitr.current_window(get_settings()) if directory is None else None
    if as_json:
        extra: dict[str, Any] = {} if win is None else {"recoverable_window": pitr.window_json(win)}
        if win is not None:
            extra["base_backups"] = [pitr.base_row(b) for b in win.base_backups]
        print_json({"items": [_listed_row(i) for i in items], "next_cursor": None, **extra})
        return
    if win is not None:
        pitr.show_window(win)
    from smartstart.services import jobs  # the Brain's scheduled runs, failed ones too

    runs = jobs.backup_runs(get_settings())
    if runs:
        print_table([jobs.run_line(r) for r in runs], title="Scheduled backups (UTC)")
    rows = [
        {
            "file": i.path.name + ("" if i.present else " (missing)"),
            "age": _age(i.manifest.started_at),
            "size": _size(i.manifest.size),
            "format": i.manifest.format
            + (" gz" if i.manifest.format == "plain" and i.manifest.compressed else ""),
            "revision": i.manifest.revision or "",
            "verified": _verified(i.manifest),
            "note": i.manifest.note or "",
        }
        for i in items
    ]
    if not rows:
        console.print(f"no backups in {where}", highlight=False)
        return
    print_table(rows, ["file", "age", "size", "format", "revision", "verified", "note"])


def _schema_check(s: Settings) -> Callable[[str], list[str]]:
    from smartstart.db.backups import schema_check

    return schema_check(s)


@handle_errors
def verify(
    file: Annotated[Path, typer.Argument(help="The backup file (its manifest is FILE.json).")],
    as_json: JsonOpt = False,
) -> None:
    """Check a backup: checksum, restore into a scratch database, compare rows, db check."""
    from smartstart.pg.verify import verify as run_verify

    s = get_settings()
    result = run_verify(file, s.url_for(), _tools(s), _schema_check(s))
    if as_json:
        from dataclasses import asdict

        print_json({"path": str(file), **asdict(result)})
    if not result.ok:
        raise fail(f"{file}: verification failed: {result.message}")
    if not as_json:
        console.print(
            f"[green]•[/] {file}: ok, {result.message} ({result.seconds:.1f} s)",
            highlight=False,
            soft_wrap=True,
        )
