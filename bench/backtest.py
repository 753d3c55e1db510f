"""Our backtester against backtesting.py: ``python -m bench backtest [--quick]``.

The acceptance target: the SMA(10)/SMA(20) cross over 100 symbols × 2,500 daily
bars runs at least 5× faster than backtesting.py on one core, with the same trades.

Workload (seeded): synthetic KRX daily series (:func:`synthetic_krx`), whole-won
prices on the tick grid within the ±30% daily limits. Each symbol is backtested
on its own with 10,000,000 won, as backtesting.py does it (one ``Backtest`` per
symbol), by both engines:

* backtesting.py 0.6: ``if crossover(fast, slow): self.buy()`` /
  ``elif crossover(slow, fast): self.position.close()``, ``commission=0.00015``;
* ours: the same rule as a :class:`Strategy` (indicator handles, ``prev``/``value``),
  ``sizing="fraction_of_available"`` (backtesting.py's ``buy()`` sizing) and a
  float commission of the same rate (``whole_won=False``, no sell tax), which is
  backtesting.py's arithmetic.

Timed: ``Backtest(df, ...).run()`` against ``run_backtest(...)``, each over all
symbols, after a ``gc.collect()``; building the DataFrames and the candles is not
timed on either side. ``trades_equal`` compares every closed trade (entry and exit
bar, entry and exit price, size) and ``final_equity_equal`` the final equity to
the cent, symbol by symbol. ``portfolio_seconds`` is one extra run of ours with all
symbols sharing one account (the merged-timeline path; not compared).
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import platform
import random
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from backtesting import Backtest
from backtesting import Strategy as BtStrategy
from backtesting.lib import crossover
from backtesting.test import SMA

from engines.backtest import BacktestConfig, BacktestResult, run_backtest
from engines.costs import CostModel
from engines.market import Candle, Direction, Timeframe, price_limits, round_to_tick
from engines.strategies.base import Context, Signal, Strategy, StrategyParams

log = logging.getLogger("bench.backtest")

SEED = 20240611
CASH = 10_000_000
COMMISSION = 0.00015
GOAL_SPEEDUP = 5


@dataclass(frozen=True)
class Size:
    symbols: int
    bars: int


FULL = Size(symbols=100, bars=2_500)
QUICK = Size(symbols=5, bars=500)


# ---- data --------------------------------------------------------------------------------


def synthetic_krx(symbol: str, bars: int, seed: int) -> list[Candle]:
    """A deterministic KRX-like daily series: whole won, on the tick grid, inside the limits.

    Log-normal close-to-close moves (daily σ 2.2%, a slow drift that changes sign
    now and then, so both trends and ranges occur), a small overnight gap, and
    highs/lows beyond the body. Weekdays only; a daily candle starts 09:00 KST.
    """
    rng = random.Random(f"{seed}:{symbol}")
    price = round_to_tick(int(math.exp(rng.uniform(math.log(2_000), math.log(300_000)))))
    day = datetime(2014, 1, 6, 0, 0, tzinfo=UTC)  # Monday 09:00 KST
    drift = 0.0
    out: list[Candle] = []
    while len(out) < bars:
        if day.weekday() < 5:
            lower, upper = price_limits(price)
            if rng.random() < 0.02:
                drift = rng.gauss(0, 0.002)

            def snap(x: float, direction: Direction, lo: int = lower, hi: int = upper) -> int:
                return min(max(round_to_tick(max(int(x), 1), direction), lo), hi)

            open_ = snap(price * math.exp(rng.gauss(0, 0.006)), Direction.DOWN)
            close = snap(open_ * math.exp(rng.gauss(drift, 0.022)), Direction.DOWN)
            high = snap(max(open_, close) * math.exp(abs(rng.gauss(0, 0.008))), Direction.UP)
            low = snap(min(open_, close) * math.exp(-abs(rng.gauss(0, 0.008))), Direction.DOWN)
            high = max(high, open_, close)
            low = min(low, open_, close)
            volume = int(rng.lognormvariate(11, 0.6))
            out.append(Candle(symbol, Timeframe.D1, day, open_, high, low, close, volume))
            price = close
        day += timedelta(days=1)
    return out


def to_frame(candles: list[Candle]) -> pd.DataFrame:
    """backtesting.py's input: OHLCV floats (exact for whole won) on a naive date index."""
    return pd.DataFrame(
        {
            "Open": [float(c.open) for c in candles],
            "High": [float(c.high) for c in candles],
            "Low": [float(c.low) for c in candles],
            "Close": [float(c.close) for c in candles],
            "Volume": [float(c.volume) for c in candles],
        },
        index=pd.DatetimeIndex([c.start.replace(tzinfo=None) for c in candles]),
    )


# ---- the strategy, both ways ---------------------------------------------------------


class SmaCrossParams(StrategyParams):
    fast: int = 10
    slow: int = 20


