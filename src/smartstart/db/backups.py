"""The platform's side of backups: where they live, how a restored database is judged.

`smartstart.pg.backup`/`verify`/`restore` know nothing of the schema; this module gives
them the settings (client tools, connections, directory) and the platform's checks (the
Alembic revision, `db check`, the integrity checks), shared by the CLI and the API.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from smartstart.config import Settings
from smartstart.errors import SmartStartError

if TYPE_CHECKING:
    from smartstart.domain.actor import Actor
    from smartstart.pg.backup import Manifest, Tools
    from smartstart.pg.prune import PrunePlan
    from smartstart.pg.restore import Restored, RestorePlan


_log = logging.getLogger(__name__)
# The Brain's handlers get these; the CLI, which configures none, keeps its one error line.
_log.addHandler(logging.NullHandler())


def backup_dir(s: Settings) -> Path:
    return s.home_dir / "backups"


def tools(s: Settings) -> Tools:
    """The client binaries: SMARTSTART_PG_BIN's, else the server's, else PATH's."""
    from smartstart.pg.backup import client_tools
    from smartstart.pg.cluster import find_bin_dir

    if s.pg_bin is not None:  # chosen: a client-only installation will do
        return client_tools(s.pg_bin, explicit=True)
    bin_dir = None
    with contextlib.suppress(SmartStartError):  # no server install: the client on PATH
        bin_dir = find_bin_dir(None)
    return client_tools(bin_dir)


def cli_who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def database_name(s: Settings) -> str:
    """The platform database: SMARTSTART_DB_NAME, or the one SMARTSTART_DATABASE_URL names."""
    if s.embedded:
        return s.db_name
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(s.url_for()).get("dbname") or s.db_user)


def admin_conninfo(s: Settings) -> str:
    """A connection that may create, rename and drop databases and end sessions.

    The embedded cluster's superuser over its private socket; on an external server, the
    configured user on its `postgres` database (it needs CREATEDB and to own the database)."""
    if s.embedded:
        from smartstart.pg.cluster import Cluster

        return Cluster.from_settings(s).superuser_conninfo("postgres")
    return s.url_for("postgres")


def take_backup(
    s: Settings,
    path: Path,
    *,
    fmt: str = "custom",
    compress: bool = False,
    note: str | None = None,
    who: str,
    progress: Callable[[int], None] = lambda _: None,
) -> Manifest:
    from smartstart.pg import backup as pgb

    if fmt not in pgb.FORMATS:
        raise pgb.BackupError(f"unknown format {fmt!r}: choose custom or plain")
    return pgb.backup(
        s.url_for(),
        path,
        tools(s),
        fmt=fmt,
        compress=compress,
        note=note,
        who=who,
        progress=progress,
    )


def check_revision(revision: str | None) -> str | None:
    """Why a database at revision cannot be restored by this code (None: it can)."""
    from smartstart.db import migrate

    if revision is None:
        return "it has no Alembic revision: not a SmartStart database (a foreign dump?)"
    if revision == migrate.head_revision():
        return None
    if revision not in {r["revision"] for r in migrate.history()}:
        return (
            f"its schema is at revision {revision}, unknown to this SmartStart (head "
            f"{migrate.head_revision()}): made by a newer version; upgrade SmartStart first"
        )
    return None


def _schema_problems(url: str) -> list[str]:
    """`db check` of the database at url (at head: drift; behind: where it stands)."""
    from smartstart.db import migrate

    result = migrate.check(url)
    return [f"schema: {d}" for d in result["differences"]] or (
        [] if result["ok"] else [f"schema: at {result['current']}, head is {result['head']}"]
    )


def schema_check(s: Settings, *, migrate_up: bool = True) -> Callable[[str], list[str]]:
    """`db check` on a restored database, migrated up first when the backup is older."""

    def check(dbname: str) -> list[str]:
        from smartstart.db import migrate

        url = s.sqlalchemy_url(dbname)
        current, head = migrate.current_revision(url), migrate.head_revision()
        refused = check_revision(current)
        if refused is not None:
            return [f"schema: {refused}"]
        if current != head and migrate_up:
            migrate.upgrade(url)
        return _schema_problems(url)

    return check


