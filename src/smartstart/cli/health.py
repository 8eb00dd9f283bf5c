"""`smartstart db health`: the database's health checks, judged, with the fix for each."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from smartstart import health
from smartstart.cli.common import JsonOpt, console, handle_errors, print_json, print_table, settings
from smartstart.db.engine import connect

_STYLE = {
    health.State.OK: "green",
    health.State.WARN: "yellow",
    health.State.CRIT: "bold red",
    health.State.ERROR: "magenta",
    health.State.TIMEOUT: "magenta",
}

CheckOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--check",
        metavar="NAME",
        help="Run only this check (repeatable): " + ", ".join(c.name for c in health.CHECKS),
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=0.05,
        max=3600,
        help="Statement timeout of each check (default: health.toml's timeout, else 2).",
    ),
]


def _value(result: health.CheckResult) -> str:
    if result.metric is None:
        return ""
    number = result.metric
    if result.unit == "bytes":
        for unit in ("B", "kB", "MB", "GB", "TB"):
            if abs(number) < 1024 or unit == "TB":
                return f"{number:,.0f} {unit}" if unit == "B" else f"{number:,.1f} {unit}"
            number /= 1024
    text = f"{number:,.0f}" if number == int(number) else f"{number:,.2f}"
    return f"{text} {result.unit}"


def health_(as_json: JsonOpt = False, check: CheckOpt = None, timeout: TimeoutOpt = None) -> None:
    """Check the database's health: each check's numbers, an OK/WARN/CRIT verdict and the fix.

    Exit status: 0 all OK, 1 a WARN (or a check that failed or timed out), 2 a CRIT.
    """
    s = settings()
    checks = health.select(check)
    config = health.load_config(s.home)
    if timeout is not None:
        config = replace(config, timeout=timeout)
    # One connection first: an unreachable server is one actionable line, not a row of
    # identical errors, one per check.
    connect(s).close()
    results = health.run(s, checks, config)
    if as_json:
        print_json({"items": [r.as_json() for r in results], "next_cursor": None})
    else:
        _show(results, detailed=bool(check))
    raise typer.Exit(health.worst(results).exit_code)


def _show(results: list[health.CheckResult], detailed: bool) -> None:
    table = [
        {
            "check": r.name,
            "state": r.state.name,
            "value": _value(r),
            "recommendation": r.recommendation or r.reason or "",
        }
        for r in results
    ]
    print_table(table, ["check", "state", "value", "recommendation"])
    if detailed:
        for r in results:
            # Rows of one shape per table (connections: the limits, then the groups).
            shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
            for d in r.details:
                shapes.setdefault(tuple(d), []).append(dict(d))
            for i, same in enumerate(shapes.values()):
                print_table(same, title=r.title if i == 0 else None)
    worst = health.worst(results)
    console.print(f"[{_STYLE[worst]}]{worst.name}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `health` to the `db` group."""
    app.command("health")(handle_errors(health_))
