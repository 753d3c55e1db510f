"""Condition rules on bar closes agree with a brute-force evaluation over the whole
series computed by ``ta`` and pandas, on random walks: the evaluator adds nothing and
misses nothing (no firing from a cold indicator, every crossing found)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ta.momentum import RSIIndicator

from engines.market import Tick
from engines.rules.conditions import ConditionRuleSpec
from engines.rules.evaluator import ConditionBook

T0 = datetime(2026, 3, 5, 0, 0, tzinfo=UTC)


def _walk(seed: int, n: int) -> list[int]:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.01, n).cumsum()
    return [int(round(10_000 * np.exp(s))) for s in steps]


def _fires(spec: dict, closes: list[int]) -> list[int]:
    """Bar indices whose close fired the rule (bar k closes at tick k + 1)."""
    book = ConditionBook()
    book.add(1, "A", ConditionRuleSpec.model_validate(spec))
    out = []
    for i, price in enumerate([*closes, closes[-1]]):
        result = book.on_tick(Tick("A", price, 1, T0 + timedelta(minutes=i)))
        out.extend(i - 1 for _ in result.fired)
    return out


def _spec(condition: dict) -> dict:
    return {
        "timeframe": "1m",
        "frequency": "once_per_bar_close",
        "hysteresis_pct": 0,
        "conditions": [condition],
    }


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), threshold=st.sampled_from([30, 40, 50, 60]))
def test_rsi_below_threshold_matches_ta(seed, threshold):
    closes = _walk(seed, 300)
    rsi = RSIIndicator(pd.Series(closes, dtype=float), window=14, fillna=False).rsi()
    expected = [i for i, v in enumerate(rsi) if not np.isnan(v) and v < threshold]
    condition = {
        "type": "compare",
        "left": {"kind": "indicator", "name": "rsi", "params": {"window": 14}},
        "op": "less",
        "right": {"kind": "value", "value": threshold},
    }
    assert _fires(_spec(condition), closes) == expected


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), fast=st.integers(2, 10), slow=st.integers(11, 40))
@pytest.mark.parametrize("op", ["crossing_up", "crossing_down", "crossing"])
def test_moving_average_crossings_match_pandas(op, seed, fast, slow):
    closes = _walk(seed, 400)
    series = pd.Series(closes, dtype=float)
    a = series.rolling(fast).mean().to_numpy()
    b = series.rolling(slow).mean().to_numpy()
    expected = []
    for i in range(slow, len(closes)):
        up = a[i - 1] <= b[i - 1] and a[i] > b[i]
        down = a[i - 1] >= b[i - 1] and a[i] < b[i]
        if (
            (op == "crossing_up" and up)
            or (op == "crossing_down" and down)
            or (op == "crossing" and (up or down))
        ):
            expected.append(i)
    condition = {
        "type": "compare",
        "left": {"kind": "indicator", "name": "sma", "params": {"window": fast}},
        "op": op,
        "right": {"kind": "indicator", "name": "sma", "params": {"window": slow}},
    }
    assert _fires(_spec(condition), closes) == expected


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_bollinger_channel_exit_matches_pandas(seed):
    closes = _walk(seed, 300)
    series = pd.Series(closes, dtype=float)
    mid = series.rolling(20).mean()
    std = series.rolling(20).std(ddof=0)
    upper, lower = (mid + 2 * std).to_numpy(), (mid - 2 * std).to_numpy()
    inside = [lower[i] <= closes[i] <= upper[i] for i in range(len(closes))]
    expected = [i for i in range(20, len(closes)) if inside[i - 1] and not inside[i]]
    band = {"kind": "indicator", "name": "bollinger", "params": {"window": 20, "num_std": 2}}
    condition = {
        "type": "channel",
        "op": "exiting",
        "lower": {**band, "output": "lower"},
        "upper": {**band, "output": "upper"},
    }
    got = _fires(_spec(condition), closes)
    # Bars where the close sits within 1e-6 won of a band are ambiguous by rounding.
    ambiguous = {
        i
        for i in range(20, len(closes))
        if min(abs(closes[i] - upper[i]), abs(closes[i] - lower[i])) < 1e-6
        or min(abs(closes[i - 1] - upper[i - 1]), abs(closes[i - 1] - lower[i - 1])) < 1e-6
    }
    assert [i for i in got if i not in ambiguous] == [i for i in expected if i not in ambiguous]
