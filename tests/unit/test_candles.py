"""Timeframes and the candle aggregator: KST bucket edges, closes, gaps, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.market import KST, Candle, CandleAggregator, Tick, Timeframe

SYM = "005930"
M1, M5, M60, D1, W1 = (Timeframe(v) for v in ("1m", "5m", "60m", "1d", "1w"))


def kst(day: int, hour: int, minute: int = 0, second: float = 0) -> datetime:
    """An aware time in June 2024 KST (2024-06-03 is a Monday), as UTC."""
    whole = int(second)
    micro = round((second - whole) * 1e6)
    return datetime(2024, 6, day, hour, minute, whole, micro, tzinfo=KST).astimezone(UTC)


def tick(ts: datetime, price: int = 70_000, volume: int = 1, symbol: str = SYM) -> Tick:
    return Tick(symbol, price, volume, ts)


# -- buckets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tf", "at", "start", "end"),
    [
        (M1, kst(3, 9, 0, 0), kst(3, 9, 0), kst(3, 9, 1)),
        (M1, kst(3, 9, 0, 59.999999), kst(3, 9, 0), kst(3, 9, 1)),
        (M1, kst(3, 9, 1, 0), kst(3, 9, 1), kst(3, 9, 2)),
        (M5, kst(3, 9, 4, 59.5), kst(3, 9, 0), kst(3, 9, 5)),
        (M5, kst(3, 9, 5), kst(3, 9, 5), kst(3, 9, 10)),
        (Timeframe.M15, kst(3, 9, 29, 59), kst(3, 9, 15), kst(3, 9, 30)),
        (Timeframe.M30, kst(3, 15, 29, 59), kst(3, 15, 0), kst(3, 15, 30)),
        (M60, kst(3, 9, 59, 59), kst(3, 9), kst(3, 10)),
        (M60, kst(3, 15, 25), kst(3, 15), kst(3, 16)),  # the closing auction
        # before the open (pre-open after-hours): counted backwards from 09:00
        (M1, kst(3, 8, 59, 59), kst(3, 8, 59), kst(3, 9)),
        (M5, kst(3, 8, 41), kst(3, 8, 40), kst(3, 8, 45)),
        (M60, kst(3, 8, 30), kst(3, 8), kst(3, 9)),
        # a day: the KST calendar day, labelled with its 09:00 open
        (D1, kst(3, 0, 0), kst(3, 9), kst(4, 0)),
        (D1, kst(3, 8, 40), kst(3, 9), kst(4, 0)),
        (D1, kst(3, 17, 59), kst(3, 9), kst(4, 0)),
        (D1, kst(3, 23, 59, 59.999999), kst(3, 9), kst(4, 0)),
        # a week: Monday 00:00 KST to the next Monday, labelled Monday 09:00
        (W1, kst(3, 0, 0), kst(3, 9), kst(10, 0)),
        (W1, kst(7, 15, 30), kst(3, 9), kst(10, 0)),
        (W1, kst(9, 23, 59), kst(3, 9), kst(10, 0)),
        (W1, kst(10, 0, 0), kst(10, 9), kst(17, 0)),
    ],
)
def test_bucket_edges_in_kst(tf: Timeframe, at: datetime, start: datetime, end: datetime):
    assert tf.bucket(at) == (start, end)
    assert end - tf.span <= at < end


def test_day_boundary_is_kst_midnight_not_utc_midnight():
    # 2024-06-03 23:59:59 KST is 14:59:59 UTC; 15:00 UTC is already the 4th in Seoul.
    before = datetime(2024, 6, 3, 14, 59, 59, tzinfo=UTC)
    after = datetime(2024, 6, 3, 15, 0, 0, tzinfo=UTC)
    assert D1.bucket(before)[0] == kst(3, 9)
    assert D1.bucket(after)[0] == kst(4, 9)


def test_bucket_accepts_any_aware_zone_and_returns_utc():
    at = datetime(2024, 6, 3, 9, 7, tzinfo=KST)
    start, end = M5.bucket(at)
    assert start == kst(3, 9, 5) and start.tzinfo is UTC and end.tzinfo is UTC


def test_timeframe_values_are_stable():
    assert [tf.value for tf in Timeframe] == ["1m", "5m", "15m", "30m", "60m", "1d", "1w"]
    assert [tf.minutes for tf in Timeframe] == [1, 5, 15, 30, 60, None, None]


# -- aggregation ----------------------------------------------------------------------------


def test_a_candle_closes_when_a_later_bucket_starts_with_ohlc_and_summed_volume():
    agg = CandleAggregator([M1])
    assert agg.on_tick(tick(kst(3, 9, 0, 1), 70_000, 10)) == []
    assert agg.on_tick(tick(kst(3, 9, 0, 20), 70_300, 5)) == []
    assert agg.on_tick(tick(kst(3, 9, 0, 40), 69_800, 7)) == []
    assert agg.on_tick(tick(kst(3, 9, 0, 59.9), 70_100, 3)) == []
    closed = agg.on_tick(tick(kst(3, 9, 1, 0), 70_200, 1))
    assert closed == [Candle(SYM, M1, kst(3, 9, 0), 70_000, 70_300, 69_800, 70_100, 25)]
    assert agg.current(SYM, M1) == Candle(SYM, M1, kst(3, 9, 1), 70_200, 70_200, 70_200, 70_200, 1)


def test_gaps_without_ticks_produce_no_candles():
    agg = CandleAggregator([M1, M5])
    agg.on_tick(tick(kst(3, 9, 0, 10), 100))
    closed = agg.on_tick(tick(kst(3, 9, 7, 30), 200))
    assert [(c.timeframe, c.start, c.close) for c in closed] == [
        (M1, kst(3, 9, 0), 100),
        (M5, kst(3, 9, 0), 100),
    ]
    assert agg.current(SYM, M1).start == kst(3, 9, 7)
    assert agg.current(SYM, M5).start == kst(3, 9, 5)


def test_several_timeframes_close_in_order_at_a_day_and_week_boundary():
    agg = CandleAggregator([M1, M60, D1, W1])
    agg.on_tick(tick(kst(7, 15, 29), 100, 2))  # Friday's close
    agg.on_tick(tick(kst(7, 17, 30), 101, 3))  # Friday after-hours: still Friday
    closed = agg.on_tick(tick(kst(10, 8, 40), 102, 4))  # Monday pre-open
    assert [(c.timeframe, c.start, c.volume) for c in closed] == [
        (M1, kst(7, 17, 30), 3),
        (M60, kst(7, 17), 3),
        (D1, kst(7, 9), 5),
        (W1, kst(3, 9), 5),
    ]
    assert agg.current(SYM, D1).start == kst(10, 9)
    assert agg.current(SYM, W1).start == kst(10, 9)


def test_symbols_are_independent():
    agg = CandleAggregator([M1])
    agg.on_tick(tick(kst(3, 9, 0), 100, symbol="A"))
    agg.on_tick(tick(kst(3, 9, 0, 30), 200, symbol="B"))
    assert agg.on_tick(tick(kst(3, 9, 2), 300, symbol="B")) == [
        Candle("B", M1, kst(3, 9, 0), 200, 200, 200, 200, 1)
    ]
    assert agg.current("A", M1).close == 100
    assert agg.current("C", M1) is None


def test_close_until_closes_only_ended_buckets_then_late_ticks_are_dropped():
    agg = CandleAggregator([M1, M5])
    agg.on_tick(tick(kst(3, 9, 3, 10), 100, 4))
    assert agg.close_until(kst(3, 9, 3, 59)) == []
    closed = agg.close_until(kst(3, 9, 4))
    assert closed == [Candle(SYM, M1, kst(3, 9, 3), 100, 100, 100, 100, 4)]
    assert agg.current(SYM, M1) is None
    # a late print for the closed minute: dropped (the candle is out), counted
    assert agg.on_tick(tick(kst(3, 9, 3, 50), 90, 1)) == []
    assert agg.late_ticks == 1
    assert agg.current(SYM, M5).volume == 5  # the 5m bucket was still open: it counts
    assert agg.close_until(kst(3, 9, 10)) == [Candle(SYM, M5, kst(3, 9, 0), 100, 100, 90, 90, 5)]
    assert agg.close_until(kst(3, 9, 10)) == []


def test_a_tick_older_than_the_open_candle_is_late():
    agg = CandleAggregator([M1])
    agg.on_tick(tick(kst(3, 9, 5)))
    assert agg.on_tick(tick(kst(3, 9, 4, 59))) == []
    assert agg.late_ticks == 1
    assert agg.current(SYM, M1).volume == 1


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (Tick(SYM, 100, 1, datetime(2024, 6, 3, 9, 0)), "timezone-aware"),
        (Tick(SYM, 0, 1, kst(3, 9)), "price must be positive"),
        (Tick(SYM, -5, 1, kst(3, 9)), "price must be positive"),
        (Tick(SYM, 100, -1, kst(3, 9)), "volume must be >= 0"),
        (Tick("", 100, 1, kst(3, 9)), "symbol must not be empty"),
    ],
)
def test_bad_ticks_are_rejected(bad: Tick, message: str):
    agg = CandleAggregator([M1])
    with pytest.raises(ValueError, match=message):
        agg.on_tick(bad)


def test_bad_configuration_and_naive_timer_are_rejected():
    with pytest.raises(ValueError, match="at least one timeframe"):
        CandleAggregator([])
    with pytest.raises(ValueError, match="duplicate timeframes"):
        CandleAggregator([M1, Timeframe("1m")])
    with pytest.raises(ValueError, match="'2h' is not a valid Timeframe"):
        CandleAggregator(["2h"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="timezone-aware"):
        CandleAggregator([M1]).close_until(datetime(2024, 6, 3, 9))


def test_string_timeframes_are_accepted():
    assert CandleAggregator(["1m", "1d"]).timeframes == (M1, D1)  # type: ignore[list-item]


# -- property: equal to grouping ticks by bucket ------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 3 * 86_400),  # seconds to the next tick: gaps up to 3 days
            st.integers(1, 500_000),
            st.integers(0, 1_000),
            st.sampled_from(["A", "B"]),
        ),
        min_size=1,
        max_size=80,
    ),
    frames=st.lists(st.sampled_from(list(Timeframe)), min_size=1, max_size=7, unique=True),
)
def test_candles_equal_a_brute_force_grouping(steps, frames):
    t = kst(3, 8, 0)
    ticks = []
    for gap, price, volume, symbol in steps:
        t += timedelta(seconds=gap)
        ticks.append(tick(t, price, volume, symbol))
    agg = CandleAggregator(frames)
    got: list[Candle] = []
    for tk in ticks:
        got.extend(agg.on_tick(tk))
    got.extend(agg.close_until(t + timedelta(days=8)))
    assert agg.late_ticks == 0

    expected: dict[tuple[str, Timeframe, datetime], list[Tick]] = {}
    for tk in ticks:
        for tf in frames:
            expected.setdefault((tk.symbol, tf, tf.bucket(tk.ts)[0]), []).append(tk)
    want = {
        key: Candle(
            key[0],
            key[1],
            key[2],
            group[0].price,
            max(x.price for x in group),
            min(x.price for x in group),
            group[-1].price,
            sum(x.volume for x in group),
        )
        for key, group in expected.items()
    }
    assert len(got) == len(want)
    assert {(c.symbol, c.timeframe, c.start): c for c in got} == want
