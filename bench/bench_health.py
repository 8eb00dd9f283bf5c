"""`db health` at scale: every check on 1,000,000 demo users and 5,000,000 audit rows.

Targets (issue 10): the whole run completes in <= 3 s, and one check forced to hang
delays the result by no more than its timeout.

Uses bench_listings' cached cluster (`BENCH_LISTINGS_DIR`, by default
bench/.cache/listings-1000000: copy /work/cache/listings-1000000 there, never point it at a
shared one); migrates it to head and adds the audit rows once (marked in the cache).
`python -m bench health`; BENCH_HEALTH_AUDIT_ROWS changes the audit rows, BENCH_HEALTH_RUNS
the runs.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

from bench import bench_listings

TARGET_S = 3.0
AUDIT_ROWS = int(os.environ.get("BENCH_HEALTH_AUDIT_ROWS", "5000000"))
RUNS = int(os.environ.get("BENCH_HEALTH_RUNS", "5"))
TIMEOUT = 2.0  # the checks' default statement timeout


def _prepare(settings: Any) -> None:
    """Migrate the copy to head; give it AUDIT_ROWS audit rows (once)."""
    import psycopg

    from smartstart.db import migrate

    migrate.upgrade(settings.sqlalchemy_url())
    mark = bench_listings.CACHE / "audit-rows.json"
    if mark.exists() and json.loads(mark.read_text()).get("rows") == AUDIT_ROWS:
        return
    with psycopg.connect(settings.url_for(), autocommit=True) as conn:
        (have,) = conn.execute("SELECT count(*) FROM audit_log").fetchone() or (0,)
        missing = AUDIT_ROWS - int(have)
        print(f"  adding {max(missing, 0):,} audit rows (have {have:,}) ...", flush=True)
        started = time.perf_counter()
        chunk = 500_000
        while missing > 0:
            n = min(chunk, missing)
            # Spread over a year and over the demo users, with the guide's kinds of action.
            conn.execute(
                """
                INSERT INTO audit_log (actor, action, resource, "resourceId", details, ip,
                                       "createdAt")
                WITH u AS (SELECT array_agg(id) AS ids
                           FROM (SELECT id FROM "User" LIMIT 1000) s)
                SELECT u.ids[1 + g %% 1000],
                       (ARRAY['auth.login', 'user.updated', 'journey.stage_completed',
                              'rbac.role_assigned', 'auth.password_changed'])[1 + g %% 5],
                       'user', u.ids[1 + g %% 1000], jsonb_build_object('n', g), '10.1.2.3',
                       now() - (g %% 365) * interval '1 day' - (g %% 86400) * interval '1 s'
                FROM generate_series(1, %s) g, u
                """,
                [n],
            )
            missing -= n
            print(f"    {AUDIT_ROWS - missing:,} in {time.perf_counter() - started:.0f} s")
        conn.execute("VACUUM (ANALYZE) audit_log")
    mark.write_text(json.dumps({"rows": AUDIT_ROWS}))


def _timed(settings: Any, checks: Any, config: Any) -> tuple[float, list[Any]]:
    from smartstart import health

    started = time.perf_counter()
    results = health.run(settings, checks, config)
    return time.perf_counter() - started, results


def main() -> int:
    """0 when db health met both targets on the cached 1M-user database."""
    from smartstart import health
    from smartstart.pg.checks import Check, Measurement

    print(f"db health at 1,000,000 users; {os.cpu_count()} cores, load {os.getloadavg()}")
    with bench_listings.database() as built:
        settings = built.db.settings
        _prepare(settings)
        config = health.HealthConfig(TIMEOUT)
        _timed(settings, health.CHECKS, config)  # warm the cache as a running server has it
        walls, slowest, unfinished = [], {}, set()
        for _ in range(RUNS):
            wall, results = _timed(settings, health.CHECKS, config)
            walls.append(wall)
            for r in results:
                slowest[r.name] = max(slowest.get(r.name, 0.0), r.seconds)
                # A check cut at its timeout did not complete: the run did not either.
                if r.state in (health.State.TIMEOUT, health.State.ERROR):
                    unfinished.add(r.name)
            states = {r.name: r.state.name for r in results if r.state is not health.State.OK}
        print(
            f"  {len(health.CHECKS)} checks, {RUNS} runs: wall "
            + ", ".join(f"{w:.2f}" for w in walls)
            + " s"
        )
        print(
            "  slowest checks (max s): "
            + ", ".join(
                f"{n} {s:.2f}" for n, s in sorted(slowest.items(), key=lambda kv: -kv[1])[:6]
            )
        )
        print(f"  verdicts not OK (last run): {states}")

        def hang(conn: Any) -> Measurement:
            conn.execute("SELECT pg_sleep(600)")
            return Measurement(0.0, "")

        hanging = (*health.CHECKS, Check("forced_hang", "A check that never answers", hang))
        hang_walls, hang_state = [], ""
        for _ in range(3):
            wall, results = _timed(settings, hanging, config)
            hang_walls.append(wall)
            hang_state = next(r for r in results if r.name == "forced_hang").state.name
    median = statistics.median(walls)
    delay = statistics.median(hang_walls) - median
    print(
        "  with one check hanging: wall "
        + ", ".join(f"{w:.2f}" for w in hang_walls)
        + f" s; it ended {hang_state}; delay over the median run {delay:+.2f} s"
        f" (timeout {TIMEOUT:g} s)"
    )
    ok_wall = max(walls) <= TARGET_S and not unfinished
    ok_hang = hang_state == "TIMEOUT" and delay <= TIMEOUT
    print(
        f"  target wall <= {TARGET_S:g} s: {'met' if ok_wall else 'MISSED'} "
        f"(median {median:.2f}, max {max(walls):.2f}; checks that did not finish in some "
        f"run: {sorted(unfinished) or 'none'}); hang delay <= timeout: "
        f"{'met' if ok_hang else 'MISSED'}; load after {os.getloadavg()}"
    )
    return 0 if ok_wall and ok_hang else 1


if __name__ == "__main__":
    raise SystemExit(main())
