"""The leader lock on real PostgreSQL and real Redis: one holder, handover, fencing.

Several ``LeaderLock`` instances in one process stand for several workers: each
PostgreSQL lock has its own server session, each Redis lock its own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from app.runtime.leader import (
    LeaderConfigError,
    LeaderElection,
    LocalLock,
    PgAdvisoryLock,
    RedisLeaseLock,
    build_lock,
    choose_backend,
    current_leadership,
)
from tests.integration.helpers import kill_lock_holders

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"test-leader:{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _name() -> str:
    return f"test-leader:{uuid.uuid4().hex}"


async def _close(*locks) -> None:
    for lock in locks:
        with contextlib.suppress(Exception):
            await lock.close()


async def test_pg_exactly_one_holder_then_handover_with_growing_tokens(pg_url):
    name = _name()
    locks = [PgAdvisoryLock(pg_url, name=name) for _ in range(3)]
    try:
        won = [await lock.try_acquire() for lock in locks]
        assert won == [True, False, False]
        assert await locks[0].keep()
        first = locks[0].token
        assert first is not None
        await locks[0].release()
        assert not await locks[0].keep()  # released means no longer leading
        assert [await lock.try_acquire() for lock in locks[1:]] == [True, False]
        assert locks[1].token is not None and locks[1].token > first
        # another lock name is another lock: unrelated to this one
        other = PgAdvisoryLock(pg_url, name=_name())
        assert await other.try_acquire()
        await other.close()
    finally:
        await _close(*locks)


async def test_pg_holder_whose_connection_dies_notices_and_is_replaced(pg_url):
    name = _name()
    a, b = PgAdvisoryLock(pg_url, name=name), PgAdvisoryLock(pg_url, name=name)
    try:
        assert await a.try_acquire()
        assert not await b.try_acquire()
        # The server ends the holder's session (a crash, a failover, a kill by an admin).
        killed = kill_lock_holders(pg_url)
        assert killed == [(True,)]
        # pg_terminate_backend only signals: the session ends (and frees the lock) soon after
        for _ in range(40):
            if await b.try_acquire():
                break
            await asyncio.sleep(0.05)
        assert b.token is not None
        assert not await a.keep()  # the stale holder learns it lost the lock
        assert a.token is None
        assert not await a.try_acquire()  # reconnects, and finds the lock taken
    finally:
        await _close(a, b)


async def test_redis_exactly_one_holder_fencing_and_stale_renew(redis_prefix):
    locks = [RedisLeaseLock(REDIS_URL, name=redis_prefix, lease=3.0) for _ in range(3)]
    try:
        assert [await lock.try_acquire() for lock in locks] == [True, False, False]
        t1 = locks[0].token
        assert await locks[0].keep()
        await locks[0].release()
        assert await locks[1].try_acquire()
        t2 = locks[1].token
        assert t1 is not None and t2 is not None and t2 > t1
        assert not await locks[2].try_acquire()
        # A stale holder (its lease ran out, another took the lock) cannot renew it.
        stale = RedisLeaseLock(REDIS_URL, name=redis_prefix, lease=3.0)
        client = redis.Redis.from_url(REDIS_URL)
        await client.delete(f"{redis_prefix}:leader")  # as if locks[1]'s lease expired
        assert await stale.try_acquire()
        assert stale.token is not None and stale.token > t2
        assert not await locks[1].keep()
        assert locks[1].token is None
        # ...and its release does not delete the new holder's key (compare-and-delete)
        await locks[1].release()
        assert (await client.get(f"{redis_prefix}:leader")).decode().endswith(f"|{stale.token}")
        assert await stale.keep()
        await client.aclose()
        await stale.close()
    finally:
        await _close(*locks)


async def test_redis_lease_expires_when_holder_stops_renewing(redis_prefix):
    a = RedisLeaseLock(REDIS_URL, name=redis_prefix, lease=1.0)
    b = RedisLeaseLock(REDIS_URL, name=redis_prefix, lease=1.0)
    try:
        assert await a.try_acquire()
        assert not await b.try_acquire()
        await asyncio.sleep(1.1)  # a is frozen: no renewals
        assert a.valid_for() == 0.0  # it already counts itself out...
        assert await b.try_acquire()  # ...before the server let b in
        assert not await a.keep()
    finally:
        await _close(a, b)


async def test_redis_unreachable_is_no_leadership_not_an_error():
    lock = RedisLeaseLock("redis://127.0.0.1:1/0", name=_name(), lease=1.5)
    try:
        assert not await lock.try_acquire()
    finally:
        await _close(lock)


class FreezableProxy:
    """A loopback TCP relay to Redis that can stop relaying, keeping the sockets open:
    a network partition as the holder sees it (requests that never get an answer)."""

    def __init__(self, port: int = 6379) -> None:
        self.port = port
        self.frozen = False
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if not self.frozen:
                        dst.write(data)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_partitioned_leader_stops_its_engine_before_the_next_one_starts(redis_prefix):
    """Two elections on one Redis lock; the leader's link to Redis goes silent. Its engine
    must have stopped before the standby's starts: the intervals never overlap."""
    lease = 1.5
    intervals: list[list[float]] = []
    loop = asyncio.get_running_loop()

    async def engine() -> None:
        span = [loop.time(), float("inf")]
        intervals.append(span)
        try:
            await asyncio.Event().wait()
        finally:
            span[1] = loop.time()

    proxy = FreezableProxy()
    url = await proxy.start()
    leader = LeaderElection(
        RedisLeaseLock(url, name=redis_prefix, lease=lease), lease=lease, retry=0.1
    )
    standby = LeaderElection(
        RedisLeaseLock(REDIS_URL, name=redis_prefix, lease=lease),
        lease=lease,
        retry=0.1,
        publish=False,
    )
    tasks = [asyncio.create_task(leader.run(engine))]
    try:
        await asyncio.wait_for(leader.leading.wait(), 5)
        tasks.append(asyncio.create_task(standby.run(engine)))
        status = current_leadership()
        assert (status.role, status.backend) == ("leader", "redis")
        assert status.fencing_token == leader.lock.token is not None
        await asyncio.sleep(lease * 1.5)  # several renewals go through
        assert leader.leading.is_set() and not standby.leading.is_set()
        frozen_at = loop.time()
        proxy.frozen = True
        await asyncio.wait_for(standby.leading.wait(), lease * 3)
        took_over = loop.time() - frozen_at
        assert not leader.leading.is_set()
        assert current_leadership().role == "standby"
        assert took_over <= lease + 0.5
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        await proxy.close()
    assert len(intervals) == 2
    (_s1, e1), (s2, _e2) = intervals
    assert e1 <= s2, intervals  # the partitioned leader stopped first
    assert current_leadership().role == "off"


