"""A market-data source that replays a recorded tick sequence.

Used to reproduce a trading session exactly (tests, incident replays, and later
the multi-worker parity checks): the same ticks in, the same alerts out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

from brokers.base import Quote, SymbolInfo, UnknownSymbol
from engines.market import Tick


class ReplayMarket:
    name = "replay"

    def __init__(
        self,
        ticks: Sequence[Tick],
        symbols: Sequence[SymbolInfo],
        prev_close: dict[str, int] | None = None,
    ) -> None:
        self._ticks = list(ticks)
        self._symbols = {s.code: s for s in symbols}
        self._prev_close = dict(prev_close or {})
        self._subscribed: set[str] = set()
        self._closed = asyncio.Event()
        self.drained = asyncio.Event()
        """Set once every tick has been handed out and the consumer asked for more."""
        self.delivered: list[Tick] = []

    async def list_symbols(self) -> list[SymbolInfo]:
        return list(self._symbols.values())

    def _first_price(self, symbol: str) -> int:
        for t in self._ticks:
            if t.symbol == symbol:
                return t.price
        return self._prev_close.get(symbol, 1)

    async def quote(self, symbol: str) -> Quote:
        if symbol not in self._symbols:
            raise UnknownSymbol(symbol)
        first = self._first_price(symbol)
        prev = self._prev_close.get(symbol, first)
        ts = self._ticks[0].ts if self._ticks else None
        assert ts is not None, "a replay needs at least one tick"
        return Quote(symbol, first, prev, first, first, first, 0, ts)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        wanted = set(symbols)
        unknown = wanted - set(self._symbols)
        if unknown:
            raise UnknownSymbol(sorted(unknown)[0])
        self._subscribed |= wanted

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        self._subscribed -= set(symbols)

    async def ticks(self) -> AsyncIterator[Tick]:
        for tick in self._ticks:
            if self._closed.is_set():
                return
            if tick.symbol in self._subscribed:
                self.delivered.append(tick)
                yield tick
                await asyncio.sleep(0)
        self.drained.set()
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()
