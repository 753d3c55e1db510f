"""The market hub over real KIS websocket sessions (the loopback fake speaks KIS).

One session per service app key, at most 40 subscriptions each: three users with
overlapping watchlists of 100 distinct symbols end as 40/40/20 subscriptions on
three sessions, each symbol exactly once, and ticks of all three sessions arrive
on the hub's one stream.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from app.runtime.hub import MarketHub
from brokers.base import SymbolInfo
from brokers.kis.market import KisMarketData
from brokers.kis.rest import KisRest
from brokers.kis.stream import KisStream
from engines.market import Tick
from tests.kis_ws_fake import KisWsFake

KEYS = {"SVC-A": "SECRET-A", "SVC-B": "SECRET-B", "SVC-C": "SECRET-C"}
CODES = [f"{n:06d}" for n in range(1, 101)]


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_three_users_100_symbols_three_kis_sessions_one_subscription_each():
    fake = KisWsFake(dict(KEYS))
    await fake.start()
    keys = list(KEYS.items())
    symbols = [SymbolInfo(c, c, c, "KOSPI") for c in CODES]

    def session(i: int) -> KisMarketData:
        app_key, secret = keys[i]
        rest = KisRest(app_key=app_key, app_secret=secret, paper=False, base_url=fake.base_url)
        stream = KisStream(
            [(app_key, secret)],
            ws_url=fake.ws_url,
            rest_base_url=fake.base_url,
            backoff_base=0.01,
            backoff_max=0.05,
            backfill_delay=0,
            clock=lambda: datetime(2025, 3, 4, 0, 0, tzinfo=UTC),
        )
        return KisMarketData(rest, stream, symbols)

    hub = MarketHub(session, capacity=40, max_sessions=3)
    received: list[Tick] = []

    async def consume() -> None:
        async for tick in hub.ticks():
            received.append(tick)

    consumer = asyncio.create_task(consume())
    try:
        await hub.set_interest("user:1", CODES[:50])
        await hub.set_interest("user:2", CODES[30:80])
        await hub.set_interest("user:3", [*CODES[70:], *CODES[:10]])
        for up in hub.upstreams:
            await up.source.stream.wait_ready()
        subs = Counter(fake.subscribed_keys())
        assert sorted(subs) == CODES and set(subs.values()) == {1}
        per_session = sorted((c.app_key, len(c.subs)) for c in fake.live())
        assert per_session == [("SVC-A", 40), ("SVC-B", 40), ("SVC-C", 20)]
        assert hub.refcount("000005") == 2 and hub.refcount("000075") == 2

        ts = datetime(2025, 3, 4, 0, 0, 5, tzinfo=UTC)
        await fake.send_ticks([Tick(c, 1000 + i, 1, ts) for i, c in enumerate(CODES)])
        await eventually(lambda: len(received) == 100)
        assert sorted(t.symbol for t in received) == CODES

        # the last user of 000095 leaves: unsubscribed upstream; 000005 stays for user 1
        await hub.set_interest("user:3", CODES[:10])
        assert Counter(fake.subscribed_keys()) == Counter(CODES[:80])
        assert "000005" in fake.subscribed_keys()
    finally:
        await hub.close()
        await asyncio.wait_for(consumer, 5)
        await fake.stop()
