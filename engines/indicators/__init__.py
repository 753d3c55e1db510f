"""Streaming technical indicators: O(1) per bar, checked against ``ta`` to 1e-9.

Each indicator is a class whose ``update(...)`` takes the bar fields named in its
``inputs`` and returns the current value (``None`` while warming up). Build them by
name with ``make_indicator`` (what rule specs do), share identical ones by ``key``.
"""

from engines.indicators.base import MAX_WINDOW, Indicator
from engines.indicators.extremes import BARS_PER_WEEK, High52W, Highest, Low52W, Lowest
from engines.indicators.moving import EMA, SMA, WMA, VolumeSMA
from engines.indicators.oscillators import MACD, RSI, MACDValue, Stochastic, StochValue
from engines.indicators.pivots import PivotHigh, PivotLow
from engines.indicators.registry import INDICATOR_NAMES, indicator_key, make_indicator
from engines.indicators.volatility import ATR, Bollinger, BollingerValue
from engines.indicators.volume import OBV, VWAP

__all__ = [
    "ATR",
    "BARS_PER_WEEK",
    "EMA",
    "INDICATOR_NAMES",
    "MACD",
    "MAX_WINDOW",
    "OBV",
    "RSI",
    "SMA",
    "VWAP",
    "WMA",
    "Bollinger",
    "BollingerValue",
    "High52W",
    "Highest",
    "Indicator",
    "Low52W",
    "Lowest",
    "MACDValue",
    "PivotHigh",
    "PivotLow",
    "StochValue",
    "Stochastic",
    "VolumeSMA",
    "indicator_key",
    "make_indicator",
]
