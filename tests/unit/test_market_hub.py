"""The market hub's bookkeeping: reference counts, capacity, spreading, merging.

The upstream here is a recording source that implements the MarketData protocol
and enforces a per-session subscription limit the way KIS does (it refuses the
41st symbol), so a hub that over-fills a session fails loudly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

import pytest

from app.runtime.hub import MarketHub
from brokers.base import BrokerError, Quote, SymbolInfo, UnknownSymbol
from engines.market import Candle, Tick, Timeframe

T0 = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
CODES = [f"{i:06d}" for i in range(1, 121)]


class SessionFull(BrokerError):
    pass


class RecordingSource:
    """One upstream session: a limit, a log of subscribe calls, a tick queue."""

    name = "recording"

    def __init__(self, index: int, limit: int | None, log: list[tuple[int, str, str]]) -> None:
        self.index, self.limit, self.log = index, limit, log
        self.subscribed: set[str] = set()
        self.queue: asyncio.Queue[Tick | Exception] = asyncio.Queue()
        self.closed = False
        self.fail_next_subscribe = False

    async def list_symbols(self) -> list[SymbolInfo]:
        return [SymbolInfo(c, c, c, "KOSPI") for c in CODES]

    async def quote(self, symbol: str) -> Quote:
        if symbol not in CODES:
            raise UnknownSymbol(symbol)
        return Quote(symbol, 1000, 1000, 1000, 1000, 1000, 0, T0)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        codes = set(symbols)
        if self.fail_next_subscribe:
            self.fail_next_subscribe = False
            raise BrokerError("upstream refused")
        if self.limit is not None and len(self.subscribed | codes) > self.limit:
            raise SessionFull(f"session {self.index} over {self.limit}")
        for c in sorted(codes):
            assert c not in self.subscribed, f"{c} subscribed twice on session {self.index}"
            self.log.append((self.index, "sub", c))
        self.subscribed |= codes

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        for c in sorted(set(symbols)):
            assert c in self.subscribed, f"{c} unsubscribed but not subscribed"
            self.log.append((self.index, "unsub", c))
        self.subscribed -= set(symbols)

    async def ticks(self) -> AsyncIterator[Tick]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item

    async def close(self) -> None:
        self.closed = True


def make_hub(limit: int | None, max_sessions: int) -> tuple[MarketHub, list[RecordingSource]]:
    log: list[tuple[int, str, str]] = []
    sources: list[RecordingSource] = []

    def factory(i: int) -> RecordingSource:
        src = RecordingSource(i, limit, log)
        sources.append(src)
        return src

    return MarketHub(factory, capacity=limit, max_sessions=max_sessions), sources


def upstream_subscriptions(sources: list[RecordingSource]) -> Counter[str]:
    return Counter(c for s in sources for c in s.subscribed)


async def test_overlapping_users_share_one_upstream_subscription_per_symbol():
    hub, sources = make_hub(None, 1)
    await hub.set_interest("user:1", ["005930", "000660", "035420"])
    await hub.set_interest("user:2", ["005930", "000660"])
    await hub.set_interest("user:3", ["005930", "051910"])
    subs = upstream_subscriptions(sources)
    assert subs == Counter({"005930": 1, "000660": 1, "035420": 1, "051910": 1})
    log = sources[0].log
    assert [e for e in log if e[1] == "sub"] == [
        (0, "sub", "000660"),
        (0, "sub", "005930"),
        (0, "sub", "035420"),
        (0, "sub", "051910"),
    ]
    assert hub.refcount("005930") == 3 and hub.refcount("000660") == 2


async def test_release_unsubscribes_only_when_the_last_consumer_lets_go():
    hub, sources = make_hub(None, 1)
    await hub.set_interest("user:1", ["005930", "000660"])
    await hub.set_interest("user:2", ["005930"])
    await hub.set_interest("user:1", ["000660"])  # drops 005930, user 2 still has it
    assert "005930" in sources[0].subscribed
    assert not any(e[1] == "unsub" for e in sources[0].log)
    await hub.drop_consumer("user:2")
    assert sources[0].subscribed == {"000660"}
    assert sources[0].log[-1] == (0, "unsub", "005930")
    assert hub.refcount("005930") == 0
    await hub.set_interest("user:1", [])
    assert sources[0].subscribed == set() and hub.consumers() == {}


async def test_hundred_symbols_spread_over_three_sessions_of_forty():
    hub, sources = make_hub(40, 3)
    await hub.set_interest("user:1", CODES[:60])
    await hub.set_interest("user:2", CODES[40:100])  # 20 overlap
    assert [len(s.subscribed) for s in sources] == [40, 40, 20]
    subs = upstream_subscriptions(sources)
    assert set(subs) == set(CODES[:100]) and set(subs.values()) == {1}
    assert hub.status()["pending"] == []
    # every symbol's session is the one that holds it
    for code in CODES[:100]:
        assert code in sources[hub.upstream_of(code)].subscribed


async def test_over_capacity_waits_then_takes_a_freed_slot():
    hub, sources = make_hub(40, 2)
    await hub.set_interest("user:1", CODES[:80])
    await hub.set_interest("user:2", CODES[80:85])
    assert hub.pending == set(CODES[80:85])
    assert len(sources) == 2 and all(len(s.subscribed) == 40 for s in sources)
    await hub.set_interest("user:1", CODES[3:80])  # frees 3 slots on session 0
    assert hub.pending == set(CODES[83:85])
    assert set(CODES[80:83]) <= sources[0].subscribed
    assert hub.status()["sessions"] == [
        {"index": 0, "symbols": 40, "capacity": 40},
        {"index": 1, "symbols": 40, "capacity": 40},
    ]


async def test_a_failed_subscribe_keeps_the_interest_and_is_retried():
    hub, sources = make_hub(None, 1)
    sources[0].fail_next_subscribe = True
    await hub.set_interest("user:1", ["005930"])
    assert hub.pending == {"005930"} and sources[0].subscribed == set()
    await hub.retry_pending()
    assert hub.pending == set() and sources[0].subscribed == {"005930"}


async def test_ticks_merge_every_session_and_drop_unwanted_symbols():
    hub, sources = make_hub(2, 3)
    await hub.set_interest("user:1", CODES[:5])  # sessions: 2, 2, 1
    received: list[Tick] = []

    async def consume() -> None:
        async for tick in hub.ticks():
            received.append(tick)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    for i, src in enumerate(sources):
        for code in sorted(src.subscribed):
            await src.queue.put(Tick(code, 1000 + i, 1, T0))
    await sources[0].queue.put(Tick("999999", 5, 1, T0))  # nobody wants it
    for _ in range(50):
        if len(received) == 5:
            break
        await asyncio.sleep(0.01)
    assert sorted(t.symbol for t in received) == CODES[:5]
    assert {t.symbol: t.price for t in received}[CODES[4]] == 1002
    await hub.close()
    await asyncio.wait_for(task, 2)
    assert all(s.closed for s in sources)


async def test_a_failing_session_stream_is_restarted_without_losing_the_others(monkeypatch):
    monkeypatch.setattr("app.runtime.hub.PUMP_RETRY_MAX", 0.01)
    hub, sources = make_hub(1, 2)
    await hub.set_interest("user:1", CODES[:2])
    received: list[str] = []

    async def consume() -> None:
        async for tick in hub.ticks():
            received.append(tick.symbol)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await sources[0].queue.put(RuntimeError("socket closed"))
    await sources[1].queue.put(Tick(CODES[1], 1000, 1, T0))
    await sources[0].queue.put(Tick(CODES[0], 1000, 1, T0))
    for _ in range(300):
        if len(received) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(received) == CODES[:2]
    await hub.close()
    await asyncio.wait_for(task, 2)


@pytest.mark.parametrize(("capacity", "sessions"), [(0, 1), (1, 0)])
def test_bad_configuration_is_refused(capacity: int, sessions: int):
    with pytest.raises(ValueError):
        MarketHub(lambda i: RecordingSource(i, None, []), capacity=capacity, max_sessions=sessions)


class RepairingSource(RecordingSource):
    """A session that repairs gaps, as KIS's does: a candle queue and a bar timer."""

    def __init__(self, index: int, limit: int | None, log: list[tuple[int, str, str]]) -> None:
        super().__init__(index, limit, log)
        self.repaired: asyncio.Queue[Candle] = asyncio.Queue()
        self.closed_until: list[datetime] = []

    async def repaired_candles(self) -> AsyncIterator[Candle]:
        while True:
            yield await self.repaired.get()

    def close_candles_until(self, ts: datetime) -> None:
        self.closed_until.append(ts)


async def test_repaired_candles_of_every_session_reach_one_stream_and_timers_reach_all():
    sources: list[RepairingSource] = []

    def factory(i: int) -> RepairingSource:
        sources.append(RepairingSource(i, 1, []))
        return sources[-1]

    hub = MarketHub(factory, capacity=1, max_sessions=2)
    await hub.set_interest("user:1", CODES[:2])
    hub.close_candles_until(T0)
    assert [s.closed_until for s in sources] == [[T0], [T0]]
    got: list[Candle] = []

    async def consume() -> None:
        async for candle in hub.repaired_candles():
            got.append(candle)

    task = asyncio.create_task(consume())
    for i, src in enumerate(sources):
        await src.repaired.put(Candle(CODES[i], Timeframe.M1, T0, 10, 12, 9, 11, 5 + i))
    for _ in range(100):
        if len(got) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted((c.symbol, c.volume) for c in got) == [(CODES[0], 5), (CODES[1], 6)]
    await hub.close()
    await asyncio.wait_for(task, 3)
