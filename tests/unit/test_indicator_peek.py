"""``Indicator.peek``: the value "as if the forming bar closed now", committing nothing.

The reference is the generic path, ``copy.deepcopy(ind).update(*row)``: every
indicator's O(1) override must return exactly (``==``) what it returns, and leave the
indicator's whole state (slots, nested helpers, buffers) as it was, so that the next
``update`` or ``peek`` is the one it would have been had ``peek`` never been called.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from collections import deque
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.indicators import INDICATOR_NAMES, Bollinger, Indicator, make_indicator
from engines.indicators.base import RollingExtreme, RollingMoments, RollingSum

Row = tuple[Any, ...]

PARAM_SETS: dict[str, list[dict[str, Any]]] = {
    "sma": [{"window": 1}, {"window": 3}, {"window": 7}],
    "ema": [{"window": 1}, {"window": 4}],
    "wma": [{"window": 1}, {"window": 2}, {"window": 5}],
    "rsi": [{"window": 1}, {"window": 3}, {}],
    "macd": [{"fast": 1, "slow": 2, "signal": 1}, {"fast": 3, "slow": 5, "signal": 2}],
    "bollinger": [{"window": 1}, {"window": 3, "num_std": 1.5}, {"window": 6}],
    "atr": [{"window": 1}, {"window": 3}],
    "stoch": [{"window": 1, "smooth": 1}, {"window": 3, "smooth": 2}, {"window": 5, "smooth": 3}],
    "vwap": [{}],
    "obv": [{}],
    "highest": [{"window": 1}, {"window": 2}, {"window": 4}],
    "lowest": [{"window": 1}, {"window": 2}, {"window": 4}],
    "high_52w": [{"weeks": 1}],
    "low_52w": [{"weeks": 1}],
    "volume_sma": [{"window": 1}, {"window": 4}],
    "pivot_high": [{"left": 1, "right": 1}, {"left": 2, "right": 3}, {"left": 3, "right": 1}],
    "pivot_low": [{"left": 1, "right": 1}, {"left": 2, "right": 3}, {"left": 3, "right": 1}],
}

CASES = [(name, params) for name, sets in PARAM_SETS.items() for params in sets]
IDS = [f"{name}{params}" for name, params in CASES]


def test_every_registered_indicator_has_param_sets():
    """A new indicator must be added here, so its ``peek`` is tested too."""
    assert set(PARAM_SETS) == set(INDICATOR_NAMES)


@pytest.mark.parametrize("name", INDICATOR_NAMES)
def test_every_indicator_overrides_the_generic_peek(name: str):
    """The deepcopy default is a correct fallback, not what the runner should pay per
    tick: every registered indicator has its own O(1) ``peek``."""
    ind = make_indicator(name, PARAM_SETS[name][0])
    assert type(ind).peek is not Indicator.peek


# -- helpers -----------------------------------------------------------------------------


def state(obj: Any) -> bytes:
    """Everything ``obj`` holds (slots across the MRO, nested helpers, buffers), as
    bytes: pickling walks ``__slots__`` like ``deepcopy`` does, and is exact (a float's
    bits, ``-0.0`` included) and fast enough to take twice per peek."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def rows_of(ind: Indicator[Any], bars: list[dict[str, Any]]) -> list[Row]:
    return [tuple(bar[field] for field in ind.inputs) for bar in bars]


def check_peek_stream(
    name: str, params: dict[str, Any], rows: list[Row], ticks: list[list[Row]]
) -> None:
    """Before each bar closes, peek at some forming states (``ticks``) and at the final
    row: each peek equals deepcopy-then-update and changes no state; then the update
    equals that of a twin that never peeked."""
    ind = make_indicator(name, params)
    twin = make_indicator(name, params)
    for i, row in enumerate(rows):
        for tick in [*ticks[i], row]:
            before = state(ind)
            expected = copy.deepcopy(ind).update(*tick)
            assert ind.peek(*tick) == expected, (name, params, i, tick)
            assert state(ind) == before, (name, params, i, "peek changed the state")
        got = ind.update(*row)
        assert got == twin.update(*row), (name, params, i)
        assert state(ind) == state(twin), (name, params, i)


# -- random bars ---------------------------------------------------------------------------


