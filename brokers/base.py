"""The broker protocol: what the runtime may ask of any broker adapter.

KIS, Kiwoom and the paper market all sit behind these types, so the market hub,
the rule book and the UI never learn which broker a tick came from. Only what
exists today is declared here: market data. Order entry and balances are added
when the first real broker lands, so the protocol is shaped by a real API rather
than guessed up front.

Prices are whole won (``int``) like everywhere else (see ``engines.market``), and
every timestamp is timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from engines.market import Tick

__all__ = [
    "AuthExpired",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "MarketClosed",
    "MarketData",
    "OrderRejected",
    "Quote",
    "RateLimited",
    "SymbolInfo",
    "Tick",
    "UnknownSymbol",
]


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One listing, as the symbol picker and the watchlist show it.

    ``code`` is the 6-digit KRX short code (``"005930"``), kept as a string
    because leading zeros are significant. ``market`` is ``"KOSPI"`` or
    ``"KOSDAQ"``; the two share one tick table and one price-limit rule, but
    users filter and read them separately.
    """

    code: str
    name_ko: str
    name_en: str
    market: str


@dataclass(frozen=True, slots=True)
class Quote:
    """A snapshot of one symbol's trading day.

    ``prev_close`` is the reference price for the day's ±30% limits and for the
    change percentage the ticker shows, so it travels with every quote instead
    of being looked up separately. ``open``/``high``/``low``/``volume`` cover the
    current KRX session date only. ``ts`` is the time of the data, not of the
    request.
    """

    symbol: str
    price: int
    prev_close: int
    open: int
    high: int
    low: int
    volume: int
    ts: datetime


class BrokerError(Exception):
    """Base of every error a broker adapter raises.

    Callers catch this one type to keep a broker failure from taking down the
    runner; the subclasses say whether retrying, re-authenticating or telling
    the user is the right reaction.
    """


class UnknownSymbol(BrokerError):
    """The broker does not list this code. Retrying will not help."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"unknown symbol: {symbol!r}")
        self.symbol = symbol


class MarketClosed(BrokerError):
    """The request needs an open session (e.g. a market order outside hours)."""


class RateLimited(BrokerError):
    """The broker throttled us. KIS allows ~20 REST calls/s (2/s on paper).

    ``retry_after`` is the broker's hint in seconds, when it gives one, so the
    rate limiter can back off exactly as long as needed.
    """

    def __init__(self, message: str = "rate limited", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthExpired(BrokerError):
    """The access token or session is no longer valid; issue a new one and retry.

    Distinct from other errors because token issues are themselves rate-limited
    (KIS: one per minute) and notify the user, so they must not happen blindly.
    """


class OrderRejected(BrokerError):
    """The broker refused an order (price off the tick grid, beyond limits, no funds...)."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached or is under maintenance; retry later with backoff."""


@runtime_checkable
class MarketData(Protocol):
    """A source of symbols, quotes and a live trade stream.

    The market hub holds one upstream subscription per symbol however many
    users watch it, so ``subscribe``/``unsubscribe`` are set operations on the
    adapter's subscription set, and ``ticks()`` is a single merged stream for
    all of them rather than one stream per symbol.
    """

    name: str
    """Short, stable identifier of the adapter (``"paper"``, ``"kis"``), used in logs and config."""

    async def list_symbols(self) -> list[SymbolInfo]:
        """Every listing this broker can stream, for the symbol picker."""
        ...

    async def quote(self, symbol: str) -> Quote:
        """The current day's snapshot of ``symbol``. Raises :class:`UnknownSymbol`."""
        ...

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """Add ``symbols`` to the stream. Unknown codes raise :class:`UnknownSymbol`
        and leave the subscription set unchanged."""
        ...

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Remove ``symbols`` from the stream; codes that are not subscribed are ignored."""
        ...

    def ticks(self) -> AsyncIterator[Tick]:
        """Trades of the currently subscribed symbols, forever, until :meth:`close`.

        Subscription changes take effect on the running iterator, so the hub
        keeps one iterator open for the adapter's lifetime.
        """
        ...

    async def close(self) -> None:
        """Release connections and end any running :meth:`ticks` iterator."""
        ...


@runtime_checkable
class Broker(MarketData, Protocol):
    """A full broker adapter: market data today, orders and balances later.

    Order placement, cancellation and account balances are added to this
    protocol in the brokers issue, together with the KIS adapter that forces
    their exact shape. Until then a broker is its market-data part.
    """
