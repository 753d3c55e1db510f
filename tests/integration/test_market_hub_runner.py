"""The runner declares each user's interest to the hub; the upstream sees each symbol once.

Runs on SQLite and PostgreSQL with the simulated market as the upstream, wrapped
only to count the subscribe and unsubscribe calls it receives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pytest

from app import db
from app.runtime.runner import Runner
from app.services import rules as rules_service
from app.services import watchlist
from brokers.paper.market import SimulatedMarket
from tests.integration.helpers import make_user, seed_symbols, settings

pytestmark = pytest.mark.usefixtures("database")


class CountingMarket(SimulatedMarket):
    def __init__(self) -> None:
        super().__init__(seed=3, always_open=True)
        self.calls: Counter[tuple[str, str]] = Counter()

    async def subscribe(self, symbols: Iterable[str]) -> None:
        codes = list(symbols)
        for c in codes:
            self.calls["sub", c] += 1
        await super().subscribe(codes)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        codes = list(symbols)
        for c in codes:
            self.calls["unsub", c] += 1
        await super().unsubscribe(codes)


async def test_three_users_overlapping_symbols_one_upstream_subscription_each():
    await seed_symbols()
    users = [await make_user(f"u{i}@example.com") for i in range(3)]
    async with db.session() as s:
        await watchlist.add(s, users[0].id, "005930")
        await watchlist.add(s, users[0].id, "000660")
        await watchlist.add(s, users[1].id, "005930")
        await watchlist.add(s, users[1].id, "035420")
        await watchlist.add(s, users[2].id, "005930")
        await rules_service.create_price_rule(
            s, users[2].id, symbol_query="000660", op="cross_up", level="250000"
        )
    market = CountingMarket()
    runner = Runner(settings(), market)
    await runner.sync_once()
    assert market.subscribed == {"005930", "000660", "035420"}
    assert {k: v for k, v in market.calls.items() if k[0] == "sub"} == {
        ("sub", "005930"): 1,
        ("sub", "000660"): 1,
        ("sub", "035420"): 1,
    }
    assert runner.hub.refcount("005930") == 3
    assert runner.hub.refcount("000660") == 2  # a watchlist and another user's rule

    # user 0 lets go of 005930: two users still watch it, nothing changes upstream
    async with db.session() as s:
        rows = await watchlist.list_rows(s, users[0].id)
        item = next(r for r in rows if r.code == "005930")
        await watchlist.remove(s, users[0].id, item.item_id)
    await runner.sync_once()
    assert market.calls["unsub", "005930"] == 0 and "005930" in market.subscribed

    # user 1 drops 035420, the only one watching it: unsubscribed, without restart
    async with db.session() as s:
        rows = await watchlist.list_rows(s, users[1].id)
        item = next(r for r in rows if r.code == "035420")
        await watchlist.remove(s, users[1].id, item.item_id)
    await runner.sync_once()
    assert market.calls["unsub", "035420"] == 1
    assert market.subscribed == {"005930", "000660"}
    assert "035420" not in runner.quotes

    # an open chart is a consumer too: a symbol nobody watches goes live for it
    await runner.set_interest("chart:tab1", ["051910"])
    assert "051910" in market.subscribed and market.calls["sub", "051910"] == 1
    await runner.set_interest("chart:tab2", ["051910"])
    await runner.set_interest("chart:tab1", [])
    assert "051910" in market.subscribed
    await runner.set_interest("chart:tab2", [])
    assert "051910" not in market.subscribed and market.calls["unsub", "051910"] == 1
    assert max(v for k, v in market.calls.items() if k[0] == "sub") == 1
