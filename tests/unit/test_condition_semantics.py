"""The semantics table of condition rules: every operator and frequency mode over
hand-built tick sequences, including bars where the price crosses a level several times.

Each case lists ticks as (minute after 09:00 KST, price[, volume]) and the indices of
the ticks at which the rule must fire. A bar-close firing is reported at the tick that
closed the bar.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engines.market import KST, Candle, Tick, Timeframe
from engines.rules.conditions import ConditionRuleSpec
from engines.rules.evaluator import ConditionBook

DAY = datetime(2026, 11, 23, 9, 0, tzinfo=KST)
SYM = "005930"


def at(minute: float) -> datetime:
    return (DAY + timedelta(minutes=minute)).astimezone(UTC)


def price() -> dict[str, Any]:
    return {"kind": "price"}


def const(value: float) -> dict[str, Any]:
    return {"kind": "value", "value": value}


def ind(name: str, tf: str | None = None, output: str | None = None, **params: Any) -> dict:
    return {"kind": "indicator", "name": name, "params": params, "timeframe": tf, "output": output}


def cmp(left: dict, op: str, right: dict) -> dict:
    return {"type": "compare", "left": left, "op": op, "right": right}


def spec(*conditions: dict, **kw: Any) -> ConditionRuleSpec:
    body: dict[str, Any] = {"timeframe": "1m", "hysteresis_pct": 0, "conditions": list(conditions)}
    body.update(kw)
    return ConditionRuleSpec.model_validate(body)


def run(
    rule: ConditionRuleSpec,
    ticks: list[tuple],
    *,
    prev_close: int | None = None,
    history: dict[Timeframe, list[Candle]] | None = None,
) -> list[tuple[int, bool]]:
    book = ConditionBook()
    if prev_close is not None:
        book.set_prev_close(SYM, prev_close)
    book.add(1, SYM, rule)
    requests = {(r.symbol, r.timeframe) for r in book.warmup_requests()}
    for tf, candles in (history or {}).items():
        assert (SYM, tf) in requests
        book.warm_up(SYM, tf, candles)
    fired: list[tuple[int, bool]] = []
    for i, item in enumerate(ticks):
        minute, p = item[0], item[1]
        volume = item[2] if len(item) > 2 else 10
        result = book.on_tick(Tick(SYM, p, volume, at(minute)))
        fired.extend((i, f.on_close) for f in result.fired)
    return fired


def idx(fired: list[tuple[int, bool]]) -> list[int]:
    return [i for i, _ in fired]


# ---- crossings, states and the frequency modes -----------------------------------

CROSS_TICKS = [
    (0, 69_900),
    (0.2, 70_100),
    (0.4, 69_800),
    (0.6, 70_200),
    (1.1, 69_900),
    (1.3, 70_100),
]


@pytest.mark.parametrize(
    ("op", "frequency", "expected"),
    [
        # Four crossings inside bar 0: once per bar reports the first only.
        ("crossing_up", "once_per_bar", [1, 5]),
        ("crossing_down", "once_per_bar", [2, 4]),
        ("crossing", "once_per_bar", [1, 4]),
        ("greater", "once_per_bar", [1, 5]),
        ("less", "once_per_bar", [0, 4]),
        ("crossing_up", "once", [1]),
        ("less", "once", [0]),
    ],
)
def test_price_against_constant_on_ticks(op, frequency, expected):
    rule = spec(cmp(price(), op, const(70_000)), frequency=frequency)
    assert idx(run(rule, CROSS_TICKS)) == expected


def test_once_per_bar_close_fires_only_at_the_close():
    ticks = [(-1, 69_900), (0, 69_950), (0.2, 70_100), (0.5, 69_800), (0.8, 70_200), (1.1, 70_300)]
    rule = spec(cmp(price(), "crossing_up", const(70_000)), frequency="once_per_bar_close")
    # Bar -1 closes at tick 1 with 69,900; bar 0 closes at tick 5 with 70,200: one
    # crossing between the two closes, however often the ticks crossed inside bar 0.
    assert run(rule, ticks) == [(5, True)]


def test_once_per_bar_close_ignores_a_cross_that_came_back_within_the_bar():
    ticks = [(-1, 69_900), (0, 70_100), (0.5, 69_950), (1.1, 70_000)]
    rule = spec(cmp(price(), "crossing_up", const(70_000)), frequency="once_per_bar_close")
    assert run(rule, ticks) == []


def test_cooldown_holds():
    ticks = [(0, 70_100), (1, 70_200), (4.9, 70_300), (5.0, 70_100), (6, 70_000), (10.5, 70_050)]
    rule = spec(cmp(price(), "greater", const(70_000)), frequency="cooldown", cooldown_minutes=5)
    assert idx(run(rule, ticks)) == [0, 3, 5]


def test_hysteresis_stops_the_spam():
    jitter = [(m, p) for m, p in enumerate([69_900, 70_100, 69_950, 70_050, 69_980, 70_020])]
    without = spec(cmp(price(), "crossing_up", const(70_000)), frequency="once_per_bar")
    assert idx(run(without, jitter)) == [1, 3, 5]
    with_band = spec(
        cmp(price(), "crossing_up", const(70_000)), frequency="once_per_bar", hysteresis_pct=0.5
    )
    assert idx(run(with_band, jitter)) == [1]
    # A retreat past the band (0.5% of 70,000 = 350: below 69,650) re-arms it.
    rearm = [*jitter, (6, 69_600), (7, 70_100)]
    assert idx(run(with_band, rearm)) == [1, 7]


def test_hysteresis_on_a_state_condition():
    ticks = [(m, p) for m, p in enumerate([70_100, 69_900, 70_100, 69_500, 70_100])]
    rule = spec(cmp(price(), "greater", const(70_000)), hysteresis_pct=0.5)
    assert idx(run(rule, ticks)) == [0, 4]


def test_crossing_either_way_with_hysteresis():
    prices = [69_900, 70_100, 69_950, 70_050, 69_600, 69_700, 70_400]
    rule = spec(cmp(price(), "crossing", const(70_000)), hysteresis_pct=0.5)
    assert idx(run(rule, list(enumerate(prices)))) == [1, 4, 6]


# ---- channels ----------------------------------------------------------------------

CHANNEL_TICKS = [(m, p) for m, p in enumerate([68_000, 70_000, 70_500, 72_000, 70_000, 69_000])]


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("entering", [1, 4]),
        ("exiting", [3]),
        ("inside", [1, 2, 4, 5]),
        ("outside", [0, 3]),
    ],
)
def test_channel_operators(op, expected):
    rule = spec({"type": "channel", "op": op, "lower": const(69_000), "upper": const(71_000)})
    assert idx(run(rule, CHANNEL_TICKS)) == expected


# ---- moves, change from the previous close, breakouts ----------------------------


def test_moving_up_by_percent_within_bars():
    ticks = [(0, 10_000), (1, 10_000), (2, 10_050), (3, 10_100), (3.5, 10_150), (3.7, 10_260)]
    rule = spec({"type": "move", "direction": "up", "amount": 2, "unit": "pct", "bars": 3})
    # Closes so far 10,000, 10,000, 10,050: low 10,000, so 10,200 is needed.
    assert idx(run(rule, ticks)) == [5]


def test_moving_down_by_value_within_bars():
    ticks = [(0, 10_000), (1, 10_100), (2, 10_000), (3, 9_950), (3.5, 9_890)]
    rule = spec({"type": "move", "direction": "down", "amount": 200, "unit": "value", "bars": 3})
    assert idx(run(rule, ticks)) == [4]


@pytest.mark.parametrize(
    ("direction", "pct", "prices", "expected"),
    [
        ("up", 3, [71_000, 72_000, 72_100, 72_500], [2]),
        ("down", 2, [69_000, 68_700, 68_600], [2]),
    ],
)
def test_change_from_previous_close(direction, pct, prices, expected):
    rule = spec({"type": "change", "direction": direction, "pct": pct}, frequency="once")
    assert idx(run(rule, list(enumerate(prices)), prev_close=70_000)) == expected


def test_change_needs_a_previous_close():
    rule = spec({"type": "change", "direction": "up", "pct": 1})
    assert run(rule, [(0, 80_000), (1, 81_000)]) == []


def test_breakout_of_a_user_level():
    ticks = [(m, p) for m, p in enumerate([71_500, 72_000, 72_100, 71_900, 72_200])]
    resistance = spec({"type": "breakout", "side": "resistance", "level": "72,000"})
    assert idx(run(resistance, ticks)) == [2, 4]
    support = spec({"type": "breakout", "side": "support", "level": 72_000})
    assert idx(run(support, ticks)) == [3]


def test_breakout_of_the_last_pivot_high():
    # Closes form a pivot high of 105 at bar 2 (left=right=2), confirmed at bar 4.
    highs = [100, 103, 105, 102, 101, 104, 106]
    ticks = [(m, p) for m, p in enumerate(highs)] + [(6.5, 104), (7.0, 106)]
    rule = spec(
        {"type": "breakout", "side": "resistance", "pivot_left": 2, "pivot_right": 2},
        frequency="once_per_bar",
    )
    assert idx(run(rule, ticks)) == [6, 8]


# ---- volume, extremes, gaps --------------------------------------------------------


def test_volume_spike_against_previous_bars():
    ticks: list[tuple] = [(m, 10_000, 100) for m in range(5)]
    ticks += [(5.1, 10_000, 100), (5.2, 10_000, 150), (5.3, 10_000, 60), (6, 10_000, 100)]
    rule = spec({"type": "volume_spike", "factor": 3, "window": 5}, frequency="once_per_bar")
    # Bar 5 reaches 300 = 3 x the 5-bar average of 100 at its third print.
    assert idx(run(rule, ticks)) == [7]


def _daily(highs: list[int]) -> list[Candle]:
    start = DAY - timedelta(days=len(highs))
    return [
        Candle(
            SYM,
            Timeframe.D1,
            (start + timedelta(days=i)).astimezone(UTC),
            h - 5,
            h,
            h - 10,
            h - 5,
            1_000,
        )
        for i, h in enumerate(highs)
    ]


def test_new_n_day_high_uses_previous_days_only():
    history = {Timeframe.D1: _daily([100, 120, 110, 115, 105])}
    rule = spec({"type": "new_extreme", "side": "high", "days": 5}, frequency="once")
    assert idx(run(rule, [(0, 118), (1, 120), (2, 121)], history=history)) == [2]
    low = spec({"type": "new_extreme", "side": "low", "days": 3}, frequency="once")
    history = {Timeframe.D1: _daily([100, 120, 110, 115, 105])}
    # Lows of the last 3 days: 100, 105, 95 -> below 95.
    assert idx(run(low, [(0, 96), (1, 95), (2, 94)], history=history)) == [2]


def test_gap_up_at_the_open():
    rule = spec({"type": "gap", "direction": "up", "pct": 5}, timeframe="1d")
    assert idx(run(rule, [(0, 10_600), (1, 10_000)], prev_close=10_000)) == [0]
    assert run(rule, [(0, 10_400), (1, 11_000)], prev_close=10_000) == []
    down = spec({"type": "gap", "direction": "down", "pct": 5}, timeframe="1d")
    assert idx(run(down, [(0, 9_400)], prev_close=10_000)) == [0]


# ---- composition, expiry -----------------------------------------------------------


def test_and_or_composition():
    a = cmp(price(), "greater", const(70_000))
    b = {"type": "change", "direction": "up", "pct": 2}
    ticks = [(m, p) for m, p in enumerate([70_500, 71_500, 69_000])]
    both = spec(a, b, logic="and")
    assert idx(run(both, ticks, prev_close=70_000)) == [1]
    either = spec(a, b, logic="or")
    assert idx(run(either, ticks, prev_close=70_000)) == [0, 1]


def test_expiry_removes_the_rule_without_firing():
    rule = spec(cmp(price(), "greater", const(70_000)), expires_at=at(5).isoformat())
    book = ConditionBook()
    book.add(1, SYM, rule)
    assert book.on_tick(Tick(SYM, 69_000, 1, at(1))).fired == []
    result = book.on_tick(Tick(SYM, 71_000, 1, at(5)))
    assert result.fired == [] and result.expired == [1]
    assert len(book) == 0


# ---- indicators --------------------------------------------------------------------


def test_moving_averages_crossing_on_bar_close():
    closes = [100, 99, 98, 97, 96, 97, 99, 102, 104, 103]
    ticks = [(m, p) for m, p in enumerate(closes)] + [(len(closes), 100)]
    rule = spec(
        cmp(ind("sma", window=2), "crossing_up", ind("sma", window=4)),
        frequency="once_per_bar_close",
    )
    # SMA2/SMA4 at closes 4..: (96.5, 97.5), (96.5, 97) , (98, 97.25) -> up at bar 6,
    # reported when bar 6 closes, i.e. at tick 7.
    assert run(rule, ticks) == [(7, True)]


def test_a_cold_indicator_never_fires():
    rule = spec(cmp(ind("rsi", window=14), "less", const(101)), frequency="once_per_bar_close")
    ticks = [(m, 100 + m) for m in range(10)]
    assert run(rule, ticks) == []


def test_warm_up_makes_the_rule_live_from_the_first_bar():
    history = [Candle(SYM, Timeframe.M1, at(-10 + i), 100, 100, 100, 100, 10) for i in range(10)]
    rule = spec(cmp(ind("sma", window=5), "less", const(101)), frequency="once_per_bar_close")
    assert run(rule, [(0, 100), (1, 100)], history={Timeframe.M1: history}) == [(1, True)]


def test_shared_indicator_instances():
    book = ConditionBook()
    rsi = cmp(ind("rsi", window=14), "less", const(30))
    book.add(1, SYM, spec(rsi))
    book.add(2, SYM, spec(rsi, frequency="once_per_bar_close"))
    book.add(3, SYM, spec(cmp(ind("rsi"), "greater", const(70))))  # default window 14
    assert len(book._shared) == 1
    assert next(iter(book._shared.values())).refs == 6  # a condition and a label each
    book.remove(1)
    book.remove(2)
    book.remove(3)
    assert book._shared == {} and book._by_bar == {}


def test_tick_rules_read_indicators_on_the_forming_bar():
    # SMA(2) over closes 100, 100 and the forming bar: 101.5 once a print of 103 arrives.
    ticks = [(0, 100), (1, 100), (2, 100), (2.5, 102), (2.7, 103), (2.9, 104), (3.1, 90)]
    rule = spec(cmp(ind("sma", window=2), "greater", const(101)), frequency="once_per_bar")
    assert run(rule, ticks) == [(4, False)]
    # The same rule on bar closes sees bar 2 close at 104: (100 + 104) / 2 = 102 > 101.
    on_close = spec(
        cmp(ind("sma", window=2), "greater", const(101)), frequency="once_per_bar_close"
    )
    assert run(on_close, ticks) == [(6, True)]


def test_higher_timeframe_operand_on_a_minute_rule():
    # A 5-minute SMA(1) is the forming 5-minute bar's close: the last price.
    ticks = [(0, 100), (1, 101), (2, 105), (3, 99)]
    rule = spec(cmp(ind("sma", tf="5m", window=1), "greater", const(104)))
    assert idx(run(rule, ticks)) == [2]
