"""Paper account use cases on SQLite and PostgreSQL: ownership, refusals, exact figures.

Prices come from a fixed-price market so every figure below is computed by hand.
Samsung Electronics (005930) has prev_close 71,300: tick 100, limits 49,950 .. 92,600.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import func, select

from app import db
from app.i18n import translate
from app.models.audit import AuditEntry
from app.models.paper import PaperAccount, PaperFillRow, PaperOrderRow, PaperPosition
from app.services import paper_accounts as paper
from app.services.audit import ACCESS_DENIED
from app.services.errors import NotFound, ValidationFailed
from brokers.base import OrderState, Quote, SymbolInfo, UnknownSymbol
from brokers.paper.symbols import SYMBOLS, by_code
from engines.market import Tick
from tests.integration.helpers import make_user, seed_symbols

pytestmark = pytest.mark.usefixtures("database")

SAMSUNG = "005930"
T0 = datetime(2026, 3, 5, 1, 0, tzinfo=UTC)


class FixedMarket:
    """A MarketData whose prices the test sets; prev_close is each symbol's reference price."""

    name = "fixed"

    def __init__(self) -> None:
        self.prices: dict[str, int] = {}

    async def list_symbols(self) -> list[SymbolInfo]:
        return [s.info for s in SYMBOLS]

    async def quote(self, symbol: str) -> Quote:
        sym = by_code(symbol)
        if sym is None:
            raise UnknownSymbol(symbol)
        price = self.prices.get(symbol, sym.ref_price)
        return Quote(symbol, price, sym.ref_price, price, price, price, 0, T0)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        return None

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        return None

    async def ticks(self) -> AsyncIterator[Tick]:
        return
        yield  # pragma: no cover

    async def close(self) -> None:
        return None


def tick(price: int, i: int = 0) -> Tick:
    return Tick(SAMSUNG, price, 10, T0 + timedelta(seconds=i))


async def new_user(email: str) -> int:
    user = await make_user(email)
    assert user.id is not None
    async with db.session() as s:
        await paper.get_account(s, user.id)
    return user.id


@pytest.fixture
async def users() -> tuple[int, int]:
    await seed_symbols()
    return await new_user("a@example.com"), await new_user("b@example.com")


async def snapshot() -> tuple[int, int, int, list[tuple[int, int]]]:
    """Row counts of orders, fills, positions, and every account's (cash, revision)."""
    async with db.session() as s:
        counts = []
        for table in (PaperOrderRow, PaperFillRow, PaperPosition):
            counts.append((await s.exec(select(func.count()).select_from(table))).one())
        accounts = (
            await s.exec(select(PaperAccount).order_by(PaperAccount.id))  # type: ignore[arg-type]
        ).all()
        return counts[0], counts[1], counts[2], [(a.cash, a.revision) for a in accounts]


async def place(user_id: int, market: FixedMarket, **fields: object):
    form: dict[str, object] = {"symbol": SAMSUNG, "side": "buy", "order_type": "limit"}
    form.update(fields)
    async with db.session() as s:
        return await paper.place_order(s, user_id, market, **form)  # type: ignore[arg-type]


async def test_account_is_created_once_per_user(users: tuple[int, int]) -> None:
    a, b = users
    async with db.session() as s:
        first = await paper.get_account(s, a)
        again = await paper.get_account(s, a)
        other = await paper.get_account(s, b)
    assert first.id == again.id != other.id
    assert (first.cash, first.initial_cash) == (10_000_000, 10_000_000)


