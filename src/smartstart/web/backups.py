"""The Backups page's actions beyond create and verify: download, restore, prune.

Each runs through the functions `smartstart db restore|prune` and the API use
(`smartstart.db.backups`); the pages add the confirmations. A restore is confirmed by
typing the database's name, runs in the request (it takes seconds at ordinary sizes, as
a backup does) and holds no pooled connection while it runs: it ends every session on
the database when it switches the restored one in (`core.Afterwards`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.responses import Response

from smartstart.domain import audit
from smartstart.domain.errors import Invalid, NotFound
from smartstart.pg.backup import BackupError
from smartstart.web.core import Afterwards, View, flash, page, redirect

if TYPE_CHECKING:
    from smartstart.pg.backup import Listed
    from smartstart.pg.prune import PrunePlan
    from smartstart.pg.restore import RestorePlan

KEEP_MAX = 100_000  # as the API's prune
AGE_MAX = 20  # characters of an age ("30d"): anything longer is no age


def _listed(view: View, name: str) -> Listed:
    """The present backup called name in the backups directory (404 otherwise)."""
    from smartstart.db.backups import backup_dir
    from smartstart.pg.backup import list_backups

    found = next((b for b in list_backups(backup_dir(view.settings)) if b.path.name == name), None)
    if found is None or not found.present:
        shown = name if len(name) <= 80 else name[:80] + "…"
        raise NotFound(f"no backup named {shown!r} in the backups directory")
    return found


# -- download ----------------------------------------------------------------------------------


def _download(view: View, manifest: bool) -> Response:
    from smartstart.api.download import download_response
    from smartstart.db.backups import backup_dir
    from smartstart.pg.backupfile import NoSuchBackup, open_backup

    name = view.request.path_params["name"]
    try:
        opened = open_backup(backup_dir(view.settings), name, manifest=manifest)
    except NoSuchBackup:
        shown = name if len(name) <= 80 else name[:80] + "…"
        raise NotFound(f"no backup named {shown!r} in the backups directory") from None
    try:
        audit.record(
            view.conn,
            view.actor,
            "backup.download",
            resource="backup",
            resource_id=name,
            file=opened.filename,
            size=opened.size,
        )
    except BaseException:
        opened.file.close()
        raise
    return download_response(opened)


@page("db:backup")
def backup_download(view: View) -> Response:
    """GET /admin/backups/files/{name}: the backup's file (a backup holds every row)."""
    return _download(view, manifest=False)


@page("db:backup")
def manifest_download(view: View) -> Response:
    """GET /admin/backups/files/{name}/manifest: its manifest (put beside the file to list it)."""
    return _download(view, manifest=True)


# -- restore -----------------------------------------------------------------------------------


def _plan(view: View, name: str) -> RestorePlan:
    from smartstart.db import backups

    listed = _listed(view, name)
    try:
        return backups.plan_restore(view.settings, listed.path)
    except BackupError as e:
        raise Invalid(f"{name} cannot be restored: {e}") from None


def _restore_page(
    view: View, plan: RestorePlan, *, status: int = 200, error: str | None = None
) -> Response:
    manifest = plan.source.manifest
    return view.render(
        "restore.html",
        title="Restore a backup",
        status=status,
        plan=plan,
        manifest=manifest,
        rows=sum(manifest.rows.values()) if manifest else None,
        kept_prefix=plan.keep_as.rsplit("_before_restore_", 1)[0] + "_before_restore_",
        error=error,
    )


@page("db:restore")
def restore_form(view: View) -> Response:
    """GET /admin/backups/restore?file=NAME: what the restore would do, and its confirmation."""
    name = view.query("file", "") or ""
    if not name:
        raise Invalid("choose a backup to restore (from the list of backups)")
    return _restore_page(view, _plan(view, name))


@page("db:restore")
def restore(view: View) -> Response:
    """POST /admin/backups/restore: restore a backup once its database's name is typed."""
    from smartstart.db import backups

    name = view.field("file")
    plan = _plan(view, name)
    typed = view.field("database")
    if typed != plan.database:
        told = "Type the database's name" if not typed else f"{typed[:80]!r} is not the name"
        return _restore_page(
            view,
            plan,
            status=422,
            error=f"{told}: {plan.database}, exactly, to confirm. Nothing was changed.",
        )
    settings, actor = view.settings, view.actor

    def work() -> Response:
        try:
            done = backups.restore(settings, plan)
        except BackupError as e:
            busy = "another restore" in str(e)
            return _restore_page(
                view, plan, status=409 if busy else 422, error=f"{e}. Nothing was changed."
            )
        backups.audit_restore(settings, plan, done, actor)
        kept = (
            f"; the previous database is kept as {done.kept_as} until pruned"
            if done.kept_as
            else ""
        )
        return view.done(
            "/admin/backups",
            f"Restored {done.database} from {name} in {done.seconds:.1f} s{kept}.",
        )

    return Afterwards(work)


