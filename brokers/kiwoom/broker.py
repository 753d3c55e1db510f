"""The Kiwoom adapter: :class:`~brokers.base.Broker` over Kiwoom REST and its websocket.

What is supported, and what is not (yet), is explicit: unsupported methods raise
:class:`KiwoomUnsupported`, a :class:`~brokers.base.BrokerError`, so a caller that
handles broker errors handles these too instead of crashing on NotImplementedError.

* ``list_symbols`` returns an empty list: Kiwoom's listing TR (ka10099) returns
  thousands of rows over many pages, and the symbol picker already has the KRX
  master list; an empty list means "no broker-specific listing", not "no symbols".
* ``candles`` serves daily bars only (ka10081). Weekly/monthly/minute TRs exist
  (ka10082, ka10083, ka10080) but are not wired yet.
* ``orders``, ``fills`` and ``executions`` (ka10075/ka10076, realtime type 00) are
  not wired yet.
* An :class:`~brokers.base.OrderAck` from Kiwoom carries ``"KRX:<code>"`` in
  ``branch``: Kiwoom needs the exchange and the code (not a branch) to modify or
  cancel an order.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, date, datetime

import httpx

from brokers.base import (
    Balance,
    BrokerError,
    CandlePeriod,
    Fill,
    OrderAck,
    OrderRequest,
    OrderStatus,
    Quote,
    SymbolInfo,
    UnknownSymbol,
)
from brokers.kiwoom.auth import TokenStore
from brokers.kiwoom.rest import KiwoomRest
from brokers.kiwoom.ws import KiwoomStream
from engines.market import Candle, Tick

__all__ = ["KiwoomBroker", "KiwoomUnsupported"]

_CODE_RE = re.compile(r"^[0-9A-Z]{6}$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class KiwoomUnsupported(BrokerError):
    """The Kiwoom adapter does not offer this (yet). Retrying will not help."""


class KiwoomBroker:
    """Kiwoom REST + websocket behind :class:`brokers.base.Broker`.

    URLs come from the caller (``app.config``: ``kiwoom_base_url`` /
    ``kiwoom_mock_base_url`` and the ``*_ws_url`` pair), so this layer never reads
    settings. ``verify_symbols`` makes :meth:`subscribe` check each new code with one
    quote call, because Kiwoom's REG accepts unknown codes silently and the protocol
    promises :class:`UnknownSymbol` for them.
    """

    name = "kiwoom"

    def __init__(
        self,
        *,
        base_url: str,
        ws_url: str,
        app_key: str,
        secret_key: str,
        store: TokenStore | None = None,
        rate_per_second: int = 5,
        http_client: httpx.AsyncClient | None = None,
        verify_symbols: bool = True,
        clock: Callable[[], datetime] = _utc_now,
        ws_backoff_base: float = 0.5,
        ws_backoff_max: float = 30.0,
        max_rate_retries: int = 4,
    ) -> None:
        self.rest = KiwoomRest(
            base_url,
            app_key,
            secret_key,
            store=store,
            client=http_client,
            rate_per_second=rate_per_second,
            max_rate_retries=max_rate_retries,
            clock=clock,
        )
        self.stream = KiwoomStream(
            ws_url,
            self.rest.tokens,
            clock=clock,
            backoff_base=ws_backoff_base,
            backoff_max=ws_backoff_max,
        )
        self._verify = verify_symbols
        self._known: set[str] = set()

    def __repr__(self) -> str:
        return f"KiwoomBroker({self.rest!r})"

    # -- market data ----------------------------------------------------------------

    async def list_symbols(self) -> list[SymbolInfo]:
        return []

    async def quote(self, symbol: str) -> Quote:
        if not _CODE_RE.match(symbol):
            raise UnknownSymbol(symbol)
        quote = await self.rest.quote(symbol)
        self._known.add(symbol)
        return quote

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """All-or-nothing: every code is checked before any is added."""
        codes = list(dict.fromkeys(symbols))
        for code in codes:
            if not _CODE_RE.match(code):
                raise UnknownSymbol(code)
        if self._verify:
            for code in codes:
                if code not in self._known and code not in self.stream.symbols:
                    await self.quote(code)
        await self.stream.subscribe(codes)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        await self.stream.unsubscribe(symbols)

    def ticks(self) -> AsyncIterator[Tick]:
        return self.stream.ticks()

    async def close(self) -> None:
        await self.stream.close()
        await self.rest.aclose()

    # -- history, account, orders ---------------------------------------------------

    async def candles(
        self, symbol: str, period: CandlePeriod, start: date, end: date
    ) -> list[Candle]:
        if period is not CandlePeriod.DAY:
            raise KiwoomUnsupported(f"Kiwoom candles: only daily bars, not {period.value!r}")
        return await self.rest.daily_candles(symbol, start, end)

    async def balance(self) -> Balance:
        return await self.rest.balance()

    async def place_order(self, order: OrderRequest) -> OrderAck:
        return await self.rest.place_order(order)

    async def modify_order(self, ack: OrderAck, qty: int, price: int) -> OrderAck:
        return await self.rest.modify_order(ack, qty, price)

    async def cancel_order(self, ack: OrderAck, qty: int | None = None) -> OrderAck:
        return await self.rest.cancel_order(ack, qty)

    async def orders(self, day: date) -> list[OrderStatus]:
        raise KiwoomUnsupported("Kiwoom order history (ka10075/ka10076) is not wired yet")

    async def fills(self, day: date) -> list[Fill]:
        raise KiwoomUnsupported("Kiwoom fills (ka10076) is not wired yet")

    async def executions(self) -> AsyncIterator[Fill]:
        raise KiwoomUnsupported("Kiwoom execution notices (realtime type 00) are not wired yet")
        yield  # pragma: no cover - makes this an async generator, as the protocol expects
