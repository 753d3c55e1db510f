"""The built-in strategies: exact signal bars on price paths built to cross at known bars,
and agreement with an independent computation (``ta`` indicators, backtesting.py's
``crossover``) on every bar of a random series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ta
from backtesting.lib import crossover

from engines.market import Candle, Tick, Timeframe
from engines.strategies.base import (
    Action,
    Context,
    LookAheadError,
    Signal,
    Strategy,
    StrategyHost,
)
from engines.strategies.registry import create

SYMBOL = "005930"
T0 = datetime(2024, 1, 2, tzinfo=UTC)  # 09:00 KST


def candles(closes: list[int]) -> list[Candle]:
    return [
        Candle(SYMBOL, Timeframe.D1, T0 + timedelta(days=i), c, c, c, c, 1_000)
        for i, c in enumerate(closes)
    ]


class Holding:
    """An account that holds ``shares`` of every symbol."""

    def __init__(self, shares: int) -> None:
        self.shares = shares

    def position(self, symbol: str) -> tuple[int, float]:
        return (self.shares, 10_000.0 if self.shares else 0.0)

    @property
    def cash(self) -> float:
        return 1_000_000.0

    @property
    def equity(self) -> float:
        return 1_000_000.0


def run(strategy: Strategy, closes: list[int], account: Any = None) -> list[tuple[int, Action]]:
    host = StrategyHost(strategy, SYMBOL, account)
    out: list[tuple[int, Action]] = []
    for i, candle in enumerate(candles(closes)):
        out.extend((i, sig.action) for sig in host.on_candle(candle))
    return out


def signals(strategy: Strategy, closes: list[int]) -> list[tuple[int, Signal]]:
    host = StrategyHost(strategy, SYMBOL)
    return [(i, s) for i, c in enumerate(candles(closes)) for s in host.on_candle(c)]


BUY, SELL = Action.BUY, Action.SELL

# ---- price paths built so the signals fall on known bars --------------------------------

# A V then an inverted V, slope 100 won per bar. On a straight line a simple average lags
# the price by slope * (window - 1) / 2, so SMA(5) - SMA(10) is -250 on the way down and
# +250 on the way up. Between, the gap runs -230, -190, -130, -50, +50: symmetric around
# 4.5 bars after the turn. The bottom is bar 20, so the golden cross is bar 25; the top is
# bar 40, so the dead cross is bar 45.
V_PATH = (
    [30_000 - 100 * i for i in range(21)]
    + [28_000 + 100 * k for k in range(1, 21)]
    + [30_000 - 100 * k for k in range(1, 21)]
)


def test_ma_cross_sma_on_a_v_path():
    strategy = create("ma_cross", {"fast": 5, "slow": 10})
    assert run(strategy, V_PATH) == [(25, BUY), (45, SELL)]
    reasons = [s.reason for _, s in signals(create("ma_cross", {"fast": 5, "slow": 10}), V_PATH)]
    assert reasons == ["strategy.ma_cross.golden", "strategy.ma_cross.dead"]


def test_ma_cross_does_not_pyramid_but_still_sells():
    # Holding shares: the golden cross would open a position that is already open.
    assert run(create("ma_cross", {"fast": 5, "slow": 10}), V_PATH, Holding(10)) == [(45, SELL)]


def test_ma_cross_equal_averages_are_not_a_cross():
    # Flat, then up: on the flat stretch fast == slow, so the previous bar is not strictly
    # below and the rise is no golden cross (backtesting.py's crossover says the same).
    closes = [20_000] * 30 + [20_000 + 100 * k for k in range(1, 20)]
    assert run(create("ma_cross", {"fast": 5, "slow": 10}), closes) == []


def test_rsi_reversion_on_a_fall_then_rise():
    # RSI(2) after ten falling bars is 0 (no gains at all). The first rising bar halves
    # the average loss and adds half a gain of the same size: RSI ~ 50, through 30, buy.
    # The second: gains 0.75, losses ~0.25 of a step, RSI ~ 75, through 70, sell.
    closes = [20_000 - 100 * i for i in range(11)] + [19_000 + 100 * k for k in range(1, 6)]
    out = signals(create("rsi_reversion", {"rsi_window": 2}), closes)
    assert [(i, s.action) for i, s in out] == [(11, BUY), (12, SELL)]
    assert out[0][1].reason_params == (("rsi", 50.0), ("lower", 30))
    assert out[1][1].reason_params == (("rsi", 75.0), ("upper", 70))


def test_macd_cross_on_a_v_path():
    # On a straight line both EMAs lag by a constant, so the MACD line settles and the
    # signal line settles onto it from the lagging side. At a turn the MACD line (the
    # faster of the two) turns first: the cross is the first bar off the line.
    closes = (
        [20_000 - 100 * i for i in range(30)]
        + [17_100 + 100 * k for k in range(1, 30)]
        + [20_000 - 100 * k for k in range(1, 30)]
    )
    out = run(create("macd_cross", {"fast": 4, "slow": 10, "signal": 3}), closes)
    assert out == [(30, BUY), (59, SELL)]


def test_bollinger_breakout():
    # A steady ramp (+10 per bar) keeps the close 95 above the 20-bar mean but under the
    # upper band (mean + 2 * 57.7). A jump to 11,000 at bar 40 breaks out; the drop back
    # to 10,000 at bar 46 is below the middle band.
    closes = (
        [10_000 + 10 * i for i in range(40)]
        + [11_000]
        + [11_000 + 10 * k for k in range(1, 6)]
        + [10_000]
    )
    assert run(create("bollinger", {}), closes) == [(40, BUY), (46, SELL)]


def test_bollinger_reversion():
    closes = (
        [20_000 - 10 * i for i in range(40)]
        + [19_000]
        + [19_000 - 10 * k for k in range(1, 6)]
        + [20_000]
    )
    out = signals(create("bollinger", {"mode": "reversion"}), closes)
    assert [(i, s.action) for i, s in out] == [(40, BUY), (46, SELL)]
    assert [s.reason for _, s in out] == [
        "strategy.bollinger.reversion_buy",
        "strategy.bollinger.reversion_sell",
    ]


COMBINED = {"fast": 5, "slow": 20, "rsi_window": 2, "rsi_buy": 30, "rsi_sell": 80}


def test_combined_buys_a_dip_in_an_uptrend_and_sells_the_recovery():
    # 40 bars up by 100: RSI(2) ~ 100, SMA5 far above SMA20. Three bars down by 50 take
    # RSI(2) to 67, 40, then 22 (< 30) while SMA5 is still above SMA20: buy at bar 42.
    # Rising again by 100: RSI 72 (< 80), then 88 (> 80): sell at bar 44.
    up = [20_000 + 100 * i for i in range(40)]
    dip = [up[-1] - 50 * k for k in range(1, 4)]
    rise = [dip[-1] + 100 * k for k in range(1, 6)]
    out = signals(create("combined", COMBINED), up + dip + rise)
    assert [(i, s.action, s.reason) for i, s in out] == [
        (42, BUY, "strategy.combined.buy"),
        (44, SELL, "strategy.combined.sell_rsi"),
    ]


def test_combined_ignores_dips_in_a_downtrend():
    down = [20_000 - 100 * i for i in range(40)]
    dip = [down[-1] - 50 * k for k in range(1, 4)]
    assert run(create("combined", COMBINED), down + dip) == []


def test_combined_sells_when_the_trend_turns():
    # Up 40 bars, then down by 100: the second falling bar takes RSI(2) to 25 (buy while
    # SMA5 is still above SMA20); SMA5 falls below SMA20 six bars later.
    up = [20_000 + 100 * i for i in range(40)]
    fall = [up[-1] - 100 * k for k in range(1, 15)]
    out = signals(create("combined", COMBINED), up + fall)
    assert [(i, s.action, s.reason) for i, s in out] == [
        (41, BUY, "strategy.combined.buy"),
        (47, SELL, "strategy.combined.sell_trend"),
    ]


# ---- agreement with an independent computation on a random series -----------------------


@pytest.fixture(scope="module")
def random_closes() -> list[int]:
    rng = np.random.default_rng(20240102)
    steps = rng.normal(0.0, 0.02, 1_500)
    return [int(round(50_000 * float(np.exp(x)))) for x in np.cumsum(steps)]


def expected_crosses(a: pd.Series, b: pd.Series) -> tuple[list[int], list[int]]:
    """Bars where backtesting.py's crossover says a crossed above b, and below."""
    av, bv = a.to_numpy(), b.to_numpy()
    ups = [i for i in range(1, len(av)) if crossover(av[: i + 1], bv[: i + 1])]
    downs = [i for i in range(1, len(av)) if crossover(bv[: i + 1], av[: i + 1])]
    return ups, downs