def integrity_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """The platform's integrity checks judged CRIT (no SUPER_ADMIN is fine with no users)."""
    from smartstart.domain.integrity import CHECKS
    from smartstart.health import State, Thresholds, judge

    no_users = conn.execute('SELECT NOT EXISTS (SELECT 1 FROM "User")').fetchone() == (True,)
    problems = []
    for check in CHECKS:
        if check.name == "super_admins" and no_users:
            continue
        measured = check.run(conn)
        state, fix = judge(check, measured, Thresholds(check.warn, check.crit, check.floor))
        if state is State.CRIT:
            problems.append(f"{check.title}: {measured.metric:g} ({fix})")
    return problems


def prepare_restored(s: Settings) -> Callable[[str, Callable[[], list[str]]], list[str]]:
    """Judge a restored database (migrated up when older); then make cached permissions stale.

    as_loaded checks the data as the file held it (rows per table): before a migration
    changes it, or, at head, side by side with the other read-only checks. The Brain
    caches permissions per RBAC version, which only grows; a restored database may carry
    a version the Brain has seen with other grants, so it continues above the current
    database's."""

    def prepare(dbname: str, as_loaded: Callable[[], list[str]]) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        from smartstart.db import migrate

        url = s.sqlalchemy_url(dbname)
        current = migrate.current_revision(url)
        refused = check_revision(current)
        if refused is not None:
            return [f"schema: {refused}"]
        if current != migrate.head_revision():
            problems = as_loaded()
            if problems:
                return problems
            migrate.upgrade(url)
            problems = _schema_problems(url) or _integrity(s, dbname)
        else:  # counts and integrity run on the server while Alembic compares here
            with ThreadPoolExecutor(2) as pool:
                loaded = pool.submit(as_loaded)
                integrity = pool.submit(_integrity, s, dbname)
                schema = _schema_problems(url)
                problems = loaded.result() + schema + integrity.result()
        if problems:
            return problems
        continue_rbac_version(s, s.url_for(dbname))
        return []

    return prepare


def continue_rbac_version(s: Settings, restored: str) -> None:
    """Set the RBAC version of the restored database (its conninfo) above the current one's.

    The Brain caches permissions for the newest version it has seen; a restored database
    going back to an older version would, once it grew again, meet sets cached for the
    same number with other grants."""
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute(
            'UPDATE rbac_version SET version = greatest(version, %s) + 1, "changedAt" = now()',
            [_rbac_version(s)],
        )


def _integrity(s: Settings, dbname: str) -> list[str]:
    with psycopg.connect(s.url_for(dbname), autocommit=True) as conn:
        return integrity_problems(conn)


def _rbac_version(s: Settings) -> int:
    try:
        with psycopg.connect(s.url_for(), connect_timeout=10) as conn:
            row = conn.execute("SELECT version FROM rbac_version").fetchone()
    except psycopg.Error:  # no current database, or not at a revision that has one
        return 0
    return int(row[0]) if row else 0


def plan_restore(s: Settings, path: Path) -> RestorePlan:
    """Check the file and say what a restore would do; refuse a newer revision early."""
    from smartstart.pg.backup import BackupError
    from smartstart.pg.restore import plan_restore as plan

    found = plan(path, admin_conninfo(s), database_name(s))
    manifest = found.source.manifest
    if manifest is not None:
        refused = check_revision(manifest.revision)
        if refused is not None:
            raise BackupError(f"{path}: {refused}")
    return found


def restore(
    s: Settings, plan: RestorePlan, say: Callable[[str], None] = lambda _: None
) -> Restored:
    """Restore plan's file in place of the platform database (the old one kept aside)."""
    from smartstart.pg import restoring
    from smartstart.pg.restore import restore as run

    what = f"{plan.source.path.name} switched in place of {plan.database}"
    return run(
        plan,
        admin_conninfo(s),
        s.url_for(),
        tools(s),
        prepare_restored(s),
        say=say,
        swapping=lambda: restoring.marked(s.home_dir, "logical", what),
    )


