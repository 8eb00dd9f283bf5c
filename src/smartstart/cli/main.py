"""`smartstart`: the platform and its database operations, one command line."""

from __future__ import annotations

import importlib
from typing import Annotated, Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from smartstart import __version__


class Lazy(NamedTuple):
    """A root command or group: the module that makes it, and the help the root lists."""

    module: str  # under smartstart.cli: a group's exposes `app`; a command's `register(app)`
    help: str
    group: bool


def _command(module: str, help: str) -> Lazy:
    return Lazy(module, help, group=False)


def _group(help: str, module: str) -> Lazy:
    return Lazy(module, help, group=True)


# What the root lists, in order, with the help its --help shows: a module is imported when
# one of its commands is run or completed, not to list it, so that `smartstart --help` and
# any one command start without importing all of them. tests/cli/test_lazy_commands.py
# checks each help here against the real one.
ROOT: dict[str, Lazy] = {
    "up": _command(
        "services",
        "Start everything: PostgreSQL (initialised on first run), migrations, seed data,"
        " the Brain.",
    ),
    "down": _command("services", "Stop the Brain and the embedded PostgreSQL."),
    "restart": _command(
        "services",
        "Stop and start everything again (the Brain comes back detached, on its address).",
    ),
    "status": _command("services", "State, pid, port and URL of each service."),
    "logs": _command(
        "logs", "Show the PostgreSQL and Brain logs (under $SMARTSTART_HOME/logs), filtered."
    ),
    "serve": _command(
        "services",
        "Serve the Brain in the foreground (database must already be up and migrated).",
    ),
    "db": _group("The database: server, connections, migrations, seed data, reset.", "db"),
    "auth": _group("Sign-in throttles and sessions.", "auth"),
    "users": _group(
        "User accounts: list, show, create, update, status, passwords, XP, delete.", "users"
    ),
    "rbac": _group("Roles, permissions, grants and role assignments (RBAC).", "rbac"),
    "journey": _group("Onboarding journeys: stages, users' progress, XP awards.", "journey"),
    "audit": _group("The audit log: who did what, to what, when.", "audit"),
    "security": _group(
        "Security operations: a read-only user, hardening, audit logging, an advisor.",
        "security",
    ),
    "analytics": _group(
        "Analytics: registrations, roles, XP, journey funnel, activity and status (UTC days).",
        "analytics",
    ),
    "cleanup": _group(
        "Delete old audit rows and dead sessions, mark inactive users INACTIVE.", "cleanup"
    ),
    "doctor": _command(
        "doctor",
        "Diagnose the guide's Troubleshooting problems: each finding, its evidence and the fix.",
    ),
}


def _load(name: str) -> Any:
    """The real command or group called name (importing its module)."""
    lazy = ROOT[name]
    module = importlib.import_module(f"smartstart.cli.{lazy.module}")
    if lazy.group:
        group = typer.main.get_group(module.app)
        group.name = name
        return group
    holder = typer.Typer()
    module.register(holder)
    return typer.main.get_group(holder).commands[name]


class LazyCommands(TyperGroup):
    """The root command: imports a command's module only when that command is run or completed."""

    _listing = False  # formatting the root's help or completing a command name

    def list_commands(self, ctx: Any) -> list[str]:
        own = super().list_commands(ctx)
        return own + [name for name in ROOT if name not in own]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        lazy = ROOT.get(cmd_name)
        if lazy is None:
            return None
        if self._listing:
            stub = TyperGroup if lazy.group else TyperCommand
            return stub(name=cmd_name, help=lazy.help)
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
