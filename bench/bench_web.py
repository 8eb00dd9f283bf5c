"""The web app's heaviest pages at 1,000,000 demo users: p50/p99 of each page's response
time (server time plus a loopback round trip) through a running Brain, target ≤ 300 ms.

`python -m bench web`. Uses bench_listings' cached database (bench/.cache/listings-<N>,
BENCH_LISTINGS_DIR elsewhere; built first when missing) with the seeded admin signed in
by a session cookie, as a browser is.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from bench.bench_api import admin_token, brain_command, brain_env, free_port, running
from bench.bench_listings import CACHE, USERS, _p, _timed, database

SAMPLES = int(os.environ.get("BENCH_WEB_SAMPLES", "20"))
TARGET_MS = 300.0


def _get(url: str, token: str) -> int:
    req = urllib.request.Request(url, headers={"Cookie": f"smartstart_session={token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as e:
        e.read()
        return int(e.code)


def main() -> int:
    import psycopg

    with database() as built:
        db = built.db
        token = admin_token(db)
        with psycopg.connect(db.dsn) as conn:
            # A member with a journey behind them: the detail page's fullest case.
            row = conn.execute(
                'SELECT "userId" FROM "UserJourneyState" WHERE status = %s LIMIT 1',
                ["COMPLETED"],
            ).fetchone()
            # The Database page's history compares with a snapshot: give it one to read.
            from smartstart.domain import statshistory

            statshistory.take_snapshot(conn)
            conn.commit()
        some_user = row[0] if row else "none"
        pages = [
            ("overview", "/admin"),
            ("users", "/admin/users"),
            ("users q=ana", "/admin/users?q=ana"),
            ("users role=ADMIN sort=xp", "/admin/users?role=ADMIN&sort=xp"),
            (
                "users status=SUSPENDED level=WISE_OWL",
                "/admin/users?status=SUSPENDED&level=WISE_OWL",
            ),
            ("user detail", f"/admin/users/{some_user}"),
            ("roles matrix", "/admin/roles"),
            ("audit log", "/admin/audit"),
            ("journeys", "/admin/journeys"),
            ("data browser: User", "/admin/data/User"),
            ("data browser: User sorted by xp", "/admin/data/User?sort=xp&dir=desc"),
            ("analytics: registrations", "/analytics"),
            ("analytics: registrations per week", "/analytics?period=week"),
            ("analytics: activity", "/analytics?analysis=activity"),
            ("analytics: roles", "/analytics?analysis=roles"),
            ("analytics: xp", "/analytics?analysis=xp"),
            ("analytics: journey funnel", "/analytics?analysis=journey"),
            ("analytics: status", "/analytics?analysis=status"),
            ("analytics: roles CSV", "/analytics/roles.csv"),
            ("database", "/admin/database"),
            ("backups", "/admin/backups"),
            ("my journey", "/journey"),
            ("profile", "/profile"),
        ]
        log_dir = CACHE / "logs"
        log_dir.mkdir(exist_ok=True)
        ok = True
        print(f"web pages at {USERS:,} users (p50 / p99 ms, target ≤ {TARGET_MS:.0f} ms)")
        with running("brain-web", brain_command(free_port(), 1), brain_env(db), log_dir) as brain:
            base = f"http://127.0.0.1:{brain.port}"
            for label, path in pages:
                status = _get(base + path, token)
                if status != 200:
                    print(f"  {label}: HTTP {status}")
                    ok = False
                    continue
                call: Callable[[], int] = lambda p=path: _get(base + p, token)  # noqa: E731
                p50, p99 = _p(_timed(call, SAMPLES))
                met = p99 <= TARGET_MS
                ok = ok and met
                print(f"  {label:40} {p50:7.1f} {p99:7.1f}  {'ok' if met else 'MISSED'}")
        print(f"load: {os.getloadavg()[0]:.2f} (1 min) at {time.strftime('%H:%M:%S')}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
