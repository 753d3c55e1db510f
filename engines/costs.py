"""One fee arithmetic for backtests, the paper account and the live executor.

A backtest that charges fees differently from the account it is compared with
cannot be trusted, so the commission, the KRX transaction tax and slippage are
computed here once, and :mod:`brokers.paper.account` re-exports
:func:`commission`, :func:`sell_tax` and :func:`floor_rate`.

KRX conventions (what a Korean HTS shows for a cash account):

* **Commission** is ``floor(value × commission_rate)`` on buys and on sells, and
  the **transaction tax** (증권거래세) ``floor(value × sell_tax_rate)`` on sells
  only. Brokers truncate to the won (원 미만 절사).
* The rate is applied as the exact decimal it is written as: in binary floating
  point ``700_000 × 0.00015`` is ``104.999…`` and would truncate to 104, not 105.
  ``floor_rate`` therefore multiplies by the rate's exact fraction (``0.00015`` is
  ``15 / 100000``) in integers, which gives what ``Decimal(str(rate))`` gives,
  faster.

:class:`CostModel` bundles the rates with slippage. ``whole_won=False`` switches
to plain float arithmetic (``value × rate``, no truncation) for data quoted in
fractions, such as dollar prices; it is also how backtesting.py charges
commission, which the parity test relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from engines.market import Direction, round_to_tick, step_ticks

__all__ = ["CostModel", "commission", "floor_rate", "sell_tax"]


@lru_cache(maxsize=64)
def _rate_fraction(rate: float) -> tuple[int, int]:
    """``rate`` as written (``str(rate)``), as an exact ``(numerator, denominator)``."""
    num, den = Decimal(str(rate)).as_integer_ratio()
    return num, den


def floor_rate(value: float, rate: float) -> int:
    """``floor(value × rate)`` computed exactly, with the rate as written, not its binary float.

    ``value`` is normally whole won (an ``int``); a float value is taken at its exact
    binary value, so the result is still the true floor of the product.
    """
    num, den = _rate_fraction(rate)
    if isinstance(value, int):
        return (value * num) // den
    return math.floor(Fraction(value) * num / den)


def commission(value: int, rate: float) -> int:
    """Brokerage commission on a trade of ``value`` won, truncated to the won."""
    return floor_rate(value, rate)


def sell_tax(value: int, rate: float) -> int:
    """Securities transaction tax on a sell of ``value`` won, truncated to the won."""
    return floor_rate(value, rate)


@dataclass(frozen=True, slots=True)
class CostModel:
    """Commission, sell tax and slippage of a simulated or sized trade.

    ``slippage_ticks`` moves a *market* fill that many KRX ticks against the trader
    (a buy pays more, a sell receives less), re-reading the tick size at band edges;
    it needs whole-won prices. ``slippage_pct`` moves it by a fraction of the price
    (``0.001`` is 0.1%); on whole-won prices the result is then snapped onto the tick
    grid, again against the trader. Limit fills get no slippage: they trade at their
    limit or better.
    """

    commission_rate: float = 0.00015
    sell_tax_rate: float = 0.002
    slippage_ticks: int = 0
    slippage_pct: float = 0.0
    whole_won: bool = True

    def __post_init__(self) -> None:
        for name in ("commission_rate", "sell_tax_rate", "slippage_pct"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ValueError(f"{name} must be a number, got {rate!r}")
            if not math.isfinite(rate) or not 0 <= rate < 1:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        ticks = self.slippage_ticks
        if isinstance(ticks, bool) or not isinstance(ticks, int) or ticks < 0:
            raise ValueError(f"slippage_ticks must be an int >= 0, got {ticks!r}")

    def commission(self, value: float) -> float:
        """Commission on a buy or a sell of ``value`` (whole won: truncated, exact)."""
        if self.whole_won:
            return floor_rate(value, self.commission_rate)
        return value * self.commission_rate

    def sell_tax(self, value: float) -> float:
        """Transaction tax on a sell of ``value`` (whole won: truncated, exact)."""
        if self.whole_won:
            return floor_rate(value, self.sell_tax_rate)
        return value * self.sell_tax_rate

    def market_price(self, price: float, buy: bool) -> float:
        """The price a market order pays (``buy``) or receives against a quote of ``price``.

        Integer prices stay integers on the KRX tick grid.
        """
        if self.slippage_pct:
            moved = price * (1 + self.slippage_pct) if buy else price * (1 - self.slippage_pct)
            if isinstance(price, int):
                whole = math.ceil(moved) if buy else max(math.floor(moved), 1)
                price = round_to_tick(whole, Direction.UP if buy else Direction.DOWN)
            else:
                price = moved
        if self.slippage_ticks:
            if not isinstance(price, int):
                raise ValueError(
                    "slippage_ticks needs whole-won (int) prices; use slippage_pct for "
                    f"fractional prices such as {price!r}"
                )
            price = step_ticks(price, self.slippage_ticks if buy else -self.slippage_ticks)
        return price
