"""``pivot_high`` / ``pivot_low``: the level of the last confirmed pivot.

The tie rule is TradingView's (``engines/indicators/pivots.py`` explains it): a pivot
high at bar ``c`` is ``>=`` the ``left`` bars before it and ``>`` the ``right`` bars
after it, confirmed (reported) at bar ``c + right``; a pivot low mirrors it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.indicators import (
    INDICATOR_NAMES,
    MAX_WINDOW,
    PivotHigh,
    PivotLow,
    indicator_key,
    make_indicator,
)


def brute_force(values: list[float], left: int, right: int, *, high: bool) -> list[float | None]:
    """Per bar, the last confirmed pivot straight from the definition (O(n * window))."""
    out: list[float | None] = []
    level: float | None = None
    for i in range(len(values)):
        c = i - right
        if c - left >= 0:
            v = values[c]
            before = values[c - left : c]
            after = values[c + 1 : i + 1]
            if high and all(v >= b for b in before) and all(v > a for a in after):
                level = v
            if not high and all(v <= b for b in before) and all(v < a for a in after):
                level = v
        out.append(level)
    return out


def stream(ind: PivotHigh | PivotLow, values: list[float]) -> list[float | None]:
    return [ind.update(v) for v in values]


# -- hand-built series -----------------------------------------------------------------------


def test_a_peak_is_reported_right_bars_after_it():
    ph = PivotHigh(2, 2)
    #          bar: 0    1    2    3    4    5    6
    highs = [100, 103, 105, 102, 101, 104, 106]
    assert stream(ph, highs) == [None, None, None, None, 105, 105, 105]


def test_the_value_holds_until_the_next_confirmed_pivot():
    ph = PivotHigh(1, 1)
    # Pivots at bars 1 (5), 3 (4, lower: still the *latest*) and 6 (9).
    highs = [1, 5, 2, 4, 3, 3, 9, 1]
    assert stream(ph, highs) == [None, None, 5, 5, 4, 4, 4, 9]


def test_a_left_tie_is_a_pivot_a_right_tie_is_not():
    # bar 2 (7) ties bar 0 on its left: still a pivot, confirmed at bar 4.
    assert stream(PivotHigh(2, 2), [7, 3, 7, 4, 3]) == [None, None, None, None, 7]
    # bar 2 (7) ties bar 4 on its right: not a pivot; bar 4 has bar 2 on its left: pivot.
    assert stream(PivotHigh(2, 2), [1, 1, 7, 2, 7, 3, 2, 1]) == [None] * 6 + [7, 7]
    # The same for lows, mirrored.
    assert stream(PivotLow(2, 2), [3, 7, 3, 6, 7]) == [None, None, None, None, 3]
    assert stream(PivotLow(2, 2), [9, 9, 3, 8, 3, 7, 8, 9]) == [None] * 6 + [3, 3]


def test_a_plateau_pivots_on_its_last_bar():
    # Highs 105, 105 at bars 2-3: bar 2 has an equal bar on its right, bar 3 is the
    # pivot, confirmed one bar later (bar 4).
    highs = [100, 101, 105, 105, 102, 100, 100, 100]
    assert stream(PivotHigh(1, 1), highs) == [None] * 4 + [105] * 4
    lows = [96, 97, 95, 95, 98, 99, 99, 99]
    assert stream(PivotLow(1, 1), lows) == [None] * 4 + [95] * 4
    # A three-bar plateau with left=2: only its last bar qualifies.
    assert stream(PivotHigh(2, 1), [1, 7, 7, 7, 1, 1]) == [None] * 4 + [7, 7]


def test_a_double_top_moves_the_pivot_to_the_second_top():
    ph = PivotHigh(2, 2)
    highs = [1, 2, 10, 4, 10, 3, 2, 1]
    # bar 2: bar 4 (10) is within its right window -> no. bar 4: bar 2 is a left tie -> pivot.
    assert stream(ph, highs) == [None] * 6 + [10, 10]


def test_flat_and_monotonic_series_have_no_pivot():
    assert stream(PivotHigh(2, 2), [5.0] * 20) == [None] * 20
    assert stream(PivotLow(2, 2), [5.0] * 20) == [None] * 20
    assert stream(PivotHigh(1, 1), list(range(20))) == [None] * 20
    assert stream(PivotLow(1, 1), list(range(20, 0, -1))) == [None] * 20
    # A rising series has a pivot low nowhere either: the first bar lacks left bars.
    assert stream(PivotLow(1, 1), list(range(20))) == [None] * 20


def test_a_candidate_needs_all_its_left_bars():
    # Bar 0 is the highest but has no left bars; with left=3 the only candidate with
    # three left bars and one right bar is bar 3, which is low.
    assert stream(PivotHigh(3, 1), [9, 1, 5, 1, 1]) == [None] * 5
    # With left=2, bar 2 (5) has two left bars (9, 1): 5 < 9 -> not a pivot either.
    assert stream(PivotHigh(2, 1), [9, 1, 5, 1, 1]) == [None] * 5
    assert stream(PivotHigh(1, 1), [9, 1, 5, 1, 1]) == [None, None, None, 5, 5]


def test_no_look_ahead_the_value_only_changes_at_confirmation():
    """The value at bar i depends only on bars <= i: feeding a prefix gives a prefix."""
    highs = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]
    full = stream(PivotHigh(2, 3), highs)
    for n in range(len(highs)):
        assert stream(PivotHigh(2, 3), highs[:n]) == full[:n]


def test_pivot_low_is_pivot_high_of_the_negated_series():
    values = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 4, 6, 2, 2, 6]
    for left, right in [(1, 1), (2, 1), (1, 3), (3, 3)]:
        highs = stream(PivotHigh(left, right), [-v for v in values])
        lows = stream(PivotLow(left, right), values)
        assert lows == [None if h is None else -h for h in highs]


# -- against the brute force ----------------------------------------------------------------

prices = st.one_of(
    st.lists(st.integers(1, 4), max_size=80),  # a coarse grid: ties and plateaus
    st.lists(st.floats(1.0, 1e6, allow_nan=False), max_size=80),
)


@settings(max_examples=300, deadline=None)
@given(values=prices, left=st.integers(1, 6), right=st.integers(1, 6))
def test_property_matches_brute_force(values: list[float], left: int, right: int):
    for cls, high in ((PivotHigh, True), (PivotLow, False)):
        ind = cls(left, right)
        expected = brute_force(values, left, right, high=high)
        for i, v in enumerate(values):
            peeked = ind.peek(v)
            assert peeked == copy.deepcopy(ind).update(v), (cls.name, i)
            assert ind.update(v) == peeked == expected[i], (cls.name, i)
            assert ind.value == expected[i]
            assert ind.ready == (expected[i] is not None)
            # Bounded state: nothing grows with the history.
            assert len(ind._line) <= right + 1
            assert len(ind._before._q) <= left and len(ind._after._q) <= right


@settings(max_examples=100, deadline=None)
@given(values=prices, ticks=st.lists(st.integers(1, 4), max_size=80), right=st.integers(1, 4))
def test_property_peek_leaves_no_trace(values: list[float], ticks: list[int], right: int):
    """Peeking at forming bars between closes never changes what updates return."""
    peeker, plain = PivotHigh(2, right), PivotHigh(2, right)
    for i, v in enumerate(values):
        if i < len(ticks):
            peeker.peek(ticks[i])
            peeker.peek(v)
        assert peeker.update(v) == plain.update(v)


def test_peek_confirms_a_pivot_only_for_that_tick():
    ph = PivotHigh(1, 1)
    for h in [1, 5]:
        ph.update(h)
    assert ph.peek(2) == 5  # if the bar closed at 2, bar 1 would be confirmed
    assert ph.peek(5) is None  # at 5 it would tie on the right: not a pivot
    assert ph.value is None and not ph.ready
    assert ph.update(6) is None  # the bar closed higher: no pivot after all


# -- registry and parameters ----------------------------------------------------------------


def test_registry_names_defaults_and_keys():
    assert INDICATOR_NAMES[-2:] == ("pivot_high", "pivot_low")
    ph, pl = make_indicator("pivot_high"), make_indicator("pivot_low")
    assert isinstance(ph, PivotHigh) and isinstance(pl, PivotLow)
    assert ph.inputs == ("high",) and pl.inputs == ("low",)
    assert ph.params == {"left": 5, "right": 5}
    assert indicator_key("pivot_high") == "pivot_high(left=5,right=5)"
    assert indicator_key("pivot_low", {"left": 3, "right": 2}) == "pivot_low(left=3,right=2)"
    assert ph.warmup == 11 and PivotLow(3, 2).warmup == 6


@pytest.mark.parametrize("name", ["pivot_high", "pivot_low"])
@pytest.mark.parametrize("param", ["left", "right"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (0, "must be an int >= 1, got 0"),
        (-2, "must be an int >= 1, got -2"),
        (True, "must be an int >= 1, got True"),
        (False, "must be an int >= 1, got False"),
        (2.0, "must be an int >= 1, got 2.0"),
        (1.5, "must be an int >= 1, got 1.5"),
        ("3", "must be an int >= 1, got '3'"),
        (None, "must be an int >= 1, got None"),
        (MAX_WINDOW + 1, f"must be at most {MAX_WINDOW}"),
    ],
)
def test_bad_parameters_name_the_parameter(name: str, param: str, bad: Any, message: str):
    with pytest.raises(ValueError, match=f"^{param} {message}"):
        make_indicator(name, {param: bad})


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="pivot_high: unknown parameter.s. window"):
        make_indicator("pivot_high", {"window": 5})
