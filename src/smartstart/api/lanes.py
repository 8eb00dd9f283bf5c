"""A bounded lane for unauthenticated work, so that a flood of it cannot take the
database connections and threads that signed-in users need.

A sign-in costs a quarter of a second of bcrypt and, briefly, two pooled connections,
and anyone can send one. Sign-ins therefore run in a lane of their own: at most
`size` at work (so at most `size` worker threads and connections, a quarter of the
pool), at most `queue` waiting, each for at most `wait` seconds. Past that the answer
is an immediate 503 with Retry-After, not a place in an endless queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from anyio import from_thread
from fastapi import Request
from psycopg_pool import PoolTimeout

from smartstart.domain.auth import Transaction
from smartstart.domain.errors import TooManyRequests

QUEUE = 16  # sign-ins waiting for the lane, beyond those at work
WAIT = 5.0  # seconds one of them waits at most
RETRY_AFTER = 1


class Busy(TooManyRequests):
    """The lane is full: 503, with Retry-After (the API's handler sets it for this class)."""

    status = 503
    code = "busy"


class Lane:
    """At most `size` holders at once, at most `queue` waiting, none waiting over `wait` s."""

    def __init__(self, size: int, *, queue: int = QUEUE, wait: float = WAIT) -> None:
        self.size = size
        self.queue = queue
        self.wait = wait
        self._slots = asyncio.Semaphore(size)
        self._waiting = 0

    def _busy(self) -> Busy:
        return Busy(
            "too many sign-ins in progress; try again shortly",
            retry_after=RETRY_AFTER,
            details={"reason": "busy"},
        )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the lane's places for the block; Busy when none comes soon."""
        if self._slots.locked() and self._waiting >= self.queue:
            raise self._busy()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait):
                await self._slots.acquire()
        except TimeoutError:
            raise self._busy() from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()


def anonymous(request: Request) -> Lane:
    """The app's lane for sign-ins: a quarter of its pool, at least one."""
    state = request.app.state
    lane: Lane | None = getattr(state, "anonymous_lane", None)
    if lane is None:
        lane = state.anonymous_lane = Lane(max(1, state.pool.max_size // 4))
    return lane


async def _take(slots: asyncio.Semaphore, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await slots.acquire()
    except TimeoutError:
        raise PoolTimeout(f"no database connection within {timeout} s") from None


def transactions(request: Request) -> Transaction:
    """Short transactions on the app's pool, for code running in a worker thread.

    Each takes one of the app's connection slots first, on the event loop, as
    `deps.get_conn` does: a worker thread never parks in the pool waiting.
    """
    pool = request.app.state.pool
    slots: asyncio.Semaphore = request.app.state.conn_slots

    @contextmanager
    def transaction() -> Iterator[psycopg.Connection[Any]]:
        from_thread.run(_take, slots, pool.timeout)
        try:
            conn = pool.getconn()
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            else:
                conn.commit()
            finally:
                pool.putconn(conn)
        finally:
            from_thread.run_sync(slots.release)

    return transaction
