"""Stored candles on SQLite and PostgreSQL: upsert, reads, refusal of bad bars, retention,
and the demo backfill that fills empty series once."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from app import db
from app.models.candles import StoredCandle
from app.services import candles, demo_history
from brokers.paper.symbols import by_code
from engines.market import KST, Candle, Timeframe
from tests.integration.helpers import seed_symbols

pytestmark = pytest.mark.usefixtures("database")

M1, M5, D1 = Timeframe.M1, Timeframe.M5, Timeframe.D1
SYM = "005930"
# 09:00 KST on Wednesday 2025-03-05, a KRX trading day: a label of every timeframe.
OPEN = datetime(2025, 3, 5, 9, 0, tzinfo=KST)


def bar(i: int, tf: Timeframe = M1, symbol: str = SYM, close: int = 71_300, **kw: object) -> Candle:
    """The i-th bar of ``tf`` from the 5 March open (start in UTC, as the aggregator makes it)."""
    start = (OPEN + i * tf.span).astimezone(UTC)
    c = Candle(symbol, tf, start, close - 100, close + 200, close - 200, close, 1_000 + i)
    return replace(c, **kw) if kw else c


async def count() -> int:
    async with db.session() as s:
        return int((await s.exec(select(func.count()).select_from(StoredCandle))).one())


@pytest.fixture
async def symbols_seeded(database: str) -> None:
    await seed_symbols()


# ---- store / recent / between --------------------------------------------------------------


@pytest.mark.usefixtures("symbols_seeded")
async def test_store_then_read_recent_and_between():
    bars = [bar(i, close=70_000 + 100 * i) for i in range(10)]
    shuffled = random.Random(1).sample(bars, len(bars))
    others = [bar(0, D1), bar(0, M1, symbol="000660")]
    async with db.session() as s:
        assert await candles.store(s, shuffled + others) == 12
    async with db.session() as s:
        assert await candles.recent(s, SYM, M1, 3) == bars[-3:]  # oldest first
        assert await candles.recent(s, SYM, M1, 100) == bars
        assert await candles.recent(s, SYM, M1, 0) == []
        assert await candles.recent(s, SYM, M5, 10) == []
        assert await candles.recent(s, SYM, D1, 10) == [bar(0, D1)]
        got = await candles.recent(s, SYM, M1, 1)
        assert got[0].start.tzinfo is not None and got[0].start.utcoffset() == timedelta(0)
        assert got[0].timeframe is M1 and type(got[0].close) is int
        # [start, end): bars 2, 3 and 4; bounds in any time zone
        assert await candles.between(s, SYM, M1, bars[2].start, bars[5].start) == bars[2:5]
        kst_bounds = (bars[2].start.astimezone(KST), bars[5].start.astimezone(KST))
        assert await candles.between(s, SYM, M1, *kst_bounds) == bars[2:5]
        assert await candles.between(s, SYM, M1, bars[5].start, bars[5].start) == []
        with pytest.raises(ValueError, match="limit"):
            await candles.recent(s, SYM, M1, -1)
        with pytest.raises(ValueError, match="timezone-aware"):
            await candles.between(s, SYM, M1, datetime(2025, 3, 5), bars[5].start)


@pytest.mark.usefixtures("symbols_seeded")
async def test_store_is_an_idempotent_upsert():
    bars = [bar(i) for i in range(5)]
    async with db.session() as s:
        assert await candles.store(s, bars) == 5
        assert await candles.store(s, bars) == 5  # again: no error, no duplicates
    assert await count() == 5
    corrected = replace(bars[2], high=bars[2].high + 500, close=bars[2].close + 300, volume=9)
    async with db.session() as s:
        assert await candles.store(s, [corrected]) == 1
        assert (await candles.recent(s, SYM, M1, 5))[2] == corrected  # last write wins
    # the same key twice in one batch: one row, the later candle
    twice = [replace(bars[0], volume=1), replace(bars[0], volume=2)]
    async with db.session() as s:
        assert await candles.store(s, twice) == 1
        assert (await candles.recent(s, SYM, M1, 5))[0].volume == 2
        assert await candles.store(s, []) == 0
    assert await count() == 5


@pytest.mark.usefixtures("symbols_seeded")
async def test_store_matches_rows_written_through_the_orm():
    """Same key, same stored form: SQLite compares timestamps as text, so a different format
    would make a second row for the same bar instead of updating it."""
    first = bar(3)
    async with db.session() as s:
        s.add(
            StoredCandle(
                symbol=first.symbol,
                timeframe=first.timeframe.value,
                start=first.start,
                open=first.open,
                high=first.high,
                low=first.low,
                close=first.close,
                volume=first.volume,
            )
        )
        await s.commit()
    async with db.session() as s:
        assert await candles.store(s, [replace(first, volume=5), bar(4)]) == 2
        assert await candles.between(s, SYM, M1, first.start, bar(5).start) == [
            replace(first, volume=5),
            bar(4),
        ]
    assert await count() == 2


@pytest.mark.usefixtures("symbols_seeded")
async def test_values_beyond_32_bits_round_trip():
    big = Candle(
        SYM,
        D1,
        bar(0, D1).start,
        3_000_000_000,
        3_000_001_000,
        2_999_999_000,
        3_000_000_000,
        10**12,
    )
    async with db.session() as s:
        await candles.store(s, [big])
        assert await candles.recent(s, SYM, D1, 1) == [big]


NAIVE = datetime(2025, 3, 5, 0, 0)


@pytest.mark.usefixtures("symbols_seeded")
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (bar(7, high=71_200), "high 71200 is below"),
        (bar(7, low=71_300 + 1), "low 71301 is above"),
        (bar(7, open=0, low=0), "positive"),
        (bar(7, close=-5, low=-10), "positive"),
        (bar(7, volume=-1), "volume"),
        (bar(7, start=NAIVE), "timezone-aware"),
        (bar(7, start=bar(7).start + timedelta(seconds=30)), "label of a 1m bucket"),
        (bar(0, D1, start=bar(0, D1).start + timedelta(hours=1)), "label of a 1d bucket"),
        (bar(7, timeframe="2m"), "unknown timeframe"),
        (bar(7, close=71_300.0), "must be an int"),
        (bar(7, volume=True), "must be an int"),
        (bar(7, symbol=""), "symbol"),
    ],
)
async def test_a_bad_candle_refuses_the_whole_batch(bad: Candle, message: str):
    good = [bar(i) for i in range(5)]
    async with db.session() as s:
        await candles.store(s, good[:2])
    async with db.session() as s:
        with pytest.raises(ValueError, match=message):
            await candles.store(s, [*good[2:], bad])
    assert await count() == 2  # the batch's good bars were not written either


@pytest.mark.usefixtures("symbols_seeded")
async def test_unknown_symbol_fails_the_foreign_key_and_writes_nothing():
    async with db.session() as s:
        with pytest.raises(IntegrityError):
            await candles.store(s, [bar(0), bar(1), bar(2, symbol="999999")])
    assert await count() == 0
    async with db.session() as s:  # the session is usable again after the failure
        assert await candles.store(s, [bar(0)]) == 1


@pytest.mark.usefixtures("symbols_seeded")
async def test_the_database_itself_refuses_an_inconsistent_bar():
    """Check constraints back the service's validation for writers that bypass it."""
    async with db.session() as s:
        with pytest.raises(IntegrityError):
            await s.exec(
                text(
                    "INSERT INTO candles (symbol, timeframe, start, open, high, low, close, volume)"
                    " VALUES ('005930', '1m', '2025-03-05 00:00:00', 100, 90, 80, 95, 1)"
                )
            )
        await s.rollback()


