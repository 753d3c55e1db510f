"""Faults during a tick replay: a PostgreSQL restart, a Redis restart, a broker stream
drop. None may lose or double an alert, and the runner must recover on its own.

The services are private instances on loopback, started for this module (an
``initdb`` cluster and a ``redis-server`` with an append-only file, as an operator
runs it), so they can be stopped and started without touching the shared ones.
Two engines stand for election as two workers do; the replay is the tape of
``replay_tape``, and each run is compared with a single-process run of the same
tape on the same server. Each case prints how long the outage lasted and how long
the runner took to move the tape again after the service came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import pytest

from app.runtime.engine import run_engine
from app.runtime.leader import LeaderElection, LeaderLock, PgAdvisoryLock, RedisLeaseLock
from tests.integration.private_services import PrivatePostgres
from tests.integration.replay_tape import (
    Tape,
    TapeMarket,
    engine_settings,
    prepared_database,
    recorded_alerts,
    settled,
    single_run,
    tape_ticks,
)

DOWN_SECONDS = 1.5
"""How long each service stays down: longer than a lease check, shorter than a test."""


@pytest.fixture(scope="module")
def expected(private_pg: PrivatePostgres) -> list[tuple[str, int, int, str]]:
    """The single-process run of the tape: what every faulted run must reproduce."""

    async def baseline() -> list[tuple[str, int, int, str]]:
        async with prepared_database(private_pg.create_database()):
            return await single_run()

    alerts = asyncio.run(baseline())
    assert len(alerts) >= 20  # a replay that fires plenty
    return alerts


async def _replay_with_fault(
    url: str,
    locks: Callable[[], LeaderLock],
    fault: Callable[[], None] | None,
    recover: Callable[[], None] | None,
    drop_at: int | None = None,
) -> tuple[list[tuple[str, int, int, str]], dict[str, float]]:
    """Two elections replay the tape; a third of the way in, ``fault`` takes a service
    down for ``DOWN_SECONDS`` and ``recover`` brings it back (both in a thread, so the
    engines keep running meanwhile). Returns the alerts and the recovery figures."""
    async with prepared_database(url):
        tape = Tape(tape_ticks(), pace=0.004, drop_at=drop_at)
        elections = [LeaderElection(locks(), lease=1.5, retry=0.1, publish=False) for _ in "ab"]

        def lead():  # noqa: ANN202
            return run_engine(engine_settings(), market=TapeMarket(tape), backtests=False)

        tasks = [asyncio.create_task(e.run(lead)) for e in elections]
        loop = asyncio.get_running_loop()
        figures: dict[str, float] = {}
        try:
            while tape.next < len(tape.ticks) // 3:
                await asyncio.sleep(0.005)
            if fault is not None and recover is not None:
                at_tick, down_at = tape.next, loop.time()
                await asyncio.to_thread(fault)
                await asyncio.sleep(DOWN_SECONDS)
                await asyncio.to_thread(recover)
                up_at = loop.time()
                stalled = tape.next
                while tape.next <= stalled and not tape.done.is_set():
                    await asyncio.sleep(0.01)
                moving_at = loop.time()
                figures = {
                    "fault_at_tick": at_tick,
                    "outage_s": round(up_at - down_at, 2),
                    "recovered_after_s": round(moving_at - up_at, 2),
                    "leader_terms": sum(e.terms for e in elections),
                }
            await asyncio.wait_for(tape.done.wait(), 90)
            await settled(30)
            figures["stream_drops"] = tape.drops
            if tape.reconnect_s is not None:
                figures["reconnected_after_s"] = tape.reconnect_s
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            for election in elections:
                with contextlib.suppress(Exception):
                    await election.lock.close()
        return await recorded_alerts(), figures


def _compare(expected: list, got: list) -> None:
    lost = sorted(set(expected) - set(got))
    doubled = sorted({a for a in got if got.count(a) > 1})
    extra = sorted(set(got) - set(expected))
    assert not lost and not doubled and not extra, (lost[:3], doubled[:3], extra[:3])
    assert got == expected


async def test_postgres_restart_with_the_postgres_lock(private_pg, expected, report_figures):
    """The lock's session dies with the server: the leader stops, the tick it held is
    evaluated again by whichever worker wins the lock once the server is back."""
    url = private_pg.create_database()
    name = f"faults:{uuid.uuid4().hex}"
    got, figures = await _replay_with_fault(
        url, lambda: PgAdvisoryLock(url, name=name, timeout=0.5), private_pg.crash, private_pg.start
    )
    _compare(expected, got)
    assert figures["leader_terms"] >= 2  # leadership really was lost and retaken
    assert figures["recovered_after_s"] < 10
    report_figures(fault="postgres restart", lock="postgres", alerts=len(got), **figures)


async def test_postgres_restart_with_the_redis_lock(
    private_pg, private_redis, expected, report_figures
):
    """The leader keeps its Redis lease; its tick write waits out the outage."""
    url = private_pg.create_database()
    name = f"faults:{uuid.uuid4().hex}"
    got, figures = await _replay_with_fault(
        url,
        lambda: RedisLeaseLock(private_redis.url, name=name, lease=1.5),
        private_pg.crash,
        private_pg.start,
    )
    _compare(expected, got)
    assert figures["recovered_after_s"] < 10
    report_figures(fault="postgres restart", lock="redis", alerts=len(got), **figures)


async def test_redis_restart_with_the_redis_lock(
    private_pg, private_redis, expected, report_figures
):
    """The lease cannot be renewed while Redis is down: the leader stops itself before
    the lease could run out, and a worker takes the lock when Redis is back."""
    url = private_pg.create_database()
    name = f"faults:{uuid.uuid4().hex}"
    got, figures = await _replay_with_fault(
        url,
        lambda: RedisLeaseLock(private_redis.url, name=name, lease=1.5),
        private_redis.crash,
        private_redis.start,
    )
    _compare(expected, got)
    assert figures["leader_terms"] >= 2
    assert figures["recovered_after_s"] < 10
    report_figures(fault="redis restart", lock="redis", alerts=len(got), **figures)


async def test_broker_stream_drop(private_pg, expected, report_figures):
    url = private_pg.create_database()
    name = f"faults:{uuid.uuid4().hex}"
    got, figures = await _replay_with_fault(
        url,
        lambda: PgAdvisoryLock(url, name=name, timeout=0.5),
        None,
        None,
        drop_at=len(tape_ticks()) // 2,
    )
    assert figures["stream_drops"] == 1
    assert figures["reconnected_after_s"] < 10
    _compare(expected, got)
    report_figures(fault="broker stream drop", alerts=len(got), **figures)
