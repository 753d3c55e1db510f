"""The live bus on a real Redis: pages on a worker without the runner still get a
symbol streamed for their chart and see its live price and forming bar.

"Another worker" is this test process with no current runner and its own bus
client; the runner writes through a second client, as the leader's worker does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as redis
from reflex.istate.data import RouterData
from reflex.state import State

from app import db
from app.runtime import live_bus
from app.runtime.live_bus import LiveQuotedMarket, RedisLiveBus, Snapshot
from app.runtime.runner import Runner, set_current_runner
from app.services import auth
from app.services import candles as candle_store
from app.states.chart import ChartState
from app.states.live import LiveState, SymbolLiveState
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from engines.market import Candle, Timeframe
from tests.integration.helpers import T0, make_user, seed_symbols, settings, ticks

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-bus:{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_declarations_round_trip_expire_and_withdraw(prefix):
    web = RedisLiveBus(REDIS_URL, prefix=prefix, ttl=0.3)
    engine = RedisLiveBus(REDIS_URL, prefix=prefix)
    try:
        await web.declare("chart:a", ["005930", "000660"])
        await web.declare("chart:b", ["051910"])
        assert await engine.interest() == {
            "chart:a": {"005930", "000660"},
            "chart:b": {"051910"},
        }
        await web.declare("chart:b", [])  # the page left
        assert await engine.interest() == {"chart:a": {"005930", "000660"}}
        client = redis.Redis.from_url(REDIS_URL)
        await client.hset(f"{prefix}:interest", "garbage", "not json")
        await asyncio.sleep(0.4)  # chart:a was not renewed: its worker died
        assert await engine.interest() == {}
        assert await client.hlen(f"{prefix}:interest") == 0  # expired and unreadable removed
        await client.aclose()
    finally:
        await web.close()
        await engine.close()


async def test_snapshots_round_trip_with_bars_and_skip_unreadable(prefix):
    bus = RedisLiveBus(REDIS_URL, prefix=prefix)
    forming = Candle("005930", Timeframe.M1, T0, 70_000, 70_300, 69_900, 70_200, 40)
    closed = Candle(
        "005930", Timeframe.M1, T0 - timedelta(minutes=1), 69_800, 70_000, 69_700, 70_000, 55
    )
    snap = Snapshot(70_200, 69_000, T0, {Timeframe.M1: forming}, {Timeframe.M1: [closed]})
    try:
        await bus.publish({"005930": snap})
        client = redis.Redis.from_url(REDIS_URL)
        await client.set(f"{prefix}:live:000660", "{broken")
        await client.aclose()
        got = await bus.snapshots(["005930", "000660", "051910"])
        assert set(got) == {"005930"}  # broken and absent ones are left out
        back = got["005930"]
        assert (back.price, back.prev_close, back.ts) == (70_200, 69_000, T0)
        assert back.forming == {Timeframe.M1: forming}
        assert back.pending == {Timeframe.M1: [closed]}
        assert back.view()["price"] == "70,200" and back.view()["dir"] == "up"
        assert back.view()["at"] == str(int(T0.timestamp() * 1000))
    finally:
        await bus.close()


def _root(token: str, path: str, query: str = "") -> State:
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": "en"},
            "ip": "4.4.4.4",
            "token": f"client-{uuid.uuid4().hex[:8]}",
            "pathname": path,
            "asPath": f"{path}{query}",
        }
    )
    return root


@pytest.mark.usefixtures("database")
async def test_a_chart_on_a_worker_without_the_runner_streams_and_shows_live_data(prefix):
    """The chart declares its symbol on the bus; the runner (elsewhere) subscribes it,
    publishes the price and the forming bar, and the chart draws them. Leaving the
    page withdraws the symbol again."""
    await seed_symbols()
    user = await make_user("bus@example.com")
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", "4.4.4.4")
        await candle_store.store(
            s, [Candle("051910", Timeframe.M1, T0 - timedelta(minutes=1), 1, 2, 1, 2, 1)]
        )
    path = ticks("051910", [400_000, 401_000, 402_500], start=T0 + timedelta(seconds=5))
    engine_bus = RedisLiveBus(REDIS_URL, prefix=prefix)
    web_bus = RedisLiveBus(REDIS_URL, prefix=prefix)
    runner = Runner(
        settings(redis_url=REDIS_URL),
        ReplayMarket(path, SYMBOLS, prev_close={"051910": 399_000}),
        bus=engine_bus,
    )
    live_bus.set_live_bus(web_bus)
    set_current_runner(None)  # this "worker" has no runner
    try:
        await runner.sync_once()
        assert "051910" not in runner.subscribed  # nobody watches it

        chart = await _root(token, "/symbol", "?code=051910").get_state(ChartState)
        await ChartState.event_handlers["load"].fn(chart)
        await runner.sync_once()  # the leader's next pass sees the remote chart
        assert "051910" in runner.subscribed
        assert runner.hub.refcount("051910") == 1

        for tick in path:
            await runner.handle_tick(tick)
        assert await runner.flush_ui() == 1  # one symbol moved: published on the bus
        assert await chart._render(user.id, live=True) is True
        assert chart.price == "402,500" and chart.direction == "up"
        candle = chart.figure.data[0]
        assert list(candle.close)[-1] == 402_500  # the forming bar, from the bus
        assert list(candle.high)[-1] == 402_500 and list(candle.open)[-1] == 400_000

        # A second tab opening the symbol now finds the shared price seeded.
        second = await _root(token, "/symbol", "?code=051910").get_state(ChartState)
        queued = await ChartState.event_handlers["load"].fn(second)
        assert [e.handler.fn.__qualname__ for e in queued] == [
            "ChartState.follow",
            "SymbolLiveState.follow",
        ]
        assert queued[1].args[0][1]._var_value == "051910"
        shared = await second.get_state(SymbolLiveState)
        await shared._seed("051910")
        assert shared.quote["price"] == "402,500"

        live = await _root(token, "/").get_state(LiveState)
        from app.services import watchlist

        async with db.session() as s:
            await watchlist.add(s, user.id, "051910")
        await live._refresh(user.id)
        assert live.quotes["051910"]["price"] == "402,500"

        await ChartState.event_handlers["leave"].fn(chart)
        await ChartState.event_handlers["leave"].fn(second)
        await runner.sync_once()
        assert runner.hub.refcount("051910") == 1  # now the watchlist holds it
        assert not any(c.startswith("bus:") for c in runner.extra_interest)
    finally:
        live_bus.set_live_bus(None)
        await engine_bus.close()
        await web_bus.close()
        await runner.market.close()


async def test_the_runner_keeps_remote_interest_when_the_bus_is_down(prefix):
    runner = Runner(
        settings(), ReplayMarket([], SYMBOLS), bus=RedisLiveBus(REDIS_URL, prefix=prefix)
    )
    runner.extra_interest["bus:chart:x"] = {"005930"}
    down = RedisLiveBus("redis://127.0.0.1:1/0", prefix=prefix)
    runner.bus = down
    await runner._merge_bus_interest()  # logged, not raised
    assert runner.extra_interest["bus:chart:x"] == {"005930"}
    await down.close()


async def test_a_worker_without_the_runner_quotes_the_leaders_live_price(prefix):
    """A paper order placed on any worker is priced at what its page shows: the bus's
    live price, within the day's range; the source answers what the bus cannot."""
    from brokers.paper.market import SimulatedMarket

    source = SimulatedMarket(seed=7, always_open=True)
    bus = RedisLiveBus(REDIS_URL, prefix=prefix)
    market = LiveQuotedMarket(source, bus)
    try:
        own = await source.quote("005930")
        live_price = own.high + 1_000  # a price the simulation never printed
        await bus.publish({"005930": Snapshot(live_price, own.prev_close, T0)})
        quote = await market.quote("005930")
        assert (quote.price, quote.ts) == (live_price, T0)
        assert quote.high == live_price and quote.low <= live_price
        other = await market.quote("000660")  # nothing on the bus: the source's quote
        assert other.price == (await source.quote("000660")).price
        assert [s.code for s in await market.list_symbols()][:3] == [
            s.code for s in (await source.list_symbols())[:3]
        ]
        down = LiveQuotedMarket(source, RedisLiveBus("redis://127.0.0.1:1/0", prefix=prefix))
        assert (await down.quote("005930")).price == (await source.quote("005930")).price
    finally:
        await bus.close()
        await source.close()


