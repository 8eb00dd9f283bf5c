"""`smartstart db …`: the PostgreSQL server, connections, migrations, seed and reset."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from smartstart.cli import backup as backup_commands
from smartstart.cli import health as health_commands
from smartstart.cli import queries as queries_commands
from smartstart.cli import schema as schema_commands
from smartstart.cli import stats as stats_commands
from smartstart.cli.common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    confirm,
    console,
    counting_bar,
    fail,
    handle_errors,
    print_json,
    print_table,
    settings,
)
from smartstart.db import lifecycle
from smartstart.db.engine import connect
from smartstart.errors import SmartStartError
from smartstart.pg.cluster import find_bin_dir
from smartstart.services import database

app = typer.Typer(
    help="The database: server, connections, migrations, seed data, reset.", no_args_is_help=True
)


def _say(message: str) -> None:
    console.print(f"[green]•[/] {message}", highlight=False)


# -- server ---------------------------------------------------------------------


@app.command()
@handle_errors
def start() -> None:
    """Start the embedded PostgreSQL (initialising it on first run)."""
    s = settings()
    initialized, started = database.start_database(s)
    cluster = database.cluster_for(s)
    if initialized:
        _say(f"initialised a cluster in {cluster.data_dir}")
    _say(
        f"started PostgreSQL on {s.pg_host}:{s.pg_port}"
        if started
        else f"PostgreSQL was already running on port {cluster.status().port}"
    )


@app.command()
@handle_errors
def stop() -> None:
    """Stop the embedded PostgreSQL."""
    _say(
        "stopped PostgreSQL" if database.stop_database(settings()) else "PostgreSQL was not running"
    )


@app.command()
@handle_errors
def restart() -> None:
    """Restart the embedded PostgreSQL."""
    s = settings()
    database.stop_database(s)
    database.start_database(s)
    _say(f"restarted PostgreSQL on {s.pg_host}:{s.pg_port}")


@app.command("status")
@handle_errors
def status_(as_json: JsonOpt = False) -> None:
    """Server state: pid, port, data directory, version, uptime."""
    s = settings()
    row = database.status_row(s)
    if as_json:
        print_json(row)
    else:
        shown: dict[str, object] = {**row}
        if row["uptime_seconds"] is not None:
            shown["uptime_seconds"] = f"{int(row['uptime_seconds'])}s"
        for key, value in shown.items():
            console.print(f"{key:>15}: {'' if value is None else value}", highlight=False)
    if not str(row["state"]).startswith("running"):
        raise typer.Exit(3)


# -- connections ------------------------------------------------------------------


def _psql() -> str:
    s = settings()
    candidates = []
    if s.embedded:
        with contextlib.suppress(SmartStartError):  # fall back to PATH
            candidates.append(str(find_bin_dir(s.pg_bin) / "psql"))
    found = shutil.which("psql")
    if found:
        candidates.append(found)
    for c in candidates:
        if Path(c).exists():
            return c
    raise fail("psql not found: install the PostgreSQL client (apt-get install postgresql-client)")


@app.command()
@handle_errors
def shell(
    commands: Annotated[
        list[str] | None,
        typer.Option(
            "--command", "-c", help="Run this SQL or psql meta-command; repeat to run several."
        ),
    ] = None,
    superuser: Annotated[
        bool,
        typer.Option(
            "--superuser",
            help="As the embedded cluster's superuser (ALTER SYSTEM, CREATE ROLE, extensions).",
        ),
    ] = False,
) -> None:
    """Open psql on the platform database (or run commands with -c, in order)."""
    s = settings()
    args = [_psql(), "-X"]
    for command in commands or []:
        args += ["-c", command]
    if commands:
        args[2:2] = ["-v", "ON_ERROR_STOP=1"]
    if superuser:
        if not s.embedded:
            raise fail(
                "--superuser is for the embedded cluster; SMARTSTART_DATABASE_URL is set: "
                "connect to that server with a superuser's own credentials"
            )
        # The private Unix socket with peer authentication: no password at all.
        cluster = database.cluster_for(s)
        raise typer.Exit(subprocess.call([*args, cluster.superuser_conninfo(s.db_name)]))
    conninfo, password = _without_password(s.url_for())
    # The password goes through a private passfile: psql's arguments are public (`ps`).
    with tempfile.TemporaryDirectory(prefix="smartstart-psql-") as tmp:
        passfile = Path(tmp) / "pgpass"
        passfile.touch(mode=0o600)
        passfile.write_text(f"*:*:*:*:{_pgpass_escape(password)}\n" if password else "")
        env = {**os.environ, "PGPASSFILE": str(passfile)}
        env.pop("PGPASSWORD", None)
        code = subprocess.call([*args, conninfo], env=env)
    raise typer.Exit(code)


def _without_password(url: str) -> tuple[str, str | None]:
    """The URL as a conninfo string without its password, and the password."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    return make_conninfo("", **params), None if password is None else str(password)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@app.command()
