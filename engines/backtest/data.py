"""The backtester's input: checked candle series, and the calendar they share.

Bad input is refused with a message naming the symbol and the bar, before any
strategy runs: a series out of order or a candle filed under the wrong symbol
would otherwise produce plausible-looking nonsense.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from engines.market import Candle, Timeframe

__all__ = [
    "SESSION_MINUTES",
    "TRADING_DAYS",
    "checked_series",
    "checked_with_times",
    "periods_per_year",
    "slice_by_time",
]

TRADING_DAYS = 252
"""Trading days per year, the usual annualisation base (KRX has about 245-250)."""

SESSION_MINUTES = 390
"""KRX regular session, 09:00-15:30 KST."""


def periods_per_year(timeframe: Timeframe | str) -> float:
    """Bars per year of ``timeframe``, for annualising returns and volatility.

    Intraday: the session's buckets per day (the last one may be partial, e.g. seven
    60-minute candles from 09:00 to 15:30) times the trading days.
    """
    tf = Timeframe(timeframe)
    minutes = tf.minutes
    if minutes is not None:
        return float(math.ceil(SESSION_MINUTES / minutes) * TRADING_DAYS)
    if tf is Timeframe.D1:
        return float(TRADING_DAYS)
    return 52.0


def checked_series(data: Mapping[str, Sequence[Candle]]) -> dict[str, list[Candle]]:
    """``data`` as lists, after checking every series is usable. Raises ``ValueError``.

    Each symbol needs at least one candle, all of that symbol, all of one timeframe
    (the same for every symbol), in strictly increasing time order.
    """
    return {symbol: candles for symbol, (candles, _) in checked_with_times(data).items()}


def checked_with_times(
    data: Mapping[str, Sequence[Candle]],
) -> dict[str, tuple[list[Candle], list[datetime]]]:
    """:func:`checked_series`, plus each series' bar times (the backtester needs them)."""
    if not data:
        raise ValueError("no data: give at least one symbol with candles")
    out: dict[str, tuple[list[Candle], list[datetime]]] = {}
    timeframe: object = None
    for symbol, series in data.items():
        candles = list(series)
        if not candles:
            raise ValueError(f"{symbol}: no candles")
        if timeframe is None:
            timeframe = getattr(candles[0], "timeframe", None)
        starts = _fast_check(symbol, candles, timeframe)
        if starts is None:
            starts = _slow_check(symbol, candles, timeframe)
        out[symbol] = (candles, starts)
    return out


def _fast_check(symbol: str, candles: list[Candle], timeframe: object) -> list[datetime] | None:
    """The bar times, or ``None`` if a bar looks wrong (``_slow_check`` then names it).

    This runs before every backtest, over every bar, so it is one tight loop.
    """
    starts: list[datetime] = []
    append = starts.append
    prev = _MIN_TIME
    try:
        for c in candles:
            start = c.start
            if type(c) is not Candle or c.timeframe is not timeframe or c.symbol != symbol:
                return None
            if start <= prev:  # TypeError on a naive datetime
                return None
            append(start)
            prev = start
    except (AttributeError, TypeError):
        return None
    return starts


_MIN_TIME = datetime.min.replace(tzinfo=UTC)


def _slow_check(symbol: str, candles: list[Candle], timeframe: object) -> list[datetime]:
    """Bar by bar, naming the first bad one in the error."""
    prev: datetime | None = None
    for i, c in enumerate(candles):
        if not isinstance(c, Candle):
            raise ValueError(f"{symbol}: bar {i} is a {type(c).__name__}, not a Candle")
        if c.symbol != symbol:
            raise ValueError(f"{symbol}: bar {i} is a candle of {c.symbol!r}")
        if c.timeframe != timeframe:
            raise ValueError(
                f"{symbol}: bar {i} is {c.timeframe}, but the data is {timeframe}: "
                "one backtest runs on one timeframe"
            )
        if c.start.tzinfo is None:
            raise ValueError(f"{symbol}: bar {i} has a naive start time; use UTC datetimes")
        if prev is not None and c.start <= prev:
            raise ValueError(
                f"{symbol}: bar {i} ({c.start.isoformat()}) is not after bar {i - 1} "
                f"({prev.isoformat()}): candles must be in strictly increasing time order"
            )
        prev = c.start
    return [c.start for c in candles]  # a Candle subclass: fine


def slice_by_time(
    data: Mapping[str, Sequence[Candle]],
    start: datetime | None,
    end: datetime | None,
    *,
    lead_bars: int = 0,
) -> dict[str, list[Candle]]:
    """The candles with ``start <= c.start < end`` per symbol, plus ``lead_bars`` before.

    The lead bars let a strategy warm its indicators up on data before the window
    (the backtester keeps warm-up bars out of the metrics). Symbols left without
    candles are dropped.
    """
    out: dict[str, list[Candle]] = {}
    for symbol, series in data.items():
        lo = 0
        hi = len(series)
        if start is not None:
            lo = _first_at_or_after(series, start)
        if end is not None:
            hi = _first_at_or_after(series, end)
        if hi <= lo:
            continue
        out[symbol] = list(series[max(0, lo - lead_bars) : hi])
    return out


def _first_at_or_after(series: Sequence[Candle], when: datetime) -> int:
    lo, hi = 0, len(series)
    while lo < hi:
        mid = (lo + hi) // 2
        if series[mid].start < when:
            lo = mid + 1
        else:
            hi = mid
    return lo