class SmaCross(Strategy):
    """Long-only golden/dead cross of two simple moving averages."""

    name = "bench_sma_cross"
    Params = SmaCrossParams

    def setup(self, ctx: Context) -> None:
        p = self.params
        self.fast = ctx.indicator("sma", window=p.fast)
        self.slow = ctx.indicator("sma", window=p.slow)

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        fast, slow = self.fast, self.slow
        if slow.prev is None:
            return None
        if fast.prev < slow.prev and fast.value > slow.value:
            return ctx.buy()
        if fast.prev > slow.prev and fast.value < slow.value:
            return ctx.sell()
        return None


class BtSmaCross(BtStrategy):
    """The same rule in backtesting.py (its README example, long only)."""

    n1 = 10
    n2 = 20

    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, self.n1)
        self.slow = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.fast, self.slow):
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()


PARITY_CONFIG = BacktestConfig(
    cash=CASH,
    costs=CostModel(commission_rate=COMMISSION, sell_tax_rate=0.0, whole_won=False),
    sizing="fraction_of_available",
)

TradeKey = tuple[int, int, float, float, int]


def our_trades(result: BacktestResult) -> list[TradeKey]:
    """Closed trades as (entry bar, exit bar, entry price, exit price, size), in entry order."""
    return sorted(
        (t.entry_bar, t.exit_bar, float(t.entry_price), float(t.exit_price), t.qty)
        for t in result.trades
        if t.exit_bar is not None and t.exit_price is not None
    )


def bt_trades(stats: pd.Series) -> list[TradeKey]:
    df = stats["_trades"]
    return sorted(
        (int(a), int(b), float(c), float(d), int(e))
        for a, b, c, d, e in zip(
            df["EntryBar"],
            df["ExitBar"],
            df["EntryPrice"],
            df["ExitPrice"],
            df["Size"],
            strict=True,
        )
    )


def run_bt(frame: pd.DataFrame, cash: float = CASH, commission: float = COMMISSION) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "trades remain open at the end", by design
        return Backtest(frame, BtSmaCross, cash=cash, commission=commission).run()


# ---- the benchmark -------------------------------------------------------------------


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Generate, run both engines, compare; the JSON the runner prints."""
    parser = argparse.ArgumentParser(prog="python -m bench backtest")
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    args = parser.parse_args(argv or [])
    size = QUICK if args.quick else FULL

    started = time.perf_counter()
    symbols = [f"{100_000 + i:06d}" for i in range(size.symbols)]
    data = {s: synthetic_krx(s, size.bars, SEED) for s in symbols}
    frames = {s: to_frame(data[s]) for s in symbols}
    generate_s = time.perf_counter() - started
    log.info("generated %d symbols x %d bars in %.1fs", size.symbols, size.bars, generate_s)

    gc.collect()
    t0 = time.perf_counter()
    c0 = time.process_time()
    theirs = {s: run_bt(frames[s]) for s in symbols}
    bt_s = time.perf_counter() - t0
    bt_cpu = time.process_time() - c0
    log.info("backtesting.py: %.2fs", bt_s)

    gc.collect()
    t0 = time.perf_counter()
    c0 = time.process_time()
    ours = {s: run_backtest(SmaCross, {s: data[s]}, PARITY_CONFIG) for s in symbols}
    our_s = time.perf_counter() - t0
    our_cpu = time.process_time() - c0
    log.info("ours: %.2fs", our_s)

    gc.collect()
    t0 = time.perf_counter()
    portfolio = run_backtest(SmaCross, data, PARITY_CONFIG)
    portfolio_s = time.perf_counter() - t0

    mismatched = [s for s in symbols if our_trades(ours[s]) != bt_trades(theirs[s])]
    equity_off = [
        s
        for s in symbols
        if round(ours[s].final_equity, 2) != round(float(theirs[s]["Equity Final [$]"]), 2)
    ]
    if mismatched or equity_off:
        log.error("trades differ on %s; final equity differs on %s", mismatched, equity_off)
    bars = size.symbols * size.bars
    speedup = bt_s / our_s
    return {
        "benchmark": "backtest",
        "quick": args.quick,
        "seed": SEED,
        "python": platform.python_version(),
        "bars": bars,
        "symbols": size.symbols,
        "bars_per_symbol": size.bars,
        "seconds": round(our_s, 3),
        "backtesting_py_seconds": round(bt_s, 3),
        "bars_per_s": round(bars / our_s),
        "backtesting_py_bars_per_s": round(bars / bt_s),
        "speedup_vs_backtesting_py": round(speedup, 2),
        "speedup_cpu": round(bt_cpu / our_cpu, 2),
        "trades": sum(len(our_trades(r)) for r in ours.values()),
        "trades_equal": not mismatched,
        "final_equity_equal": not equity_off,
        "portfolio_seconds": round(portfolio_s, 3),
        "portfolio_trades": portfolio.metrics.trades,
        "goal_speedup": GOAL_SPEEDUP,
        "goal_met": speedup >= GOAL_SPEEDUP and not mismatched and not equity_off,
        "generate_s": round(generate_s, 2),
    }
