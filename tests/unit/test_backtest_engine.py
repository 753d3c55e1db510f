"""The backtester's fills, fees, sizing, portfolio and warm-up, against hand-computed figures.

A scripted strategy emits chosen signals at chosen bars, so each figure below can be
worked out on paper (shown in the comments).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from engines.backtest import BacktestCancelled, BacktestConfig, run_backtest
from engines.backtest import engine as engine_module
from engines.costs import CostModel
from engines.market import Candle, Timeframe
from engines.strategies.base import Context, OrderKind, Signal, Strategy

T0 = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)  # 09:00 KST
NO_TAX = CostModel(commission_rate=0.0, sell_tax_rate=0.0)

Plan = dict[int, Callable[[Context], Signal | list[Signal]]]


def bars(symbol: str, rows: list[tuple[int, int, int, int]], *, skip: set[int] = frozenset()):
    """Daily candles from (open, high, low, close); ``skip`` leaves calendar days out."""
    out = []
    day = 0
    for row in rows:
        while day in skip:
            day += 1
        o, h, lo, c = row
        out.append(Candle(symbol, Timeframe.D1, T0 + timedelta(days=day), o, h, lo, c, 1_000))
        day += 1
    return out


def flat(symbol: str, n: int, price: int = 70_000) -> list[Candle]:
    return bars(symbol, [(price, price, price, price)] * n)


class Scripted(Strategy):
    """Signals by bar index: ``plan[bar] = lambda ctx: ctx.buy(...)``."""

    name = "test_scripted"

    def __init__(self, plan: Plan, warm: int = 0) -> None:
        super().__init__()
        self.plan = plan
        self.warm = warm
        self.seen: list[tuple[int, int, float]] = []

    def setup(self, ctx: Context) -> None:
        if self.warm:
            ctx.indicator("sma", window=self.warm)

    def on_candle(self, ctx: Context, candle: Candle):
        self.seen.append((ctx.bar_index, ctx.position, ctx.cash))
        make = self.plan.get(ctx.bar_index)
        return make(ctx) if make else None


def run(plan: Plan, data: dict[str, list[Candle]], config: BacktestConfig | None = None, **kw):
    return run_backtest(lambda: Scripted(plan, **kw), data, config or BacktestConfig())


# ---- fills, fees and tax ---------------------------------------------------------------


def test_buy_and_partial_sell_hand_computed() -> None:
    data = {
        "005930": bars(
            "005930",
            [
                (69_000, 70_500, 68_900, 70_000),
                (70_000, 71_000, 69_500, 70_500),  # buy 10 fills at the open, 70,000
                (72_000, 72_500, 71_000, 72_000),  # sell 4 fills at the open, 72,000
                (72_000, 73_000, 71_500, 73_000),
            ],
        )
    }
    plan: Plan = {0: lambda ctx: ctx.buy(qty=10), 1: lambda ctx: ctx.sell(qty=4)}
    result = run(plan, data)
    # buy: 700,000 + commission floor(105.0) = 105 -> cash 9,299,895
    # sell 4: 288,000 - commission floor(43.2) = 43 - tax floor(576.0) = 576 -> 9,587,276
    # final: 9,587,276 + 6 × 73,000 = 10,025,276
    assert result.final_equity == 10_025_276
    assert isinstance(result.final_equity, int)  # whole won stay whole
    closed = [t for t in result.trades if t.exit_bar is not None]
    assert len(closed) == 1
    t = closed[0]
    assert (t.entry_bar, t.exit_bar, t.entry_price, t.exit_price, t.qty) == (
        1,
        2,
        70_000,
        72_000,
        4,
    )
    # fees: 4/10 of the buy commission (42) + commission 43 + tax 576 = 661
    assert t.fees == pytest.approx(661)
    assert t.pnl == pytest.approx(4 * 2_000 - 661)
    assert t.return_pct == pytest.approx((8_000 - 661) / 280_000)
    assert t.bars_held == 1
    open_ = [t for t in result.trades if t.exit_bar is None]
    assert len(open_) == 1 and open_[0].qty == 6
    # 6 × (73,000 - 70,000) - 6/10 of 105 = 18,000 - 63
    assert open_[0].pnl == pytest.approx(18_000 - 63)
    assert result.metrics.trades == 1 and result.metrics.open_trades == 1


def test_strategy_sees_position_and_cash_after_fills() -> None:
    data = {"A": flat("A", 4)}
    strategy = Scripted({0: lambda ctx: ctx.buy(qty=10)})
    run_backtest(lambda: strategy, data, BacktestConfig(costs=NO_TAX))
    assert strategy.seen == [
        (0, 0, 10_000_000),
        (1, 10, 9_300_000),  # filled at bar 1's open, before the strategy saw bar 1
        (2, 10, 9_300_000),
        (3, 10, 9_300_000),
    ]


def test_sell_while_flat_does_nothing_and_last_bar_signals_never_fill() -> None:
    data = {"A": flat("A", 3)}
    plan: Plan = {0: lambda ctx: ctx.sell(), 2: lambda ctx: ctx.buy()}
    result = run(plan, data)
    assert result.trades == []
    assert result.final_equity == 10_000_000
    assert len(result.signals) == 2  # both recorded


def test_alerts_are_recorded_only() -> None:
    data = {"A": flat("A", 3)}
    result = run({0: lambda ctx: ctx.alert("strategy.reason.test", level=3)}, data)
    assert [s.reason for s in result.signals] == ["strategy.reason.test"]
    assert result.signals[0].key.startswith("A|1d|")
    assert result.trades == [] and result.final_equity == 10_000_000


def test_buy_is_clipped_to_cash_and_an_unaffordable_buy_is_skipped() -> None:
    data = {"A": flat("A", 4)}
    # 1,000 shares wanted at 70,000: 142 fit (142 × 70,000 + 1,491 = 9,941,491)
    plan: Plan = {0: lambda ctx: ctx.buy(qty=1_000), 1: lambda ctx: ctx.buy(qty=1)}
    result = run(plan, data)
    assert [t.qty for t in result.trades] == [142]
    assert result.skipped_orders == 1  # 58,509 won left: not one more share
    assert result.final_equity == 10_000_000 - 1_491


# ---- limit orders ----------------------------------------------------------------------


FLAT = (70_000, 70_000, 70_000, 70_000)
LIMIT = OrderKind.LIMIT


def _buy_limit(next_bar: tuple[int, int, int, int], limit: float):
    """Buy limit signalled on bar 0, tried on ``next_bar``."""
    plan: Plan = {0: lambda ctx: ctx.buy(qty=10, order_kind=LIMIT, limit_price=limit)}
    return run(plan, {"A": bars("A", [FLAT, next_bar, FLAT])}, BacktestConfig(costs=NO_TAX))


def _sell_limit(next_bar: tuple[int, int, int, int], limit: float):
    """10 shares bought at bar 1's open; sell limit signalled on bar 1, tried on ``next_bar``."""
    plan: Plan = {
        0: lambda ctx: ctx.buy(qty=10),
        1: lambda ctx: ctx.sell(order_kind=LIMIT, limit_price=limit),
    }
    data = {"A": bars("A", [FLAT, FLAT, next_bar, FLAT])}
    return run(plan, data, BacktestConfig(costs=NO_TAX))