def split(out: list[tuple[int, Action]]) -> tuple[list[int], list[int]]:
    return [i for i, a in out if a is BUY], [i for i, a in out if a is SELL]


@pytest.mark.parametrize("kind", ["sma", "ema"])
def test_ma_cross_matches_ta(random_closes: list[int], kind: str):
    close = pd.Series(random_closes, dtype=float)
    ma = ta.trend.sma_indicator if kind == "sma" else ta.trend.ema_indicator
    ups, downs = expected_crosses(ma(close, 10), ma(close, 30))
    assert len(ups) > 10 and len(downs) > 10
    out = run(create("ma_cross", {"kind": kind, "fast": 10, "slow": 30}), random_closes)
    assert split(out) == (ups, downs)


def test_rsi_reversion_matches_ta(random_closes: list[int]):
    close = pd.Series(random_closes, dtype=float)
    rsi = ta.momentum.rsi(close, 14)
    buys, _ = expected_crosses(rsi, pd.Series(30.0, index=rsi.index))
    sells, _ = expected_crosses(rsi, pd.Series(70.0, index=rsi.index))
    assert len(buys) > 5 and len(sells) > 5
    assert split(run(create("rsi_reversion", {}), random_closes)) == (buys, sells)


def test_macd_cross_matches_ta(random_closes: list[int]):
    macd = ta.trend.MACD(pd.Series(random_closes, dtype=float), 26, 12, 9)
    ups, downs = expected_crosses(macd.macd(), macd.macd_signal())
    assert len(ups) > 10
    assert split(run(create("macd_cross", {}), random_closes)) == (ups, downs)


