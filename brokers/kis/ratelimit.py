"""Per-app-key REST throttling: at most N requests in any one-second window.

KIS counts requests per app key (20/s real, 2/s paper) and answers ``EGW00201``
past the limit. A token bucket would allow a full bucket at the end of one second
and another at the start of the next (2N within a second), which KIS counts as a
violation, so this is a sliding window over the times requests were actually let
through. The window is a little longer than a second (``margin``): the server
stamps a request when it arrives, and network and scheduling jitter between our
send and its arrival can otherwise squeeze N+1 arrivals into its one-second window.

Every client of the same app key must share one limiter, whichever account object
or task holds it, so limiters live in a process-wide registry keyed by the app key
(by a digest of it: the key itself is a credential). Waiting is ``asyncio`` sleep,
never a blocking call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections import deque

from brokers.kis.clock import Clock, SystemClock

log = logging.getLogger(__name__)

__all__ = ["SlidingWindowLimiter", "limiter_for", "reset_registry"]

DEFAULT_MARGIN_S = 0.1
_EPSILON = 1e-9  # below a nanosecond, a wait is float noise


class SlidingWindowLimiter:
    """``rate`` requests per ``window + margin`` seconds, first come first served.

    ``acquire`` returns when a request may be sent now. Waiters queue behind one
    lock (per event loop), so a burst is released in arrival order and never in a
    thundering herd. The times kept are the times ``acquire`` returned, measured
    after the wait, so a task that wakes late never borrows a slot in the past.
    """

    def __init__(
        self,
        rate: int,
        *,
        window: float = 1.0,
        margin: float = DEFAULT_MARGIN_S,
        clock: Clock | None = None,
    ) -> None:
        if rate < 1:
            raise ValueError(f"rate must be at least 1 request per window, got {rate}")
        if window <= 0 or margin < 0:
            raise ValueError("window must be positive and margin not negative")
        self.rate = rate
        self.window = window + margin
        self.clock: Clock = clock or SystemClock()
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        # asyncio.Lock binds to the loop it first waits in; a registry limiter can
        # outlive a loop (tests, a restarted runner), so keep one lock per loop.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self.granted = 0
        self.waited_s = 0.0

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def _delay(self, now: float) -> float:
        """Seconds until the next request may go (0 when it may go now).

        The request that must leave the window is the ``rate``-th most recent one;
        the same ``now - sent`` expression prunes and waits, so float rounding can
        never let one through early or keep one waiting forever.
        """
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()
        delay = max(0.0, self._paused_until - now)
        if len(self._sent) >= self.rate:
            delay = max(delay, self.window - (now - self._sent[-self.rate]))
        return delay if delay > _EPSILON else 0.0

    async def acquire(self) -> None:
        """Wait for a slot and take it."""
        async with self._lock():
            start = self.clock.monotonic()
            while True:
                now = self.clock.monotonic()
                delay = self._delay(now)
                if delay <= 0:
                    break
                await self.clock.sleep(delay)
            self._sent.append(now)
            self.granted += 1
            self.waited_s += now - start

    def pause(self, seconds: float) -> None:
        """Hold every request of this key for ``seconds`` (after the server said EGW00201)."""
        self._paused_until = max(self._paused_until, self.clock.monotonic() + seconds)

    def in_window(self) -> int:
        """Requests sent within the current window (for status pages and tests)."""
        self._delay(self.clock.monotonic())
        return len(self._sent)


_registry: dict[str, SlidingWindowLimiter] = {}


def _key_id(app_key: str) -> str:
    return hashlib.sha256(app_key.encode("utf-8")).hexdigest()[:16]


def limiter_for(
    app_key: str,
    rate_per_s: float,
    *,
    margin: float = DEFAULT_MARGIN_S,
    clock: Clock | None = None,
) -> SlidingWindowLimiter:
    """The process-wide limiter of ``app_key``, created on first use.

    A later caller asking for a lower rate lowers it for everyone: the stricter
    reading of the key's budget is the one that avoids EGW00201.
    """
    if rate_per_s <= 0:
        raise ValueError(f"rate must be positive, got {rate_per_s}")
    # Below one a second (e.g. 0.5/s), one request per 1/rate seconds.
    rate = max(1, int(rate_per_s))
    window = 1.0 if rate_per_s >= 1 else 1.0 / rate_per_s
    key = _key_id(app_key)
    limiter = _registry.get(key)
    if limiter is None:
        limiter = _registry[key] = SlidingWindowLimiter(
            rate, window=window, margin=margin, clock=clock
        )
    elif rate < limiter.rate:
        log.info("KIS rate limit of app key %s lowered from %d/s to %d/s", key, limiter.rate, rate)
        limiter.rate = rate
    return limiter


def reset_registry() -> None:
    """Forget every limiter (tests; a process that reloads its configuration)."""
    _registry.clear()