def test_buy_limit_reached_fills_at_the_limit() -> None:
    result = _buy_limit((70_000, 70_500, 69_000, 70_000), 69_500)
    assert [t.entry_price for t in result.trades] == [69_500]


def test_buy_limit_gapped_through_fills_at_the_open() -> None:
    result = _buy_limit((69_000, 69_800, 68_500, 69_000), 69_500)
    assert [t.entry_price for t in result.trades] == [69_000]


def test_buy_limit_not_reached_expires() -> None:
    result = _buy_limit((70_000, 70_500, 69_600, 70_000), 69_500)
    assert result.trades == [] and result.skipped_orders == 1


def test_buy_limit_lives_for_limit_valid_bars() -> None:
    rows = [
        (70_000, 70_000, 70_000, 70_000),
        (70_000, 70_500, 69_600, 70_000),  # not reached
        (69_800, 69_900, 69_000, 69_500),  # reached on the second bar
        (70_000, 70_000, 70_000, 70_000),
    ]
    plan: Plan = {0: lambda ctx: ctx.buy(qty=10, order_kind=LIMIT, limit_price=69_500)}
    one = run(plan, {"A": bars("A", rows)}, BacktestConfig(costs=NO_TAX, limit_valid_bars=1))
    two = run(plan, {"A": bars("A", rows)}, BacktestConfig(costs=NO_TAX, limit_valid_bars=2))
    assert one.trades == []
    assert [(t.entry_bar, t.entry_price) for t in two.trades] == [(2, 69_500)]


