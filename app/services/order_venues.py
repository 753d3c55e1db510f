"""Where strategy orders go: the paper and KIS venues, and the openers that pick one.

Split from :mod:`app.services.strategy_orders` (which re-exports the public names) so
the executor's once-only bookkeeping reads apart from the broker adapters it drives.
A venue wraps one account for one attachment; the openers build the right one from
the attachment's mode, and :class:`PaperStoreVenue` answers order lookups for the kill
switch without a market feed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings, get_settings
from app.models.common import utcnow
from app.models.strategies import (
    MODE_LIVE,
    StrategyAttachment,
    StrategyOrder,
)
from app.services import changes, credentials, paper_accounts
from app.services.broker_tokens import VaultTokenStore
from app.services.errors import NotFound
from brokers.base import (
    Balance,
    MarketData,
    OrderAck,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
)
from brokers.kis.rest import KisRest
from brokers.paper.account import PaperOrderRejected
from brokers.paper.broker import PAPER_BRANCH, PaperBroker
from engines.market import KST, price_limits

log = logging.getLogger(__name__)

KIS_LOOKBACK_DAYS = 7
"""How far back reconciliation searches KIS's daily order lists for an unresolved row."""
_OPEN = (OrderState.OPEN, OrderState.PARTIAL)


# ---- where orders go ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """What sizing and the limits need, read from the broker just before the claim."""

    cash: float
    """What a buy may spend now (orderable cash)."""
    equity: float
    held: int
    """Shares of the symbol that may be sold now."""
    pending_buy: int
    """Shares of the symbol in open buy orders: counted against the position limit."""
    upper_limit: int
    """Today's upper price limit: brokers reserve a market buy at it."""


class Venue(Protocol):
    """One account's orders, paper or KIS, as the executor needs them."""

    kind: str

    async def snapshot(self, symbol: str) -> AccountSnapshot: ...

    async def place(self, request: OrderRequest) -> OrderAck: ...

    async def find(self, order: StrategyOrder, taken: set[str]) -> OrderAck | None:
        """The broker's order for ``order`` if it reached the broker (ids in ``taken``
        belong to other rows and are not candidates)."""
        ...

    async def status(self, order: StrategyOrder) -> OrderStatus | None: ...

    async def cancel(self, order: StrategyOrder) -> bool: ...

    async def balance(self) -> Balance: ...

    async def close(self) -> None: ...


class PaperVenue:
    """The user's paper account. Its store remembers client order ids, so a lookup is exact."""

    kind = "paper"

    def __init__(self, broker: PaperBroker) -> None:
        self.broker = broker

    async def snapshot(self, symbol: str) -> AccountSnapshot:
        balance = await self.broker.balance()
        ledger = self.broker.ledger
        pending = sum(
            o.qty - o.filled_qty
            for o in self.broker.open_orders()
            if o.symbol == symbol and o.side is OrderSide.BUY
        )
        quote = await self.broker.quote(symbol)
        return AccountSnapshot(
            cash=ledger.available_cash,
            equity=balance.total,
            held=ledger.available_qty(symbol),
            pending_buy=pending,
            upper_limit=price_limits(quote.prev_close)[1],
        )

    async def place(self, request: OrderRequest) -> OrderAck:
        ack = await self.broker.place_order(request)
        changes.notify()  # the runner's paper desk fills it from the next trade
        return ack

    async def find(self, order: StrategyOrder, taken: set[str]) -> OrderAck | None:
        found = await self.broker.store.order_by_client_id(order.client_order_id)
        if found is None:
            return None
        return OrderAck(found.order_id, PAPER_BRANCH, found.created_at, found.client_order_id)

    async def status(self, order: StrategyOrder) -> OrderStatus | None:
        if not order.broker_order_id:
            return None
        found = await self.broker.store.get_order(order.broker_order_id)
        return None if found is None else found.status()

    async def cancel(self, order: StrategyOrder) -> bool:
        ack = OrderAck(order.broker_order_id or "", PAPER_BRANCH, utcnow())
        try:
            await self.broker.cancel_order(ack)
        except PaperOrderRejected:
            return False  # already filled or cancelled
        changes.notify()
        return True

    async def balance(self) -> Balance:
        return await self.broker.balance()

    async def close(self) -> None:
        await self.broker.close()


