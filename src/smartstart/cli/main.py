"""`smartstart`: the platform and its database operations, one command line."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from smartstart import __version__
from smartstart.cli import db, health, services

app = typer.Typer(
    name="smartstart",
    help="SmartStart: run the platform and operate its PostgreSQL database.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    # Every subcommand's context inherits these: `-h` works wherever `--help` does.
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"smartstart {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """SmartStart: run the platform and operate its PostgreSQL database."""


services.register(app)
health.register(db.app)
app.add_typer(db.app, name="db")

# Command groups, by module under smartstart.cli; each exposes a Typer `app`.
GROUPS: tuple[str, ...] = ("auth", "users", "rbac", "journey", "audit")
for _name in GROUPS:
    app.add_typer(importlib.import_module(f"smartstart.cli.{_name}").app, name=_name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
