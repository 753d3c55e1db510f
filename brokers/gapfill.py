"""Candle gap repair: 1-minute candles that come out exactly as if the stream never broke.

A realtime stream that drops and reconnects loses the trades printed during the
outage, and nothing replays them. Candles built from the ticks that did arrive
would be silently wrong (too little volume, a wrong high/low/close), and alerts
and strategies would act on them. The broker's REST minute-candle endpoint has the
truth for closed minutes, so the minutes the outage touched are rebuilt from it.

Which minutes are dirty
-----------------------
For one symbol, every lost trade happened after the last tick received before the
drop and before the first tick received after the reconnect. So the dirty range is
``[minute of the last tick before the drop, minute of the first tick after the
reconnect]`` (both inclusive). Minutes before it were complete, minutes after it
are complete (the connection was up for all of them).

* A second drop before the range is settled (before its last minute closed) just
  extends the same range.
* If the last tick's minute was already handed out (the runner's timer closed it),
  the range starts at the first minute not handed out: handed-out candles are
  immutable.
* If the symbol had no tick before the drop, the range starts at the minute of the
  drop time the caller passes (``at``), or failing that at the first tick after
  the reconnect (logged: trades before it cannot be located).
* If no tick arrives after the reconnect, the range ends at the minute of the
  reconnect time (``at`` of :meth:`GapRepairer.on_reconnect`) once
  :meth:`close_until` passes the end of that minute.

Contract of the output (what a market hub relies on)
----------------------------------------------------
:meth:`on_tick`, :meth:`close_until`, :meth:`apply` and :meth:`give_up` return
*final* 1-minute candles:

* per symbol in strictly increasing ``start`` order, each minute at most once;
* a clean minute is the candle built from its ticks (as ``CandleAggregator``
  builds it); a dirty minute is the REST candle, *replacing* (not merged with)
  whatever was built live, so a trade seen live and also counted by REST is
  counted once; a dirty minute in which REST reports no trade produces no candle
  (the same "no filler bars" rule as ``Timeframe``);
* a live candle later than a dirty range is held back until that range is
  repaired, to keep the order; so repaired output lags by one REST round trip.

A dirty range becomes a :class:`GapRequest` (take them with
:meth:`take_requests`) once its last minute has closed; the caller fetches the
minute candles of ``[start, end)`` and hands them to :meth:`apply`, or calls
:meth:`give_up`, which emits the live-built partial candles (logged as such)
rather than holding the symbol's candles back forever.

The class is pure: no clock, no I/O; callers pass every time.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engines.market import Candle, CandleAggregator, Tick, Timeframe

__all__ = ["GapRepairer", "GapRequest"]

log = logging.getLogger(__name__)

_MINUTE = timedelta(minutes=1)
_M1 = Timeframe.M1


def _minute(ts: datetime) -> datetime:
    return _M1.bucket(ts)[0]


@dataclass(frozen=True, slots=True)
class GapRequest:
    """Minutes ``[start, end)`` (UTC, minute-aligned) of ``symbol`` to fetch over REST."""

    symbol: str
    start: datetime
    end: datetime
    seq: int

    def minutes(self) -> list[datetime]:
        out, at = [], self.start
        while at < self.end:
            out.append(at)
            at += _MINUTE
        return out


@dataclass(slots=True, eq=False)
class _Gap:
    start: datetime | None  # first dirty minute; None until known
    last: datetime | None = None  # last dirty minute; None while the range is open
    partial: dict[datetime, Candle] = field(default_factory=dict)
    request: GapRequest | None = None
    result: list[Candle] | None = None


@dataclass(slots=True)
class _Symbol:
    agg: CandleAggregator
    last_minute: datetime | None = None  # minute of the last tick received
    floor: datetime | None = None  # first minute not yet closed (handed out or held)
    connected: bool = True
    resumed_at: datetime | None = None
    gap: _Gap | None = None  # the range still growing or waiting for its last minute
    queue: deque[Candle | _Gap] = field(default_factory=deque)  # output behind a gap


class GapRepairer:
    """Builds final 1m candles from ticks, repairing outage minutes from REST rows."""

    def __init__(self) -> None:
        self._symbols: dict[str, _Symbol] = {}
        self._requests: list[GapRequest] = []
        self._open_requests: dict[GapRequest, tuple[_Symbol, _Gap]] = {}
        self._seq = 0
        self.repaired_minutes = 0
        self.partial_minutes = 0

    # ---- state ------------------------------------------------------------------
    def _state(self, symbol: str) -> _Symbol:
        st = self._symbols.get(symbol)
        if st is None:
            st = self._symbols[symbol] = _Symbol(CandleAggregator([_M1]))
        return st

    def forget(self, symbol: str) -> None:
        """Drop everything about ``symbol`` (it was unsubscribed): no more output for it."""
        self._symbols.pop(symbol, None)
        self._requests = [r for r in self._requests if r.symbol != symbol]
        for req in [r for r in self._open_requests if r.symbol == symbol]:
            del self._open_requests[req]

    def dirty(self, symbol: str) -> bool:
        """Whether ``symbol`` has an outage range not yet repaired."""
        st = self._symbols.get(symbol)
        return st is not None and (
            st.gap is not None or any(isinstance(item, _Gap) for item in st.queue)
        )

    # ---- connection events --------------------------------------------------------
    def on_disconnect(self, symbols: Iterable[str], at: datetime | None = None) -> None:
        """The stream carrying ``symbols`` dropped at ``at`` (aware, same clock as ticks)."""
        for symbol in symbols:
            st = self._state(symbol)
            st.connected, st.resumed_at = False, None
            if st.gap is not None:
                st.gap.last = None  # a drop before the range settled extends it
                continue
            start = st.last_minute
            if start is None and at is not None:
                start = _minute(at)
            if start is not None and st.floor is not None and start < st.floor:
                start = st.floor
            st.gap = _Gap(start)

    def on_reconnect(self, symbols: Iterable[str], at: datetime | None = None) -> None:
        """``symbols`` stream again since ``at`` (resubscribed); ticks are complete again."""
        for symbol in symbols:
            st = self._state(symbol)
            st.connected, st.resumed_at = True, at

    # ---- ticks and time -----------------------------------------------------------
    def on_tick(self, tick: Tick) -> list[Candle]:
        """Add one live tick; return the candles that became final."""
        st = self._state(tick.symbol)
        minute = _minute(tick.ts)
        gap = st.gap
        if gap is not None and gap.last is None and st.connected:
            if gap.start is None:
                log.warning(
                    "gap of %s: no tick before the drop; repairing from the first tick after it",
                    tick.symbol,
                )
                gap.start = minute
            gap.last = max(minute, gap.start)
        out: list[Candle] = []
        late_before = st.agg.late_ticks
        for candle in st.agg.on_tick(tick):
            self._route(st, candle, out)
        if st.agg.late_ticks == late_before and (st.last_minute is None or minute > st.last_minute):
            st.last_minute = minute
        gap = st.gap
        if gap is not None and gap.last is not None and minute > gap.last:
            self._settle(tick.symbol, st)
        return out

    def close_until(self, ts: datetime) -> list[Candle]:
        """Close every minute that ended at or before ``ts`` (the runner's timer)."""
        out: list[Candle] = []
        for symbol, st in self._symbols.items():
            for candle in st.agg.close_until(ts):
                self._route(st, candle, out)
            gap = st.gap
            if gap is None:
                continue
            if gap.last is None and st.connected and st.resumed_at is not None:
                resumed = _minute(st.resumed_at)
                if resumed + _MINUTE <= ts:
                    gap.start = resumed if gap.start is None else gap.start
                    gap.last = max(resumed, gap.start)
            if gap.last is not None and gap.last + _MINUTE <= ts:
                self._settle(symbol, st)
        out.sort(key=lambda c: (c.start, c.symbol))  # as CandleAggregator.close_until orders
        return out

    def _route(self, st: _Symbol, candle: Candle, out: list[Candle]) -> None:
        nxt = candle.start + _MINUTE
        if st.floor is None or nxt > st.floor:
            st.floor = nxt
        gap = st.gap
        if (
            gap is not None
            and (gap.start is None or candle.start >= gap.start)
            and (gap.last is None or candle.start <= gap.last)
        ):
            gap.partial[candle.start] = candle  # built from an incomplete tick set
            return
        if st.queue:
            st.queue.append(candle)
        else:
            out.append(candle)

    def _settle(self, symbol: str, st: _Symbol) -> None:
        gap = st.gap
        assert gap is not None and gap.start is not None and gap.last is not None
        st.gap = None
        self._seq += 1
        request = GapRequest(symbol, gap.start, gap.last + _MINUTE, self._seq)
        gap.request = request
        st.queue.append(gap)
        if st.floor is None or request.end > st.floor:
            st.floor = request.end
        self._requests.append(request)
        self._open_requests[request] = (st, gap)

    # ---- repair -------------------------------------------------------------------
    def take_requests(self) -> list[GapRequest]:
        """Ranges whose last minute has closed and that now need their REST candles."""
        requests, self._requests = self._requests, []
        return requests

    def pending(self) -> list[GapRequest]:
        """Requests handed out and not yet answered by :meth:`apply` / :meth:`give_up`."""
        return list(self._open_requests)

    def apply(self, request: GapRequest, candles: Sequence[Candle]) -> list[Candle]:
        """Fill ``request`` with REST minute candles; return the candles now final.

        Rows of other symbols, other timeframes or outside ``[start, end)`` are
        ignored, so a caller may pass a whole day's page unfiltered.
        """
        entry = self._open_requests.pop(request, None)
        if entry is None:
            return []  # forgotten (unsubscribed) or answered twice
        st, gap = entry
        rows: dict[datetime, Candle] = {}
        for candle in candles:
            if (
                candle.symbol == request.symbol
                and candle.timeframe is _M1
                and request.start <= candle.start < request.end
                and _minute(candle.start) == candle.start
            ):
                rows[candle.start] = candle
        result: list[Candle] = []
        for minute in request.minutes():
            if minute in rows:
                result.append(rows[minute])
                self.repaired_minutes += 1
            elif minute in gap.partial:
                # REST may lag the live stream by a few seconds; a live partial bar
                # is closer to the truth than none at all.
                log.warning(
                    "gap of %s: REST has no row for %s though ticks were seen; keeping them",
                    request.symbol,
                    minute.isoformat(),
                )
                result.append(gap.partial[minute])
                self.partial_minutes += 1
        gap.result = result
        return self._drain(st)

    def give_up(self, request: GapRequest) -> list[Candle]:
        """REST could not be reached: release the live-built (partial) candles."""
        entry = self._open_requests.pop(request, None)
        if entry is None:
            return []
        st, gap = entry
        log.warning(
            "gap of %s %s..%s not repaired: emitting %d partial candle(s)",
            request.symbol,
            request.start.isoformat(),
            request.end.isoformat(),
            len(gap.partial),
        )
        gap.result = [gap.partial[m] for m in sorted(gap.partial)]
        self.partial_minutes += len(gap.result)
        return self._drain(st)

    @staticmethod
    def _drain(st: _Symbol) -> list[Candle]:
        out: list[Candle] = []
        while st.queue:
            head = st.queue[0]
            if isinstance(head, Candle):
                out.append(head)
            elif head.result is not None:
                out.extend(head.result)
            else:
                break
            st.queue.popleft()
        return out
