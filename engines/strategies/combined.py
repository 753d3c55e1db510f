"""A trend filter plus an oscillator: buy dips in an uptrend.

Buy when the fast average is above the slow one (an uptrend) *and* the RSI is below
``rsi_buy`` (a dip), e.g. (MA20 > MA60) and (RSI < 30). Sell when the RSI rises above
``rsi_sell`` (the dip has recovered) or the trend turns (fast below slow).

Both rules are conditions that can hold for many bars, so each fires on the bar it
*becomes* true: a dip that lasts five bars is one buy signal, not five, and an alert
user hears about it once.
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from engines.market import Candle
from engines.strategies.base import Context, IndicatorHandle, Signal, Strategy
from engines.strategies.params_common import (
    MovingAveragePairParams,
    check_lower_below,
    fraction_field,
)


class CombinedParams(MovingAveragePairParams):
    rsi_window: int = Field(14, ge=2, le=50)
    rsi_buy: int = Field(30, ge=5, le=50, json_schema_extra={"step": 5})
    rsi_sell: int = Field(70, ge=50, le=95, json_schema_extra={"step": 5})
    fraction: float = fraction_field()

    @field_validator("rsi_sell")
    @classmethod
    def _buy_below_sell(cls, rsi_sell: int, info: ValidationInfo) -> int:
        return check_lower_below("rsi_buy", rsi_sell, info)


class Combined(Strategy):
    """(fast MA > slow MA) and (RSI < rsi_buy) buys; RSI > rsi_sell or a trend flip sells."""

    name = "combined"
    Params = CombinedParams
    title_key = "strategy.combined.title"
    description_key = "strategy.combined.description"
    params: CombinedParams

    def setup(self, ctx: Context) -> None:
        p = self.params
        self._fast: IndicatorHandle = ctx.indicator(p.kind, window=p.fast)
        self._slow: IndicatorHandle = ctx.indicator(p.kind, window=p.slow)
        self._rsi: IndicatorHandle = ctx.indicator("rsi", window=p.rsi_window)

    def _buy_rule(self, fast: float, slow: float, rsi: float) -> bool:
        return fast > slow and rsi < self.params.rsi_buy

    def _sell_rule(self, fast: float, slow: float, rsi: float) -> bool:
        return rsi > self.params.rsi_sell or fast < slow

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        fast, slow, rsi = self._fast, self._slow, self._rsi
        if not (fast.ready and slow.ready and rsi.ready):
            return None
        p = self.params
        now = (fast.value, slow.value, rsi.value)
        before = (fast.prev, slow.prev, rsi.prev)
        if self._buy_rule(*now) and not self._buy_rule(*before):
            if ctx.position > 0:
                return None
            return ctx.buy(
                fraction=p.fraction,
                reason="strategy.combined.buy",
                reason_params=(("rsi", round(rsi.value, 1)), ("rsi_buy", p.rsi_buy)),
            )
        if self._sell_rule(*now) and not self._sell_rule(*before):
            if fast.value < slow.value:
                return ctx.sell(reason="strategy.combined.sell_trend")
            return ctx.sell(
                reason="strategy.combined.sell_rsi",
                reason_params=(("rsi", round(rsi.value, 1)), ("rsi_sell", p.rsi_sell)),
            )
        return None
