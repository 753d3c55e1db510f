"""The shared sliding-window limiter: never N+1 in a window, never slower than needed.

Most tests run in virtual time (a clock that moves only when the limiter sleeps);
a few use real time to check that waiting never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.ratelimit import SlidingWindowLimiter, limiter_for, reset_registry


class VirtualClock:
    """Time that passes only when someone sleeps. The limiter lets one waiter sleep at a
    time (the others queue on its lock), so this is exact even with concurrent tasks."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def virtual(
    rate: int, window: float = 1.0, *, margin: float = 0.0
) -> tuple[SlidingWindowLimiter, VirtualClock]:
    clock = VirtualClock()
    limiter = SlidingWindowLimiter(
        rate, window, margin=margin, clock=clock.monotonic, sleep=clock.sleep
    )
    return limiter, clock


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


# --- acquire: instantaneous events ---------------------------------------------------


async def test_sequential_requests_go_in_pairs_per_second():
    limiter, clock = virtual(2)
    times = []
    for _ in range(7):
        await limiter.acquire()
        times.append(clock.t)
    assert times == [0, 0, 1, 1, 2, 2, 3]


async def test_limiter_admits_rate_per_window_on_a_fake_clock():
    clock = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock[0] += seconds

    limiter = SlidingWindowLimiter(3, 1.0, margin=0.0, clock=lambda: clock[0], sleep=sleep)
    stamps = []
    for _ in range(7):
        await limiter.acquire()
        stamps.append(clock[0])
    assert stamps == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0]
    assert slept == [1.0, 1.0]  # one sleep per full window, no polling


@pytest.mark.parametrize(
    "kwargs", [{"rate": 0}, {"rate": 1, "window": 0.0}, {"rate": 1, "margin": -0.1}]
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]):
    with pytest.raises(ValueError):
        SlidingWindowLimiter(**kwargs)  # type: ignore[arg-type]


async def test_no_2n_across_a_second_boundary():
    """A token bucket would let 2 go at 0.9 s and 2 more at 1.0 s: KIS counts 4 in a second."""
    limiter, clock = virtual(2)
    clock.t = 0.9
    await limiter.acquire()
    await limiter.acquire()
    clock.t = 1.0
    await limiter.acquire()
    assert clock.t == pytest.approx(1.9)


async def test_margin_widens_the_window():
    limiter, clock = virtual(20, margin=0.1)
    assert limiter.window == pytest.approx(1.1)
    for _ in range(21):
        await limiter.acquire()
    assert clock.t == pytest.approx(1.1)


async def test_concurrent_waiters_virtual_time():
    limiter, clock = virtual(3)
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
    limiter, clock = virtual(rate)
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


# --- slot: requests in flight --------------------------------------------------------


async def test_limiter_window_starts_when_the_response_is_back():
    """A slot is busy while its request is in flight; its window opens at the reply,
    so the server never sees two requests of one slot closer than the window."""
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    limiter = SlidingWindowLimiter(1, 1.0, clock=lambda: clock[0], sleep=sleep)
    started: list[tuple[str, float]] = []

    async def request(name: str, duration: float) -> None:
        async with limiter.slot():
            started.append((name, clock[0]))
            clock[0] += duration

    await request("a", 0.3)
    await request("b", 0.0)
    assert started == [("a", 0.0), ("b", pytest.approx(1.3))]

    gate = asyncio.Event()

    async def in_flight() -> None:
        async with limiter.slot():
            await gate.wait()

    clock[0] = 3.0
    holder = asyncio.create_task(in_flight())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(request("c", 0.0))
    await asyncio.sleep(0.02)
    assert not waiter.done()  # every slot is in flight: nothing may leave
    assert limiter.in_window() == 1
    clock[0] = 5.0
    gate.set()
    await holder
    await waiter
    assert started[-1] == ("c", pytest.approx(6.0))


@settings(max_examples=200, deadline=None, database=None)
@given(
    rate=st.integers(1, 6),
    latencies=st.lists(st.floats(0, 2.5, allow_nan=False), min_size=1, max_size=40),
)
def test_concurrent_slots_never_put_more_than_rate_in_a_server_window(
    rate: int, latencies: list[float]
):
    """Whatever each request's latency, its arrival (anywhere between send and reply)
    is at least a window after the arrival of the request that used its slot before."""
    limiter, clock = virtual(rate)
    spans: list[tuple[float, float]] = []  # (sent, replied)

    async def request(latency: float) -> None:
        async with limiter.slot():
            sent = clock.t
            await clock.sleep(latency)
            spans.append((sent, clock.t))

    async def run() -> None:
        await asyncio.gather(*(request(latency) for latency in latencies))

    asyncio.run(run())
    assert len(spans) == len(latencies)
    # Worst case for the server: every request arrives as late as possible (at its
    # reply), or as early as possible (when sent); both must respect the limit.
    assert max_in_window([replied for _, replied in spans], 1.0) <= rate
    assert max_in_window([sent for sent, _ in spans], 1.0) <= rate


