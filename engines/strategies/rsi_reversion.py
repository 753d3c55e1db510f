"""RSI mean reversion: buy the rebound out of oversold, sell on the way into overbought.

The buy waits for the RSI to cross back *up* through ``lower`` rather than firing
while it is below: an RSI that keeps falling is a falling knife, and buying every bar
it stays under 30 would average into it. The sell fires when the RSI crosses up
through ``upper``, the move the position was bought for. Both are strict crosses
(previous bar strictly on one side, this bar strictly on the other), as in
backtesting.py's ``crossover``.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from engines.market import Candle
from engines.strategies.base import Context, IndicatorHandle, Signal, Strategy, StrategyParams
from engines.strategies.params_common import check_lower_below, fraction_field


class RSIReversionParams(StrategyParams):
    model_config = ConfigDict(allow_inf_nan=False)

    rsi_window: int = Field(14, ge=2, le=50)
    lower: int = Field(30, ge=5, le=50, json_schema_extra={"step": 5})
    upper: int = Field(70, ge=50, le=95, json_schema_extra={"step": 5})
    fraction: float = fraction_field()

    @field_validator("upper")
    @classmethod
    def _lower_below_upper(cls, upper: int, info: ValidationInfo) -> int:
        return check_lower_below("lower", upper, info)


class RSIReversion(Strategy):
    """Buys when the RSI turns up out of oversold (when flat), sells into overbought."""

    name = "rsi_reversion"
    Params = RSIReversionParams
    title_key = "strategy.rsi_reversion.title"
    description_key = "strategy.rsi_reversion.description"
    params: RSIReversionParams

    def setup(self, ctx: Context) -> None:
        self._rsi: IndicatorHandle = ctx.indicator("rsi", window=self.params.rsi_window)

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        rsi = self._rsi
        if not rsi.ready:
            return None
        p = self.params
        now = rsi.value
        if rsi.prev < p.lower < now:
            if ctx.position > 0:
                return None
            return ctx.buy(
                fraction=p.fraction,
                reason="strategy.rsi_reversion.buy",
                reason_params=(("rsi", round(now, 1)), ("lower", p.lower)),
            )
        if rsi.prev < p.upper < now:
            return ctx.sell(
                reason="strategy.rsi_reversion.sell",
                reason_params=(("rsi", round(now, 1)), ("upper", p.upper)),
            )
        return None
