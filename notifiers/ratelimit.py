"""Small async rate limiting for notifiers: sliding windows and hold-offs.

Chat services count messages where they *arrive* (Telegram: about 1 a second per
chat, 30 a second per bot; Discord: a bucket per webhook). A request stamped when it
left may arrive late while a later one arrives early, so a limiter that only spaces
departures can still put N+1 arrivals in one server window. Hence in-flight slots,
as in ``brokers.ratelimit`` (which notifiers may not import: they depend on
``engines`` and libraries only): a slot is occupied while its request is in flight
and its window starts when the response came back. The request reached the server
before that, and the next request through the slot leaves a full window later, so
no server window ever holds more than ``count`` of ours, whatever the latency.

:class:`Holdoff` remembers "do not contact this key before T" after a server said
429 or a bucket ran dry, so a sender can wait briefly or hand the delay back to the
delivery worker instead of hammering the server.

Waiting is ``asyncio`` sleep (never blocking); clock and sleep are injectable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

__all__ = ["Holdoff", "KeyedLimiter", "MonotonicClock", "Sleep", "WindowLimiter", "real_sleep"]

MonotonicClock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_EPSILON = 1e-9  # below a nanosecond, a wait is float noise
_RELEASE_POLL_S = 1.0  # a waiter re-checks even if a release signal went missing
_PRUNE_AT = 1024  # idle per-key state is dropped once this many keys are tracked


async def real_sleep(seconds: float) -> None:
    await asyncio.sleep(max(0.0, seconds))


class _Slot:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done: float | None = None  # None while the request is in flight


class WindowLimiter:
    """At most ``rate_per_s`` requests a second, as the server counts arrivals.

    A rate of 5/s is 5 slots per 1 s window; below one (0.5/s) it is one slot per
    1/rate seconds. Waiters queue on one lock, so bursts go out in arrival order and
    none starves.
    """

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = real_sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate must be positive, got {rate_per_s}")
        self.count = max(1, int(rate_per_s))
        self.window = self.count / rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._slots: list[_Slot] = []
        self._lock: asyncio.Lock | None = None
        self._released: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"WindowLimiter(count={self.count}, window={self.window:g})"

    def idle(self) -> bool:
        """True when nothing is in flight or inside the window (safe to forget)."""
        self._prune(self._clock())
        return not self._slots and not (self._lock is not None and self._lock.locked())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for one request; its window starts when the block exits,
        however it exits (a failed or cancelled request may have reached the server)."""
        slot = await self._reserve()
        try:
            yield
        finally:
            slot.done = self._clock()
            if self._released is not None:
                self._released.set()

    def _prune(self, now: float) -> None:
        self._slots = [s for s in self._slots if s.done is None or now - s.done < self.window]

    async def _reserve(self) -> _Slot:
        if self._lock is None:
            self._lock, self._released = asyncio.Lock(), asyncio.Event()
        assert self._released is not None
        async with self._lock:
            while True:
                now = self._clock()
                self._prune(now)
                if len(self._slots) < self.count:
                    slot = _Slot()
                    self._slots.append(slot)
                    return slot
                finished = [s.done for s in self._slots if s.done is not None]
                if finished:
                    # A release never frees a place (it starts a window), so the
                    # earliest finished window is the first chance.
                    delay = self.window - (now - min(finished))
                    if delay > _EPSILON:
                        await self._sleep(delay)
                    continue
                # All in flight: only the lock holder waits here, so clearing first
                # cannot lose a release.
                self._released.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._released.wait(), _RELEASE_POLL_S)


class KeyedLimiter:
    """One :class:`WindowLimiter` per key (a chat), created on demand, idle ones pruned."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = real_sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate must be positive, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[str, WindowLimiter] = {}

    def __len__(self) -> int:
        return len(self._limiters)

    def get(self, key: str) -> WindowLimiter:
        limiter = self._limiters.get(key)
        if limiter is None:
            if len(self._limiters) >= _PRUNE_AT:
                self._limiters = {k: v for k, v in self._limiters.items() if not v.idle()}
            limiter = self._limiters[key] = WindowLimiter(
                self.rate_per_s, clock=self._clock, sleep=self._sleep
            )
        return limiter


class Holdoff:
    """Per-key "not before" deadlines from a server's 429 or an empty bucket."""

    def __init__(self, clock: MonotonicClock = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def hold(self, key: str, seconds: float) -> None:
        """No request for ``key`` during ``seconds``; a shorter hold never shortens a longer."""
        if seconds <= 0:
            return
        now = self._clock()
        if len(self._until) >= _PRUNE_AT:
            self._until = {k: t for k, t in self._until.items() if t > now}
        self._until[key] = max(self._until.get(key, now), now + seconds)

    def remaining(self, key: str) -> float:
        """Seconds left before ``key`` may be contacted again (0.0: now)."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= _EPSILON:
            del self._until[key]
            return 0.0
        return left