async def test_a_failed_or_cancelled_request_still_uses_its_window():
    """It may have reached the server: its slot is busy for a window after it ended."""
    limiter, clock = virtual(1)
    with pytest.raises(RuntimeError):
        async with limiter.slot():
            clock.t = 0.5
            raise RuntimeError("connection reset")
    assert limiter.in_window() == 1
    await limiter.acquire()
    assert clock.t == pytest.approx(1.5)


async def test_a_lowered_rate_waits_for_the_extra_slots():
    limiter, clock = virtual(3)
    for _ in range(3):
        await limiter.acquire()
    limiter.rate = 1  # a stricter budget arrived while three slots were taken
    await limiter.acquire()
    assert clock.t == pytest.approx(1.0)
    await limiter.acquire()
    assert clock.t == pytest.approx(2.0)


# --- pause, cancellation, event loops ------------------------------------------------


async def test_pause_holds_every_request():
    limiter, clock = virtual(20)
    limiter.pause(0.5)
    await limiter.acquire()
    assert clock.t == pytest.approx(0.5)
    limiter.pause(0.2)
    limiter.pause(0.1)  # a shorter pause never shortens a longer one
    await limiter.acquire()
    assert clock.t == pytest.approx(0.7)
    limiter.pause(0.3)
    async with limiter.slot():  # slots wait out a pause too
        assert clock.t == pytest.approx(1.0)


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


async def test_a_waiter_cancelled_behind_an_in_flight_slot_takes_no_slot():
    limiter = SlidingWindowLimiter(1, window=0.05, margin=0.0)
    gate = asyncio.Event()

    async def in_flight() -> None:
        async with limiter.slot():
            await gate.wait()

    holder = asyncio.create_task(in_flight())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    await holder
    await asyncio.wait_for(limiter.acquire(), timeout=1)
    assert limiter.granted == 2


async def test_a_limiter_survives_its_event_loop():
    """The registry outlives event loops (tests, a restarted runner): no loop-bound lock."""
    limiter = SlidingWindowLimiter(1, window=0.05, margin=0.0)

    async def burst() -> None:
        await asyncio.gather(*(limiter.acquire() for _ in range(3)))

    async def requests() -> None:
        async def one() -> None:
            async with limiter.slot():
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one() for _ in range(3)))

    await asyncio.to_thread(asyncio.run, burst())
    await burst()
    await asyncio.to_thread(asyncio.run, requests())
    await requests()
    assert limiter.granted == 12


# --- the per-key registry ------------------------------------------------------------


async def test_registry_shares_one_limiter_per_app_key():
    a = limiter_for("PSkey-one", 20)
    assert limiter_for("PSkey-one", 20) is a
    assert limiter_for("PSkey-two", 20) is not a
    assert limiter_for("PSkey-one", 2) is a and a.rate == 2  # the stricter budget wins
    assert limiter_for("PSkey-one", 20).rate == 2
    slow = limiter_for("PSkey-three", 0.5, margin=0.1)
    assert (slow.rate, slow.window) == (1, pytest.approx(2.1))
    assert limiter_for("PSkey-five", 0.5).window == pytest.approx(2.0)
    reset_registry()
    assert limiter_for("PSkey-one", 20) is not a
    with pytest.raises(ValueError):
        limiter_for("PSkey-four", 0)


async def test_registry_never_logs_the_key(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="brokers.ratelimit")
    limiter_for("PSsecret-app-key", 20)
    limiter_for("PSsecret-app-key", 2)
    assert caplog.records  # the lowered rate is logged ...
    assert all("PSsecret" not in r.getMessage() for r in caplog.records)  # ... by digest only
    assert "PSsecret" not in repr(limiter_for("PSsecret-app-key", 2))


async def test_registry_limiter_takes_an_injected_clock():
    clock = VirtualClock()
    limiter = limiter_for("PSkey-virtual", 2, clock=clock.monotonic, sleep=clock.sleep)
    for _ in range(3):
        await limiter.acquire()
    assert clock.t == pytest.approx(1.0)
