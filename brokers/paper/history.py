"""Deterministic synthetic price history for the paper market.

A fresh demo has no past: indicators would need hours of live ticks before a
moving average means anything, and the rule builder's preview would show an
empty chart. This module makes up a plausible past instead, one that joins the
live simulation without a seam:

* It covers only *completed* XKRX sessions (from ``exchange_calendars``, so
  holidays and late opens are right), and intraday bars lie inside the session.
* It ends at the symbol's reference price: the close of the last completed
  session is ``ref_price``, which is exactly the ``prev_close`` the
  :class:`~brokers.paper.market.SimulatedMarket` starts from, so the live day's
  change % and ±30% limits agree with the stored history. A session in progress
  at ``end`` is left out, not synthesised: the live market owns today.
* Every timeframe is cut from one minute-level path, so a daily bar is exactly
  the aggregate of that day's 1m bars, and 5m/15m/60m agree with 1m.
* Prices are on the KRX tick grid and inside each day's price limits; OHLC is
  consistent; volume is positive, larger at the open and close, and larger on
  days that move more.
* The same ``(symbol, ref_price, seed)`` and last completed session give the
  same bars, whichever timeframes and how many bars are asked for: the path is
  drawn from the newest session backwards, one fixed-width block of random
  numbers per session, so asking for more history only appends older days.

The model is a random walk in log price (geometric Brownian motion without
drift): a daily volatility of about 2% (varied per symbol), split into an
overnight gap and an intraday Brownian bridge from the open to the close at
one-minute resolution. It is a demo aid, not a market model: no fat tails, no
volatility clustering, and the 15:20-15:30 closing auction is drawn as ordinary
continuous trading.
"""

from __future__ import annotations

import bisect
import math
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np

from brokers.base import SymbolInfo
from brokers.paper.calendar import load_calendar
from engines.market import (
    KST,
    SESSION_OPEN_HOUR,
    Candle,
    Direction,
    Timeframe,
    price_limits,
    round_to_tick,
    tick_size,
)

__all__ = [
    "DAILY_VOLATILITY",
    "HistoryUnavailable",
    "regular_session_bars",
    "synthetic_histories",
    "synthetic_history",
]

DAILY_VOLATILITY = 0.02
"""Typical standard deviation of a day's log return; each symbol gets 0.6x to 1.75x of it."""

_VOL_RANGE = (0.012, 0.035)
_GAP_SHARE = 0.35
"""Share of the daily standard deviation that is the overnight gap (close to next open)."""

_MAX_DAILY_MOVE = 0.2
"""Cap on a day's log return (about +22% / -18%): closes then never touch the ±30% limits,
so clamping to the limits can only trim intraday extremes and never moves a close."""

_MINUTE_WICK = 0.5
"""How far, in per-minute standard deviations, a 1m bar's high/low reach past its body."""

_TYPICAL_DAILY_VALUE_WON = 10_000_000_000
"""Median daily traded value (10 billion won); each symbol gets a lognormal multiple of it."""

_MAX_SESSION_MINUTES = 420
"""Width of each session's block of random numbers. Fixed, so that a session's draws do not
depend on which other sessions are in the window. XKRX sessions last at most 390 minutes
(09:00-15:30, or 10:00-16:30 on the college entrance exam day); the margin covers a
calendar change, and a longer session is refused rather than silently truncated."""

_REGULAR_MINUTES = 390
"""09:00-15:30: the minutes the intraday volatility is scaled to."""

# Columns of a session's block: three per-day draws, then four per-minute rows.
_R, _GAP, _DAYVOL = 0, 1, 2
_EPS = 3
_HIGH = _EPS + _MAX_SESSION_MINUTES
_LOW = _HIGH + _MAX_SESSION_MINUTES
_VOL = _LOW + _MAX_SESSION_MINUTES
_BLOCK = _VOL + _MAX_SESSION_MINUTES


class HistoryUnavailable(ValueError):
    """``end`` (or the history before it) lies outside the XKRX calendar's range.

    The calendar spans about 20 years back and one year ahead of when it was
    built; beyond that nobody knows which days traded, so no history is made up.
    """


