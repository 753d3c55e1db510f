"""Performance figures of an equity curve and its trades.

Conventions (the UI and the optimiser read these; keep them stable):

* Returns, drawdowns, exposure and rates are **fractions** (``0.12`` is 12%);
  ``max_drawdown`` is the deepest fall from a peak as a non-positive fraction
  (``-0.25``), like the drawdown curve.
* Per-period returns are simple returns of the equity curve, one per bar.
  ``volatility`` is their sample standard deviation (ddof 1) times √(periods per
  year); ``sharpe`` is their mean over that deviation times √(periods per year),
  with a **risk-free rate of 0** (a KRX cash account's idle won earns nothing in a
  backtest either); ``sortino`` uses the downside deviation
  √(mean(min(r, 0)²)) over all periods instead. ``cagr`` compounds over
  ``bars / periods_per_year`` years; ``calmar`` is ``cagr / |max_drawdown|``.
* ``max_drawdown_duration`` counts bars from a peak to the bar that first gets back
  to it (or to the last bar, if it never does).
* Trade figures use closed trades: ``win_rate`` (pnl > 0), ``profit_factor`` (gross
  profit over gross loss), ``expectancy`` (the mean trade return), ``best_trade``
  and ``worst_trade`` (trade returns).

A figure that does not exist (a Sharpe ratio of a flat curve, a profit factor
without losing trades) is ``None``, never NaN or infinity, so the result is JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Metrics", "compute_metrics", "drawdown", "max_drawdown_duration"]


@dataclass(slots=True)
class Metrics:
    total_return: float | None
    cagr: float | None
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    max_drawdown: float | None
    max_drawdown_duration: int
    win_rate: float | None
    profit_factor: float | None
    expectancy: float | None
    exposure: float | None
    trades: int
    best_trade: float | None
    worst_trade: float | None
    benchmark_return: float | None
    start_equity: float
    end_equity: float
    bars: int = 0
    """Bars the figures cover (after warm-up)."""
    open_trades: int = 0

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: _finite(v) for k, v in asdict(self).items()}


def _finite(value: object) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool | int):
        return int(value)
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def drawdown(equity: np.ndarray) -> np.ndarray:
    """``equity / running peak - 1``: 0 at a new high, negative below it."""
    if not len(equity):
        return np.zeros(0)
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, equity / peak - 1.0, 0.0)
    return dd


def max_drawdown_duration(equity: np.ndarray) -> int:
    """Longest run, in bars, from a peak to the first bar back at it (or to the end)."""
    n = len(equity)
    if n < 2:
        return 0
    at_peak = equity >= np.maximum.accumulate(equity)
    peaks = np.flatnonzero(at_peak)  # bar 0 is always a peak
    gaps = np.diff(peaks)
    longest = int(gaps.max()) if len(gaps) else 0
    if longest == 1:
        longest = 0  # consecutive highs: no drawdown in between
    if peaks[-1] != n - 1:
        longest = max(longest, n - 1 - int(peaks[-1]))
    return longest


def compute_metrics(
    equity: np.ndarray,
    trade_returns: Sequence[float],
    trade_pnls: Sequence[float],
    *,
    periods_per_year: float,
    exposure: float | None,
    benchmark_return: float | None,
    open_trades: int = 0,
) -> Metrics:
    """Figures of ``equity`` (one value per bar, the first being the starting capital).

    ``trade_returns``/``trade_pnls`` are those of the closed trades, in any order.
    """
    equity = np.asarray(equity, dtype=float)
    start = float(equity[0]) if len(equity) else 0.0
    end = float(equity[-1]) if len(equity) else 0.0
    bars = max(len(equity) - 1, 0)
    total = end / start - 1.0 if start > 0 else None
    cagr = vol = sharpe = sortino = calmar = None
    mdd = None
    if bars >= 1 and start > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            rets = equity[1:] / equity[:-1] - 1.0
        rets = np.where(np.isfinite(rets), rets, 0.0)  # 0 -> 0 after a total loss
        years = bars / periods_per_year
        growth = end / start
        cagr = growth ** (1.0 / years) - 1.0 if growth > 0 else -1.0
        mdd = float(drawdown(equity).min())
        if bars >= 2:
            sd = float(np.std(rets, ddof=1))
            mean = float(np.mean(rets))
            root = math.sqrt(periods_per_year)
            vol = sd * root
            sharpe = mean / sd * root if sd > 0 else None
            downside = math.sqrt(float(np.mean(np.minimum(rets, 0.0) ** 2)))
            sortino = mean / downside * root if downside > 0 else None
        calmar = cagr / -mdd if mdd < 0 else None
    closed = len(trade_returns)
    win_rate = profit_factor = expectancy = best = worst = None
    if closed:
        pnls = np.asarray(trade_pnls, dtype=float)
        r = np.asarray(trade_returns, dtype=float)
        win_rate = float(np.count_nonzero(pnls > 0)) / closed
        gross_win = float(pnls[pnls > 0].sum())
        gross_loss = float(-pnls[pnls < 0].sum())
        profit_factor = gross_win / gross_loss if gross_loss > 0 else None
        expectancy = float(r.mean())
        best = float(r.max())
        worst = float(r.min())
    return Metrics(
        total_return=total,
        cagr=cagr,
        volatility=vol,
        sharpe=sharpe,
        sortino=sortino,
        calmar=calmar,
        max_drawdown=mdd,
        max_drawdown_duration=max_drawdown_duration(equity),
        win_rate=win_rate,
        profit_factor=profit_factor,
        expectancy=expectancy,
        exposure=exposure,
        trades=closed,
        best_trade=best,
        worst_trade=worst,
        benchmark_return=benchmark_return,
        start_equity=start,
        end_equity=end,
        bars=bars,
        open_trades=open_trades,
    )