def test_sell_limit_reached_gapped_and_missed() -> None:
    reached = _sell_limit((70_000, 71_000, 69_900, 70_000), 70_500)
    gapped = _sell_limit((71_000, 71_500, 70_800, 71_000), 70_500)
    missed = _sell_limit((70_000, 70_400, 69_900, 70_000), 70_500)
    assert [t.exit_price for t in reached.trades] == [70_500]
    assert [t.exit_price for t in gapped.trades] == [71_000]
    assert [t.exit_bar for t in missed.trades] == [None]


def test_off_grid_limits_snap_to_the_tick_against_the_trader() -> None:
    # tick 100 between 50,000 and 200,000: a buy limit of 69,587.5 becomes 69,500
    result = _buy_limit((70_000, 70_500, 69_000, 70_000), 69_587.5)
    assert [t.entry_price for t in result.trades] == [69_500]
    # a sell limit of 70,401 becomes 70,500
    sold = _sell_limit((70_000, 71_000, 69_900, 70_000), 70_401)
    assert [t.exit_price for t in sold.trades] == [70_500]


# ---- slippage --------------------------------------------------------------------------


def test_slippage_ticks_at_band_edges_in_a_backtest() -> None:
    rows = [
        (1_990, 1_990, 1_990, 1_990),
        (1_999, 2_100, 1_990, 2_050),
        (2_000, 2_000, 2_000, 2_000),
    ]
    rows.append((2_000, 2_000, 2_000, 2_000))
    plan: Plan = {0: lambda ctx: ctx.buy(qty=100), 1: lambda ctx: ctx.sell()}
    costs = CostModel(commission_rate=0.0, sell_tax_rate=0.0, slippage_ticks=2)
    result = run(plan, {"A": bars("A", rows)}, BacktestConfig(costs=costs))
    (t,) = result.trades
    # buy at 1,999 + 2 ticks: 2,000 (tick 1) then 2,005 (tick 5); sell at 2,000 - 2: 1,999, 1,998
    assert (t.entry_price, t.exit_price) == (2_005, 1_998)
    assert result.final_equity == 10_000_000 - 100 * 7


def test_slippage_ticks_on_float_data_is_refused() -> None:
    data = {"A": [Candle("A", Timeframe.D1, T0, 1.5, 1.5, 1.5, 1.5, 1)]}
    with pytest.raises(ValueError, match="slippage_ticks needs whole-won"):
        run({}, data, BacktestConfig(costs=CostModel(slippage_ticks=1)))


# ---- portfolio -------------------------------------------------------------------------


