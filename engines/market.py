"""Market primitives shared by every layer: ticks, candles and KRX price arithmetic.

Prices are whole won (``int``). KRX quotes never have fractions, and integer
arithmetic keeps rule thresholds exact: a level is hit or it is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

# KRX unified tick-size table (KOSPI and KOSDAQ alike since 2023-01-25):
# (exclusive upper bound of the band, tick size in won).
_TICK_BANDS: tuple[tuple[int, int], ...] = (
    (2_000, 1),
    (5_000, 5),
    (20_000, 10),
    (50_000, 50),
    (200_000, 100),
    (500_000, 500),
)
_TOP_TICK = 1_000

PRICE_LIMIT_RATE = 0.30
"""Daily price limit: ±30% of the previous close."""


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade print. ``ts`` is timezone-aware (UTC) and comes from the source."""

    symbol: str
    price: int
    volume: int
    ts: datetime


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


def tick_size(price: int) -> int:
    """Tick size of the band that ``price`` falls in."""
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    for upper, size in _TICK_BANDS:
        if price < upper:
            return size
    return _TOP_TICK


def round_to_tick(price: int, direction: Direction = Direction.DOWN) -> int:
    """Snap a price onto the tick grid of its own band.

    Rounding down can cross into a lower band (e.g. 2,003 -> 2,000 is valid in
    both), so the result is always a quotable price.
    """
    size = tick_size(price)
    floor = price - price % size
    if direction is Direction.DOWN or floor == price:
        return floor
    return floor + size


def is_on_tick(price: int) -> bool:
    return price > 0 and price % tick_size(price) == 0


def price_limits(prev_close: int) -> tuple[int, int]:
    """Lower and upper limit prices for a day whose reference price is ``prev_close``.

    KRX rounds the upper limit down and the lower limit up onto the tick grid, so
    both limits are quotable and no further than 30% from the reference.
    """
    if prev_close <= 0:
        raise ValueError(f"previous close must be positive, got {prev_close}")
    upper = round_to_tick(int(prev_close * (1 + PRICE_LIMIT_RATE)), Direction.DOWN)
    raw_lower = prev_close * (1 - PRICE_LIMIT_RATE)
    lower_int = int(raw_lower) if raw_lower == int(raw_lower) else int(raw_lower) + 1
    lower = round_to_tick(max(lower_int, 1), Direction.UP)
    return lower, upper


def step_ticks(price: int, steps: int) -> int:
    """Move ``price`` by ``steps`` ticks, re-reading the tick size at each band edge."""
    for _ in range(abs(steps)):
        if steps > 0:
            price += tick_size(price)
        else:
            below = price - 1
            if below <= 0:
                return price
            price -= tick_size(below)
    return price


def change_pct(price: int, prev_close: int) -> float:
    """Percent change from the previous close, as the ticker shows it."""
    if prev_close <= 0:
        return 0.0
    return (price - prev_close) / prev_close * 100.0


# -- candles ------------------------------------------------------------------------------

KST = ZoneInfo("Asia/Seoul")
"""KRX's time zone. Korea has no daylight saving time, so this is UTC+9 all year."""

SESSION_OPEN_HOUR = 9
"""The regular session opens at 09:00 KST; intraday buckets are counted from it."""

_MINUTES = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "60m": 60}


