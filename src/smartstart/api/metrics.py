"""What /metrics exposes: the app's request metrics, the process, Python and the build.

With several workers (`smartstart serve --workers N`) each worker counts its own requests
and any one of them answers a scrape: per-worker numbers went down between two scrapes
answered by different workers, which Prometheus reads as counter resets. So the
supervisor gives the workers a shared directory (prometheus_client's multiprocess mode,
emptied at each start) and a scrape sums every worker's counts, including those of a
worker that has since died, so counters never go down while the Brain runs.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    values,
)
from prometheus_client.metrics_core import InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from smartstart import __version__
from smartstart.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it
_PID_FILE = re.compile(r"_(\d+)\.db$")


def prepare_workers(settings: Settings) -> Path:
    """In the supervisor, before any worker starts: an empty directory the workers share."""
    directory = settings.home_dir / "metrics"
    # Counts left by a previous run would be added to this run's.
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)  # the forked workers inherit it
    return directory


class BuildInfo(Collector):
    """`smartstart_build_info{version, python}` 1: what is running."""

    def collect(self) -> Iterable[Metric]:
        info = InfoMetricFamily("smartstart_build", "The SmartStart version serving")
        python = ".".join(str(part) for part in sys.version_info[:3])
        info.add_metric([], {"version": __version__, "python": python})
        yield info


class WorkerProcesses(Collector):
    """The standard `process_*` metrics of every live worker, labelled with its pid.

    One worker cannot stand for the others (its CPU time is not theirs), and a sum would
    go down when a worker is replaced: one series per worker process is what is true.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def pids(self) -> list[int]:
        found = set()
        for name in os.listdir(self.directory):
            match = _PID_FILE.search(name)
            if match and os.path.exists(f"/proc/{match.group(1)}"):
                found.add(int(match.group(1)))
        return sorted(found)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.pids():
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                out = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()


def registries() -> tuple[CollectorRegistry, CollectorRegistry | None]:
    """(the registry /metrics exposes, the one the app's own metrics belong to).

    In multiprocess mode the app's metrics belong to no registry: their values live in the
    shared directory, and the exposed registry reads every worker's files from there.
    """
    exposed = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_ENV)
    own: CollectorRegistry | None
    if directory:
        # Chosen when prometheus_client is imported, which may predate the fork; metrics
        # created from now on keep their values in this process's files.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        MultiProcessCollector(exposed, path=directory)  # type: ignore[no-untyped-call]
        exposed.register(WorkerProcesses(directory))
        own = None
    else:
        ProcessCollector(registry=exposed)
        own = exposed
    PlatformCollector(registry=exposed)
    exposed.register(BuildInfo())
    return exposed, own
