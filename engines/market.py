"""Market primitives shared by every layer: ticks and KRX price arithmetic.

Prices are whole won (``int``). KRX quotes never have fractions, and integer
arithmetic keeps rule thresholds exact: a level is hit or it is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# KRX unified tick-size table (KOSPI and KOSDAQ alike since 2023-01-25):
# (exclusive upper bound of the band, tick size in won).
_TICK_BANDS: tuple[tuple[int, int], ...] = (
    (2_000, 1),
    (5_000, 5),
    (20_000, 10),
    (50_000, 50),
    (200_000, 100),
    (500_000, 500),
)
_TOP_TICK = 1_000

PRICE_LIMIT_RATE = 0.30
"""Daily price limit: ±30% of the previous close."""


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade print. ``ts`` is timezone-aware (UTC) and comes from the source."""

    symbol: str
    price: int
    volume: int
    ts: datetime


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


def tick_size(price: int) -> int:
    """Tick size of the band that ``price`` falls in."""
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    for upper, size in _TICK_BANDS:
        if price < upper:
            return size
    return _TOP_TICK


def round_to_tick(price: int, direction: Direction = Direction.DOWN) -> int:
    """Snap a price onto the tick grid of its own band.

    Rounding down can cross into a lower band (e.g. 2,003 -> 2,000 is valid in
    both), so the result is always a quotable price.
    """
    size = tick_size(price)
    floor = price - price % size
    if direction is Direction.DOWN or floor == price:
        return floor
    return floor + size


def is_on_tick(price: int) -> bool:
    return price > 0 and price % tick_size(price) == 0


def price_limits(prev_close: int) -> tuple[int, int]:
    """Lower and upper limit prices for a day whose reference price is ``prev_close``.

    KRX rounds the upper limit down and the lower limit up onto the tick grid, so
    both limits are quotable and no further than 30% from the reference.
    """
    if prev_close <= 0:
        raise ValueError(f"previous close must be positive, got {prev_close}")
    upper = round_to_tick(int(prev_close * (1 + PRICE_LIMIT_RATE)), Direction.DOWN)
    raw_lower = prev_close * (1 - PRICE_LIMIT_RATE)
    lower_int = int(raw_lower) if raw_lower == int(raw_lower) else int(raw_lower) + 1
    lower = round_to_tick(max(lower_int, 1), Direction.UP)
    return lower, upper


def step_ticks(price: int, steps: int) -> int:
    """Move ``price`` by ``steps`` ticks, re-reading the tick size at each band edge."""
    for _ in range(abs(steps)):
        if steps > 0:
            price += tick_size(price)
        else:
            below = price - 1
            if below <= 0:
                return price
            price -= tick_size(below)
    return price


def change_pct(price: int, prev_close: int) -> float:
    """Percent change from the previous close, as the ticker shows it."""
    if prev_close <= 0:
        return 0.0
    return (price - prev_close) / prev_close * 100.0
