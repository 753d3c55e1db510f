"""A leader dies mid-replay; the standby takes over and finishes: the alerts equal a
single-process run's, none lost and none doubled.

In-process version: two engines (``run_engine``) each gated by a ``LeaderElection`` on
one PostgreSQL advisory lock. The leader "dies" the way a crashed worker looks to
the database: its lock session is terminated by the server, at an arbitrary point
of the replay, and its election cancels its engine wherever it was.

The tick tape stands for the market: it moves on when the runner asks for the next
tick (the previous one fully handled). A new leader's view of the tape resumes after
the last tick that left a trace in the outbox, and quotes the last handed-out price,
as a live market quotes the last trade. Everything else a successor knows (fire
counts, finished rules, pending deliveries) it reads from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from app import db
from app.cli import migrate
from app.models.alerts import AlertEvent, Delivery
from app.models.rules import AlertRule
from app.runtime.engine import run_engine
from app.runtime.leader import LeaderElection, PgAdvisoryLock
from app.services import rules as rules_service
from app.services import watchlist
from brokers.base import Quote, UnknownSymbol
from brokers.paper.symbols import SYMBOLS
from engines.market import Tick
from tests.conftest import PG_ADMIN_URL, _pg_conninfo
from tests.integration.helpers import T0, make_user, seed_symbols, settings

SYMS = ("005930", "000660")
RULES = [
    # (symbol, op, level, repeat)
    ("005930", "cross_up", 70_000, "rearm"),
    ("005930", "cross_down", 69_500, "rearm"),
    ("005930", "above", 70_400, "once"),
    ("000660", "cross", 180_000, "rearm"),
    ("000660", "below", 178_000, "once"),
]


def _tape() -> list[Tick]:
    """Two symbols oscillating across the levels: dozens of firings over 600 ticks."""
    out: list[Tick] = []
    a = [69_000, 69_400, 69_800, 70_100, 70_500, 70_200, 69_900, 69_400, 69_200, 69_700]
    b = [179_000, 180_500, 181_000, 179_500, 177_500, 178_500, 180_200, 179_000]
    for i in range(300):
        ts = T0 + timedelta(seconds=2 * i)
        out.append(Tick(symbol="005930", price=a[i % len(a)], volume=10, ts=ts))
        out.append(Tick("000660", b[i % len(b)], 10, ts + timedelta(seconds=1)))
    return out


class Tape:
    """The market both workers see: one position, shared, as the exchange's is."""

    def __init__(self, ticks: list[Tick], pace: float) -> None:
        self.ticks = ticks
        self.pace = pace
        self.next = 0
        self.done = asyncio.Event()

    def last_price(self, symbol: str, upto: int | None = None) -> int:
        for t in reversed(self.ticks[: self.next if upto is None else upto]):
            if t.symbol == symbol:
                return t.price
        return next(t.price for t in self.ticks if t.symbol == symbol)


class TapeMarket:
    """``MarketData`` over the shared tape for one engine's lifetime."""

    name = "tape"

    def __init__(self, tape: Tape) -> None:
        self.tape = tape
        self._subscribed: set[str] = set()
        self._closed = asyncio.Event()

    async def list_symbols(self):  # noqa: ANN201
        return [s.info for s in SYMBOLS]

    async def quote(self, symbol: str) -> Quote:
        if symbol not in SYMS:
            raise UnknownSymbol(symbol)
        # The last price handed out before where this view resumes: a tick that was in
        # flight when the old leader died, but left a trace, counts as handed out (the
        # successor starts after it); one without a trace is handed out again, so it
        # does not count yet. Quoting before the resume point is known would seed the
        # successor with the price *before* a tick it then skips.
        price = self.tape.last_price(symbol, upto=await self._resume_index())
        prev = 69_000 if symbol == "005930" else 179_000
        return Quote(symbol, price, prev, price, price, price, 0, T0)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        self._subscribed |= set(symbols)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        self._subscribed -= set(symbols)

    async def _resume_index(self) -> int:
        """After the last tick with a trace in the outbox, or where the tape stands."""
        async with db.session() as s:
            last = (await s.exec(select(func.max(AlertEvent.fired_at)))).one()
        if last is not None:
            fired = [i for i, t in enumerate(self.tape.ticks) if t.ts == last]
            if fired:
                return max(self.tape.next, fired[-1] + 1)
        return self.tape.next

    async def _resume_point(self) -> None:
        self.tape.next = await self._resume_index()

    async def ticks(self):  # noqa: ANN201
        await self._resume_point()
        while self.tape.next < len(self.tape.ticks) and not self._closed.is_set():
            tick = self.tape.ticks[self.tape.next]
            if tick.symbol in self._subscribed:
                yield tick  # resumed only once the runner handled it
            self.tape.next += 1
            await asyncio.sleep(self.tape.pace)
        self.tape.done.set()
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()


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


