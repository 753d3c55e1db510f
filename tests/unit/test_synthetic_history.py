"""Synthetic paper-market history: deterministic, on the tick grid, inside sessions and limits,
consistent across timeframes, and ending at the reference price the live simulation starts from."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

import pytest

from brokers.paper.calendar import load_calendar
from brokers.paper.history import (
    HistoryUnavailable,
    regular_session_bars,
    synthetic_histories,
    synthetic_history,
)
from brokers.paper.symbols import SYMBOLS, by_code
from engines.market import KST, Candle, Timeframe, is_on_tick, price_limits

M1, M5, M15, M60, D1, W1 = (Timeframe(v) for v in ("1m", "5m", "15m", "60m", "1d", "1w"))
INTRADAY = (M1, M5, M15, Timeframe.M30, M60)
SAMSUNG = by_code("005930")
assert SAMSUNG is not None
# Friday 2025-03-07, 12:00 KST: mid-session, so the last completed session is Thursday the
# 6th. Monday the 3rd was a holiday (substitute for 3.1 Independence Movement Day).
END = datetime(2025, 3, 7, 12, 0, tzinfo=KST)
LAST_SESSION = date(2025, 3, 6)


@pytest.fixture(scope="module")
def sessions() -> dict[date, tuple[datetime, datetime]]:
    """XKRX sessions as {date: (open, close)} in UTC, straight from exchange_calendars."""
    sched = load_calendar().schedule.loc["2023-01-01":"2025-12-31"]
    return {
        label.date(): (o.to_pydatetime().astimezone(UTC), c.to_pydatetime().astimezone(UTC))
        for label, o, c in zip(sched.index, sched["open"], sched["close"], strict=True)
    }


def kst_day(c: Candle) -> date:
    return c.start.astimezone(KST).date()


def check_bars(bars: list[Candle], tf: Timeframe) -> None:
    """OHLC consistent, prices on the tick grid, volume positive, labels as the aggregator's."""
    assert bars
    for c in bars:
        assert c.timeframe is tf
        assert 0 < c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high, c
        for p in (c.open, c.high, c.low, c.close):
            assert type(p) is int and is_on_tick(p), c
        assert type(c.volume) is int and c.volume > 0, c
        assert c.start.tzinfo is not None and tf.bucket(c.start)[0] == c.start, c
    starts = [c.start for c in bars]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def aggregate(bars: list[Candle]) -> tuple[int, int, int, int, int]:
    return (
        bars[0].open,
        max(b.high for b in bars),
        min(b.low for b in bars),
        bars[-1].close,
        sum(b.volume for b in bars),
    )


# ---- determinism -----------------------------------------------------------------------


def test_same_seed_same_history_other_seed_or_symbol_differs():
    a = synthetic_history(SAMSUNG, SAMSUNG.ref_price, END, D1, 60, seed=7)
    assert a == synthetic_history("005930", SAMSUNG.ref_price, END, D1, 60, seed=7)
    assert a != synthetic_history(SAMSUNG, SAMSUNG.ref_price, END, D1, 60, seed=8)
    other = synthetic_history("000660", SAMSUNG.ref_price, END, D1, 60, seed=7)
    assert [c.close for c in other] != [c.close for c in a]


def test_more_bars_only_prepend_older_history():
    """The path is drawn newest-first, so the recent past does not depend on the depth asked."""
    long = synthetic_history(SAMSUNG, SAMSUNG.ref_price, END, D1, 300, seed=7)
    short = synthetic_history(SAMSUNG, SAMSUNG.ref_price, END, D1, 20, seed=7)
    assert long[-20:] == short
    m1_short = synthetic_history(SAMSUNG, SAMSUNG.ref_price, END, M1, 100, seed=7)
    both = synthetic_histories(SAMSUNG, SAMSUNG.ref_price, END, {M1: 2000, D1: 300}, seed=7)
    assert both[M1][-100:] == m1_short
    assert both[D1] == long


