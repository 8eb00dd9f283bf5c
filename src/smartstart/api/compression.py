"""gzip for large responses, and nothing at all for the small hot ones.

A page of 500 users is ~195 KB of JSON and ~15 KB gzipped. Starlette's GZipMiddleware
parses the request's and the response's headers into objects and holds every response
start on every request; this one scans the raw headers once and steps aside unless the
client accepts gzip and the response is large (or streamed) and compressible.
"""

from __future__ import annotations

import zlib

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MIN_SIZE = 1024  # bytes: below this, gzip's header and the CPU cost more than they save
THREAD_SIZE = 64 * 1024  # bytes: compressing more (~2 ms and up) would stall the event loop
LEVEL = 6  # zlib's default: most of level 9's ratio for a third of its time
_COMPRESSIBLE = (b"application/json", b"text/", b"application/javascript", b"image/svg+xml")
_VARY = (b"vary", b"Accept-Encoding")


def _accepts_gzip(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            if b"gzip" not in value:
                return False
            if b"q=" not in value:  # what browsers and clients send: "gzip, deflate, br"
                return True
            # "gzip;q=0" refuses it; any other weight accepts it.
            for item in value.lower().split(b","):
                coding, _, params = item.strip().partition(b";")
                if coding.strip() == b"gzip":
                    weight: bytes = params.replace(b" ", b"").removeprefix(b"q=")
                    return weight.strip(b"0.") != b""
            return False
    return False


def _gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # 31: a gzip container
    return compressor.compress(body) + compressor.flush()


class GZip:
    """Compress responses of MIN_SIZE bytes or more (or streamed) for clients that accept it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _accepts_gzip(scope):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        compressor: zlib._Compress | None = None
        passing = False

        async def gzip_send(message: Message) -> None:
            nonlocal start, compressor, passing
            if passing:
                await send(message)
                return
            kind = message["type"]
            if kind == "http.response.start":
                if _worth_it(message):
                    start = message  # held until the first body says how large it is
                else:
                    passing = True
                    await send(message)
                return
            if kind != "http.response.body" or start is None and compressor is None:
                await send(message)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if start is not None:
                held, start = start, None
                if not more and len(body) < MIN_SIZE:
                    passing = True
                    await send(held)
                    await send(message)
                    return
                headers = [(k, v) for k, v in held.get("headers", []) if k != b"content-length"]
                headers.append((b"content-encoding", b"gzip"))
                headers.append(_VARY)
                if not more:
                    if len(body) > THREAD_SIZE:
                        body = await run_in_threadpool(_gzip, body)
                    else:
                        body = _gzip(body)
                    headers.append((b"content-length", str(len(body)).encode()))
                    held["headers"] = headers
                    await send(held)
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                    return
                held["headers"] = headers
                await send(held)
                compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)
            assert compressor is not None
            data = compressor.compress(body)
            if not more:
                data += compressor.flush()
            await send({"type": "http.response.body", "body": data, "more_body": more})

        await self.app(scope, receive, gzip_send)


def _worth_it(start: Message) -> bool:
    """Compressible, not already encoded, and not known to be small."""
    if start["status"] in (204, 206, 304):
        return False
    compressible = False
    for name, value in start.get("headers", ()):
        if name == b"content-length":
            if value.isdigit() and int(value) < MIN_SIZE:
                return False
        elif name == b"content-type":
            compressible = value.lower().startswith(_COMPRESSIBLE)
        elif name == b"content-encoding":
            return False
    return compressible
