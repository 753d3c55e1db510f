"""A runner taking over rebuilds the bars it never saw from the market's minute chart.

The stored series stops at 10:19 (the old leader died before flushing more); the
chart holds 10:20 to 10:23, the last still forming. A single runner would have closed
10:20-10:22 live and be building 10:23: so must the successor.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest

from app import db
from app.runtime import bar_recovery
from app.runtime.hub import MarketHub
from app.runtime.runner import Runner
from app.services import candles as candle_store
from engines.market import Candle, Tick, Timeframe, roll_up
from tests.integration import helpers
from tests.integration.helpers import T0
from tests.integration.test_strategy_kit import (
    HYNIX,
    SAMSUNG,
    make_scripted,
    orders_of,
    paper_market,
    seed,
)

pytestmark = pytest.mark.usefixtures("database")

M1 = Timeframe.M1


def minutes(symbol: str, first: datetime, closes: list[int]) -> list[Candle]:
    out, prev = [], closes[0]
    for i, close in enumerate(closes):
        start = first + i * M1.span
        out.append(
            Candle(symbol, M1, start, prev, max(prev, close) + 100, min(prev, close), close, 7 + i)
        )
        prev = close
    return out


class ChartedMarket:
    """The demo market plus a minute chart, as KIS's ``MinuteHistory`` gives one."""

    def __init__(
        self,
        chart: dict[str, list[Candle]],
        fail: set[str] = frozenset(),
        hang: set[str] = frozenset(),
    ) -> None:
        self.inner = paper_market()
        self.chart = chart
        self.fail = fail
        self.hang = hang
        self.asked: list[tuple[str, datetime | None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def minute_bars(self, symbol: str, since: datetime | None) -> list[Candle]:
        self.asked.append((symbol, since))
        if symbol in self.fail:
            raise ConnectionError("minute chart unreachable")
        if symbol in self.hang:
            await asyncio.sleep(30)
        return [c for c in self.chart.get(symbol, []) if since is None or c.start >= since]


STORED = minutes(SAMSUNG, T0, [71_300 + 100 * (i % 5) for i in range(20)])  # 10:00-10:19
CHART = minutes(
    SAMSUNG,
    T0 + 15 * M1.span,
    [71_500, 71_600, 71_700, 71_800, 72_000, 71_900, 72_100, 72_200, 72_300],
)  # 10:15-10:23


async def test_successor_stores_closed_bars_seeds_forming_ones_and_trades_on_recent_ones():
    # bar 20 = 10:20, 21 = 10:21, 22 = 10:22 (indices after the 20 stored bars).
    early = await seed(
        "successor@example.com",
        mode="paper",
        strategy="test_scripted",
        params={"buy_at": [21], "qty": 1},
        timeframe="1m",
        label="early",
    )
    recent = await seed(
        mode="paper",
        strategy="test_scripted",
        params={"buy_at": [22], "qty": 1},
        timeframe="1m",
        label="recent",
        user_id=early.user_id,
    )
    async with db.session() as s:
        await candle_store.store(s, STORED)
    market = ChartedMarket({SAMSUNG: CHART})
    # Max age 90 s before the newest minute's end (10:24): bars closing by 10:22:30
    # only warm up, so the 10:21 bar's signal is stale and the 10:22 bar's is placed.
    runner = Runner(helpers.settings(strategy_order_max_age_seconds=90), market)
    runner.strategies.factory = make_scripted
    await runner.sync_once()
    await runner.strategies.drain()

    assert market.asked == [(SAMSUNG, T0 + 20 * M1.span)]  # from after the newest stored
    async with db.session() as s:
        stored = await candle_store.between(s, SAMSUNG, M1, T0, T0 + timedelta(hours=1))
    assert stored == STORED + CHART[5:8]  # 10:20-10:22 closed and stored; 10:23 is not

    agg = runner.conditions.agg
    assert agg.current(SAMSUNG, M1) == CHART[8]
    assert agg.current(SAMSUNG, Timeframe.M5) == roll_up(CHART[5:], Timeframe.M5)[-1]
    # 15m needs the stored 10:15-10:19 too: the forming bucket is whole.
    assert (
        agg.current(SAMSUNG, Timeframe.M15) == roll_up(STORED[15:] + CHART[5:], Timeframe.M15)[-1]
    )
    async with db.session() as s:
        fives = await candle_store.between(s, SAMSUNG, Timeframe.M5, T0, T0 + timedelta(hours=1))
    # None stored before: every whole bucket of the minutes read is rebuilt; 10:20 forms.
    assert fives == roll_up(STORED, Timeframe.M5)

    assert await orders_of(early.attachment_id) == []
    [order] = await orders_of(recent.attachment_id)
    assert (order.side, order.ref_price) == ("buy", CHART[7].close)

    # The next ticks carry on from the seeded bar: 10:23 closes whole.
    await runner.handle_tick(Tick(SAMSUNG, 72_600, 5, T0 + 23 * M1.span + timedelta(seconds=30)))
    await runner.handle_tick(Tick(SAMSUNG, 72_400, 5, T0 + 24 * M1.span + timedelta(seconds=5)))
    [closed] = [c for c in runner._candles if c.timeframe is M1]
    seeded = CHART[8]
    assert closed == Candle(
        SAMSUNG, M1, seeded.start, seeded.open, 72_600, seeded.low, 72_600, seeded.volume + 5
    )


async def test_a_symbol_without_a_chart_is_skipped_and_the_others_are_rebuilt(caplog):
    await helpers.seed_symbols()
    chart = {SAMSUNG: CHART[5:], HYNIX: minutes(HYNIX, T0, [204_500, 205_000, 205_500])}
    market = ChartedMarket(chart, fail={SAMSUNG})
    hub = MarketHub(lambda _i: market)
    with caplog.at_level(logging.WARNING, "app.runtime.bar_recovery"):
        got = await bar_recovery.recover(hub.minute_bars, {SAMSUNG, HYNIX}, [M1, Timeframe.M5])
    assert [c.symbol for c in got.closed + got.forming] == [HYNIX] * 4
    assert got.closed == chart[HYNIX][:2]  # nothing stored: every earlier minute is closed
    assert got.forming == [chart[HYNIX][2], roll_up(chart[HYNIX], Timeframe.M5)[0]]
    assert "bars of 005930 not rebuilt" in caplog.text


async def test_a_source_without_a_minute_chart_rebuilds_nothing():
    hub = MarketHub(lambda _i: paper_market())
    assert await hub.minute_bars(SAMSUNG, None) == []
    got = await bar_recovery.recover(hub.minute_bars, {SAMSUNG}, list(Timeframe))
    assert got.closed == [] and got.forming == []


async def test_a_slow_chart_does_not_hold_the_takeover_past_its_budget(caplog):
    """The market does not wait: a chart call that hangs is cut at the budget, and the
    symbols after it start from their own ticks."""
    await helpers.seed_symbols()
    chart = {HYNIX: minutes(HYNIX, T0, [204_500, 205_000])}
    market = ChartedMarket(chart, hang={SAMSUNG})
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, "app.runtime.bar_recovery"):
        got = await bar_recovery.recover(
            market.minute_bars, {HYNIX, SAMSUNG, "035420"}, [M1], budget=0.5
        )
    took = loop.time() - began
    assert got.closed == chart[HYNIX][:1] and got.forming == chart[HYNIX][1:]
    assert 0.5 <= took < 2.0, took
    assert "bars of 005930 not rebuilt" in caplog.text
    assert "1 symbols start from their own ticks: ['035420']" in caplog.text
    assert [s for s, _ in market.asked] == [HYNIX, SAMSUNG]  # 035420 never asked


async def test_a_bar_closed_long_after_it_ended_is_not_traded_on():
    """A bar left forming when trading stopped is closed by the next session's first
    trade: its signal is a day old, so it only warms the strategy up. A bar closed
    on time still trades."""
    att = await seed(
        "overnight@example.com",
        mode="paper",
        strategy="test_scripted",
        params={"buy_at": [1, 2], "qty": 1},
        timeframe="1m",
    )
    runner = Runner(helpers.settings(), paper_market())
    runner.strategies.factory = make_scripted
    await runner.sync_once()
    await runner.strategies.drain()
    day = timedelta(days=1)
    for price, at in (
        (71_300, T0),  # bar 0
        (71_400, T0 + M1.span),  # closes bar 0 on time; bar 1
        (71_500, T0 + day),  # closes bar 1 a day late; bar 2
        (71_600, T0 + day + M1.span),  # closes bar 2 on time
    ):
        await runner.handle_tick(Tick(SAMSUNG, price, 10, at))
        await runner.strategies.drain()
    [order] = await orders_of(att.attachment_id)
    assert (order.side, order.ref_price) == ("buy", 71_500)  # bar 2's close, not bar 1's
