"""Moving-average cross: buy the golden cross, sell the dead cross.

The cross is backtesting.py's ``crossover``: the fast average was strictly below the
slow one on the previous bar and is strictly above it now (and the mirror for the
dead cross). Touching without crossing (equal averages) is not a cross, so a flat
market does not flicker signals. Users compare our signals with charts and other
tools; using the same strict definition keeps them in agreement.
"""

from __future__ import annotations

from engines.market import Candle
from engines.strategies.base import Context, IndicatorHandle, Signal, Strategy
from engines.strategies.params_common import MovingAveragePairParams, fraction_field


class MACrossParams(MovingAveragePairParams):
    fraction: float = fraction_field()


class MACross(Strategy):
    """Golden cross buys (when flat), dead cross sells."""

    name = "ma_cross"
    Params = MACrossParams
    title_key = "strategy.ma_cross.title"
    description_key = "strategy.ma_cross.description"
    params: MACrossParams

    def setup(self, ctx: Context) -> None:
        p = self.params
        self._fast: IndicatorHandle = ctx.indicator(p.kind, window=p.fast)
        self._slow: IndicatorHandle = ctx.indicator(p.kind, window=p.slow)

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        fast, slow = self._fast, self._slow
        if not (fast.ready and slow.ready):
            return None
        p = self.params
        why = (("fast", p.fast), ("slow", p.slow))
        if fast.prev < slow.prev and fast.value > slow.value:
            # Long-only and no pyramiding: a BUY opens a position. An alert-only host
            # has no position, so every golden cross still reaches the user.
            if ctx.position > 0:
                return None
            return ctx.buy(
                fraction=p.fraction, reason="strategy.ma_cross.golden", reason_params=why
            )
        if fast.prev > slow.prev and fast.value < slow.value:
            return ctx.sell(reason="strategy.ma_cross.dead", reason_params=why)
        return None
