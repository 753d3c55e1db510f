"""A replayed tick tape and the single-process baseline, for handover and fault tests.

The tape stands for the market: it moves on when the runner asks for the next tick
(the previous one fully handled), so a runner that stops stops the market too, and a
tick handed to a runner that died before handling it is handed out again. A new
leader's view of the tape resumes after the last tick that left a trace in the
database (an alert, or a rule's stored armed state) and quotes the last price handed
out, as a live market quotes the last trade. Everything else a successor knows (fire
counts, armed states, finished rules, pending deliveries) it reads from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta

from sqlalchemy import func
from sqlmodel import col, select

from app import db
from app.cli import migrate
from app.models.alerts import AlertEvent, Delivery
from app.models.rules import AlertRule
from app.models.strategies import UNRESOLVED_ORDER_STATES, StrategyOrder
from app.runtime.engine import run_engine
from app.services import rules as rules_service
from app.services import watchlist
from brokers.base import Quote, UnknownSymbol
from brokers.paper.symbols import SYMBOLS
from engines.market import CandleAggregator, Tick, Timeframe
from tests.integration.helpers import T0, make_user, seed_symbols, settings
from tests.integration.test_strategy_kit import seed as seed_strategy

SYMS = ("005930", "000660")
RULES = [
    # (symbol, op, level, repeat)
    ("005930", "cross_up", 70_000, "rearm"),
    ("005930", "cross_down", 69_500, "rearm"),
    ("005930", "above", 70_400, "once"),
    ("000660", "cross", 180_000, "rearm"),
    ("000660", "below", 178_000, "once"),
]


def tape_ticks() -> list[Tick]:
    """Two symbols oscillating across the levels: dozens of firings over 600 ticks."""
    out: list[Tick] = []
    a = [69_000, 69_400, 69_800, 70_100, 70_500, 70_200, 69_900, 69_400, 69_200, 69_700]
    b = [179_000, 180_500, 181_000, 179_500, 177_500, 178_500, 180_200, 179_000]
    for i in range(300):
        ts = T0 + timedelta(seconds=2 * i)
        out.append(Tick(symbol="005930", price=a[i % len(a)], volume=10, ts=ts))
        out.append(Tick("000660", b[i % len(b)], 10, ts + timedelta(seconds=1)))
    return out


def trend_ticks() -> list[Tick]:
    """Ticks 10 s apart for an hour whose 1m closes swing in waves of twelve minutes:
    a 5/10 moving-average cross trades about ten times over the tape's 60 bars, and
    the price rules still fire. A second, shorter wave keeps bars from repeating."""
    out: list[Tick] = []
    b = [179_000, 180_500, 181_000, 179_500, 177_500, 178_500, 180_200, 179_000]
    for i in range(360):
        ts = T0 + timedelta(seconds=10 * i)
        wave = round(12 * math.sin(2 * math.pi * i / 72) + 3 * math.sin(2 * math.pi * i / 17))
        out.append(Tick("005930", 70_000 + 100 * wave, 10 + i % 7, ts))
        out.append(Tick("000660", b[i % len(b)], 10, ts + timedelta(seconds=5)))
    return out


STRATEGY = {"fast": 5, "slow": 10, "fraction": 0.2}
"""The paper strategy of the order replays: MA cross on 005930's 1m bars."""


