"""KRX price arithmetic in engines.market: tick bands, rounding, daily limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.market import (
    Direction,
    change_pct,
    is_on_tick,
    price_limits,
    round_to_tick,
    step_ticks,
    tick_size,
)


@pytest.mark.parametrize(
    ("price", "size"),
    [
        (1, 1),
        (1_999, 1),
        (2_000, 5),
        (4_999, 5),
        (5_000, 10),
        (19_999, 10),
        (20_000, 50),
        (49_999, 50),
        (50_000, 100),
        (199_999, 100),
        (200_000, 500),
        (499_999, 500),
        (500_000, 1_000),
        (3_000_000, 1_000),
    ],
)
def test_tick_size_band_edges(price: int, size: int) -> None:
    assert tick_size(price) == size


@pytest.mark.parametrize(
    ("price", "down", "up"),
    [
        (1_234, 1_234, 1_234),  # 1-won band: every price is on tick
        (2_003, 2_000, 2_005),
        (4_999, 4_995, 5_000),  # rounding up lands on the next band's grid
        (12_345, 12_340, 12_350),
        (20_001, 20_000, 20_050),
        (77_750, 77_700, 77_800),
        (123_456, 123_400, 123_500),
        (499_999, 499_500, 500_000),
        (1_234_567, 1_234_000, 1_235_000),
        (70_000, 70_000, 70_000),  # already on tick: unchanged both ways
    ],
)
def test_round_to_tick_both_directions(price: int, down: int, up: int) -> None:
    assert round_to_tick(price) == down
    assert round_to_tick(price, Direction.DOWN) == down
    assert round_to_tick(price, Direction.UP) == up
    assert is_on_tick(down) and is_on_tick(up)


@pytest.mark.parametrize(
    ("prev_close", "limits"),
    [
        # 70,000 * 0.7 = 49,000 and * 1.3 = 91,000: both already on their grids
        # (50-won band below 50,000, 100-won band above).
        (70_000, (49_000, 91_000)),
        # 1,234 * 0.7 = 863.8 -> rounded up (towards the reference) to 864;
        # 1,234 * 1.3 = 1,604.2 -> rounded down to 1,604. 1-won ticks, so no
        # further snapping.
        (1_234, (864, 1_604)),
        # 77,700 * 0.7 = 54,390: the 100-won band, so up to 54,400.
        # 77,700 * 1.3 = 101,010: the 100-won band, so down to 101,000.
        (77_700, (54_400, 101_000)),
        # 400,000 * 1.3 = 520,000 crosses into the 1,000-won band (on grid);
        # 400,000 * 0.7 = 280,000 sits in the 500-won band (on grid).
        (400_000, (280_000, 520_000)),
        # 3,333 * 1.3 = 4,332.9 -> 4,332 -> down to the 5-won grid: 4,330;
        # 3,333 * 0.7 = 2,333.1 -> 2,334 -> up to the 5-won grid: 2,335.
        (3_333, (2_335, 4_330)),
        # 1 won: 0.7 rounds up to 1, 1.3 rounds down to 1. A locked day.
        (1, (1, 1)),
    ],
)
def test_price_limits_examples(prev_close: int, limits: tuple[int, int]) -> None:
    assert price_limits(prev_close) == limits


@pytest.mark.parametrize(
    ("price", "steps", "expected"),
    [
        (1_998, 2, 2_000),  # 1-won ticks up to the edge
        (1_999, 2, 2_005),  # 1 won to 2,000, then a 5-won tick
        (2_000, -1, 1_999),  # down from the edge uses the lower band's tick
        (2_005, -3, 1_998),  # 2,005 -> 2,000 -> 1,999 -> 1,998
        (4_995, 2, 5_010),  # 4,995 -> 5,000 -> 5,010
        (20_000, -2, 19_980),
        (49_950, 1, 50_000),
        (199_900, 2, 200_500),
        (500_000, -1, 499_500),
        (499_500, 1, 500_000),
        (71_300, 0, 71_300),
        (1, -5, 1),  # never below the minimum price
    ],
)
def test_step_ticks_across_band_edges(price: int, steps: int, expected: int) -> None:
    assert step_ticks(price, steps) == expected


@pytest.mark.parametrize("bad", [0, -1, -70_000])
def test_bad_input_raises(bad: int) -> None:
    with pytest.raises(ValueError):
        tick_size(bad)
    with pytest.raises(ValueError):
        round_to_tick(bad)
    with pytest.raises(ValueError):
        price_limits(bad)
    with pytest.raises(ValueError):
        step_ticks(bad, 1)
    assert not is_on_tick(bad)


def test_is_on_tick() -> None:
    assert is_on_tick(1_999)
    assert not is_on_tick(2_001)
    assert is_on_tick(2_005)
    assert not is_on_tick(500_500)
    assert is_on_tick(501_000)


def test_change_pct() -> None:
    assert change_pct(77_000, 70_000) == pytest.approx(10.0)
    assert change_pct(63_000, 70_000) == pytest.approx(-10.0)
    assert change_pct(100, 0) == 0.0


@given(st.integers(min_value=1, max_value=3_000_000))
def test_rounding_and_limits_stay_on_tick_and_within_30_percent(price: int) -> None:
    down = round_to_tick(price, Direction.DOWN)
    up = round_to_tick(price, Direction.UP)
    assert is_on_tick(down) and is_on_tick(up)
    assert down <= price <= up
    assert up - down in (0, tick_size(price))

    lower, upper = price_limits(price)
    assert is_on_tick(lower) and is_on_tick(upper)
    # Integer comparisons, so float error cannot hide a limit that is too wide.
    assert lower * 10 >= price * 7
    assert upper * 10 <= price * 13
    assert lower <= price <= upper