async def _take(it, n: int, out: list, timeout: float = 10.0) -> None:  # noqa: ANN001
    async def run() -> None:
        async for item in it:
            out.append(item)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)


async def test_alerts_from_an_engine_apart_are_each_read_by_one_worker(prefix: str):
    """Two workers read the queue at once: every alert reaches exactly one of them, in
    the order pushed, and an unreadable entry is skipped, not fatal."""
    engine, first, second = (RedisLiveBus(REDIS_URL, prefix=prefix) for _ in range(3))
    sink = live_bus.BusAlertSink(engine)
    got_a: list = []
    got_b: list = []
    readers = [
        asyncio.create_task(_take(first.alerts(), 100, got_a)),
        asyncio.create_task(_take(second.alerts(), 100, got_b)),
    ]
    await asyncio.sleep(0.2)  # both are waiting in a blocking pop
    raw = redis.Redis.from_url(REDIS_URL)
    await raw.lpush(engine.alerts_key, b"not json")
    for i in range(40):
        await sink.push_alert(i % 3, {"rule": f"r{i}", "price": 70_000 + i})
        await asyncio.sleep(0.01)  # spread over several polls of both readers
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(got_a) + len(got_b) < 40 and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for task in readers:
        task.cancel()
    _done, stuck = await asyncio.wait(readers, timeout=5)
    assert not stuck  # a worker shutting down stops its reader promptly
    everything = got_a + got_b
    assert sorted(a["rule"] for _u, a in everything) == sorted(f"r{i}" for i in range(40))
    assert len(everything) == 40  # none shown twice, whichever worker took it
    for got in (got_a, got_b):
        numbers = [int(a["rule"][1:]) for _u, a in got]
        assert numbers == sorted(numbers)  # oldest first
        assert all(u == n % 3 for (u, _a), n in zip(got, numbers, strict=True))
    assert await raw.llen(engine.alerts_key) == 0
    await raw.aclose()
    for bus in (engine, first, second):
        await bus.close()


