"""`/metrics`' database health gauges: one value and one verdict per check.

Running the checks takes up to their timeout, too slow for a scrape, and the Brain's
workers each answer scrapes (multiprocess): so a scrape only reads the last results from
a file under $SMARTSTART_HOME, and when they are older than SMARTSTART_HEALTH_METRICS_SECONDS
starts one refresh in the background (a file lock keeps it to one worker at a time).
Nothing runs on a request path, and nothing runs while nobody scrapes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from smartstart import health
from smartstart.config import Settings


def cache_path(settings: Settings) -> Path:
    """The results file of this database (one per server and database)."""
    key = hashlib.sha256(settings.url_for().encode()).hexdigest()[:16]
    return settings.home_dir / "health-metrics" / f"{key}.json"


def refresh(settings: Settings, path: Path) -> bool:
    """Run the checks and write their results; False when another process is at it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        results = health.run(settings, health.CHECKS, health.load_config(settings.home_dir))
        body = {"at": time.time(), "items": [r.as_json() for r in results]}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body, default=str))
        tmp.replace(path)
    return True


class HealthGauges(Collector):
    """`smartstart_db_health_value{check}` and `smartstart_db_health_state{check}` (0 OK,
    1 WARN, 2 ERROR, 3 TIMEOUT, 4 CRIT), from the last background run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = settings.health_metrics_seconds
        self.path = cache_path(settings)
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def _refresh_in_background(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return

        def run() -> None:
            # A failure here (database down) shows as stale gauges, never as a failed scrape.
            with contextlib.suppress(Exception):
                refresh(self.settings, self.path)

        self._thread = threading.Thread(target=run, name="health-metrics", daemon=True)
        self._thread.start()

    def collect(self) -> Iterable[Metric]:
        if self.interval <= 0:
            return
        cached = self._read()
        age = time.time() - float(cached["at"]) if cached else None
        if age is None or age >= self.interval:
            self._refresh_in_background()
        if cached is None or age is None:
            return
        value = GaugeMetricFamily(
            "smartstart_db_health_value",
            "Each database health check's metric (its unit in the label)",
            labels=["check", "unit"],
        )
        state = GaugeMetricFamily(
            "smartstart_db_health_state",
            "Each database health check's verdict: 0 OK, 1 WARN, 2 ERROR, 3 TIMEOUT, 4 CRIT",
            labels=["check"],
        )
        for item in cached["items"]:
            if item["metric"] is not None:
                value.add_metric([item["check"], item["unit"]], float(item["metric"]))
            state.add_metric([item["check"]], float(health.State[item["state"]].value))
        yield value
        yield state
        yield GaugeMetricFamily(
            "smartstart_db_health_age_seconds",
            "How old the database health gauges are",
            value=age,
        )
