"""The Brain's edge: what every HTTP request passes through before routing.

One pure-ASGI middleware, so a request pays one header loop and two small closures:

- request headers over `MAX_HEADER_BYTES` in total are a 431, before anything stores them;
- a NUL byte in the path, the query string or the body (raw, a JSON `\\u0000` escape, a form
  `%00`) is a 422: PostgreSQL refuses NUL in text, and it used to surface as a 500;
- `X-Forwarded-For` is believed only from a peer in `SMARTSTART_TRUSTED_PROXIES`;
- every response gets `X-Content-Type-Options: nosniff`, a response to a request carrying
  credentials `Cache-Control: no-store`, and a redirect a relative `Location` (Starlette builds
  absolute ones from the client's own `Host` header);
- a request whose transaction lost a deadlock, or met a pooled connection that a database
  restart killed before it committed anything, is run again: the exception handlers mark such
  responses with `RETRY_HEADER`, and this middleware drops them unsent and replays the request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartstart.api import errors
from smartstart.config import Settings

MAX_HEADER_BYTES = 16 * 1024  # all names and values; a browser with big cookies sends ~4 KiB
MAX_ATTEMPTS = 3  # a deadlocked or serialization-failed transaction runs at most this often
RETRY_BACKOFF = 0.05  # seconds: the jittered pause before attempt n is up to n times this
NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")
_RETRY = errors.RETRY_HEADER.encode()
_WATCHED = frozenset(
    {
        b"authorization",
        b"cookie",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"content-type",
    }
)
# Requests that carry no body: nothing to scan, nor to replay on a retry.
_BODILESS = frozenset({"GET", "HEAD"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def forwarded_client(header: str, trusted: Sequence[Network]) -> str | None:
    """The client address an X-Forwarded-For chain names, or None when it is unusable.

    The right-most hop that is not a trusted proxy: everything left of it was written by
    the client itself. A hop that is not an IP address makes the whole header unusable.
    """
    hops = [hop.strip() for hop in header.split(",")]
    for hop in reversed(hops):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return None
        if not any(address in net for net in trusted):
            return str(address)
    return str(ipaddress.ip_address(hops[0]))  # every hop is a proxy of ours


def _is_trusted(host: str, trusted: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in trusted)


def _nul_in(data: bytes, form: bool) -> bool:
    """A NUL in a body: raw, as a JSON escape (not an escaped backslash), or %00 in a form."""
    if b"\x00" in data or (form and b"%00" in data):
        return True
    start = data.find(b"\\u0000")
    while start >= 0:
        run = 1
        while start - run >= 0 and data[start - run] == 0x5C:  # backslashes before it
            run += 1
        if run % 2:  # "\\u0000" is a backslash followed by text, not a NUL
            return True
        start = data.find(b"\\u0000", start + 1)
    return False


def _relative(location: bytes, host: bytes) -> bytes:
    """`location` without scheme and host when it points at the request's own Host."""
    url = urlsplit(location.decode("latin-1"))
    if not url.netloc or url.netloc.encode("latin-1") != host:
        return location
    path = url.path or "/"
    return (path + (f"?{url.query}" if url.query else "")).encode("latin-1")


class Edge:
    """The checks and headers above, as one pure ASGI middleware."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.trusted = settings.trusted_networks()
        self.max_header_bytes = MAX_HEADER_BYTES

    async def _reject(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        code: str,
        message: str,
        details: dict[str, str],
    ) -> None:
        response = errors.error_response(status, code, message, details)
        response.raw_headers.append(NOSNIFF)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: C901
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        total = 0
        credentialed = False
        host = b""
        forwarded: bytes | None = None
        proto: bytes | None = None
        form = False
        for name, value in scope["headers"]:
            total += len(name) + len(value)
            if name in _WATCHED:
                if name == b"authorization" or name == b"cookie":
                    credentialed = True
                elif name == b"host":
                    host = value
                elif name == b"x-forwarded-for":
                    forwarded = value if forwarded is None else forwarded + b"," + value
                elif name == b"x-forwarded-proto":
                    proto = value
                else:
                    form = value.startswith(b"application/x-www-form-urlencoded")
        if total > self.max_header_bytes:
            await self._reject(
                scope,
                receive,
                send,
                431,
                "headers_too_large",
                f"request headers are limited to {self.max_header_bytes} bytes in total",
                {"limit": str(self.max_header_bytes)},
            )
            return
        query = scope.get("query_string", b"")
        where = (
            "path"
            if "\x00" in scope["path"]
            else "query"
            if b"%00" in query or b"\x00" in query
            else None
        )
        if where is not None:
            await self._reject(
                scope,
                receive,
                send,
                422,
                "invalid",
                f"the request's {where} contains a NUL character",
                {"reason": "nul_byte", "where": where},
            )
            return
        if forwarded is not None and self.trusted:
            self._forward(scope, forwarded, proto)

        # Every message the app has read, so a retried attempt reads the same body.
        recorded: list[Message] = []
        replay: list[Message] = []
        app_receive = receive
        if scope["method"] not in _BODILESS:
            tail = b""

            async def edge_receive() -> Message:
                nonlocal tail
                if replay:
                    return replay.pop(0)
                message = await receive()
                recorded.append(message)
                if message["type"] == "http.request":
                    body = message.get("body", b"")
                    if body:
                        data = tail + body
                        if _nul_in(data, form):
                            raise errors.NulInput()
                        tail = data[-16:]
                return message

            app_receive = edge_receive

        retry: bytes | None = None
        dropping = False

        async def edge_send(message: Message) -> None:
            nonlocal retry, dropping
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), NOSNIFF]
                if status == 409 or status == 503:
                    marker = next((v for k, v in headers if k == _RETRY), None)
                    if marker is not None:
                        headers = [h for h in headers if h[0] != _RETRY]
                        if self._may_retry(marker, attempt, stale_retried):
                            retry, dropping = marker, True
                            return
                elif 300 <= status < 400:
                    headers = [
                        (k, _relative(v, host)) if k == b"location" else (k, v) for k, v in headers
                    ]
                if credentialed:
                    for k, _ in headers:
                        if k == b"cache-control":
                            break
                    else:
                        headers.append(NO_STORE)
                message["headers"] = headers
            elif dropping:
                return
            await send(message)

        attempt = 1
        stale_retried = False
        while True:
            await self.app(scope, app_receive, edge_send)
            if retry is None:
                return
            if retry == b"stale":
                stale_retried = True
            else:
                # Jitter: two transactions that deadlocked must not collide again in step.
                await asyncio.sleep(random.uniform(0, RETRY_BACKOFF * attempt))  # noqa: S311
            attempt += 1
            retry, dropping = None, False
            replay[:] = recorded

    @staticmethod
    def _may_retry(marker: bytes, attempt: int, stale_retried: bool) -> bool:
        if marker == b"stale":
            return not stale_retried  # once: the pools have dropped their dead connections
        return attempt < MAX_ATTEMPTS

    def _forward(self, scope: Scope, forwarded: bytes, proto: bytes | None) -> None:
        client = scope.get("client")
        if not client or not _is_trusted(client[0], self.trusted):
            return
        address = forwarded_client(forwarded.decode("latin-1"), self.trusted)
        if address is not None:
            scope["client"] = (address, 0)
        if proto in (b"http", b"https"):
            scope["scheme"] = proto.decode()
