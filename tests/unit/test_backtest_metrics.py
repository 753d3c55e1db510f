"""Backtest metrics against hand figures and an independent pandas computation."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engines.backtest import BacktestConfig, compute_metrics, periods_per_year, run_backtest
from engines.backtest.metrics import drawdown, max_drawdown_duration
from engines.costs import CostModel
from engines.market import Candle, Timeframe
from engines.strategies.base import Context, Strategy

CURVE = np.array([100.0, 110, 99, 105, 108, 121, 120, 90, 95])


def test_drawdown_depth_and_duration_on_a_known_curve() -> None:
    dd = drawdown(CURVE)
    assert dd[2] == pytest.approx(99 / 110 - 1)
    assert dd.min() == pytest.approx(90 / 121 - 1)
    assert dd[5] == 0.0
    # Peak at bar 1 (110), back at it on bar 5 (121): 4 bars. From bar 5 on the curve
    # stays under 121 to the end (bar 8): 3 bars. The longest is 4.
    assert max_drawdown_duration(CURVE) == 4
    m = compute_metrics(CURVE, [], [], periods_per_year=252, exposure=None, benchmark_return=None)
    assert m.max_drawdown == pytest.approx(90 / 121 - 1)
    assert m.max_drawdown_duration == 4


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        ([100, 101, 102], 0),  # only new highs
        ([100, 90], 1),  # under water to the end
        ([100, 90, 100], 2),  # back at the peak (equal counts) two bars later
        ([100, 90, 80, 70, 60, 120, 110], 5),
        ([100], 0),
    ],
)
def test_drawdown_duration_edge_cases(curve: list[float], expected: int) -> None:
    assert max_drawdown_duration(np.array(curve, dtype=float)) == expected


def test_return_figures_against_pandas() -> None:
    rng = np.random.default_rng(7)
    curve = 1_000_000 * np.cumprod(1 + rng.normal(0.0005, 0.01, 600))
    curve = np.concatenate([[1_000_000.0], curve])
    m = compute_metrics(curve, [], [], periods_per_year=252, exposure=0.5, benchmark_return=0.1)
    r = pd.Series(curve).pct_change().dropna()
    assert m.total_return == pytest.approx(curve[-1] / curve[0] - 1)
    assert m.volatility == pytest.approx(r.std() * math.sqrt(252))
    assert m.sharpe == pytest.approx(r.mean() / r.std() * math.sqrt(252))
    downside = math.sqrt((r.clip(upper=0) ** 2).mean())
    assert m.sortino == pytest.approx(r.mean() / downside * math.sqrt(252))
    years = 600 / 252
    assert m.cagr == pytest.approx((curve[-1] / curve[0]) ** (1 / years) - 1)
    peak = pd.Series(curve).cummax()
    assert m.max_drawdown == pytest.approx((pd.Series(curve) / peak - 1).min())
    assert m.calmar == pytest.approx(m.cagr / abs(m.max_drawdown))
    assert (m.exposure, m.benchmark_return, m.bars) == (0.5, 0.1, 600)


def test_cagr_of_a_doubling_over_two_years() -> None:
    curve = np.linspace(100, 200, 505)  # 504 daily returns = 2 years of 252
    m = compute_metrics(curve, [], [], periods_per_year=252, exposure=None, benchmark_return=None)
    assert m.cagr == pytest.approx(math.sqrt(2) - 1)


def test_trade_figures_by_hand() -> None:
    returns = [0.10, -0.05, 0.02, -0.01]
    pnls = [1_000.0, -500.0, 200.0, -100.0]
    m = compute_metrics(
        np.array([1.0, 1.0]), returns, pnls, periods_per_year=252, exposure=0, benchmark_return=0
    )
    assert m.trades == 4
    assert m.win_rate == 0.5
    assert m.profit_factor == pytest.approx(1_200 / 600)
    assert m.expectancy == pytest.approx(0.015)
    assert (m.best_trade, m.worst_trade) == (0.10, -0.05)


def test_figures_that_do_not_exist_are_none_not_nan() -> None:
    flat = np.full(10, 100.0)
    m = compute_metrics(flat, [0.1], [10.0], periods_per_year=252, exposure=0, benchmark_return=0)
    assert m.sharpe is None and m.sortino is None and m.calmar is None
    assert m.profit_factor is None  # no losing trade
    assert m.volatility == 0.0 and m.max_drawdown == 0.0
    payload = m.to_dict()
    json.dumps(payload, allow_nan=False)
    assert payload["sharpe"] is None


def test_a_total_loss_has_finite_figures() -> None:
    m = compute_metrics(
        np.array([100.0, 50.0, 0.0, 0.0]),
        [],
        [],
        periods_per_year=252,
        exposure=1,
        benchmark_return=0,
    )
    assert m.total_return == -1.0 and m.cagr == -1.0 and m.max_drawdown == -1.0
    json.dumps(m.to_dict(), allow_nan=False)


def test_periods_per_year_by_timeframe() -> None:
    assert periods_per_year("1d") == 252
    assert periods_per_year("1w") == 52
    assert periods_per_year("1m") == 390 * 252
    assert periods_per_year("5m") == 78 * 252
    assert periods_per_year("60m") == 7 * 252  # 09:00 .. 15:30: seven buckets, the last partial


class BuyAndHold(Strategy):
    name = "test_buy_and_hold"

    def on_candle(self, ctx: Context, candle: Candle):
        return ctx.buy() if ctx.bar_index == 0 else None


def test_backtest_metrics_match_the_equity_curve() -> None:
    rng = np.random.default_rng(3)
    closes = np.round(10_000 * np.cumprod(1 + rng.normal(0, 0.02, 300))).astype(int)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    candles = [
        Candle("A", Timeframe.D1, t0 + timedelta(days=i), int(c), int(c), int(c), int(c), 1)
        for i, c in enumerate(closes)
    ]
    result = run_backtest(BuyAndHold, {"A": candles}, BacktestConfig(costs=CostModel()))
    values = np.array([v for _, v in result.equity_curve])
    independent = compute_metrics(
        values, [], [], periods_per_year=252, exposure=None, benchmark_return=None
    )
    assert result.metrics.sharpe == pytest.approx(independent.sharpe)
    assert result.metrics.max_drawdown == pytest.approx(independent.max_drawdown)
    # Bought at bar 1's open, held to the end: in the market at all 299 measured closes.
    assert result.metrics.exposure == 1.0
    assert result.metrics.benchmark_return == pytest.approx(closes[-1] / closes[0] - 1)
    (trade,) = result.trades
    qty = trade.qty
    cash = 10_000_000 - qty * int(closes[1]) - CostModel().commission(qty * int(closes[1]))
    assert result.final_equity == cash + qty * int(closes[-1])
    assert values[-1] == result.final_equity
    dd = [v for _, v in result.drawdown_curve]
    assert min(dd) == pytest.approx(result.metrics.max_drawdown)