def test_backend_choice_and_bad_settings():
    pg = "postgresql+psycopg://postgres@127.0.0.1:5432/x"
    lite = "sqlite:///tmp/x.db"
    assert choose_backend("auto", pg, "") == "postgres"
    assert choose_backend("auto", pg, REDIS_URL) == "postgres"
    assert choose_backend("auto", lite, REDIS_URL) == "redis"
    assert choose_backend("auto", lite, "") == "local"
    assert choose_backend("redis", pg, REDIS_URL) == "redis"
    assert choose_backend("none", pg, "") == "none"
    with pytest.raises(LeaderConfigError):
        choose_backend("postgres", lite, "")
    with pytest.raises(LeaderConfigError):
        choose_backend("redis", pg, "")
    with pytest.raises(LeaderConfigError):
        choose_backend("zookeeper", pg, "")
    assert isinstance(build_lock("auto", lite, "", lease=6), LocalLock)


async def test_sqlite_single_process_always_leads():
    ran = asyncio.Event()

    async def engine() -> None:
        ran.set()
        await asyncio.Event().wait()

    election = LeaderElection(LocalLock(), lease=3, retry=0.1)
    task = asyncio.create_task(election.run(engine))
    try:
        await asyncio.wait_for(ran.wait(), 5)
        status = current_leadership()
        assert (status.role, status.backend, status.fencing_token) == ("single", "local", None)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert current_leadership().role == "off"
