"""``PaperBroker``: a simulated cash account that trades against any market-data source.

Orders are matched against the *trades* of the source, so paper results follow
the same prints the user sees on the chart:

* A **market order** fills at the next trade of its symbol that reaches the
  broker after the order was placed (not the last price, which the trader could
  not have traded at any more), moved ``slippage_ticks`` ticks against the
  trader and clamped to the day's price limits
  (:func:`~brokers.paper.account.market_fill_price`).
* A **limit order** fills when a trade prints at or through its limit: at that
  trade's price if the order was marketable on the first trade after placement,
  otherwise at its limit price (:func:`~brokers.paper.account.limit_fill_price`).
  No slippage applies to limit orders.
* Fills are whole-quantity (no partial fills), orders are day-agnostic (they do
  not expire at the close), and trading hours are whatever the source streams.

Validation happens at placement, against a fresh quote: the symbol must exist
(:class:`~brokers.base.UnknownSymbol`), ``qty`` must be a positive ``int``, a
limit price must sit on the KRX tick grid within ±30% of ``prev_close``, and the
account must cover the order (cash incl. commission for buys, free shares for
sells), else :class:`~brokers.paper.account.PaperOrderRejected` (an
``OrderRejected`` with a ``code``). A refused order is not stored.

State lives in a :class:`PaperStore`; the broker keeps a copy in memory (the
ledger and the open orders, indexed by symbol) so the tick path costs
O(open orders of that symbol) plus one store write per fill. A new broker on
the same store continues where the last one stopped, open orders included.

Several brokers may share one account (a web worker placing an order and the
runner's broker filling it). The store keeps them honest: cash moves by deltas,
fills and cancels only succeed on orders still open, and a placement is only
stored if the account's ``revision`` is unchanged since the broker last loaded
it (otherwise the broker reloads and checks again). A long-lived broker learns
about orders placed elsewhere through :meth:`PaperBroker.reload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol, runtime_checkable

from brokers.base import (
    Balance,
    BrokerError,
    BrokerUnavailable,
    CandlePeriod,
    Fill,
    MarketData,
    OrderAck,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    SymbolInfo,
)
from brokers.paper.account import (
    FeeSchedule,
    Holding,
    Ledger,
    PaperFill,
    PaperOrder,
    PaperOrderRejected,
    Settlement,
    limit_fill_price,
    market_fill_price,
    validate_order,
)
from engines.market import KST, Candle, Tick, price_limits

__all__ = [
    "PAPER_BRANCH",
    "MemoryPaperStore",
    "PaperBroker",
    "PaperSnapshot",
    "PaperStore",
    "StaleState",
    "kst_day_bounds",
]

log = logging.getLogger(__name__)

PAPER_BRANCH = "PAPER"
"""The ``branch`` of every paper ack; KIS needs one to cancel, the paper account does not."""

_PLACE_ATTEMPTS = 3


class StaleState(BrokerError):
    """The account changed since the broker loaded it; reload and check the order again."""


@dataclass(frozen=True, slots=True)
class PaperSnapshot:
    """Everything a broker needs to resume an account: a store's ``load()`` result."""

    cash: int
    holdings: dict[str, Holding]
    open_orders: list[PaperOrder]
    revision: int


