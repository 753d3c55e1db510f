"""The takeover bar plan: which rebuilt bars are closed and which are forming (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.runtime.bar_recovery import Recovered, plan
from engines.market import KST, Candle, CandleAggregator, Tick, Timeframe

SYM = "005930"
M1, M5, M15, M30, M60, D1, W1 = (
    Timeframe(v) for v in ("1m", "5m", "15m", "30m", "60m", "1d", "1w")
)
INTRADAY = (M1, M5, M15, M30, M60)


def kst(day: int, hour: int, minute: int = 0, second: float = 0) -> datetime:
    """An aware time in June 2024 KST (2024-06-03 is a Monday), as UTC."""
    whole = int(second)
    micro = round((second - whole) * 1e6)
    return datetime(2024, 6, day, hour, minute, whole, micro, tzinfo=KST).astimezone(UTC)


def at(hour: int, minute: int) -> datetime:
    return kst(3, hour, minute)


def minute(hour: int, mi: int) -> Candle:
    """A 1m candle of June 3rd with prices and volume that differ from minute to minute."""
    key = hour * 60 + mi
    open_ = 10_000 + 10 * ((key * 7) % 13)
    high = open_ + 10 * ((key * 3) % 5)
    low = open_ - 10 * ((key * 5) % 4)
    close = low if key % 2 else high
    return Candle(SYM, M1, at(hour, mi), open_, high, low, close, 1 + (key * 11) % 17)


def minutes(hour: int, first: int, last: int, skip: Iterable[int] = ()) -> list[Candle]:
    gaps = set(skip)
    return [minute(hour, m) for m in range(first, last + 1) if m not in gaps]


def merge(ms: Sequence[Candle], tf: Timeframe) -> dict[datetime, Candle]:
    """Reference roll-up, bucket by bucket (independent of ``roll_up``)."""
    groups: dict[datetime, list[Candle]] = {}
    for m in ms:
        groups.setdefault(tf.bucket(m.start)[0], []).append(m)
    return {
        start: Candle(
            SYM,
            tf,
            start,
            g[0].open,
            max(m.high for m in g),
            min(m.low for m in g),
            g[-1].close,
            sum(m.volume for m in g),
        )
        for start, g in groups.items()
    }


def of(bars: Iterable[Candle], tf: Timeframe) -> list[Candle]:
    return [b for b in bars if b.timeframe is tf]


# -- nothing to do ----------------------------------------------------------------------------


def test_nothing_fetched_plans_nothing():
    stored = minutes(9, 0, 9)
    got = plan([], stored, {M1: at(9, 9)}, INTRADAY, None)
    assert got.closed == [] and got.forming == []
    assert got == Recovered()
    assert plan([], [], {}, INTRADAY, at(9, 0)) == Recovered()


# -- closed and forming -----------------------------------------------------------------------


def test_fetched_minutes_close_all_but_the_last_and_a_covered_5m_bucket_rolls_up():
    stored = minutes(9, 0, 2, skip=[1])  # 09:00, 09:02 (09:01 quiet)
    fetched = minutes(9, 3, 7, skip=[5])  # 09:03, 09:04, 09:06, 09:07
    last = {M1: at(9, 2), M5: at(8, 55)}
    got = plan(fetched, stored, last, [M1, M5], None)

    assert of(got.closed, M1) == fetched[:-1]
    assert of(got.forming, M1) == [fetched[-1]]
    want = merge(stored + fetched, M5)
    assert of(got.closed, M5) == [want[at(9, 0)]]
    assert want[at(9, 0)].open == stored[0].open  # the stored minutes are in it
    assert want[at(9, 0)].volume == sum(m.volume for m in stored + fetched[:2])
    assert of(got.forming, M5) == [want[at(9, 5)]]
    assert want[at(9, 5)].close == fetched[-1].close
    assert len(got.closed) == len(fetched[:-1]) + 1
    assert len(got.forming) == 2
    assert got.as_of == fetched[-1].start + timedelta(minutes=1)  # the end of the last minute


def test_fetched_minutes_only_without_stored_ones():
    fetched = minutes(9, 10, 13)
    got = plan(fetched, [], {M1: at(9, 9), M5: at(9, 5)}, [M1, M5], None)
    assert got.closed == fetched[:-1]
    assert got.forming == [fetched[-1], merge(fetched, M5)[at(9, 10)]]


def test_buckets_at_or_before_the_last_stored_one_are_not_closed():
    stored = minutes(9, 0, 9)
    fetched = minutes(9, 10, 21, skip=[17])
    last = {M1: at(9, 9), M5: at(9, 5), M15: at(9, 0)}
    got = plan(fetched, stored, last, [M1, M5, M15], None)
    every = stored + fetched

    assert of(got.closed, M1) == fetched[:-1]
    fives = merge(every, M5)
    assert of(got.closed, M5) == [fives[at(9, 10)], fives[at(9, 15)]]  # not 09:00, not 09:05
    assert of(got.forming, M5) == [fives[at(9, 20)]]
    assert of(got.closed, M15) == []  # 09:00 is stored already
    assert of(got.forming, M15) == [merge(every, M15)[at(9, 15)]]
    # with nothing stored for 5m, the buckets left out above are closed: the filter did it
    again = plan(fetched, stored, {M1: at(9, 9)}, [M5], None)
    assert [b.start for b in again.closed] == [at(9, 0), at(9, 5), at(9, 10), at(9, 15)]


def test_stored_minutes_at_or_after_the_first_fetched_one_are_dropped():
    stored = [*minutes(9, 0, 4), replace(minute(9, 5), high=99_000, volume=1_000)]
    fetched = minutes(9, 5, 11)
    got = plan(fetched, stored, {M1: at(9, 4)}, [M5], None)
    want = merge(minutes(9, 0, 11), M5)
    assert got.closed == [want[at(9, 0)], want[at(9, 5)]]
    assert got.forming == [want[at(9, 10)]]


def test_buckets_starting_before_complete_from_are_partial_and_not_closed():
    # the read began at 09:05: one earlier minute came along, 09:00-09:04 is partial
    stored = [minute(9, 3), *minutes(9, 5, 14)]
    fetched = minutes(9, 15, 32, skip=[21, 22])
    got = plan(fetched, stored, {M1: at(9, 14)}, [M1, M5, M15], at(9, 5))
    every = stored + fetched

    fives = merge(every, M5)
    assert [b.start for b in of(got.closed, M5)] == [at(9, m) for m in (5, 10, 15, 20, 25)]
    assert of(got.closed, M5) == [fives[at(9, m)] for m in (5, 10, 15, 20, 25)]
    assert of(got.forming, M5) == [fives[at(9, 30)]]
    fifteens = merge(every, M15)
    assert of(got.closed, M15) == [fifteens[at(9, 15)]]  # 09:00 starts before 09:05
    assert of(got.forming, M15) == [fifteens[at(9, 30)]]
    assert of(got.closed, M1) == fetched[:-1]

    # a bucket starting right at complete_from counts as whole: closed
    on_edge = plan(fetched, stored, {M1: at(9, 14)}, [M15], at(9, 0))
    assert on_edge.closed == [fifteens[at(9, 0)], fifteens[at(9, 15)]]
    # one minute later it is partial
    past_edge = plan(fetched, stored, {M1: at(9, 14)}, [M15], at(9, 1))
    assert past_edge.closed == [fifteens[at(9, 15)]]


def test_without_a_last_stored_bar_every_bucket_before_the_current_one_is_closed():
    stored = minutes(9, 0, 29, skip=[7, 8, 9, 16])
    fetched = minutes(9, 30, 47, skip=[35, 36, 37, 38, 39])  # a quiet 5m bucket
    got = plan(fetched, stored, {M1: at(9, 29)}, [M5, M15, M30], None)
    every = stored + fetched
    for tf in (M5, M15, M30):
        want = merge(every, tf)
        current = tf.bucket(fetched[-1].start)[0]
        assert of(got.closed, tf) == [want[s] for s in sorted(want) if s != current], tf
        assert of(got.forming, tf) == [want[current]]
    assert at(9, 35) not in {b.start for b in of(got.closed, M5)}
    assert len(of(got.closed, M5)) == 8  # 09:00 .. 09:40 but the quiet 09:35
    # 1m with nothing stored: every fetched and stored minute but the last is closed
    ones = plan(fetched, stored, {}, [M1], None)
    assert ones.closed == every[:-1]
    assert ones.forming == [every[-1]]


def test_daily_and_weekly_timeframes_are_ignored():
    stored = minutes(9, 0, 4)
    fetched = minutes(9, 5, 12)
    last = {M1: at(9, 4), D1: kst(2, 9), W1: kst(3, 9)}
    with_days = plan(fetched, stored, last, [D1, M1, W1, M5], None)
    without = plan(fetched, stored, last, [M1, M5], None)
    assert with_days == without
    assert {b.timeframe for b in with_days.closed + with_days.forming} == {M1, M5}
    only_days = plan(fetched, stored, last, [D1, W1], None)
    assert only_days.closed == [] and only_days.forming == []


def test_closed_bars_are_ordered_by_close_time_shorter_timeframe_first():
    stored = [minute(9, 14), minute(9, 16), minute(9, 20)]
    fetched = [minute(9, 28), minute(9, 29), minute(9, 31)]
    # timeframes given longest first: the order must not come from them
    got = plan(fetched, stored, {M1: at(9, 27)}, [M60, M30, M15, M5, M1], None)

    assert [(b.timeframe, b.start) for b in got.closed] == [
        (M5, at(9, 10)),  # closes 09:15
        (M15, at(9, 0)),  # closes 09:15 too: after the shorter 5m
        (M5, at(9, 15)),  # 09:20
        (M5, at(9, 20)),  # 09:25
        (M1, at(9, 28)),  # 09:29
        (M1, at(9, 29)),  # 09:30 ...
        (M5, at(9, 25)),
        (M15, at(9, 15)),
        (M30, at(9, 0)),
    ]
    ends = [(b.start + b.timeframe.span, b.timeframe.span) for b in got.closed]
    assert ends == sorted(ends)
    every = stored + fetched
    for bar in got.closed:
        assert bar == merge(every, bar.timeframe)[bar.start]
    forming = {b.timeframe: b.start for b in got.forming}
    assert forming == {M60: at(9, 0), M30: at(9, 30), M15: at(9, 30), M5: at(9, 30), M1: at(9, 31)}


# -- end to end: a takeover rebuilds what a single runner would have built -----------------------


def _ticks() -> list[Tick]:
    out: list[Tick] = []
    t = kst(3, 9, 0, 3)
    n = 0
    while t < kst(3, 10, 25):
        n += 1
        price = 70_000 + 100 * ((n * 37) % 23 - 11)
        out.append(Tick(SYM, price, 1 + (n * 13) % 29, t))
        # mostly a few seconds apart, with quiet spells of several minutes
        t += timedelta(seconds=(n * 17) % 41 + 2 + (420 if n % 31 == 0 else 0))
    return out


def _drive(agg: CandleAggregator, ticks: Iterable[Tick], until: datetime) -> list[Candle]:
    out: list[Candle] = []
    for tk in ticks:
        out.extend(agg.on_tick(tk))
    out.extend(agg.close_until(until))
    return out


def _key(c: Candle) -> tuple[timedelta, datetime]:
    return c.timeframe.span, c.start


@pytest.mark.parametrize(
    ("flushed", "takeover"),
    [
        (kst(3, 9, 40), kst(3, 9, 43, 20)),
        (kst(3, 9, 55), kst(3, 10, 0, 1)),
        (kst(3, 9, 30), kst(3, 10, 12, 30)),
    ],
)
def test_seeding_the_plan_after_a_takeover_rebuilds_the_single_runner_series(
    flushed: datetime, takeover: datetime
):
    ticks = _ticks()
    end = kst(3, 11)
    reference = _drive(CandleAggregator(INTRADAY), ticks, end)

    # the old runner stored the bars that had closed by its last flush, then died
    stored_bars = [b for b in reference if b.start + b.timeframe.span <= flushed]
    last = {tf: max(b.start for b in of(stored_bars, tf)) for tf in INTRADAY if of(stored_bars, tf)}
    assert M1 in last
    # the broker's minute chart at the takeover: every print before it, the last minute partial
    charter = CandleAggregator([M1])
    chart = _drive(charter, [t for t in ticks if t.ts < takeover], takeover)
    partial = charter.current(SYM, M1)
    if partial is not None:
        chart.append(partial)
    fetched = [m for m in chart if m.start > last[M1]]
    assert fetched
    got = plan(fetched, of(stored_bars, M1), last, INTRADAY, None)

    successor = CandleAggregator(INTRADAY)
    for bar in got.forming:
        assert successor.seed(bar) is True
    rest = _drive(successor, [t for t in ticks if t.ts >= takeover], end)
    assert successor.late_ticks == 0

    rebuilt = stored_bars + got.closed + rest
    assert sorted(rebuilt, key=_key) == sorted(reference, key=_key)
    assert len({(c.timeframe, c.start) for c in rebuilt}) == len(rebuilt)  # nothing twice
