"""How many shares a signal means: one function for the backtester and the executors.

A backtest that sized orders one way and a live account another would drift apart
on the first trade, so both call :func:`shares_for`. The rules:

* **Buy.** ``signal.qty`` shares when given; otherwise ``floor(fraction × equity /
  (price × (1 + commission rate)))``: the fraction of the account's value, with room
  for the commission. Either way the result is clipped to what ``cash`` covers
  *including* the commission, with the commission computed exactly as it will be
  charged (truncated to the won), so a sized order never overdraws the account.
* **Sell.** ``signal.qty`` shares when given, clipped to the position; otherwise
  ``floor(fraction × position)`` (``fraction`` 1.0 sells everything). Long only:
  with no position a sell is 0 shares.

:func:`shares_like_backtesting_py` reproduces backtesting.py's own sizing of
``self.buy()`` instead; the backtester offers it (``sizing="fraction_of_available"``)
so its results can be checked trade for trade against that library.
"""

from __future__ import annotations

import math
import sys

from engines.costs import CostModel
from engines.strategies.base import Action, Signal

__all__ = ["BACKTESTING_PY_FULL", "affordable", "shares_for", "shares_like_backtesting_py"]

BACKTESTING_PY_FULL = 1 - sys.float_info.epsilon
"""backtesting.py's default ``size`` of ``buy()``: "all of it", just below 1 so it reads
as a fraction. It matters: 10,000,000 × (1 − ε) // 50,000 is 199, not 200."""


def affordable(qty: int, price: float, cash: float, costs: CostModel) -> int:
    """The largest quantity up to ``qty`` whose value plus commission ``cash`` covers."""
    if qty <= 0 or price <= 0 or cash <= 0:
        return 0
    # Truncating the commission can save at most one won, hence ``cash + 1``; start
    # from that bound and step down to the exact answer (rarely more than one step).
    per_share = price * (1 + costs.commission_rate)
    qty = min(qty, int((cash + 1) // per_share) + 1)
    while qty > 0:
        value = qty * price
        if value + costs.commission(value) <= cash:
            return qty
        qty -= 1
    return 0


def shares_for(
    signal: Signal,
    price: float,
    *,
    cash: float,
    equity: float,
    position: int,
    costs: CostModel,
) -> int:
    """Shares to trade for ``signal`` at ``price`` (0: nothing to do). See the module doc."""
    if signal.action is Action.BUY:
        if price <= 0:
            raise ValueError(f"price must be positive, got {price!r}")
        if signal.qty > 0:
            wanted = signal.qty
        else:
            budget = signal.fraction * equity
            wanted = int(budget // (price * (1 + costs.commission_rate))) if budget > 0 else 0
        return affordable(wanted, price, cash, costs)
    if signal.action is Action.SELL:
        if position <= 0:
            return 0
        if signal.qty > 0:
            return min(signal.qty, position)
        # The epsilon keeps 0.29 × 100 (28.999…96 in binary) at 29.
        return min(position, math.floor(signal.fraction * position + 1e-9))
    return 0


def shares_like_backtesting_py(
    signal: Signal, price: float, *, available: float, position: int, costs: CostModel
) -> int:
    """backtesting.py's sizing of ``buy(size=...)``/``position.close()``, step for step.

    A relative buy becomes ``int(available × size // adjusted)`` with ``adjusted =
    price + commission(size × price) / size`` (backtesting.py's
    ``_Broker._process_orders``, no spread, margin 1), and ``size`` is
    :data:`BACKTESTING_PY_FULL` for a full-size signal. An order for 0 shares is
    cancelled there, so it is 0 here. Same float operations, same order, so the
    quantities agree exactly. Sells close ``floor(fraction × position)`` (all for 1.0).
    """
    if signal.action is Action.BUY:
        if signal.qty > 0:
            qty = signal.qty
            if qty * (price + costs.commission(qty * price) / qty) > available:
                return 0  # backtesting.py cancels an order it cannot cover, whole
            return qty
        size = signal.fraction if signal.fraction < 1 else BACKTESTING_PY_FULL
        adjusted = price + costs.commission(size * price) / size
        return int((available * size) // adjusted)
    if signal.action is Action.SELL:
        if position <= 0:
            return 0
        if signal.qty > 0:
            return min(signal.qty, position)
        if signal.fraction >= 1:
            return position
        return max(1, int(round(position * signal.fraction)))
    return 0