@runtime_checkable
class PaperStore(Protocol):
    """Persistence of one paper account. Every method is one atomic unit of work.

    ``revision`` counts changes of the account; every mutating method increments
    it by one. Only :meth:`insert_order` checks it, because only a placement
    depends on the whole account (its free cash and shares); fills and cancels
    are made safe by being conditional on the order still being open.
    """

    async def load(self) -> PaperSnapshot:
        """Cash, holdings, open orders (oldest first) and the current revision."""
        ...

    async def order_by_client_id(self, client_order_id: str) -> PaperOrder | None:
        """The order placed with this (non-empty) client order id, if any."""
        ...

    async def get_order(self, order_id: str) -> PaperOrder | None: ...

    async def insert_order(self, order: PaperOrder, revision: int) -> tuple[PaperOrder, bool]:
        """Store a new open order and assign its ``order_id``.

        Returns ``(stored, True)``, or ``(existing, False)`` when an order with the
        same ``client_order_id`` exists (then nothing is written). Raises
        :class:`StaleState` when the account's revision is no longer ``revision``.
        """
        ...

    async def mark_resting(self, order_id: str) -> None:
        """Persist that a limit order has rested (see ``limit_fill_price``)."""
        ...

    async def record_fill(self, order: PaperOrder, settlement: Settlement) -> bool:
        """Finish ``order`` with ``settlement``: order state, fill row, cash and holding.

        Returns False, writing nothing, if the order is no longer open (cancelled
        or reset by another process).
        """
        ...

    async def cancel(self, order_id: str, reason: str) -> bool:
        """Mark an open order cancelled; False if it is not open (or unknown)."""
        ...

    async def orders(self, since: datetime, until: datetime) -> list[PaperOrder]:
        """Orders created in ``[since, until)``, oldest first."""
        ...

    async def fills(self, since: datetime, until: datetime) -> list[PaperFill]:
        """Fills executed in ``[since, until)``, oldest first."""
        ...


