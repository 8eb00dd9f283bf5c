"""Operators' database pages: health checks, backups, and the read-only data browser.

Health runs `health.run`'s checks-as-data (the Database page itself: web/dbconsole.py);
backups list `pg.backup`'s manifests (and `pg.pitr`'s recoverable window, the scheduled
jobs' state) and create and verify through the same functions as `smartstart db
backup|verify`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from smartstart import health
from smartstart.config import Settings
from smartstart.domain import audit
from smartstart.domain.errors import Invalid, NotFound
from smartstart.pg import browse
from smartstart.web.core import View, flash, page, redirect

DATA_PAGE = 50
# Never shown, whoever browses: password hashes and session token hashes.
SECRET_COLUMNS = frozenset({"password", "tokenHash"})


@dataclass(frozen=True)
class HealthRun:
    """The last run of the checks in this process, and when it finished."""

    at: float
    results: list[health.CheckResult]

    @property
    def groups(self) -> dict[str, list[health.CheckResult]]:
        """The results by verdict, worst first; a check that could not tell counts as WARN."""
        out: dict[str, list[health.CheckResult]] = {"CRIT": [], "WARN": [], "OK": []}
        for r in self.results:
            out[r.state.name if r.state.name in out else "WARN"].append(r)
        return out

    @property
    def counts(self) -> dict[str, int]:
        return {state: len(found) for state, found in self.groups.items()}

    @property
    def age(self) -> float:
        return time.time() - self.at


_last_health: dict[int, HealthRun] = {}
_health_lock = threading.Lock()


def latest_health(view: View) -> HealthRun | None:
    """The last health run of this Brain (the checks take seconds: run on request)."""
    return _last_health.get(id(view.request.app))


@page("db:read")
def database_check(view: View) -> Response:
    """POST /admin/database/check: run every health check now."""
    config = health.load_config(view.settings.home_dir)
    with _health_lock:
        results = health.run(view.settings, config=config)
        _last_health[id(view.request.app)] = HealthRun(time.time(), results)
    worst = health.worst(results).name
    return view.done("/admin/database", f"Health checks run: worst verdict {worst}.")


# -- backups -----------------------------------------------------------------------------------


def _backups(view: View) -> list[Any]:
    from smartstart.db.backups import backup_dir
    from smartstart.pg.backup import list_backups

    return list_backups(backup_dir(view.settings))


def last_backup(view: View) -> Any | None:
    found = _backups(view)
    return found[0] if found else None


@page("db:read")
def backups_page(view: View) -> Response:
    """GET /admin/backups: every backup, newest first, with its verification."""
    from smartstart.cli.pitr import base_dir, current_window
    from smartstart.db.backups import backup_dir
    from smartstart.pg.backup import writing
    from smartstart.pg.basebackup import list_base_backups
    from smartstart.services import jobs

    window = current_window(view.settings)
    backups = _backups(view)
    return view.render(
        "backups.html",
        title="Backups",
        backups=backups,
        writing=writing(backup_dir(view.settings)),
        expected=backups[0].manifest.size if backups else None,
        failed=_last_failure(view, backups[0].manifest.started_at if backups else None),
        window=window,
        bases=window.base_backups if window else list_base_backups(base_dir(view.settings)),
        schedule=jobs.status(view.settings),
    )


def _last_failure(view: View, newest: str | None) -> dict[str, Any] | None:
    """The web's last backup attempt, when it failed after the newest backup was made."""
    row = view.conn.execute(
        "SELECT details, \"createdAt\" FROM audit_log WHERE action = 'backup.create'"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None or not isinstance(row[0], dict) or row[0].get("ok") is not False:
        return None
    at = row[1] if row[1].tzinfo else row[1].replace(tzinfo=UTC)  # stored in UTC
    if newest is not None and at < datetime.fromisoformat(newest):
        return None
    return {"error": row[0].get("error", "unknown error"), "at": at}


_STARTING = threading.Lock()


@page("db:backup")
def backup_create(view: View) -> Response:
    """POST /admin/backups: start a backup (custom format, as `smartstart db backup` makes)."""
    from smartstart.db.backups import backup_dir
    from smartstart.pg import backup as pgb

    directory = backup_dir(view.settings)
    note = view.field("note").strip() or None
    if note is not None and len(note) > pgb.NOTE_MAX:
        raise Invalid(f"the note is {len(note)} characters; at most {pgb.NOTE_MAX}")
    # Two requests at once: the second waits until the first's partial file is visible,
    # then finds it and is refused (in another worker the window is the few ms until then).
    with _STARTING:
        busy = pgb.writing(directory)
        if busy:
            told = f"{busy[0].name} is being written; start another when it is done."
            return flash(view.request, redirect("/admin/backups"), told, "error")
        path = pgb.choose_path(None, directory, "custom", False)
        # A dump takes minutes at scale: it runs beside the page, which shows its progress
        # (the partial file's growth, seen by every worker) and refreshes until it is listed.
        threading.Thread(
            target=_write_backup,
            args=(view.settings, path, note, view.actor, f"web:{view.principal.email}"),
            name="web-backup",
        ).start()
        _wait_until_visible(directory, path.name)
    return view.done("/admin/backups", f"Writing {path.name}: its progress is shown below.")


def _wait_until_visible(directory: Path, name: str) -> None:
    """Until the new backup's partial file (or the backup) exists, for the next page load."""
    from smartstart.pg import backup as pgb

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (directory / name).exists() or any(w.name == name for w in pgb.writing(directory)):
            return
        time.sleep(0.02)


def _write_backup(settings: Settings, path: Path, note: str | None, actor: Any, who: str) -> None:
    """The backup and its audit row (with the outcome), on a connection of its own."""
    import psycopg

    from smartstart.db.backups import tools
    from smartstart.errors import SmartStartError
    from smartstart.pg import backup as pgb

    outcome: dict[str, Any]
    try:
        manifest = pgb.backup(settings.url_for(), path, tools(settings), note=note, who=who)
        outcome = {"ok": True, "size": manifest.size, "sha256": manifest.sha256}
    except (SmartStartError, OSError) as e:
        outcome = {"ok": False, "error": str(e)[:500]}
    try:
        with psycopg.connect(settings.url_for()) as conn:
            audit.record(
                conn, actor, "backup.create", resource="backup", resource_id=path.name, **outcome
            )
    except psycopg.Error as e:  # the database went away meanwhile; the manifest says who
        logging.getLogger(__name__).warning("backup %s: not audited: %s", path.name, e)


@page("db:backup")
def backup_verify(view: View) -> Response:
    """POST /admin/backups/verify: restore one into a scratch database and compare."""
    from smartstart.db.backups import backup_dir, schema_check, tools
    from smartstart.pg.verify import verify

    name = view.field("file")
    found = {b.path.name: b for b in _backups(view)}
    if name not in found or not found[name].present:
        raise NotFound(f"no backup {name[:100]!r} in {backup_dir(view.settings)}")
    result = verify(
        found[name].path,
        view.settings.url_for(),
        tools(view.settings),
        schema_check(view.settings),
    )
    audit.record(
        view.conn,
        view.actor,
        "backup.verify",
        resource="backup",
        resource_id=name,
        ok=result.ok,
        message=result.message,
    )
    verdict = "verified" if result.ok else "FAILED verification"
    return view.done("/admin/backups", f"{name} {verdict}: {result.message}")


# -- data browser ------------------------------------------------------------------------------


@page("db:read")
def data_page(view: View) -> Response:
    """GET /admin/data: every table of the platform's schema."""
    return view.render("data.html", title="Data browser", tables=browse.tables(view.conn))


def _offset(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        raise Invalid("offset must be a whole number", details={"field": "offset"}) from None


@page("db:read")
def table_page(view: View) -> Response:
    """GET /admin/data/{table}: a page of rows, filtered and sorted by a column."""
    table = view.request.path_params["table"]
    column, op, value = view.query("column"), view.query("op", "="), view.query("value", "")
    sort, direction = view.query("sort"), view.query("dir", "asc")
    offset = _offset(view.query("offset"))
    where = (column, op or "=", value or "") if column else None
    try:
        found = browse.rows(
            view.conn,
            table,
            where=where,
            sort=sort,
            descending=direction == "desc",
            offset=offset,
            limit=DATA_PAGE,
            hidden=SECRET_COLUMNS,
        )
    except browse.BrowseError as e:
        if str(e).startswith("no table"):
            raise NotFound(str(e)) from None
        raise Invalid(str(e)) from None
    kept = {
        k: v
        for k, v in {
            "column": column,
            "op": op if column else None,
            "value": value if column else None,
            "sort": sort,
            "dir": direction if sort else None,
        }.items()
        if v
    }
    return view.render(
        "table.html",
        title=table,
        table=table,
        found=found,
        hidden=SECRET_COLUMNS,
        ops=browse.OPS,
        q=kept,
        where=where,
        sort=sort,
        direction=direction,
        offset=offset,
        next_url=f"?{urlencode({**kept, 'offset': offset + DATA_PAGE})}"
        if found.more and offset + DATA_PAGE <= browse.MAX_OFFSET
        else None,
        prev_url=f"?{urlencode({**kept, 'offset': max(0, offset - DATA_PAGE)})}"
        if offset
        else None,
    )
