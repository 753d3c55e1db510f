"""Paper orders placed through the service fill in the runner, from the shared stream.

The runner's desk loads a broker only for accounts with open orders, asks the hub
for their symbols (even ones nobody watches) and fills at the next trade.
"""

from __future__ import annotations

import pytest

from app import db
from app.runtime.runner import Runner
from app.services import paper_accounts
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from tests.integration.helpers import make_user, seed_symbols, settings, ticks

pytestmark = pytest.mark.usefixtures("database")


async def test_a_market_order_fills_at_the_next_streamed_trade_for_the_right_user():
    await seed_symbols()
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    tape = ticks("000660", [200_000, 200_500, 201_000])
    market = ReplayMarket(tape, SYMBOLS)
    runner = Runner(settings(paper_commission_rate=0.00015), market)
    async with db.session() as s:
        await paper_accounts.place_order(
            s, alice.id, market, symbol="000660", side="buy", qty="3", order_type="market"
        )
        await paper_accounts.place_order(
            s, bob.id, market, symbol="000660", side="buy", qty="1", price="199,000"
        )
    await runner.sync_once()
    assert set(runner.paper.brokers) == {alice.id, bob.id}
    reloads = runner.paper.reloads
    await runner.sync_once()  # nothing changed: no account is re-read
    assert runner.paper.reloads == reloads
    assert runner.hub.refcount("000660") == 1  # only the desk wants it: nobody watches it
    assert "000660" in market._subscribed

    await runner.handle_tick(tape[1])  # 200,500: alice's market order fills here
    async with db.session() as s:
        a_orders = await paper_accounts.list_orders(s, alice.id)
        b_orders = await paper_accounts.list_orders(s, bob.id)
        a_fills = await paper_accounts.list_fills(s, alice.id)
    assert [o.state.value for o in a_orders] == ["filled"]
    assert [(f.qty, f.price, f.commission) for f in a_fills] == [(3, 200_500, 90)]
    assert [o.state.value for o in b_orders] == ["open"]  # 199,000 limit not reached

    await runner.sync_once()  # alice is done: her broker is dropped, bob's stays
    assert set(runner.paper.brokers) == {bob.id}
    async with db.session() as s:
        await paper_accounts.cancel_order(s, bob.id, market, b_orders[0].order_id)
    await runner.sync_once()
    assert runner.paper.brokers == {}
    assert runner.hub.refcount("000660") == 0 and "000660" not in market._subscribed
