"""WAL archiving, base backups and point-in-time recovery, on a real archiving cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from smartstart import health
from smartstart.cli.main import app
from smartstart.config import Settings, get_settings
from smartstart.db import migrate, seed
from smartstart.pg import archive, pitr
from smartstart.pg.basebackup import list_base_backups
from smartstart.pg.cluster import Cluster
from tests.conftest import DB_PASSWORD, DB_USER, FAST_CONF, free_port, make_home

runner = CliRunner()


@pytest.fixture(scope="module")
def archiving() -> Iterator[Cluster]:
    """A cluster of this module's own that archives its WAL, migrated and seeded."""
    home = make_home("smartstart-pitr-")
    cluster = Cluster(home, port=free_port(), server_conf=FAST_CONF, archive_dir=home / "wal")
    cluster.init()
    cluster.start()
    cluster.bootstrap(db_name="smartstart_db", db_user=DB_USER, db_password=DB_PASSWORD)
    settings = _settings(cluster)
    migrate.upgrade(settings.sqlalchemy_url())
    with psycopg.connect(settings.url_for()) as conn:
        seed.seed(conn, settings)
    yield cluster
    cluster.destroy()
    shutil.rmtree(home, ignore_errors=True)


def _settings(cluster: Cluster) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=cluster.home,
        pg_port=cluster.port,
        db_user=DB_USER,
        env="test",
        bcrypt_rounds=4,
        admin_password="a perfectly fine passphrase",
    )


@pytest.fixture
def cli(archiving: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The CLI pointed at the archiving cluster; the cluster running."""
    monkeypatch.setenv("SMARTSTART_HOME", str(archiving.home))
    monkeypatch.setenv("SMARTSTART_PG_PORT", str(archiving.port))
    monkeypatch.setenv("SMARTSTART_ENV", "test")
    get_settings.cache_clear()
    archiving.start()
    return archiving


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def _probe(cluster: Cluster, name: str) -> None:
    """A database of this test's own with a table to write to."""
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with cluster.connect(name) as conn:
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY, what text)")


def _ids(cluster: Cluster, name: str) -> list[int]:
    with cluster.connect(name) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM probe ORDER BY id").fetchall()]


def _server_now(cluster: Cluster, name: str) -> datetime:
    with cluster.connect(name) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0].astimezone(UTC)  # type: ignore[no-any-return]


