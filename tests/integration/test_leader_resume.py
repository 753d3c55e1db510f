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
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select

from app import db
from app.models.alerts import AlertEvent
from app.models.strategies import StrategyOrder
from app.runtime.engine import run_engine
from app.runtime.leader import LeaderElection, PgAdvisoryLock
from engines.market import Tick
from tests.conftest import PG_ADMIN_URL, _pg_conninfo
from tests.integration.helpers import kill_lock_holders
from tests.integration.replay_tape import (
    Tape,
    TapeMarket,
    engine_settings,
    prepared_database,
    recorded_alerts,
    recorded_orders,
    settled,
    single_run,
    tape_ticks,
    trend_ticks,
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


@dataclass
class Handover:
    tape: Tape
    alerts_before: int
    orders_before: int
    at_tick: int
    seconds: float


async def _orders() -> int:
    async with db.session() as s:
        return (await s.exec(select(func.count()).select_from(StrategyOrder))).one()


async def _replay_with_a_leader_kill(
    url: str, ticks: list[Tick], *, after_first_order: bool = False, **overrides: object
) -> Handover:
    """Two engines stand for election; the leader's lock session is killed a third of
    the way through the tape (or as soon as its first strategy order is claimed) and
    the standby finishes it."""
    tape = Tape(ticks, pace=0.004)
    name = f"test-resume:{uuid.uuid4().hex}"
    elections = [
        LeaderElection(PgAdvisoryLock(url, name=name), lease=1.5, retry=0.1, publish=False)
        for _ in range(2)
    ]

    def lead():  # noqa: ANN202
        return run_engine(engine_settings(**overrides), market=TapeMarket(tape), backtests=False)

    first = asyncio.create_task(elections[0].run(lead))
    await asyncio.wait_for(elections[0].leading.wait(), 10)
    second = asyncio.create_task(elections[1].run(lead))
    tasks = [first, second]
    loop = asyncio.get_running_loop()
    try:
        while not (await _orders() if after_first_order else tape.next >= len(tape.ticks) // 3):
            await asyncio.sleep(0.005 if after_first_order else 0.01)
        async with db.session() as s:
            before = (await s.exec(select(func.count()).select_from(AlertEvent))).one()
        orders = await _orders()
        # The leader's database session for the lock dies (a crash, as the server sees it).
        killed = kill_lock_holders(url)
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
    return Handover(tape, before, orders, at_tick, handover)


def _assert_same(expected: list, got: list, what: str, at_tick: int) -> None:
    lost = sorted(set(expected) - set(got))
    doubled = sorted({a for a in got if got.count(a) > 1})
    extra = sorted(set(got) - set(expected))
    assert not lost and not doubled and not extra, (what, lost[:3], doubled[:3], extra[:3], at_tick)
    assert got == expected


async def test_leader_killed_mid_replay_standby_finishes_without_loss_or_duplicates(
    pg_urls, report_figures
):
    single_url, ha_url = pg_urls
    async with prepared_database(single_url):
        expected = await single_run()
    assert len(expected) >= 20  # a replay that fires plenty

    async with prepared_database(ha_url):
        run = await _replay_with_a_leader_kill(ha_url, tape_ticks())
        got = await recorded_alerts()

    assert 0 < run.alerts_before < len(expected)  # the kill really fell mid-replay
    _assert_same(expected, got, "alerts", run.at_tick)
    report_figures(
        alerts=len(expected),
        alerts_before_kill=run.alerts_before,
        killed_at_tick=run.at_tick,
        ticks=len(run.tape.ticks),
        handover_s=round(run.seconds, 2),
    )


@pytest.mark.parametrize(
    ("flush_s", "after_first_order"),
    [(60.0, False), (0.2, False), (0.2, True)],
    ids=["nothing-stored", "stored-each-0.2s", "killed-after-an-order"],
)
async def test_leader_killed_mid_replay_strategy_orders_equal_a_single_run(
    pg_urls, report_figures, flush_s, after_first_order, caplog
):
    """A paper MA cross trades through the kill. The successor rebuilds the bars the
    old leader was building or had not stored from the minute chart, so its averages
    and so its orders are the single run's. ``nothing-stored``: the old leader stored
    no bar at all (the successor rebuilds the whole session); ``stored-each-0.2s``:
    only the last fraction of a second is missing; ``killed-after-an-order``: the kill
    follows the claim of an order at once, so the successor rebuilds that order's bar as
    live and its signal again, which must place nothing new."""
    single_url, ha_url = pg_urls
    async with prepared_database(single_url, strategy=True):
        expected_alerts = await single_run(trend_ticks(), bar_close_interval=flush_s)
        expected = await recorded_orders()
    assert len(expected) >= 8, expected  # a strategy that trades before and after the kill

    caplog.set_level(logging.INFO, "app.services.strategy_orders")
    async with prepared_database(ha_url, strategy=True):
        run = await _replay_with_a_leader_kill(
            ha_url, trend_ticks(), after_first_order=after_first_order, bar_close_interval=flush_s
        )
        got = await recorded_orders()
        got_alerts = await recorded_alerts()

    assert 0 < run.orders_before < len(expected)  # orders on both sides of the kill
    _assert_same(expected, got, "orders", run.at_tick)
    replayed = caplog.text.count("already handled")
    if flush_s > 1:
        # The whole session is rebuilt: the old leader's last order, minutes before the
        # kill, is signalled again on a rebuilt bar and places nothing.
        assert replayed >= 1
    _assert_same(expected_alerts, got_alerts, "alerts", run.at_tick)
    report_figures(
        orders=len(expected),
        orders_before_kill=run.orders_before,
        signals_replayed_without_an_order=replayed,
        alerts=len(expected_alerts),
        killed_at_tick=run.at_tick,
        handover_s=round(run.seconds, 2),
    )
