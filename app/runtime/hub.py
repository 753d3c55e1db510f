"""The market hub: one upstream subscription per symbol, however many users watch it.

Brokers limit realtime data per connection (KIS: one websocket session per app
key, about 40 subscriptions per session), while a platform has thousands of
users with overlapping watchlists. So nothing subscribes upstream directly.
Consumers (a user's watchlist and rules, an open chart, the paper account's open
orders) *declare interest* in symbols; the hub reference-counts that interest,
subscribes a symbol upstream when its count goes from 0 to 1 and unsubscribes it
when the count drops back to 0, and spreads symbols over as many upstream
sessions as the capacity needs (up to ``max_sessions``).

Symbols that fit nowhere wait in ``pending`` (logged, shown on the admin status
page) and are placed as soon as another symbol frees a slot: a full broker limit
degrades to "some symbols are not live", never to an error for every user.

The hub is itself a :class:`brokers.base.MarketData`, so the runner reads one
merged tick stream and does not know how many sessions feed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from brokers.base import MarketData, Quote, SymbolInfo
from engines.market import Candle, Tick

__all__ = ["MarketHub", "Upstream"]

log = logging.getLogger(__name__)

DIRECT_CONSUMER = "direct"
"""Interest declared through the plain ``subscribe``/``unsubscribe`` of the protocol."""

PUMP_RETRY_MAX = 30.0


@dataclass(slots=True)
class Upstream:
    """One upstream session and the symbols placed on it."""

    index: int
    source: MarketData
    capacity: int | None
    symbols: set[str] = field(default_factory=set)

    @property
    def free(self) -> int | None:
        return None if self.capacity is None else self.capacity - len(self.symbols)

    def has_room(self) -> bool:
        free = self.free
        return free is None or free > 0


class MarketHub:
    """Reference-counted, capacity-aware fan-in of upstream market-data sessions.

    ``factory(i)`` opens the i-th upstream session (``i`` from 0); the first one is
    opened at once because quotes and the symbol list come from it. ``capacity``
    is the number of symbols one session may stream (``None``: unlimited, like the
    simulated market).
    """

    name = "hub"

    def __init__(
        self,
        factory: Callable[[int], MarketData],
        *,
        capacity: int | None = None,
        max_sessions: int = 1,
    ) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self._factory = factory
        self.capacity = capacity
        self.max_sessions = max_sessions
        self.upstreams: list[Upstream] = [Upstream(0, factory(0), capacity)]
        self._interest: dict[str, set[str]] = {}
        self._refs: dict[str, int] = {}
        self._placed: dict[str, Upstream] = {}
        self.pending: set[str] = set()
        self._lock = asyncio.Lock()
        self._queue: asyncio.Queue[Tick] = asyncio.Queue()
        self._pumps: dict[int, asyncio.Task[None]] = {}
        self._streaming = False
        self._closed = asyncio.Event()

    # ---- interest ---------------------------------------------------------------
    async def set_interest(self, consumer: str, symbols: Iterable[str]) -> None:
        """Replace ``consumer``'s symbols; upstream changes only where a count crosses 0."""
        wanted = set(symbols)
        async with self._lock:
            before = self._interest.get(consumer, set())
            added, removed = wanted - before, before - wanted
            if wanted:
                self._interest[consumer] = wanted
            else:
                self._interest.pop(consumer, None)
            first = [s for s in sorted(added) if self._bump(s, 1) == 1]
            last = [s for s in sorted(removed) if self._bump(s, -1) == 0]
            await self._detach(last)
            await self._place(first)
            if last and self.pending:
                await self._place(sorted(self.pending))

    async def drop_consumer(self, consumer: str) -> None:
        await self.set_interest(consumer, ())

    def consumers(self) -> dict[str, set[str]]:
        return {c: set(s) for c, s in self._interest.items()}

    def refcount(self, symbol: str) -> int:
        return self._refs.get(symbol, 0)

    def upstream_of(self, symbol: str) -> int | None:
        up = self._placed.get(symbol)
        return None if up is None else up.index

    def live_symbols(self) -> set[str]:
        return set(self._placed)

    def status(self) -> dict[str, object]:
        """For the admin status page and logs: how full each session is."""
        return {
            "sessions": [
                {"index": u.index, "symbols": len(u.symbols), "capacity": u.capacity}
                for u in self.upstreams
            ],
            "symbols": len(self._placed),
            "pending": sorted(self.pending),
            "consumers": len(self._interest),
        }

    def _bump(self, symbol: str, delta: int) -> int:
        count = self._refs.get(symbol, 0) + delta
        if count <= 0:
            self._refs.pop(symbol, None)
            return 0
        self._refs[symbol] = count
        return count

    async def _detach(self, symbols: list[str]) -> None:
        by_upstream: dict[int, list[str]] = {}
        for s in symbols:
            self.pending.discard(s)
            up = self._placed.pop(s, None)
            if up is not None:
                up.symbols.discard(s)
                by_upstream.setdefault(up.index, []).append(s)
        for index, codes in by_upstream.items():
            try:
                await self.upstreams[index].source.unsubscribe(codes)
            except Exception:
                # The slot is free on our side either way; a stale upstream
                # subscription costs bandwidth, not correctness (ticks of symbols
                # nobody wants are dropped in the pump).
                log.exception("upstream %d: unsubscribe of %d symbols failed", index, len(codes))

    async def _place(self, symbols: list[str]) -> None:
        """First fit: fill the open sessions before opening another one."""
        batches: dict[int, list[str]] = {}
        for s in symbols:
            if s in self._placed or self._refs.get(s, 0) == 0:
                self.pending.discard(s)
                continue
            up = self._session_with_room()
            if up is None:
                if s not in self.pending:
                    log.warning("no upstream capacity left for %s; it waits", s)
                self.pending.add(s)
                continue
            self.pending.discard(s)
            up.symbols.add(s)
            self._placed[s] = up
            batches.setdefault(up.index, []).append(s)
        for index, codes in batches.items():
            up = self.upstreams[index]
            try:
                await up.source.subscribe(codes)
            except Exception:
                # Interest stays counted; the symbols wait and ``retry_pending``
                # places them again, so a broker hiccup is not lost interest.
                log.exception("upstream %d: subscribe of %d symbols failed", index, len(codes))
                for s in codes:
                    up.symbols.discard(s)
                    self._placed.pop(s, None)
                self.pending.update(codes)

    async def retry_pending(self) -> None:
        """Place waiting symbols again (after a failed subscribe or a freed slot)."""
        if not self.pending:
            return
        async with self._lock:
            await self._place(sorted(self.pending))

    def _session_with_room(self) -> Upstream | None:
        for up in self.upstreams:
            if up.has_room():
                return up
        if len(self.upstreams) >= self.max_sessions:
            return None
        up = Upstream(len(self.upstreams), self._factory(len(self.upstreams)), self.capacity)
        self.upstreams.append(up)
        log.info("opened upstream session %d", up.index)
        if self._streaming:
            self._start_pump(up)
        return up

    # ---- MarketData -------------------------------------------------------------
    async def list_symbols(self) -> list[SymbolInfo]:
        return await self.upstreams[0].source.list_symbols()

    async def quote(self, symbol: str) -> Quote:
        up = self._placed.get(symbol, self.upstreams[0])
        return await up.source.quote(symbol)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        current = self._interest.get(DIRECT_CONSUMER, set())
        await self.set_interest(DIRECT_CONSUMER, current | set(symbols))

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        current = self._interest.get(DIRECT_CONSUMER, set())
        await self.set_interest(DIRECT_CONSUMER, current - set(symbols))

    async def ticks(self) -> AsyncIterator[Tick]:
        """The merged stream of every session. Ticks of a symbol nobody wants any
        more (an unsubscribe still in flight upstream) are dropped here."""
        if self.capacity is None:
            # An unlimited upstream is the only one: read it directly, so the
            # consumer's pace is the source's pace (no queue, no extra task hop).
            async for tick in self.upstreams[0].source.ticks():
                if tick.symbol in self._placed:
                    yield tick
            return
        self._streaming = True
        for up in self.upstreams:
            self._start_pump(up)
        while not self._closed.is_set():
            getter = asyncio.ensure_future(self._queue.get())
            closer = asyncio.ensure_future(self._closed.wait())
            try:
                done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closer.cancel()
            if getter not in done:
                getter.cancel()
                return
            tick = getter.result()
            if tick.symbol in self._placed:
                yield tick

    def _start_pump(self, up: Upstream) -> None:
        task = self._pumps.get(up.index)
        if task is None or task.done():
            self._pumps[up.index] = asyncio.create_task(self._pump(up), name=f"hub-pump-{up.index}")

    async def _pump(self, up: Upstream) -> None:
        delay = min(1.0, PUMP_RETRY_MAX)
        while not self._closed.is_set():
            try:
                async for tick in up.source.ticks():
                    self._queue.put_nowait(tick)
                    delay = min(1.0, PUMP_RETRY_MAX)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("upstream %d stream failed; restarting in %.0fs", up.index, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, PUMP_RETRY_MAX)

    async def minute_bars(self, symbol: str, since: datetime | None) -> list[Candle]:
        """:class:`brokers.base.MinuteHistory` of the session holding ``symbol``; empty
        when that source keeps no minute chart (the successor then has its own ticks)."""
        up = self._placed.get(symbol, self.upstreams[0])
        history = getattr(up.source, "minute_bars", None)
        if history is None:
            return []
        return await history(symbol, since)

    # ---- gap-repaired candles (sources that offer them: KIS) ---------------------------
    def close_candles_until(self, ts: datetime) -> None:
        for up in self.upstreams:
            closer = getattr(up.source, "close_candles_until", None)
            if closer is not None:
                closer(ts)

    async def repaired_candles(self) -> AsyncIterator[Candle]:
        """1m candles that replace what an outage left partial, from every session that
        repairs gaps; sessions opened later join on the next call."""
        sources = [
            up.source.repaired_candles()
            for up in self.upstreams
            if hasattr(up.source, "repaired_candles")
        ]
        if not sources:
            return
        queue: asyncio.Queue[Candle] = asyncio.Queue()

        async def drain(it: AsyncIterator[Candle]) -> None:
            async for candle in it:
                queue.put_nowait(candle)

        tasks = [asyncio.create_task(drain(it)) for it in sources]
        try:
            while not self._closed.is_set() and not all(t.done() for t in tasks):
                try:
                    yield await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    continue
        finally:
            for t in tasks:
                t.cancel()

    async def close(self) -> None:
        self._closed.set()
        for task in self._pumps.values():
            task.cancel()
        for task in self._pumps.values():
            with contextlib.suppress(BaseException):
                await task
        for up in self.upstreams:
            try:
                await up.source.close()
            except Exception:
                log.exception("closing upstream %d failed", up.index)
