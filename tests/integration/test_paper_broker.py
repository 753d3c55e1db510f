"""PaperBroker against a real SimulatedMarket (stepped, no sleeping) and hand-made ticks.

Samsung Electronics (005930) has a reference price of 71,300 in the paper market:
its tick is 100 won and its limits are 49,950 .. 92,600 for the whole test.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app import db
from app.services import paper_accounts
from brokers.base import (
    Broker,
    Fill,
    OrderAck,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    UnknownSymbol,
)
from brokers.paper import SimulatedMarket
from brokers.paper.account import FeeSchedule, PaperOrderRejected
from brokers.paper.broker import MemoryPaperStore, PaperBroker, PaperStore
from engines.market import Tick, price_limits, step_ticks
from tests.integration.helpers import make_user, seed_symbols

SAMSUNG = "005930"
T0 = datetime(2026, 3, 5, 1, 0, tzinfo=UTC)  # 10:00 KST
FEES = FeeSchedule(commission_rate=0.00015, sell_tax_rate=0.002)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def tick(price: int, i: int = 0, symbol: str = SAMSUNG) -> Tick:
    return Tick(symbol, price, 10, T0 + timedelta(seconds=i))


def limit(side: OrderSide, qty: int, price: int, coid: str = "") -> OrderRequest:
    return OrderRequest(SAMSUNG, side, qty, OrderType.LIMIT, price, coid)


def market_order(side: OrderSide, qty: int, coid: str = "") -> OrderRequest:
    return OrderRequest(SAMSUNG, side, qty, OrderType.MARKET, 0, coid)


async def new_broker(
    store: PaperStore | None = None, fees: FeeSchedule = FEES, market: SimulatedMarket | None = None
) -> PaperBroker:
    return await PaperBroker.open(
        market or SimulatedMarket(seed=7),
        store or MemoryPaperStore(cash=10_000_000),
        fees,
        clock=lambda: T0,
    )


async def test_is_a_broker_and_quotes_from_its_source() -> None:
    broker = await new_broker()
    assert isinstance(broker, Broker)
    assert (await broker.quote(SAMSUNG)).prev_close == 71_300
    assert price_limits(71_300) == (49_950, 92_600)


async def test_market_order_fills_at_the_next_trade_not_the_last() -> None:
    market = SimulatedMarket(seed=7)
    await market.subscribe([SAMSUNG])
    steps = iter(T0 + timedelta(seconds=i) for i in range(1000))

    def next_trade() -> Tick:
        while True:
            printed = market.step(next(steps))
            if printed:
                return printed[0]

    last = next_trade()
    assert (await market.quote(SAMSUNG)).price == last.price
    broker = await new_broker(market=market)
    ack = await broker.place_order(market_order(BUY, 10))
    assert broker.symbols_needed() == {SAMSUNG}
    assert await broker.on_tick(tick(last.price, symbol="000660")) == []  # other symbols: nothing

    nxt = next_trade()
    assert nxt.price != last.price  # the simulated market never prints the same price twice
    fills = await broker.on_tick(nxt)
    value = 10 * nxt.price
    fee = value * 15 // 100_000  # floor(value × 0.00015)
    assert fills == [Fill(ack.order_id, SAMSUNG, BUY, 10, nxt.price, nxt.ts, fee, 0)]
    assert broker.ledger.cash == 10_000_000 - value - fee
    assert broker.symbols_needed() == set()
    assert broker.ledger.available_cash == broker.ledger.cash  # reservation released
    # the next trade does nothing: the order is done
    assert await broker.on_tick(next_trade()) == []


async def test_market_order_slippage_moves_against_the_trader() -> None:
    broker = await new_broker(fees=FeeSchedule(0.00015, 0.002, slippage_ticks=2))
    await broker.place_order(market_order(BUY, 10))
    # 49,950 + 2 ticks across the 50,000 band edge: 50,000 then 50,100
    (fill,) = await broker.on_tick(tick(49_950))
    assert fill.price == 50_100 == step_ticks(49_950, 2)
    await broker.place_order(market_order(SELL, 10))
    # 50,100 - 2 ticks: 50,000 then 49,950, which is the day's lower limit anyway
    (sold,) = await broker.on_tick(tick(50_100, 1))
    assert sold.price == 49_950
    # buy 501,000 + 75 (floor 75.15); sell 499,500 - 74 (floor 74.925) - 999 tax
    assert broker.ledger.cash == 10_000_000 - 501_075 + 499_500 - 74 - 999 == 9_997_352


async def test_market_buy_reserves_at_the_upper_limit() -> None:
    broker = await new_broker()
    await broker.place_order(market_order(BUY, 100))
    # 100 × 92,600 = 9,260,000 + 1,389 commission
    assert broker.ledger.available_cash == 10_000_000 - 9_261_389 == 738_611
    with pytest.raises(PaperOrderRejected) as info:
        await broker.place_order(market_order(BUY, 8))  # 740,800 + 111 > 738,611
    assert info.value.code == "insufficient_cash"
    assert info.value.params == {"need": 740_911, "available": 738_611}


async def test_limit_buy_waits_then_fills_at_its_limit() -> None:
    store = MemoryPaperStore(cash=10_000_000)
    broker = await new_broker(store)
    ack = await broker.place_order(limit(BUY, 10, 70_000))
    assert ack.branch == "PAPER" and ack.ts == T0
    # reserves 700,000 + 105
    assert broker.ledger.available_cash == 9_299_895
    assert await broker.on_tick(tick(71_300, 0)) == []
    assert await broker.on_tick(tick(70_100, 1)) == []
    assert store.all_orders[ack.order_id].resting is True
    # the price jumps through the limit: the resting bid was hit at 70,000
    (fill,) = await broker.on_tick(tick(69_800, 2))
    assert (fill.price, fill.qty, fill.fee, fill.ts) == (70_000, 10, 105, T0 + timedelta(seconds=2))
    assert broker.ledger.cash == 9_299_895
    status = (await broker.orders(T0.date()))[0]
    assert (status.state, status.filled_qty, status.avg_fill_price) == (
        OrderState.FILLED,
        10,
        70_000.0,
    )


async def test_marketable_limit_takes_the_better_trade_price() -> None:
    broker = await new_broker()
    await broker.place_order(limit(BUY, 10, 75_000))
    (fill,) = await broker.on_tick(tick(71_200))
    assert fill.price == 71_200
    # 712,000 + 106 (floor 106.8); the 750,112 reserved is released
    assert broker.ledger.cash == 10_000_000 - 712_106
    assert broker.ledger.available_cash == broker.ledger.cash


async def test_sell_records_realized_pnl_and_tax() -> None:
    store = MemoryPaperStore(cash=10_000_000)
    broker = await new_broker(store)
    await broker.place_order(limit(BUY, 10, 70_000))
    await broker.on_tick(tick(70_000))
    await broker.place_order(limit(SELL, 4, 72_000))
    assert broker.ledger.available_qty(SAMSUNG) == 6
    await broker.on_tick(tick(71_900, 1))
    (fill,) = await broker.on_tick(tick(72_000, 2))
    assert (fill.fee, fill.tax) == (43, 576)
    # 288,000 - 43 - 576 - 280,000
    assert store.all_fills[-1].realized_pnl == 7_381
    balance = await broker.balance()
    (pos,) = balance.positions
    assert (pos.qty, pos.avg_price, pos.price, pos.name) == (6, 70_000.0, 71_300, "삼성전자")
    # 6 × (71,300 - 70,000)
    assert pos.pnl == 7_800
    assert balance.cash == 10_000_000 - 700_105 + 288_000 - 43 - 576 == 9_587_276


async def test_rejections_store_nothing() -> None:
    store = MemoryPaperStore(cash=1_000_000)
    broker = await new_broker(store)
    cases = [
        (limit(BUY, 0, 70_000), "qty_not_positive"),
        (limit(BUY, 1, 70_050), "price_off_tick"),
        (limit(BUY, 1, 92_700), "price_beyond_limits"),
        (limit(BUY, 20, 70_000), "insufficient_cash"),  # 1,400,210 > 1,000,000
        (limit(SELL, 1, 70_000), "insufficient_shares"),
    ]
    for request, code in cases:
        with pytest.raises(PaperOrderRejected) as info:
            await broker.place_order(request)
        assert info.value.code == code, request
    with pytest.raises(UnknownSymbol):
        await broker.place_order(OrderRequest("999999", BUY, 1, OrderType.LIMIT, 1_000))
    assert store.all_orders == {} and store.revision == 0
    assert broker.ledger.available_cash == 1_000_000


async def test_cancel_releases_and_stops_the_order() -> None:
    store = MemoryPaperStore(cash=10_000_000)
    broker = await new_broker(store)
    ack = await broker.place_order(limit(BUY, 10, 70_000))
    done = await broker.cancel_order(ack)
    assert done.order_id == ack.order_id
    assert broker.ledger.available_cash == 10_000_000
    assert broker.symbols_needed() == set()
    assert await broker.on_tick(tick(69_000)) == []
    assert store.all_orders[ack.order_id].state is OrderState.CANCELLED
    with pytest.raises(PaperOrderRejected) as info:
        await broker.cancel_order(ack)
    assert info.value.code == "order_not_open"
    with pytest.raises(PaperOrderRejected) as info:
        await broker.cancel_order(OrderAck("999", "PAPER", T0))
    assert info.value.code == "order_not_found"
    ack2 = await broker.place_order(limit(BUY, 10, 70_000))
    with pytest.raises(PaperOrderRejected) as info:
        await broker.cancel_order(ack2, qty=5)
    assert info.value.code == "partial_cancel"


async def test_same_client_order_id_places_once() -> None:
    store = MemoryPaperStore(cash=10_000_000)
    broker = await new_broker(store)
    first = await broker.place_order(limit(BUY, 10, 70_000, coid="sig-1"))
    again = await broker.place_order(limit(BUY, 99, 60_000, coid="sig-1"))
    assert again == first
    assert len(store.all_orders) == 1
    assert broker.ledger.available_cash == 9_299_895  # reserved once
    # after the fill too, the id still answers with the first ack
    await broker.on_tick(tick(70_000))
    assert await broker.place_order(limit(BUY, 10, 70_000, coid="sig-1")) == first
    assert len(store.all_orders) == 1


async def test_a_stale_broker_rechecks_against_the_store() -> None:
    """Two brokers on one account (web worker and runner) cannot spend the same cash."""
    store = MemoryPaperStore(cash=1_000_000)
    runner = await new_broker(store)
    web = await new_broker(store)
    await web.place_order(limit(BUY, 10, 70_000))  # reserves 700,105
    with pytest.raises(PaperOrderRejected) as info:
        await runner.place_order(limit(BUY, 10, 70_000))
    assert info.value.params == {"need": 700_105, "available": 299_895}
    # the runner reloaded on the way, so it now watches the web worker's order
    assert runner.symbols_needed() == {SAMSUNG}
    (fill,) = await runner.on_tick(tick(70_000))
    assert fill.price == 70_000
    # the web broker's copy is stale; the store refuses its duplicate fill and it reloads
    assert await web.on_tick(tick(69_900)) == []
    assert web.ledger.cash == store.cash == 1_000_000 - 700_105
    assert len(store.all_fills) == 1


async def test_executions_stream_fills_until_close() -> None:
    broker = await new_broker()
    received: list[Fill] = []

    async def consume() -> None:
        async for fill in broker.executions():
            received.append(fill)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await broker.place_order(market_order(BUY, 1))
    fills = await broker.on_tick(tick(71_300))
    await asyncio.sleep(0)
    await broker.close()
    await asyncio.wait_for(task, 1)
    assert received == fills and len(fills) == 1


async def test_orders_and_fills_by_kst_day() -> None:
    broker = await new_broker()
    await broker.place_order(market_order(BUY, 1))
    await broker.on_tick(tick(71_300))
    day = T0.date()  # 10:00 KST on 2026-03-05
    assert [f.price for f in await broker.fills(day)] == [71_300]
    assert await broker.fills(day - timedelta(days=1)) == []
    assert len(await broker.orders(day)) == 1


@pytest.mark.usefixtures("database")
async def test_restart_continues_from_the_sql_store() -> None:
    await seed_symbols()
    user = await make_user()
    async with db.session() as s:
        account = await paper_accounts.get_account(s, user.id or 0)
    assert account.id is not None
    store = paper_accounts.SqlPaperStore(account.id)

    first = await new_broker(store)
    await first.place_order(market_order(BUY, 10, coid="m-1"))
    (bought,) = await first.on_tick(tick(70_000))
    waiting = await first.place_order(limit(SELL, 4, 72_000, coid="l-1"))
    assert await first.on_tick(tick(71_900, 1)) == []  # the sell now rests at 72,000
    del first

    again = await new_broker(paper_accounts.SqlPaperStore(account.id))
    assert again.symbols_needed() == {SAMSUNG}
    assert again.ledger.cash == 10_000_000 - 700_105
    assert again.ledger.available_qty(SAMSUNG) == 6
    assert again.ledger.holdings[SAMSUNG].avg_price == 70_000.0
    assert await again.place_order(market_order(BUY, 10, coid="m-1")) == OrderAck(
        bought.order_id, "PAPER", T0, "m-1"
    )
    # rested before the restart: a jump to 72,300 fills at the 72,000 limit
    (sold,) = await again.on_tick(tick(72_300, 2))
    assert (sold.order_id, sold.price, sold.fee, sold.tax) == (waiting.order_id, 72_000, 43, 576)
    fills = await again.store.fills(T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert [f.realized_pnl for f in fills] == [None, 7_381]

    third = await new_broker(paper_accounts.SqlPaperStore(account.id))
    assert third.symbols_needed() == set()
    assert third.ledger.cash == 10_000_000 - 700_105 + 288_000 - 43 - 576
    assert third.ledger.holdings[SAMSUNG].qty == 6