def test_the_time_of_day_of_end_does_not_matter_within_a_gap_between_sessions():
    after_close = datetime(2025, 3, 6, 15, 30, tzinfo=KST)
    next_morning = datetime(2025, 3, 7, 8, 59, tzinfo=KST)
    for tf in (D1, M5):
        assert synthetic_history(SAMSUNG, 71_300, after_close, tf, 50, 1) == synthetic_history(
            SAMSUNG, 71_300, next_morning, tf, 50, 1
        )


# ---- shape: grid, OHLC, sessions -------------------------------------------------------


@pytest.mark.parametrize("sym", SYMBOLS, ids=lambda s: f"{s.code}-{s.ref_price}")
def test_every_demo_symbol_daily_history_is_consistent_and_ends_at_ref(sym, sessions):
    bars = synthetic_history(sym, sym.ref_price, END, D1, 400, seed=7)
    assert len(bars) == 400
    check_bars(bars, D1)
    assert bars[-1].close == sym.ref_price
    assert kst_day(bars[-1]) == LAST_SESSION
    # each day inside the limits of the previous day's close (the first day's is not known)
    for prev, cur in zip(bars, bars[1:], strict=False):
        lower, upper = price_limits(prev.close)
        assert lower <= cur.low and cur.high <= upper, (prev, cur)
    # plausible: about 2% daily volatility, traded value between 100 million and 10 trillion won
    returns = [math.log(b.close / a.close) for a, b in zip(bars, bars[1:], strict=False)]
    assert 0.008 < statistics.pstdev(returns) < 0.05
    assert all(1e8 < c.volume * c.close < 1e13 for c in bars)


def test_daily_bars_are_exactly_the_trading_days(sessions):
    bars = synthetic_history(SAMSUNG, SAMSUNG.ref_price, END, D1, 250, seed=3)
    days = [kst_day(c) for c in bars]
    expected = sorted(d for d in sessions if d <= LAST_SESSION)[-250:]
    assert days == expected
    assert date(2025, 3, 3) not in days  # holiday
    assert all(d.weekday() < 5 for d in days)
    assert all(c.start.astimezone(KST).time() == time(9, 0) for c in bars)


@pytest.mark.parametrize("tf", INTRADAY, ids=str)
def test_intraday_bars_lie_inside_sessions(tf, sessions):
    bars = synthetic_history(SAMSUNG, SAMSUNG.ref_price, END, tf, 4 * regular_session_bars(tf), 7)
    check_bars(bars, tf)
    assert bars[-1].close == SAMSUNG.ref_price
    for c in bars:
        day = kst_day(c)
        assert day in sessions and day <= LAST_SESSION, c
        opened, closed = sessions[day]
        # the bar's bucket overlaps the session; minute bars start inside it
        assert c.start < closed and c.start + tf.span > opened, c
        local = c.start.astimezone(KST).time()
        assert time(9, 0) <= local < time(15, 30), c
    per_day = defaultdict(int)
    for c in bars:
        per_day[kst_day(c)] += 1
    # the four sessions before the end, skipping the Monday holiday
    assert sorted(per_day) == [date(2025, 2, 28), date(2025, 3, 4), date(2025, 3, 5), LAST_SESSION]
    assert set(per_day.values()) == {regular_session_bars(tf)}


def test_first_trading_day_of_the_year_opens_at_ten():
    end = datetime(2025, 1, 2, 16, 0, tzinfo=KST)
    both = synthetic_histories(SAMSUNG, SAMSUNG.ref_price, end, {M1: 330, M60: 6}, seed=7)
    m1 = both[M1]
    assert len(m1) == 330  # 10:00-15:30
    assert all(kst_day(c) == date(2025, 1, 2) for c in m1)
    assert m1[0].start.astimezone(KST).time() == time(10, 0)
    assert m1[-1].start.astimezone(KST).time() == time(15, 29)
    assert [c.start.astimezone(KST).hour for c in both[M60]] == [10, 11, 12, 13, 14, 15]


