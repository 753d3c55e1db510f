"""The backtest page's figures: equity over drawdown, and trades on the price chart.

Built from what the job stored (thinned curves, the trade list) and, for the
price chart, the stored candles of one symbol: small figures, sent once per
finished run, never per tick. Axes are categorical (see ``bar_labels``), so a
trade marker lands on its bar whatever the gaps between trading days.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.components.candles import KST, bar_labels, candlestick
from engines.market import Candle

EQUITY_COLOR = "#3e63dd"
DRAWDOWN_COLOR = "#e5484d"
BUY_COLOR = "#d1242f"  # a buy marks a bet on a rise: the colour of rising prices here
SELL_COLOR = "#1f5fd1"


def _label(iso: str, daily: bool) -> str:
    try:
        ts = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return ts.astimezone(KST).strftime("%Y-%m-%d" if daily else "%m-%d %H:%M")


def _is_daily(points: Sequence[Sequence[Any]]) -> bool:
    """Whether the curve's bars are a day or more apart (labels then drop the time)."""
    if len(points) < 2:
        return True
    try:
        a = datetime.fromisoformat(str(points[0][0]))
        b = datetime.fromisoformat(str(points[1][0]))
    except ValueError:
        return True
    return (b - a).total_seconds() >= 20 * 3600


def equity_figure(
    equity: Sequence[Sequence[Any]],
    drawdown: Sequence[Sequence[Any]],
    *,
    equity_name: str,
    drawdown_name: str,
) -> go.Figure:
    """Equity in won on top, drawdown in percent below, sharing the x axis."""
    daily = _is_daily(equity)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32])
    fig.add_trace(
        go.Scatter(
            x=[_label(str(p[0]), daily) for p in equity],
            y=[p[1] for p in equity],
            mode="lines",
            line={"color": EQUITY_COLOR, "width": 1.6},
            name=equity_name,
            hovertemplate="%{x}<br>%{y:,.0f}<extra></extra>",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=[_label(str(p[0]), daily) for p in drawdown],
            y=[None if p[1] is None else p[1] * 100 for p in drawdown],
            mode="lines",
            fill="tozeroy",
            line={"color": DRAWDOWN_COLOR, "width": 1},
            name=drawdown_name,
            hovertemplate="%{x}<br>%{y:.2f}%<extra></extra>",
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    fig.update_layout(
        height=380,
        autosize=True,
        margin={"l": 56, "r": 8, "t": 8, "b": 32},
        dragmode="pan",
        xaxis={"type": "category", "nticks": 5, "showticklabels": False},
        xaxis2={"type": "category", "nticks": 5},
        yaxis={"tickformat": ",.0f", "title": {"text": equity_name, "font": {"size": 11}}},
        yaxis2={"ticksuffix": "%", "title": {"text": drawdown_name, "font": {"size": 11}}},
    )
    return fig


def _bar_index(candles: Sequence[Candle]) -> dict[datetime, int]:
    return {c.start: i for i, c in enumerate(candles)}


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def trades_figure(
    candles: Sequence[Candle],
    trades: Sequence[dict[str, Any]],
    *,
    buy_name: str,
    sell_name: str,
) -> go.Figure:
    """Candles of one symbol with a marker under each entry and above each exit."""
    labels = bar_labels(list(candles))
    index = _bar_index(candles)
    fig = go.Figure()
    if candles:
        fig.add_trace(candlestick(list(candles), labels))
    buys: list[tuple[str, float, float]] = []
    sells: list[tuple[str, float, float]] = []
    for t in trades:
        entry = index.get(_when(t.get("entry_time")))  # type: ignore[arg-type]
        if entry is not None and t.get("entry_price") is not None:
            buys.append((labels[entry], candles[entry].low, float(t["entry_price"])))
        exit_ = index.get(_when(t.get("exit_time")))  # type: ignore[arg-type]
        if exit_ is not None and t.get("exit_price") is not None:
            sells.append((labels[exit_], candles[exit_].high, float(t["exit_price"])))
    for points, name, color, symbol in (
        (buys, buy_name, BUY_COLOR, "triangle-up"),
        (sells, sell_name, SELL_COLOR, "triangle-down"),
    ):
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="markers",
                marker={
                    "symbol": symbol,
                    "size": 12,
                    "color": color,
                    "line": {"color": "#1c2024", "width": 1},
                },
                hovertext=[f"{name} {p[2]:,.0f}" for p in points],
                hoverinfo="text+x",
                name=name,
                showlegend=False,
            )
        )
    fig.update_layout(
        height=360,
        autosize=True,
        margin={"l": 56, "r": 8, "t": 8, "b": 32},
        dragmode="pan",
        xaxis={"type": "category", "rangeslider": {"visible": False}, "nticks": 6},
        yaxis={"tickformat": ",d"},
    )
    return fig