def test_two_symbols_share_one_cash_account() -> None:
    a = bars("A", [(10_000, 10_000, 10_000, 10_000), (10_000, 10_500, 9_900, 11_000)] * 2)
    b = bars("B", [(20_000, 20_000, 20_000, 20_000)] * 4)
    plans: dict[str, Plan] = {
        "A": {0: lambda ctx: ctx.buy(fraction=0.5)},
        "B": {0: lambda ctx: ctx.buy()},
    }
    seen: dict[str, Scripted] = {}

    def factory() -> Scripted:
        symbol = "A" if "A" not in seen else "B"
        seen[symbol] = Scripted(plans[symbol])
        return seen[symbol]

    result = run_backtest(factory, {"A": a, "B": b}, BacktestConfig(costs=NO_TAX))
    # A (first in data order at bar 1) gets floor(0.5 × 10,000,000 / 10,000) = 500 shares;
    # B then gets what is left: 5,000,000 / 20,000 = 250.
    qty = {t.symbol: t.qty for t in result.trades}
    assert qty == {"A": 500, "B": 250}
    # Both see the shared cash. On a shared bar time the symbols run in data order, each
    # fill then its strategy: A sees its own fill only, B sees both.
    assert seen["A"].seen[1][2] == 5_000_000 and seen["B"].seen[1][2] == 0
    # equity at the end: 500 × 11,000 + 250 × 20,000
    assert result.final_equity == 5_500_000 + 5_000_000
    curve = dict(result.equity_curve)
    assert curve[T0 + timedelta(days=1)] == 500 * 11_000 + 250 * 20_000
    assert curve[T0 + timedelta(days=2)] == 500 * 10_000 + 250 * 20_000
    assert result.metrics.benchmark_return == pytest.approx((0.1 + 0.0) / 2)


def test_portfolio_merges_calendars_and_marks_a_missing_bar_at_the_last_close() -> None:
    a = bars("A", [(100, 100, 100, 100), (100, 100, 100, 120), (130, 130, 130, 130)])
    a.append(Candle("A", Timeframe.D1, T0 + timedelta(days=3), 140, 140, 140, 140, 1))
    b = bars("B", [(50, 50, 50, 50), (50, 60, 50, 60), (70, 70, 70, 70)], skip={2})
    plans: dict[str, Plan] = {"A": {}, "B": {0: lambda ctx: ctx.buy(qty=10)}}
    order = iter("AB")
    result = run_backtest(
        lambda: Scripted(plans[next(order)]), {"A": a, "B": b}, BacktestConfig(costs=NO_TAX)
    )
    (t,) = result.trades
    assert (t.symbol, t.entry_bar, t.entry_time, t.entry_price) == ("B", 1, T0 + timedelta(1), 50)
    times = [when for when, _ in result.equity_curve]
    assert times == [T0 + timedelta(days=d) for d in range(4)]
    # 10 B bought at 50. Day 1 closes at 60; day 2 has no B bar, so B stays at 60; day 3: 70.
    base = 10_000_000 - 500
    assert [v for _, v in result.equity_curve] == [10_000_000, base + 600, base + 600, base + 700]
    assert result.trades[0].exit_bar is None and result.trades[0].bars_held == 1


def test_single_symbol_fast_path_equals_the_merged_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(100 + i % 7, 110 + i % 5, 90, 100 + (i * 13) % 17) for i in range(60)]
    data = {"A": bars("A", rows)}
    plan: Plan = {
        i: (lambda ctx: ctx.buy(fraction=0.3))
        if i % 9 == 0
        else (lambda ctx: ctx.sell(fraction=0.5))
        for i in range(0, 55, 3)
    }
    fast = run(plan, data)
    sim_cls = engine_module._Simulation

    used: list[int] = []

    def merged_only(self, progress, should_stop) -> None:  # the generic loop, for one symbol
        used.append(len(sim_cls.run_merged(self, progress, should_stop)))

    monkeypatch.setattr(sim_cls, "run_single", merged_only)
    slow = run(plan, data)
    assert used == [60]
    assert fast.to_dict() == slow.to_dict()
    assert len(fast.trades) > 5


# ---- warm-up ---------------------------------------------------------------------------


