"""/metrics as Prometheus sees it: one set of counters for all workers, valid exposition."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_server import (
    children,
    serve,  # noqa: F401 - the fixture starting real Brains
    wait_for,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(base: str) -> str:
    # A new connection each time: the kernel spreads them over the workers.
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as c:
        response = c.get(f"{base}/metrics")
    assert response.status_code == 200
    return response.text


def test_two_workers_scrapes_never_decrease_and_promtool_accepts_them(
    serve: Callable[..., Any],  # noqa: F811
) -> None:
    proc, base, _ = serve("--workers", "2")
    previous: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    requests = 0
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as c:
        for _ in range(25):
            for _ in range(4):
                assert c.get(f"{base}/healthz").status_code == 200
                requests += 1
            current = samples(scrape(base))
            counters = {k: v for k, v in current.items() if k[0].endswith(("_total", "_count"))}
            for key, value in counters.items():
                if key[0].startswith("process_"):
                    continue
                assert value >= previous.get(key, 0), f"{key} went from {previous[key]} to {value}"
            previous = counters
    healthz = (
        "smartstart_http_requests_total",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    # Every worker's requests, not one worker's share (readiness polls add a few).
    assert previous[healthz] >= requests
    text = scrape(base)
    pids = {
        dict(labels)["pid"]
        for (name, labels) in samples(text)
        if name == "process_cpu_seconds_total"
    }
    assert len(pids) == 2, "the process metrics of each worker"
    assert "python_info{" in text
    assert "smartstart_build_info{" in text

    # A worker that dies takes none of its counts with it.
    before = samples(scrape(base))[healthz]
    victim = min(children(proc.pid))
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(found := children(proc.pid)) == 2 and victim not in found,
        "the dead worker's replacement",
    )
    for _ in range(10):
        assert samples(scrape(base))[healthz] >= before

    # The same server's exposition, as Prometheus's own checker reads it.
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (Debian package prometheus)"
    httpx.get(f"{base}/openapi.json")
    httpx.get(f"{base}/nowhere")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=scrape(base), capture_output=True, text=True
    )
    # promtool's exit code is 1 for lint warnings too; these would be errors.
    assert "error" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_process_has_process_python_and_build_metrics(client: TestClient) -> None:
    text = client.get("/metrics").text
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "python_info", "smartstart_build_info"} <= names


def test_openapi_and_docs_are_counted_under_their_routes(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/docs/static/swagger-ui.css").status_code == 200
    found = samples(client.get("/metrics").text)
    routes = {
        dict(labels)["route"]
        for (name, labels) in found
        if name == "smartstart_http_requests_total"
    }
    assert {"/openapi.json", "/docs", "/docs/static/{path}"} <= routes
    assert "<unmatched>" not in routes
