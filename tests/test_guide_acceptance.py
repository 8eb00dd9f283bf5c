"""The Database Operations Guide's SQL, run verbatim with psql against a seeded SmartStart.

The guide (`$SMARTSTART_GUIDE`, default `docs/spec/database-operations-guide.md`, the
repository's copy of `shared/seed/`) is the specification: its statements must keep working
against `smartstart_db` and give meaningful rows. Four of its monitoring
queries are wrong on PostgreSQL 13+ whatever the schema; they must fail the way
we document (docs/guide-sql.md), and the corrected versions there must work.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from smartstart.config import Settings
from smartstart.db.models import Base
from smartstart.pg.cluster import Cluster
from tests.conftest import DB_PASSWORD, DB_USER, _create_db
from tests.guide import (
    REPO_ROOT,
    Statement,
    clean_heading,
    guide_path,
    load_guide,
    parse_markdown,
    split_statements,
)

# Resolved at import: the autouse `_isolated_env` fixture hides SMARTSTART_* from tests.
GUIDE = guide_path()
CORRECTED_DOC = REPO_ROOT / "docs" / "guide-sql.md"
GUIDE_DB = "smartstart_db"  # the guide names it literally, e.g. pg_database_size('smartstart_db')

# The guide's sections whose SQL is run, in the guide's order. (Data Migration,
# Access Control and Audit Logging change the schema or the server: not here.)
RUN_SECTIONS = (
    "Basic SQL Operations",
    "User Management",
    "RBAC Management",
    "Journey Management",
    "Database Health Checks",
    "Performance Monitoring",
    "Data Cleanup",
    "Security Operations",
    "User Analytics",
    "Journey Analytics",
)

MIXED_CASE_TABLES = {t.lower() for t in Base.metadata.tables if t != t.lower()}

# (section, description comment) -> the error they must fail with, and why.
KNOWN_WRONG: dict[tuple[str, str], tuple[str, str]] = {
    ("Database Health Checks", "Check table sizes"): (
        r'relation "public\.(?P<table>[a-z]+)" does not exist',
        "schemaname||'.'||tablename is not quoted, so \"UserRole\" is looked up as userrole",
    ),
    ("Database Health Checks", "Check slow queries"): (
        r'column "mean_time" does not exist',
        "pg_stat_statements renamed mean_time to mean_exec_time in PostgreSQL 13",
    ),
    ("Performance Monitoring", "Check index usage"): (
        r'column "tablename" does not exist',
        "pg_stat_user_indexes has relname and indexrelname, not tablename and indexname",
    ),
    ("Performance Monitoring", "Check table statistics"): (
        r'column "tablename" does not exist',
        "pg_stat_user_tables has relname, not tablename",
    ),
}


def key(st: Statement) -> tuple[str, str]:
    return (st.section, st.description)


# -- running psql -------------------------------------------------------------------


def psql_binary() -> str:
    found = shutil.which("psql") or "/usr/bin/psql"
    assert Path(found).is_file(), "psql (the PostgreSQL client) is needed for this test"
    return found


@dataclass
class Outcome:
    """What psql did with one statement."""

    statement: Statement
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "ERROR:" not in self.stderr

    @property
    def rows(self) -> list[dict[str, str]]:
        """Result rows (CSV with a header); empty for commands without rows."""
        text = self.stdout.strip()
        if not text or re.fullmatch(r"[A-Z ]+\d*( \d+)?", text):
            return []
        return list(csv.DictReader(io.StringIO(text)))

    @property
    def tag(self) -> str:
        """The command tag psql prints for commands without rows, e.g. `UPDATE 1`."""
        text = self.stdout.strip()
        return text if re.fullmatch(r"[A-Z ]+\d*( \d+)?", text) else ""

    def describe(self) -> str:
        return f"{self.statement.label()}\n{self.statement.sql}\n--> {self.stderr.strip()}"


def run_psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    """One psql process for one statement, sent exactly as written (-c does no interpolation)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGCONNECT_TIMEOUT="10", PGAPPNAME="smartstart-guide-acceptance", LC_ALL="C")
    return subprocess.run(
        [psql_binary(), "-X", "-v", "ON_ERROR_STOP=1", "--csv", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The facts the guide's writes should change, read between statements."""

    def one(query: str) -> Any:
        return conn.execute(query).fetchone()

    return {
        "admin_xp": one("SELECT xp FROM \"User\" WHERE email = 'admin@alicesolutionsgroup.com'"),
        "developer": one(
            'SELECT xp, level, reputation FROM "User" '
            "WHERE email = 'developer@alicesolutionsgroup.com'"
        ),
        "admin_profile_setup": one(
            'SELECT ujs.status, ujs."completedAt" IS NOT NULL, js."xpReward" '
            'FROM "UserJourneyState" ujs JOIN "JourneyStage" js ON js.id = ujs."stageId" '
            'JOIN "User" u ON u.id = ujs."userId" '
            "WHERE u.email = 'admin@alicesolutionsgroup.com' AND js.name = 'Profile Setup'"
        ),
        "newuser_roles": conn.execute(
            'SELECT r.name FROM "UserRole" ur JOIN "Role" r ON r.id = ur."roleId" '
            'JOIN "User" u ON u.id = ur."userId" WHERE u.email = \'newuser@example.com\''
        ).fetchall(),
        "stages": [r[0] for r in conn.execute('SELECT name FROM "JourneyStage"').fetchall()],
        "users": one('SELECT count(*) FROM "User"')[0],
    }


def guide_db_url(cluster: Cluster, dbname: str = GUIDE_DB) -> str:
    return f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{cluster.port}/{dbname}"


@pytest.fixture(scope="module")
def guide_run(pg_cluster: Cluster, seeded_template: str) -> Iterator[list[Outcome]]:
    """smartstart_db recreated from the seeded template, then the guide's SQL run in order."""
    statements = load_guide(GUIDE).statements(sections=RUN_SECTIONS)
    _create_db(pg_cluster, GUIDE_DB, seeded_template)
    url = guide_db_url(pg_cluster)
    outcomes: list[Outcome] = []
    try:
        with psycopg.connect(url, autocommit=True) as probe:
            for st in statements:
                before = snapshot(probe)
                proc = run_psql(url, st.sql)
                outcomes.append(
                    Outcome(st, proc.returncode, proc.stdout, proc.stderr, before, snapshot(probe))
                )
        yield outcomes
    finally:
        # Leave smartstart_db as the cluster fixture made it: empty, owned by the app user.
        _create_db(pg_cluster, GUIDE_DB)


def find(outcomes: list[Outcome], section: str, description: str) -> Outcome:
    hits = [o for o in outcomes if key(o.statement) == (section, description)]
    assert len(hits) == 1, f"expected one statement '{description}' in {section}, found {len(hits)}"
    return hits[0]


# -- the guide, verbatim --------------------------------------------------------------


def test_guide_sections_are_all_there() -> None:
    doc = load_guide(GUIDE)
    present = doc.sections()
    missing = [s for s in RUN_SECTIONS if s not in present]
    assert not missing, f"sections not found in {GUIDE}: {missing}"
    statements = doc.statements(sections=RUN_SECTIONS)
    for section in RUN_SECTIONS:
        assert any(st.section == section for st in statements), f"no SQL in {section}"
    for section, description in KNOWN_WRONG:
        assert any(key(st) == (section, description) for st in statements), (
            f"the known-wrong statement '{description}' ({section}) is no longer in the guide: "
            "update KNOWN_WRONG and docs/guide-sql.md"
        )


def test_guide_statements_run_in_order(guide_run: list[Outcome]) -> None:
    sections = [o.statement.section for o in guide_run]
    order = [s for s in RUN_SECTIONS if s in sections]
    assert list(dict.fromkeys(sections)) == order == list(RUN_SECTIONS)
    assert [o.statement.line for o in guide_run] == sorted(o.statement.line for o in guide_run)


def test_every_guide_statement_succeeds(guide_run: list[Outcome]) -> None:
    failed = [o for o in guide_run if not o.ok and key(o.statement) not in KNOWN_WRONG]
    assert not failed, "guide statements that fail:\n\n" + "\n\n".join(o.describe() for o in failed)


def test_known_wrong_statements_fail_as_documented(guide_run: list[Outcome]) -> None:
    problems = []
    for (section, description), (pattern, why) in KNOWN_WRONG.items():
        outcome = find(guide_run, section, description)
        if outcome.ok:
            problems.append(
                f"'{description}' ({section}) now SUCCEEDS, but it is documented as wrong "
                f"({why}): remove it from KNOWN_WRONG and fix docs/guide-sql.md"
            )
            continue
        match = re.search(pattern, outcome.stderr)
        if not match:
            problems.append(f"'{description}' fails differently than documented:\n{outcome.stderr}")
        elif "table" in match.groupdict():
            assert match["table"] in MIXED_CASE_TABLES, outcome.stderr
    assert not problems, "\n".join(problems)


def test_basic_operations(guide_run: list[Outcome]) -> None:
    section = "Basic SQL Operations"
    assert find(guide_run, section, "Show current database").rows == [
        {"current_database": GUIDE_DB}
    ]
    assert find(guide_run, section, "Show current user").rows == [{"current_user": DB_USER}]
    tables = {r["Name"] for r in find(guide_run, section, "List all tables").rows}
    assert set(Base.metadata.tables) <= tables
    columns = {r["Column"] for r in find(guide_run, section, "Describe table structure").rows}
    assert {"id", "email", "role", "level", "xp", "createdAt", "updatedAt"} <= columns
    assert GUIDE_DB in {r["Name"] for r in find(guide_run, section, "List all databases").rows}
    assert DB_USER in {r["Role name"] for r in find(guide_run, section, "List all users").rows}


def test_user_management(guide_run: list[Outcome]) -> None:
    section = "User Management"
    emails = {r["email"] for r in find(guide_run, section, "View all users").rows}
    assert {"admin@alicesolutionsgroup.com", "developer@alicesolutionsgroup.com"} <= emails
    admin = find(guide_run, section, "Get user by email").rows
    assert len(admin) == 1 and admin[0]["role"] == "SUPER_ADMIN"

    xp = find(guide_run, section, "Update user XP")
    assert xp.tag == "UPDATE 1"
    assert xp.after["developer"] == (1500, "WISE_OWL", 150)

    create = find(guide_run, section, "Create new user")
    assert create.tag == "INSERT 0 1"
    assert create.after["newuser_roles"] == [("MEMBER",)]
    assert create.after["users"] == create.before["users"] + 1


def test_rbac_management(guide_run: list[Outcome]) -> None:
    section = "RBAC Management"
    roles = {r["name"] for r in find(guide_run, section, "View all roles").rows}
    assert {"SUPER_ADMIN", "ADMIN", "MEMBER", "GUEST"} <= roles
    assert find(guide_run, section, "View all permissions").rows
    perms = find(guide_run, section, "Check user permissions").rows
    assert perms, "the admin has no permissions"
    assert {r["email"] for r in perms} == {"admin@alicesolutionsgroup.com"}
    assert all(r["permission"] == f"{r['resource']}:{r['action']}" for r in perms)

    # The user created just before already has MEMBER: assigning it again is a no-op.
    assign = find(guide_run, section, "Assign role to user")
    assert assign.tag == "INSERT 0 0"
    assert assign.after["newuser_roles"] == [("MEMBER",)]


def test_journey_management(guide_run: list[Outcome]) -> None:
    section = "Journey Management"
    stages = find(guide_run, section, "View journey stages").rows
    assert "Profile Setup" in {r["name"] for r in stages}
    assert [int(r["order"]) for r in stages] == sorted(int(r["order"]) for r in stages)
    progress = find(guide_run, section, "Check user journey progress").rows
    assert {r["email"] for r in progress} >= {"admin@alicesolutionsgroup.com"}

    update = find(guide_run, section, "Update journey stage")
    assert update.tag == "UPDATE 1"
    status, _, reward = update.before["admin_profile_setup"]
    assert status != "COMPLETED", "the seed must leave the admin's Profile Setup open"
    assert reward > 0
    assert update.after["admin_profile_setup"] == ("COMPLETED", True, reward)
    assert update.after["admin_xp"][0] == update.before["admin_xp"][0] + reward


def test_health_and_performance(guide_run: list[Outcome]) -> None:
    size = find(guide_run, "Database Health Checks", "Check database size").rows
    assert len(size) == 1 and re.fullmatch(r"\d+ (bytes|kB|MB|GB)", size[0]["pg_size_pretty"])
    active = find(guide_run, "Database Health Checks", "Check active connections").rows
    assert int(active[0]["active_connections"]) >= 1  # at least the probe connection


def test_cleanup_and_security(guide_run: list[Outcome]) -> None:
    assert find(guide_run, "Data Cleanup", "Clean up inactive users").tag.startswith("UPDATE ")
    password = find(
        guide_run, "Security Operations", "Change user password (hash with bcrypt first)"
    )
    assert password.tag == "UPDATE 1"
    assert find(guide_run, "Security Operations", "Revoke user access").tag == "UPDATE 0"
    perms = find(guide_run, "Security Operations", "Check user permissions").rows
    assert perms and {r["email"] for r in perms} == {"admin@alicesolutionsgroup.com"}


def test_data_analysis(guide_run: list[Outcome]) -> None:
    users = guide_run[-1].after["users"]
    trends = find(guide_run, "User Analytics", "User registration trends").rows
    assert sum(int(r["new_users"]) for r in trends) == users

    roles = find(guide_run, "User Analytics", "Role distribution").rows
    assert roles and sum(int(r["count"]) for r in roles) == users
    assert {"SUPER_ADMIN", "DEVELOPER", "MEMBER"} <= {r["role"] for r in roles}

    xp = find(guide_run, "User Analytics", "XP distribution").rows
    assert xp and sum(int(r["users"]) for r in xp) == users
    assert "1000+" in {r["xp_range"] for r in xp}  # the developer, after the guide's update

    rates = find(guide_run, "Journey Analytics", "Journey completion rates").rows
    stages = guide_run[-1].after["stages"]
    assert sorted(r["stage"] for r in rates) == sorted(stages), "every stage must appear"
    empty = [r["stage"] for r in rates if r["completion_rate"] == ""]
    assert not empty, f"stages without a completion rate: {empty}"


# -- the corrected queries of docs/guide-sql.md ----------------------------------------

# Section of docs/guide-sql.md -> strings its query's output must contain.
CORRECTED_EXPECT = {
    "Table sizes": ["UserRole", "User", "UserJourneyState", "audit_log"],
    "Slow queries": ["mean_exec_time"],
    "Index usage": ["User_xp_id_idx", "UserRole_pkey"],
    "Table statistics": ["UserRole", "live_tuples"],
    "Journey completion rates": ["Profile Setup", "completion_rate"],
}


def corrected_statements() -> list[Statement]:
    return parse_markdown(CORRECTED_DOC.read_text(encoding="utf-8"), CORRECTED_DOC).statements()


def test_corrected_queries_cover_the_four_wrong_ones() -> None:
    sections = {st.section for st in corrected_statements()}
    for wanted in CORRECTED_EXPECT:
        assert any(s.startswith(wanted) for s in sections), f"no corrected SQL for {wanted}"


def test_corrected_queries_run_and_return_rows(seeded_settings: Settings) -> None:
    url = seeded_settings.url_for()
    with psycopg.connect(url, autocommit=True) as c:
        # Some activity for the statistics views to report.
        c.execute('SELECT count(*) FROM "User" WHERE xp > 10').fetchall()
        c.execute('SELECT * FROM "UserRole" WHERE "roleId" = \'x\'').fetchall()
    statements = corrected_statements()
    assert statements
    problems = []
    for st in statements:
        proc = run_psql(url, st.sql)
        outcome = Outcome(st, proc.returncode, proc.stdout, proc.stderr)
        if not outcome.ok:
            problems.append(outcome.describe())
            continue
        if not outcome.rows:
            problems.append(f"{st.label()} returned no rows")
            continue
        for section, needles in CORRECTED_EXPECT.items():
            if st.section.startswith(section):
                missing = [n for n in needles if n not in outcome.stdout]
                if missing:
                    problems.append(f"{st.label()}: {missing} not in\n{outcome.stdout}")
    assert not problems, "\n\n".join(problems)


def test_corrected_table_sizes_list_every_table(seeded_settings: Settings) -> None:
    url = seeded_settings.url_for()
    for st in corrected_statements():
        if st.section.startswith("Table sizes"):
            proc = run_psql(url, st.sql)
            assert proc.returncode == 0, proc.stderr
            listed = {r["tablename"] for r in csv.DictReader(io.StringIO(proc.stdout))}
            assert set(Base.metadata.tables) <= listed, st.label()


# -- the parser ------------------------------------------------------------------------


def test_semicolons_in_comments_and_literals_do_not_split() -> None:
    text = (
        "-- first; with a semicolon\n"
        "SELECT 'a;b', \"odd;name\", E'it\\'s;' FROM t; -- Log queries > 1 second; really\n"
        "/* block; /* nested; */ still comment */\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;\n"
        "SELECT $$;$$, 'it''s; fine';\n"
    )
    sts = split_statements(text)
    assert [s.sql for s in sts] == [
        "SELECT 'a;b', \"odd;name\", E'it\\'s;' FROM t;",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;",
        "SELECT $$;$$, 'it''s; fine';",
    ]
    assert sts[0].description == "first; with a semicolon"
    assert sts[0].trailing_comment == "Log queries > 1 second; really"
    assert sts[1].description == "block; /* nested; */ still comment"
    assert [s.line for s in sts] == [2, 4, 5]


def test_meta_commands_are_one_line_each() -> None:
    text = '-- List\n\\dt\n\\d "User"\n\\l\nSELECT 1;\n\\du\n\\q\n'
    sts = split_statements(text)
    assert [(s.kind, s.sql) for s in sts] == [
        ("meta", "\\dt"),
        ("meta", '\\d "User"'),
        ("meta", "\\l"),
        ("sql", "SELECT 1;"),
        ("meta", "\\du"),
        ("meta", "\\q"),
    ]
    assert sts[0].description == "List"


def test_unterminated_last_statement_is_kept() -> None:
    sts = split_statements("SELECT 1;\nSELECT $1 + a$b\n")
    assert [s.sql for s in sts] == ["SELECT 1;", "SELECT $1 + a$b"]
    assert [s.terminated for s in sts] == [True, False]


def test_markdown_sections_and_languages() -> None:
    doc = parse_markdown(
        "# Title\n## 📊 Data\n### **3. Basic SQL Operations**\n"
        "```sql\nSELECT 1;\n```\n"
        "### **Backup**\n```bash\npg_dump x; echo done\n```\n"
        "#### **1. Deep**\n~~~sql\nSELECT 2;\n~~~\n"
    )
    assert doc.sections() == ["Basic SQL Operations", "Backup", "Deep"]
    sts = doc.statements()
    assert [(s.section, s.sql, s.line) for s in sts] == [
        ("Basic SQL Operations", "SELECT 1;", 5),
        ("Deep", "SELECT 2;", 13),
    ]
    assert sts[1].headings == ("Title", "Data", "Backup", "Deep")
    assert [b.language for b in doc.code_blocks()] == ["sql", "bash", "sql"]
    assert doc.statements(sections={"Deep"})[0].sql == "SELECT 2;"
    assert clean_heading("**🚀 1. Start/Stop Database**") == "Start/Stop Database"
