"""Minutes rolled up into higher timeframes, and an aggregator seeded with a partial bar."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.market import KST, Candle, CandleAggregator, Tick, Timeframe, roll_up
from tests.unit.test_candles import SYM, kst, tick

M1, M5, M15, M30, M60, D1, W1 = (
    Timeframe(v) for v in ("1m", "5m", "15m", "30m", "60m", "1d", "1w")
)
INTRADAY = (M5, M15, M30, M60)


def build(ticks: Iterable[Tick], tf: Timeframe, symbol: str = SYM) -> list[Candle]:
    """Every candle one aggregator of ``tf`` builds from ``ticks``, the forming one last."""
    agg = CandleAggregator([tf])
    out: list[Candle] = []
    for tk in ticks:
        out.extend(agg.on_tick(tk))
    assert agg.late_ticks == 0
    forming = agg.current(symbol, tf)
    if forming is not None:
        out.append(forming)
    return out


def session_ticks() -> list[Tick]:
    """Ticks from 09:52 to 11:07 KST on June 3rd: across the 10:00 and 11:00 hour edges,
    with quiet minutes, a whole quiet 5m bucket pair and a whole quiet 15m bucket."""
    rng = random.Random(20240603)
    quiet = {4, 5, *range(13, 23), *range(38, 53)}  # 09:56-57, 10:05-10:14, 10:30-10:44
    ticks: list[Tick] = []
    for offset in range(76):
        if offset in quiet:
            continue
        start = kst(3, 9, 52) + timedelta(minutes=offset)
        seconds = sorted(rng.sample(range(60), rng.randint(1, 4)))
        for sec in seconds:
            price = 70_000 + 100 * rng.randint(-20, 20)
            ticks.append(tick(start + timedelta(seconds=sec), price, rng.randint(0, 50)))
    # prints right on both sides of the hour edge
    ticks += [tick(kst(3, 9, 59, 59.5), 71_500, 3), tick(kst(3, 10, 0, 0), 68_000, 4)]
    return sorted(ticks, key=lambda t: t.ts)


# -- roll_up equals aggregating the ticks directly --------------------------------------------


def test_session_fixture_crosses_the_hour_and_has_quiet_buckets():
    ticks = session_ticks()
    assert ticks[0].ts < kst(3, 10) <= ticks[-1].ts
    assert ticks[-1].ts >= kst(3, 11)
    for tf in INTRADAY:
        starts = [c.start for c in build(ticks, tf)]
        span_count = (tf.bucket(ticks[-1].ts)[0] - starts[0]) // tf.span + 1
        if tf in (M5, M15):
            assert len(starts) < span_count, f"no quiet {tf} bucket"
    minutes = build(ticks, M1)
    assert any(b.start - a.start > M1.span for a, b in zip(minutes, minutes[1:], strict=False))


@pytest.mark.parametrize("tf", INTRADAY)
def test_roll_up_of_minutes_equals_the_candles_built_from_ticks(tf: Timeframe):
    ticks = session_ticks()
    minutes = build(ticks, M1)
    expected = build(ticks, tf)
    got = roll_up(minutes, tf)
    assert got == expected
    # the last bucket is the forming one, and it is included
    assert got[-1].start == tf.bucket(ticks[-1].ts)[0]
    assert got[-1].close == ticks[-1].price


def test_roll_up_accepts_a_generator_and_an_empty_series():
    minutes = build(session_ticks(), M1)
    assert roll_up((m for m in minutes), M15) == roll_up(minutes, M15)
    assert roll_up([], M5) == []


def test_roll_up_to_one_minute_is_the_identity():
    minutes = build(session_ticks(), M1)
    assert roll_up(minutes, M1) == minutes


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 4 * 3_600),  # seconds to the next tick: quiet spells up to 4 h
            st.integers(1, 500_000),
            st.integers(0, 1_000),
        ),
        min_size=1,
        max_size=80,
    ),
    tf=st.sampled_from(INTRADAY),
)
def test_roll_up_equals_tick_aggregation_for_any_tick_stream(
    steps: list[tuple[int, int, int]], tf: Timeframe
):
    t = kst(3, 7, 30)  # starts in the pre-open, before the 09:00 anchor
    ticks: list[Tick] = []
    for gap, price, volume in steps:
        t += timedelta(seconds=gap)
        ticks.append(tick(t, price, volume))
    assert roll_up(build(ticks, M1), tf) == build(ticks, tf)


# -- bad input --------------------------------------------------------------------------------


def _minutes() -> list[Candle]:
    return build([tick(kst(3, 9, m, 10), 70_000 + 100 * m, m + 1) for m in range(6)], M1)


def test_roll_up_refuses_candles_that_are_not_one_minute():
    minutes = _minutes()
    five = Candle(SYM, M5, kst(3, 9, 10), 1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="roll_up takes 1m candles, got 5m"):
        roll_up([*minutes, five], M15)
    with pytest.raises(ValueError, match="roll_up takes 1m candles, got 5m"):
        roll_up([five], M15)


@pytest.mark.parametrize(
    "reorder",
    [
        pytest.param(lambda ms: [ms[0], ms[2], ms[1], *ms[3:]], id="swapped"),
        pytest.param(lambda ms: [*ms[:3], ms[2], *ms[3:]], id="duplicated"),
        pytest.param(lambda ms: list(reversed(ms)), id="reversed"),
        pytest.param(
            lambda ms: [*ms, replace(ms[-1], open=1, high=1, low=1, close=1)], id="dup-last"
        ),
    ],
)
def test_roll_up_refuses_minutes_out_of_order_or_duplicated(reorder):
    minutes = reorder(_minutes())
    with pytest.raises(ValueError, match="minutes out of order or repeated at "):
        roll_up(minutes, M5)


def test_roll_up_refuses_two_symbols():
    minutes = _minutes()
    other = replace(minutes[1], symbol="000660")
    # in the same bucket
    with pytest.raises(ValueError, match="one symbol's minutes, got 005930 and 000660"):
        roll_up([minutes[0], other, *minutes[2:]], M5)
    # in the next bucket (the first minute of a new 5m bucket)
    late = replace(minutes[5], symbol="000660")
    assert late.start == kst(3, 9, 5)
    with pytest.raises(ValueError, match="one symbol's minutes, got 005930 and 000660"):
        roll_up([*minutes[:5], late], M5)


@pytest.mark.parametrize("tf", [D1, W1])
def test_roll_up_refuses_daily_and_weekly_targets(tf: Timeframe):
    with pytest.raises(
        ValueError, match=f"only intraday timeframes roll up from minutes, not {tf}"
    ):
        roll_up(_minutes(), tf)
    with pytest.raises(ValueError, match="only intraday timeframes"):
        roll_up([], tf)


# -- seed: a successor carries on from a partial bar -------------------------------------------


def _split(ticks: Sequence[Tick], at: datetime) -> tuple[list[Tick], list[Tick]]:
    return [t for t in ticks if t.ts < at], [t for t in ticks if t.ts >= at]


def _run(agg: CandleAggregator, ticks: Iterable[Tick], until: datetime) -> list[Candle]:
    out: list[Candle] = []
    for tk in ticks:
        out.extend(agg.on_tick(tk))
    out.extend(agg.close_until(until))
    return out


SEED_TICKS = [
    tick(kst(3, 9, 1, 5), 70_100, 10),
    tick(kst(3, 9, 2, 30), 70_400, 5),
    tick(kst(3, 9, 3, 1), 70_000, 7),  # the 09:03 minute opens
    tick(kst(3, 9, 3, 12), 70_900, 4),  # its high
    tick(kst(3, 9, 3, 25), 69_500, 9),  # its low
    # takeover at 09:03:40: the successor sees only what follows
    tick(kst(3, 9, 3, 41), 70_200, 6),
    tick(kst(3, 9, 3, 58), 70_300, 2),  # the 09:03 close
    tick(kst(3, 9, 4, 20), 71_000, 3),  # a new 5m high
    tick(kst(3, 9, 6, 0), 69_900, 8),  # closes 09:04 and the 09:00 5m bucket
    tick(kst(3, 9, 6, 40), 69_950, 1),
]
TAKEOVER = kst(3, 9, 3, 40)
END = kst(3, 9, 10)


def test_seeded_bars_close_equal_to_a_single_aggregator_fed_every_tick():
    before, after = _split(SEED_TICKS, TAKEOVER)
    reference = _run(CandleAggregator([M1, M5]), SEED_TICKS, END)

    dead = CandleAggregator([M1, M5])
    for tk in before:
        dead.on_tick(tk)
    seed_1m, seed_5m = dead.current(SYM, M1), dead.current(SYM, M5)
    assert seed_1m is not None and seed_5m is not None

    successor = CandleAggregator([M1, M5])
    assert successor.seed(seed_1m) is True
    assert successor.seed(seed_5m) is True
    assert successor.current(SYM, M1) == seed_1m
    assert successor.current(SYM, M5) == seed_5m
    got = _run(successor, after, END)
    assert successor.late_ticks == 0

    # every bar the successor closes equals the one a single runner closes
    assert got == [c for c in reference if c.start + c.timeframe.span > TAKEOVER]
    minute = next(c for c in got if c.timeframe is M1 and c.start == kst(3, 9, 3))
    rest = [t for t in after if t.ts < kst(3, 9, 4)]
    assert (minute.open, minute.high, minute.low) == (seed_1m.open, seed_1m.high, seed_1m.low)
    assert minute.volume == seed_1m.volume + sum(t.volume for t in rest)
    assert minute.close == rest[-1].price
    five = next(c for c in got if c.timeframe is M5 and c.start == kst(3, 9))
    assert five.open == seed_5m.open == SEED_TICKS[0].price
    assert five.high == max(t.price for t in SEED_TICKS if t.ts < kst(3, 9, 5))
    assert five.volume == sum(t.volume for t in SEED_TICKS if t.ts < kst(3, 9, 5))

    # without the seed the successor's bars are the part it happened to see: different
    unseeded = _run(CandleAggregator([M1, M5]), after, END)
    assert unseeded[0].start == kst(3, 9, 3) and unseeded[0] != minute


def test_a_seeded_bar_with_no_later_tick_closes_as_seeded():
    agg = CandleAggregator([M1, M5])
    seed = Candle(SYM, M5, kst(3, 9, 5), 100, 130, 90, 110, 42)
    assert agg.seed(seed)
    assert agg.close_until(kst(3, 9, 9, 59)) == []
    assert agg.close_until(kst(3, 9, 10)) == [seed]
    assert agg.current(SYM, M5) is None


def test_seed_accepts_a_start_in_any_zone_and_stores_utc():
    agg = CandleAggregator([M5])
    local = datetime(2024, 6, 3, 9, 5, tzinfo=KST)
    assert agg.seed(Candle(SYM, M5, local, 100, 100, 100, 100, 1))
    forming = agg.current(SYM, M5)
    assert forming is not None and forming.start == kst(3, 9, 5)
    assert forming.start.tzinfo is UTC


def test_seed_is_refused_when_a_bar_is_already_open():
    agg = CandleAggregator([M1, M5])
    agg.on_tick(tick(kst(3, 9, 3, 50), 500, 2))
    before = (agg.current(SYM, M1), agg.current(SYM, M5))
    # the same bucket, an earlier one and a later one: ticks seen here win
    for start in (kst(3, 9, 3), kst(3, 9, 2), kst(3, 9, 4)):
        assert agg.seed(Candle(SYM, M1, start, 100, 100, 100, 100, 1)) is False
    assert agg.seed(Candle(SYM, M5, kst(3, 9), 100, 100, 100, 100, 1)) is False
    assert (agg.current(SYM, M1), agg.current(SYM, M5)) == before
    # another symbol has no open bar: its seed is taken
    assert agg.seed(Candle("000660", M1, kst(3, 9, 3), 100, 100, 100, 100, 1)) is True


def test_seed_is_refused_when_the_bucket_is_already_closed():
    agg = CandleAggregator([M1, M5])
    agg.on_tick(tick(kst(3, 9, 3, 10), 500, 2))
    closed = agg.close_until(kst(3, 9, 4))
    assert [c.timeframe for c in closed] == [M1]
    # the closed minute and an earlier one are refused, nothing is reopened
    for start in (kst(3, 9, 3), kst(3, 9, 1)):
        assert agg.seed(Candle(SYM, M1, start, 100, 100, 100, 100, 1)) is False
    assert agg.current(SYM, M1) is None
    assert [c.timeframe for c in agg.close_until(kst(3, 9, 5))] == [M5]  # no 1m reopened
    # a later minute is still free
    later = Candle(SYM, M1, kst(3, 9, 4), 100, 100, 100, 100, 1)
    assert agg.seed(later) is True
    assert agg.current(SYM, M1) == later


@pytest.mark.parametrize(
    ("frames", "bad", "message"),
    [
        ([M1], Candle(SYM, M5, kst(3, 9), 100, 100, 100, 100, 1), "5m is not aggregated here"),
        (
            [M1],
            Candle(SYM, M1, datetime(2024, 6, 3, 0, 3), 100, 100, 100, 100, 1),
            "must be timezone-aware",
        ),
        ([M1, M5], Candle(SYM, M5, kst(3, 9, 3), 100, 100, 100, 100, 1), "does not label a 5m"),
        ([M1], Candle(SYM, M1, kst(3, 9, 3, 30), 100, 100, 100, 100, 1), "does not label a 1m"),
        ([M60], Candle(SYM, M60, kst(3, 9, 30), 100, 100, 100, 100, 1), "does not label a 60m"),
        ([M1], Candle(SYM, M1, kst(3, 9, 3), 100, 120, 105, 110, 1), "inconsistent"),  # low>open
        ([M1], Candle(SYM, M1, kst(3, 9, 3), 100, 120, 98, 95, 1), "inconsistent"),  # low>close
        ([M1], Candle(SYM, M1, kst(3, 9, 3), 100, 110, 90, 115, 1), "inconsistent"),  # high<close
        ([M1], Candle(SYM, M1, kst(3, 9, 3), 115, 110, 90, 100, 1), "inconsistent"),  # high<open
        ([M1], Candle(SYM, M1, kst(3, 9, 3), 100, 100, 0, 100, 1), "inconsistent"),  # low 0
        ([M1], Candle(SYM, M1, kst(3, 9, 3), 0, 0, 0, 0, 1), "inconsistent"),  # all zero
        ([M1], Candle(SYM, M1, kst(3, 9, 3), 100, 100, -5, 100, 1), "inconsistent"),
        ([M1], Candle(SYM, M1, kst(3, 9, 3), 100, 100, 100, 100, -1), "inconsistent"),  # volume
    ],
)
def test_bad_seeds_are_rejected_and_change_nothing(
    frames: list[Timeframe], bad: Candle, message: str
):
    agg = CandleAggregator(frames)
    with pytest.raises(ValueError, match=message):
        agg.seed(bad)
    assert all(agg.current(SYM, tf) is None for tf in frames)
    # the aggregator still builds from ticks as if nothing happened
    assert agg.on_tick(tick(kst(3, 9, 3, 5), 100, 1)) == []
    assert agg.current(SYM, frames[0]) == Candle(
        SYM, frames[0], frames[0].bucket(kst(3, 9, 3, 5))[0], 100, 100, 100, 100, 1
    )


def test_a_zero_volume_seed_is_accepted():
    agg = CandleAggregator([M1])
    seed = Candle(SYM, M1, kst(3, 9, 3), 100, 100, 100, 100, 0)
    assert agg.seed(seed) is True
    agg.on_tick(tick(kst(3, 9, 3, 30), 105, 4))
    assert agg.current(SYM, M1) == Candle(SYM, M1, kst(3, 9, 3), 100, 105, 100, 105, 4)
