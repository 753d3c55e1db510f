"""A leader dies mid-replay; the standby takes over and finishes: the alerts equal a
single-process run's, none lost and none doubled.

In-process version: two engines (``run_engine``) each gated by a ``LeaderElection`` on
one PostgreSQL advisory lock. The leader "dies" the way a crashed worker looks to
the database: its lock session is terminated by the server, at an arbitrary point
of the replay, and its election cancels its engine wherever it was. The tape and
the single-process baseline are in ``replay_tape``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select

from app import db
from app.models.alerts import AlertEvent
from app.runtime.engine import run_engine
from app.runtime.leader import LeaderElection, PgAdvisoryLock
from tests.conftest import PG_ADMIN_URL, _pg_conninfo
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


@pytest.fixture
def pg_urls() -> Iterator[tuple[str, str]]:
    """Two fresh databases: the single-process run and the handover run."""
    names = [f"tw_{os.getpid()}_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    base = make_url(PG_ADMIN_URL)
    try:
        yield tuple(base.set(database=n).render_as_string(hide_password=False) for n in names)  # type: ignore[misc]
    finally:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_leader_killed_mid_replay_standby_finishes_without_loss_or_duplicates(
    pg_urls, report_figures
):
    single_url, ha_url = pg_urls
    async with prepared_database(single_url):
        expected = await single_run()
    assert len(expected) >= 20  # a replay that fires plenty

    async with prepared_database(ha_url):
        tape = Tape(tape_ticks(), pace=0.004)
        name = f"test-resume:{uuid.uuid4().hex}"
        elections = [
            LeaderElection(PgAdvisoryLock(ha_url, name=name), lease=1.5, retry=0.1, publish=False)
            for _ in range(2)
        ]

        def lead():  # noqa: ANN202
            return run_engine(engine_settings(), market=TapeMarket(tape), backtests=False)

        first = asyncio.create_task(elections[0].run(lead))
        await asyncio.wait_for(elections[0].leading.wait(), 10)
        second = asyncio.create_task(elections[1].run(lead))
        tasks = [first, second]
        loop = asyncio.get_running_loop()
        try:
            while tape.next < len(tape.ticks) // 3:
                await asyncio.sleep(0.01)
            async with db.session() as s:
                before = (await s.exec(select(func.count()).select_from(AlertEvent))).one()
            # The leader's database session for the lock dies (a crash, as the server sees it).
            with psycopg.connect(_pg_conninfo(ha_url), autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchall()
            assert killed == [(True,)]
            killed_at, at_tick = loop.time(), tape.next
            await asyncio.wait_for(elections[1].leading.wait(), 10)
            handover = loop.time() - killed_at
            assert not elections[0].leading.is_set()
            await asyncio.wait_for(tape.done.wait(), 60)
            await settled()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
        got = await recorded_alerts()

    assert 0 < before < len(expected)  # the kill really fell mid-replay
    lost = sorted(set(expected) - set(got))
    doubled = sorted({a for a in got if got.count(a) > 1})
    extra = sorted(set(got) - set(expected))
    assert not lost and not doubled and not extra, (lost[:3], doubled[:3], extra[:3], at_tick)
    assert got == expected
    report_figures(
        alerts=len(expected),
        alerts_before_kill=before,
        killed_at_tick=at_tick,
        ticks=len(tape.ticks),
        handover_s=round(handover, 2),
    )
