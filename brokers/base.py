"""The broker protocol: what the runtime may ask of any broker adapter.

KIS, Kiwoom and the paper market all sit behind these types, so the market hub,
the rule book and the UI never learn which broker a tick came from. Only what
exists today is declared here: market data. Order entry and balances are added
when the first real broker lands, so the protocol is shaped by a real API rather
than guessed up front.

Prices are whole won (``int``) like everywhere else (see ``engines.market``), and
every timestamp is timezone-aware UTC.

Orders and balances were added with the KIS adapter, shaped by its API: an order
is identified by the broker's order number plus the branch (``KRX_FWDG_ORD_ORGNO``)
that KIS needs to modify or cancel it; fills arrive both by polling and as
realtime execution notices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from engines.market import Candle, Tick

__all__ = [
    "AuthExpired",
    "Balance",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "CandlePeriod",
    "Fill",
    "MarketClosed",
    "MarketData",
    "MinuteHistory",
    "OrderAck",
    "OrderRejected",
    "OrderRequest",
    "OrderSide",
    "OrderState",
    "OrderStatus",
    "OrderType",
    "Position",
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


class CandlePeriod(StrEnum):
    """What a broker's history endpoint can page through.

    KIS serves day/week/month bars in one endpoint (``FID_PERIOD_DIV_CODE``) and
    1-minute bars in another; longer intraday frames are aggregated by us from
    minutes (``engines.market``), so they are not broker periods.
    """

    DAY = "D"
    WEEK = "W"
    MONTH = "M"
    MINUTE = "1m"


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    """KIS ``ORD_DVSN``: ``00`` limit, ``01`` market. Others are not offered yet."""

    LIMIT = "limit"
    MARKET = "market"


class OrderState(StrEnum):
    OPEN = "open"
    PARTIAL = "partial"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A cash order. ``price`` is ignored (sent as 0) for market orders.

    ``client_order_id`` is ours: the strategy runner derives it from the signal so
    a retried signal can be recognised and never places a second order.
    """

    symbol: str
    side: OrderSide
    qty: int
    order_type: OrderType = OrderType.LIMIT
    price: int = 0
    client_order_id: str = ""


@dataclass(frozen=True, slots=True)
class OrderAck:
    """The broker accepted an order. ``branch`` is KIS's ``KRX_FWDG_ORD_ORGNO``,
    needed together with ``order_id`` to modify or cancel it."""

    order_id: str
    branch: str
    ts: datetime
    client_order_id: str = ""


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: from a fills query or from a realtime execution notice."""

    order_id: str
    symbol: str
    side: OrderSide
    qty: int
    price: int
    ts: datetime
    fee: int = 0
    tax: int = 0


@dataclass(frozen=True, slots=True)
class OrderStatus:
    order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    qty: int
    price: int
    filled_qty: int
    avg_fill_price: float
    state: OrderState
    branch: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Position:
    """One holding. ``avg_price`` is a float because an average of won prices is
    not a whole number; valuation and P&L are whole won at ``price``."""

    symbol: str
    name: str
    qty: int
    avg_price: float
    price: int

    @property
    def value(self) -> int:
        return self.qty * self.price

    @property
    def cost(self) -> int:
        return round(self.qty * self.avg_price)

    @property
    def pnl(self) -> int:
        return self.value - self.cost

    @property
    def pnl_pct(self) -> float:
        return (self.pnl / self.cost * 100.0) if self.cost else 0.0


@dataclass(frozen=True, slots=True)
class Balance:
    """Cash and holdings of one account. ``cash`` is what can be spent now (KIS
    ``dnca_tot_amt``, deposits); ``total`` adds the holdings at market value."""

    cash: int
    positions: tuple[Position, ...] = field(default_factory=tuple)

    @property
    def holdings_value(self) -> int:
        return sum(p.value for p in self.positions)

    @property
    def total(self) -> int:
        return self.cash + self.holdings_value

    @property
    def pnl(self) -> int:
        return sum(p.pnl for p in self.positions)


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
class MinuteHistory(Protocol):
    """A market-data source that can say, after the fact, how today's minutes traded.

    A runner taking over from one that died rebuilds the bars it did not see from
    this (the ticks of the takeover gap are gone from any stream). Optional: a source
    without it (the simulated market) gives a successor bars from its own ticks only.
    """

    async def minute_bars(self, symbol: str, since: datetime | None) -> list[Candle]:
        """Today's 1m candles of ``symbol`` starting at or after ``since`` (all of
        today's if None), oldest first. The last one may still be forming."""
        ...


@runtime_checkable
class Broker(MarketData, Protocol):
    """A full broker adapter: market data plus history, account and orders.

    Every method raises only :class:`BrokerError` subclasses, so callers can tell
    a retry (``RateLimited``, ``BrokerUnavailable``), a re-login (``AuthExpired``)
    and a user-facing refusal (``OrderRejected``, ``MarketClosed``) apart.
    """

    async def candles(
        self, symbol: str, period: CandlePeriod, start: date, end: date
    ) -> list[Candle]:
        """Bars of ``symbol`` from ``start`` to ``end`` (KST dates, inclusive), oldest
        first. Adapters page through the broker's limit (KIS: 100 daily rows a call)."""
        ...

    async def balance(self) -> Balance:
        """Cash and every holding, all pages."""
        ...

    async def place_order(self, order: OrderRequest) -> OrderAck:
        """Send an order. Raises :class:`OrderRejected` with the broker's reason."""
        ...

    async def modify_order(self, ack: OrderAck, qty: int, price: int) -> OrderAck:
        """Change quantity and price of an open order; returns the new order's ack."""
        ...

    async def cancel_order(self, ack: OrderAck, qty: int | None = None) -> OrderAck:
        """Cancel ``qty`` shares of an open order, or all of it when ``qty`` is None."""
        ...

    async def orders(self, day: date) -> list[OrderStatus]:
        """Every order of ``day`` (KST) with its fill state."""
        ...

    async def fills(self, day: date) -> list[Fill]:
        """Every execution of ``day`` (KST)."""
        ...

    def executions(self) -> AsyncIterator[Fill]:
        """Realtime execution notices of this account, forever, until :meth:`close`."""
        ...