def test_warmup_signals_are_dropped_and_metrics_start_at_the_last_warmup_bar() -> None:
    rows = [(100, 100, 100, 100 + i) for i in range(12)]
    plan: Plan = {2: lambda ctx: ctx.buy(qty=1), 5: lambda ctx: ctx.buy(qty=1)}
    result = run(plan, {"A": bars("A", rows)}, BacktestConfig(costs=NO_TAX), warm=5)
    # SMA(5) is ready on bar 4 and has a previous value on bar 5: warm-up is 6 bars.
    assert result.warmup_bars == 6
    assert result.discarded_signals == 1  # the bar-2 buy
    assert [(t.entry_bar, t.qty) for t in result.trades] == [(6, 1)]
    # The curve and the metrics start at bar 5 (the last warm-up bar), at the starting cash.
    assert result.equity_curve[0] == (T0 + timedelta(days=5), 10_000_000)
    assert len(result.equity_curve) == 12 - 5
    assert result.metrics.bars == 6
    assert result.metrics.benchmark_return == pytest.approx(111 / 105 - 1)
    # exposure: held at the close of bars 6..11, all six of the measured bars
    assert result.metrics.exposure == 1.0


def test_a_series_shorter_than_warmup_gives_empty_metrics() -> None:
    result = run({}, {"A": flat("A", 3)}, warm=5)
    assert result.metrics.bars == 0
    assert result.metrics.sharpe is None and result.metrics.total_return == 0.0


# ---- contract: errors, progress, cancellation, JSON ---------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "no data"),
        ({"A": []}, "A: no candles"),
        ({"A": flat("B", 2)}, "bar 0 is a candle of 'B'"),
        ({"A": flat("A", 3)[::-1]}, "bar 1 .* is not after bar 0"),
        ({"A": flat("A", 2) + flat("A", 1)}, "bar 2 .* is not after bar 1"),
        ({"A": [*flat("A", 1), "x"]}, "bar 1 is a str, not a Candle"),
    ],
)
def test_bad_data_is_refused_with_a_clear_message(data, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run({}, data)


def test_mixed_timeframes_are_refused() -> None:
    weekly = [Candle("B", Timeframe.W1, T0, 1, 1, 1, 1, 1)]
    with pytest.raises(ValueError, match="one backtest runs on one timeframe"):
        run({}, {"A": flat("A", 2), "B": weekly})


def test_factory_must_return_a_strategy() -> None:
    with pytest.raises(TypeError, match="not a Strategy"):
        run_backtest(lambda: object(), {"A": flat("A", 2)})  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize(
    "kwargs",
    [{"cash": 0}, {"cash": float("inf")}, {"sizing": "kelly"}, {"limit_valid_bars": 0}],
)
def test_bad_config_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BacktestConfig(**kwargs)


def test_progress_reaches_the_total_and_should_stop_cancels() -> None:
    data = {"A": flat("A", 10_000)}
    calls: list[tuple[int, int]] = []
    run_backtest(lambda: Scripted({}), data, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (10_000, 10_000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) >= 3
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(BacktestCancelled):
        run_backtest(lambda: Scripted({}), data, should_stop=stop)


@pytest.mark.parametrize("bars", [250, 4_000, 2 * 2_500 + 7])
def test_progress_moves_in_steps_of_two_percent_at_most(bars: int) -> None:
    data = {"A": flat("A", bars)}
    done: list[int] = []
    run_backtest(lambda: Scripted({}), data, progress=lambda d, t: done.append(d))
    steps = [b - a for a, b in zip([0, *done], done, strict=False)]
    assert done[-1] == bars
    assert max(steps) <= bars * 0.02 + 1


def test_result_to_dict_is_strict_json() -> None:
    data = {"A": flat("A", 5)}  # flat, no fees: Sharpe and friends do not exist
    plan: Plan = {0: lambda ctx: ctx.buy(qty=1), 2: lambda ctx: ctx.sell()}
    result = run(plan, data, BacktestConfig(costs=NO_TAX))
    payload = result.to_dict()
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["metrics"]["sharpe"] is None
    assert payload["equity_curve"][0][0] == T0.isoformat()
    assert payload["trades"][0]["entry_time"] == (T0 + timedelta(days=1)).isoformat()
    assert set(result.metrics.to_dict()) >= {
        "total_return",
        "cagr",
        "volatility",
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown",
        "max_drawdown_duration",
        "win_rate",
        "profit_factor",
        "expectancy",
        "exposure",
        "trades",
        "best_trade",
        "worst_trade",
        "benchmark_return",
        "start_equity",
        "end_equity",
    }
