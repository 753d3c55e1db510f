"""The strategy API's guarantees: no look-ahead, keyed signals, validated params."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import Field, ValidationError

from engines.market import Candle, Timeframe
from engines.strategies.base import (
    Action,
    LookAheadError,
    OrderKind,
    Signal,
    Strategy,
    StrategyHost,
    StrategyParams,
)

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def candles(closes: list[int], symbol: str = "005930") -> list[Candle]:
    return [
        Candle(symbol, Timeframe.D1, T0 + timedelta(days=i), c, c + 10, c - 10, c, 100 + i)
        for i, c in enumerate(closes)
    ]


class CrossParams(StrategyParams):
    fast: int = Field(3, ge=2, le=50)
    slow: int = Field(5, ge=3, le=200, json_schema_extra={"step": 5})
    fraction: float = Field(1.0, gt=0, le=1.0)


class Cross(Strategy):
    name = "test_cross"
    Params = CrossParams

    def setup(self, ctx) -> None:
        self.fast = ctx.indicator("sma", window=self.params.fast)
        self.slow = ctx.indicator("sma", window=self.params.slow)

    def on_candle(self, ctx, candle):
        f, s = self.fast, self.slow
        if not (f.ready and s.ready):
            return None
        if f.prev < s.prev and f.value > s.value:
            return ctx.buy(fraction=self.params.fraction)
        if f.prev > s.prev and f.value < s.value:
            return ctx.sell()
        return None


def _independent_crosses(closes: list[int], fast: int, slow: int) -> list[tuple[int, str]]:
    def sma(i: int, n: int) -> float | None:
        return sum(closes[i - n + 1 : i + 1]) / n if i >= n - 1 else None

    out = []
    for i in range(1, len(closes)):
        f0, s0, f1, s1 = sma(i - 1, fast), sma(i - 1, slow), sma(i, fast), sma(i, slow)
        if None in (f0, s0, f1, s1):
            continue
        if f0 < s0 and f1 > s1:
            out.append((i, "buy"))
        elif f0 > s0 and f1 < s1:
            out.append((i, "sell"))
    return out


def test_host_signals_match_an_independent_cross_computation() -> None:
    closes = [int(10_000 + 800 * math.sin(i / 4) + 30 * (i % 7)) for i in range(200)]
    host = StrategyHost(Cross({"fast": 3, "slow": 8}), "005930")
    got = []
    for i, c in enumerate(candles(closes)):
        got += [(i, s.action.value) for s in host.on_candle(c)]
    expected = _independent_crosses(closes, 3, 8)
    assert len(expected) > 10
    assert got == expected


def test_signals_are_keyed_by_symbol_bar_and_ordinal_and_unique() -> None:
    closes = [int(10_000 + 800 * math.sin(i / 4)) for i in range(120)]
    host = StrategyHost(Cross(), "000660")
    keys = [s.key for c in candles(closes, "000660") for s in host.on_candle(c)]
    assert keys and len(keys) == len(set(keys))
    assert all(k.startswith("000660|1d|") for k in keys)
    # Re-running the same bars in a fresh host gives the same keys: retries dedupe.
    again = StrategyHost(Cross(), "000660")
    assert keys == [s.key for c in candles(closes, "000660") for s in again.on_candle(c)]


def test_warmup_counts_the_slowest_indicator_and_one_bar_for_the_cross() -> None:
    assert StrategyHost(Cross({"fast": 3, "slow": 20}), "005930").warmup == 21


class Peeker(Strategy):
    name = "test_peeker"

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def on_candle(self, ctx, candle):
        if ctx.bar_index == 5:
            if self.how == "index":
                return ctx.close[ctx.bar_index + 1]
            if self.how == "bar":
                return ctx.bar(-1)
            if self.how == "ago":
                return ctx.close.ago(-1)
            if self.how == "slice":
                return ctx.close[0 : ctx.bar_index + 2]
        return None


@pytest.mark.parametrize("how", ["index", "bar", "ago", "slice"])
def test_reading_the_next_bar_fails_loudly(how: str) -> None:
    host = StrategyHost(Peeker(how), "005930")
    bars = candles(list(range(1000, 1020)))
    for c in bars[:5]:
        host.on_candle(c)
    with pytest.raises(LookAheadError):
        host.on_candle(bars[5])


def test_series_reads_the_past_like_backtesting_py() -> None:
    host = StrategyHost(Strategy(), "005930")
    for c in candles([100, 200, 300, 400]):
        host.on_candle(c)
    ctx = host.ctx
    assert (ctx.close[-1], ctx.close[-2], ctx.close[0], ctx.close[3]) == (400, 300, 100, 400)
    assert ctx.close[-3:] == [200, 300, 400]
    assert ctx.close[1:3] == [200, 300]
    assert ctx.close.ago(1) == 300
    assert ctx.bar(2).close == 200
    with pytest.raises(IndexError):
        ctx.close[-5]


def test_history_is_bounded_and_old_bars_are_an_index_error_not_a_wrong_value() -> None:
    class Short(Strategy):
        history_size = 3

    host = StrategyHost(Short(), "005930")
    for c in candles([1, 2, 3, 4, 5, 6]):
        host.on_candle(c)
    assert list(host.ctx.close) == [4, 5, 6]
    assert host.ctx.close[5] == 6
    with pytest.raises(IndexError):
        host.ctx.close[1]


def test_context_refuses_ad_hoc_attributes() -> None:
    host = StrategyHost(Strategy(), "005930")
    with pytest.raises(AttributeError):
        host.ctx.future = 1  # type: ignore[attr-defined]


def test_signal_from_another_symbol_is_refused() -> None:
    class Wrong(Strategy):
        def on_candle(self, ctx, candle):
            return Signal(Action.BUY, "000660")

    host = StrategyHost(Wrong(), "005930")
    with pytest.raises(ValueError, match="000660"):
        host.on_candle(candles([100])[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"qty": -1},
        {"fraction": 0.0},
        {"fraction": 1.5},
        {"order_kind": OrderKind.LIMIT},
        {"order_kind": OrderKind.LIMIT, "limit_price": -5},
    ],
)
def test_bad_signals_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Signal(Action.BUY, "005930", **kwargs)


def test_params_refuse_unknown_keys_and_out_of_range_values() -> None:
    with pytest.raises(ValidationError):
        Cross({"fast": 1})
    with pytest.raises(ValidationError):
        Cross({"fats": 3})
    with pytest.raises(TypeError):
        Cross(StrategyParams())
    assert Cross({"fast": "4"}).params.fast == 4


def test_params_space_gives_bounds_and_grid() -> None:
    space = {r.name: r for r in CrossParams.space()}
    assert set(space) == {"fast", "slow"}  # fraction has no ge (gt only): not a range
    assert (space["fast"].low, space["fast"].high, space["fast"].step) == (2, 50, 1)
    assert space["slow"].grid()[:3] == [3, 8, 13]
    assert space["slow"].grid()[-1] <= 200


def test_grid_never_steps_past_the_upper_bound() -> None:
    from engines.strategies.base import ParamRange

    assert ParamRange("x", "int", 2, 100, 5).grid()[-1] == 97
    assert ParamRange("t", "float", 0.5, 0.99, 0.07).grid()[-1] == 0.99
    assert ParamRange("t", "float", 0.5, 0.95, 0.1).grid() == [0.5, 0.6, 0.7, 0.8, 0.9]


def test_params_refuse_nan_and_infinity() -> None:
    class F(StrategyParams):
        x: float = Field(0.5, ge=0, le=1)

    for bad in ("nan", float("inf")):
        with pytest.raises(ValidationError):
            F(x=bad)


def test_tick_signal_keys_survive_a_restart() -> None:
    from engines.market import Tick

    class OnTick(Strategy):
        def on_tick(self, ctx, tick):
            return ctx.buy() if tick.price > 100 else None

    ticks = [
        Tick("005930", p, 1, T0 + timedelta(seconds=s))
        for p, s in [(90, 0), (101, 1), (102, 1), (103, 2), (99, 3), (104, 4)]
    ]
    first = StrategyHost(OnTick(), "005930")
    keys = [sig.key for t in ticks for sig in first.on_tick(t)]
    assert len(keys) == len(set(keys)) == 4
    # A new process replays from the fourth tick: the same ticks give the same keys.
    again = StrategyHost(OnTick(), "005930")
    assert [sig.key for t in ticks[3:] for sig in again.on_tick(t)] == keys[2:]