class KisVenue:
    """The user's KIS account, over REST with their own key.

    KIS knows nothing of our client order ids, so :meth:`find` matches an order by
    what it is: symbol, side, quantity, order type, price, placed at or after the
    row was created, and not already linked to another row.
    """

    kind = "kis"

    def __init__(self, rest: KisRest) -> None:
        self.rest = rest
        self._days: dict[date, list] = {}

    async def snapshot(self, symbol: str) -> AccountSnapshot:
        balance = await self.rest.balance()
        held = next((p.qty for p in balance.positions if p.symbol == symbol), 0)
        today = datetime.now(KST).date()
        pending = sum(
            o.qty - o.filled_qty
            for o in await self.rest.orders(today)
            if o.symbol == symbol and o.side is OrderSide.BUY and o.state in _OPEN
        )
        quote = await self.rest.quote(symbol)
        return AccountSnapshot(
            cash=balance.cash,
            equity=balance.total,
            held=held,
            pending_buy=pending,
            upper_limit=price_limits(quote.prev_close)[1],
        )

    async def place(self, request: OrderRequest) -> OrderAck:
        return await self.rest.place_order(request)

    async def _rows(self, day: date) -> list:
        """The day's order rows with their order time (``OrderStatus`` has none)."""
        if day not in self._days:
            pages = await self.rest._ccld(day, filled_only=False)
            self._days[day] = [row for page in pages for row in page.rows]
        return self._days[day]

    async def find(self, order: StrategyOrder, taken: set[str]) -> OrderAck | None:
        since = order.created_at.replace(microsecond=0)  # KIS stamps whole seconds
        first = since.astimezone(KST).date()
        today = datetime.now(KST).date()
        if (today - first).days > KIS_LOOKBACK_DAYS:
            first = today - timedelta(days=KIS_LOOKBACK_DAYS)
        day = first
        candidates = []
        while day <= today:
            for row in await self._rows(day):
                if (
                    row.order_id not in taken
                    and row.symbol == order.symbol
                    and row.side.value == order.side
                    and row.order_type.value == order.order_type
                    and row.qty == order.qty
                    and row.price == order.price
                    and row.ts >= since
                ):
                    candidates.append(row)
            day += timedelta(days=1)
        if not candidates:
            return None
        # The earliest: a cancel or modify of it comes later under a higher number.
        best = min(candidates, key=lambda r: (r.ts, r.order_id))
        return OrderAck(best.order_id, best.branch, best.ts, order.client_order_id)

    async def status(self, order: StrategyOrder) -> OrderStatus | None:
        if not order.broker_order_id or order.acked_at is None:
            return None
        day = order.acked_at.astimezone(KST).date()
        for o in await self.rest.orders(day):
            if o.order_id == order.broker_order_id:
                return o
        return None

    async def cancel(self, order: StrategyOrder) -> bool:
        status = await self.status(order)
        if status is None or status.state not in _OPEN:
            return False
        ack = OrderAck(order.broker_order_id or "", order.broker_branch, utcnow())
        await self.rest.cancel_order(ack)
        return True

    async def balance(self) -> Balance:
        return await self.rest.balance()

    async def close(self) -> None:
        await self.rest.close()


VenueOpener = Callable[[AsyncSession, StrategyAttachment], Awaitable[Venue]]


class OrderLookup(Protocol):
    """The part of a venue the kill switch needs: look an order up, cancel it."""

    async def status(self, order: StrategyOrder) -> OrderStatus | None: ...

    async def cancel(self, order: StrategyOrder) -> bool: ...

    async def close(self) -> None: ...


LookupOpener = Callable[[AsyncSession, StrategyAttachment], Awaitable[OrderLookup]]


class PaperStoreVenue:
    """The paper account's stored orders only: enough to look up and cancel, no market.

    The kill switch runs in a web request, where no market feed is at hand; a
    cancel is a conditional update of the stored order, and the runner's paper
    desk drops it from its book on the next sync.
    """

    kind = "paper"

    def __init__(self, store: paper_accounts.SqlPaperStore) -> None:
        self.store = store

    async def status(self, order: StrategyOrder) -> OrderStatus | None:
        found = await self.store.get_order(order.broker_order_id or "")
        return None if found is None else found.status()

    async def cancel(self, order: StrategyOrder) -> bool:
        done = await self.store.cancel(order.broker_order_id or "", "strategy killed")
        if done:
            changes.notify()
        return done

    async def close(self) -> None:
        return None


async def _open_kis(session: AsyncSession, att: StrategyAttachment, cfg: Settings) -> KisVenue:
    """The user's KIS account, decrypted for this one use (audited by ``use_kis_account``).

    The credential must belong to the attachment's user: a row pointing at someone
    else's account is ``NotFound``, and nothing is sent.
    """
    if att.broker_account_id is None:
        raise NotFound()
    secrets = await credentials.use_kis_account(
        session, att.user_id, att.broker_account_id, purpose="strategy_order"
    )
    rest = KisRest(
        app_key=secrets.app_key,
        app_secret=secrets.app_secret,
        paper=secrets.is_paper,
        account_no=secrets.account_no,
        product_code=secrets.product_code,
        base_url=cfg.kis_paper_base_url if secrets.is_paper else cfg.kis_real_base_url,
        token_store=VaultTokenStore(att.broker_account_id, att.user_id, secrets.app_key),
        rate_per_s=cfg.kis_paper_rate_per_s if secrets.is_paper else cfg.kis_real_rate_per_s,
        timeout=cfg.kis_timeout,
    )
    return KisVenue(rest)


def venue_opener(market: MarketData, settings: Settings | None = None) -> VenueOpener:
    """Opens the attachment's venue: the user's paper account (trading against
    ``market``, the runner's feed) or, in live mode, their KIS account."""

    async def open_venue(session: AsyncSession, att: StrategyAttachment) -> Venue:
        cfg = settings or get_settings()
        if att.mode == MODE_LIVE:
            return await _open_kis(session, att, cfg)
        broker = await paper_accounts.open_broker(session, att.user_id, market, cfg)
        return PaperVenue(broker)

    return open_venue


def lookup_opener(settings: Settings | None = None) -> LookupOpener:
    """Like :func:`venue_opener` but needing no market: paper orders are reached through
    their store. Enough to look orders up and cancel them (the kill switch)."""

    async def open_lookup(session: AsyncSession, att: StrategyAttachment) -> OrderLookup:
        if att.mode == MODE_LIVE:
            return await _open_kis(session, att, settings or get_settings())
        account = await paper_accounts.get_account(session, att.user_id, settings)
        assert account.id is not None
        return PaperStoreVenue(paper_accounts.SqlPaperStore(account.id))

    return open_lookup
