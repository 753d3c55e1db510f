"""Our backtester against backtesting.py: same SMA cross, same data, same trades and equity.

backtesting.py is a dev/bench dependency (not shipped). Its ``buy()`` sizing is
reproduced by ``sizing="fraction_of_available"``, and its commission (``value ×
rate`` at entry and at exit, no truncation, no tax) by ``CostModel(whole_won=False,
sell_tax_rate=0)``, so the runs with a commission are compared too. Data: its
bundled GOOG daily series (float dollars) and a seeded synthetic KRX series (whole
won on the tick grid).

Also here: a strategy that reads the next bar through ``ctx`` makes ``run_backtest``
raise ``LookAheadError``, never a quiet result.
"""

from __future__ import annotations

import warnings
from datetime import UTC

import pandas as pd
import pytest
from backtesting import Backtest
from backtesting import Strategy as BtStrategy
from backtesting.lib import crossover
from backtesting.test import GOOG, SMA

from bench.backtest import synthetic_krx
from engines.backtest import BacktestConfig, BacktestResult, run_backtest
from engines.costs import CostModel
from engines.market import Candle, Timeframe
from engines.strategies.base import Context, LookAheadError, Signal, Strategy, StrategyParams


class CrossParams(StrategyParams):
    fast: int = 10
    slow: int = 20
    fraction: float = 1.0


class SmaCross(Strategy):
    """Long only: buy the golden cross, sell everything on the dead cross."""

    name = "test_parity_sma_cross"
    Params = CrossParams

    def setup(self, ctx: Context) -> None:
        self.fast = ctx.indicator("sma", window=self.params.fast)
        self.slow = ctx.indicator("sma", window=self.params.slow)

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        fast, slow = self.fast, self.slow
        if slow.prev is None:
            return None
        if fast.prev < slow.prev and fast.value > slow.value:
            return ctx.buy(fraction=self.params.fraction)
        if fast.prev > slow.prev and fast.value < slow.value:
            return ctx.sell()
        return None


class BtSmaCross(BtStrategy):
    n1 = 10
    n2 = 20
    size = 0.0  # 0: backtesting.py's default (all available)

    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, self.n1)
        self.slow = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.fast, self.slow):
            if self.size:
                self.buy(size=self.size)
            else:
                self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()


def candles_of(frame: pd.DataFrame, symbol: str, whole_won: bool) -> list[Candle]:
    cast = int if whole_won else float
    return [
        Candle(
            symbol,
            Timeframe.D1,
            ts.to_pydatetime().replace(tzinfo=UTC),
            cast(o),
            cast(h),
            cast(lo),
            cast(c),
            int(v),
        )
        for ts, o, h, lo, c, v in zip(
            frame.index, frame.Open, frame.High, frame.Low, frame.Close, frame.Volume, strict=True
        )
    ]


def frame_of(candles: list[Candle]) -> pd.DataFrame:
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


KRX = synthetic_krx("900001", 2_500, seed=424242)

CASES = {
    "goog": (candles_of(GOOG, "GOOG", whole_won=False), GOOG, 10_000),
    "krx": (KRX, frame_of(KRX), 10_000_000),
}


def ours(candles: list[Candle], cash: float, commission: float, fraction: float = 1.0):
    config = BacktestConfig(
        cash=cash,
        costs=CostModel(commission_rate=commission, sell_tax_rate=0.0, whole_won=False),
        sizing="fraction_of_available",
    )
    symbol = candles[0].symbol
    return run_backtest(lambda: SmaCross({"fraction": fraction}), {symbol: candles}, config)


def theirs(frame: pd.DataFrame, cash: float, commission: float, size: float = 0.0) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some trades remain open": compared separately
        return Backtest(frame, BtSmaCross, cash=cash, commission=commission).run(size=size)


def closed_trades(result: BacktestResult) -> list[tuple[int, int, float, float, int]]:
    return sorted(
        (t.entry_bar, t.exit_bar, float(t.entry_price), float(t.exit_price), t.qty)
        for t in result.trades
        if t.exit_bar is not None and t.exit_price is not None
    )


def their_trades(stats: pd.Series) -> list[tuple[int, int, float, float, int]]:
    df = stats["_trades"]
    rows = zip(df.EntryBar, df.ExitBar, df.EntryPrice, df.ExitPrice, df.Size, strict=True)
    return sorted((int(a), int(b), float(c), float(d), int(e)) for a, b, c, d, e in rows)


@pytest.mark.parametrize("commission", [0.0, 0.002], ids=["no-commission", "commission"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_trades_and_final_equity_as_backtesting_py(case: str, commission: float) -> None:
    candles, frame, cash = CASES[case]
    mine = ours(candles, cash, commission)
    stats = theirs(frame, cash, commission)
    expected = their_trades(stats)
    assert len(expected) > 20  # a real comparison, not two empty lists
    assert closed_trades(mine) == expected
    assert round(mine.final_equity, 2) == round(float(stats["Equity Final [$]"]), 2)
    # Net P&L per trade too (their commission is charged at entry and at exit, like ours).
    df = stats["_trades"].sort_values(["EntryBar", "ExitBar"])
    mine_pnl = [t.pnl for t in sorted(mine.trades, key=lambda t: t.entry_bar) if not t.is_open]
    assert mine_pnl == pytest.approx(list(df.PnL), rel=1e-9, abs=1e-6)
    # The trade still open at the end, if any, is the same as well.
    still_open = [(t.entry_bar, float(t.entry_price), t.qty) for t in mine.trades if t.is_open]
    active = stats["_strategy"].trades
    assert still_open == [(t.entry_bar, float(t.entry_price), t.size) for t in active]


def test_same_trades_with_a_fractional_size() -> None:
    candles, frame, cash = CASES["goog"]
    mine = ours(candles, cash, 0.002, fraction=0.5)
    stats = theirs(frame, cash, 0.002, size=0.5)
    assert closed_trades(mine) == their_trades(stats)
    assert round(mine.final_equity, 2) == round(float(stats["Equity Final [$]"]), 2)


def test_the_synthetic_krx_series_is_whole_won_on_the_tick_grid() -> None:
    from engines.market import is_on_tick

    assert len(KRX) == 2_500
    assert all(
        isinstance(p, int) and is_on_tick(p) for c in KRX for p in (c.open, c.high, c.low, c.close)
    )
    assert all(c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close) for c in KRX)
    assert synthetic_krx("900001", 50, seed=424242) == KRX[:50]  # deterministic


# ---- look-ahead --------------------------------------------------------------------------


class PeeksAtNextClose(Strategy):
    name = "test_peeks_next_close"

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        if ctx.bar_index >= 5 and ctx.close[ctx.bar_index + 1] > candle.close:
            return ctx.buy()
        return None


class PeeksWithBar(Strategy):
    name = "test_peeks_bar"

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        if ctx.bar_index >= 5 and ctx.bar(-1).close > candle.close:
            return ctx.buy()
        return None


class PeeksWithSlice(Strategy):
    name = "test_peeks_slice"

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        ahead = ctx.close[ctx.bar_index - 2 : ctx.bar_index + 3]
        return ctx.buy() if ahead and ahead[-1] > candle.close else None


@pytest.mark.parametrize("strategy", [PeeksAtNextClose, PeeksWithBar, PeeksWithSlice])
@pytest.mark.parametrize("symbols", [1, 2])
def test_reading_the_next_bar_fails_loudly(strategy: type[Strategy], symbols: int) -> None:
    data = {f"90000{k}": synthetic_krx(f"90000{k}", 40, seed=k) for k in range(symbols)}
    with pytest.raises(LookAheadError):
        run_backtest(strategy, data)
