"""`smartstart`: the platform and its database operations, one command line."""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from smartstart import __version__

# What the root lists, with the help its --help shows: a module is imported when one of its
# commands is run or completed, not to list it, so that `smartstart --help` and any one
# command start without importing all of them. tests/cli/test_lazy_commands.py checks each
# help here against the real one.
# The platform's services (smartstart.cli.services registers them on the root).
COMMANDS: dict[str, str] = {
    "up": (
        "Start everything: PostgreSQL (initialised on first run), migrations, seed data, the Brain."
    ),
    "down": "Stop the Brain and the embedded PostgreSQL.",
    "restart": "Stop and start everything again (the Brain comes back detached, on its address).",
    "status": "State, pid, port and URL of each service.",
    "logs": "Show the PostgreSQL and Brain logs (under $SMARTSTART_HOME/logs).",
    "serve": "Serve the Brain in the foreground (database must already be up and migrated).",
}
# Command groups, by module under smartstart.cli; each exposes a Typer `app`.
GROUPS: dict[str, str] = {
    "db": "The database: server, connections, migrations, seed data, reset.",
    "auth": "Sign-in throttles and sessions.",
    "users": "User accounts: list, show, create, update, status, passwords, XP, delete.",
    "rbac": "Roles, permissions, grants and role assignments (RBAC).",
    "journey": "Onboarding journeys: stages, users' progress, XP awards.",
    "audit": "The audit log: who did what, to what, when.",
}


def _load(name: str) -> Any:
    """The real command or group called name (importing its module)."""
    if name in COMMANDS:
        from smartstart.cli import services

        holder = typer.Typer()
        services.register(holder)
        return typer.main.get_group(holder).commands[name]
    group = typer.main.get_group(importlib.import_module(f"smartstart.cli.{name}").app)
    group.name = name
    return group


class LazyCommands(TyperGroup):
    """The root command: imports a command's module only when that command is run or completed."""

    _listing = False  # formatting the root's help or completing a command name

    def list_commands(self, ctx: Any) -> list[str]:
        own = super().list_commands(ctx)
        return own + [name for name in (*COMMANDS, *GROUPS) if name not in own]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        if self._listing and cmd_name in COMMANDS:
            return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name])
        if self._listing and cmd_name in GROUPS:
            return TyperGroup(name=cmd_name, help=GROUPS[cmd_name])
        if cmd_name not in COMMANDS and cmd_name not in GROUPS:
            return None
        self.commands[cmd_name] = command = _load(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(self, ctx: Any, incomplete: str) -> Any:
        self._listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyCommands,
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


def command_tree() -> Any:
    """The root command with every command loaded: for documentation checks, not start-up."""
    root = typer.main.get_command(app)
    for name in root.list_commands(None):  # type: ignore[attr-defined]
        root.get_command(None, name)  # type: ignore[attr-defined]
    return root


def main() -> None:
    app()


if __name__ == "__main__":
    main()
