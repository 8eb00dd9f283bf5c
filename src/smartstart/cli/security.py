"""`smartstart security …`: the guide's Security Operations and Best Practices, done fully."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

import psycopg
import typer

from smartstart import advisor
from smartstart.cli.common import (
    DryRunOpt,
    JsonOpt,
    YesOpt,
    confirm,
    console,
    err_console,
    handle_errors,
    print_json,
    settings,
)
from smartstart.config import Settings
from smartstart.db.engine import connect
from smartstart.domain import audit, passwords
from smartstart.domain.actor import Actor
from smartstart.errors import SmartStartError
from smartstart.pg import security

app = typer.Typer(
    help="Security operations: a read-only user, hardening, audit logging, an advisor.",
    no_args_is_help=True,
)


def _say(message: str) -> None:
    console.print(f"[green]•[/] {message}", highlight=False)


@contextmanager
def _admin(s: Settings) -> Iterator[psycopg.Connection[Any]]:
    """The most privileged connection SmartStart has: the embedded cluster's local
    superuser, or the app's own connection to an external server."""
    if s.embedded:
        from smartstart.services.database import cluster_for

        connect(s).close()  # an unreachable server is one line with its fix
        with cluster_for(s).connect(s.db_name) as conn:
            yield conn
    else:
        with connect(s, autocommit=True) as conn:
            yield conn


def _audit(s: Settings, action: str, resource_id: str, **details: Any) -> None:
    with connect(s) as conn:
        audit.record(
            conn, Actor.operator(), action, resource="database", resource_id=resource_id, **details
        )


def _print_sql(lines: Sequence[str]) -> None:
    for line in lines:
        typer.echo(line)


def _external(what: str) -> None:
    err_console.print(
        f"SMARTSTART_DATABASE_URL is set: SmartStart has no superuser on that server. "
        f"Run this SQL as one to {what}:",
        highlight=False,
        soft_wrap=True,
    )


# -- readonly-user -------------------------------------------------------------------------