async def test_alert_backlog_is_bounded_while_no_worker_reads(prefix: str, monkeypatch):
    monkeypatch.setattr(live_bus, "ALERT_BACKLOG", 5)
    bus = RedisLiveBus(REDIS_URL, prefix=prefix)
    for i in range(8):
        await bus.push_alert(1, {"n": i})
    raw = redis.Redis.from_url(REDIS_URL)
    assert await raw.llen(bus.alerts_key) == 5
    assert 0 < await raw.ttl(bus.alerts_key) <= live_bus.ALERT_TTL  # gone if never read
    await raw.aclose()
    got: list = []
    await _take(bus.alerts(), 5, got)
    assert [a["n"] for _u, a in got] == [3, 4, 5, 6, 7]  # the newest five, oldest first
    await bus.close()


async def test_local_bus_keeps_alerts_only_while_someone_reads():
    bus = live_bus.LocalLiveBus()
    await bus.push_alert(1, {"n": 0})  # nobody reads: dropped, not piled up
    got: list = []
    reader = asyncio.create_task(_take(bus.alerts(), 2, got))
    await asyncio.sleep(0.01)
    await bus.push_alert(1, {"n": 1})
    await bus.push_alert(2, {"n": 2})
    await reader
    assert got == [(1, {"n": 1}), (2, {"n": 2})]
