"""Walk-forward analysis: optimise in sample, then trade the winner on bars it never saw.

An optimiser always finds parameters that fit the past; whether they fit anything
else shows only on data left out of the search. The calendar (every bar time of
every symbol) is cut into ``folds`` rolling windows. In each, the first
``train_fraction`` is the training range, searched with :func:`optimize`; the rest
is the test range, on which the best parameters are backtested with fresh cash.
Test ranges follow each other without gaps or overlap and end at the last bar; a
fold's test range never touches its own training range (it may lie in a *later*
fold's training range: that data is in the past by then).

A test run starts ``warmup`` bars before its range so the indicators are ready on
its first bar; those bars are warm-up, which the backtester leaves out of trading
and metrics. The stitched out-of-sample curve chains the folds' returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from engines.backtest.data import checked_series, periods_per_year, slice_by_time
from engines.backtest.engine import run_backtest
from engines.backtest.metrics import compute_metrics
from engines.backtest.optimize import optimize, resolve_strategy
from engines.backtest.results import BacktestConfig, Trade
from engines.market import Candle
from engines.strategies.base import ParamRange, Strategy, StrategyHost

__all__ = ["WalkForwardFold", "WalkForwardResult", "fold_bounds", "walk_forward"]

MIN_TEST_BARS = 2


@dataclass(slots=True)
class WalkForwardFold:
    """One fold. Ends are exclusive; ``test_end`` is ``None`` for the last fold (to the end)."""

    index: int
    train_start: datetime
    train_end: datetime
    test_start: datetime
    test_end: datetime | None
    params: dict[str, Any] | None
    in_sample: dict[str, float | int | None] | None
    out_of_sample: dict[str, float | int | None] | None
    runs: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat() if self.test_end else None,
            "params": self.params,
            "in_sample": self.in_sample,
            "out_of_sample": self.out_of_sample,
            "runs": self.runs,
            "skipped": self.skipped,
        }


@dataclass(slots=True)
class WalkForwardResult:
    folds: list[WalkForwardFold]
    metrics: dict[str, float | int | None]
    """Of the stitched out-of-sample curve and trades."""
    equity_curve: list[tuple[datetime, float]] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": [f.to_dict() for f in self.folds],
            "metrics": self.metrics,
            "equity_curve": [
                [t.isoformat(), v if math.isfinite(v) else None] for t, v in self.equity_curve
            ],
            "trades": [t.to_dict() for t in self.trades],
        }


def fold_bounds(n_bars: int, folds: int, train_fraction: float) -> list[tuple[int, int, int, int]]:
    """``(train_lo, train_hi, test_lo, test_hi)`` bar indices (hi exclusive) of each fold.

    Window length ``W = n / (1 + (folds - 1)(1 - f))`` and step ``(1 - f) W``, so the
    test ranges tile ``[f W, n)`` exactly.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds must be an int >= 1, got {folds!r}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be between 0 and 1, got {train_fraction!r}")
    window = n_bars / (1 + (folds - 1) * (1 - train_fraction))
    step = (1 - train_fraction) * window
    train_len = train_fraction * window
    out = []
    for i in range(folds):
        train_lo = int(round(i * step))
        test_lo = int(round(i * step + train_len))
        test_hi = n_bars if i == folds - 1 else int(round((i + 1) * step + train_len))
        if test_hi - test_lo < MIN_TEST_BARS or test_lo - train_lo < MIN_TEST_BARS:
            raise ValueError(
                f"{n_bars} bars are too few for {folds} folds at train fraction "
                f"{train_fraction}: give more data or fewer folds"
            )
        out.append((train_lo, test_lo, test_lo, test_hi))
    return out


def walk_forward(
    strategy_cls: str | type[Strategy],
    data: Mapping[str, Sequence[Candle]],
    config: BacktestConfig | None = None,
    *,
    folds: int = 4,
    train_fraction: float = 0.7,
    metric: str = "sharpe",
    method: str = "grid",
    max_runs: int = 100,
    executor: Executor | None = None,
    params_space: list[ParamRange] | None = None,
    fixed: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> WalkForwardResult:
    """Optimise on each fold's training range, test the best params on its test range.

    ``progress(done_folds, folds)`` is called after each fold.
    """
    config = config or BacktestConfig()
    cls = resolve_strategy(strategy_cls)
    series = checked_series(data)
    times = sorted({c.start for candles in series.values() for c in candles})
    bounds = fold_bounds(len(times), folds, train_fraction)
    ppy = config.periods_per_year or periods_per_year(next(iter(series.values()))[0].timeframe)
    results: list[WalkForwardFold] = []
    stitched: list[float] = [float(config.cash)]
    stitched_times: list[datetime] = []
    returns: list[float] = []
    pnls: list[float] = []
    trades: list[Trade] = []
    exposure_bars = 0.0
    bench_growth = 1.0
    for k, (train_lo, train_hi, test_lo, test_hi) in enumerate(bounds):
        test_end = times[test_hi] if test_hi < len(times) else None
        fold = WalkForwardFold(
            index=k,
            train_start=times[train_lo],
            train_end=times[train_hi],
            test_start=times[test_lo],
            test_end=test_end,
            params=None,
            in_sample=None,
            out_of_sample=None,
        )
        results.append(fold)
        train = slice_by_time(series, times[train_lo], times[train_hi])
        rows = optimize(
            strategy_cls,
            train,
            config,
            params_space=params_space,
            fixed=fixed,
            method=method,
            metric=metric,
            max_runs=max_runs,
            seed=seed + k,
            executor=executor,
        )
        fold.runs = len(rows)
        fold.skipped = rows.skipped
        if rows:
            best = rows[0]
            fold.params = best.params
            fold.in_sample = best.metrics
            warmup = StrategyHost(cls(best.params), "_").warmup
            test = slice_by_time(series, times[test_lo], test_end, lead_bars=warmup)
            params = best.params
            result = run_backtest(lambda p=params: cls(p), test, config)
            fold.out_of_sample = result.metrics.to_dict()
            curve = result.equity_values
            if stitched_times and result.equity_curve:
                first = result.equity_curve[0][0]
                if first < stitched_times[-1]:
                    raise RuntimeError("internal error: walk-forward test ranges overlap")
            scale = stitched[-1] / curve[0]
            stitched.extend((curve[1:] * scale).tolist())
            if not stitched_times:
                stitched_times.append(result.equity_curve[0][0])
            stitched_times.extend(t for t, _ in result.equity_curve[1:])
            for t in result.trades:
                if t.exit_bar is None:
                    continue
                trades.append(t)
                returns.append(t.return_pct)
                pnls.append(t.pnl * scale)
            bars = len(curve) - 1
            if result.metrics.exposure is not None:
                exposure_bars += result.metrics.exposure * bars
            if result.metrics.benchmark_return is not None:
                bench_growth *= 1 + result.metrics.benchmark_return
        if progress is not None:
            progress(k + 1, len(bounds))
    if not stitched_times:
        stitched_times = [times[bounds[0][2]]]
    total_bars = len(stitched) - 1
    metrics = compute_metrics(
        np.asarray(stitched),
        returns,
        pnls,
        periods_per_year=ppy,
        exposure=exposure_bars / total_bars if total_bars else None,
        benchmark_return=bench_growth - 1 if total_bars else None,
    )
    return WalkForwardResult(
        folds=results,
        metrics=metrics.to_dict(),
        equity_curve=list(zip(stitched_times, stitched, strict=True)),
        trades=trades,
    )