def kst_day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of a KST calendar day, the unit of ``orders``/``fills``."""
    start = datetime.combine(day, time(0), tzinfo=KST)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


@dataclass(slots=True)
class MemoryPaperStore:
    """A :class:`PaperStore` in memory: for tests and for demos that need no database."""

    cash: int = 10_000_000
    holdings: dict[str, Holding] = field(default_factory=dict)
    all_orders: dict[str, PaperOrder] = field(default_factory=dict)
    all_fills: list[PaperFill] = field(default_factory=list)
    revision: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def load(self) -> PaperSnapshot:
        return PaperSnapshot(
            cash=self.cash,
            holdings={s: replace(h) for s, h in self.holdings.items()},
            open_orders=[replace(o) for o in self.all_orders.values() if o.is_open],
            revision=self.revision,
        )

    async def order_by_client_id(self, client_order_id: str) -> PaperOrder | None:
        for order in self.all_orders.values():
            if client_order_id and order.client_order_id == client_order_id:
                return replace(order)
        return None

    async def get_order(self, order_id: str) -> PaperOrder | None:
        order = self.all_orders.get(order_id)
        return None if order is None else replace(order)

    async def insert_order(self, order: PaperOrder, revision: int) -> tuple[PaperOrder, bool]:
        existing = await self.order_by_client_id(order.client_order_id)
        if existing is not None:
            return existing, False
        if revision != self.revision:
            raise StaleState(f"revision {revision} != {self.revision}")
        stored = replace(order, order_id=str(next(self._ids)))
        self.all_orders[stored.order_id] = stored
        self.revision += 1
        return replace(stored), True

    async def mark_resting(self, order_id: str) -> None:
        self.all_orders[order_id].resting = True
        self.revision += 1

    async def record_fill(self, order: PaperOrder, settlement: Settlement) -> bool:
        stored = self.all_orders.get(order.order_id)
        if stored is None or not stored.is_open:
            return False
        fill = settlement.fill
        stored.state = OrderState.FILLED
        stored.filled_qty = fill.qty
        stored.avg_fill_price = float(fill.price)
        stored.reserved_cash = 0
        self.all_fills.append(fill)
        self.cash += settlement.cash_delta
        if settlement.holding_after is None:
            self.holdings.pop(fill.symbol, None)
        else:
            self.holdings[fill.symbol] = replace(settlement.holding_after)
        self.revision += 1
        return True

    async def cancel(self, order_id: str, reason: str) -> bool:
        stored = self.all_orders.get(order_id)
        if stored is None or not stored.is_open:
            return False
        stored.state = OrderState.CANCELLED
        stored.reserved_cash = 0
        stored.reason = reason
        self.revision += 1
        return True

    async def orders(self, since: datetime, until: datetime) -> list[PaperOrder]:
        return [replace(o) for o in self.all_orders.values() if since <= o.created_at < until]

    async def fills(self, since: datetime, until: datetime) -> list[PaperFill]:
        return [f for f in self.all_fills if since <= f.ts < until]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PaperBroker:
    """A :class:`~brokers.base.Broker` whose orders fill against ``market``'s trades.

    Market data calls go straight to ``market``. Call :meth:`open` (or
    :meth:`reload`) before use; the runtime feeds :meth:`on_tick` with the
    trades of :meth:`symbols_needed` and may read fills from :meth:`executions`.
    """

    def __init__(
        self,
        market: MarketData,
        store: PaperStore,
        fees: FeeSchedule | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.market = market
        self.store = store
        self.fees = fees or FeeSchedule()
        self.name = f"paper:{market.name}"
        self._clock = clock or _utc_now
        self._ledger = Ledger(cash=0, fees=self.fees)
        self._open: dict[str, PaperOrder] = {}
        # symbol -> open orders in placement order (dicts keep insertion order),
        # so a tick touches only its own symbol's orders, oldest first.
        self._book: dict[str, dict[str, PaperOrder]] = {}
        self._limits: dict[str, tuple[int, int]] = {}
        self._names: dict[str, str] | None = None
        self._revision = 0
        self._loaded = False
        self._lock = asyncio.Lock()
        self._listeners: set[asyncio.Queue[Fill | None]] = set()
        self._closed = False

    @classmethod
    async def open(
        cls,
        market: MarketData,
        store: PaperStore,
        fees: FeeSchedule | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> PaperBroker:
        """Build a broker and load the account from ``store``."""
        broker = cls(market, store, fees, clock=clock)
        await broker.reload()
        return broker

    # ---- state ----------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the account from the store (after a restart, or orders placed elsewhere)."""
        async with self._lock:
            await self._reload_locked()

    async def _reload_locked(self) -> None:
        snap = await self.store.load()
        self._ledger = Ledger.restore(snap.cash, snap.holdings, snap.open_orders, self.fees)
        self._open = {}
        self._book = {}
        for order in snap.open_orders:
            self._track(order)
        self._revision = snap.revision
        self._loaded = True
        for symbol in self.symbols_needed() - set(self._limits):
            try:
                await self._day_limits(symbol)
            except BrokerError as exc:  # retried on the symbol's first tick
                log.warning("paper broker: no limits for %s yet: %s", symbol, exc)
        log.debug(
            "paper broker loaded: %d open orders, revision %d", len(self._open), self._revision
        )

    async def _ensure_loaded(self) -> None:
        if not self._loaded:
            await self._reload_locked()

    def _track(self, order: PaperOrder) -> None:
        self._open[order.order_id] = order
        self._book.setdefault(order.symbol, {})[order.order_id] = order

    def _forget(self, order: PaperOrder) -> None:
        self._open.pop(order.order_id, None)
        book = self._book.get(order.symbol)
        if book is not None:
            book.pop(order.order_id, None)
            if not book:
                del self._book[order.symbol]

    async def _day_limits(self, symbol: str) -> tuple[int, int]:
        """Today's price limits of ``symbol`` from a fresh quote (also validates the symbol)."""
        quote = await self.market.quote(symbol)
        limits = price_limits(quote.prev_close)
        self._limits[symbol] = limits
        return limits

    @property
    def ledger(self) -> Ledger:
        """The in-memory ledger (read it, do not change it)."""
        return self._ledger

    def symbols_needed(self) -> set[str]:
        """Symbols with open orders: the ticks :meth:`on_tick` must be fed."""
        return set(self._book)

    def open_orders(self) -> list[OrderStatus]:
        return [o.status() for o in self._open.values()]

    # ---- the tick path -------------------------------------------------------------

    async def on_tick(self, tick: Tick) -> list[Fill]:
        """Match ``tick`` against the open orders of its symbol; return the fills it caused.

        Orders are matched oldest first, each against the full trade (its volume
        is not rationed between them). A fill that the store refuses (the order
        was cancelled or the account reset elsewhere) makes the broker reload.
        """
        if tick.symbol not in self._book:
            return []
        fills: list[Fill] = []
        async with self._lock:
            book = self._book.get(tick.symbol)
            if not book:
                return []
            for order in list(book.values()):
                price = await self._fill_price(order, tick)
                if price is None:
                    if order.order_type is OrderType.LIMIT and not order.resting:
                        order.resting = True
                        await self.store.mark_resting(order.order_id)
                        self._revision += 1
                    continue
                settlement = self._ledger.settle(order, price, tick.ts)
                if not await self.store.record_fill(order, settlement):
                    log.info(
                        "paper order %s no longer open in the store; reloading", order.order_id
                    )
                    await self._reload_locked()
                    break
                self._revision += 1
                self._ledger.apply(order, settlement)
                self._forget(order)
                fill = settlement.fill.to_fill()
                fills.append(fill)
                log.info(
                    "paper fill: order %s %s %s %d @ %d",
                    order.order_id,
                    order.side,
                    order.symbol,
                    fill.qty,
                    fill.price,
                )
        for fill in fills:
            for queue in self._listeners:
                queue.put_nowait(fill)
        return fills

    async def _fill_price(self, order: PaperOrder, tick: Tick) -> int | None:
        if order.order_type is OrderType.LIMIT:
            return limit_fill_price(order.side, order.price, tick.price, order.resting)
        lower, upper = self._limits.get(order.symbol) or await self._day_limits(order.symbol)
        return market_fill_price(order.side, tick.price, self.fees.slippage_ticks, lower, upper)

    async def executions(self) -> AsyncIterator[Fill]:
        """Fills of this broker as they happen, until :meth:`close`."""
        queue: asyncio.Queue[Fill | None] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            while not self._closed:
                fill = await queue.get()
                if fill is None:
                    return
                yield fill
        finally:
            self._listeners.discard(queue)

    # ---- orders -----------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> OrderAck:
        """Validate, reserve and store an order (see the module doc for the rules).

        A non-empty ``client_order_id`` already used on this account returns the
        first order's ack and places nothing, whatever the rest of the request.
        """
        async with self._lock:
            await self._ensure_loaded()
            for _ in range(_PLACE_ATTEMPTS):
                if order.client_order_id:
                    existing = await self.store.order_by_client_id(order.client_order_id)
                    if existing is not None:
                        return self._ack(existing)
                new = await self._prepare(order)
                try:
                    stored, created = await self.store.insert_order(new, self._revision)
                except StaleState:
                    log.debug("paper account changed meanwhile; reloading before placing")
                    await self._reload_locked()
                    continue
                if not created:
                    return self._ack(stored)
                self._revision += 1
                self._track(stored)
                self._ledger.hold(stored)
                log.info(
                    "paper order %s: %s %s %s %d @ %d",
                    stored.order_id,
                    stored.side,
                    stored.order_type,
                    stored.symbol,
                    stored.qty,
                    stored.price,
                )
                return self._ack(stored)
        raise BrokerUnavailable("the paper account kept changing; try again")

    async def _prepare(self, req: OrderRequest) -> PaperOrder:
        """Check ``req`` against the market and the ledger; the order to store, or raise."""
        try:
            side = OrderSide(req.side)
            order_type = OrderType(req.order_type)
        except ValueError as exc:
            raise PaperOrderRejected("bad_order", f"unknown side or order type: {exc}") from exc
        lower, upper = await self._day_limits(req.symbol)  # UnknownSymbol for a bad code
        price = 0 if order_type is OrderType.MARKET else req.price
        validate_order(side, order_type, req.qty, price, lower, upper)
        reserve = self._ledger.reservation(side, order_type, req.qty, price, upper)
        self._ledger.check(side, req.symbol, req.qty, reserve)
        return PaperOrder(
            order_id="",
            symbol=req.symbol,
            side=side,
            order_type=order_type,
            qty=req.qty,
            price=price,
            created_at=self._clock(),
            client_order_id=req.client_order_id,
            reserved_cash=reserve,
        )

    def _ack(self, order: PaperOrder) -> OrderAck:
        return OrderAck(order.order_id, PAPER_BRANCH, order.created_at, order.client_order_id)

    async def cancel_order(self, ack: OrderAck, qty: int | None = None) -> OrderAck:
        """Cancel a whole open order (works for orders placed by another broker too).

        Fills are whole-quantity, so a partial cancel (``qty`` below the order's
        quantity) is refused rather than silently cancelling everything.
        """
        async with self._lock:
            await self._ensure_loaded()
            known = self._open.get(ack.order_id) or await self.store.get_order(ack.order_id)
            if known is None:
                raise PaperOrderRejected(
                    "order_not_found", f"no paper order {ack.order_id!r}", order_id=ack.order_id
                )
            if qty is not None and qty != known.qty:
                raise PaperOrderRejected(
                    "partial_cancel",
                    f"paper orders fill whole, so they cancel whole: {known.qty:,} shares",
                    qty=known.qty,
                )
            if not await self.store.cancel(ack.order_id, "cancelled"):
                raise PaperOrderRejected(
                    "order_not_open",
                    f"order {ack.order_id} is already {known.state.value}",
                    order_id=ack.order_id,
                )
            self._revision += 1
            mine = self._open.get(ack.order_id)
            if mine is not None:
                self._ledger.release(mine)
                self._forget(mine)
                mine.state = OrderState.CANCELLED
            log.info("paper order %s cancelled", ack.order_id)
            return OrderAck(ack.order_id, PAPER_BRANCH, self._clock(), known.client_order_id)

    async def modify_order(self, ack: OrderAck, qty: int, price: int) -> OrderAck:
        """Not offered: cancel and place a new order instead (the UI does the same)."""
        raise PaperOrderRejected(
            "modify_unsupported", "paper orders cannot be modified; cancel and place a new one"
        )

    async def orders(self, day: date) -> list[OrderStatus]:
        since, until = kst_day_bounds(day)
        return [o.status() for o in await self.store.orders(since, until)]

    async def fills(self, day: date) -> list[Fill]:
        since, until = kst_day_bounds(day)
        return [f.to_fill() for f in await self.store.fills(since, until)]

    async def balance(self) -> Balance:
        """Cash (deposits, open buys' reservations included) and holdings at current prices."""
        async with self._lock:
            await self._ensure_loaded()
            holdings = sorted(self._ledger.holdings.items())
            cash = self._ledger.cash
        names = await self._symbol_names()
        positions = []
        for symbol, held in holdings:
            quote = await self.market.quote(symbol)
            positions.append(
                Position(symbol, names.get(symbol, symbol), held.qty, held.avg_price, quote.price)
            )
        return Balance(cash=cash, positions=tuple(positions))

    async def _symbol_names(self) -> dict[str, str]:
        if self._names is None:
            self._names = {s.code: s.name_ko for s in await self.market.list_symbols()}
        return self._names

    # ---- market data: the source's ------------------------------------------------

    async def list_symbols(self) -> list[SymbolInfo]:
        return await self.market.list_symbols()

    async def quote(self, symbol: str) -> Quote:
        return await self.market.quote(symbol)

    async def subscribe(self, symbols: Iterable[str]) -> None:
        await self.market.subscribe(symbols)

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        await self.market.unsubscribe(symbols)

    def ticks(self) -> AsyncIterator[Tick]:
        return self.market.ticks()

    async def candles(
        self, symbol: str, period: CandlePeriod, start: date, end: date
    ) -> list[Candle]:
        """The source's history, when it has one (a plain ``MarketData`` need not)."""
        candles = getattr(self.market, "candles", None)
        if candles is None:
            raise BrokerUnavailable(f"{self.market.name} serves no candle history")
        return await candles(symbol, period, start, end)

    async def close(self) -> None:
        """End :meth:`executions` iterators. The market source is not closed: it is shared."""
        self._closed = True
        for queue in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
