"""The Brain's HTTP protocol: one write per response, the access log off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from uvicorn.server import ServerState

from smartstart.api import server
from smartstart.config import Settings


class Transport(asyncio.Transport):
    """Records what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 5002)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Answers /stream with a chunked body sent in two parts, anything else with JSON."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})
        return
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def exchange(
    settings: Settings, request: bytes, *, until: int = 1, config: Any = None
) -> Transport:
    """Feed `request` to the Brain's protocol; the transport once `until` responses are out."""
    config = config or server.uvicorn_config(settings, app)  # (re)configures uvicorn's logging
    config.load()

    async def run() -> Transport:
        state = ServerState()
        protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        deadline = time.monotonic() + 5
        while state.total_requests < until and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(run())


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(_env_file=None, home=tmp_path, api_access_log=True)  # type: ignore[call-arg]


def test_a_response_leaves_in_one_write(settings: Settings) -> None:
    transport = exchange(settings, b"GET /api/users/x HTTP/1.1\r\nHost: brain\r\n\r\n")
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 11" in head
    assert body == b'{"ok":true}'


def test_kept_alive_and_pipelined_requests_get_one_write_each(settings: Settings) -> None:
    one = b"GET /a HTTP/1.1\r\nHost: brain\r\n\r\n"
    transport = exchange(settings, one + one + one, until=3)
    assert len(transport.writes) == 3
    assert all(w.endswith(b'\r\n\r\n{"ok":true}') for w in transport.writes)


def test_head_and_connection_close_still_send_the_headers(settings: Settings) -> None:
    transport = exchange(settings, b"HEAD /a HTTP/1.1\r\nHost: brain\r\n\r\n")
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK")
    assert transport.writes[0].endswith(b"\r\n\r\n")
    transport = exchange(settings, b"GET /a HTTP/1.1\r\nHost: brain\r\nConnection: close\r\n\r\n")
    assert transport.closed
    assert b"".join(transport.writes).endswith(b'\r\n\r\n{"ok":true}')


def test_a_streamed_body_gets_its_headers_at_once(settings: Settings) -> None:
    transport = exchange(settings, b"GET /stream HTTP/1.1\r\nHost: brain\r\n\r\n")
    # The headers do not wait for the first chunk (the app pauses in between).
    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert b"".join(transport.writes[1:]) == b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def ours(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [
        r for r in records if isinstance(r.args, tuple) and r.args[2:3] == ("/api/users/x?y=1",)
    ]


def test_the_access_log_keeps_its_line_but_leaves_the_event_loop(settings: Settings) -> None:
    lines = Lines()
    logger = logging.getLogger("uvicorn.access")
    config = server.uvicorn_config(settings, app)  # configures uvicorn's loggers
    assert config.access_log
    logger.addHandler(lines)
    try:
        before = time.time()
        exchange(settings, b"GET /api/users/x?y=1 HTTP/1.1\r\nHost: brain\r\n\r\n", config=config)
        # Wait for this request's line: earlier tests' lines share the queue and may come first.
        deadline = time.monotonic() + 5
        while not ours(lines.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        logger.removeHandler(lines)
    [record] = ours(lines.records)
    # uvicorn's own message and arguments: its formatter prints the same line.
    assert record.getMessage() == '127.0.0.1:40000 - "GET /api/users/x?y=1 HTTP/1.1" 200'
    assert record.args == ("127.0.0.1:40000", "GET", "/api/users/x?y=1", "1.1", 200)
    assert record.levelno == logging.INFO
    assert record.created >= before
    # Logged by a thread, not by the event loop that served the request.
    assert record.thread != threading.main_thread().ident