def _base_backup(note: str) -> dict[str, Any]:
    result = run("db", "backup", "--physical", "--note", note, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_status_says_archiving_is_on(cli: Cluster) -> None:
    result = run("status")
    assert result.exit_code == 0, result.output
    assert "WAL archiving: on (basic_archive)" in result.stdout
    conf = (cli.data_dir / archive.CONF_NAME).read_text()
    assert "archive_mode = on" in conf and str(cli.home / "wal") in conf
    as_json = run("status", "--json")
    assert as_json.exit_code == 0, as_json.output
    (row,) = [r for r in json.loads(as_json.stdout)["items"] if r["service"] == "postgres"]
    assert (row["archiving"], row["archiving_via"]) == ("on", "basic_archive")


def test_restore_to_a_time_between_two_writes(cli: Cluster) -> None:
    made = _base_backup("before the probe")
    assert made["start_wal"] <= made["stop_wal"] and made["start_lsn"]
    assert (Path(made["path"]) / "PG_VERSION").is_file()
    _probe(cli, "pitr_between")
    with cli.connect("pitr_between") as conn:
        conn.execute("INSERT INTO probe SELECT g, 'kept' FROM generate_series(1, 100) g")
    time.sleep(0.2)
    target = _server_now(cli, "pitr_between")
    time.sleep(0.2)
    with cli.connect("pitr_between") as conn:
        conn.execute("DELETE FROM probe WHERE id <= 50")
        conn.execute("INSERT INTO probe VALUES (1000, 'after the target')")
    listed = run("db", "backups", "--json")
    assert listed.exit_code == 0, listed.output
    window = json.loads(listed.stdout)["recoverable_window"]
    assert window["earliest"] is not None and window["missing"] == []

    dry = run("db", "restore", "--to-time", target.isoformat(), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.stderr and _ids(cli, "pitr_between")[0] == 51

    result = run("db", "restore", "--to-time", target.isoformat(), "--yes")
    assert result.exit_code == 0, result.output
    assert _ids(cli, "pitr_between") == list(range(1, 101))  # the rows are back, 1000 is not
    kept = sorted(cli.home.glob(f"{pitr.KEPT_PREFIX}*"))
    assert kept and (kept[-1] / "PG_VERSION").is_file()
    assert cli.status().running
    assert "restored to" in result.stdout
    # The same target again: nothing was committed on the new timeline since, and what the
    # old one holds after the branch (the delete) is another history.
    again = run("db", "restore", "--to-time", target.isoformat(), "--yes")
    assert again.exit_code == 0, again.output
    assert _ids(cli, "pitr_between") == list(range(1, 101))

    # After the restore, a write on the new timeline is recoverable with --to-latest.
    with cli.connect("pitr_between") as conn:
        conn.execute("INSERT INTO probe VALUES (2000, 'on the new timeline')")
    latest = run("db", "restore", "--to-latest", "--yes")
    assert latest.exit_code == 0, latest.output
    assert _ids(cli, "pitr_between") == [*range(1, 101), 2000]
    assert any(p.name.endswith(".history") for p in (cli.home / "wal").iterdir())
    check = run("db", "check")
    assert check.exit_code == 0, check.output


def test_a_target_outside_the_window_is_refused(cli: Cluster) -> None:
    if not list_base_backups(cli.home / "basebackups"):
        _base_backup("for the window")
    before = cli.status().pid
    for when in ("2000-01-01 00:00:00", (datetime.now(UTC) + timedelta(days=1)).isoformat()):
        result = run("db", "restore", "--to-time", when, "--yes")
        assert result.exit_code == 1, result.output
        assert "outside the recoverable window" in result.stderr, result.stderr
        assert " … " in result.stderr and result.stderr.count("\n") == 1
    assert cli.status().pid == before  # untouched: not even restarted
    both = run("db", "restore", "--to-latest", "--to-time", "2000-01-01")
    assert both.exit_code == 1 and "exactly one" in both.stderr
    neither = run("db", "restore")
    assert neither.exit_code == 1 and "give the backup FILE" in neither.stderr
    nul = run("db", "restore", "--to-time", "2026-01-01\x00")
    assert nul.exit_code != 0 and "Traceback" not in nul.output
    huge = run("db", "restore", "--to-time", "9" * 1_000_000)
    assert huge.exit_code != 0 and "Traceback" not in huge.output
    note = run("db", "backup", "--physical", "--note", "x" * 1_000_000)
    assert note.exit_code == 1 and "at most 500" in note.stderr
    assert note.stderr.count("\n") == 1
    nul_note = run("db", "backup", "--physical", "--note", "a\x00b")
    assert nul_note.exit_code != 0 and "Traceback" not in nul_note.output
    mixed = run("db", "backup", "--physical", "--format", "plain")
    assert mixed.exit_code == 1 and "--physical takes none of" in mixed.stderr
    shown = run("db", "backups")
    assert shown.exit_code == 0, shown.output
    assert "recoverable window: " in shown.stdout and "base_" in shown.stdout


def _wal_check(settings: Settings) -> health.CheckResult:
    (result,) = health.run(settings, health.select(["wal_archiving"]))
    return result


def _until(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_an_archive_failure_surfaces_in_the_health_check(cli: Cluster) -> None:
    settings = _settings(cli)
    assert _wal_check(settings).state is health.State.OK
    wal = cli.home / "wal"
    mode = wal.stat().st_mode & 0o777
    _probe(cli, "pitr_fail")
    # The server's OS user can no longer write into the archive: archive_command fails.
    wal.chmod(0o500)
    try:
        with cli.connect("pitr_fail") as conn:
            conn.execute("INSERT INTO probe VALUES (1, 'x')")
            conn.execute("SELECT pg_switch_wal()")

            def failed() -> bool:
                row = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()
                return bool(row and row[0] > 0)

            _until(failed)
        result = _wal_check(settings)
        assert result.state is health.State.WARN, result
        assert result.metric is not None and result.metric >= 1
        assert "failed" in (result.recommendation or "")
        detail = result.details[0]
        assert detail["failed_count"] and detail["last_failed_wal"]
        assert run("status").stdout.count("WAL archiving: failing") == 1
        refused = run("db", "restore", "--to-latest", "--yes")
        assert refused.exit_code == 1 and "archiving is failing" in refused.stderr
    finally:
        wal.chmod(mode)
    _until(lambda: _wal_check(settings).state is health.State.OK, timeout=120)


def test_a_killed_base_backup_leaves_nothing_complete_looking(cli: Cluster) -> None:
    directory = cli.home / "basebackups"
    before = {b.path.name for b in list_base_backups(directory)}
    code = (
        "import sys; from pathlib import Path; from smartstart.pg.cluster import Cluster\n"
        "from smartstart.pg.basebackup import base_backup\n"
        f"c = Cluster(Path({str(cli.home)!r}), port={cli.port}, archive_dir=None)\n"
        f"base_backup(c, Path({str(directory)!r}), who='test', max_rate='32k')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        # Killed once it has written something: waiting for the "base" directory took
        # ~18 s at 32 kB/s once earlier tests had grown what is sent before it.
        _until(lambda: any(directory.glob(".base_*.partial-*/*")), timeout=60)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert {b.path.name for b in list_base_backups(directory)} == before
    assert not [
        p
        for p in directory.iterdir()
        if p.name.startswith("base_") and p.is_dir() and p.name not in before
    ]
    # The next backup clears what the killed one left.
    _until(lambda: not _basebackup_running(cli))
    _base_backup("after a killed one")
    assert not list(directory.glob(".base_*"))


def _basebackup_running(cluster: Cluster) -> bool:
    with cluster.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
        ).fetchone()
        return bool(row and row[0])


def test_prune_keeps_the_newest_base_backup_and_the_wal_it_needs(cli: Cluster) -> None:
    directory, wal = cli.home / "basebackups", cli.home / "wal"
    _base_backup("older")
    with cli.connect() as conn:
        conn.execute("SELECT pg_switch_wal()")
    newest = _base_backup("newest")
    bases = list_base_backups(directory)
    assert len(bases) >= 2
    older, old = (cli.home / f"{pitr.KEPT_PREFIX}2020010{d}_000000" for d in (1, 2))
    for set_aside in (older, old):
        set_aside.mkdir()
        (set_aside / "PG_VERSION").write_text("15\n")
    with pytest.raises(pitr.PitrError):
        pitr.plan_prune(directory, wal, cli.home, keep=0)
    plan = pitr.plan_prune(directory, wal, cli.home, keep=1)
    assert [b.path.name for b in plan.kept_backups] == [Path(newest["path"]).name]
    assert {b.path.name for b in plan.base_backups} == {b.path.name for b in bases[1:]}
    assert plan.wal_files and all(p.name[8:24] < newest["start_wal"][8:] for p in plan.wal_files)
    assert older in plan.data_dirs  # beyond the newest one kept
    by_age = pitr.plan_prune(directory, wal, cli.home, older_than=timedelta(days=1))
    assert by_age.base_backups == () and set(by_age.data_dirs) == {older, old}
    # `db prune` shows and applies the same plan, beside the logical backups' own.
    shown = run("db", "prune", "--keep", "1", "--dry-run", "--json")
    assert shown.exit_code == 0, shown.output
    doomed = set(json.loads(shown.stdout)["deleted"])
    assert {b.path.name for b in plan.base_backups} <= doomed
    assert {p.name for p in plan.wal_files} <= doomed and older.name in doomed
    assert len(list_base_backups(directory)) == len(bases)  # a dry run deletes nothing
    pruned = run("db", "prune", "--keep", "1", "--yes")
    assert pruned.exit_code == 0, pruned.output
    assert [b.path.name for b in list_base_backups(directory)] == [Path(newest["path"]).name]
    assert not any(p.exists() for p in plan.wal_files)
    assert not any(d.exists() for d in plan.data_dirs)
    history = [p for p in wal.iterdir() if p.name.endswith(".history")]
    assert all(p.exists() for p in history)
    # What is left still restores.
    result = run("db", "restore", "--to-latest", "--yes")
    assert result.exit_code == 0, result.output


def test_walcopy_copies_durably_and_never_overwrites_a_different_segment(tmp_path: Path) -> None:
    from smartstart.pg import walcopy

    source, archive_dir = tmp_path / "000000010000000000000001", tmp_path / "wal"
    archive_dir.mkdir()
    source.write_bytes(os.urandom(4096))
    dest = archive_dir / source.name
    assert walcopy.main(["walcopy", str(source), str(dest)]) == 0
    assert dest.read_bytes() == source.read_bytes()
    assert walcopy.main(["walcopy", str(source), str(dest)]) == 0  # the same bytes again: fine
    other = tmp_path / "other"
    other.write_bytes(b"x" * 4096)
    assert walcopy.main(["walcopy", str(other), str(dest)]) == 1
    assert dest.read_bytes() == source.read_bytes()
    assert walcopy.main(["walcopy", str(tmp_path / "absent"), str(archive_dir / "n")]) == 1
    assert walcopy.main(["walcopy"]) == 2
    assert sorted(p.name for p in archive_dir.iterdir()) == [source.name]  # no temporary left


def test_an_existing_cluster_archives_from_its_next_start() -> None:
    home = make_home("smartstart-pitr-old-")
    old = Cluster(home, port=free_port(), server_conf=FAST_CONF)
    try:
        old.init()
        old.start()
        configured = Cluster(home, port=old.port, archive_dir=home / "wal")
        assert archive.state(configured) == "pending restart"
        assert archive.state(old) == "off"
        configured.restart()
        with configured.connect() as conn:
            assert conn.execute("SHOW archive_mode").fetchone() == ("on",)
        assert archive.state(configured) == "on"
        settings = Settings(_env_file=None, home=home, pg_port=old.port, wal_archive=False)  # type: ignore[call-arg]
        off = Cluster.from_settings(settings)
        off.restart()
        with off.connect() as conn:
            assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
    finally:
        old.destroy()
        shutil.rmtree(home, ignore_errors=True)


def _audit_rows(cluster: Cluster, action: str, kind: str) -> list[tuple[Any, ...]]:
    """(actor, resourceId, details) of the platform database's rows for action and kind."""
    with cluster.connect("smartstart_db") as conn:
        return conn.execute(
            'SELECT actor, "resourceId", details FROM audit_log'
            " WHERE action = %s AND (details->>'kind' = %s OR details->>'format' = %s)"
            " ORDER BY id",
            [action, kind, kind],
        ).fetchall()


def _new_timeline_target(cluster: Cluster, name: str) -> datetime:
    """A base backup, then a moment after it with a write (into database name's probe) on
    each side of it."""
    _base_backup("for this test")
    _probe(cluster, name)
    with cluster.connect(name) as conn:
        conn.execute("INSERT INTO probe VALUES (1, 'before the target')")
    time.sleep(0.2)
    target = _server_now(cluster, name)
    time.sleep(0.2)
    with cluster.connect(name) as conn:
        conn.execute("INSERT INTO probe VALUES (2, 'after the target')")
    return target


def test_base_backups_and_pitr_restores_are_audited_in_the_database_they_leave(
    cli: Cluster,
) -> None:
    made = _base_backup("audited")
    name = Path(made["path"]).name
    created = [r for r in _audit_rows(cli, "backup.create", "physical") if r[1] == name]
    assert len(created) == 1, created
    actor, _, details = created[0]
    assert actor.startswith("cli:") and details["outcome"] == "ok"
    assert details["start_wal"] == made["start_wal"] and details["note"] == "audited"

    target = _new_timeline_target(cli, "pitr_audited")
    base = Path(list_base_backups(cli.home / "basebackups")[0].path).name
    for _ in range(2):
        result = run("db", "restore", "--to-time", target.isoformat(), "--yes")
        assert result.exit_code == 0, result.output
        # Written after the swap, into the recovered database: the previous restore's row
        # (after the target, on the set-aside history) is gone, this one's is there.
        rows = [r for r in _audit_rows(cli, "backup.restore", "pitr") if r[1] == base]
        assert len(rows) == 1, rows
        actor, _, details = rows[0]
        assert actor.startswith("cli:") and details["outcome"] == "ok"
        assert datetime.fromisoformat(details["target"]) == target
        assert details["kept"].startswith(str(cli.home / pitr.KEPT_PREFIX))
        assert details["replayed_to"] is not None and details["seconds"] > 0
        assert _ids(cli, "pitr_audited") == [1]


def test_a_failed_pitr_restore_is_audited_and_changes_nothing(cli: Cluster) -> None:
    target = _new_timeline_target(cli, "pitr_failed")
    pitr.flush_archive(cli)
    stop_wal = list_base_backups(cli.home / "basebackups")[0].manifest.stop_wal
    # The server's OS user cannot read the WAL after the base backup: the replay stops
    # short of the target, and PostgreSQL refuses to promote there.
    hidden = [
        p
        for p in (cli.home / "wal").iterdir()
        if len(p.name) == 24 and p.name[8:] > stop_wal[8:] and p.name[:8] == stop_wal[:8]
    ]
    assert hidden
    before = cli.status().pid
    for p in hidden:
        p.chmod(0o000)
    try:
        result = run("db", "restore", "--to-time", target.isoformat(), "--yes")
    finally:
        for p in hidden:
            p.chmod(0o644)
    assert result.exit_code == 1, result.output
    assert "recovery failed" in result.stderr and "Traceback" not in result.output
    assert cli.status().pid == before  # never stopped: the swap did not run
    assert _ids(cli, "pitr_failed") == [1, 2]
    failed = [r for r in _audit_rows(cli, "backup.restore", "pitr") if r[2]["outcome"] == "failed"]
    assert failed, "the failed restore was not audited"
    actor, _, details = failed[-1]
    assert actor.startswith("cli:") and "recovery failed" in details["error"]
    assert datetime.fromisoformat(details["target"]) == target


def _watch(url: str, token: str, user_id: str, stop: Any) -> list[Any]:
    """GET /api/users/{id} in a loop until stop is set: (status, Retry-After, body) of each."""
    import httpx

    seen: list[Any] = []
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        while not stop.is_set():
            r = http.get(f"/api/users/{user_id}")
            seen.append((r.status_code, r.headers.get("retry-after"), r.json()))
    return seen


def test_a_served_brain_answers_through_a_pitr_swap_and_recovers_by_itself(cli: Cluster) -> None:
    import threading

    import httpx

    from smartstart.api.app import create_app
    from smartstart.domain import sessions
    from tests.api.conftest import served

    _base_backup("before the Brain's test")
    with cli.connect("smartstart_db") as conn:
        row = conn.execute(
            """UPDATE "User" SET "firstName" = 'Before' WHERE role = 'SUPER_ADMIN'"""
            " RETURNING id"
        ).fetchone()
        assert row is not None
        uid = str(row[0])
        token, _ = sessions.create(conn, uid, lifetime=timedelta(hours=1))
    time.sleep(0.2)
    target = _server_now(cli, "smartstart_db")
    time.sleep(0.2)
    with cli.connect("smartstart_db") as conn:
        conn.execute("""UPDATE "User" SET "firstName" = 'Mutated' WHERE id = %s""", [uid])
    # A short wait for a connection: requests meet the stopped server and answer 503.
    with served(create_app(_settings(cli), pool_timeout=0.5)) as url:
        stop = threading.Event()
        seen: list[Any] = []
        watcher = threading.Thread(target=lambda: seen.extend(_watch(url, token, uid, stop)))
        watcher.start()
        try:
            time.sleep(0.5)
            result = run("db", "restore", "--to-time", target.isoformat(), "--yes")
            time.sleep(0.5)
        finally:
            stop.set()
            watcher.join()
        assert result.exit_code == 0, result.output
        # Recovered without help: the next answer is the restored row.
        with httpx.Client(base_url=url, timeout=60) as http:
            after = http.get(f"/api/users/{uid}", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 200 and after.json()["firstName"] == "Before", after.text
    assert {status for status, _, _ in seen} <= {200, 503}, seen
    names = [body["firstName"] for status, _, body in seen if status == 200]
    assert names[0] == "Mutated"
    # Never a mix: the old answer until the swap, the restored one after it.
    switched = [n == "Before" for n in names]
    assert switched == sorted(switched), names
    for status, retry_after, body in seen:
        if status == 503:
            assert body["error"]["code"] == "restoring", body
            assert "point-in-time recovery to" in body["error"]["message"], body
            assert body["error"]["details"]["reason"] == "pitr" and retry_after == "5", body


def test_a_target_before_segments_without_commits_is_not_replayed_past(cli: Cluster) -> None:
    """After the last commit, WAL with none in it (a VACUUM, checkpoints): the restore must
    still stop at the target, not take "no commit seen lately" for "nothing to exclude"."""
    target = _new_timeline_target(cli, "pitr_quiet_tail")  # row 2 is after the target
    with cli.connect() as conn:
        for _ in range(10):  # more segments than any "newest few" a scan might stop at
            conn.execute("CHECKPOINT")
            conn.execute("SELECT pg_switch_wal()")
    result = run("db", "restore", "--to-time", target.isoformat(), "--yes")
    assert result.exit_code == 0, result.output
    assert _ids(cli, "pitr_quiet_tail") == [1]


def test_a_restore_failing_its_checks_leaves_no_trace_in_the_archive(cli: Cluster) -> None:
    """The side server replays with archiving off, whichever way the base backup archived
    (basic_archive would win over the emptied archive_command): its new timeline's history
    and partial segment stay out of the archive unless the restore is swapped in."""
    target = _new_timeline_target(cli, "pitr_no_trace")
    until = pitr.flush_archive(cli)
    wal = cli.home / "wal"
    plan = pitr.plan_restore(cli, cli.home / "basebackups", wal, target, until)
    before = sorted(p.name for p in wal.iterdir())
    seen: list[Any] = []

    def check(side: Cluster) -> list[str]:
        time.sleep(1)  # what an archiver on the side server would need to copy the history
        with side.connect() as conn:
            seen.append(
                conn.execute(
                    "SELECT current_setting('archive_library'), current_setting('archive_command'),"
                    " archived_count, pg_is_in_recovery() FROM pg_stat_archiver"
                ).fetchone()
            )
        return ["refused by the test"]

    with pytest.raises(pitr.PitrError, match="refused by the test"):
        pitr.restore(cli, plan, wal, check)
    assert seen == [("", "", 0, False)]  # promoted, nothing archived
    assert sorted(p.name for p in wal.iterdir()) == before
    assert _ids(cli, "pitr_no_trace") == [1, 2]


def test_two_restores_in_one_second_set_aside_under_different_names(tmp_path: Path) -> None:
    # The second of two restores within a second renamed the data directory onto the
    # first one's kept copy: "Directory not empty", with the server already stopped.
    when = datetime(2026, 11, 29, 23, 57, 43, tzinfo=UTC)
    first = pitr.kept_name(tmp_path, when)
    first.mkdir()
    second = pitr.kept_name(tmp_path, when)
    second.mkdir()
    third = pitr.kept_name(tmp_path, when + timedelta(seconds=1))
    assert len({first, second, third}) == 3
    assert second.name == f"{pitr.KEPT_PREFIX}20261129_235743_2"
    # Prune still reads when each was set aside from its name.
    assert pitr._kept_at(second) == when
