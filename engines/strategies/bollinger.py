"""Bollinger bands, two ways: ride a breakout, or bet on the return to the mean.

* ``breakout``: buy when the close crosses above the upper band (a move strong
  enough to leave its usual range), sell when it crosses back below the middle band
  (the move has faded).
* ``reversion``: buy when the close crosses below the lower band (stretched too far
  down), sell when it crosses back above the middle band (it has returned).

Every trigger is a strict cross of the close against the band, previous bar against
this bar, so a close that stays outside the band fires once, not on every bar.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from engines.indicators import BollingerValue
from engines.market import Candle
from engines.strategies.base import Context, IndicatorHandle, Signal, Strategy, StrategyParams


class BollingerParams(StrategyParams):
    model_config = ConfigDict(allow_inf_nan=False)

    mode: Literal["breakout", "reversion"] = "breakout"
    window: int = Field(20, ge=5, le=100, json_schema_extra={"step": 5})
    num_std: float = Field(2.0, ge=1.0, le=3.5, json_schema_extra={"step": 0.25})
    fraction: float = Field(1.0, gt=0.0, le=1.0, json_schema_extra={"step": 0.05})


class BollingerStrategy(Strategy):
    """Breakout or mean reversion on Bollinger bands, chosen by ``mode``."""

    name = "bollinger"
    Params = BollingerParams
    title_key = "strategy.bollinger.title"
    description_key = "strategy.bollinger.description"
    params: BollingerParams

    def setup(self, ctx: Context) -> None:
        p = self.params
        self._bands: IndicatorHandle = ctx.indicator(
            "bollinger", window=p.window, num_std=p.num_std
        )

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        h = self._bands
        if not h.ready:
            return None
        prev: BollingerValue = h.prev
        now: BollingerValue = h.value
        before, close = ctx.bar(1).close, candle.close
        p = self.params
        if p.mode == "breakout":
            if before < prev.upper and close > now.upper:
                return self._buy(ctx, "strategy.bollinger.breakout_buy")
            if before > prev.mid and close < now.mid:
                return ctx.sell(reason="strategy.bollinger.breakout_sell")
            return None
        if before > prev.lower and close < now.lower:
            return self._buy(ctx, "strategy.bollinger.reversion_buy")
        if before < prev.mid and close > now.mid:
            return ctx.sell(reason="strategy.bollinger.reversion_sell")
        return None

    def _buy(self, ctx: Context, reason: str) -> Signal | None:
        if ctx.position > 0:  # long-only, no pyramiding
            return None
        return ctx.buy(fraction=self.params.fraction, reason=reason)