@contextlib.asynccontextmanager
async def _database(url: str) -> AsyncIterator[None]:
    await asyncio.to_thread(migrate, url)
    db.configure(url)
    try:
        await seed_symbols()
        user = await make_user()
        async with db.session() as s:
            for sym in SYMS:
                await watchlist.add(s, user.id, sym)
            for i, (sym, op, level, repeat) in enumerate(RULES):
                await rules_service.create_price_rule(
                    s,
                    user.id,
                    symbol_query=sym,
                    op=op,
                    level=str(level),
                    repeat=repeat,
                    name=f"r{i}",
                )
        yield
    finally:
        await db.dispose()


async def _settled(timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        async with db.session() as s:
            open_ = (
                await s.exec(
                    select(func.count())
                    .select_from(Delivery)
                    .where(col(Delivery.status).in_(["pending", "sending"]))
                )
            ).one()
        if not open_:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("deliveries still open")


async def _alerts() -> list[tuple[str, int, int, str]]:
    async with db.session() as s:
        rows = (
            await s.exec(select(AlertEvent, AlertRule).join(AlertRule).order_by(col(AlertEvent.id)))
        ).all()
        deliveries = (await s.exec(select(Delivery))).all()
    assert all(d.status == "sent" for d in deliveries)
    assert len(deliveries) == len(rows)  # one in-app delivery per event, none doubled
    return [(r.name, e.price, e.payload["fire_no"], e.fired_at.isoformat()) for e, r in rows]


def _cfg():  # noqa: ANN202
    return settings(bar_close_interval=60.0, strategy_reconcile_interval=60.0)


async def _single_run() -> list[tuple[str, int, int, str]]:
    tape = Tape(_tape(), pace=0)
    task = asyncio.create_task(run_engine(_cfg(), market=TapeMarket(tape), backtests=False))
    try:
        await asyncio.wait_for(tape.done.wait(), 60)
        await _settled()
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    return await _alerts()


@pytest.mark.skip(
    reason="issue 8 open: a repeating price rule is restored disarmed after a handover "
    "(engines/rules/book.py keeps 'armed' only in memory), so about 1 run in 5 misses the "
    "first re-cross after the kill; needs the armed state stored with the rule"
)
async def test_leader_killed_mid_replay_standby_finishes_without_loss_or_duplicates(
    pg_urls, report_figures
):
    single_url, ha_url = pg_urls
    async with _database(single_url):
        expected = await _single_run()
    assert len(expected) >= 20  # a replay that fires plenty

    async with _database(ha_url):
        tape = Tape(_tape(), pace=0.004)
        name = f"test-resume:{uuid.uuid4().hex}"
        elections = [
            LeaderElection(PgAdvisoryLock(ha_url, name=name), lease=1.5, retry=0.1, publish=False)
            for _ in range(2)
        ]

        def lead():  # noqa: ANN202
            return run_engine(_cfg(), market=TapeMarket(tape), backtests=False)

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
            await _settled()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
        got = await _alerts()

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