@dataclass(frozen=True, slots=True)
class _Session:
    day: date
    open: datetime  # UTC
    close: datetime  # UTC
    minutes: int
    offset: int  # minutes from 09:00 KST to the open: intraday buckets count from 09:00


_table_lock = threading.Lock()
_table: tuple[tuple[_Session, ...], tuple[datetime, ...]] | None = None


def _sessions() -> tuple[tuple[_Session, ...], tuple[datetime, ...]]:
    """All XKRX sessions, oldest first, and their closes (for bisecting); built once."""
    global _table
    if _table is None:
        with _table_lock:
            if _table is None:
                sched = load_calendar().schedule
                sessions: list[_Session] = []
                for label, opened, closed in zip(
                    sched.index, sched["open"], sched["close"], strict=True
                ):
                    day = label.date()
                    o = opened.to_pydatetime().astimezone(UTC)
                    c = closed.to_pydatetime().astimezone(UTC)
                    nine = datetime.combine(day, time(SESSION_OPEN_HOUR), KST)
                    sessions.append(
                        _Session(
                            day=day,
                            open=o,
                            close=c,
                            minutes=int((c - o) / timedelta(minutes=1)),
                            offset=int((o - nine) / timedelta(minutes=1)),
                        )
                    )
                _table = (tuple(sessions), tuple(s.close for s in sessions))
    return _table


def _closed_sessions(end: datetime) -> tuple[_Session, ...]:
    """Sessions that closed at or before ``end``, oldest first."""
    sessions, closes = _sessions()
    if end > closes[-1]:
        # The calendar cannot say which days after its last session trade.
        raise HistoryUnavailable(
            f"{end.isoformat()} is past the XKRX calendar, which ends {closes[-1].date()}"
        )
    return sessions[: bisect.bisect_right(closes, end)]


def regular_session_bars(timeframe: Timeframe) -> int:
    """Bars of ``timeframe`` in a regular 09:00-15:30 session (1 for 1d; 1w is refused).

    For callers that think in sessions ("the last 5 days of 1m") but ask for bars.
    """
    tf = Timeframe(timeframe)
    if tf is Timeframe.W1:
        raise ValueError("a week is not a part of a session")
    minutes = tf.minutes
    return 1 if minutes is None else math.ceil(_REGULAR_MINUTES / minutes)


def _nearest_tick(price: float) -> int:
    """The quotable price nearest to ``price`` (at least 1 won).

    Monotonic (a higher input never rounds lower), which is what keeps
    low <= open, close <= high true after rounding each of them separately.
    """
    if price <= 1:
        return 1
    below = round_to_tick(int(price), Direction.DOWN)
    above = below + tick_size(below)
    return above if price - below >= above - price else below


def _bars_in(session: _Session, minutes: int) -> int:
    first = session.offset // minutes
    last = (session.offset + session.minutes - 1) // minutes
    return last - first + 1


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _sessions_needed(closed: tuple[_Session, ...], tf: Timeframe, bars: int) -> int:
    """How many of the newest sessions hold the last ``bars`` bars of ``tf``."""
    if bars <= 0:
        return 0
    if tf is Timeframe.D1:
        need = bars
    elif tf is Timeframe.W1:
        # Whole weeks only: stop at the first session of the week before the oldest.
        need, seen, current = len(closed) + 1, 0, None
        for i, s in enumerate(reversed(closed)):
            week = _monday(s.day)
            if week != current:
                if seen == bars:
                    need = i
                    break
                seen, current = seen + 1, week
    else:
        minutes = tf.minutes
        assert minutes is not None
        need, have = len(closed) + 1, 0
        for i, s in enumerate(reversed(closed), start=1):
            have += _bars_in(s, minutes)
            if have >= bars:
                need = i
                break
    if need > len(closed):
        raise HistoryUnavailable(
            f"{bars} bars of {tf} reach before the XKRX calendar's first session"
        )
    return need


