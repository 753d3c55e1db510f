"""KIS as a market-data source for the hub: REST quotes plus one websocket app key.

The hub opens one of these per service app key (KIS allows one websocket session
per key, about 40 subscriptions each) and spreads symbols over them, so this
class streams exactly one key. Quotes go over REST with the same key, through its
shared rate limiter and encrypted token cache; gap-repaired 1-minute candles
are offered on :meth:`repaired_candles`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

from brokers.base import Quote, SymbolInfo, UnknownSymbol
from brokers.kis.rest import KisRest
from brokers.kis.stream import KisStream
from engines.market import KST, Candle, Tick


class KisMarketData:
    name = "kis"

    def __init__(self, rest: KisRest, stream: KisStream, symbols: Sequence[SymbolInfo]) -> None:
        self.rest = rest
        self.stream = stream
        self._symbols = {s.code: s for s in symbols}

    async def list_symbols(self) -> list[SymbolInfo]:
        """KIS has no listing endpoint; the operator's KRX master list is what we stream."""
        return list(self._symbols.values())

    async def quote(self, symbol: str) -> Quote:
        if self._symbols and symbol not in self._symbols:
            raise UnknownSymbol(symbol)
        return await self.rest.quote(symbol)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        codes = list(symbols)
        unknown = [c for c in codes if self._symbols and c not in self._symbols]
        if unknown:
            raise UnknownSymbol(unknown[0])
        await self.stream.subscribe(codes)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        await self.stream.unsubscribe(list(symbols))

    def ticks(self) -> AsyncIterator[Tick]:
        return self.stream.ticks()

    async def minute_bars(self, symbol: str, since: datetime | None) -> list[Candle]:
        """:class:`brokers.base.MinuteHistory`: today's minute chart, the forming bar
        included, from ``since`` (a takeover rebuilds its bars from this)."""
        if self._symbols and symbol not in self._symbols:
            raise UnknownSymbol(symbol)
        today = self.rest.clock.now().astimezone(KST).date()
        if since is not None and since.astimezone(KST).date() < today:
            since = None  # the chart is today's; older gaps stay as stored
        return await self.rest.minute_candles(symbol, today, since=since, include_forming=True)

    def repaired_candles(self) -> AsyncIterator[Candle]:
        """Final 1m candles with outage minutes replaced by REST bars (``KisStream``)."""
        return self.stream.candles()

    def close_candles_until(self, ts: datetime) -> None:
        """The runner's bar timer: lets quiet minutes and repaired gaps finalize."""
        self.stream.close_candles_until(ts)

    async def close(self) -> None:
        try:
            await self.stream.close()
        finally:
            await self.rest.close()
