"""Long-lived tasks tied to a lifespan: started on entry, cancelled and awaited on exit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


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