def _rng(seed: int, code: str, stream: int) -> np.random.Generator:
    # crc32, not hash(): str hashes change between processes, and the history must not.
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(code.encode()), stream])


def _round_ticks(prices: np.ndarray) -> list[int]:
    """:func:`_nearest_tick` of every price, vectorised when they share one tick band.

    A day's prices nearly always sit in one band, and the tick size only grows
    with the price, so checking the two extremes is enough; mixed bands take
    the scalar path.
    """
    if prices.size == 0:
        return []
    low, high = float(prices.min()), float(prices.max())
    if low >= 1:
        size = tick_size(int(low))
        if size == tick_size(int(high)):
            below = np.floor(prices / size) * size
            up = (prices - below) >= (below + size - prices)
            return (below + up * size).astype(np.int64).tolist()
    return [_nearest_tick(p) for p in prices.tolist()]


@dataclass(frozen=True, slots=True)
class _Path:
    """The minute-level path of ``n`` sessions, newest first (row 0 is the newest).

    Prices are kept as logs, unclamped: exp, clamping to the day's limits and
    rounding to the tick grid are all monotonic, so they are applied only to the
    bars actually emitted (a daily high is the clamped exp of the largest
    minute high), which saves converting 400 days of minutes for a daily series.
    """

    sessions: tuple[_Session, ...]  # newest first, one per row
    mo: np.ndarray  # log minute open, shape (n, _MAX_SESSION_MINUTES); also mh, ml, mc
    mh: np.ndarray
    ml: np.ndarray
    mc: np.ndarray
    mv: np.ndarray  # int64 volume, 0 outside the session
    lower: np.ndarray  # each day's limit prices, from the previous close
    upper: np.ndarray

    def prices(self, k: int, logs: np.ndarray) -> np.ndarray:
        """Day ``k``'s log prices as won, inside that day's limits (not yet on ticks)."""
        return np.clip(np.exp(logs), self.lower[k], self.upper[k])


def _path(code: str, ref_price: int, sessions: tuple[_Session, ...], seed: int) -> _Path:
    n = len(sessions)
    params = _rng(seed, code, 0).standard_normal(2)
    sigma_d = float(np.clip(DAILY_VOLATILITY * math.exp(0.25 * params[0]), *_VOL_RANGE))
    value_won = _TYPICAL_DAILY_VALUE_WON * math.exp(0.8 * params[1])
    sigma_gap = _GAP_SHARE * sigma_d
    sigma_min = math.sqrt(sigma_d**2 - sigma_gap**2) / math.sqrt(_REGULAR_MINUTES)

    z = _rng(seed, code, 1).standard_normal((n, _BLOCK))
    r = np.clip(z[:, _R] * sigma_d, -_MAX_DAILY_MOVE, _MAX_DAILY_MOVE)
    # Log closes, newest first: close[0] is the reference price; each older close
    # is the newer one less that newer day's return.
    close = math.log(ref_price) - np.concatenate(([0.0], np.cumsum(r)))  # n + 1 values
    c, prev = close[:n], close[1:]
    x_open = prev + z[:, _GAP] * sigma_gap

    m = np.array([s.minutes for s in sessions], dtype=np.int64)
    if int(m.max()) > _MAX_SESSION_MINUTES:
        raise HistoryUnavailable(f"a session longer than {_MAX_SESSION_MINUTES} minutes")
    j = np.arange(_MAX_SESSION_MINUTES + 1)
    frac = np.minimum(j[None, :] / m[:, None], 1.0)
    walk = np.zeros((n, _MAX_SESSION_MINUTES + 1))
    np.cumsum(z[:, _EPS:_HIGH] * sigma_min, axis=1, out=walk[:, 1:])
    rows = np.arange(n)
    # Brownian bridge: the walk with its end pulled back to zero, on the line open -> close.
    x = x_open[:, None] + frac * (c - x_open)[:, None] + walk - frac * walk[rows, m][:, None]
    x[rows, m] = c  # exactly the close, whatever the rounding above did
    mo, mc = x[:, :-1], x[:, 1:]
    wick = _MINUTE_WICK * sigma_min
    mh = np.maximum(mo, mc) + np.abs(z[:, _HIGH:_LOW]) * wick
    ml = np.minimum(mo, mc) - np.abs(z[:, _LOW:_VOL]) * wick

    # Each day's limits come from the previous close as quoted (on the tick grid).
    limits = np.array([price_limits(_nearest_tick(math.exp(p))) for p in prev], dtype=np.float64)

    # Volume: U-shaped over the session, more on days that move more, noisy per minute.
    pos = j[None, :-1].astype(np.float64)
    valid = pos < m[:, None]
    profile = 1.0 + 2.0 * np.exp(-pos / 25.0) + 1.2 * np.exp(-(m[:, None] - 1 - pos) / 20.0)
    profile = np.where(valid, profile, 0.0)
    shares = value_won / np.exp(c) * (1.0 + 8.0 * np.abs(r)) * np.exp(0.3 * z[:, _DAYVOL])
    noise = np.exp(0.5 * z[:, _VOL:] - 0.125)
    per_minute = shares[:, None] * profile / profile.sum(axis=1, keepdims=True) * noise
    mv = np.where(valid, np.maximum(1, np.rint(per_minute)), 0).astype(np.int64)
    return _Path(sessions, mo, mh, ml, mc, mv, limits[:, 0], limits[:, 1])