REFUSALS = [
    # (form fields, field, code, English message)
    (
        {"qty": "0", "price": "70000"},
        "qty",
        "paper_qty_not_positive",
        "The quantity must be at least 1 share.",
    ),
    (
        {"qty": "-5", "price": "70000"},
        "qty",
        "paper_qty_not_positive",
        "The quantity must be at least 1 share.",
    ),
    (
        {"qty": -5, "price": 70_000},
        "qty",
        "paper_qty_not_positive",
        "The quantity must be at least 1 share.",
    ),
    (
        {"qty": "abc", "price": "70000"},
        "qty",
        "paper_qty_not_number",
        "The quantity must be a whole number of shares, e.g. 10.",
    ),
    (
        {"qty": "1.5", "price": "70000"},
        "qty",
        "paper_qty_not_number",
        "The quantity must be a whole number of shares, e.g. 10.",
    ),
    ({"qty": " ", "price": "70000"}, "qty", "paper_qty_required", "Enter a quantity."),
    (
        {"qty": "2000000000", "price": "70000"},
        "qty",
        "paper_qty_too_large",
        "The quantity can be at most 1,000,000,000 shares.",
    ),
    ({"qty": "1", "price": ""}, "price", "paper_price_required", "Enter a limit price."),
    (
        {"qty": "1", "price": "7만"},
        "price",
        "paper_price_not_number",
        "The price must be a number in won, e.g. 70000 or 70,000.",
    ),
    (
        {"qty": "1", "price": "0"},
        "price",
        "paper_price_not_positive",
        "The price must be greater than zero.",
    ),
    (
        {"qty": "1", "price": "70,050"},
        "price",
        "paper_price_off_tick",
        "70,050 won is not a valid KRX price: at this level prices move in steps of 100 won. "
        "Use 70,000 or 70,100 won.",
    ),
    (
        {"qty": "1", "price": "92700"},
        "price",
        "paper_price_beyond_limits",
        "92,700 won is outside today's price limits (49,950 to 92,600 won).",
    ),
    (
        {"qty": "1", "price": "49900"},
        "price",
        "paper_price_beyond_limits",
        "49,900 won is outside today's price limits (49,950 to 92,600 won).",
    ),
    (
        # 200 × 70,000 = 14,000,000 + 2,100 commission
        {"qty": "200", "price": "70000"},
        "qty",
        "paper_insufficient_cash",
        "Not enough cash: this order needs 14,002,100 won including commission, "
        "but only 10,000,000 won is available.",
    ),
    (
        # a market buy is checked at the upper limit: 108 × 92,600 = 10,000,800 + 1,500
        {"qty": "108", "order_type": "market"},
        "qty",
        "paper_insufficient_cash",
        "Not enough cash: this order needs 10,002,300 won including commission, "
        "but only 10,000,000 won is available.",
    ),
    (
        {"side": "sell", "qty": "1", "price": "70000"},
        "qty",
        "paper_insufficient_shares",
        "Not enough shares: you want to sell 1, but only 0 can be sold "
        "(0 held, the rest is in open sell orders).",
    ),
    (
        {"side": "hold", "qty": "1", "price": "70000"},
        "side",
        "paper_bad_side",
        "Choose buy or sell.",
    ),
    (
        {"order_type": "stop", "qty": "1", "price": "70000"},
        "order_type",
        "paper_bad_type",
        "Choose a limit or a market order.",
    ),
    (
        {"symbol": "999999", "qty": "1", "price": "70000"},
        "symbol",
        "unknown_symbol",
        'No listed symbol matches "999999".',
    ),
    (
        {"qty": "1", "price": "70000", "client_order_id": "x" * 65},
        "client_order_id",
        "paper_client_id_too_long",
        "The client order id can be at most 64 characters.",
    ),
]


@pytest.mark.parametrize(("fields", "field", "code", "english"), REFUSALS)
async def test_bad_orders_are_refused_with_a_message_and_save_nothing(
    users: tuple[int, int], fields: dict[str, object], field: str, code: str, english: str
) -> None:
    a, _ = users
    market = FixedMarket()
    before = await snapshot()
    with pytest.raises(ValidationFailed) as info:
        await place(a, market, **fields)
    ((got_field, (got_code, params)),) = info.value.field_errors.items()
    assert (got_field, got_code) == (field, code)
    assert translate(f"error.{code}", "en", **params) == english
    korean = translate(f"error.{code}", "ko", **params)
    assert korean and korean != english
    for number in ("70,050", "92,600", "14,002,100", "10,002,300"):
        if number in english:
            assert number in korean
    assert await snapshot() == before


async def test_korean_messages_carry_the_numbers(users: tuple[int, int]) -> None:
    a, _ = users
    with pytest.raises(ValidationFailed) as info:
        await place(a, FixedMarket(), qty="200", price="70000")
    ((_, (code, params)),) = info.value.field_errors.items()
    assert translate(f"error.{code}", "ko", **params) == (
        "주문가능금액이 부족합니다. 이 주문에는 수수료 포함 14,002,100원이 필요하지만 "
        "10,000,000원만 사용할 수 있습니다."
    )


