"""The strategy desk in the runner: warm-up, alerts through the outbox, paper orders,
and a failing strategy that stops alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import col, select

from app import db
from app.models.alerts import AlertEvent, Delivery
from app.models.channels import NotificationChannel
from app.models.rules import AlertRule
from app.models.strategies import StrategyOrder
from app.runtime.runner import Runner
from app.runtime.strategy_desk import StrategyDesk, record_strategy_signal
from app.services import alerts, channels
from app.services import candles as candle_store
from app.services import rules as rules_service
from engines.market import Timeframe
from tests.integration import helpers
from tests.integration.helpers import T0
from tests.integration.test_strategy_kit import (
    HYNIX,
    SAMSUNG,
    attachment,
    candles,
    make_scripted,
    orders_of,
    paper_market,
    paper_orders,
    seed,
)

pytestmark = pytest.mark.usefixtures("database")


async def _verified_discord(user_id: int) -> str:
    async with db.session() as s:
        row = await channels.add_discord(
            s, user_id, "https://discord.com/api/webhooks/123456789012345678/" + "T" * 68, "room"
        )
        channel = await s.get(NotificationChannel, row.id)
        channel.verified = True
        s.add(channel)
        await s.commit()
    return f"discord:{row.id}"


async def test_alert_mode_turns_a_signal_into_an_alert_on_every_channel_not_an_order():
    att = await seed(
        "alerts@example.com",
        mode="alert",
        strategy="test_scripted",
        params={"buy_at": [3, 12]},
        label="scripted",
    )
    discord = await _verified_discord(att.user_id)
    series = candles(SAMSUNG, [70_000 + 100 * i for i in range(13)])
    async with db.session() as s:
        await candle_store.store(s, series[:10])  # bars 0-9 are history

    desk = StrategyDesk(helpers.settings(), paper_market(), factory=make_scripted)
    # bar 10 has closed but is not stored yet: the runner hands it over as unsaved
    assert await desk.sync(unsaved=[series[10], series[3]]) == {SAMSUNG}
    await desk.drain()
    assert desk.slots[att.attachment_id].host.ctx.bar_index == 10  # warmed up
    assert desk.signals == 0  # bar 3 signalled during warm-up: not acted upon

    await desk.on_candles(series[9:])  # bars 9 and 10 again (already seen), then 11, 12
    await desk.drain()
    assert desk.signals == 1 and desk.alerts == 1

    async with db.session() as s:
        [event] = (await s.exec(select(AlertEvent))).all()
        deliveries = (await s.exec(select(Delivery).order_by(col(Delivery.channel)))).all()
        carrier = await s.get(AlertRule, event.rule_id)
        listed = await rules_service.list_rows(s, att.user_id)
        history = await alerts.history(s, att.user_id)
    assert event.price == 71_200 and event.payload["source"] == "strategy"
    assert event.payload["action"] == "buy" and event.payload["rule_name"] == "scripted"
    assert "71,200" in event.payload["summary_en"] and "71,200" in event.payload["summary_ko"]
    assert event.fired_at == series[12].start + timedelta(days=1)  # when bar 12 closed
    assert sorted(d.channel for d in deliveries) == sorted(["in_app", discord])
    # channels render it like a condition rule's alert: the title in the reader's language,
    # the text as written at firing in the owner's (Korean by default)
    from app.runtime.messages import render_alert

    rendered = render_alert(event.payload, "en")
    assert rendered.title == "scripted · Buy signal at 71,200 won"
    assert rendered.body == "scripted: 삼성전자(005930) · 71,200원 매수 신호"
    assert carrier.status == "deleted" and listed == []  # no rule page shows the carrier
    assert [h.event_id for h in history] == [event.id]
    assert await orders_of(att.attachment_id) == []
    assert (await attachment(att.attachment_id)).state == "running"

    # the same signal recorded again (a replay, a second runner) is not a second alert
    from engines.strategies.base import Action, Signal

    again = Signal(Action.BUY, SAMSUNG, key=f"{SAMSUNG}|1d|{series[12].start.isoformat()}|0|buy")
    async with db.session() as s:
        assert (
            await record_strategy_signal(
                s, att.attachment_id, again, 71_200, event.fired_at, email_enabled=False
            )
            is None
        )


async def test_a_runner_trades_paper_and_a_failing_strategy_stops_alone():
    """Ticks through the real runner: 1-minute bars close, the paper strategy's order is
    placed and filled by the paper desk, and the strategy that raises is marked error
    while the other keeps going."""
    good = await seed(
        "runner@example.com",
        mode="paper",
        strategy="test_scripted",
        params={"buy_at": [2], "qty": 2},
        timeframe="1m",
        label="buyer",
    )
    bad = await seed(
        mode="alert",
        symbol=HYNIX,
        strategy="test_scripted",
        params={"fail_at": 1, "buy_at": [3]},
        timeframe="1m",
        label="crasher",
        user_id=good.user_id,
    )
    runner = Runner(helpers.settings(), paper_market())
    runner.strategies.factory = make_scripted
    await runner.sync_once()
    await runner.strategies.drain()
    assert {"strategies"} <= set(runner.extra_interest)
    assert runner.extra_interest["strategies"] == {SAMSUNG, HYNIX}
    assert (await attachment(good.attachment_id)).state == "running"  # reconciled

    minute = timedelta(minutes=1)
    for i in range(5):
        for code, price in ((SAMSUNG, 71_300 + 100 * i), (HYNIX, 204_500)):
            await runner.handle_tick(helpers.Tick(code, price, 10, T0 + i * minute))
        await runner.strategies.drain()
        await runner.sync_once()  # the paper desk picks up the strategy's open order
    await runner.strategies.drain()

    [order] = await orders_of(good.attachment_id)
    assert (order.state, order.side, order.qty, order.ref_price) == ("acked", "buy", 2, 71_500)
    [paper] = await paper_orders()
    assert paper.state == "filled" and paper.client_order_id == order.client_order_id
    await runner.sync_once()
    slot = runner.strategies.slots[good.attachment_id]
    assert slot.account.position(SAMSUNG)[0] == 2  # ctx.position follows the fill

    broken = await attachment(bad.attachment_id)
    assert broken.state == "error" and "scripted failure at bar 1" in broken.last_error
    assert bad.attachment_id not in runner.strategies.slots
    assert runner.ticks_seen == 10 and runner.strategies.failures == 1
    async with db.session() as s:
        assert (await s.exec(select(AlertEvent))).all() == []  # it never got to bar 3
        assert len((await s.exec(select(StrategyOrder))).all()) == 1


async def test_an_edit_reloads_the_strategy_and_an_unknown_one_is_marked_error():
    att = await seed(
        "edit@example.com",
        mode="alert",
        strategy="test_scripted",
        params={"buy_at": [1]},
        timeframe="1d",
    )
    gone = await seed(
        mode="alert", strategy="no_such_strategy", label="old plugin", user_id=att.user_id
    )
    desk = StrategyDesk(helpers.settings(), paper_market(), factory=make_scripted)
    await desk.sync()
    assert set(desk.slots) == {att.attachment_id}
    row = await attachment(gone.attachment_id)
    assert row.state == "error" and "no_such_strategy" in row.last_error
    first = desk.slots[att.attachment_id]
    await desk.sync()
    assert desk.slots[att.attachment_id] is first  # unchanged rows are not reloaded

    from app.services import strategies as service

    async with db.session() as s:
        await service.set_mode(s, att.user_id, att.attachment_id, "paper")
    await desk.sync()
    await desk.drain()
    assert desk.slots[att.attachment_id] is not first
    assert desk.slots[att.attachment_id].mode == "paper"
    async with db.session() as s:
        await service.detach(s, att.user_id, att.attachment_id)
    await desk.sync()
    assert desk.slots == {} and desk.symbols() == set()
    assert first.timeframe == Timeframe.D1
