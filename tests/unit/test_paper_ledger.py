"""The paper ledger's arithmetic, against figures computed by hand (shown in comments)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.base import OrderRejected, OrderSide, OrderState, OrderType
from brokers.paper.account import (
    FeeSchedule,
    Ledger,
    PaperOrder,
    PaperOrderRejected,
    commission,
    limit_fill_price,
    market_fill_price,
    sell_tax,
    validate_order,
)
from engines.market import price_limits, round_to_tick

TS = datetime(2026, 3, 5, 1, 0, tzinfo=UTC)
FEES = FeeSchedule(commission_rate=0.00015, sell_tax_rate=0.002)
BUY, SELL = OrderSide.BUY, OrderSide.SELL
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET


def order(
    side: OrderSide, qty: int, price: int, symbol: str = "005930", oid: str = "1"
) -> PaperOrder:
    return PaperOrder(oid, symbol, side, LIMIT, qty, price, TS)


def trade(ledger: Ledger, side: OrderSide, qty: int, price: int, symbol: str = "005930") -> int:
    """Place (check + hold) and fill a limit order at its price; return realized P&L (0 on buys)."""
    o = order(side, qty, price, symbol)
    o.reserved_cash = ledger.reservation(side, LIMIT, qty, price, upper=0)
    ledger.check(side, symbol, qty, o.reserved_cash)
    ledger.hold(o)
    s = ledger.settle(o, price, TS)
    ledger.apply(o, s)
    return s.fill.realized_pnl or 0


def test_fees_truncate_to_the_won_and_use_exact_rates() -> None:
    # 700,000 × 0.00015 = 105 exactly (a binary float gives 104.99999…, which would floor to 104)
    assert commission(700_000, 0.00015) == 105
    # 288,000 × 0.00015 = 43.2 -> 43
    assert commission(288_000, 0.00015) == 43
    # 288,000 × 0.002 = 576
    assert sell_tax(288_000, 0.002) == 576
    # 6,666 × 0.00015 = 0.9999 -> 0: tiny trades pay no commission
    assert commission(6_666, 0.00015) == 0
    assert commission(6_667, 0.00015) == 1  # 1.00005 -> 1


def test_buy_then_partial_sell_hand_computed() -> None:
    ledger = Ledger(cash=10_000_000, fees=FEES)
    # buy 10 @ 70,000: value 700,000, commission 105
    assert trade(ledger, BUY, 10, 70_000) == 0
    assert ledger.cash == 10_000_000 - 700_000 - 105 == 9_299_895
    held = ledger.holdings["005930"]
    assert (held.qty, held.cost, held.avg_price) == (10, 700_000, 70_000.0)
    assert ledger.commission_paid == 105

    # sell 4 @ 72,000: value 288,000, commission floor(43.2) = 43, tax 0.2% = 576,
    # basis 4 × 70,000 = 280,000 -> realized 288,000 - 43 - 576 - 280,000 = 7,381
    assert trade(ledger, SELL, 4, 72_000) == 7_381
    assert ledger.cash == 9_299_895 + 288_000 - 43 - 576 == 9_587_276
    held = ledger.holdings["005930"]
    assert (held.qty, held.cost, held.avg_price) == (6, 420_000, 70_000.0)
    assert (ledger.commission_paid, ledger.tax_paid, ledger.realized_pnl) == (148, 576, 7_381)
    assert ledger.reserved_cash == 0 and ledger.reserved_qty == {}


def test_average_price_excludes_fees() -> None:
    ledger = Ledger(cash=10_000_000, fees=FEES)
    trade(ledger, BUY, 10, 70_000)
    trade(ledger, BUY, 5, 73_000)
    held = ledger.holdings["005930"]
    # (700,000 + 365,000) / 15 = 1,065,000 / 15 = 71,000 (commissions 105 + 54 not included)
    assert (held.qty, held.cost, held.avg_price) == (15, 1_065_000, 71_000.0)
    assert ledger.cash == 10_000_000 - 700_105 - 365_054 == 8_934_841


def test_sell_basis_rounds_half_up_and_selling_the_rest_releases_the_rest() -> None:
    ledger = Ledger(cash=1_000_000, fees=FeeSchedule(0.0, 0.0))
    trade(ledger, BUY, 1, 70_000)
    trade(ledger, BUY, 2, 70_100)
    # cost 210,200 for 3 shares: avg 70,066.67; one share's basis rounds to 70,067
    assert ledger.holdings["005930"].avg_price == pytest.approx(70_066.6667, abs=1e-3)
    assert trade(ledger, SELL, 1, 70_067) == 0  # 70,067 - 70,067
    assert ledger.holdings["005930"].cost == 140_133
    # the last 2 shares carry exactly the remaining 140,133
    assert trade(ledger, SELL, 2, 70_100) == 140_200 - 140_133 == 67
    assert "005930" not in ledger.holdings
    assert ledger.cash == 1_000_000 - 210_200 + 70_067 + 140_200 == 1_000_067


def test_slippage_steps_across_a_tick_band_boundary() -> None:
    lower, upper = price_limits(50_000)  # 35,000 .. 65,000
    # below 50,000 the tick is 50, from 50,000 it is 100: 49,950 -> 50,000 -> 50,100
    assert market_fill_price(BUY, 49_950, 2, lower, upper) == 50_100
    # and back down: 50,100 -> 50,000 -> 49,950
    assert market_fill_price(SELL, 50_100, 2, lower, upper) == 49_950
    # no slippage: the trade price itself
    assert market_fill_price(BUY, 49_950, 0, lower, upper) == 49_950
    # clamped to the day's limits
    assert market_fill_price(BUY, upper, 2, lower, upper) == 65_000
    assert market_fill_price(SELL, lower + 50, 3, lower, upper) == 35_000


def test_limit_fill_price_marketable_vs_resting() -> None:
    # marketable at once: the trade's (better) price
    assert limit_fill_price(BUY, 75_000, 70_000, resting=False) == 70_000
    assert limit_fill_price(SELL, 65_000, 70_000, resting=False) == 70_000
    # rested in the book: its own limit, even when the price jumps through it
    assert limit_fill_price(BUY, 70_000, 69_800, resting=True) == 70_000
    assert limit_fill_price(SELL, 70_000, 70_300, resting=True) == 70_000
    # a touch fills; one tick short does not
    assert limit_fill_price(BUY, 70_000, 70_000, resting=True) == 70_000
    assert limit_fill_price(BUY, 70_000, 70_100, resting=True) is None
    assert limit_fill_price(SELL, 70_000, 69_900, resting=True) is None


def test_insufficient_cash_counts_the_commission() -> None:
    ledger = Ledger(cash=700_000, fees=FEES)
    need = ledger.reservation(BUY, LIMIT, 10, 70_000, upper=0)
    assert need == 700_105  # 700,000 + 105 commission
    with pytest.raises(PaperOrderRejected) as info:
        ledger.check(BUY, "005930", 10, need)
    assert isinstance(info.value, OrderRejected)
    assert info.value.code == "insufficient_cash"
    assert info.value.params == {"need": 700_105, "available": 700_000}
    assert "700,105" in str(info.value) and "700,000" in str(info.value)
    Ledger(cash=700_105, fees=FEES).check(BUY, "005930", 10, need)  # exactly enough is enough


def test_open_buys_reserve_cash_so_it_cannot_be_spent_twice() -> None:
    ledger = Ledger(cash=1_000_000, fees=FEES)
    first = order(BUY, 10, 70_000)
    first.reserved_cash = ledger.reservation(BUY, LIMIT, 10, 70_000, upper=0)
    ledger.hold(first)
    assert ledger.available_cash == 1_000_000 - 700_105 == 299_895
    with pytest.raises(PaperOrderRejected, match="insufficient|not enough cash"):
        ledger.check(BUY, "000660", 5, ledger.reservation(BUY, LIMIT, 5, 70_000, upper=0))
    ledger.release(first)
    assert ledger.available_cash == 1_000_000


def test_market_buy_reserves_at_the_upper_limit() -> None:
    ledger = Ledger(cash=10_000_000, fees=FEES)
    _, upper = price_limits(70_000)
    assert upper == 91_000  # 70,000 × 1.3
    # 10 × 91,000 = 910,000 + floor(136.5) = 136
    assert ledger.reservation(BUY, MARKET, 10, 0, upper) == 910_136
    assert ledger.reservation(SELL, MARKET, 10, 0, upper) == 0


def test_selling_more_than_free_shares_is_refused() -> None:
    ledger = Ledger(cash=10_000_000, fees=FEES)
    trade(ledger, BUY, 10, 70_000)
    with pytest.raises(PaperOrderRejected) as info:
        ledger.check(SELL, "005930", 11, 0)
    assert info.value.code == "insufficient_shares"
    assert info.value.params == {"qty": 11, "available": 10, "held": 10}
    open_sell = order(SELL, 6, 72_000, oid="2")
    ledger.hold(open_sell)
    assert ledger.available_qty("005930") == 4
    with pytest.raises(PaperOrderRejected) as info:
        ledger.check(SELL, "005930", 5, 0)
    assert info.value.params == {"qty": 5, "available": 4, "held": 10}
    ledger.check(SELL, "005930", 4, 0)
    with pytest.raises(PaperOrderRejected, match="000660"):
        ledger.check(SELL, "000660", 1, 0)


@pytest.mark.parametrize(
    ("qty", "price", "code", "params"),
    [
        (0, 70_000, "qty_not_positive", {"qty": 0}),
        (-3, 70_000, "qty_not_positive", {"qty": -3}),
        (True, 70_000, "qty_not_integer", {}),
        (1.5, 70_000, "qty_not_integer", {}),
        (1, 0, "price_not_positive", {"price": 0}),
        # 70,050: the tick at 50,000-200,000 is 100
        (
            1,
            70_050,
            "price_off_tick",
            {"price": 70_050, "tick": 100, "below": 70_000, "above": 70_100},
        ),
        # limits of prev_close 70,000: 49,000 .. 91,000
        (1, 91_100, "price_beyond_limits", {"price": 91_100, "lower": 49_000, "upper": 91_000}),
        (1, 48_950, "price_beyond_limits", {"price": 48_950, "lower": 49_000, "upper": 91_000}),
    ],
)
def test_validate_order_refusals(qty: object, price: int, code: str, params: dict) -> None:
    lower, upper = price_limits(70_000)
    with pytest.raises(PaperOrderRejected) as info:
        validate_order(BUY, LIMIT, qty, price, lower, upper)  # type: ignore[arg-type]
    assert info.value.code == code
    assert info.value.params == params


def test_validate_order_accepts_limit_prices_on_the_grid_and_ignores_market_price() -> None:
    lower, upper = price_limits(70_000)
    validate_order(BUY, LIMIT, 1, 91_000, lower, upper)
    validate_order(SELL, LIMIT, 1, 49_000, lower, upper)
    validate_order(BUY, MARKET, 1, 0, lower, upper)


_PRICES = st.integers(min_value=1_000, max_value=300_000).map(round_to_tick)
_OPS = st.lists(
    st.tuples(st.sampled_from([BUY, SELL]), st.integers(1, 40), _PRICES, st.sampled_from("AB")),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(start=st.integers(0, 20_000_000), ops=_OPS)
def test_cash_plus_cost_plus_buy_fees_minus_realized_is_conserved(
    start: int, ops: list[tuple[OrderSide, int, int, str]]
) -> None:
    """Every won is somewhere: in cash, in book cost, paid as buy commission, or realized."""
    ledger = Ledger(cash=start, fees=FEES)
    buy_fees = 0
    for side, qty, price, symbol in ops:
        commission_before = ledger.commission_paid
        try:
            trade(ledger, side, qty, price, symbol)
        except PaperOrderRejected:
            continue
        if side is BUY:
            buy_fees += ledger.commission_paid - commission_before
        cost = sum(h.cost for h in ledger.holdings.values())
        assert ledger.cash + cost + buy_fees - ledger.realized_pnl == start
        assert ledger.cash >= 0
        assert all(h.qty > 0 and h.cost >= 0 for h in ledger.holdings.values())
    assert ledger.reserved_cash == 0


def test_apply_finishes_the_order() -> None:
    ledger = Ledger(cash=1_000_000, fees=FEES)
    o = order(BUY, 2, 70_000)
    o.reserved_cash = ledger.reservation(BUY, LIMIT, 2, 70_000, upper=0)
    ledger.hold(o)
    ledger.apply(o, ledger.settle(o, 69_900, TS))
    assert (o.state, o.filled_qty, o.avg_fill_price, o.reserved_cash) == (
        OrderState.FILLED,
        2,
        69_900.0,
        0,
    )
    # 2 × 69,900 = 139,800 + floor(20.97) = 20
    assert ledger.cash == 1_000_000 - 139_820
    assert ledger.available_cash == ledger.cash