@handle_errors
def url(
    sqlalchemy: Annotated[
        bool, typer.Option("--sqlalchemy", help="SQLAlchemy form (postgresql+psycopg://).")
    ] = False,
    masked: Annotated[bool, typer.Option("--masked", help="Hide the password.")] = False,
) -> None:
    """Print the connection URL of the platform database."""
    s = settings()
    value = s.sqlalchemy_url() if sqlalchemy else s.url_for()
    typer.echo(database.redact(value) if masked else value)


# -- migrations -------------------------------------------------------------------


@app.command("migrate")
@handle_errors
def migrate_(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    dry_run: DryRunOpt = False,
) -> None:
    """Apply migrations (upgrade to head, or to REVISION)."""
    from smartstart.db import migrate

    s = settings()
    url = s.sqlalchemy_url()
    with connect(s):
        pass
    current = migrate.current_revision(url)
    if dry_run:
        pending = migrate.pending(url, revision)
        _say(f"at {current or 'base'}; would apply: {', '.join(pending) or 'nothing'}")
        return
    from smartstart.db.owner import migration_url

    migrate.upgrade(migration_url(s), revision)
    now = migrate.current_revision(url)
    _say(f"schema at {now}" + ("" if now == current else f" (was {current or 'base'})"))


@app.command()
@handle_errors
def revision(
    message: Annotated[str, typer.Option("--message", "-m", help="What the revision does.")],
    autogenerate: Annotated[
        bool, typer.Option("--autogenerate", help="Fill it from the difference models → database.")
    ] = False,
) -> None:
    """Create a new migration file under src/smartstart/db/migrations/versions."""
    from smartstart.db import migrate

    s = settings()
    for path in migrate.revision(s.sqlalchemy_url(), message, autogenerate=autogenerate):
        _say(f"wrote {path}")


@app.command()
@handle_errors
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, -N, or base.")] = "-1",
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Revert migrations (one step by default). Dropped columns lose their data."""
    from smartstart.db import migrate

    s = settings()
    url = s.sqlalchemy_url()
    current = migrate.current_revision(url)
    if current is None:
        raise fail("the database has no migrations applied; nothing to downgrade")
    steps = migrate.reverted(url, revision)
    if dry_run:
        _say(f"at {current}; would revert: {', '.join(steps) or 'nothing'}")
        return
    confirm(
        f"Revert {', '.join(steps)} on {s.db_name}? Data in dropped tables/columns is lost.", yes
    )
    from smartstart.db.owner import migration_url

    migrate.downgrade(migration_url(s), revision)
    _say(f"schema at {migrate.current_revision(url) or 'base'} (was {current})")


@app.command()
@handle_errors
def history(as_json: JsonOpt = False) -> None:
    """List every migration, newest first."""
    from smartstart.db import migrate

    rows = migrate.history()
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["revision", "down_revision", "message", "is_head"])


@app.command()
@handle_errors
def current(as_json: JsonOpt = False) -> None:
    """Show the database's revision and the latest one."""
    from smartstart.db import migrate

    s = settings()
    with connect(s):
        pass
    row = {"current": migrate.current_revision(s.sqlalchemy_url()), "head": migrate.head_revision()}
    if as_json:
        print_json(row)
    else:
        at_head = " (head)" if row["current"] == row["head"] else f" (head is {row['head']})"
        typer.echo(f"{row['current'] or 'base'}{at_head}")


@app.command()
@handle_errors
def check(as_json: JsonOpt = False) -> None:
    """Exit non-zero when the database is not at head or differs from the models (drift)."""
    from smartstart.db import migrate

    s = settings()
    with connect(s):
        pass
    result = migrate.check(s.sqlalchemy_url())
    if as_json:
        print_json(result)
    else:
        if result["current"] != result["head"]:
            typer.echo(f"schema at {result['current'] or 'base'}, head is {result['head']}")
        for line in result["differences"]:
            typer.echo(f"drift: {line}")
        if result["ok"]:
            typer.echo(f"ok: at {result['head']}, no drift")
    if not result["ok"]:
        raise typer.Exit(1)


