"""The runner declares each user's interest to the hub; the upstream sees each symbol once.

Runs on SQLite and PostgreSQL with the simulated market as the upstream, wrapped
only to count the subscribe and unsubscribe calls it receives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import timedelta

import pytest
from reflex.istate.data import RouterData
from reflex.state import State

from app import db
from app.models.users import User
from app.runtime.runner import Runner, set_current_runner
from app.services import auth, watchlist
from app.services import rules as rules_service
from app.states.admin import AdminState
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


async def test_admin_status_shows_how_full_the_upstream_sessions_are():
    await seed_symbols()
    admin = await make_user("admin@example.com")
    async with db.session() as s:
        row = await s.get(User, admin.id)
        row.role = "admin"
        s.add(row)
        await s.commit()
        await watchlist.add(s, admin.id, "005930")
        await watchlist.add(s, admin.id, "000660")
        token = await auth.create_session(s, admin, timedelta(hours=1), "browser", "7.7.7.7")
    runner = Runner(settings(), CountingMarket())
    await runner.sync_once()
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {"headers": {"cookie": f"tw_session={token}"}, "ip": "7.7.7.7", "token": "client-adm"}
    )
    set_current_runner(runner)
    try:
        state = await root.get_state(AdminState)
        await AdminState.event_handlers["load_status"].fn(state)
    finally:
        set_current_runner(None)
    assert state.status["upstream_sessions"] == "2/∞"
    assert state.status["symbols_waiting"] == "0"
    assert state.status["subscribed"] == "2"