def _day_open(day: date) -> datetime:
    """A daily candle's label: that day's 09:00 KST, as ``Timeframe.D1.bucket`` gives it."""
    return datetime.combine(day, time(SESSION_OPEN_HOUR), KST).astimezone(UTC)


def _daily(code: str, path: _Path, n: int) -> list[Candle]:
    """Daily candles of the newest ``n`` sessions, oldest first."""
    rows = np.arange(n)
    m = np.array([s.minutes for s in path.sessions[:n]], dtype=np.int64)
    lower, upper = path.lower[:n], path.upper[:n]

    def won(logs: np.ndarray) -> list[int]:
        return _round_ticks(np.clip(np.exp(logs), lower, upper))

    opens = won(path.mo[:n, 0])
    highs = won(path.mh[:n].max(axis=1, where=path.mv[:n] > 0, initial=-np.inf))
    lows = won(path.ml[:n].min(axis=1, where=path.mv[:n] > 0, initial=np.inf))
    closes = won(path.mc[rows, m - 1])
    volumes = path.mv[:n].sum(axis=1).tolist()
    return [
        Candle(code, Timeframe.D1, _day_open(path.sessions[k].day), *bar)
        for k, *bar in reversed(
            list(zip(range(n), opens, highs, lows, closes, volumes, strict=True))
        )
    ]


def _weekly(code: str, days: list[Candle]) -> list[Candle]:
    """Weekly candles from daily ones (oldest first), labelled Monday 09:00 KST."""
    out: list[Candle] = []
    for d in days:
        start = Timeframe.W1.bucket(d.start)[0]
        if out and out[-1].start == start:
            w = out[-1]
            out[-1] = Candle(
                code,
                Timeframe.W1,
                start,
                w.open,
                max(w.high, d.high),
                min(w.low, d.low),
                d.close,
                w.volume + d.volume,
            )
        else:
            out.append(Candle(code, Timeframe.W1, start, d.open, d.high, d.low, d.close, d.volume))
    return out