@st.composite
def ohlcv_bars(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Random OHLCV bars of four shapes: a coarse price grid (many equal prices and
    flat stretches), arbitrary floats, an exponential trend up or down with noise, and
    a flat run with a level jump (a limit lock). Volumes include 0; sessions change at
    random."""
    n = draw(st.integers(1, 40))
    shape = draw(st.sampled_from(["grid", "float", "trend", "lock"]))
    if shape == "grid":
        close = [50 * v for v in draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))]
        ups = [50 * v for v in draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))]
        downs = [50 * v for v in draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))]
    else:
        if shape == "float":
            close = draw(st.lists(st.floats(1.0, 1e5), min_size=n, max_size=n))
        elif shape == "trend":
            rate = draw(st.sampled_from([-0.2, -0.03, 0.03, 0.2]))
            noise = draw(st.lists(st.floats(-0.01, 0.01), min_size=n, max_size=n))
            close = [1_000.0 * math.exp(rate * t + e) for t, e in enumerate(noise)]
        else:
            cut = draw(st.integers(0, n))
            close = [70_000.0] * cut + [91_000.0] * (n - cut)
        spread = st.sampled_from([0.0, 0.0, 0.001, 0.02])
        ups = [
            c * s
            for c, s in zip(close, draw(st.lists(spread, min_size=n, max_size=n)), strict=True)
        ]
        downs = [
            c * s
            for c, s in zip(close, draw(st.lists(spread, min_size=n, max_size=n)), strict=True)
        ]
    volume = draw(st.lists(st.sampled_from([0, 0, 1, 7, 1_000, 2.5e6]), min_size=n, max_size=n))
    new_session = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    bars: list[dict[str, Any]] = []
    session = 0
    prev = close[0]
    for i in range(n):
        session += int(new_session[i] and i % 3 == 0)
        top, bottom = max(prev, close[i]), min(prev, close[i])
        bars.append(
            {
                "close": close[i],
                "high": top + ups[i],
                "low": bottom - downs[i],
                "volume": volume[i],
                "session": session,
            }
        )
        prev = close[i]
    return bars


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars=ohlcv_bars(), data=st.data())
def test_property_peek_equals_deepcopy_then_update(bars: list[dict[str, Any]], data: st.DataObject):
    n = len(bars)
    # Forming states peeked before each close: other bars of the series (so prices,
    # extremes and sessions really differ from the final row).
    picks = data.draw(
        st.lists(st.lists(st.integers(0, n - 1), max_size=2), min_size=n, max_size=n),
        label="ticks",
    )
    for name, params in CASES:
        ind = make_indicator(name, params)
        rows = rows_of(ind, bars)
        ticks = [[rows[j] for j in js] for js in picks]
        check_peek_stream(name, params, rows, ticks)


def _long_bars(kind: str, n: int = 800, seed: int = 11) -> list[dict[str, Any]]:
    """Long seeded series that pass every periodic exact re-sum many times."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if kind == "random":
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    elif kind == "downtrend":  # 1,000,000 -> ~2,500: the case the re-sums exist for
        close = 1e6 * np.exp(-0.004 * t + rng.normal(0, 0.003, n))
    else:  # KRX: whole won on a 50-won grid, with limit-locked stretches
        close = np.round(70_000 * np.exp(np.cumsum(rng.normal(0, 0.01, n))) / 50) * 50
        close[200:240] = close[200]
        close[600:660] = close[600]
    high = close * (1 + np.abs(rng.normal(0, 0.004, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.004, n)))
    volume = rng.integers(0, 2_000_000, n)
    return [
        {
            "close": float(c),
            "high": float(h),
            "low": float(lo),
            "volume": int(v),
            "session": i // 40,
        }
        for i, (c, h, lo, v) in enumerate(zip(close, high, low, volume, strict=True))
    ]


LONG_CASES = [
    ("sma", {"window": 20}),
    ("volume_sma", {"window": 20}),
    ("wma", {"window": 9}),
    ("ema", {"window": 12}),
    ("rsi", {}),
    ("macd", {}),
    ("bollinger", {}),
    ("bollinger", {"window": 5, "num_std": 1.5}),
    ("atr", {}),
    ("stoch", {}),
    ("vwap", {}),
    ("obv", {}),
    ("highest", {"window": 20}),
    ("lowest", {"window": 20}),
    ("pivot_high", {}),
    ("pivot_low", {"left": 3, "right": 2}),
]


@pytest.mark.parametrize("kind", ["random", "downtrend", "krx"])
@pytest.mark.parametrize(("name", "params"), LONG_CASES, ids=[f"{n}{p}" for n, p in LONG_CASES])
def test_peek_on_long_series(name: str, params: dict[str, Any], kind: str):
    bars = _long_bars(kind)
    ind = make_indicator(name, params)
    rows = rows_of(ind, bars)
    # One forming state per bar: the previous bar's row with this bar's session.
    ticks: list[list[Row]] = [[]]
    for prev, row in zip(rows, rows[1:], strict=False):
        ticks.append([prev[:-1] + row[-1:] if name == "vwap" else prev])
    check_peek_stream(name, params, rows, ticks)


# -- warm-up --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_peek_during_warmup_returns_none_like_update(name: str, params: dict[str, Any]):
    bars = _long_bars("random", n=60)
    ind = make_indicator(name, params)
    for i, row in enumerate(rows_of(ind, bars), 1):
        peeked = ind.peek(*row)
        if i < ind.warmup:
            assert peeked is None, (name, i)
        updated = ind.update(*row)
        assert peeked == updated, (name, i)
        if i < ind.warmup:
            assert updated is None and not ind.ready


def test_peek_does_not_make_an_indicator_ready():
    sma = make_indicator("sma", {"window": 3})
    sma.update(1.0)
    sma.update(2.0)
    assert sma.peek(3.0) == 2.0
    assert not sma.ready and sma.value is None
    assert sma.peek(6.0) == 3.0
    assert sma.update(9.0) == 4.0


# -- the generic path and the helpers' edge cases ----------------------------------------


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_generic_peek_copies_slots_and_matches_the_override(name: str, params: dict[str, Any]):
    """``Indicator.peek`` (deepcopy) on ``__slots__`` classes: leaves the original
    untouched, shares no buffer with the copy, and agrees with the O(1) override."""
    bars = _long_bars("random", n=40)
    ind = make_indicator(name, params)
    for row in rows_of(ind, bars):
        before = state(ind)
        generic = Indicator.peek(ind, *row)
        assert state(ind) == before
        assert generic == ind.peek(*row)
        ind.update(*row)
    clone = copy.deepcopy(ind)
    assert state(clone) == state(ind)
    assert not _mutables(ind) & _mutables(clone), "the copy shares mutable state"


def _mutables(obj: Any, seen: set[int] | None = None) -> set[int]:
    """ids of every buffer and nested helper object reachable through the slots."""
    seen = set() if seen is None else seen
    slots = [s for cls in type(obj).__mro__ for s in getattr(cls, "__slots__", ())]
    for slot in slots:
        value = getattr(obj, slot, None)
        if id(value) in seen:
            continue
        if isinstance(value, deque | list | dict):
            seen.add(id(value))
        elif getattr(type(value), "__slots__", None) and not dataclasses.is_dataclass(value):
            seen.add(id(value))
            _mutables(value, seen)
    return seen


def test_vwap_session_sentinel_survives_deepcopy():
    """A bare ``object()`` sentinel would come back from ``deepcopy`` as a new object."""
    vwap = make_indicator("vwap")
    assert copy.deepcopy(vwap)._session is vwap._session  # type: ignore[attr-defined]
    assert vwap.peek(10, 10, 10, 5, None) == 10
    assert vwap.update(10, 10, 10, 5, None) == 10


def test_vwap_peek_rejects_negative_volume_like_update():
    vwap = make_indicator("vwap")
    with pytest.raises(ValueError, match="volume must be >= 0"):
        vwap.peek(1, 1, 1, -1, "d")


@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_rolling_sum_peek_on_the_exact_resum_push(window: int):
    """Values 1e16, then ones: the running sum loses the ones, the exact re-sum does
    not; the peek on the re-summing push must be the exact one too."""
    s = RollingSum(window)
    values = [1e16, *[1.0] * (4 * window), 3.0, 1e-3, 1e16, 1.0, 1.0]
    for x in values:
        expected = copy.deepcopy(s)
        expected.push(x)
        assert s.peek(x) == expected.total
        s.push(x)
        assert s.total == expected.total


def test_rolling_moments_peek_on_tight_windows():
    """A run then a limit lock: the tight-window re-sum fires inside ``mean_std``; the
    peek mirrors it (bands exactly collapsed) without counting or keeping it."""
    m = RollingMoments(20)
    lock = 91_013.9  # prices where the running sums keep a residue (round ones may not)
    tight = 0
    for price in [*[70_000.37 + 697.13 * i for i in range(30)], *[lock] * 25]:
        expected = copy.deepcopy(m)
        expected.push(price)
        resums = m.exact_resums
        assert m.peek_mean_std(price) == expected.mean_std()
        assert m.exact_resums == resums
        m.push(price)
        before = m.exact_resums
        m.mean_std()
        tight += m.exact_resums - before
    assert tight >= 1, "the series must exercise the tight-window re-sum"
    assert m.peek_mean_std(lock) == (lock, 0.0)


def test_bollinger_peek_after_limit_lock_collapses_bands():
    bb = Bollinger(20, 2.0)
    for price in [*[70_000 + 700 * i for i in range(30)], *[91_000] * 24]:
        bb.update(price)
    out = bb.peek(91_000)
    assert out is not None
    assert out.upper == out.mid == out.lower == 91_000


@pytest.mark.parametrize("highest", [True, False])
@pytest.mark.parametrize("window", [1, 2, 3, 4])
def test_rolling_extreme_peek_through_evictions(highest: bool, window: int):
    """Falling, rising, flat and zig-zag runs (with signed zeros) force every branch:
    the new value dominating, the front surviving, the front expiring with and
    without a surviving second entry."""
    values = [5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 2.0, 3.0, 0.0, -0.0, 0.0, 3.0, 1.0, 3.0]
    values += [2.0, 1.0, 0.5, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0]
    ext = RollingExtreme(window, highest=highest)
    for i, x in enumerate(values):
        for y in (x, x + 1, x - 1, -0.0, 0.0):
            expected = copy.deepcopy(ext).push(y)
            got = ext.peek(y)
            assert repr(got) == repr(expected), (i, y)
        ext.push(x)
