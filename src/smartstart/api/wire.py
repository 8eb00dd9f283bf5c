"""The Brain's HTTP protocol: uvicorn's httptools protocol, with cheaper writes and logging.

Two costs of uvicorn's protocol on the hot reads (py-spy, one worker under wrk):

- It writes the status line and headers in one `write()` and the body in another: two
  system calls, and two TCP segments, per response. Here the headers of a response with
  a Content-Length wait for its first body message and leave with it.
- Its access log calls stdlib logging on the event loop for every request (a LogRecord,
  the formatter, a write and a flush). Here the loop only appends the request's scope,
  status and times to a queue; a thread hands them to the same `uvicorn.access` logger,
  with the same message and arguments (so uvicorn's formatter would print the same
  line), the request's own time, and the fields of the structured log (smartstart/logs.py:
  request id, route, status, duration, actor), all read from the scope off the loop.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import itertools
import logging
import os
import re
import threading
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %d'  # uvicorn's own message and arguments
ACCESS_LOG_INTERVAL = 0.05  # seconds between the access log thread's rounds
# A client's (or proxy's) X-Request-Id is kept when it looks like an id; otherwise one is made.
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class AccessLog:
    """Access log lines queued by the event loop, logged by a thread."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        # deque.append and popleft are atomic: no lock on the event loop's side.
        self.pending: collections.deque[tuple[float, Any, int, float]] = collections.deque()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.prefix = f"{os.getpid():x}-"

    def add(self, scope: Any, status: int, started: float) -> None:
        """On the loop: the request's scope, status and start (perf_counter), queued."""
        self.pending.append((time.perf_counter(), scope, status, started))
        if self.thread is None:
            self._start()

    def _start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="access-log", daemon=True)
                self.thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(ACCESS_LOG_INTERVAL)
            self.flush()

    def flush(self) -> None:
        """Log every queued line (the thread's round; also at exit)."""
        logger = self.logger
        # perf_counter → wall clock: the loop reads one clock per request, not two.
        offset = time.time() - time.perf_counter()
        while self.pending:
            try:
                done, scope, status, started = self.pending.popleft()
            except IndexError:  # pragma: no cover - another flush took the last one
                return
            if not logger.isEnabledFor(logging.INFO):
                continue
            client, path = get_client_addr(scope), get_path_with_query_string(scope)
            args = (client, scope["method"], path, scope["http_version"], status)
            record = logger.makeRecord(
                logger.name,
                logging.INFO,
                __file__,
                0,
                ACCESS_FORMAT,
                args,
                None,
                extra=self.fields(scope, status, path, client, done - started),
            )
            record.created = created = done + offset
            record.msecs = (created - int(created)) * 1000
            logger.handle(record)

    def fields(
        self, scope: Any, status: int, path: str, client: str, seconds: float
    ) -> dict[str, Any]:
        """The structured log's fields of one request (smartstart/logs.py)."""
        request_id = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id" and REQUEST_ID.fullmatch(value):
                request_id = value.decode()
                break
        principal = (scope.get("state") or {}).get("principal")
        return {
            "request_id": request_id or f"{self.prefix}{next(self.ids)}",
            "method": scope["method"],
            "path": path,
            "route": getattr(scope.get("route"), "path", None),
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "actor": getattr(principal, "user_id", None),
            "client": client,
        }


class _OneWrite:
    """A connection's transport that can hold the headers until the body is written."""

    __slots__ = ("transport", "hold", "held")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.hold = False  # the next write is held
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.hold:
            self.hold = False
            self.held = data
            return
        held = self.held
        if held is not None:
            self.held = None
            data = held + data
        self.transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle, sending headers and body in one write."""

    transport: _OneWrite  # type: ignore[assignment]
    access: AccessLog | None
    started: float  # perf_counter when its headers were read

    async def send(self, message: Any) -> None:
        transport = self.transport
        if message["type"] == "http.response.start" and not self.response_started:
            if self.access is not None:
                self.access.add(self.scope, message["status"], self.started)
            transport.hold = True
            try:
                await super().send(message)
            finally:
                transport.hold = False
            if self.chunked_encoding is not False:
                transport.flush()  # a streamed body: the client gets the headers now
            return
        try:
            await super().send(message)
        finally:
            transport.flush()


class Protocol(HttpToolsProtocol):
    """`uvicorn.Config(http=Protocol)`: one write per response, access log off the loop."""

    _one_write: _OneWrite | None = None
    _access: AccessLog | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._one_write = _OneWrite(transport)
        if self.access_log:
            self._access = _access_log(self.access_logger)

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        # The new cycle's task has not run yet (it starts on the loop's next round).
        if cycle is not previous and cycle is not None and not cycle.response_started:
            cycle.__class__ = _Cycle
            assert isinstance(cycle, _Cycle)
            assert self._one_write is not None
            cycle.transport = self._one_write
            cycle.access = self._access
            cycle.access_log = False  # logged by `cycle.access` instead
            if self._access is not None:
                cycle.started = time.perf_counter()


_access_logs: dict[str, AccessLog] = {}


def _access_log(logger: logging.Logger) -> AccessLog:
    """The one AccessLog of this process for `logger`."""
    found = _access_logs.get(logger.name)
    if found is None:
        found = _access_logs[logger.name] = AccessLog(logger)
    return found