def _intraday(
    code: str, path: _Path, n: int, frames: list[Timeframe]
) -> dict[Timeframe, list[Candle]]:
    """Intraday candles of the newest ``n`` sessions for each of ``frames``, oldest first.

    Minute bars are rounded to ticks first and the longer bars aggregated from the
    rounded ones, so a 5m bar is exactly the five 1m bars it spans.
    """
    out: dict[Timeframe, list[Candle]] = {tf: [] for tf in frames}
    for k in reversed(range(n)):
        s = path.sessions[k]
        m = s.minutes
        o, h, lo, c = (
            np.array(_round_ticks(path.prices(k, a[k, :m])), dtype=np.int64)
            for a in (path.mo, path.mh, path.ml, path.mc)
        )
        v = path.mv[k, :m]
        nine = datetime.combine(s.day, time(SESSION_OPEN_HOUR), KST).astimezone(UTC)
        for tf in frames:
            size = tf.minutes
            assert size is not None
            bucket = (s.offset + np.arange(m)) // size
            first = np.flatnonzero(np.diff(bucket, prepend=-1))
            last = np.append(first[1:], m) - 1
            step = timedelta(minutes=size)
            rows = zip(
                bucket[first].tolist(),
                o[first].tolist(),
                np.maximum.reduceat(h, first).tolist(),
                np.minimum.reduceat(lo, first).tolist(),
                c[last].tolist(),
                np.add.reduceat(v, first).tolist(),
                strict=True,
            )
            out[tf].extend(
                Candle(code, tf, nine + b * step, bo, bh, bl, bc, bv)
                for b, bo, bh, bl, bc, bv in rows
            )
    return out


def synthetic_histories(
    symbol: SymbolInfo | str,
    ref_price: int,
    end: datetime,
    wanted: Mapping[Timeframe, int],
    seed: int,
) -> dict[Timeframe, list[Candle]]:
    """The last ``wanted[tf]`` closed bars of each timeframe, oldest first, from one path.

    One call for several timeframes draws the minute path once, which is what
    makes a backfill of many timeframes cheap, and guarantees they agree.
    Raises :class:`HistoryUnavailable` when the calendar does not reach back
    far enough (or ``end`` is past it), ``ValueError`` on bad arguments.
    """
    code = symbol.code if isinstance(symbol, SymbolInfo) else symbol
    if not code:
        raise ValueError("symbol code must not be empty")
    if ref_price <= 0 or round_to_tick(ref_price) != ref_price:
        raise ValueError(f"ref_price must be a positive price on the tick grid, got {ref_price}")
    if end.utcoffset() is None:
        raise ValueError(f"end must be timezone-aware, got {end!r}")
    frames = {Timeframe(tf): int(bars) for tf, bars in wanted.items()}
    for tf, bars in frames.items():
        if bars < 0:
            raise ValueError(f"bars for {tf} must be >= 0, got {bars}")
    closed = _closed_sessions(end.astimezone(UTC))
    need = {tf: _sessions_needed(closed, tf, bars) for tf, bars in frames.items()}
    n = max(need.values(), default=0)
    result: dict[Timeframe, list[Candle]] = {tf: [] for tf in frames}
    if n == 0:
        return result
    newest_first = tuple(reversed(closed[-n:]))
    path = _path(code, ref_price, newest_first, seed)

    day_frames = [tf for tf in frames if tf in (Timeframe.D1, Timeframe.W1)]
    if day_frames:
        days = _daily(code, path, max(need[tf] for tf in day_frames))
        if Timeframe.D1 in frames:
            result[Timeframe.D1] = days[len(days) - need[Timeframe.D1] :]
        if Timeframe.W1 in frames:
            weeks = _weekly(code, days[len(days) - need[Timeframe.W1] :])
            result[Timeframe.W1] = weeks[len(weeks) - frames[Timeframe.W1] :]
    intra = [tf for tf in frames if tf.minutes is not None and frames[tf] > 0]
    if intra:
        bars = _intraday(code, path, max(need[tf] for tf in intra), intra)
        for tf in intra:
            result[tf] = bars[tf][len(bars[tf]) - frames[tf] :]
    return result


def synthetic_history(
    symbol: SymbolInfo | str,
    ref_price: int,
    end: datetime,
    timeframe: Timeframe,
    bars: int,
    seed: int,
) -> list[Candle]:
    """The last ``bars`` closed candles of ``timeframe`` before ``end``, oldest first.

    Only completed XKRX sessions are covered (see the module docstring), and the
    last candle closes at ``ref_price``. Deterministic in ``(symbol, ref_price,
    seed)`` and the last session completed by ``end``.
    """
    tf = Timeframe(timeframe)
    return synthetic_histories(symbol, ref_price, end, {tf: bars}, seed)[tf]