# ---- retention ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("symbols_seeded")
async def test_prune_keeps_each_timeframe_for_its_retention():
    now = datetime(2025, 9, 1, tzinfo=UTC)
    day = timedelta(days=1)

    def at(tf: Timeframe, age: timedelta, symbol: str = SYM) -> Candle:
        start = tf.bucket(now - age)[0]
        return replace(bar(0, tf, symbol=symbol), start=start)

    old_m1 = [at(M1, 40 * day), at(M1, 31 * day, "000660")]
    young_m1 = at(M1, 29 * day)
    old_m5, young_m5 = at(M5, 200 * day), at(M5, 100 * day)
    ancient_d1 = at(D1, 3000 * day)
    async with db.session() as s:
        await candles.store(s, [*old_m1, young_m1, old_m5, young_m5, ancient_d1])
    async with db.session() as s:
        deleted = await candles.prune(s, now)
    assert deleted == {M1: 2, M5: 1}
    assert await count() == 3
    async with db.session() as s:
        assert await candles.recent(s, SYM, M1, 10) == [young_m1]
        assert await candles.recent(s, SYM, M5, 10) == [young_m5]
        assert await candles.recent(s, SYM, D1, 10) == [ancient_d1]  # kept forever
        assert await candles.prune(s, now) == {M1: 0, M5: 0}  # nothing left to do
        # a stricter policy, passed in
        assert await candles.prune(s, now, {D1: timedelta(days=365)}) == {D1: 1}
        with pytest.raises(ValueError, match="timezone-aware"):
            await candles.prune(s, datetime(2025, 9, 1))
        with pytest.raises(ValueError, match="positive"):
            await candles.prune(s, now, {M1: timedelta(0)})
    assert await count() == 2
    assert set(candles.RETENTION) == set(Timeframe)


