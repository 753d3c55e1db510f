"""The portfolio page's state on a real database: numbers, the paper ticket, ownership.

Driven as the browser would; the market is the simulated one (no runner), so
valuations use its quotes and orders rest until a runner feeds them trades.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from reflex.istate.data import RouterData
from reflex.state import State
from sqlmodel import func, select

from app import db
from app.config import get_settings
from app.models.paper import PaperOrderRow
from app.runtime.scheduler import build_scheduler
from app.services import auth, credentials
from app.states.portfolio import PortfolioState
from tests.integration.helpers import make_user, seed_symbols
from tests.kis_fake import Holding, KisFake

pytestmark = pytest.mark.usefixtures("database")


async def _root(user, lang: str = "ko", ip: str = "5.5.5.5") -> State:
    async with db.session() as s:
        token = await auth.create_session(s, user, timedelta(hours=1), "browser", ip)
    root = State(_reflex_internal_init=True)
    root.router = RouterData.from_router_data(
        {
            "headers": {"cookie": f"tw_session={token}", "accept-language": lang},
            "ip": ip,
            "token": f"client-{user.id}-{lang}",
            "pathname": "/portfolio",
            "asPath": "/portfolio",
        }
    )
    return root


async def _call(state: PortfolioState, handler: str, *args: object) -> object:
    return await PortfolioState.event_handlers[handler].fn(state, *args)


async def _orders() -> int:
    async with db.session() as s:
        return (await s.exec(select(func.count()).select_from(PaperOrderRow))).one()


async def test_a_new_user_sees_the_paper_account_with_its_starting_cash():
    await seed_symbols()
    user = await make_user("pf@example.com")
    state = await (await _root(user)).get_state(PortfolioState)
    await _call(state, "load")
    assert state.sources == [{"key": "paper", "label": "모의투자 계좌"}]
    assert state.summary["cash"] == "10,000,000"
    assert state.summary["total"] == "10,000,000"
    assert state.summary["total_pnl"] == "+0"
    assert state.rows == [] and state.error == "" and state.as_of != ""


@pytest.mark.parametrize(
    ("fields", "key", "ko", "en"),
    [
        ({"qty": "0"}, "qty", "1주", "at least 1 share"),
        ({"qty": "ten"}, "qty", "정수", "whole number"),
        ({"price": "70,030"}, "price", "70,000", "70,000 or 70,100"),
        ({"price": "999,000"}, "price", "가격제한폭", "outside today's price limits"),
        ({"qty": "1000"}, "qty", "부족", "Not enough cash"),
        ({"side": "sell"}, "qty", "부족", "Not enough shares"),
        ({"symbol": "없는종목"}, "symbol", "없는종목", "없는종목"),
    ],
)
async def test_bad_orders_are_named_in_the_form_and_nothing_is_saved(fields, key, ko, en):
    await seed_symbols()
    user = await make_user("ticket@example.com")
    for lang, expected in (("ko", ko), ("en", en)):
        state = await (await _root(user, lang)).get_state(PortfolioState)
        await _call(state, "load")
        form = {
            "symbol": "005930",
            "side": "buy",
            "order_type": "limit",
            "qty": "10",
            "price": "70,000",
        }
        form.update(fields)
        await _call(state, "place", form)
        assert key in state.field_errors, state.field_errors
        assert expected in state.field_errors[key], state.field_errors[key]
        assert state.notice == ""
    assert await _orders() == 0


async def test_place_and_cancel_a_limit_order_and_refuse_another_users_cancel():
    await seed_symbols()
    alice = await make_user("alice@example.com")
    bob = await make_user("bob@example.com")
    a = await (await _root(alice, "en")).get_state(PortfolioState)
    await _call(a, "load")
    await _call(
        a,
        "place",
        {"symbol": "005930", "side": "buy", "order_type": "limit", "qty": "10", "price": "50,000"},
    )
    assert a.field_errors == {} and a.notice == "Order placed."
    assert [(o["symbol"], o["qty"], o["price"], o["state"]) for o in a.orders] == [
        ("005930", "10", "50,000", "Open")
    ]
    # 10 x 50,000 + commission floor(500,000 x 0.00015) = 75 is reserved
    assert a.summary["orderable"] == "9,499,925"
    order_id = a.orders[0]["id"]

    b = await (await _root(bob, "en", ip="6.6.6.6")).get_state(PortfolioState)
    await _call(b, "load")
    await _call(b, "cancel", order_id)
    assert b.error == "That order no longer exists."
    async with db.session() as s:
        row = (await s.exec(select(PaperOrderRow))).one()
    assert row.state == "open"

    await _call(a, "cancel", order_id)
    assert a.notice == "Order cancelled." and a.orders[0]["state"] == "Cancelled"
    assert a.summary["orderable"] == "10,000,000"


async def test_choosing_an_account_that_is_not_yours_is_refused():
    await seed_symbols()
    user = await make_user("src@example.com")
    state = await (await _root(user, "en")).get_state(PortfolioState)
    await _call(state, "load")
    await _call(state, "choose_source", "kis:9999")
    assert state.source == "paper" and state.error == "That item no longer exists."
    await _call(state, "choose_source", "robinhood")
    assert state.source == "paper" and state.error == "Choose one of your accounts."
    assert state.summary["cash"] == "10,000,000"


async def test_the_scheduler_keeps_running_a_failing_job():
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) % 2:
            raise RuntimeError("broker down")

    scheduler = build_scheduler({"flaky": (flaky, 0.05)})
    scheduler.start()
    try:
        for _ in range(100):
            if len(runs) >= 4:
                break
            await asyncio.sleep(0.05)
    finally:
        scheduler.shutdown(wait=False)
    assert len(runs) >= 4
    with pytest.raises(ValueError):
        build_scheduler({"bad": (flaky, 0)})


async def test_a_kis_account_balance_over_the_fake_without_issuing_a_token_per_refresh(
    monkeypatch,
):
    await seed_symbols()
    user = await make_user("kis@example.com")
    app_key, app_secret = "PS" + "a" * 34, "s" * 180
    fake = KisFake(app_keys={app_key: app_secret}, paper=True, account="50123456", cash=1_234_567)
    fake.holdings = [
        Holding("005930", "삼성전자", 10, 68_000.5, 70_000),
        Holding("000660", "SK하이닉스", 3, 150_000.0, 160_000),
    ]
    server = fake.serve()
    monkeypatch.setenv("KIS_PAPER_BASE_URL", server.base_url)
    get_settings.cache_clear()
    try:
        async with db.session() as s:
            account = await credentials.create_kis_account(
                s,
                user.id,
                label="main",
                app_key=app_key,
                app_secret=app_secret,
                account_no="50123456",
                product_code="01",
                hts_id="kishts",
                is_paper=True,
            )
        state = await (await _root(user, "en")).get_state(PortfolioState)
        await _call(state, "load")
        assert [s["key"] for s in state.sources] == ["paper", f"kis:{account.id}"]
        await _call(state, "choose_source", f"kis:{account.id}")
        assert state.error == "", state.error
        assert state.summary["cash"] == "1,234,567"
        assert state.summary["holdings"] == "1,180,000"  # 10 x 70,000 + 3 x 160,000
        assert [(r["symbol"], r["qty"], r["pnl"]) for r in state.rows] == [
            ("005930", "10", "+19,995"),  # 700,000 - round(10 x 68,000.5)
            ("000660", "3", "+30,000"),
        ]
        await _call(state, "refresh")
        await _call(state, "refresh")
        assert len(fake.issues) == 1  # the cached, encrypted token is reused
        assert app_secret not in str(state.get_delta()) and app_key not in str(state.dict())
        fake.override_next = (500, "upstream down")
        await _call(state, "refresh")
        assert state.error.startswith("The broker cannot be reached"), state.error
    finally:
        server.stop()
        get_settings.cache_clear()
