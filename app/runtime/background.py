"""Long-lived tasks tied to a lifespan: started on entry, cancelled and awaited on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_FIRST = 0.5
RETRY_MAX = 10.0


@contextlib.asynccontextmanager
async def running(**work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Each keyword names a task; a worker shutting down waits for all of them to stop,
    so none is left half-way through a write when the process exits."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in work.items()]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def consume(
    what: str, stream: Callable[[], AsyncIterator[T]], handle: Callable[[T], Awaitable[None]]
) -> None:
    """Read ``stream()`` forever, opening it again with backoff when it breaks (Redis
    restarting): a worker's live prices and pop-ups come back without a restart."""
    delay = RETRY_FIRST
    while True:
        try:
            async for item in stream():
                delay = RETRY_FIRST
                await handle(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s interrupted; reopening in %.1fs: %r", what, delay, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)