def plan_prune(
    s: Settings, directory: Path, *, keep: int | None, older_than: str | None
) -> PrunePlan:
    """What `prune` would delete among directory's backups and the set-aside databases."""
    from smartstart.pg.backup import list_backups
    from smartstart.pg.prune import parse_age
    from smartstart.pg.prune import plan_prune as plan
    from smartstart.pg.restore import kept_databases

    age = parse_age(older_than) if older_than is not None else None
    databases = kept_databases(admin_conninfo(s), database_name(s))
    return plan(list_backups(directory), databases, keep=keep, older_than=age)


def prune(s: Settings, plan: PrunePlan) -> list[str]:
    """Delete what plan says, under the restore lock: the errors (empty when all went)."""
    from smartstart.pg.prune import prune as run
    from smartstart.pg.restore import exclusive

    with exclusive(admin_conninfo(s)) as conn:
        return run(plan, conn)


def audit(s: Settings, actor: Actor, action: str, resource_id: str, **details: object) -> None:
    """One audit row in the platform database (after a restore: the restored one)."""
    from smartstart.domain import audit as log

    with psycopg.connect(s.url_for(), connect_timeout=10) as conn:
        log.record(conn, actor, action, resource="backup", resource_id=resource_id, **details)


def audit_quietly(
    s: Settings, actor: Actor, action: str, resource_id: str, **details: object
) -> str | None:
    """`audit`, for when the work is done whatever the log says: why the row could not be
    written (also logged), or None."""
    try:
        audit(s, actor, action, resource_id, **details)
    except psycopg.Error as e:
        why = f"not audited: {action} {resource_id} ({details.get('outcome', 'ok')}): " + (
            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        )
        _log.warning("%s", why)
        return why
    return None


@contextlib.contextmanager
def failure_audited(
    s: Settings, actor: Actor, action: str, resource_id: str, **details: object
) -> Iterator[None]:
    """Audit the block's failure (`outcome: failed` and the error) and let it propagate.

    The row lands in the platform database as it is then: a failed restore leaves it
    untouched (or puts it back), so that is the database the attempt was made on."""
    try:
        yield
    except Exception as e:
        error = str(e) or type(e).__name__
        audit_quietly(s, actor, action, resource_id, outcome="failed", error=error, **details)
        raise


def audit_restore(s: Settings, plan: RestorePlan, done: Restored, actor: Actor) -> None:
    m = plan.source.manifest
    audit(
        s,
        actor,
        "backup.restore",
        plan.source.path.name,
        outcome="ok",
        kind=done.kind,
        kept_as=done.kept_as,
        revision=m.revision if m else None,
        sha256=m.sha256 if m else None,
        seconds=done.seconds,
    )


def audit_prune(s: Settings, plan: PrunePlan, errors: list[str], actor: Actor) -> None:
    audit(
        s,
        actor,
        "backup.prune",
        "-",
        deleted=[f"{i.kind}:{i.name}" for i in plan.deleted],
        errors=errors,
    )


def size_text(n: int | None) -> str:
    """Bytes for people: 512 B, 3.4 MiB."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def describe(plan: RestorePlan) -> str:
    """The plan in one paragraph: what the file is, what it replaces, what is kept."""
    source, m = plan.source, plan.source.manifest
    kind = {"custom": "custom-format dump", "plain": "plain SQL dump", "gzip": "gzipped SQL dump"}
    what = f"{source.path} ({kind[source.kind]}, {size_text(source.size)}"
    if m is not None:
        what += (
            f", revision {m.revision or 'none'}, {sum(m.rows.values())} rows, {m.started_at[:19]}"
        )
    else:
        what += ", no manifest: checked by restoring it"
    what += ")"
    if not plan.current_exists:
        return f"restore {what} as {plan.database} (it does not exist now)"
    return (
        f"restore {what} into a new database, check it, then switch it in place of "
        f"{plan.database} ({size_text(plan.current_size)}), keeping the current one as "
        f"{plan.keep_as.rsplit('_before_restore_', 1)[0]}_before_restore_<timestamp>"
    )
