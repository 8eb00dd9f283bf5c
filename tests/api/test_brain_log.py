"""The Brain's structured log: a JSON line per request with id, route, status, duration, actor."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn

from smartstart.api import server
from smartstart.api.app import create_app
from smartstart.config import Settings
from smartstart.logs import JsonFormatter, TextFormatter, log_config
from tests.api.test_wire import Lines
from tests.conftest import free_port


def wait_for(records: list[logging.LogRecord], match: Callable[[logging.LogRecord], bool]) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [r for r in records if match(r)]
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("no such access line")


def test_each_request_is_one_json_line_with_its_fields(
    seeded_settings: Settings, admin_headers: dict[str, str]
) -> None:
    settings = seeded_settings.model_copy(update={"api_port": free_port(), "log_format": "json"})
    config = server.uvicorn_config(settings, create_app(settings))
    brain = uvicorn.Server(config)
    lines = Lines()
    logger = logging.getLogger("uvicorn.access")
    logger.addHandler(lines)
    thread = threading.Thread(target=brain.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.api_port}"
    try:
        deadline = time.monotonic() + 30
        while not brain.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        me = httpx.get(f"{base}/api/auth/me", headers=admin_headers).json()["user"]
        user = httpx.get(
            f"{base}/api/users/{me['id']}", headers={**admin_headers, "X-Request-Id": "req-42"}
        )
        assert user.status_code == 200
        assert httpx.get(f"{base}/api/users/nobody").status_code == 401
        bogus = {"X-Request-Id": "no spaces allowed" + "x" * 100}
        httpx.get(f"{base}/healthz", headers=bogus)
        found = wait_for(lines.records, lambda r: "/healthz" in r.getMessage())
    finally:
        brain.should_exit = True
        thread.join(timeout=30)
        logger.removeHandler(lines)
    [ok] = wait_for(lines.records, lambda r: r.__dict__.get("request_id") == "req-42")
    line = json.loads(JsonFormatter().format(ok))
    assert line["message"].endswith(f'"GET /api/users/{me["id"]} HTTP/1.1" 200')
    assert line["level"] == "info" and line["logger"] == "uvicorn.access"
    assert line["route"] == "/api/users/{user_id}" and line["status"] == 200
    assert line["actor"] == me["id"] and line["method"] == "GET"
    assert 0 < line["duration_ms"] < 30_000
    [denied] = [r for r in lines.records if r.__dict__.get("status") == 401]
    assert denied.__dict__["actor"] is None
    # An id that does not look like one is replaced by one of the Brain's own.
    assert found[0].__dict__["request_id"] != bogus["X-Request-Id"]
    assert found[0].__dict__["request_id"].split("-")[0].isalnum()
    # Logged off the event loop, as before.
    assert ok.threadName == "access-log"


def test_a_terminal_gets_lines_for_a_person(seeded_settings: Settings) -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 0, "%s", ("GET /x",), None)
    record.__dict__.update(duration_ms=2.5, actor="u-1", request_id="r-1", status=200)
    text = TextFormatter().format(record)
    assert text.endswith("INFO    GET /x 2.5 ms actor=u-1 request_id=r-1")
    config = log_config(seeded_settings.model_copy(update={"log_format": "text"}))
    assert config["formatters"]["brain"]["()"] == "smartstart.logs.TextFormatter"
    auto = log_config(seeded_settings)  # pytest's stderr is no terminal
    assert auto["formatters"]["brain"]["()"] == "smartstart.logs.JsonFormatter"