def test_timeframes_are_cut_from_one_path():
    """A daily bar is its 1m bars aggregated, and so are 5m, 15m and 60m bars."""
    n_days = 3
    wanted = {tf: n_days * regular_session_bars(tf) for tf in (M1, M5, M15, M60)}
    wanted[D1] = n_days
    got = synthetic_histories(SAMSUNG, SAMSUNG.ref_price, END, wanted, seed=11)
    minutes = got[M1]
    for tf in (M5, M15, M60):
        for bar in got[tf]:
            inside = [m for m in minutes if bar.start <= m.start < bar.start + tf.span]
            assert inside and aggregate(inside) == (
                bar.open,
                bar.high,
                bar.low,
                bar.close,
                bar.volume,
            )
    for day in got[D1]:
        inside = [m for m in minutes if kst_day(m) == kst_day(day)]
        assert len(inside) == 390
        assert aggregate(inside) == (day.open, day.high, day.low, day.close, day.volume)


def test_intraday_respects_the_daily_limits():
    got = synthetic_histories(SAMSUNG, SAMSUNG.ref_price, END, {D1: 6, M1: 5 * 390}, seed=5)
    prev_close = {kst_day(b): a.close for a, b in zip(got[D1], got[D1][1:], strict=False)}
    for c in got[M1]:
        lower, upper = price_limits(prev_close[kst_day(c)])
        assert lower <= c.low and c.high <= upper


def test_weekly_bars_are_whole_weeks_of_daily_bars():
    got = synthetic_histories(SAMSUNG, SAMSUNG.ref_price, END, {W1: 4, D1: 30}, seed=7)
    weeks, days = got[W1], got[D1]
    check_bars(weeks, W1)
    assert len(weeks) == 4 and weeks[-1].close == SAMSUNG.ref_price
    for w in weeks:
        local = w.start.astimezone(KST)
        assert local.weekday() == 0 and local.time() == time(9, 0)
        inside = [d for d in days if w.start <= d.start < w.start + timedelta(days=7)]
        assert inside and aggregate(inside) == (w.open, w.high, w.low, w.close, w.volume)
    # the week of the 3rd: Monday was a holiday, the week is labelled Monday all the same
    assert weeks[-1].start == datetime(2025, 3, 3, 9, 0, tzinfo=KST)


def test_every_tick_band_rounds_onto_its_grid():
    for ref in (
        563,
        1_999,
        2_905,
        4_995,
        7_350,
        19_990,
        24_750,
        49_950,
        198_900,
        358_500,
        1_045_000,
    ):
        got = synthetic_histories("005930", ref, END, {D1: 100, M1: 390}, seed=ref)
        for tf, bars in got.items():
            check_bars(bars, tf)
            assert bars[-1].close == ref


# ---- arguments ---------------------------------------------------------------------------


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        synthetic_history(SAMSUNG, 71_300, datetime(2025, 3, 7, 12), D1, 5, 7)
    with pytest.raises(ValueError, match="tick grid"):
        synthetic_history(SAMSUNG, 71_350, END, D1, 5, 7)
    with pytest.raises(ValueError, match="tick grid"):
        synthetic_history(SAMSUNG, 0, END, D1, 5, 7)
    with pytest.raises(ValueError, match=">= 0"):
        synthetic_history(SAMSUNG, 71_300, END, D1, -1, 7)
    with pytest.raises(ValueError):
        synthetic_history(SAMSUNG, 71_300, END, "2d", 5, 7)  # type: ignore[arg-type]
    assert synthetic_history(SAMSUNG, 71_300, END, D1, 0, 7) == []


def test_outside_the_calendar_is_history_unavailable():
    with pytest.raises(HistoryUnavailable, match="past the XKRX calendar"):
        synthetic_history(SAMSUNG, 71_300, datetime(2099, 1, 5, tzinfo=UTC), D1, 5, 7)
    with pytest.raises(HistoryUnavailable, match="first session"):
        synthetic_history(SAMSUNG, 71_300, END, D1, 100_000, 7)
    assert issubclass(HistoryUnavailable, ValueError)


def test_regular_session_bars():
    assert [regular_session_bars(tf) for tf in (M1, M5, M15, Timeframe.M30, M60, D1)] == [
        390,
        78,
        26,
        13,
        7,
        1,
    ]
    with pytest.raises(ValueError):
        regular_session_bars(W1)