# ---- demo backfill -------------------------------------------------------------------------------


@pytest.mark.usefixtures("symbols_seeded")
async def test_backfill_fills_empty_series_once():
    syms = [by_code(c) for c in ("005930", "000660", "001510")]
    assert all(syms)
    now = datetime(2025, 3, 7, 12, 0, tzinfo=KST)  # mid-session: history ends on the 6th
    # one series already has a bar: it is left alone, the others are filled
    kept = bar(0, M5, symbol="000660", close=200_000)
    async with db.session() as s:
        await candles.store(s, [kept])
    async with db.session() as s:
        first = await demo_history.backfill(s, syms, now, days=30, minutes_days=2)  # type: ignore[arg-type]
    series = 1 + len(demo_history.INTRADAY_TIMEFRAMES)
    assert first.filled == 3 * series - 1 and first.skipped == 1
    per_symbol = 30 + 2 * (390 + 78 + 26 + 7)
    assert first.rows == 3 * per_symbol - 2 * 78
    assert await count() == first.rows + 1
    async with db.session() as s:
        for sym in syms:
            daily = await candles.recent(s, sym.code, D1, 1000)
            assert len(daily) == 30
            assert daily[-1].close == sym.ref_price  # joins the live simulation
            assert daily[-1].start == datetime(2025, 3, 6, 9, 0, tzinfo=KST)
            minutes = await candles.recent(s, sym.code, M1, 1000)
            assert len(minutes) == 780 and minutes[-1].close == sym.ref_price
        assert await candles.recent(s, "000660", M5, 100) == [kept]
    # a second run (the next `make run`) writes nothing and moves nothing
    async with db.session() as s:
        before = await candles.recent(s, "005930", D1, 1000)
        later = now + timedelta(days=3)
        again = await demo_history.backfill(s, syms, later, days=30, minutes_days=2)  # type: ignore[arg-type]
        assert again == demo_history.BackfillResult(rows=0, filled=0, skipped=3 * series)
        assert await candles.recent(s, "005930", D1, 1000) == before
    assert await count() == first.rows + 1


@pytest.mark.usefixtures("symbols_seeded")
async def test_backfill_outside_the_calendar_stores_nothing():
    sym = by_code("005930")
    async with db.session() as s:
        result = await demo_history.backfill(s, [sym], datetime(2099, 1, 1, tzinfo=UTC), days=5)  # type: ignore[list-item]
    assert result.rows == 0 and result.filled == 0
    assert await count() == 0
