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
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis

from app.runtime.engine import run_engine
from app.runtime.leader import LeaderElection, LeaderLock, PgAdvisoryLock, RedisLeaseLock
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        pytest.skip(f"{name} is not installed")
    return found[-1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """The server refuses to run as root; the machines run tests as root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PrivatePostgres:
    data: Path
    port: int

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(self.data.parent / "log"), "-o", opts, "-w", "start")

    def crash(self) -> None:
        """``immediate``: no checkpoint, clients cut at once, crash recovery at start."""
        self._ctl("-m", "immediate", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"tw_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@dataclass
class PrivateRedis:
    folder: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.folder),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="tw-pg-", dir="/tmp"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = PrivatePostgres(root / "data", _free_port())
    subprocess.run(
        _as_postgres(
            [_pg_bin("initdb"), "-D", str(pg.data), "-A", "trust", "-U", "postgres", "--no-sync"]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(Exception):
            pg.crash()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    folder = Path(tempfile.mkdtemp(prefix="tw-redis-"))
    server = PrivateRedis(folder, _free_port())
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.crash()
        shutil.rmtree(folder, ignore_errors=True)


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