# -- data -------------------------------------------------------------------------


@app.command()
@handle_errors
def seed(
    demo_users: Annotated[
        int, typer.Option("--demo-users", min=0, help="Also add N generated demo users.")
    ] = 0,
    demo_audit_per_user: Annotated[
        int,
        typer.Option(
            "--demo-audit-per-user",
            min=0,
            max=1000,
            help="Audit entries generated for each demo user (default 5).",
        ),
    ] = 5,
) -> None:
    """Seed roles, permissions, journey stages and the guide's users (idempotent)."""
    from smartstart.db import credentials, demo
    from smartstart.db import seed as seed_mod

    s = settings()
    with connect(s) as conn:
        report = seed_mod.seed(conn, s)
        created = {k: v for k, v in report.created.items() if v}
        _say("seeded " + (", ".join(f"{v} {k}" for k, v in created.items()) or "nothing new"))
        for email, password in report.credentials.items():
            console.print(f"  password for {email}: {password}", highlight=False)
        if report.credentials_file:
            line = credentials.describe(report.credentials_file, report.credentials_kept)
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        if demo_users:
            with counting_bar() as progress:
                task = progress.add_task("demo users", total=demo_users)
                n = demo.demo_users(
                    conn,
                    demo_users,
                    progress=lambda done: progress.update(task, completed=done),
                    rounds=s.bcrypt_rounds,
                    audit_per_user=demo_audit_per_user,
                )
            _say(f"added {n} demo users (they share one precomputed password hash)")


@app.command()
@handle_errors
def reset(
    no_seed: Annotated[
        bool, typer.Option("--no-seed", help="Migrate the new database, but add no data.")
    ] = False,
    empty: Annotated[
        bool,
        typer.Option(
            "--empty",
            help="No schema and no seed (implies --no-seed): the target of `psql … < backup.sql`.",
        ),
    ] = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Allow resetting an external (non-embedded) database.")
    ] = False,
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Skip the safety backup taken before the reset.")
    ] = False,
) -> None:
    """Back up, then drop and recreate the platform database, migrate it and seed it."""
    s = settings()
    if not s.embedded and not force:
        raise fail(
            "refusing to reset a database SmartStart does not manage (SMARTSTART_DATABASE_URL) — "
            "add --force if you really mean to drop every table in it"
        )
    try:
        counts = lifecycle.table_counts(s)
    except Exception:  # noqa: BLE001 - an unreachable/missing database has nothing to show
        counts = {}
    where = database.redact(s.url_for())
    if counts:
        print_table(
            [{"table": k, "rows": v} for k, v in counts.items()], title=f"{s.db_name} ({where})"
        )
    else:
        console.print(f"{s.db_name} ({where}): no tables", highlight=False)
    if empty:
        plan = "drop and recreate it empty (no schema, no seed)"
    else:
        plan = "drop and recreate it, migrate to head" + ("" if no_seed else ", seed")
    safety = bool(counts) and not no_backup  # nothing to keep when there are no tables
    if safety:
        plan = f"{plan}, after a safety backup into {backup_commands.backup_dir(s)}"
    if dry_run:
        _say(f"would {plan}; nothing changed (dry run)")
        return
    confirm(f"Delete all {sum(counts.values())} rows of {s.db_name} and {plan}?", yes)
    if safety:
        path = backup_commands.safety_backup(s, "safety backup before db reset")
        console.print(
            f"[green]•[/] safety backup: {path} (smartstart db restore {path} brings it back)",
            highlight=False,
            soft_wrap=True,
        )
    result = lifecycle.reset(s, seed=not no_seed, force=force, empty=empty)
    if empty:
        _say(f"reset {s.db_name}: empty, no schema; restore a plain dump into it with psql")
        return
    _say(
        f"reset {s.db_name}: schema at {result['revision']}"
        + (", seeded" if result["seeded"] else ", empty")
    )
    for email, password in result["credentials"].items():
        console.print(f"  password for {email}: {password}", highlight=False)
    if result["credentials_file"]:
        from smartstart.db import credentials

        line = credentials.describe(result["credentials_file"], result["credentials_kept"])
        console.print(f"  {line}", highlight=False, soft_wrap=True)


backup_commands.register(app)
health_commands.register(app)
schema_commands.register(app)
stats_commands.register(app)
queries_commands.register(app)
