"""Bars across a takeover: what a new leader rebuilds before it reads its first tick.

A runner that dies takes with it the bar it was forming and the closed bars it had
not stored yet (they are flushed every ``BAR_CLOSE_INTERVAL``), and no runner sees
the ticks of the takeover gap. Left alone, the successor starts its forming bar at
the first tick it gets, and a bar whose ticks all fell before the handover is never
closed at all. Strategies then compute their averages on another series than a
single runner would, and trade differently.

So before the tick loop starts, the successor asks the market for today's minute
chart (:class:`brokers.base.MinuteHistory`) since the newest stored 1m candle,
adds the stored minutes that the forming higher-timeframe buckets need, and rolls
them up per intraday timeframe:

* buckets after the newest stored one and before the current one are **closed**:
  they are stored, and handed to the strategies like bars closed live (order ids
  make a signal the old leader already acted on a no-op);
* the current bucket is **forming**: it seeds the aggregator, and the ticks after
  the takeover carry on from it.

Daily and weekly bars are not rebuilt (their forming bar starts at the takeover;
the close and the next bars are right). A source without a minute chart (the
simulated market) gives a successor its own ticks only, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app import db
from app.services import candles as candle_store
from engines.market import Candle, Timeframe, roll_up

__all__ = ["Recovered", "plan", "recover"]

log = logging.getLogger(__name__)

LOOKBACK = timedelta(hours=8)
"""Stored minutes read at most this far back for the buckets to rebuild: more than
a trading day's session, so every bucket of today is whole."""

BUDGET = 15.0
"""Seconds a new leader spends rebuilding bars before it reads ticks (KIS: about one
call per symbol, so a few dozen symbols take a few seconds)."""

FetchMinutes = Callable[[str, datetime | None], Awaitable[list[Candle]]]


@dataclass(slots=True)
class Recovered:
    closed: list[Candle] = field(default_factory=list)
    """Bars no runner stored, oldest first (ties by timeframe, shortest first)."""
    forming: list[Candle] = field(default_factory=list)
    """The current bucket of each intraday timeframe, partial."""
    as_of: datetime | None = None
    """The end of the newest minute charted: the market's "now" at the takeover (the
    wall clock is not it when a tape is replayed)."""

    def extend(self, other: Recovered) -> None:
        self.closed += other.closed
        self.forming += other.forming
        if other.as_of is not None and (self.as_of is None or other.as_of > self.as_of):
            self.as_of = other.as_of


def plan(
    fetched: Sequence[Candle],
    stored: Sequence[Candle],
    last_stored: dict[Timeframe, datetime],
    timeframes: Iterable[Timeframe],
    complete_from: datetime | None,
) -> Recovered:
    """Which bars of one symbol are closed and which are forming, from its minutes.

    ``fetched``: the broker's minutes since the newest stored one (the last may be
    forming); ``stored``: the stored minutes before them that higher buckets need;
    ``complete_from``: minutes before this were not read, so buckets starting
    earlier are partial and not rebuilt (None: everything was read).
    """
    if not fetched:
        return Recovered()
    first = fetched[0].start
    minutes = [m for m in stored if m.start < first] + list(fetched)
    anchor = minutes[-1].start
    out = Recovered(as_of=anchor + Timeframe.M1.span)
    for tf in timeframes:
        if tf.minutes is None:
            continue
        current = tf.bucket(anchor)[0]
        after = last_stored.get(tf)
        for bar in roll_up(minutes, tf):
            if bar.start == current:
                out.forming.append(bar)
            elif (after is None or bar.start > after) and (
                complete_from is None or bar.start >= complete_from
            ):
                out.closed.append(bar)
    order = {tf: i for i, tf in enumerate(Timeframe)}
    out.closed.sort(key=lambda c: (c.start + c.timeframe.span, order[c.timeframe]))
    return out


async def recover(
    fetch: FetchMinutes,
    symbols: Iterable[str],
    timeframes: Sequence[Timeframe],
    budget: float = BUDGET,
) -> Recovered:
    """Rebuild every symbol's bars; a symbol the broker cannot chart is logged and
    skipped (it starts from its own ticks), the others are still rebuilt. Symbols
    still waiting when ``budget`` seconds are spent are skipped too: the market does
    not wait for a slow chart endpoint, and ticks matter more than a rebuilt bar."""
    out = Recovered()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    pending = sorted(symbols)
    for i, symbol in enumerate(pending):
        left = deadline - loop.time()
        if left <= 0:
            log.warning(
                "bar rebuild out of time; %d symbols start from their own ticks: %s",
                len(pending) - i,
                pending[i:],
            )
            break
        try:
            out.extend(await asyncio.wait_for(_recover_symbol(fetch, symbol, timeframes), left))
        except Exception as exc:  # TimeoutError included
            log.warning("bars of %s not rebuilt after the takeover: %r", symbol, exc)
    return out


async def _recover_symbol(
    fetch: FetchMinutes, symbol: str, timeframes: Sequence[Timeframe]
) -> Recovered:
    async with db.session() as s:
        last = await candle_store.latest_starts(s, symbol)
    last_minute = last.get(Timeframe.M1)
    fetched = await fetch(symbol, None if last_minute is None else last_minute + Timeframe.M1.span)
    fetched = [m for m in fetched if m.timeframe is Timeframe.M1 and m.symbol == symbol]
    if not fetched:
        return Recovered()
    anchor = fetched[-1].start
    # The stored minutes the higher buckets need: from the oldest bucket to rebuild.
    starts = [
        min(last[tf] + tf.span, tf.bucket(anchor)[0]) if tf in last else tf.bucket(anchor)[0]
        for tf in timeframes
        if tf.minutes is not None and tf is not Timeframe.M1
    ]
    need = min(starts, default=fetched[0].start)
    floor = anchor - LOOKBACK
    stored: list[Candle] = []
    if need < fetched[0].start:
        async with db.session() as s:
            stored = await candle_store.between(
                s, symbol, Timeframe.M1, max(need, floor), fetched[0].start
            )
    result = plan(fetched, stored, last, timeframes, floor if need < floor else None)
    log.info(
        "rebuilt %s after the takeover: %d closed bars, %d forming, from %d broker minutes",
        symbol,
        len(result.closed),
        len(result.forming),
        len(fetched),
    )
    return result
