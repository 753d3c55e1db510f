"""Client-side REST throttling for every broker: at most N requests in any window.

Brokers count requests per app key over a sliding window of about a second (KIS:
20/s real, 2/s paper, ``EGW00201`` past it; Kiwoom: ``return_code`` 1700). Each
refused request is wasted latency and, retried blindly, more refusals, so we stay
under the limit ourselves. A token bucket would not do: it allows a full bucket at
the end of one second and another at the start of the next, 2N within one second
as the server counts it. So this is a sliding window.

The window is the server's, and the server stamps a request when it *arrives*,
which we cannot see: a request stamped when it left may arrive late (a new TCP
connection, a busy event loop) while a later one on a warm connection arrives
early, so two requests we sent a full window apart can land closer together at
the server. Hence in-flight slots: a slot stays occupied while its request is in
flight (:meth:`SlidingWindowLimiter.slot`) and its window starts when the response
came back. The request reached the server before that moment, and the next request
using the slot leaves at least ``window`` after it, so no ``window`` at the server
ever holds more than ``rate`` requests, whatever the latency. ``margin`` pads the
window further for servers that count in coarse buckets or with their own jitter.
:meth:`SlidingWindowLimiter.acquire` is for instantaneous events (the window starts
at once), which is only as safe as the latency is steady.

When the server does answer "too many requests" anyway (another process on the
same key, a stricter limit than documented), :meth:`SlidingWindowLimiter.pause`
holds every slot of the key back for a while, rather than letting each caller keep
hitting the server on its own schedule.

Every client of the same app key must share one limiter, whichever account object
or task holds it, so :func:`limiter_for` keeps limiters in a process-wide registry
keyed by a digest of the app key: the key itself is a credential and is never
stored or logged. Waiting is ``asyncio`` sleep, never a blocking call; clock and
sleep are injectable so tests can run in virtual time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

__all__ = ["SlidingWindowLimiter", "limiter_for", "reset_registry"]

_EPSILON = 1e-9  # below a nanosecond, a wait is float noise
_RELEASE_POLL_S = 1.0
"""How long a waiter trusts the release signal before looking again. A slot released
on another event loop (a registry limiter outlives loops) cannot wake this one."""

MonotonicClock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


async def _real_sleep(seconds: float) -> None:
    await asyncio.sleep(max(0.0, seconds))


class _Slot:
    """One of ``rate`` places in the window: in flight until ``done`` is set."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done: float | None = None  # None while the request is in flight


@dataclass(slots=True)
class _LoopState:
    """The lock and release signal of one event loop (asyncio primitives bind to a loop)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    released: asyncio.Event = field(default_factory=asyncio.Event)


class SlidingWindowLimiter:
    """``rate`` requests per ``window + margin`` seconds, first come first served.

    Waiters queue behind one lock (per event loop), so a burst is released in arrival
    order, none starves and there is no thundering herd. A slot is taken only when
    the wait is over and measured after it, so a task that wakes late never borrows
    a slot in the past, and a waiter cancelled while waiting takes no slot at all.

    ``window`` (the attribute) is the effective window, margin included. ``rate`` may
    be lowered while in use (:func:`limiter_for`); slots already taken then simply
    keep later requests waiting longer.
    """

    def __init__(
        self,
        rate: int,
        window: float = 1.0,
        *,
        margin: float = 0.0,
        clock: MonotonicClock = time.monotonic,
        sleep: Sleep = _real_sleep,
    ) -> None:
        if rate < 1:
            raise ValueError(f"rate must be at least 1 request per window, got {rate}")
        if window <= 0 or margin < 0:
            raise ValueError("window must be positive and margin not negative")
        self.rate = rate
        self.window = window + margin
        self._clock = clock
        self._sleep = sleep
        self._slots: list[_Slot] = []
        self._paused_until = float("-inf")
        # A registry limiter can outlive an event loop (tests, a restarted runner),
        # so its asyncio primitives are kept per loop rather than bound to the first.
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self.granted = 0
        self.waited_s = 0.0

    def __repr__(self) -> str:
        return f"SlidingWindowLimiter(rate={self.rate}, window={self.window:g})"

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        return state

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of ``rate`` slots for the duration of a request.

        The slot's window starts when the block exits, however it exits: a request
        that failed or was cancelled may still have reached the server.
        """
        slot = await self._reserve()
        try:
            yield
        finally:
            self._release(slot)

    async def acquire(self) -> None:
        """Take a slot for an instantaneous event (its window starts now)."""
        slot = await self._reserve()
        slot.done = self._clock()

    def pause(self, seconds: float) -> None:
        """Hold every new request for ``seconds`` (after the server said "too many").

        A shorter pause never shortens a longer one already running.
        """
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def in_window(self) -> int:
        """Slots taken now: requests in flight or sent within the window (status, tests)."""
        self._delay(self._clock())
        return len(self._slots)

    def _release(self, slot: _Slot) -> None:
        slot.done = self._clock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a coroutine closed outside its loop: nobody to wake here
            return
        state = self._loops.get(loop)
        if state is not None:
            state.released.set()

    def _delay(self, now: float) -> float | None:
        """Seconds until a slot is free (0: now; None: only once a request comes back).

        Prunes the slots whose window is over. The same ``now - done`` expression
        prunes and waits, and waits below a nanosecond count as none, so float
        rounding can never let a request through early or keep one waiting forever.
        """
        self._slots = [s for s in self._slots if s.done is None or now - s.done < self.window]
        delay = max(0.0, self._paused_until - now)
        excess = len(self._slots) - self.rate + 1  # slots that must free up first
        if excess > 0:
            finished = sorted(s.done for s in self._slots if s.done is not None)
            if len(finished) < excess:
                return None
            delay = max(delay, self.window - (now - finished[excess - 1]))
        return delay if delay > _EPSILON else 0.0

    async def _reserve(self) -> _Slot:
        """Wait until a slot is free, then take it (in arrival order, via the lock)."""
        state = self._state()
        async with state.lock:
            start = self._clock()
            while True:
                now = self._clock()
                delay = self._delay(now)
                if delay == 0.0:
                    break
                if delay is not None:
                    await self._sleep(delay)
                    continue
                # Every slot is in flight: wait for one to come back. Only the lock
                # holder waits here, so clearing first cannot lose a release.
                state.released.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(state.released.wait(), _RELEASE_POLL_S)
            slot = _Slot()
            self._slots.append(slot)
            self.granted += 1
            self.waited_s += now - start
            return slot


_registry: dict[str, SlidingWindowLimiter] = {}


def _key_id(app_key: str) -> str:
    """A short, stable, non-reversible name for an app key (registry key, logs)."""
    return hashlib.sha256(app_key.encode("utf-8")).hexdigest()[:16]


def limiter_for(
    app_key: str,
    rate_per_s: float,
    *,
    margin: float = 0.0,
    clock: MonotonicClock = time.monotonic,
    sleep: Sleep = _real_sleep,
) -> SlidingWindowLimiter:
    """The process-wide limiter of ``app_key``, created on first use.

    A later caller asking for a lower rate lowers it for everyone: the stricter
    reading of the key's budget is the one that avoids refusals. ``margin``,
    ``clock`` and ``sleep`` apply only when the limiter is created.
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
            rate, window, margin=margin, clock=clock, sleep=sleep
        )
    elif rate < limiter.rate:
        log.info("rate limit of app key %s lowered from %d/s to %d/s", key, limiter.rate, rate)
        limiter.rate = rate
    return limiter


def reset_registry() -> None:
    """Forget every limiter (tests; a process that reloads its configuration)."""
    _registry.clear()