class Timeframe(StrEnum):
    """A candle length. Every bucket boundary is computed in KST.

    * Intraday (``1m`` .. ``60m``): buckets of N minutes counted from 09:00 KST, the
      session open, so the first 60-minute candle is 09:00-10:00 and the last one,
      15:00-16:00, holds the 15:20-15:30 closing auction. Prints before 09:00 (the
      pre-open after-hours session) fall in buckets counted backwards from 09:00.
    * ``1d``: every print of a KST calendar day, including pre-open and after-hours
      trading. The candle is labelled with that day's 09:00 KST and closes at the
      next midnight KST.
    * ``1w``: Monday 00:00 KST to the next Monday, labelled Monday 09:00 KST.

    A bucket in which nothing traded produces no candle (no flat filler bars): a
    trading halt or a holiday is absent from the series, not a run of zero-volume
    bars, and indicators count traded bars.
    """

    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    M30 = "30m"
    M60 = "60m"
    D1 = "1d"
    W1 = "1w"

    @property
    def minutes(self) -> int | None:
        """Bucket length in minutes for intraday timeframes, ``None`` for 1d and 1w."""
        return _MINUTES.get(self.value)

    @property
    def span(self) -> timedelta:
        """Bucket length: a bucket is ``[end - span, end)``. Exact for 1d and 1w too,
        because KST has no daylight saving time."""
        minutes = self.minutes
        if minutes is not None:
            return timedelta(minutes=minutes)
        return timedelta(days=1 if self is Timeframe.D1 else 7)

    def bucket(self, ts: datetime) -> tuple[datetime, datetime]:
        """``(start, end)`` in UTC of the bucket holding ``ts`` (timezone-aware).

        ``start`` labels the candle; ``end`` is the first instant of the next bucket,
        when the candle can no longer change. The bucket is ``[end - span, end)``,
        which for 1d and 1w begins before ``start`` (at midnight KST).
        """
        local = ts.astimezone(KST)
        open_ = local.replace(hour=SESSION_OPEN_HOUR, minute=0, second=0, microsecond=0)
        minutes = self.minutes
        if minutes is not None:
            step = timedelta(minutes=minutes)
            start = open_ + ((local - open_) // step) * step
            return start.astimezone(UTC), (start + step).astimezone(UTC)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self is Timeframe.D1:
            end = midnight + timedelta(days=1)
            return open_.astimezone(UTC), end.astimezone(UTC)
        monday = midnight - timedelta(days=local.weekday())
        start = monday.replace(hour=SESSION_OPEN_HOUR)
        return start.astimezone(UTC), (monday + timedelta(days=7)).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Candle:
    """One closed bar of ``symbol`` on ``timeframe``. ``start`` is UTC (see ``Timeframe``
    for what it labels); prices are whole won, ``volume`` is shares."""

    symbol: str
    timeframe: Timeframe
    start: datetime
    open: int
    high: int
    low: int
    close: int
    volume: int


class _Bar:
    """The candle being built for one (symbol, timeframe): mutable, updated in place."""

    __slots__ = ("begin", "close", "end", "high", "low", "open", "start", "volume")

    def __init__(self, tf: Timeframe, ts: datetime, price: int, volume: int) -> None:
        self.start, self.end = tf.bucket(ts)
        self.begin = self.end - tf.span
        self.open = self.high = self.low = self.close = price
        self.volume = volume

    def add(self, price: int, volume: int) -> None:
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += volume

    def candle(self, symbol: str, timeframe: Timeframe) -> Candle:
        return Candle(
            symbol, timeframe, self.start, self.open, self.high, self.low, self.close, self.volume
        )


class CandleAggregator:
    """Builds candles of several timeframes from ticks, for any number of symbols.

    A candle is returned once it is *closed*: when a tick of the same symbol falls in
    a later bucket (``on_tick``), or when the runner's timer says the bucket's end has
    passed (``close_until``: a symbol that stops trading still gets its last candle).
    Work per tick is O(number of timeframes): one bucket computation and one update
    of the open candle each.

    Ticks must arrive in time order per symbol, as a broker stream delivers them. A
    tick older than the symbol's open candle, or inside a bucket already closed, is
    *late*: its candle has been handed out (alerts may have fired on it) and candles
    are immutable, so the tick is dropped and counted in ``late_ticks``.
    """

    def __init__(self, timeframes: Iterable[Timeframe]) -> None:
        frames = [Timeframe(tf) for tf in timeframes]
        if not frames:
            raise ValueError("at least one timeframe is needed")
        if len(set(frames)) != len(frames):
            raise ValueError(f"duplicate timeframes in {[str(tf) for tf in frames]}")
        self.timeframes: tuple[Timeframe, ...] = tuple(frames)
        self._open: dict[tuple[str, Timeframe], _Bar] = {}
        self._closed_until: dict[tuple[str, Timeframe], datetime] = {}
        self.late_ticks = 0

    def on_tick(self, tick: Tick) -> list[Candle]:
        """Add ``tick``; return the candles it closed, in ``timeframes`` order."""
        if not tick.symbol:
            raise ValueError("tick symbol must not be empty")
        if tick.price <= 0:
            raise ValueError(f"tick price must be positive, got {tick.price}")
        if tick.volume < 0:
            raise ValueError(f"tick volume must be >= 0, got {tick.volume}")
        if tick.ts.utcoffset() is None:
            raise ValueError(f"tick ts must be timezone-aware, got {tick.ts!r}")
        closed: list[Candle] = []
        for tf in self.timeframes:
            key = (tick.symbol, tf)
            bar = self._open.get(key)
            if bar is not None and bar.begin <= tick.ts < bar.end:
                bar.add(tick.price, tick.volume)
                continue
            if (bar is not None and tick.ts < bar.begin) or (
                key in self._closed_until and tick.ts < self._closed_until[key]
            ):
                self.late_ticks += 1
                continue
            if bar is not None:
                closed.append(bar.candle(tick.symbol, tf))
            self._open[key] = _Bar(tf, tick.ts, tick.price, tick.volume)
        return closed

    def close_until(self, ts: datetime) -> list[Candle]:
        """Close every open candle whose bucket ended at or before ``ts`` (aware).

        For the runner's timer, so the last bar before a quiet spell is not held back
        until the next trade. Cost is O(open candles), once per timer call.
        """
        if ts.utcoffset() is None:
            raise ValueError(f"ts must be timezone-aware, got {ts!r}")
        closed: list[Candle] = []
        for key, bar in list(self._open.items()):
            if bar.end <= ts:
                closed.append(bar.candle(*key))
                del self._open[key]
                self._closed_until[key] = bar.end
        closed.sort(key=lambda c: (c.start, c.symbol, self.timeframes.index(c.timeframe)))
        return closed

    def current(self, symbol: str, timeframe: Timeframe) -> Candle | None:
        """The candle still being built (not closed), for display; ``None`` if none."""
        bar = self._open.get((symbol, timeframe))
        return None if bar is None else bar.candle(symbol, timeframe)

    def seed(self, candle: Candle) -> bool:
        """Start ``candle``'s bucket as the open bar, with its open, high, low and volume.

        For a runner taking over from one that died: the ticks of the forming bar it
        never saw come back as a partial candle from the broker's minute chart, and the
        next ticks carry on from it, so the bar closes whole rather than as the part the
        successor happened to see. Refused (False) when a bar of that symbol and
        timeframe is already open or its bucket is closed: ticks seen here win.
        """
        if candle.timeframe not in self.timeframes:
            raise ValueError(f"timeframe {candle.timeframe} is not aggregated here")
        if candle.start.utcoffset() is None:
            raise ValueError(f"candle start must be timezone-aware, got {candle.start!r}")
        if not (
            0 < candle.low <= min(candle.open, candle.close)
            and max(candle.open, candle.close) <= candle.high
            and candle.volume >= 0
        ):
            raise ValueError(f"candle prices are inconsistent: {candle}")
        key = (candle.symbol, candle.timeframe)
        start, end = candle.timeframe.bucket(candle.start)
        if start != candle.start:
            raise ValueError(f"{candle.start} does not label a {candle.timeframe} bucket")
        if key in self._open or (key in self._closed_until and end <= self._closed_until[key]):
            return False
        bar = _Bar(candle.timeframe, candle.start, candle.open, candle.volume)
        bar.high, bar.low, bar.close = candle.high, candle.low, candle.close
        self._open[key] = bar
        return True


def roll_up(minutes: Iterable[Candle], timeframe: Timeframe) -> list[Candle]:
    """1-minute candles merged into ``timeframe`` buckets, oldest first.

    An intraday bucket is whole only when every traded minute of it is given; the
    caller decides which buckets it holds in full. Minutes of another timeframe or
    symbol, or out of time order, are refused rather than merged into a wrong bar.
    """
    if timeframe.minutes is None:
        raise ValueError(f"only intraday timeframes roll up from minutes, not {timeframe}")
    out: list[Candle] = []
    current: tuple[str, datetime, int, int, int, int, int] | None = None
    last: datetime | None = None
    for m in minutes:
        if m.timeframe is not Timeframe.M1:
            raise ValueError(f"roll_up takes 1m candles, got {m.timeframe}")
        if last is not None and m.start <= last:
            raise ValueError(f"minutes out of order or repeated at {m.start}")
        if current is not None and m.symbol != current[0]:
            raise ValueError(f"roll_up takes one symbol's minutes, got {current[0]} and {m.symbol}")
        last = m.start
        start = timeframe.bucket(m.start)[0]
        if current is not None and current[1] != start:
            out.append(Candle(current[0], timeframe, *current[1:]))
            current = None
        if current is None:
            current = (m.symbol, start, m.open, m.high, m.low, m.close, m.volume)
        else:
            sym, st, o, h, lo, _c, v = current
            current = (sym, st, o, max(h, m.high), min(lo, m.low), m.close, v + m.volume)
    if current is not None:
        out.append(Candle(current[0], timeframe, *current[1:]))
    return out
