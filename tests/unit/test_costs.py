"""The shared fee arithmetic (engines.costs), against hand figures and exact decimals."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokers.paper import account
from engines.costs import CostModel, commission, floor_rate, sell_tax


def test_fees_truncate_to_the_won_with_the_rate_as_written() -> None:
    # 700,000 × 0.00015 = 105 exactly; in binary floats it is 104.99999…, which floors to 104
    assert 700_000 * 0.00015 < 105
    assert commission(700_000, 0.00015) == 105
    assert commission(288_000, 0.00015) == 43  # 43.2
    assert sell_tax(288_000, 0.002) == 576
    assert sell_tax(1_234_567, 0.0018) == 2_222  # 2,222.2206
    assert commission(6_666, 0.00015) == 0  # 0.9999


@given(
    value=st.integers(min_value=0, max_value=10**13),
    rate=st.sampled_from([0.00015, 0.0002, 0.002, 0.0018, 0.00014, 0.015, 1e-05, 0.0]),
)
def test_floor_rate_equals_the_exact_decimal_floor(value: int, rate: float) -> None:
    exact = (Decimal(value) * Decimal(str(rate))).to_integral_value(rounding=ROUND_FLOOR)
    assert floor_rate(value, rate) == int(exact)


def test_float_value_floors_its_exact_product() -> None:
    assert floor_rate(700_000.0, 0.00015) == 105
    assert floor_rate(1_000.5, 0.01) == 10  # 10.005


def test_paper_account_uses_the_same_functions() -> None:
    assert account.commission is commission
    assert account.sell_tax is sell_tax


def test_cost_model_whole_won_and_float_modes() -> None:
    krx = CostModel()
    assert (krx.commission(700_000), krx.sell_tax(288_000)) == (105, 576)
    assert isinstance(krx.commission(700_000), int)
    usd = CostModel(commission_rate=0.002, sell_tax_rate=0.0, whole_won=False)
    assert usd.commission(1234.5) == 1234.5 * 0.002  # no truncation
    assert usd.sell_tax(1234.5) == 0.0


@pytest.mark.parametrize(
    ("price", "buy", "ticks", "expected"),
    [
        (1_999, True, 1, 2_000),  # tick 1 below 2,000
        (1_999, True, 2, 2_005),  # then tick 5 from 2,000
        (2_000, False, 1, 1_999),  # the tick below 2,000 is 1
        (5_000, False, 2, 4_990),  # 5,000 -> 4,995 -> 4,990 (tick 5 below 5,000)
        (4_995, True, 2, 5_010),  # 4,995 -> 5,000 -> 5,010 (tick 10 from 5,000)
        (70_000, True, 3, 70_300),  # tick 100
        (70_000, False, 3, 69_700),
    ],
)
def test_slippage_ticks_move_against_the_trader_across_band_edges(
    price: int, buy: bool, ticks: int, expected: int
) -> None:
    assert CostModel(slippage_ticks=ticks).market_price(price, buy) == expected


def test_slippage_pct_snaps_whole_won_prices_onto_the_grid_against_the_trader() -> None:
    costs = CostModel(slippage_pct=0.001)
    assert costs.market_price(70_000, True) == 70_100  # 70,070 -> up to 70,100
    assert costs.market_price(70_000, False) == 69_900  # 69,930 -> down to 69,900
    floats = CostModel(slippage_pct=0.001, whole_won=False)
    assert floats.market_price(100.0, True) == pytest.approx(100.1)
    assert floats.market_price(100.0, False) == pytest.approx(99.9)


def test_no_slippage_leaves_the_price_alone() -> None:
    assert CostModel().market_price(70_000, True) == 70_000
    assert CostModel(whole_won=False).market_price(123.45, False) == 123.45


def test_slippage_ticks_on_fractional_prices_is_refused() -> None:
    with pytest.raises(ValueError, match="slippage_ticks needs whole-won"):
        CostModel(slippage_ticks=1, whole_won=False).market_price(123.45, True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"commission_rate": -0.001},
        {"sell_tax_rate": 1.5},
        {"slippage_pct": float("nan")},
        {"slippage_ticks": -1},
        {"slippage_ticks": 1.5},
        {"commission_rate": "0.1"},
        {"commission_rate": True},
    ],
)
def test_bad_cost_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CostModel(**kwargs)
