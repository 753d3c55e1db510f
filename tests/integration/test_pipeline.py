"""One tick sequence through the whole runner: rule book, outbox, delivery, SMTP, UI pushes.

The market is a replay of a fixed tick sequence (real MarketData code), the
database is real (SQLite and PostgreSQL), and e-mail goes over real SMTP to
aiosmtpd on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlmodel import col, select

from app import db
from app.models.alerts import AlertEvent, Delivery
from app.models.rules import AlertRule
from app.runtime.live_bus import bus_for
from app.runtime.outbox import RuleMeta, record_firing
from app.runtime.runner import Runner
from app.services import rules as rules_service
from app.services import watchlist
from brokers.paper.replay import ReplayMarket
from brokers.paper.symbols import SYMBOLS
from engines.rules.book import Fired
from engines.rules.spec import PriceOp
from notifiers.email import EmailNotifier, SmtpConfig
from tests.conftest import free_port
from tests.integration.helpers import T0, make_user, seed_symbols, settings, ticks

pytestmark = pytest.mark.usefixtures("database")


class RecordingUi:
    """The runner's UI sink (alerts), plus every price push the runner published on
    this process's live bus, as the pages' fan-out receives them."""

    def __init__(self) -> None:
        self.prices: list[dict[str, dict]] = []
        self.alerts: list[tuple[int, dict]] = []

    async def push_alert(self, user_id: int, alert: dict) -> None:
        self.alerts.append((user_id, alert))

    async def listen(self) -> None:
        async for views in bus_for("").quote_stream():
            self.prices.append(views)


async def _settled(max_wait: float = 15.0) -> None:
    """Until no delivery is pending or in flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    while loop.time() < deadline:
        async with db.session() as s:
            busy = (
                await s.exec(
                    select(Delivery).where(col(Delivery.status).in_(["pending", "sending"]))
                )
            ).all()
        if not busy:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"deliveries still pending: {[(d.channel, d.status, d.last_error) for d in busy]}"
    )


async def _run(market: ReplayMarket, cfg, ui=None, notifiers=None) -> Runner:
    runner = Runner(cfg, market, ui=ui, notifiers=notifiers)
    task = asyncio.create_task(runner.run())
    listener = asyncio.create_task(ui.listen()) if ui is not None else None
    try:
        await asyncio.wait_for(market.drained.wait(), 15)
        await _settled()
        await asyncio.sleep(2 * cfg.ui_push_interval)
    finally:
        for t in (task, listener):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        await market.close()
    return runner


async def _events() -> list[AlertEvent]:
    async with db.session() as s:
        return list((await s.exec(select(AlertEvent).order_by(col(AlertEvent.id)))).all())


async def _deliveries() -> list[Delivery]:
    async with db.session() as s:
        return list((await s.exec(select(Delivery).order_by(col(Delivery.id)))).all())


def _email(smtp) -> dict:
    return {"smtp_host": smtp.host, "smtp_port": smtp.port}


def _notifiers(smtp) -> dict:
    return {
        "email": EmailNotifier(
            SmtpConfig(host=smtp.host, port=smtp.port, sender="alerts@tickwatch.test")
        )
    }


async def test_cross_up_back_and_forth_yields_one_event_one_delivery_per_channel(smtp_server):
    await seed_symbols()
    user = await make_user()
    async with db.session() as s:
        await watchlist.add(s, user.id, "005930")
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="70,000", name="breakout"
        )
    path = [69_900, 70_100, 69_800, 70_200, 69_700, 70_300, 69_600, 70_400]
    market = ReplayMarket(ticks("005930", path), SYMBOLS, prev_close={"005930": 69_000})
    ui = RecordingUi()
    runner = await _run(market, settings(**_email(smtp_server)), ui, _notifiers(smtp_server))

    events = await _events()
    assert len(events) == 1
    ev = events[0]
    assert (ev.symbol, ev.price, ev.idempotency_key) == ("005930", 70_100, f"price:{ev.rule_id}:1")
    assert ev.payload["prev_price"] == 69_900 and ev.payload["change_pct"] == pytest.approx(
        1.59, abs=0.01
    )
    assert sorted((d.channel, d.status, d.attempts) for d in await _deliveries()) == [
        ("email", "sent", 1),
        ("in_app", "sent", 1),
    ]
    # one real e-mail, to the right person, in their language, with both parts
    assert len(smtp_server.messages) == 1
    mail = smtp_server.messages[0]
    assert smtp_server.envelopes[0][1] == ["trader@example.com"]
    assert "삼성전자" in mail["Subject"] and "70,000" in mail["Subject"]
    parts = {
        p.get_content_type(): p.get_payload(decode=True).decode()
        for p in mail.walk()
        if not p.is_multipart()
    }
    assert "70,100" in parts["text/plain"] and "70,100" in parts["text/html"]
    assert mail["X-Tickwatch-Key"] == f"{ev.idempotency_key}:email"
    # the one-shot rule is finished, and the page got the alert and live prices
    async with db.session() as s:
        rule = await s.get(AlertRule, ev.rule_id)
    assert (rule.status, rule.fire_count) == ("triggered", 1)
    assert [a[0] for a in ui.alerts] == [user.id]
    assert "삼성전자" in ui.alerts[0][1]["title"]
    assert ui.prices and all(set(views) == {"005930"} for views in ui.prices)
    assert ui.prices[-1]["005930"]["price"] == "70,400"
    assert runner.ticks_seen == len(path)