# -- prune -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneAsk:
    """What the prune form asked, checked: a count, an age, or both."""

    keep: int | None
    older_than: str | None

    @property
    def fields(self) -> dict[str, str]:
        return {
            "keep": "" if self.keep is None else str(self.keep),
            "older_than": self.older_than or "",
        }


def _ask(keep_text: str, age_text: str) -> PruneAsk:
    """The prune form's fields checked (Invalid, naming the field, when they are not)."""
    from smartstart.pg.prune import parse_age

    keep_text, age_text = keep_text.strip(), age_text.strip()
    if not keep_text and not age_text:
        raise Invalid("say what to prune: keep the newest N, older than an age, or both")
    keep = None
    if keep_text:
        digits = keep_text.isascii() and keep_text.isdigit() and len(keep_text) <= 6
        if not digits or int(keep_text) > KEEP_MAX:
            shown = keep_text if len(keep_text) <= 20 else keep_text[:20] + "…"
            raise Invalid(
                f"keep {shown!r}: a whole number from 0 to {KEEP_MAX}", details={"field": "keep"}
            )
        keep = int(keep_text)
    if age_text:
        try:
            if len(age_text) > AGE_MAX:
                raise BackupError("too long")
            parse_age(age_text)
        except BackupError:
            shown = age_text if len(age_text) <= 20 else age_text[:20] + "…"
            raise Invalid(
                f"older than {shown!r}: a number and a unit, m, h, d or w (30d, 12h, 2w)",
                details={"field": "older_than"},
            ) from None
    return PruneAsk(keep, age_text or None)


def _prune_plan(view: View, ask: PruneAsk) -> PrunePlan:
    from smartstart.db import backups

    try:
        directory = backups.backup_dir(view.settings)
        return backups.plan_prune(
            view.settings, directory, keep=ask.keep, older_than=ask.older_than
        )
    except BackupError as e:
        raise Invalid(str(e)) from None


def _prune_page(
    view: View,
    ask: PruneAsk | None,
    plan: PrunePlan | None,
    *,
    status: int = 200,
    error: str | None = None,
    fields: dict[str, str] | None = None,
) -> Response:
    return view.render(
        "prune.html",
        title="Prune backups",
        status=status,
        plan=plan,
        ask=ask,
        fields=fields or (ask.fields if ask else {"keep": "", "older_than": ""}),
        expect="\n".join(i.name for i in plan.deleted) if plan else "",
        error=error,
    )


@page("db:backup")
def prune_page(view: View) -> Response:
    """GET /admin/backups/prune?keep=N&older_than=AGE: what would be deleted (a dry run)."""
    keep_text, age_text = view.query("keep", "") or "", view.query("older_than", "") or ""
    if not keep_text and not age_text:
        return _prune_page(view, None, None)
    try:
        ask = _ask(keep_text, age_text)
    except Invalid as e:
        shown = {"keep": keep_text[:40], "older_than": age_text[:40]}
        return _prune_page(view, None, None, status=422, error=e.message, fields=shown)
    return _prune_page(view, ask, _prune_plan(view, ask))


@page("db:backup")
def prune(view: View) -> Response:
    """POST /admin/backups/prune: delete what the plan shown said, and only that."""
    from smartstart.db import backups

    ask = _ask(view.field("keep"), view.field("older_than"))
    plan = _prune_plan(view, ask)
    doomed = [i.name for i in plan.deleted]
    if doomed != [n for n in view.field("expect").splitlines() if n]:
        return _prune_page(
            view,
            ask,
            plan,
            status=409,
            error="The backups changed since this plan was shown: nothing was deleted. "
            "Here is the plan now.",
        )
    if not doomed:
        return view.done("/admin/backups", "Nothing to prune: nothing was deleted.")
    try:
        errors = backups.prune(view.settings, plan)
    except BackupError as e:
        return _prune_page(view, ask, plan, status=409, error=f"{e}. Nothing was deleted.")
    backups.audit_prune(view.settings, plan, errors, view.actor)
    if errors:
        told = (
            f"Deleted {len(doomed) - len(errors)} of {len(doomed)}; could not delete "
            f"{len(errors)}: {errors[0]}"
        )
        return flash(view.request, redirect("/admin/backups"), told, "error")
    return view.done("/admin/backups", f"Deleted {len(doomed)}: {', '.join(doomed)}.")
