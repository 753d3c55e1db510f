"""shares_for (backtests and executors) and backtesting.py's sizing, against hand figures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.costs import CostModel
from engines.strategies.base import Action, Signal
from engines.strategies.sizing import affordable, shares_for, shares_like_backtesting_py

KRX = CostModel()
BUY = Signal(Action.BUY, "005930")
SELL = Signal(Action.SELL, "005930")


def test_buy_fraction_of_equity_leaves_room_for_commission() -> None:
    # 10,000,000 / (70,000 × 1.00015) = 142.83 -> 142; 142 × 70,000 + floor(1,491) fits
    assert shares_for(BUY, 70_000, cash=10_000_000, equity=10_000_000, position=0, costs=KRX) == 142
    half = Signal(Action.BUY, fraction=0.5)
    # 5,000,000 / 70,010.5 = 71.4 -> 71
    assert shares_for(half, 70_000, cash=10_000_000, equity=10_000_000, position=0, costs=KRX) == 71


def test_buy_is_clipped_to_cash_including_the_exact_commission() -> None:
    ten = Signal(Action.BUY, qty=10)
    # 10 × 70,000 = 700,000 + commission 105 = 700,105
    assert shares_for(ten, 70_000, cash=700_105, equity=10**9, position=0, costs=KRX) == 10
    assert shares_for(ten, 70_000, cash=700_104, equity=10**9, position=0, costs=KRX) == 9
    # Fraction of a large equity, but little cash: cash decides.
    assert shares_for(BUY, 70_000, cash=150_000, equity=10**9, position=0, costs=KRX) == 2
    assert shares_for(BUY, 70_000, cash=69_999, equity=10**9, position=0, costs=KRX) == 0


def test_truncated_commission_lets_the_last_share_in() -> None:
    # 6,666 shares at 1 won: commission floor(0.9999) = 0, so 6,666 won buys all of them,
    # although 6,666 / 1.00015 = 6,665.0 would suggest one fewer.
    many = Signal(Action.BUY, qty=10_000)
    assert shares_for(many, 1, cash=6_666, equity=6_666, position=0, costs=KRX) == 6_666


@given(
    price=st.integers(min_value=1, max_value=2_000_000),
    cash=st.integers(min_value=0, max_value=10**10),
    rate=st.sampled_from([0.0, 0.00015, 0.003]),
)
def test_affordable_is_the_largest_quantity_cash_covers(price: int, cash: int, rate: float) -> None:
    costs = CostModel(commission_rate=rate)
    qty = affordable(10**12, price, cash, costs)

    def cost(q: int) -> int:
        return q * price + costs.commission(q * price)

    assert qty >= 0
    assert cost(qty) <= cash
    assert cost(qty + 1) > cash


def test_sell_sizes() -> None:
    assert shares_for(SELL, 70_000, cash=0, equity=0, position=10, costs=KRX) == 10
    part = Signal(Action.SELL, fraction=0.29)
    assert shares_for(part, 70_000, cash=0, equity=0, position=100, costs=KRX) == 29
    assert shares_for(Signal(Action.SELL, qty=4), 1, cash=0, equity=0, position=10, costs=KRX) == 4
    assert (
        shares_for(Signal(Action.SELL, qty=40), 1, cash=0, equity=0, position=10, costs=KRX) == 10
    )
    assert shares_for(SELL, 70_000, cash=0, equity=0, position=0, costs=KRX) == 0  # long only


def test_alerts_size_to_nothing() -> None:
    alert = Signal(Action.ALERT, reason="x")
    assert shares_for(alert, 70_000, cash=10**9, equity=10**9, position=5, costs=KRX) == 0


def test_bad_price_is_refused() -> None:
    with pytest.raises(ValueError):
        shares_for(BUY, 0, cash=1, equity=1, position=0, costs=KRX)


def test_backtesting_py_sizing_keeps_its_epsilon() -> None:
    free = CostModel(commission_rate=0.0, sell_tax_rate=0.0, whole_won=False)
    # backtesting.py's buy() size is 1 - 2**-52: 10,000,000 × (1 - ε) // 50,000 is 199, not 200
    assert (
        shares_like_backtesting_py(BUY, 50_000, available=10_000_000, position=0, costs=free) == 199
    )
    assert (
        shares_like_backtesting_py(BUY, 50_001, available=10_000_000, position=0, costs=free) == 199
    )
    half = Signal(Action.BUY, fraction=0.5)
    assert (
        shares_like_backtesting_py(half, 50_000, available=10_000_000, position=0, costs=free)
        == 100
    )
    fee = CostModel(commission_rate=0.002, sell_tax_rate=0.0, whole_won=False)
    # adjusted price 100 + 0.2 -> floor(10,000 × (1 - ε) / 100.2) = 99
    assert shares_like_backtesting_py(BUY, 100.0, available=10_000, position=0, costs=fee) == 99
    assert shares_like_backtesting_py(SELL, 100.0, available=0, position=7, costs=fee) == 7
    assert shares_like_backtesting_py(SELL, 100.0, available=0, position=0, costs=fee) == 0
