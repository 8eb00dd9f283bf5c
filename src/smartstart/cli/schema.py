"""`smartstart db inspect` and `db diff`: the guide's `prisma db pull`, and what differs."""

from __future__ import annotations

from typing import Annotated

import typer

from smartstart.cli.common import JsonOpt, console, err_console, handle_errors, print_json, settings
from smartstart.db.engine import connect


def inspect(as_json: JsonOpt = False) -> None:
    """Print the live schema: tables and columns, indexes, constraints, triggers, functions."""
    from smartstart.pg.inspect import inspect as read_schema

    s = settings()
    with connect(s) as conn:
        schema = read_schema(conn)
    if as_json:
        print_json(schema)
        return
    by_table: dict[str, list[str]] = {}
    for i in schema["indexes"]:
        by_table.setdefault(i["table"], []).append(
            f"  index {i['name']}: {i['definition'].split(' USING ', 1)[-1]}"
            + ("" if i["valid"] else "  (INVALID)")
        )
    for k in schema["constraints"]:
        by_table.setdefault(k["table"], []).append(f"  {k['type']} {k['name']}: {k['definition']}")
    for t in schema["triggers"]:
        by_table.setdefault(t["table"], []).append(
            f"  trigger {t['name']}" + ("" if t["enabled"] else " (DISABLED)")
        )
    for table in schema["tables"]:
        console.print(
            f"[bold]{table['kind']} {table['name']}[/] (owner {table['owner']}, "
            f"~{table['rows_estimate']} rows)",
            highlight=False,
        )
        for c in table["columns"]:
            default = f" default {c['default']}" if c["default"] is not None else ""
            null = "" if c["nullable"] else " not null"
            console.print(f"  {c['name']} {c['type']}{null}{default}", highlight=False)
        for line in by_table.get(table["name"], []):
            console.print(line, highlight=False, soft_wrap=True)
    if schema["functions"]:
        console.print("[bold]functions[/]", highlight=False)
        for f in schema["functions"]:
            path = f"search_path={f['search_path']}" if f["search_path"] else "search_path not set"
            definer = ", security definer" if f["security_definer"] else ""
            console.print(
                f"  {f['name']} returns {f['returns']} ({f['language']}, {path}{definer})",
                highlight=False,
            )
    if schema["extensions"]:
        console.print(
            "[bold]extensions[/] "
            + ", ".join(f"{e['name']} {e['version']}" for e in schema["extensions"]),
            highlight=False,
        )


def diff(
    as_sql: Annotated[
        bool, typer.Option("--sql", help="Print SQL that makes the database match the models.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what differs between the live database and the models, each with its side.

    Exit status 1 when something differs (as `db check`)."""
    from smartstart.db import migrate, schemadiff

    s = settings()
    connect(s).close()
    url = s.sqlalchemy_url()
    current, head = migrate.current_revision(url), migrate.head_revision()
    found = schemadiff.differences(url, current, head)
    if current != head:
        err_console.print(
            f"the database is at {current or 'base (no migrations)'}, head is {head}: "
            "`smartstart db migrate` is the way there; "
            + (
                "the differences below are measured against the models"
                if current is not None
                else "nothing to compare before the first migration"
            ),
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        print_json({"current": current, "head": head, "differences": found})
    elif as_sql:
        typer.echo("-- smartstart db diff: SQL that makes the database match the models")
        for d in found:
            typer.echo(f"\n-- {d['description']}\n{d['sql']}")
    else:
        for d in found:
            typer.echo(d["description"])
        if not found:
            typer.echo("no differences between the database and the models")
    if found or current != head:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `inspect` and `diff` to the `db` group."""
    app.command("inspect")(handle_errors(inspect))
    app.command("diff")(handle_errors(diff))