class Tape:
    """The market both workers see: one position, shared, as the exchange's is."""

    def __init__(self, ticks: list[Tick], pace: float, drop_at: int | None = None) -> None:
        self.ticks = ticks
        self.pace = pace
        self.next = 0
        self.done = asyncio.Event()
        self.drop_at = drop_at
        """The stream breaks (once) when it reaches this tick, as a broker's socket does."""
        self.drops = 0
        self.reconnect_s: float | None = None
        """Seconds from the drop to the next tick handed out on a new stream."""
        self._dropped_at: float | None = None

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
        """After the last tick with a trace (an alert, or a rule's armed state stored
        with it), or where the tape stands."""
        async with db.session() as s:
            fired = (await s.exec(select(func.max(AlertEvent.fired_at)))).one()
            armed = (await s.exec(select(func.max(AlertRule.armed_at)))).one()
        last = max((t for t in (fired, armed) if t is not None), default=None)
        if last is not None:
            fired = [i for i, t in enumerate(self.tape.ticks) if t.ts == last]
            if fired:
                return max(self.tape.next, fired[-1] + 1)
        return self.tape.next

    async def minute_bars(self, symbol: str, since):  # noqa: ANN001, ANN201
        """The exchange's minute chart: every tick handed out before where this view
        resumes (the same cut as ``quote``), so a successor's rebuilt forming bar and
        the ticks it then gets neither overlap nor leave a gap."""
        agg = CandleAggregator([Timeframe.M1])
        upto = await self._resume_index()
        bars = [c for t in self.tape.ticks[:upto] if t.symbol == symbol for c in agg.on_tick(t)]
        forming = agg.current(symbol, Timeframe.M1)
        bars += [forming] if forming is not None else []
        return [b for b in bars if since is None or b.start >= since]

    async def _resume_point(self) -> None:
        self.tape.next = await self._resume_index()

    async def ticks(self):  # noqa: ANN201
        await self._resume_point()
        while self.tape.next < len(self.tape.ticks) and not self._closed.is_set():
            tick = self.tape.ticks[self.tape.next]
            if self.tape.drop_at is not None and self.tape.next >= self.tape.drop_at:
                self.tape.drop_at = None
                self.tape.drops += 1
                self.tape._dropped_at = asyncio.get_running_loop().time()
                raise ConnectionError("broker stream dropped")
            if tick.symbol in self._subscribed:
                if self.tape._dropped_at is not None and self.tape.reconnect_s is None:
                    now = asyncio.get_running_loop().time()
                    self.tape.reconnect_s = round(now - self.tape._dropped_at, 2)
                yield tick  # resumed only once the runner handled it
            self.tape.next += 1
            await asyncio.sleep(self.tape.pace)
        self.tape.done.set()
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()


@contextlib.asynccontextmanager
async def prepared_database(url: str, *, strategy: bool = False) -> AsyncIterator[None]:
    """The rules of ``RULES`` and, with ``strategy``, a paper MA cross (``STRATEGY``)."""
    await asyncio.to_thread(migrate, url)
    db.configure(url)
    try:
        await seed_symbols()
        user = await make_user()
        if strategy:
            await seed_strategy(
                user_id=user.id, symbol="005930", timeframe="1m", params=STRATEGY, mode="paper"
            )
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


async def settled(timeout: float = 20.0) -> None:
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
            unresolved = (
                await s.exec(
                    select(func.count())
                    .select_from(StrategyOrder)
                    .where(col(StrategyOrder.state).in_(UNRESOLVED_ORDER_STATES))
                )
            ).one()
        if not open_ and not unresolved:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("deliveries or strategy orders still open")


async def recorded_alerts() -> list[tuple[str, int, int, str]]:
    async with db.session() as s:
        rows = (
            await s.exec(select(AlertEvent, AlertRule).join(AlertRule).order_by(col(AlertEvent.id)))
        ).all()
        deliveries = (await s.exec(select(Delivery))).all()
    assert all(d.status == "sent" for d in deliveries)
    assert len(deliveries) == len(rows)  # one in-app delivery per event, none doubled
    return [(r.name, e.price, e.payload["fire_no"], e.fired_at.isoformat()) for e, r in rows]


async def recorded_orders() -> list[tuple[str, str, str, int, str]]:
    """Each strategy order as decided: id, side, signal, reference price, outcome.
    (Quantities follow paper fills, whose tick depends on timing, so are left out.)"""
    async with db.session() as s:
        rows = (await s.exec(select(StrategyOrder).order_by(col(StrategyOrder.id)))).all()
    return sorted((o.client_order_id, o.side, o.signal_key, o.ref_price, o.state) for o in rows)


def engine_settings(**overrides: object):  # noqa: ANN202
    return settings(
        **{"bar_close_interval": 60.0, "strategy_reconcile_interval": 60.0, **overrides}
    )


async def single_run(
    ticks: list[Tick] | None = None, **overrides: object
) -> list[tuple[str, int, int, str]]:
    tape = Tape(ticks or tape_ticks(), pace=0)
    task = asyncio.create_task(
        run_engine(engine_settings(**overrides), market=TapeMarket(tape), backtests=False)
    )
    try:
        await asyncio.wait_for(tape.done.wait(), 60)
        await settled()
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    return await recorded_alerts()
