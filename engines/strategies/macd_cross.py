"""MACD signal cross: buy when the MACD line crosses above its signal line, sell below.

The MACD line is the fast EMA minus the slow EMA; the signal line is an EMA of that.
A cross is strict on both bars (backtesting.py's ``crossover``), so a line resting
on the signal line does not fire.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from engines.market import Candle
from engines.strategies.base import Context, IndicatorHandle, Signal, Strategy, StrategyParams
from engines.strategies.params_common import check_fast_shorter, fraction_field


class MACDCrossParams(StrategyParams):
    model_config = ConfigDict(allow_inf_nan=False)

    fast: int = Field(12, ge=4, le=40, json_schema_extra={"step": 2})
    slow: int = Field(26, ge=10, le=100, json_schema_extra={"step": 2})
    signal: int = Field(9, ge=2, le=50)
    fraction: float = fraction_field()

    _fast_shorter = field_validator("slow")(check_fast_shorter)


class MACDCross(Strategy):
    """MACD over signal buys (when flat), MACD under signal sells."""

    name = "macd_cross"
    Params = MACDCrossParams
    title_key = "strategy.macd_cross.title"
    description_key = "strategy.macd_cross.description"
    params: MACDCrossParams

    def setup(self, ctx: Context) -> None:
        p = self.params
        self._macd: IndicatorHandle = ctx.indicator(
            "macd", fast=p.fast, slow=p.slow, signal=p.signal
        )

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        h = self._macd
        if not h.ready:
            return None
        prev, now = h.prev, h.value
        p = self.params
        if prev.macd < prev.signal and now.macd > now.signal:
            if ctx.position > 0:
                return None
            return ctx.buy(fraction=p.fraction, reason="strategy.macd_cross.buy")
        if prev.macd > prev.signal and now.macd < now.signal:
            return ctx.sell(reason="strategy.macd_cross.sell")
        return None
