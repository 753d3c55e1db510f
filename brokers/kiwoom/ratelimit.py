"""A client-side limit on Kiwoom REST calls per second.

Kiwoom counts requests per app key and answers ``return_code`` 1700 past its limit.
Each refused call is wasted latency, so we stay under the limit ourselves: at most
``rate`` requests in any sliding window of ``window`` seconds *as the server sees
them*.

Kiwoom measures arrival times, which we cannot see: a request stamped when it
left may arrive late (a new TCP connection, a busy event loop) while a later one
on a warm connection arrives early, and two requests we sent a full window apart
land closer together at the server. So a slot stays occupied while its request
is in flight and its window starts when the response came back. The request
reached the server before that moment, and the next request using the slot
leaves at least ``window`` after it, so no ``window`` at the server ever holds
more than ``rate`` requests, whatever the latency. ``margin`` pads the window
further for servers that count in coarse buckets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

__all__ = ["SlidingWindowLimiter"]


class _Slot:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done: float | None = None  # None while the request is in flight


class SlidingWindowLimiter:
    def __init__(
        self,
        rate: int,
        window: float = 1.0,
        *,
        margin: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate < 1:
            raise ValueError(f"rate must be >= 1, got {rate}")
        if window <= 0 or margin < 0:
            raise ValueError("window must be > 0 and margin >= 0")
        self.rate = rate
        self._span = window + margin
        self._clock = clock
        self._sleep = sleep
        self._slots: list[_Slot] = []
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of ``rate`` slots for the duration of a request."""
        slot = await self._reserve()
        try:
            yield
        finally:
            slot.done = self._clock()
            self._released.set()

    async def acquire(self) -> None:
        """Take a slot for an instantaneous event (its window starts now)."""
        slot = await self._reserve()
        slot.done = self._clock()

    async def _reserve(self) -> _Slot:
        """Wait until a slot is free, then take it. Waiters queue on a lock, so they
        are served in arrival order and none starves."""
        async with self._lock:
            while True:
                now = self._clock()
                self._slots = [
                    s for s in self._slots if s.done is None or now - s.done < self._span
                ]
                if len(self._slots) < self.rate:
                    slot = _Slot()
                    self._slots.append(slot)
                    return slot
                finished = [s.done for s in self._slots if s.done is not None]
                if finished:
                    await self._sleep(min(finished) + self._span - now)
                else:  # every slot is in flight: wait for one to come back
                    self._released.clear()
                    await self._released.wait()
