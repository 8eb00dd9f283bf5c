"""The OpenAPI contract as a real integrator meets it: a client generated from /openapi.json
(openapi-python-client) calls every operation once against a running Brain and parses
every answer."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.domain import statshistory
from tests.api.conftest import served
from tests.conftest import TEST_ADMIN_PASSWORD
from tests.test_queries import sleeping

ADMIN = "admin@alicesolutionsgroup.com"
PASSPHRASE = "a perfectly fine passphrase"
PACKAGE = "smartstart_generated_client"


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    """The app's /openapi.json, as served (no database needed to read it)."""
    return dict(TestClient(create_app(Settings())).get("/openapi.json").json())


@pytest.fixture(scope="session")
def generated(
    spec: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModuleType, str]]:
    """A client package generated from the spec (once per session, offline); its output."""
    import json

    root = tmp_path_factory.mktemp("client")
    (root / "openapi.json").write_text(json.dumps(spec))
    (root / "config.yaml").write_text("post_hooks: []\n")  # no formatter run: faster
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("openapi-python-client")),
            "generate",
            "--path",
            str(root / "openapi.json"),
            "--output-path",
            str(root / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(root / "config.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE), output
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def brain(seeded_settings: Settings) -> Iterator[str]:
    """A Brain served by uvicorn on a free port (a real socket); its base URL."""
    with served(create_app(seeded_settings)) as url:
        yield url


def test_the_generator_understands_every_operation(generated: tuple[ModuleType, str]) -> None:
    # A schema it cannot place (two models of one name, a dangling reference) is a
    # warning and a response type dropped from the client.
    _, output = generated
    assert "WARNING" not in output, output


def test_the_generated_client_calls_every_operation(
    generated: tuple[ModuleType, str], spec: dict[str, Any], brain: str, seeded_settings: Settings
) -> None:
    client_mod = importlib.import_module(f"{PACKAGE}.client")
    m = importlib.import_module(f"{PACKAGE}.models")
    called: set[str] = set()

    def call(tag: str, op: str, expect: type | None, *args: Any, **kwargs: Any) -> Any:
        """Call one operation; its parsed body is of the type `expect` (None: no body)."""
        module = importlib.import_module(f"{PACKAGE}.api.{tag}.{op}")
        response = module.sync_detailed(*args, **kwargs)
        assert 200 <= response.status_code < 300, (op, response.status_code, response.content)
        if expect is not None:
            assert isinstance(response.parsed, expect), (op, response.parsed)
        called.add(op)
        return response.parsed

    public = client_mod.Client(base_url=brain, raise_on_unexpected_status=True)

    def signed_in(login: Any) -> Any:
        return client_mod.AuthenticatedClient(
            base_url=brain, token=login.token, raise_on_unexpected_status=True
        )

    # health
    assert call("health", "health_live", m.Liveness, client=public).status == "ok"
    ready = call("health", "health_ready", m.Readiness, client=public)
    assert ready.status == m.ReadinessStatus.READY
    assert "smartstart_http_requests" in call("health", "metrics_get", str, client=public)

    # auth
    login = call(
        "auth",
        "auth_login",
        m.LoginResponse,
        client=public,
        body=m.LoginRequest(identifier=ADMIN, password=TEST_ADMIN_PASSWORD),
    )
    admin = signed_in(login)
    other_session = public_login(call, public, m, ADMIN, TEST_ADMIN_PASSWORD)
    me = call("auth", "auth_me", m.MeResponse, client=admin)
    assert all(isinstance(p, m.HeldPermission) for p in me.permissions)
    sessions = call("auth", "sessions_list", m.SessionPage, client=admin)
    assert other_session.session_id in {s.id for s in sessions.items}
    call("auth", "sessions_revoke", None, other_session.session_id, client=admin)
    call("auth", "auth_clear_throttle", None, client=admin, email=ADMIN)

    # users
    call("users", "users_me_get", m.UserAccount, client=admin)
    call(
        "users", "users_me_update", m.UserAccount, client=admin, body=m.ProfileUpdate(name="Admin")
    )
    page = call(
        "users", "users_list", m.UserAccountPage, client=admin, status=m.UserStatus("ACTIVE")
    )
    # The response's enums are the query's: one type for both.
    assert {type(u.status) for u in page.items} == {m.UserStatus}
    assert {type(u.level) for u in page.items} == {m.UserLevel}
    body = m.UserCreate(email="generated@example.com", username="generated", password=PASSPHRASE)
    user = call("users", "users_create", m.UserAccount, client=admin, body=body)
    uid = user.id
    call("users", "users_get", m.UserAccount, uid, client=admin)
    call("users", "users_update", m.UserAccount, uid, client=admin, body=m.UserUpdate(name="G"))
    for verb in ("suspend", "deactivate", "activate"):
        call("users", f"users_{verb}", m.UserAccount, uid, client=admin)
    call(
        "users",
        "users_set_password",
        None,
        uid,
        client=admin,
        body=m.PasswordSet(password=PASSPHRASE + " again"),
    )
    call("users", "users_add_xp", m.UserAccount, uid, client=admin, body=m.CounterAdd(5, "r"))
    call("users", "users_set_xp", m.UserAccount, uid, client=admin, body=m.XpSet(xp=7))
    call(
        "users", "users_add_reputation", m.UserAccount, uid, client=admin, body=m.CounterAdd(2, "r")
    )
    call(
        "users",
        "users_set_reputation",
        m.UserAccount,
        uid,
        client=admin,
        body=m.ReputationSet(reputation=3),
    )

    # rbac
    check = call(
        "rbac", "authz_check", m.CheckResult, client=admin, user=uid, permission="users:read"
    )
    assert isinstance(check.user.status, m.UserStatus)
    call("rbac", "roles_list", m.RolePage, client=admin)
    role = call("rbac", "roles_create", m.RoleOut, client=admin, body=m.RoleCreate(name="CLIENT"))
    call("rbac", "roles_get", m.RoleOut, role.id, client=admin)
    call("rbac", "roles_update", m.RoleOut, role.id, client=admin, body=m.RoleUpdate(name="GEN"))
    permissions = call("rbac", "permissions_list", m.PermissionPage, client=admin)
    assert all(isinstance(p, m.PermissionOut) for p in permissions.items)
    body = m.PermissionCreate(name="reports:read")
    perm = call("rbac", "permissions_create", m.PermissionOut, client=admin, body=body)
    body = m.PermissionUpdate(description="Reports")
    call("rbac", "permissions_update", m.PermissionOut, perm.id, client=admin, body=body)
    call("rbac", "roles_grant_permission", m.RoleOut, role.id, perm.name, client=admin)
    call("rbac", "roles_revoke_permission", None, role.id, perm.name, client=admin)
    call("rbac", "rbac_matrix", m.Matrix, client=admin)
    call("rbac", "users_assign_role", m.UserRoles, uid, "GEN", client=admin)
    roles = call("rbac", "users_list_roles", m.UserRoles, uid, client=admin)
    assert isinstance(roles.user.status, m.UserStatus)
    call("rbac", "users_list_permissions", m.UserPermissions, uid, client=admin)
    call("rbac", "users_unassign_role", None, uid, "GEN", client=admin)
    call("rbac", "roles_delete", None, role.id, client=admin)
    call("rbac", "permissions_delete", None, perm.id, client=admin)

    # journey
    stages = call("journey", "stages_list", m.StagePage, client=admin, limit=200)
    body = m.StageCreate(name="Generated stage")
    stage = call("journey", "stages_create", m.Stage, client=admin, body=body)
    spare = call("journey", "stages_create", m.Stage, client=admin, body=m.StageCreate(name="Gone"))
    call("journey", "stages_get", m.Stage, stage.id, client=admin)
    body = m.StageUpdate(description="Made by a generated client")
    call("journey", "stages_update", m.Stage, stage.id, client=admin, body=body)
    call("journey", "stages_delete", None, spare.id, client=admin)
    order = [stage.id] + [s.id for s in stages.items if s.active]
    body = m.StageOrder(stage_ids=order)
    call("journey", "stages_reorder", m.StageList, client=admin, body=body)
    start = m.StageAction("start")
    progress = call("journey", "journey_progress", m.Progress, uid, stage.id, start, client=admin)
    assert progress.status == m.StageStatus("IN_PROGRESS")
    assert isinstance(progress.level, m.UserLevel)
    journey = call("journey", "journey_get", m.Journey, uid, client=admin)
    assert {type(s.status) for s in journey.stages} == {m.StageStatus}
    call("journey", "journey_progress_mine", m.Progress, stage.id, start, client=admin)
    call("journey", "journey_get_mine", m.Journey, client=admin)

    # audit
    call("audit", "audit_list", m.AuditPage, client=admin, limit=5)

    # analytics
    week = m.AnalyticsPeriod("week")
    series = call(
        "analytics", "analytics_registrations", m.AnalyticsSeries, client=admin, period=week
    )
    assert len(series.buckets) == 12 and all(
        isinstance(b, m.AnalyticsBucket) for b in series.buckets
    )
    call("analytics", "analytics_activity", m.AnalyticsSeries, client=admin)
    call("analytics", "analytics_roles", m.RoleDistribution, client=admin)
    call("analytics", "analytics_xp", m.XpDistribution, client=admin)
    funnel = call("analytics", "analytics_journey", m.JourneyFunnel, client=admin)
    assert all(isinstance(s, m.FunnelStage) for s in funnel.stages)
    call("analytics", "analytics_status", m.StatusDistribution, client=admin)
    # dbadmin
    report = call("dbadmin", "dbhealth_list", m.HealthReport, client=admin, check=["wraparound"])
    assert report.worst == m.HealthState.OK
    assert call("dbadmin", "dbhealth_get", m.HealthCheck, "sequences", client=admin).state == "OK"
    call("dbadmin", "dbstats_get", m.StatsReport, client=admin, limit=3)
    with psycopg.connect(seeded_settings.url_for()) as conn:
        statshistory.take_snapshot(conn)
    since = datetime.now(UTC) - timedelta(hours=1)
    call("dbadmin", "dbstats_changes", m.StatsChanges, client=admin, since=since)
    with sleeping(seeded_settings) as pid:
        queries = call("dbadmin", "dbqueries_list", m.ServerSessionPage, client=admin)
        assert pid in {q.pid for q in queries.items}
        call("dbadmin", "dbqueries_cancel", m.SignalResult, pid, client=admin)
    with sleeping(seeded_settings) as pid:
        call("dbadmin", "dbqueries_terminate", m.SignalResult, pid, client=admin)
    body = m.ExplainRequest(sql='SELECT count(*) FROM "User"', analyze=True)
    assert call("dbadmin", "dbexplain_run", m.ExplainResult, client=admin, body=body).analyzed
    # backups (the restore as a dry run: the rest of this test uses the database)
    body = m.BackupCreate(note="generated client")
    made = call("backups", "backups_create", m.Backup, client=admin, body=body)
    assert isinstance(call("backups", "backups_list", m.BackupPage, client=admin), m.BackupPage)
    call("backups", "backups_get", m.Backup, made.id, client=admin)
    verified = call("backups", "backups_verify", m.BackupVerification, made.id, client=admin)
    assert verified.ok is True
    file_type = importlib.import_module(f"{PACKAGE}.types").File
    got = call("backups", "backups_download", file_type, made.id, client=admin)
    assert got.payload.read()[:5] == b"PGDMP"  # pg_dump's custom format
    body = m.RestoreRequest(dry_run=True)
    call("backups", "backups_restore", m.RestoreResult, made.id, client=admin, body=body)
    body = m.PruneRequest(keep=1000, dry_run=True)
    call("backups", "backups_prune", m.PruneResult, client=admin, body=body)

    # the user changes their password, is deleted; the admin signs out
    theirs = public_login(call, public, m, "generated", PASSPHRASE + " again")
    body = m.PasswordChange(current_password=PASSPHRASE + " again", new_password=PASSPHRASE)
    call("auth", "auth_change_password", m.LoginResponse, client=signed_in(theirs), body=body)
    call("users", "users_delete", None, uid, client=admin)
    call("auth", "auth_logout", None, client=admin)

    operations = {o["operationId"] for item in spec["paths"].values() for o in item.values()}
    assert called == operations


def public_login(call: Callable[..., Any], public: Any, m: Any, who: str, password: str) -> Any:
    """Sign in through the generated client."""
    return call(
        "auth",
        "auth_login",
        m.LoginResponse,
        client=public,
        body=m.LoginRequest(identifier=who, password=password),
    )