async def test_cross_down_rearm_fires_again_only_after_the_band(smtp_server):
    await seed_symbols()
    user = await make_user()
    async with db.session() as s:
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_down", level="70000", repeat="rearm"
        )
    # band = 0.5% of 70,000 = 350 won: re-arms at >= 70,350
    path = [70_500, 69_900, 70_100, 69_800, 70_300, 69_900, 70_400, 69_950, 69_900]
    market = ReplayMarket(ticks("005930", path), SYMBOLS)
    await _run(market, settings(**_email(smtp_server)), None, _notifiers(smtp_server))
    events = await _events()
    assert [(e.price, e.payload["fire_no"]) for e in events] == [(69_900, 1), (69_950, 2)]
    assert len(smtp_server.messages) == 2
    async with db.session() as s:
        rule = (await s.exec(select(AlertRule))).one()
    assert (rule.status, rule.fire_count) == ("active", 2)


async def test_restart_does_not_repeat_a_finished_alert(smtp_server):
    await seed_symbols()
    user = await make_user()
    async with db.session() as s:
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="above", level="70000"
        )
    path = [69_000, 70_000, 69_000, 71_000]
    cfg = settings(**_email(smtp_server))
    await _run(ReplayMarket(ticks("005930", path), SYMBOLS), cfg, None, _notifiers(smtp_server))
    await _run(ReplayMarket(ticks("005930", path), SYMBOLS), cfg, None, _notifiers(smtp_server))
    assert [e.price for e in await _events()] == [70_000]
    assert len(smtp_server.messages) == 1


async def test_recording_the_same_firing_twice_is_a_no_op():
    await seed_symbols()
    user = await make_user()
    async with db.session() as s:
        rule = await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="70000"
        )
    fired = Fired(rule.id, "005930", PriceOp.CROSS_UP, 70_000, 70_100, 69_900, T0, 1, True)
    meta = RuleMeta(user.id, "005930", "", "삼성전자", "Samsung Electronics")
    async with db.session() as s:
        first = await record_firing(s, fired, meta, 69_000, email_enabled=True)
    async with db.session() as s:
        second = await record_firing(s, fired, meta, 69_000, email_enabled=True)
    assert first is not None and second is None
    assert len(await _events()) == 1
    assert sorted(d.channel for d in await _deliveries()) == ["email", "in_app"]


async def test_rules_of_two_users_fire_separately_and_prices_go_to_watchers_only():
    await seed_symbols()
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    carol = await make_user("carol@example.com")
    async with db.session() as s:
        await rules_service.create_price_rule(
            s, alice.id, symbol_query="005930", op="cross_up", level="70000"
        )
        await rules_service.create_price_rule(
            s, bob.id, symbol_query="005930", op="cross_up", level="70050"
        )
        await watchlist.add(s, alice.id, "005930")
        await watchlist.add(s, carol.id, "000660")
    both = ticks("005930", [69_900, 70_100]) + ticks("000660", [200_000, 200_500])
    both.sort(key=lambda t: t.ts)
    ui = RecordingUi()
    await _run(ReplayMarket(both, SYMBOLS), settings(), ui)
    events = await _events()
    assert sorted(e.user_id for e in events) == sorted([alice.id, bob.id])
    # without SMTP configured only the in-app channel exists
    assert {d.channel for d in await _deliveries()} == {"in_app"}
    # Both symbols go out once each push; which tab gets which is the fan-out's job
    # (tests/integration/test_live_fanout.py).
    assert {code for views in ui.prices for code in views} == {"005930", "000660"}
    assert any(v.get("000660", {}).get("price") == "200,500" for v in ui.prices)


async def test_refused_recipient_is_a_dead_letter_with_its_reason(smtp_server):
    await seed_symbols()
    user = await make_user("bounce@example.com")
    smtp_server.reject.add("bounce@example.com")
    async with db.session() as s:
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="70000"
        )
    await _run(
        ReplayMarket(ticks("005930", [69_900, 70_100]), SYMBOLS),
        settings(**_email(smtp_server)),
        None,
        _notifiers(smtp_server),
    )
    email = [d for d in await _deliveries() if d.channel == "email"]
    assert [(d.status, d.attempts) for d in email] == [("dead", 1)]
    assert "recipient refused" in email[0].last_error and "550" in email[0].last_error
    assert smtp_server.messages == []


async def test_unreachable_smtp_is_retried_with_backoff_then_dead():
    await seed_symbols()
    user = await make_user()
    async with db.session() as s:
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="70000"
        )
    port = free_port()  # nothing listens here
    cfg = settings(smtp_host="127.0.0.1", smtp_port=port, delivery_max_attempts=3)
    notifiers = {"email": EmailNotifier(SmtpConfig(host="127.0.0.1", port=port, timeout=2))}
    await _run(ReplayMarket(ticks("005930", [69_900, 70_100]), SYMBOLS), cfg, None, notifiers)
    email = [d for d in await _deliveries() if d.channel == "email"]
    assert [(d.status, d.attempts) for d in email] == [("dead", 3)]
    assert "Connect" in email[0].last_error or "refused" in email[0].last_error.lower()
    in_app = [d for d in await _deliveries() if d.channel == "in_app"]
    assert [d.status for d in in_app] == ["sent"]


async def test_a_corrupt_rule_is_skipped_and_the_others_still_fire(caplog):
    await seed_symbols()
    user = await make_user()
    async with db.session() as s:
        bad = AlertRule(
            user_id=user.id, symbol="005930", spec={"kind": "price", "op": "sideways", "level": -1}
        )
        s.add(bad)
        await s.commit()
        await rules_service.create_price_rule(
            s, user.id, symbol_query="005930", op="cross_up", level="70000"
        )
    await _run(ReplayMarket(ticks("005930", [69_900, 70_100]), SYMBOLS), settings(), None)
    events = await _events()
    assert [e.price for e in events] == [70_100]
    assert any("invalid spec" in r.getMessage() for r in caplog.records)
