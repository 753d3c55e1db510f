"""Moving-average cross: buy the golden cross, sell the dead cross.

The cross is backtesting.py's ``crossover``: the fast average was strictly below the
slow one on the previous bar and is strictly above it now (and the mirror for the
dead cross). Touching without crossing (equal averages) is not a cross, so a flat
market does not flicker signals. Users compare our signals with charts and other
tools; using the same strict definition keeps them in agreement.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from engines.market import Candle
from engines.strategies.base import Context, IndicatorHandle, Signal, Strategy, StrategyParams


class MACrossParams(StrategyParams):
    model_config = ConfigDict(allow_inf_nan=False)

    kind: Literal["sma", "ema"] = "sma"
    fast: int = Field(20, ge=5, le=100, json_schema_extra={"step": 5})
    slow: int = Field(60, ge=10, le=300, json_schema_extra={"step": 10})
    fraction: float = Field(1.0, gt=0.0, le=1.0, json_schema_extra={"step": 0.05})

    @field_validator("slow")
    @classmethod
    def _fast_shorter(cls, slow: int, info: ValidationInfo) -> int:
        # On ``slow``, declared after ``fast``: a field validator sees only the fields
        # before it, and attaching the error to a field lets the form show it there.
        fast = info.data.get("fast")
        if fast is not None and fast >= slow:
            raise PydanticCustomError(
                "fast_not_shorter",
                "the fast average ({fast}) must be shorter than the slow one ({slow})",
                {"fast": fast, "slow": slow},
            )
        return slow


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
