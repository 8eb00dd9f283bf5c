"""/api/admin/backups: list, take, verify, restore and prune logical backups.

The work runs in worker threads (plain `def` routes) on connections of its own: a backup
or restore never blocks the event loop nor holds one of the pool's connections.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from smartstart.api.deps import SettingsDep, actor_for, require
from smartstart.api.paging import Cursor, Limit
from smartstart.config import Settings
from smartstart.domain.errors import Conflict, Invalid, NotFound
from smartstart.domain.paging import DEFAULT_LIMIT, Keyset, check_limit
from smartstart.domain.sessions import Principal
from smartstart.pg.backup import NOTE_MAX, BackupError, Listed

router = APIRouter(prefix="/api/admin/backups", tags=["backups"])
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
BackupName = Annotated[str, Path(description="The backup's file name in the backups directory")]


class BackupVerification(BaseModel):
    ok: bool
    at: datetime
    message: str
    seconds: float
    differences: list[str]


class Backup(BaseModel):
    id: str = Field(description="The file name (in $SMARTSTART_HOME/backups)")
    present: bool = Field(description="False when the manifest remains but the file is gone")
    format: Literal["custom", "plain"]
    compressed: bool
    size: int
    sha256: str
    database: str
    server_version: str
    revision: str | None
    rows: dict[str, int]
    started_at: datetime
    finished_at: datetime
    seconds: float
    note: str | None
    who: str
    verification: BackupVerification | None


class BackupPage(BaseModel):
    items: list[Backup]
    next_cursor: str | None


class BackupCreate(BaseModel):
    format: Literal["custom", "plain"] = "custom"
    compress: bool = Field(False, description="gzip a plain dump (custom is always compressed)")
    note: str | None = Field(None, max_length=NOTE_MAX)


class RestoreRequest(BaseModel):
    confirm: str | None = Field(
        None, max_length=300, description="The backup's name again: required unless dry_run"
    )
    dry_run: bool = False


class RestoreResult(BaseModel):
    id: str
    database: str
    dry_run: bool
    plan: str
    kept_as: str | None = Field(None, description="The previous database, kept until pruned")
    seconds: float | None = None


class PruneRequest(BaseModel):
    keep: int | None = Field(None, ge=0, le=100_000)
    older_than: str | None = Field(None, max_length=20, description="30d, 12h, 2w, 90m")
    dry_run: bool = False


class PrunedItem(BaseModel):
    kind: Literal["backup", "database"]
    name: str
    at: datetime
    size: int
    verified: bool
    delete: bool
    why: str


class PruneResult(BaseModel):
    items: list[PrunedItem]
    deleted: list[str]
    errors: list[str]
    dry_run: bool


def _directory(settings: Settings) -> FsPath:
    from smartstart.db.backups import backup_dir

    return backup_dir(settings)


def _out(item: Listed) -> Backup:
    from dataclasses import asdict

    data: dict[str, Any] = asdict(item.manifest)
    data.pop("file")
    data.pop("tool")
    data.pop("version")
    return Backup(id=item.path.name, present=item.present, **data)


def _find(settings: Settings, name: str) -> Listed:
    from smartstart.pg.backup import list_backups

    if NAME.fullmatch(name) is not None:
        for item in list_backups(_directory(settings)):
            if item.path.name == name:
                return item
    shown = name if len(name) <= 80 else name[:80] + "…"
    raise NotFound(f"no backup named {shown!r}", details={"field": "name"})


def _refused(e: BackupError) -> Invalid:
    return Invalid(str(e), details={"reason": e.code})


@router.get(
    "",
    operation_id="backups_list",
    summary="List the backups, newest first",
    response_model=BackupPage,
    dependencies=[require("db:read")],
)
def list_backups(
    settings: SettingsDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> BackupPage:
    from smartstart.pg.backup import list_backups as listing

    limit = check_limit(limit)
    keyset = Keyset("backups", ("str", "str"), {})
    after = keyset.after(settings, cursor)
    items = listing(_directory(settings))
    if after is not None:
        items = [i for i in items if (i.manifest.started_at, i.path.name) < after]
    page = keyset.page(
        settings, items[: limit + 1], limit, lambda i: (i.manifest.started_at, i.path.name)
    )
    return BackupPage(items=[_out(i) for i in page.items], next_cursor=page.next_cursor)


@router.post(
    "/prune",
    operation_id="backups_prune",
    summary="Delete old backups and the databases restores kept (never the newest verified)",
    response_model=PruneResult,
)
def prune_backups(
    request: Request,
    principal: Annotated[Principal, require("db:backup")],
    settings: SettingsDep,
    body: PruneRequest,
) -> PruneResult:
    from smartstart.db import backups

    if body.older_than is not None and "\0" in body.older_than:
        raise Invalid("older_than contains a NUL character", details={"field": "older_than"})
    try:
        plan = backups.plan_prune(
            settings, _directory(settings), keep=body.keep, older_than=body.older_than
        )
    except BackupError as e:
        raise _refused(e) from None
    items = [
        PrunedItem(
            kind=i.kind,
            name=i.name,
            at=i.at,
            size=i.size,
            verified=i.verified,
            delete=i.delete,
            why=i.why,
        )
        for i in plan.items
    ]
    deleted = [i.name for i in plan.deleted]
    if body.dry_run or not deleted:
        return PruneResult(items=items, deleted=[], errors=[], dry_run=body.dry_run)
    try:
        errors = backups.prune(settings, plan)
    except BackupError as e:
        raise Conflict(str(e), details={"reason": "busy"}) from None
    backups.audit_prune(settings, plan, errors, actor_for(request, principal))
    return PruneResult(items=items, deleted=deleted, errors=errors, dry_run=False)


@router.get(
    "/{name}",
    operation_id="backups_get",
    summary="One backup and its manifest",
    response_model=Backup,
    dependencies=[require("db:read")],
)
def get_backup(settings: SettingsDep, name: BackupName) -> Backup:
    return _out(_find(settings, name))


@router.get(
    "/{name}/file",
    operation_id="backups_download",
    summary="Download a backup's file (streamed; its manifest is GET /{name})",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The dump as written; X-Backup-SHA256 is its manifest's checksum",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
def download_backup(
    request: Request,
    principal: Annotated[Principal, require("db:backup")],
    settings: SettingsDep,
    name: BackupName,
) -> StreamingResponse:
    from smartstart.api.download import download_response
    from smartstart.db import backups
    from smartstart.pg.backupfile import NoSuchBackup, open_backup

    try:
        opened = open_backup(_directory(settings), name)
    except NoSuchBackup:
        shown = name if len(name) <= 80 else name[:80] + "…"
        raise NotFound(f"no backup named {shown!r}", details={"field": "name"}) from None
    try:
        backups.audit(
            settings, actor_for(request, principal), "backup.download", name, size=opened.size
        )
    except BaseException:
        opened.file.close()
        raise
    return download_response(opened)


@router.post(
    "",
    operation_id="backups_create",
    summary="Take a logical backup (pg_dump) with its manifest",
    status_code=201,
    response_model=Backup,
)
def create_backup(
    request: Request,
    principal: Annotated[Principal, require("db:backup")],
    settings: SettingsDep,
    body: BackupCreate,
) -> Backup:
    from smartstart.db import backups
    from smartstart.pg.backup import choose_path, list_backups

    if body.note is not None and "\0" in body.note:
        raise Invalid("the note contains a NUL character", details={"field": "note"})
    if body.compress and body.format == "custom":
        raise Invalid("compress applies to the plain format", details={"field": "compress"})
    actor = actor_for(request, principal)
    try:
        path = choose_path(None, _directory(settings), body.format, body.compress)
        with backups.failure_audited(
            settings, actor, "backup.create", path.name, format=body.format
        ):
            backups.take_backup(
                settings,
                path,
                fmt=body.format,
                compress=body.compress,
                note=body.note,
                who=actor.label,
            )
    except BackupError as e:
        raise _refused(e) from None
    backups.audit(settings, actor, "backup.create", path.name, outcome="ok", format=body.format)
    return _out(next(i for i in list_backups(path.parent) if i.path == path))


@router.post(
    "/{name}/verify",
    operation_id="backups_verify",
    summary="Verify a backup: checksum, restore into a scratch database, compare, db check",
    response_model=BackupVerification,
)
def verify_backup(
    request: Request,
    principal: Annotated[Principal, require("db:backup")],
    settings: SettingsDep,
    name: BackupName,
) -> BackupVerification:
    from dataclasses import asdict

    from smartstart.db import backups
    from smartstart.pg.verify import verify

    item = _find(settings, name)
    try:
        result = verify(
            item.path, settings.url_for(), backups.tools(settings), backups.schema_check(settings)
        )
    except BackupError as e:
        raise _refused(e) from None
    backups.audit(settings, actor_for(request, principal), "backup.verify", name, ok=result.ok)
    return BackupVerification(**asdict(result))


@router.post(
    "/{name}/restore",
    operation_id="backups_restore",
    summary="Restore a backup in place of the database (checked first, the old one kept)",
    response_model=RestoreResult,
    responses={409: {"description": "Another restore or prune is running"}},
)
def restore_backup(
    request: Request,
    principal: Annotated[Principal, require("db:restore")],
    settings: SettingsDep,
    name: BackupName,
    body: RestoreRequest,
) -> RestoreResult:
    from smartstart.db import backups

    item = _find(settings, name)
    try:
        plan = backups.plan_restore(settings, item.path)
    except BackupError as e:
        raise _refused(e) from None
    said = backups.describe(plan)
    if body.dry_run:
        return RestoreResult(id=name, database=plan.database, dry_run=True, plan=said)
    if body.confirm != name:
        raise Invalid(
            "a restore replaces the database: send confirm with the backup's name",
            details={"field": "confirm"},
        )
    actor = actor_for(request, principal)
    try:
        with backups.failure_audited(
            settings, actor, "backup.restore", name, kind=plan.source.kind
        ):
            done = backups.restore(settings, plan)
    except BackupError as e:
        if "another restore" in str(e):
            raise Conflict(str(e), details={"reason": "busy"}) from None
        raise _refused(e) from None
    backups.audit_restore(settings, plan, done, actor)
    return RestoreResult(
        id=name,
        database=done.database,
        dry_run=False,
        plan=said,
        kept_as=done.kept_as,
        seconds=done.seconds,
    )
