"""`smartstart`: the platform and its database operations, one command line."""

from __future__ import annotations

import importlib

import typer

from smartstart.cli import db, services

app = typer.Typer(
    name="smartstart",
    help="SmartStart: run the platform and operate its PostgreSQL database.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
services.register(app)
app.add_typer(db.app, name="db")

# Command groups, by module under smartstart.cli; each exposes a Typer `app`.
GROUPS: tuple[str, ...] = ("auth", "users", "rbac", "journey", "audit")
for _name in GROUPS:
    app.add_typer(importlib.import_module(f"smartstart.cli.{_name}").app, name=_name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
