"""Parameter search: grid or random over a strategy's ranges, ranked by one metric.

Each candidate is one :func:`run_backtest`. Candidates the params model refuses
(e.g. a fast average not shorter than the slow one) are skipped and counted, not
run. With an executor (the app passes ``ProcessPoolExecutor(max_workers=2)``) the
runs are spread over its workers in a few chunks, so the candles are pickled once
per chunk rather than once per run; everything sent is plain data (the strategy
by registry name or by class, params as dicts, candles as columns).

The grid is every combination of the ranges' values when there are at most
``max_runs``; a larger grid is sampled (seeded), as is ``method="random"``, which
draws ints from their grid and floats uniformly between their bounds. In both the
budget goes to valid candidates: invalid ones drawn are skipped and more drawn,
until ``max_runs`` valid ones are found or the space is exhausted.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from engines.backtest.engine import run_backtest
from engines.backtest.metrics import Metrics
from engines.backtest.results import BacktestConfig
from engines.market import Candle, Timeframe
from engines.strategies.base import ParamRange, Strategy

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "OptimizationRow",
    "OptimizationRows",
    "candidates",
    "optimize",
    "resolve_strategy",
]

METRICS: tuple[str, ...] = tuple(
    name for name in Metrics.__dataclass_fields__ if name not in ("start_equity", "open_trades")
)
"""Metrics a search can rank by."""

LOWER_IS_BETTER = frozenset({"volatility", "max_drawdown_duration"})
"""Ranked ascending; every other metric descending (``max_drawdown`` is negative, so
the shallowest drawdown ranks first)."""

_DRAWS_PER_RUN = 20
"""Random draws allowed per wanted run before giving up on finding new valid ones."""


@dataclass(frozen=True, slots=True)
class OptimizationRow:
    params: dict[str, Any]
    metrics: dict[str, float | int | None]
    score: float | None


class OptimizationRows(list[OptimizationRow]):
    """The rows, best first, with how the search went."""

    def __init__(
        self,
        rows: Sequence[OptimizationRow] = (),
        *,
        metric: str = "sharpe",
        skipped: int = 0,
        space_size: int = 0,
        sampled: bool = False,
    ) -> None:
        super().__init__(rows)
        self.metric = metric
        self.skipped = skipped
        """Candidates the params model refused."""
        self.space_size = space_size
        """Combinations in the grid (ints and the floats' grid points)."""
        self.sampled = sampled
        """Whether fewer than all grid points were tried."""


def resolve_strategy(strategy: str | type[Strategy]) -> type[Strategy]:
    """A Strategy class from itself or from its registry name."""
    if isinstance(strategy, str):
        try:
            from engines.strategies import registry
        except ImportError as exc:  # the registry is optional for the backtester
            raise ValueError(
                f"strategy {strategy!r} given by name, but the strategy registry is not "
                "available: pass the Strategy class"
            ) from exc
        return registry.get_strategy(strategy)
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        return strategy
    raise TypeError(f"expected a Strategy class or a registry name, got {strategy!r}")


def candidates(
    space: Sequence[ParamRange], method: str, max_runs: int, seed: int
) -> tuple[Iterator[dict[str, Any]], int, bool]:
    """Parameter dicts to try, in order; the grid's size; whether it is sampled."""
    grids = [r.grid() for r in space]
    size = math.prod(len(g) for g in grids) if grids else 1
    names = [r.name for r in space]
    if method == "grid" and size <= max_runs:
        combos = (dict(zip(names, values, strict=True)) for values in itertools.product(*grids))
        return combos, size, False
    rng = random.Random(seed)
    if method == "grid" or all(r.kind == "int" for r in space):
        draws = max_runs * _DRAWS_PER_RUN
        return _sample_grid(names, grids, size, rng, draws), size, size > max_runs
    return _sample_random(space, grids, rng, max_runs), size, True


def _sample_grid(
    names: list[str], grids: list[list[float]], size: int, rng: random.Random, draws: int
) -> Iterator[dict[str, Any]]:
    """Distinct grid points in a seeded random order (each point at most once).

    At most ``draws`` draws: a huge grid whose points the params model mostly refuses
    must not keep the search drawing for ever.
    """
    seen: set[int] = set()
    for _ in range(draws):
        if len(seen) >= size:
            return
        k = rng.randrange(size)
        if k in seen:
            continue
        seen.add(k)
        point: dict[str, Any] = {}
        for name, grid in zip(reversed(names), reversed(grids), strict=True):
            k, j = divmod(k, len(grid))
            point[name] = grid[j]
        yield {name: point[name] for name in names}


def _sample_random(
    space: Sequence[ParamRange], grids: list[list[float]], rng: random.Random, max_runs: int
) -> Iterator[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    for _ in range(max_runs * _DRAWS_PER_RUN):
        point = {
            r.name: rng.choice(g) if r.kind == "int" else round(rng.uniform(r.low, r.high), 10)
            for r, g in zip(space, grids, strict=True)
        }
        key = tuple(point.values())
        if key in seen:
            continue
        seen.add(key)
        yield point


def _score(metrics: Mapping[str, Any], metric: str) -> float | None:
    value = metrics.get(metric)
    return None if value is None else float(value)


def _rank_key(metric: str) -> Callable[[OptimizationRow], tuple[int, float]]:
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    return lambda row: (1, 0.0) if row.score is None else (0, sign * row.score)


# ---- running candidates (also inside worker processes) -------------------------------

Packed = dict[str, tuple[str, list[Any], list[Any], list[Any], list[Any], list[Any], list[Any]]]


def pack(data: Mapping[str, Sequence[Candle]]) -> Packed:
    """Candles as plain columns: pickles several times faster than Candle objects."""
    out: Packed = {}
    for symbol, series in data.items():
        tf = str(series[0].timeframe) if series else "1d"
        out[symbol] = (
            tf,
            [c.start for c in series],
            [c.open for c in series],
            [c.high for c in series],
            [c.low for c in series],
            [c.close for c in series],
            [c.volume for c in series],
        )
    return out


def unpack(packed: Packed) -> dict[str, list[Candle]]:
    out: dict[str, list[Candle]] = {}
    for symbol, (tf, starts, opens, highs, lows, closes, volumes) in packed.items():
        timeframe = Timeframe(tf)
        out[symbol] = [
            Candle(symbol, timeframe, s, o, h, lo, c, v)
            for s, o, h, lo, c, v in zip(starts, opens, highs, lows, closes, volumes, strict=True)
        ]
    return out


def _evaluate(
    cls: type[Strategy],
    params: dict[str, Any],
    data: Mapping[str, Sequence[Candle]],
    config: BacktestConfig,
    metric: str,
) -> OptimizationRow:
    result = run_backtest(lambda: cls(params), data, config)
    metrics = result.metrics.to_dict()
    return OptimizationRow(params=params, metrics=metrics, score=_score(metrics, metric))


def run_chunk(
    strategy: str | type[Strategy],
    combos: list[dict[str, Any]],
    packed: Packed,
    config: BacktestConfig,
    metric: str,
) -> list[OptimizationRow]:
    """Worker entry point: run ``combos`` on the unpacked data. Module-level, picklable."""
    cls = resolve_strategy(strategy)
    data = unpack(packed)
    return [_evaluate(cls, params, data, config, metric) for params in combos]


def optimize(
    strategy: str | type[Strategy],
    data: Mapping[str, Sequence[Candle]],
    config: BacktestConfig | None = None,
    *,
    params_space: list[ParamRange] | None = None,
    fixed: dict[str, Any] | None = None,
    method: str = "grid",
    metric: str = "sharpe",
    max_runs: int = 200,
    seed: int = 0,
    executor: Executor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> OptimizationRows:
    """Backtest candidate params of ``strategy`` and rank them by ``metric``, best first.

    ``params_space`` defaults to the params model's ranges (``Params.space()``);
    ``fixed`` params are held constant and left out of the search. Rows whose metric
    does not exist (``None``, e.g. no Sharpe without trades) rank last.
    ``progress(done_runs, total_runs)`` is called as runs finish.
    """
    config = config or BacktestConfig()
    cls = resolve_strategy(strategy)
    if method not in ("grid", "random"):
        raise ValueError(f"method must be 'grid' or 'random', got {method!r}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of: {', '.join(METRICS)}")
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise ValueError(f"max_runs must be an int >= 1, got {max_runs!r}")
    fixed = dict(fixed or {})
    space = [r for r in (params_space or cls.Params.space()) if r.name not in fixed]
    unknown = [r.name for r in space if r.name not in cls.Params.model_fields]
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {', '.join(unknown)}")
    draws, size, sampled = candidates(space, method, max_runs, seed)
    chosen: list[dict[str, Any]] = []
    skipped = 0
    for combo in draws:
        params = {**fixed, **combo}
        try:
            cls.Params.model_validate(params)
        except (ValidationError, ValueError):
            skipped += 1
            continue
        chosen.append(params)
        if len(chosen) >= max_runs:
            break
    rows = _run_all(strategy, cls, chosen, data, config, metric, executor, progress)
    rows.sort(key=_rank_key(metric))
    return OptimizationRows(rows, metric=metric, skipped=skipped, space_size=size, sampled=sampled)


def _run_all(
    strategy: str | type[Strategy],
    cls: type[Strategy],
    chosen: list[dict[str, Any]],
    data: Mapping[str, Sequence[Candle]],
    config: BacktestConfig,
    metric: str,
    executor: Executor | None,
    progress: Callable[[int, int], None] | None,
) -> list[OptimizationRow]:
    total = len(chosen)
    rows: list[OptimizationRow] = []
    if executor is None:
        for params in chosen:
            rows.append(_evaluate(cls, params, data, config, metric))
            if progress is not None:
                progress(len(rows), total)
        return rows
    if not total:
        return rows
    workers = max(1, int(getattr(executor, "_max_workers", 2) or 2))
    size = max(1, math.ceil(total / (workers * 4)))
    packed = pack(data)
    ref = strategy if isinstance(strategy, str) else cls
    offsets = {
        executor.submit(run_chunk, ref, chosen[i : i + size], packed, config, metric): i
        for i in range(0, total, size)
    }
    # Chunks finish in any order; slot them back so ties rank the same as in-process.
    slots: list[OptimizationRow | None] = [None] * total
    done = 0
    for future in as_completed(offsets):
        chunk = future.result()
        start = offsets[future]
        slots[start : start + len(chunk)] = chunk
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    return [row for row in slots if row is not None]
