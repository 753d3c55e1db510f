"""Parameter search and walk-forward: known optimum, reproducibility, process pool, folds.

The strategies live at module level so a ProcessPoolExecutor can unpickle them by name.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field, model_validator

from bench.backtest import synthetic_krx
from engines.backtest import BacktestConfig, optimize, walk_forward
from engines.backtest import walkforward as wf
from engines.backtest.walkforward import fold_bounds
from engines.costs import CostModel
from engines.market import Candle, Timeframe
from engines.strategies.base import Context, ParamRange, Signal, Strategy, StrategyParams

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class WindowParams(StrategyParams):
    buy_at: int = Field(0, ge=0, le=10)
    sell_at: int = Field(5, ge=1, le=20)

    @model_validator(mode="after")
    def _sell_after_buy(self) -> WindowParams:
        if self.sell_at <= self.buy_at:
            raise ValueError("sell_at must come after buy_at")
        return self


class BuyThenSell(Strategy):
    """Buys everything at bar ``buy_at``, sells at bar ``sell_at``."""

    name = "test_buy_then_sell"
    Params = WindowParams

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        if ctx.bar_index == self.params.buy_at:
            return ctx.buy()
        if ctx.bar_index == self.params.sell_at:
            return ctx.sell()
        return None


def _valley_and_peak() -> dict[str, list[Candle]]:
    """Opens of 10,000 but a 5,000 dip on bar 4 and a 20,000 spike on bar 13.

    Orders fill at the next bar's open, so the best trade buys on bar 3 and sells on
    bar 12: ×4, where every other pair makes at most ×2.
    """
    candles = []
    for i in range(30):
        o = {4: 5_000, 13: 20_000}.get(i, 10_000)
        candles.append(
            Candle("A", Timeframe.D1, T0 + timedelta(days=i), o, max(o, 10_000), min(o, 10_000),
                   10_000, 1)
        )  # fmt: skip
    return {"A": candles}


DATA = _valley_and_peak()
CONFIG = BacktestConfig(costs=CostModel(commission_rate=0.0, sell_tax_rate=0.0))


def _rows(rows) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(r.params, r.metrics) for r in rows]


def test_grid_finds_the_known_best_and_skips_invalid_pairs() -> None:
    rows = optimize(BuyThenSell, DATA, CONFIG, metric="total_return", max_runs=500)
    assert rows[0].params == {"buy_at": 3, "sell_at": 12}
    assert rows[0].score == pytest.approx(3.0)  # ×4
    # 11 × 20 = 220 pairs; sell_at <= buy_at in 0 + 1 + ... + 10 = 55 of them
    assert (rows.space_size, rows.skipped, len(rows), rows.sampled) == (220, 55, 165, False)
    scores = [r.score for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(r.params["sell_at"] > r.params["buy_at"] for r in rows)


def test_lower_is_better_metrics_rank_ascending() -> None:
    rows = optimize(BuyThenSell, DATA, CONFIG, metric="volatility", max_runs=500)
    scores = [r.score for r in rows if r.score is not None]
    assert scores == sorted(scores)


def test_fixed_params_are_held_and_left_out_of_the_search() -> None:
    rows = optimize(BuyThenSell, DATA, CONFIG, fixed={"buy_at": 3}, metric="total_return")
    assert len(rows) == 17  # sell_at 4..20
    assert rows[0].params == {"buy_at": 3, "sell_at": 12}


def test_a_grid_larger_than_max_runs_is_sampled_without_repeats() -> None:
    rows = optimize(BuyThenSell, DATA, CONFIG, max_runs=40, seed=1)
    assert rows.sampled and len(rows) == 40
    assert len({tuple(r.params.values()) for r in rows}) == 40


def test_random_search_is_reproducible_with_a_seed() -> None:
    space = [ParamRange("buy_at", "int", 0, 10, 1), ParamRange("sell_at", "int", 1, 20, 1)]
    kwargs: dict[str, Any] = {"params_space": space, "method": "random", "max_runs": 25}
    a = optimize(BuyThenSell, DATA, CONFIG, seed=7, **kwargs)
    b = optimize(BuyThenSell, DATA, CONFIG, seed=7, **kwargs)
    c = optimize(BuyThenSell, DATA, CONFIG, seed=8, **kwargs)
    assert _rows(a) == _rows(b)
    assert a.skipped == b.skipped
    assert {tuple(r.params.values()) for r in a} != {tuple(r.params.values()) for r in c}
    assert len(a) == 25


def test_a_process_pool_gives_the_in_process_results() -> None:
    progress: list[tuple[int, int]] = []
    with ProcessPoolExecutor(max_workers=2) as pool:
        pooled = optimize(
            BuyThenSell,
            DATA,
            CONFIG,
            metric="total_return",
            max_runs=500,
            executor=pool,
            progress=lambda d, t: progress.append((d, t)),
        )
    local = optimize(BuyThenSell, DATA, CONFIG, metric="total_return", max_runs=500)
    assert _rows(pooled) == _rows(local)
    assert progress[-1] == (165, 165) and len(progress) > 1


@pytest.mark.parametrize("max_runs", [2, 100])  # sampled, then the whole grid
def test_a_space_with_no_valid_candidate_returns_nothing_and_counts_them(max_runs: int) -> None:
    space = [ParamRange("sell_at", "int", 1, 10, 1)]
    rows = optimize(
        BuyThenSell, DATA, CONFIG, params_space=space, fixed={"buy_at": 10}, max_runs=max_runs
    )
    assert list(rows) == []
    assert 0 < rows.skipped <= 10 and rows.space_size == 10
    if max_runs == 100:
        assert rows.skipped == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "luck"}, "unknown metric"),
        ({"method": "annealing"}, "method must be"),
        ({"max_runs": 0}, "max_runs"),
        ({"params_space": [ParamRange("nope", "int", 1, 2, 1)]}, "no parameter"),
    ],
)
def test_bad_search_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        optimize(BuyThenSell, DATA, CONFIG, **kwargs)


def test_an_unknown_strategy_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError):
        optimize("no_such_strategy_anywhere", DATA, CONFIG)
    with pytest.raises(TypeError):
        optimize(42, DATA, CONFIG)  # type: ignore[arg-type]


# ---- walk-forward ----------------------------------------------------------------------


@given(
    n=st.integers(min_value=40, max_value=5_000),
    folds=st.integers(min_value=1, max_value=8),
    fraction=st.floats(min_value=0.3, max_value=0.9),
)
def test_fold_bounds_tile_the_test_ranges_and_never_overlap_their_training(
    n: int, folds: int, fraction: float
) -> None:
    try:
        bounds = fold_bounds(n, folds, fraction)
    except ValueError:
        return  # too few bars for that many folds: refused, fine
    assert len(bounds) == folds
    assert bounds[0][0] == 0 and bounds[-1][3] == n
    for k, (train_lo, train_hi, test_lo, test_hi) in enumerate(bounds):
        assert 0 <= train_lo < train_hi <= test_lo < test_hi <= n
        if k:
            assert test_lo == bounds[k - 1][3]  # contiguous, no overlap between tests
            assert train_lo >= bounds[k - 1][0]  # windows roll forward


def test_too_few_bars_for_the_folds_is_refused() -> None:
    with pytest.raises(ValueError, match="too few"):
        fold_bounds(10, 8, 0.7)


class CrossParams(StrategyParams):
    fast: int = Field(3, ge=3, le=9, json_schema_extra={"step": 3})
    slow: int = Field(10, ge=10, le=30, json_schema_extra={"step": 10})

    @model_validator(mode="after")
    def _fast_shorter(self) -> CrossParams:
        if self.fast >= self.slow:
            raise ValueError("fast must be shorter than slow")
        return self


class SmaCross(Strategy):
    name = "test_wf_sma_cross"
    Params = CrossParams

    def setup(self, ctx: Context) -> None:
        self.fast = ctx.indicator("sma", window=self.params.fast)
        self.slow = ctx.indicator("sma", window=self.params.slow)

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        f, s = self.fast, self.slow
        if s.prev is None:
            return None
        if f.prev < s.prev and f.value > s.value:
            return ctx.buy()
        if f.prev > s.prev and f.value < s.value:
            return ctx.sell()
        return None


def test_walk_forward_never_trains_on_its_test_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {s: synthetic_krx(s, 500, seed=11) for s in ("900001", "900002")}
    trained: list[list[datetime]] = []
    tested: list[tuple[list[datetime], int]] = []
    real_optimize, real_run = wf.optimize, wf.run_backtest

    def spy_optimize(strategy, train, config, **kw):
        trained.append(sorted(c.start for series in train.values() for c in series))
        return real_optimize(strategy, train, config, **kw)

    def spy_run(factory, test, config, **kw):
        result = real_run(factory, test, config, **kw)
        times = sorted({c.start for series in test.values() for c in series})
        tested.append((times, result.warmup_bars))
        return result

    monkeypatch.setattr(wf, "optimize", spy_optimize)
    monkeypatch.setattr(wf, "run_backtest", spy_run)
    result = walk_forward(SmaCross, data, BacktestConfig(), folds=3, train_fraction=0.6)
    assert len(result.folds) == len(trained) == len(tested) == 3
    for fold, train_times, (test_times, warmup) in zip(result.folds, trained, tested, strict=True):
        assert fold.params is not None and fold.out_of_sample is not None
        assert fold.train_end <= fold.test_start
        assert train_times[0] >= fold.train_start and train_times[-1] < fold.train_end
        # Only the warm-up bars of a test run come from before its range; none trades.
        assert test_times[warmup - 1] < fold.test_start <= test_times[warmup]
        assert fold.test_end is None or test_times[-1] < fold.test_end

    # Every out-of-sample trade opens and closes inside one fold's test range.
    for t in result.trades:
        (home,) = [
            f
            for f in result.folds
            if f.test_start <= t.entry_time and (f.test_end is None or t.entry_time < f.test_end)
        ]
        assert t.exit_time is not None
        assert home.test_end is None or t.exit_time < home.test_end
    for a, b in zip(result.folds, result.folds[1:], strict=False):
        assert a.test_end == b.test_start
    assert result.trades and all(t.entry_time >= result.folds[0].test_start for t in result.trades)
    times = [t for t, _ in result.equity_curve]
    assert times == sorted(set(times))
    assert times[0] < result.folds[0].test_start <= times[1]
    json.dumps(result.to_dict(), allow_nan=False)
    assert result.metrics["bars"] == len(times) - 1


def test_walk_forward_in_a_process_pool_matches_in_process() -> None:
    data = {"900003": synthetic_krx("900003", 400, seed=5)}
    local = walk_forward(SmaCross, data, folds=2)
    with ProcessPoolExecutor(max_workers=2) as pool:
        pooled = walk_forward(SmaCross, data, folds=2, executor=pool)
    assert pooled.to_dict() == local.to_dict()