async def test_trading_figures_are_exact(users: tuple[int, int]) -> None:
    a, _ = users
    market = FixedMarket()
    async with db.session() as s:
        runner = await paper.open_broker(s, a, market)

    await place(a, market, qty="10", price="70,000")
    await runner.reload()  # the runner learns about orders placed by the web worker
    assert [f.price for f in await runner.on_tick(tick(70_000))] == [70_000]
    await place(a, market, qty=5, price=73_000)
    await runner.reload()
    assert [f.price for f in await runner.on_tick(tick(73_000, 1))] == [73_000]
    await place(a, market, side="sell", qty="4", price="72000")
    await runner.reload()
    assert [f.price for f in await runner.on_tick(tick(72_000, 2))] == [72_000]
    # one more buy stays open, to show orderable cash
    await place(a, market, qty="1", price="70000")

    market.prices[SAMSUNG] = 74_000
    async with db.session() as s:
        summary = await paper.account_summary(s, a, market)
        fills = await paper.list_fills(s, a)
        orders = await paper.list_orders(s, a)
        open_orders = await paper.list_orders(s, a, open_only=True)

    # buys: 700,000 + 105 and 365,000 + 54 (floor 54.75); book cost 1,065,000 for 15 = 71,000
    # sell 4 @ 72,000: basis 1,065,000 × 4 / 15 = 284,000; fee 43, tax 576
    #   realized = 288,000 - 43 - 576 - 284,000 = 3,381
    # cash = 10,000,000 - 700,105 - 365,054 + 288,000 - 619 = 9,222,222
    assert summary.balance.cash == 9_222_222
    (pos,) = summary.balance.positions
    assert (pos.symbol, pos.name, pos.qty, pos.avg_price, pos.price) == (
        SAMSUNG,
        "삼성전자",
        11,
        71_000.0,
        74_000,
    )
    # 11 × 74,000 = 814,000 against a cost of 781,000
    assert (pos.value, pos.cost, summary.unrealized_pnl) == (814_000, 781_000, 33_000)
    assert summary.realized_pnl == 3_381
    assert (summary.commission_paid, summary.tax_paid) == (105 + 54 + 43, 576)
    # the open buy holds 70,000 + 10 (floor 10.5)
    assert summary.orderable_cash == 9_222_222 - 70_010 == 9_152_212
    # 9,222,222 + 814,000 - 10,000,000 = 3,381 realized + 33,000 unrealized - 159 buy fees
    assert summary.balance.total == 10_036_222
    assert summary.total_pnl == 36_222 == 3_381 + 33_000 - 159

    assert [(f.side.value, f.qty, f.price, f.realized_pnl) for f in fills] == [
        ("sell", 4, 72_000, 3_381),
        ("buy", 5, 73_000, None),
        ("buy", 10, 70_000, None),
    ]
    assert [o.state for o in orders] == [OrderState.OPEN] + [OrderState.FILLED] * 3
    assert [(o.qty, o.price, o.reserved_cash) for o in open_orders] == [(1, 70_000, 70_010)]


async def test_other_users_cannot_see_or_cancel(users: tuple[int, int]) -> None:
    a, b = users
    market = FixedMarket()
    ack = await place(a, market, qty="10", price="70000")
    before = await snapshot()
    for bad_id in (ack.order_id, "999999", "abc", "-1"):
        async with db.session() as s:
            with pytest.raises(NotFound):
                await paper.cancel_order(s, b, market, bad_id)
    assert await snapshot() == before
    async with db.session() as s:
        assert await paper.list_orders(s, b) == []
        assert await paper.list_fills(s, b) == []
        summary_b = await paper.account_summary(s, b, market)
        (mine,) = await paper.list_orders(s, a)
        denied = (
            await s.exec(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.actor_id == b, AuditEntry.action == ACCESS_DENIED)
            )
        ).one()
    assert summary_b.orderable_cash == 10_000_000
    assert mine.state is OrderState.OPEN
    assert denied == 4


async def test_cancel_and_idempotent_client_order_id(users: tuple[int, int]) -> None:
    a, _ = users
    market = FixedMarket()
    first = await place(a, market, qty="10", price="70000", client_order_id="sig-42")
    again = await place(a, market, qty="3", price="60000", client_order_id="sig-42")
    assert again.order_id == first.order_id
    assert (await snapshot())[0] == 1
    async with db.session() as s:
        cancelled = await paper.cancel_order(s, a, market, first.order_id)
        assert cancelled.state is OrderState.CANCELLED
        with pytest.raises(ValidationFailed) as info:
            await paper.cancel_order(s, a, market, first.order_id)
        assert info.value.code == "paper_order_not_open"
        summary = await paper.account_summary(s, a, market)
    assert summary.orderable_cash == 10_000_000
    # the id stays taken after a cancel: a retried signal still places nothing
    assert (await place(a, market, qty="1", price="70000", client_order_id="sig-42")) == first
    assert (await snapshot())[0] == 1


async def test_reset_starts_over_and_stale_fills_are_refused(users: tuple[int, int]) -> None:
    a, b = users
    market = FixedMarket()
    async with db.session() as s:
        runner = await paper.open_broker(s, a, market)
    await place(a, market, qty="10", price="70000")
    await runner.reload()
    await runner.on_tick(tick(70_000))
    await place(a, market, qty="1", order_type="market")
    await runner.reload()
    await place(b, market, qty="1", price="70000")
    async with db.session() as s:
        account = await paper.reset_account(s, a)
    assert (account.cash, account.initial_cash) == (10_000_000, 10_000_000)
    # the runner still holds the market order; the store refuses its fill
    assert await runner.on_tick(tick(71_000, 1)) == []
    assert runner.ledger.cash == 10_000_000 and runner.symbols_needed() == set()
    async with db.session() as s:
        assert await paper.list_orders(s, a) == []
        assert await paper.list_fills(s, a) == []
        summary = await paper.account_summary(s, a, market)
        assert len(await paper.list_orders(s, b)) == 1  # B untouched
    assert summary.balance.positions == ()
    assert summary.realized_pnl == summary.commission_paid == 0
    orders, fills, positions, _ = await snapshot()
    assert (orders, fills, positions) == (1, 0, 0)