@pytest.mark.parametrize("mode", ["breakout", "reversion"])
def test_bollinger_matches_ta(random_closes: list[int], mode: str):
    close = pd.Series(random_closes, dtype=float)
    bands = ta.volatility.BollingerBands(close, 20, 2.0)
    if mode == "breakout":
        buys, _ = expected_crosses(close, bands.bollinger_hband())
        _, sells = expected_crosses(close, bands.bollinger_mavg())
    else:
        _, buys = expected_crosses(close, bands.bollinger_lband())
        sells, _ = expected_crosses(close, bands.bollinger_mavg())
    assert len(buys) > 5 and len(sells) > 5
    assert split(run(create("bollinger", {"mode": mode}), random_closes)) == (buys, sells)


def test_combined_matches_ta(random_closes: list[int]):
    close = pd.Series(random_closes, dtype=float)
    fast, slow = ta.trend.sma_indicator(close, 10), ta.trend.sma_indicator(close, 30)
    rsi = ta.momentum.rsi(close, 14)
    buy_rule = ((fast > slow) & (rsi < 40)).to_numpy()
    sell_rule = ((rsi > 60) | (fast < slow)).to_numpy()
    ready = (fast.notna() & slow.notna() & rsi.notna()).to_numpy()
    buys = [i for i in range(1, len(close)) if ready[i - 1] and buy_rule[i] and not buy_rule[i - 1]]
    sells = [
        i
        for i in range(1, len(close))
        if ready[i - 1] and sell_rule[i] and not sell_rule[i - 1] and not buy_rule[i]
    ]
    assert len(buys) > 5 and len(sells) > 5
    params = {"fast": 10, "slow": 30, "rsi_buy": 40, "rsi_sell": 60}
    assert split(run(create("combined", params), random_closes)) == (buys, sells)


# ---- signals carry what the executor and the alert text need ----------------------------


def test_signals_are_keyed_sized_and_translatable(random_closes: list[int]):
    out = signals(create("ma_cross", {"fast": 10, "slow": 30, "fraction": 0.5}), random_closes)
    assert out
    keys = [s.key for _, s in out]
    assert len(set(keys)) == len(keys) and all(k.startswith(SYMBOL + "|1d|") for k in keys)
    for _, s in out:
        assert s.symbol == SYMBOL
        assert s.fraction == (0.5 if s.action is BUY else 1.0)
        assert dict(s.reason_params) == {"fast": 10, "slow": 30}


# ---- nothing can look ahead -------------------------------------------------------------


class Peeker(Strategy):
    """Reads the bar after the one just closed: must blow up, never return a value."""

    name = "peeker"

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def on_candle(self, ctx: Context, candle: Candle) -> Signal | None:
        if ctx.bar_index >= 5:
            if self.how == "index":
                ctx.close[ctx.bar_index + 1]
            elif self.how == "slice":
                ctx.close[0 : ctx.bar_index + 2]
            elif self.how == "bar":
                ctx.bar(-1)
            else:
                ctx.close.ago(-1)
        return None


@pytest.mark.parametrize("how", ["index", "slice", "bar", "ago"])
def test_reading_the_next_bar_raises(how: str):
    host = StrategyHost(Peeker(how), SYMBOL)
    bars = candles([10_000 + i for i in range(10)])
    for c in bars[:5]:
        host.on_candle(c)
    with pytest.raises(LookAheadError):
        host.on_candle(bars[5])


def test_the_past_is_readable_and_ticks_are_ignored():
    host = StrategyHost(create("ma_cross", {"fast": 5, "slow": 10}), SYMBOL)
    for c in candles(V_PATH[:12]):
        host.on_candle(c)
    ctx = host.ctx
    assert ctx.close[-1] == V_PATH[11] and ctx.close[ctx.bar_index] == V_PATH[11]
    assert ctx.close[0:3] == V_PATH[0:3]
    assert host.on_tick(Tick(SYMBOL, 29_000, 10, T0)) == []
