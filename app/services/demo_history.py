"""Backfill of synthetic candles for the paper market's demo symbols.

Without it a fresh demo starts with no past: indicator rules stay silent until
enough live bars have closed, and the rule preview has nothing to draw. The
history comes from :mod:`brokers.paper.history`, which ends each series at the
symbol's reference price, the price the live simulation starts from.

A series is filled only while it is empty, never topped up or regenerated: the
synthetic past is anchored at the day the backfill ran, so regenerating it on a
later day would shift every bar and contradict the live candles stored since.
Running ``seed-demo`` (so ``make run``) twice therefore writes nothing the
second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.candles import StoredCandle
from app.services import candles
from brokers.paper.calendar import load_calendar
from brokers.paper.history import HistoryUnavailable, regular_session_bars, synthetic_histories
from brokers.paper.symbols import PaperSymbol
from engines.market import Candle, Timeframe

__all__ = ["INTRADAY_TIMEFRAMES", "BackfillResult", "backfill"]

log = logging.getLogger(__name__)

INTRADAY_TIMEFRAMES: tuple[Timeframe, ...] = (
    Timeframe.M1,
    Timeframe.M5,
    Timeframe.M15,
    Timeframe.M60,
)
"""The intraday timeframes backfilled. 30m is left out: no built-in preset uses it, and the
live aggregator builds it within a day if a rule asks for it."""


@dataclass(frozen=True, slots=True)
class BackfillResult:
    """What a backfill did: rows written, series filled, series left alone (already stored)."""

    rows: int
    filled: int
    skipped: int


async def _stored_series(session: AsyncSession, codes: Sequence[str]) -> set[tuple[str, str]]:
    """The (symbol, timeframe) pairs that already have at least one stored candle."""
    t = StoredCandle.__table__
    stmt = select(t.c.symbol, t.c.timeframe).where(t.c.symbol.in_(list(codes))).distinct()
    return {(row[0], row[1]) for row in (await session.exec(stmt)).all()}


async def backfill(
    session: AsyncSession,
    symbols: Sequence[PaperSymbol],
    now: datetime,
    days: int = 400,
    minutes_days: int = 5,
    seed: int = 7,
) -> BackfillResult:
    """Store synthetic history for every empty (symbol, timeframe) series.

    ``days`` daily candles (trading days, so 400 is about 19 months: enough for a
    200-day average with room to preview), and ``minutes_days`` sessions of each
    intraday timeframe in :data:`INTRADAY_TIMEFRAMES` (5 sessions of 1m is 1,950
    bars, well past any 1m indicator's warm-up). History ends at the last XKRX
    session completed by ``now``. ``seed`` should be the paper market's seed, so
    the demo is reproducible as a whole.

    Each symbol is one :func:`app.services.candles.store` call, so a symbol's
    series are written all or not at all, and an interrupted backfill resumes
    at the first symbol it had not finished. Generation is CPU work, run in a
    thread so an event loop that calls this stays responsive. If ``now`` is
    outside the XKRX calendar's range nothing is stored and a warning is logged:
    the demo still runs, only without a past.
    """
    if days < 0 or minutes_days < 0:
        raise ValueError(f"days and minutes_days must be >= 0, got {days}, {minutes_days}")
    started = time.perf_counter()
    wanted_all: dict[Timeframe, int] = {Timeframe.D1: days}
    for tf in INTRADAY_TIMEFRAMES:
        wanted_all[tf] = minutes_days * regular_session_bars(tf)
    wanted_all = {tf: bars for tf, bars in wanted_all.items() if bars > 0}

    have = await _stored_series(session, [s.code for s in symbols])
    todo: list[tuple[PaperSymbol, dict[Timeframe, int]]] = []
    skipped = 0
    for sym in symbols:
        wanted = {tf: n for tf, n in wanted_all.items() if (sym.code, tf.value) not in have}
        skipped += len(wanted_all) - len(wanted)
        if wanted:
            todo.append((sym, wanted))

    def generate(i: int) -> asyncio.Future[dict[Timeframe, list[Candle]]]:
        sym, wanted = todo[i]
        return asyncio.ensure_future(
            asyncio.to_thread(synthetic_histories, sym, sym.ref_price, now, wanted, seed)
        )

    rows = filled = 0
    if todo:
        await asyncio.to_thread(load_calendar)  # seconds, once per process
        # The next symbol is generated (numpy, mostly outside the GIL) while this
        # one is written: on two cores that hides most of the generation time.
        pending = generate(0)
        try:
            for i in range(len(todo)):
                try:
                    series = await pending
                except HistoryUnavailable as exc:
                    log.warning("no synthetic history for the demo: %s", exc)
                    break
                if i + 1 < len(todo):
                    pending = generate(i + 1)
                rows += await candles.store(session, [c for bars in series.values() for c in bars])
                filled += sum(1 for bars in series.values() if bars)
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, HistoryUnavailable):
                    await pending
    log.info(
        "demo history: %d candles in %d series (%d series already stored) in %.1f s",
        rows,
        filled,
        skipped,
        time.perf_counter() - started,
    )
    return BackfillResult(rows=rows, filled=filled, skipped=skipped)