@app.command("readonly-user")
@handle_errors
def readonly_user(
    name: Annotated[
        str, typer.Argument(help="The role to create (or update), e.g. readonly_user.")
    ],
    password: Annotated[
        str | None,
        typer.Option("--password", help="Its password (default: generated, printed once)."),
    ] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Create the guide's read-only user (SELECT on every table, now and later). Idempotent.

    LOGIN, CONNECT, USAGE on public, SELECT on every table and sequence, default privileges
    for later tables, and every transaction read-only."""
    s = settings()
    security.check_role_name(name)
    if password is not None:
        passwords.validate(password)
    with _admin(s) as conn:
        exists = security.role(conn, name) is not None
        chosen = password if (password is not None or exists) else security.generate_password()
        if dry_run and chosen is not None:
            chosen = "…"  # the plan shows where the password goes, never one
        owner = security.schema_owner(conn)
        plan = security.plan_readonly_user(
            conn,
            name=name,
            database=s.db_name,
            password=chosen,
            refuse=[s.db_user, *([owner] if owner else []), "postgres"],
        )
        if dry_run:
            _print_sql(security.show(conn, plan.statements))
            _say("nothing changed (dry run)")
            return
        try:
            security.apply(conn, plan.statements)
        except psycopg.errors.InsufficientPrivilege as e:
            raise SmartStartError(
                f"{s.db_user!r} may not create roles or grant on that server ({e.sqlstate}: "
                f"{str(e).splitlines()[0]})",
                "run `smartstart security readonly-user NAME --dry-run` and execute its SQL "
                "as a superuser",
            ) from None
    _audit(s, "security.readonly_user", name, created=not exists, password_set=plan.sets_password)
    _say(f"{'updated' if exists else 'created'} the read-only role {name!r} on {s.db_name}")
    if chosen is not None and not exists and password is None:
        console.print(f"  password for {name}: {chosen}  (shown once)", highlight=False)
    elif exists and password is None:
        _say("its password is unchanged (give --password to set one)")


# -- harden -------------------------------------------------------------------------------


@app.command()
@handle_errors
def harden(
    owner: Annotated[
        str, typer.Option("--owner", help="The schema-owner role (NOLOGIN) that runs migrations.")
    ] = security.DEFAULT_OWNER,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Give the schema to an owner role that runs migrations; the app's role keeps DML only."""
    s = settings()
    security.check_role_name(owner, "owner role name")
    with _admin(s) as conn:
        plan = security.plan_harden(conn, database=s.db_name, app=s.db_user, owner=owner)
        lines = security.show(conn, plan.statements)
        if not s.embedded:
            _external(f"harden {s.db_name}")
            _print_sql(lines)
            return
        if dry_run:
            _print_sql(lines)
            _say(f"would move {plan.objects} objects to {owner!r}; nothing changed (dry run)")
            return
    confirm(
        f"Make {owner!r} own {s.db_name} and its {plan.objects} objects, and leave "
        f"{s.db_user!r} with SELECT/INSERT/UPDATE/DELETE only?",
        yes,
    )
    with _admin(s) as conn:
        # Planned again inside the change: what exists now is what moves.
        plan = security.plan_harden(conn, database=s.db_name, app=s.db_user, owner=owner)
        security.apply(conn, plan.statements)
        hardened = security.is_hardened(conn, s.db_user)
    if not hardened:
        raise SmartStartError(f"{s.db_user!r} can still create in schema public after harden")
    _audit(s, "security.harden", s.db_name, owner=owner, objects=plan.objects)
    _say(
        f"{owner!r} owns {s.db_name}, its schema and {plan.objects} objects; {s.db_user!r} "
        "reads and writes rows only"
    )
    _say(
        "migrations (`smartstart db migrate`, `smartstart up`) now run as "
        f"{owner!r} through the local superuser"
    )


# -- audit-logging ------------------------------------------------------------------------


class LoggingAction(StrEnum):
    on = "on"
    off = "off"
    status = "status"


@app.command("audit-logging")
@handle_errors
def audit_logging(
    action: Annotated[LoggingAction, typer.Argument(help="on, off or status.")],
    min_duration: Annotated[
        int,
        typer.Option(
            "--min-duration",
            metavar="MS",
            help="With on: log statements running this long (ms; 0 all, -1 none).",
        ),
    ] = 1000,
    statements: Annotated[
        str,
        typer.Option("--statements", help="With on: log_statement (none, ddl, mod, all)."),
    ] = "all",
    as_json: JsonOpt = False,
) -> None:
    """Turn the guide's audit logging on or off (log_statement, log_min_duration_statement).

    ALTER SYSTEM and a reload through the local superuser; for an external server, the SQL
    to run there as a superuser."""
    s = settings()
    if action is LoggingAction.status:
        with connect(s, autocommit=True) as conn:
            _show_logging(security.audit_logging_status(conn), as_json)
        return
    plan = security.plan_audit_logging(
        action is LoggingAction.on, min_duration_ms=min_duration, statements=statements
    )
    if not s.embedded:
        with connect(s, autocommit=True) as conn:
            _external(f"turn audit logging {action.value}")
            _print_sql(security.show(conn, plan))
        return
    with _admin(s) as conn:
        security.apply_system(conn, plan)
        current = security.wait_reloaded(conn, security.expected_settings(conn))
    _audit(
        s,
        "security.audit_logging",
        s.db_name,
        state=action.value,
        settings={c.name: c.setting for c in current},
    )
    _show_logging(current, as_json)


def _show_logging(current: list[security.LogSetting], as_json: bool) -> None:
    if as_json:
        print_json([vars(c) for c in current])
        return
    for c in current:
        unit = f" {c.unit}" if c.unit else ""
        console.print(f"{c.name} = {c.setting}{unit}  ({c.source})", highlight=False)


# -- check ----------------------------------------------------------------------------------


@app.command()
@handle_errors
def check(as_json: JsonOpt = False) -> None:
    """The security advisor: each finding OK/WARN/CRIT with the fix; exit 2 on a CRIT."""
    s = settings()
    connect(s).close()
    results = advisor.run(s)
    if as_json:
        print_json({"items": [r.as_json() for r in results], "next_cursor": None})
    else:
        _show_findings(results)
    code = advisor.exit_code(results)
    if code:
        sys.stdout.flush()
        raise typer.Exit(code)


_STYLE = {"OK": "green", "WARN": "yellow", "CRIT": "bold red"}


def _show_findings(results: list[Any]) -> None:
    """One line per finding; under a finding that is not OK, its rows and the fix."""
    for r in results:
        state = r.state.name
        style = _STYLE.get(state, "magenta")
        console.print(f"[{style}]{state:>7}[/]  {r.name}: {r.title}", highlight=False)
        if state == "OK":
            continue
        for d in r.details[:10]:
            console.print(
                "           " + ", ".join(f"{k}={v}" for k, v in d.items()),
                highlight=False,
                soft_wrap=True,
            )
        if r.recommendation or r.reason:
            console.print(
                f"           fix: {r.recommendation or r.reason}", highlight=False, soft_wrap=True
            )
