"""The per-app-key sliding-window limiter: never N+1 in a window, never slower than needed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.kis.ratelimit import SlidingWindowLimiter, limiter_for, reset_registry


class VirtualClock:
    """Time that passes only when someone sleeps. The limiter lets one waiter sleep at a
    time (the others queue on its lock), so this is exact even with concurrent tasks."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> datetime:
        return datetime(2026, 3, 5, tzinfo=UTC) + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def max_in_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    times = sorted(times)
    for hi, t in enumerate(times):
        while t - times[lo] >= window - 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.fixture(autouse=True)
def _registry():
    reset_registry()
    yield
    reset_registry()


async def test_sequential_requests_go_in_pairs_per_second():
    clock = VirtualClock()
    limiter = SlidingWindowLimiter(2, margin=0.0, clock=clock)
    times = []
    for _ in range(7):
        await limiter.acquire()
        times.append(clock.t)
    assert times == [0, 0, 1, 1, 2, 2, 3]


async def test_no_2n_across_a_second_boundary():
    """A token bucket would let 2 go at 0.9 s and 2 more at 1.0 s: KIS counts 4 in a second."""
    clock = VirtualClock()
    limiter = SlidingWindowLimiter(2, margin=0.0, clock=clock)
    clock.t = 0.9
    await limiter.acquire()
    await limiter.acquire()
    clock.t = 1.0
    await limiter.acquire()
    assert clock.t == pytest.approx(1.9)


async def test_margin_widens_the_window():
    clock = VirtualClock()
    limiter = SlidingWindowLimiter(20, margin=0.1, clock=clock)
    for _ in range(21):
        await limiter.acquire()
    assert clock.t == pytest.approx(1.1)


async def test_concurrent_waiters_virtual_time():
    clock = VirtualClock()
    limiter = SlidingWindowLimiter(3, margin=0.0, clock=clock)
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(clock.t)

    await asyncio.gather(*(one() for _ in range(30)))
    assert sorted(times) == [float(i // 3) for i in range(30)]
    assert max_in_window(times, 1.0) == 3


@settings(max_examples=300, deadline=None, database=None)
@given(
    rate=st.integers(1, 25),
    gaps=st.lists(st.floats(0, 0.7, allow_nan=False), min_size=1, max_size=80),
)
def test_any_arrival_pattern_is_safe_and_not_slower_than_needed(rate: int, gaps: list[float]):
    """Each request goes at the earliest moment the window allows, and never before."""
    clock = VirtualClock()
    limiter = SlidingWindowLimiter(rate, margin=0.0, clock=clock)
    arrivals, granted = [], []

    async def run() -> None:
        t = 0.0
        for gap in gaps:
            t += gap
            clock.t = max(clock.t, t)
            arrivals.append(clock.t)
            await limiter.acquire()
            granted.append(clock.t)

    asyncio.run(run())
    assert max_in_window(granted, 1.0) <= rate
    for i, (arrived, at) in enumerate(zip(arrivals, granted, strict=True)):
        earliest = arrived if i < rate else max(arrived, granted[i - rate] + 1.0)
        assert at == pytest.approx(earliest)


async def test_real_time_concurrency_and_throughput():
    limiter = SlidingWindowLimiter(3, window=0.2, margin=0.0)
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(loop.time())

    started = loop.time()
    await asyncio.gather(*(one() for _ in range(15)))
    elapsed = loop.time() - started
    assert max_in_window(times, 0.2) <= 3
    assert 0.8 <= elapsed < 1.3  # 5 windows: the last batch goes at 0.8 s


async def test_waiting_never_blocks_the_event_loop():
    limiter = SlidingWindowLimiter(1, window=0.3, margin=0.0)
    await limiter.acquire()
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            beats += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(heartbeat())
    await limiter.acquire()  # waits ~0.3 s
    task.cancel()
    assert beats >= 10


async def test_pause_holds_every_request():
    clock = VirtualClock()
    limiter = SlidingWindowLimiter(20, margin=0.0, clock=clock)
    limiter.pause(0.5)
    await limiter.acquire()
    assert clock.t == pytest.approx(0.5)
    limiter.pause(0.2)
    limiter.pause(0.1)  # a shorter pause never shortens a longer one
    await limiter.acquire()
    assert clock.t == pytest.approx(0.7)


async def test_a_cancelled_waiter_takes_no_slot():
    limiter = SlidingWindowLimiter(1, window=0.2, margin=0.0)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_window() == 1
    await asyncio.wait_for(limiter.acquire(), timeout=1)
    assert limiter.granted == 2


async def test_registry_shares_one_limiter_per_app_key():
    a = limiter_for("PSkey-one", 20)
    assert limiter_for("PSkey-one", 20) is a
    assert limiter_for("PSkey-two", 20) is not a
    assert limiter_for("PSkey-one", 2) is a and a.rate == 2  # the stricter budget wins
    assert limiter_for("PSkey-one", 20).rate == 2
    slow = limiter_for("PSkey-three", 0.5)
    assert (slow.rate, slow.window) == (1, pytest.approx(2.1))
    reset_registry()
    assert limiter_for("PSkey-one", 20) is not a
    with pytest.raises(ValueError):
        limiter_for("PSkey-four", 0)


async def test_a_limiter_survives_its_event_loop():
    """The registry outlives event loops (tests, a restarted runner): no loop-bound lock."""
    limiter = SlidingWindowLimiter(1, window=0.05, margin=0.0)

    async def burst() -> None:
        await asyncio.gather(*(limiter.acquire() for _ in range(3)))

    await asyncio.to_thread(asyncio.run, burst())
    await burst()
    assert limiter.granted == 6
