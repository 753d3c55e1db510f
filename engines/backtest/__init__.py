"""The event-driven backtester: run the live Strategy classes over stored candles.

``run_backtest`` simulates one strategy on one symbol or a portfolio sharing one
cash account; ``optimize`` searches parameter ranges (grid or random, in a process
pool when given one); ``walk_forward`` optimises in sample and tests out of sample,
fold by fold. See :mod:`engines.backtest.engine` for the simulation rules and
:mod:`engines.backtest.metrics` for what each figure means.
"""

from engines.backtest.data import periods_per_year
from engines.backtest.engine import run_backtest
from engines.backtest.metrics import Metrics, compute_metrics
from engines.backtest.optimize import OptimizationRow, OptimizationRows, optimize
from engines.backtest.results import (
    SIZING_MODES,
    BacktestCancelled,
    BacktestConfig,
    BacktestResult,
    Trade,
)
from engines.backtest.walkforward import WalkForwardFold, WalkForwardResult, walk_forward

__all__ = [
    "SIZING_MODES",
    "BacktestCancelled",
    "BacktestConfig",
    "BacktestResult",
    "Metrics",
    "OptimizationRow",
    "OptimizationRows",
    "Trade",
    "WalkForwardFold",
    "WalkForwardResult",
    "compute_metrics",
    "optimize",
    "periods_per_year",
    "run_backtest",
    "walk_forward",
]
