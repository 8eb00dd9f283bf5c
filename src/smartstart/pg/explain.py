"""`db explain`: a statement's plan, with timing when analysed, and nothing it wrote kept."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from smartstart.errors import SmartStartError

MAX_SQL_CHARS = 100_000
DEFAULT_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class Explained:
    """A plan as PostgreSQL gives it (FORMAT JSON) and as text, with its timings."""

    plan: dict[str, Any]
    text: tuple[str, ...]
    analyzed: bool
    planning_ms: float | None
    execution_ms: float | None

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "text": list(self.text)}


def check_sql(statement: str) -> str:
    text = statement.strip().rstrip(";").strip()
    if not text:
        raise SmartStartError("no SQL statement given to explain")
    if len(text) > MAX_SQL_CHARS:
        raise SmartStartError(
            f"the statement is {len(text):,} characters long; at most {MAX_SQL_CHARS:,}"
        )
    if "\x00" in text:
        raise SmartStartError("the statement contains a NUL character (\\0)")
    return text


def explain(
    conn: psycopg.Connection[Any],
    statement: str,
    *,
    analyze: bool = False,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Explained:
    """EXPLAIN the one statement, in a transaction that is always rolled back.

    With analyze the statement really runs (a write too), so the rollback is what keeps
    it from changing anything; the extended protocol refuses a second statement
    after a semicolon.
    """
    text = check_sql(statement)
    options = "ANALYZE, BUFFERS, TIMING, " if analyze else ""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise SmartStartError("explain needs a connection outside any transaction")
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        try:
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(timeout_ms)])
            # binary=True: the extended protocol, which takes one statement only (the
            # simple one would run "SELECT 1; COMMIT; DELETE …" whole).
            with conn.cursor() as cur:
                cur.execute(f"EXPLAIN ({options}VERBOSE, FORMAT JSON) {text}", binary=True)
                row = cur.fetchone()
        except psycopg.errors.QueryCanceled:
            raise SmartStartError(
                f"the statement ran past the {timeout_ms / 1000:g} s timeout and was cancelled;"
                " nothing was changed"
            ) from None
        except psycopg.Error as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SmartStartError(f"cannot explain that statement: {first}") from None
        finally:
            conn.rollback()
    finally:
        conn.autocommit = autocommit
    assert row is not None
    doc = row[0]
    top: dict[str, Any] = (json.loads(doc) if isinstance(doc, str) else doc)[0]
    return Explained(
        plan=top,
        text=tuple(render(top["Plan"], analyze)),
        analyzed=analyze,
        planning_ms=top.get("Planning Time"),
        execution_ms=top.get("Execution Time"),
    )


def _node(plan: dict[str, Any], analyze: bool) -> str:
    label = str(plan.get("Node Type", "?"))
    if label == "ModifyTable" and "Operation" in plan:
        label = str(plan["Operation"])  # as the text format says it: Insert, Update, …
    if plan.get("Join Type") and "Join" in label or label == "Nested Loop":
        label = f"{plan.get('Join Type', '')} {label}".strip()
    if "Relation Name" in plan:
        label += f" on {plan.get('Schema', '')}.{plan['Relation Name']}".replace(" on .", " on ")
        if plan.get("Alias") and plan["Alias"] != plan["Relation Name"]:
            label += f" {plan['Alias']}"
    if "Index Name" in plan:
        label += f" using {plan['Index Name']}"
    cost = (
        f"(cost={plan.get('Startup Cost', 0):.2f}..{plan.get('Total Cost', 0):.2f} "
        f"rows={plan.get('Plan Rows', 0)} width={plan.get('Plan Width', 0)})"
    )
    out = f"{label}  {cost}"
    if analyze and "Actual Total Time" in plan:
        out += (
            f" (actual time={plan['Actual Startup Time']:.3f}..{plan['Actual Total Time']:.3f} "
            f"rows={plan.get('Actual Rows', 0)} loops={plan.get('Actual Loops', 1)})"
        )
    elif analyze and plan.get("Actual Loops") == 0:
        out += " (never executed)"
    return out


_CONDITIONS = ("Index Cond", "Recheck Cond", "Hash Cond", "Merge Cond", "Join Filter", "Filter")


def render(plan: dict[str, Any], analyze: bool, depth: int = 0) -> list[str]:
    """The plan tree as indented lines, like EXPLAIN's text format."""
    pad = "  " * depth
    lines = [f"{pad}{'->  ' if depth else ''}{_node(plan, analyze)}"]
    inner = pad + ("      " if depth else "  ")
    for key in _CONDITIONS:
        if key in plan:
            lines.append(f"{inner}{key}: {plan[key]}")
    if analyze and plan.get("Rows Removed by Filter"):
        lines.append(f"{inner}Rows Removed by Filter: {plan['Rows Removed by Filter']}")
    for child in plan.get("Plans", []):
        lines.extend(render(child, analyze, depth + 1))
    return lines
