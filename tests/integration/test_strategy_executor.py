"""The order executor on a real database, against the paper broker and the KIS fake.

Counted where orders land: the paper account's order table, and the orders the KIS
fake accepted over loopback. Every refusal must be a stored row with its reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import update
from sqlmodel import col

from app import db
from app.config import Settings
from app.models.strategies import StrategyAttachment
from app.services import strategies as service
from app.services.strategy_orders import OrderExecutor, client_order_id
from brokers.ratelimit import reset_registry
from tests.integration import helpers
from tests.integration.test_strategy_kit import (
    SAMSUNG,
    attachment,
    audit_actions,
    buy,
    kis_account,
    kis_order_posts,
    kis_settings,
    live_columns,
    orders_of,
    paper_market,
    paper_orders,
    seed,
    sell,
    start_kis,
)
from tests.kis_fake import KisFake
from tests.loopback import LoopbackServer

pytestmark = pytest.mark.usefixtures("database")


@dataclass
class Venue:
    """One account a strategy trades, and how to count the orders that reached it."""

    kind: str
    executor: OrderExecutor
    fake: KisFake | None
    server: LoopbackServer | None
    settings: Settings

    async def seed(self, email: str = "exec@example.com", **limits: object) -> int:
        if self.kind == "paper":
            return (await seed(email, mode="paper", **limits)).attachment_id
        first = await seed(email, mode="alert")
        credential = await kis_account(first.user_id)
        cols = await live_columns(first.user_id, credential, **limits)
        async with db.session() as s:
            await s.exec(
                update(StrategyAttachment)
                .where(col(StrategyAttachment.id) == first.attachment_id)
                .values(**cols)
            )
            await s.commit()
        return first.attachment_id

    async def placed(self) -> int:
        if self.fake is not None:
            return kis_order_posts(self.fake)
        return len(await paper_orders())


@pytest.fixture(params=["paper", "kis"])
async def venue(request: pytest.FixtureRequest, monkeypatch) -> AsyncIterator[Venue]:
    reset_registry()
    if request.param == "paper":
        settings = helpers.settings()
        yield Venue("paper", OrderExecutor(paper_market(), settings), None, None, settings)
        return
    fake, server = start_kis()
    settings = kis_settings(server)
    monkeypatch.setenv("KIS_PAPER_BASE_URL", server.base_url)
    monkeypatch.setenv("KIS_PAPER_RATE_PER_S", "1000")
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        yield Venue("kis", OrderExecutor(paper_market(), settings), fake, server, settings)
    finally:
        server.stop()
        get_settings.cache_clear()


async def test_one_signal_places_one_order_however_often_it_is_replayed(venue: Venue):
    att = await venue.seed()
    signal = buy("2026-03-05", qty=3)
    rows = [await venue.executor.execute(att, signal, 70_000) for _ in range(3)]
    assert {r.id for r in rows} == {rows[0].id}
    assert rows[0].state == "acked" and rows[0].broker_order_id
    assert rows[0].client_order_id == client_order_id(att, signal.key)
    assert await venue.placed() == 1
    # a second executor (another process, a restart) knows it too
    again = await OrderExecutor(paper_market(), venue.settings).execute(att, signal, 70_000)
    assert again.id == rows[0].id and await venue.placed() == 1
    # a different signal is a different order
    other = await venue.executor.execute(att, buy("2026-03-06", qty=1), 70_000)
    assert other.id != rows[0].id and await venue.placed() == 2
    actions = await audit_actions()
    assert actions.count("strategy.order_sent") == 2
    assert actions.count("strategy.order_acked") == 2


async def test_paper_order_lands_in_the_paper_account_under_its_client_id():
    att = await seed("paper@example.com", mode="paper")
    executor = OrderExecutor(paper_market(), helpers.settings())
    row = await executor.execute(att.attachment_id, buy("d1", qty=5), 71_300)
    [stored] = await paper_orders()
    assert (stored.client_order_id, str(stored.id), stored.qty, stored.side) == (
        row.client_order_id,
        row.broker_order_id,
        5,
        "buy",
    )
    assert stored.order_type == "market" and stored.state == "open"


async def test_sizing_uses_the_account_and_the_brokers_reservation(venue: Venue):
    """A full-size buy is sized from the account at the day's upper limit (what a market
    buy reserves), so the broker accepts it; a sell while flat sells nothing."""
    att = await venue.seed(max_order_value=100_000_000)
    row = await venue.executor.execute(att, buy("d1"), 70_000)
    assert row.state == "acked", row
    if venue.kind == "paper":
        assert row.qty == 107  # floor(10,000,000 / (92,600 x 1.00015))
    else:
        assert row.qty == 549  # floor(50,000,000 / (91,000 x 1.00015)): the fake's upper limit
    flat = await venue.executor.execute(att, sell("d2"), 70_000)
    assert (flat.state, flat.reason, flat.qty) == ("rejected", "nothing_to_sell", 0)
    assert await venue.placed() == 1


@pytest.mark.parametrize(
    ("limits", "signals", "reason"),
    [
        ({"max_order_value": 700_000}, [("a", 10), ("b", 11)], "max_order_value"),
        ({"max_position_qty": 15}, [("a", 10), ("b", 6)], "max_position"),
        ({"max_orders_per_day": 2}, [("a", 1), ("b", 1), ("c", 1)], "max_orders_per_day"),
    ],
)
async def test_each_limit_refuses_the_order_beyond_it(venue: Venue, limits, signals, reason):
    att = await venue.seed(**limits)
    rows = [await venue.executor.execute(att, buy(k, qty=q), 70_000) for k, q in signals]
    *accepted, refused = rows
    assert [r.state for r in accepted] == ["acked"] * len(accepted)
    assert (refused.state, refused.reason) == ("rejected", reason)
    assert refused.broker_order_id is None and refused.sent_at is None
    assert await venue.placed() == len(accepted)
    assert "strategy.order_refused" in await audit_actions()
    # a refusal does not count towards the daily limit, and the same signal stays refused
    again = await venue.executor.execute(att, buy(signals[-1][0], qty=signals[-1][1]), 70_000)
    assert again.id == refused.id and await venue.placed() == len(accepted)


async def test_kill_switch_stops_orders_and_cancels_open_ones(venue: Venue, monkeypatch):
    att_id = await venue.seed()
    first = await venue.executor.execute(att_id, buy("a", qty=2), 70_000)
    assert first.state == "acked"
    att = await attachment(att_id)
    async with db.session() as s:
        await service.kill(s, att.user_id, att_id, settings=venue.settings)
    after = await venue.executor.execute(att_id, buy("b", qty=2), 70_000)
    assert (after.state, after.reason) == ("rejected", "killed")
    assert await venue.placed() == 1
    if venue.fake is not None:
        assert venue.fake.orders[first.broker_order_id].cancelled
        cancels = [o for o in venue.fake.orders.values() if o.original == first.broker_order_id]
        assert len(cancels) == 1
    else:
        [stored] = await paper_orders()
        assert stored.state == "cancelled"
    assert "strategy.order_cancelled" in await audit_actions()
    assert "strategy.killed" in await audit_actions()


async def test_live_row_without_confirmation_places_nothing():
    """Defence in depth: mode=live written straight into the row, with an account and
    limits, but no confirmation. Nothing may reach the broker."""
    fake, server = start_kis()
    reset_registry()
    try:
        first = await seed("forced@example.com", mode="alert")
        credential = await kis_account(first.user_id)
        cols = await live_columns(first.user_id, credential)
        for missing, reason in (
            ({"live_confirmed_at": None}, "live_not_confirmed"),
            ({"max_order_value": None}, "live_no_limits"),
            ({"broker_account_id": None}, "live_no_account"),
        ):
            async with db.session() as s:
                await s.exec(
                    update(StrategyAttachment)
                    .where(col(StrategyAttachment.id) == first.attachment_id)
                    .values(**{**cols, **missing})
                )
                await s.commit()
            executor = OrderExecutor(paper_market(), kis_settings(server))
            row = await executor.execute(first.attachment_id, buy(reason, qty=1), 70_000)
            assert (row.state, row.reason) == ("rejected", reason)
        assert kis_order_posts(fake) == 0
        assert fake.uapi_requests() == []  # not even a balance query
    finally:
        server.stop()


async def test_someone_elses_broker_account_in_the_row_is_refused():
    fake, server = start_kis()
    reset_registry()
    try:
        alice = await seed("alice@example.com", mode="alert")
        credential = await kis_account(alice.user_id)
        bob = await seed("bob@example.com", mode="alert")
        cols = await live_columns(bob.user_id, credential)  # Alice's account on Bob's row
        async with db.session() as s:
            await s.exec(
                update(StrategyAttachment)
                .where(col(StrategyAttachment.id) == bob.attachment_id)
                .values(**cols)
            )
            await s.commit()
        executor = OrderExecutor(paper_market(), kis_settings(server))
        row = await executor.execute(bob.attachment_id, buy("x", qty=1), 70_000)
        assert (row.state, row.reason) == ("rejected", "live_no_account")
        assert kis_order_posts(fake) == 0 and fake.uapi_requests() == []
    finally:
        server.stop()


async def test_a_broker_refusal_is_stored_and_a_timeout_leaves_the_outcome_to_reconcile():
    fake, server = start_kis()
    reset_registry()
    try:
        first = await seed("refused@example.com", mode="alert")
        credential = await kis_account(first.user_id)
        async with db.session() as s:
            await s.exec(
                update(StrategyAttachment)
                .where(col(StrategyAttachment.id) == first.attachment_id)
                .values(**await live_columns(first.user_id, credential))
            )
            await s.commit()
        settings = kis_settings(server, kis_timeout=0.5)
        executor = OrderExecutor(paper_market(), settings)
        fake.reject_next_order = "주문가능금액을 초과 했습니다"
        refused = await executor.execute(first.attachment_id, buy("r", qty=1), 70_000)
        assert (refused.state, refused.reason) == ("rejected", "broker_rejected")
        assert "주문가능금액" in refused.error

        fake.hold_reply_s = 1.5  # the order is recorded, the answer comes too late
        lost = await executor.execute(first.attachment_id, buy("t", qty=1), 70_000)
        assert lost.state == "unknown" and lost.broker_order_id is None
        assert (await attachment(first.attachment_id)).state == "reconciling"
        blocked = await executor.execute(first.attachment_id, buy("u", qty=1), 70_000)
        assert (blocked.state, blocked.reason) == ("rejected", "reconciling")
        fake.hold_reply_s = 0
        assert await executor.reconcile(first.attachment_id) is True
        [_, linked, _] = await orders_of(first.attachment_id)
        assert linked.state == "acked" and linked.broker_order_id in fake.orders
        assert kis_order_posts(fake) == 1  # found, not placed again
        assert (await attachment(first.attachment_id)).state == "running"
        assert "strategy.order_linked" in await audit_actions()
    finally:
        server.stop()


async def test_unreachable_broker_keeps_the_attachment_reconciling():
    fake, server = start_kis()
    reset_registry()
    try:
        first = await seed("down@example.com", mode="alert")
        credential = await kis_account(first.user_id)
        async with db.session() as s:
            await s.exec(
                update(StrategyAttachment)
                .where(col(StrategyAttachment.id) == first.attachment_id)
                .values(**await live_columns(first.user_id, credential), state="reconciling")
            )
            await s.commit()
        executor = OrderExecutor(paper_market(), kis_settings(server))
        fake.down = True
        assert await executor.reconcile(first.attachment_id) is False
        att = await attachment(first.attachment_id)
        assert att.state == "reconciling" and "reconcile" in att.last_error
        row = await executor.execute(first.attachment_id, buy("d", qty=1), 70_000)
        assert row.reason == "reconciling" and kis_order_posts(fake) == 0
        fake.down = False
        assert await executor.reconcile(first.attachment_id) is True
        assert (await attachment(first.attachment_id)).state == "running"
    finally:
        server.stop()


async def test_a_position_moved_behind_the_strategys_back_is_recorded():
    att = await seed("moved@example.com", mode="paper")
    executor = OrderExecutor(paper_market(), helpers.settings())
    assert await executor.reconcile(att.attachment_id) is True  # baseline: flat
    # the user buys by hand on the same paper account and it fills
    from app.services import paper_accounts

    market = paper_market()
    async with db.session() as s:
        await paper_accounts.place_order(
            s, att.user_id, market, symbol=SAMSUNG, side="buy", qty=4, order_type="market"
        )
        broker = await paper_accounts.open_broker(s, att.user_id, market)
    [tick] = helpers.ticks(SAMSUNG, [71_300])
    assert await broker.on_tick(tick)
    assert await executor.reconcile(att.attachment_id) is True
    row = await attachment(att.attachment_id)
    assert row.position_qty == 4
    assert row.last_error == "position_mismatch: expected 0, broker 4"
    assert "strategy.position_mismatch" in await audit_actions()
