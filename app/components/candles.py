"""Candlestick pieces shared by every chart (the symbol page, the rule preview).

Korean convention: a rising candle is red and a falling one blue, the reverse of
Western charts, so the colours come from the same constants as price text.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import plotly.graph_objects as go

from app.components.layout import DOWN_COLOR, UP_COLOR
from engines.market import Candle, Timeframe

KST = ZoneInfo("Asia/Seoul")


def bar_labels(candles: list[Candle]) -> list[str]:
    """X-axis labels in KST: dates for daily and weekly bars, date and time otherwise.

    Charts use a categorical axis with these labels, so nights, weekends and
    holidays leave no gaps.
    """
    if not candles:
        return []
    daily = candles[0].timeframe in (Timeframe.D1, Timeframe.W1)
    fmt = "%Y-%m-%d" if daily else "%m-%d %H:%M"
    return [c.start.astimezone(KST).strftime(fmt) for c in candles]


def candlestick(candles: list[Candle], x: list[str]) -> go.Candlestick:
    return go.Candlestick(
        x=x,
        open=[c.open for c in candles],
        high=[c.high for c in candles],
        low=[c.low for c in candles],
        close=[c.close for c in candles],
        increasing={"line": {"color": UP_COLOR}, "fillcolor": UP_COLOR},
        decreasing={"line": {"color": DOWN_COLOR}, "fillcolor": DOWN_COLOR},
        name="",
        showlegend=False,
    )


def volume_colors(candles: list[Candle]) -> list[str]:
    return [UP_COLOR if c.close >= c.open else DOWN_COLOR for c in candles]
