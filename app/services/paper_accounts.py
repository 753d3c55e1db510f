"""Paper trading accounts: the SQL :class:`~brokers.paper.broker.PaperStore` and the use cases.

Every user has one paper account, created on first use with
``PAPER_INITIAL_CASH``. The rules of trading (fees, tax, reservations, fill
prices) live in ``brokers.paper``; this module only persists them and checks who
is asking. Each use case takes the acting user's id, works on that user's account
alone, and reports another user's order as :class:`NotFound` (audited), so order
ids do not leak which orders exist.

Order input comes from forms, so ``qty`` and ``price`` may be strings
("1,000"); they are parsed here, and every refusal, from a malformed number to
"not enough cash", becomes a :class:`ValidationFailed` whose code maps to
``error.paper_<reason>`` in ``app/i18n/*.paper.json``. A refused order writes
nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.config import Settings, get_settings
from app.models.common import utcnow
from app.models.paper import PaperAccount, PaperFillRow, PaperOrderRow, PaperPosition
from app.services import audit, changes, symbols
from app.services.errors import NotFound, ValidationFailed
from brokers.base import (
    Balance,
    MarketData,
    OrderAck,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    UnknownSymbol,
)
from brokers.paper.account import (
    FeeSchedule,
    Holding,
    PaperFill,
    PaperOrder,
    PaperOrderRejected,
    Settlement,
)
from brokers.paper.broker import PAPER_BRANCH, PaperBroker, PaperSnapshot, StaleState

__all__ = [
    "MAX_CLIENT_ORDER_ID",
    "MAX_QTY",
    "PaperSummary",
    "SqlPaperStore",
    "account_summary",
    "cancel_order",
    "fee_schedule",
    "get_account",
    "list_fills",
    "list_orders",
    "open_broker",
    "place_order",
    "reset_account",
]

log = logging.getLogger(__name__)

MAX_QTY = 1_000_000_000
"""Beyond any listing's share count; keeps a typo from reaching BIGINT arithmetic."""

MAX_CLIENT_ORDER_ID = 64

_OPEN_STATES = (OrderState.OPEN.value, OrderState.PARTIAL.value)
_NUMBER = re.compile(r"[+-]?\d+")

Sessions = Callable[[], AbstractAsyncContextManager[AsyncSession]]


# ---- the store ----------------------------------------------------------------------


def _to_order(row: PaperOrderRow) -> PaperOrder:
    return PaperOrder(
        order_id=str(row.id),
        symbol=row.symbol,
        side=OrderSide(row.side),
        order_type=OrderType(row.order_type),
        qty=row.qty,
        price=row.price,
        created_at=row.created_at,
        client_order_id=row.client_order_id or "",
        reserved_cash=row.reserved_cash,
        state=OrderState(row.state),
        resting=row.resting,
        filled_qty=row.filled_qty,
        avg_fill_price=row.avg_fill_price,
        reason=row.reason,
    )


def _to_fill(row: PaperFillRow) -> PaperFill:
    return PaperFill(
        order_id=str(row.order_id),
        symbol=row.symbol,
        side=OrderSide(row.side),
        qty=row.qty,
        price=row.price,
        ts=row.ts,
        commission=row.commission,
        tax=row.tax,
        realized_pnl=row.realized_pnl,
    )


def _order_pk(order_id: str) -> int | None:
    """Order ids are decimal row ids; anything else names no order."""
    text = str(order_id).strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


class SqlPaperStore:
    """:class:`~brokers.paper.broker.PaperStore` on the app database, for one account.

    Each method is one transaction from ``sessions`` (``app.db.session`` by
    default, so a long-lived broker in the runner opens short sessions). Cash and
    positions move by deltas in SQL and fills/cancels are conditional on the
    order still being open, so brokers in several workers cannot overwrite each
    other; placements are guarded by ``revision`` (see ``PaperStore``).
    """

    def __init__(self, account_id: int, sessions: Sessions = db.session) -> None:
        self.account_id = account_id
        self._sessions = sessions

    async def load(self) -> PaperSnapshot:
        async with self._sessions() as s:
            account = await s.get(PaperAccount, self.account_id, populate_existing=True)
            if account is None:
                raise NotFound()
            positions = (
                await s.exec(
                    select(PaperPosition).where(PaperPosition.account_id == self.account_id)
                )
            ).all()
            orders = (
                await s.exec(
                    select(PaperOrderRow)
                    .where(
                        PaperOrderRow.account_id == self.account_id,
                        col(PaperOrderRow.state).in_(_OPEN_STATES),
                    )
                    .order_by(col(PaperOrderRow.id))
                )
            ).all()
            return PaperSnapshot(
                cash=account.cash,
                holdings={p.symbol: Holding(p.qty, p.cost) for p in positions},
                open_orders=[_to_order(o) for o in orders],
                revision=account.revision,
            )

    async def order_by_client_id(self, client_order_id: str) -> PaperOrder | None:
        if not client_order_id:
            return None
        async with self._sessions() as s:
            return await self._by_client_id(s, client_order_id)

    async def _by_client_id(self, s: AsyncSession, client_order_id: str) -> PaperOrder | None:
        row = (
            await s.exec(
                select(PaperOrderRow).where(
                    PaperOrderRow.account_id == self.account_id,
                    PaperOrderRow.client_order_id == client_order_id,
                )
            )
        ).first()
        return None if row is None else _to_order(row)

    async def get_order(self, order_id: str) -> PaperOrder | None:
        pk = _order_pk(order_id)
        if pk is None:
            return None
        async with self._sessions() as s:
            row = (
                await s.exec(
                    select(PaperOrderRow).where(
                        PaperOrderRow.id == pk, PaperOrderRow.account_id == self.account_id
                    )
                )
            ).first()
            return None if row is None else _to_order(row)

    async def _bump(self, s: AsyncSession, cash_delta: int = 0) -> None:
        await s.exec(
            update(PaperAccount)
            .where(col(PaperAccount.id) == self.account_id)
            .values(
                revision=col(PaperAccount.revision) + 1, cash=col(PaperAccount.cash) + cash_delta
            )
        )

    async def insert_order(self, order: PaperOrder, revision: int) -> tuple[PaperOrder, bool]:
        async with self._sessions() as s:
            if order.client_order_id:
                existing = await self._by_client_id(s, order.client_order_id)
                if existing is not None:
                    return existing, False
            bumped = await s.exec(
                update(PaperAccount)
                .where(
                    col(PaperAccount.id) == self.account_id,
                    col(PaperAccount.revision) == revision,
                )
                .values(revision=col(PaperAccount.revision) + 1)
            )
            if bumped.rowcount != 1:
                await s.rollback()
                raise StaleState(
                    f"paper account {self.account_id} changed since revision {revision}"
                )
            row = PaperOrderRow(
                account_id=self.account_id,
                client_order_id=order.client_order_id or None,
                symbol=order.symbol,
                side=order.side.value,
                order_type=order.order_type.value,
                qty=order.qty,
                price=order.price,
                reserved_cash=order.reserved_cash,
                state=order.state.value,
                resting=order.resting,
                created_at=order.created_at,
                updated_at=order.created_at,
            )
            s.add(row)
            try:
                await s.commit()
            except IntegrityError:
                # The same client order id, placed concurrently by another worker.
                await s.rollback()
                existing = await self._by_client_id(s, order.client_order_id)
                if existing is None:
                    raise
                return existing, False
            await s.refresh(row)
            return _to_order(row), True

    async def mark_resting(self, order_id: str) -> None:
        pk = _order_pk(order_id)
        async with self._sessions() as s:
            await s.exec(
                update(PaperOrderRow)
                .where(
                    col(PaperOrderRow.id) == pk, col(PaperOrderRow.account_id) == self.account_id
                )
                .values(resting=True)
            )
            await self._bump(s)
            await s.commit()

    async def record_fill(self, order: PaperOrder, settlement: Settlement) -> bool:
        pk = _order_pk(order.order_id)
        fill = settlement.fill
        async with self._sessions() as s:
            done = await s.exec(
                update(PaperOrderRow)
                .where(
                    col(PaperOrderRow.id) == pk,
                    col(PaperOrderRow.account_id) == self.account_id,
                    col(PaperOrderRow.state).in_(_OPEN_STATES),
                )
                .values(
                    state=OrderState.FILLED.value,
                    filled_qty=fill.qty,
                    avg_fill_price=float(fill.price),
                    reserved_cash=0,
                    updated_at=utcnow(),
                )
            )
            if done.rowcount != 1:
                await s.rollback()
                return False
            assert pk is not None
            s.add(
                PaperFillRow(
                    account_id=self.account_id,
                    order_id=pk,
                    symbol=fill.symbol,
                    side=fill.side.value,
                    qty=fill.qty,
                    price=fill.price,
                    commission=fill.commission,
                    tax=fill.tax,
                    realized_pnl=fill.realized_pnl,
                    ts=fill.ts,
                )
            )
            await self._bump(s, settlement.cash_delta)
            await self._move_position(s, fill.symbol, settlement)
            await s.commit()
            return True

    async def _move_position(self, s: AsyncSession, symbol: str, settlement: Settlement) -> None:
        key = (PaperPosition.account_id == self.account_id, PaperPosition.symbol == symbol)
        if settlement.holding_after is None:
            await s.exec(delete(PaperPosition).where(*key))
            return
        moved = await s.exec(
            update(PaperPosition)
            .where(*key)
            .values(
                qty=col(PaperPosition.qty) + settlement.qty_delta,
                cost=col(PaperPosition.cost) + settlement.cost_delta,
            )
        )
        if moved.rowcount == 0:
            s.add(
                PaperPosition(
                    account_id=self.account_id,
                    symbol=symbol,
                    qty=settlement.qty_delta,
                    cost=settlement.cost_delta,
                )
            )

    async def cancel(self, order_id: str, reason: str) -> bool:
        pk = _order_pk(order_id)
        if pk is None:
            return False
        async with self._sessions() as s:
            done = await s.exec(
                update(PaperOrderRow)
                .where(
                    col(PaperOrderRow.id) == pk,
                    col(PaperOrderRow.account_id) == self.account_id,
                    col(PaperOrderRow.state).in_(_OPEN_STATES),
                )
                .values(
                    state=OrderState.CANCELLED.value,
                    reserved_cash=0,
                    reason=reason[:64],
                    updated_at=utcnow(),
                )
            )
            if done.rowcount != 1:
                await s.rollback()
                return False
            await self._bump(s)
            await s.commit()
            return True

    async def orders(self, since: datetime, until: datetime) -> list[PaperOrder]:
        async with self._sessions() as s:
            rows = (
                await s.exec(
                    select(PaperOrderRow)
                    .where(
                        PaperOrderRow.account_id == self.account_id,
                        col(PaperOrderRow.created_at) >= since,
                        col(PaperOrderRow.created_at) < until,
                    )
                    .order_by(col(PaperOrderRow.id))
                )
            ).all()
            return [_to_order(r) for r in rows]

    async def fills(self, since: datetime, until: datetime) -> list[PaperFill]:
        async with self._sessions() as s:
            rows = (
                await s.exec(
                    select(PaperFillRow)
                    .where(
                        PaperFillRow.account_id == self.account_id,
                        col(PaperFillRow.ts) >= since,
                        col(PaperFillRow.ts) < until,
                    )
                    .order_by(col(PaperFillRow.id))
                )
            ).all()
            return [_to_fill(r) for r in rows]


def _bound(session: AsyncSession) -> Sessions:
    """A ``sessions`` factory that hands out the caller's session (not closing it)."""

    @asynccontextmanager
    async def use() -> AsyncIterator[AsyncSession]:
        yield session

    return use


# ---- use cases ------------------------------------------------------------------------


def fee_schedule(settings: Settings | None = None) -> FeeSchedule:
    s = settings or get_settings()
    return FeeSchedule(s.paper_commission_rate, s.paper_sell_tax_rate, s.paper_slippage_ticks)


async def get_account(
    session: AsyncSession, user_id: int, settings: Settings | None = None
) -> PaperAccount:
    """The user's paper account, created with ``PAPER_INITIAL_CASH`` on first use."""
    stmt = select(PaperAccount).where(PaperAccount.user_id == user_id)
    account = (await session.exec(stmt.execution_options(populate_existing=True))).first()
    if account is not None:
        return account
    cash = (settings or get_settings()).paper_initial_cash
    account = PaperAccount(user_id=user_id, initial_cash=cash, cash=cash)
    session.add(account)
    try:
        await session.commit()
    except IntegrityError:  # created by a concurrent request of the same user
        await session.rollback()
        return (await session.exec(stmt)).one()
    await session.refresh(account)
    log.info("paper account %s created for user %s", account.id, user_id)
    return account


async def open_broker(
    session: AsyncSession, user_id: int, market: MarketData, settings: Settings | None = None
) -> PaperBroker:
    """A :class:`PaperBroker` on the user's account, for the runner and strategies.

    Its store opens its own sessions (``app.db.session``), so it can outlive
    ``session``.
    """
    account = await get_account(session, user_id, settings)
    assert account.id is not None
    return await PaperBroker.open(market, SqlPaperStore(account.id), fee_schedule(settings))


async def _request_broker(
    session: AsyncSession, user_id: int, market: MarketData, settings: Settings | None
) -> PaperBroker:
    """A short-lived broker for one request, working in the request's session."""
    account = await get_account(session, user_id, settings)
    assert account.id is not None
    store = SqlPaperStore(account.id, _bound(session))
    return await PaperBroker.open(market, store, fee_schedule(settings))


def _parse_int(raw: object, field: str, *, required: bool = True) -> int | None:
    """A whole number from a form ("1,000", " 70000 ") or an int; ValidationFailed otherwise."""
    if isinstance(raw, bool):
        raise ValidationFailed.single(field, f"paper_{field}_not_number")
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw if raw is not None else "").strip().replace(",", "")
        if not text:
            if required:
                raise ValidationFailed.single(field, f"paper_{field}_required")
            return None
        if not _NUMBER.fullmatch(text):
            raise ValidationFailed.single(field, f"paper_{field}_not_number")
        value = int(text)
    if value <= 0:
        raise ValidationFailed.single(field, f"paper_{field}_not_positive")
    return value


_FIELD_OF = {
    "qty_not_integer": "qty",
    "qty_not_positive": "qty",
    "price_not_integer": "price",
    "price_not_positive": "price",
    "price_off_tick": "price",
    "price_beyond_limits": "price",
    "insufficient_cash": "qty",
    "insufficient_shares": "qty",
}


def _refusal(exc: PaperOrderRejected) -> ValidationFailed:
    """The broker's refusal as a form error: ``error.paper_<code>`` with its numbers."""
    return ValidationFailed.single(
        _FIELD_OF.get(exc.code, "order"), f"paper_{exc.code}", **exc.params
    )


async def place_order(
    session: AsyncSession,
    user_id: int,
    market: MarketData,
    *,
    symbol: str,
    side: str,
    qty: str | int,
    order_type: str = OrderType.LIMIT.value,
    price: str | int = "",
    client_order_id: str = "",
    settings: Settings | None = None,
) -> OrderAck:
    """Place an order on the user's paper account (see ``brokers.paper.broker`` for the rules).

    ``symbol`` may be a code or a name (as the watchlist accepts). The same
    non-empty ``client_order_id`` twice returns the first order's ack.
    """
    try:
        side_ = OrderSide((side or "").strip().lower())
    except ValueError:
        raise ValidationFailed.single("side", "paper_bad_side") from None
    try:
        type_ = OrderType((order_type or "").strip().lower())
    except ValueError:
        raise ValidationFailed.single("order_type", "paper_bad_type") from None
    qty_ = _parse_int(qty, "qty")
    if qty_ is not None and qty_ > MAX_QTY:
        raise ValidationFailed.single("qty", "paper_qty_too_large", limit=MAX_QTY)
    price_ = 0 if type_ is OrderType.MARKET else _parse_int(price, "price")
    coid = (client_order_id or "").strip()
    if len(coid) > MAX_CLIENT_ORDER_ID:
        raise ValidationFailed.single(
            "client_order_id", "paper_client_id_too_long", limit=MAX_CLIENT_ORDER_ID
        )
    sym = await symbols.resolve(session, symbol)
    assert qty_ is not None and price_ is not None
    broker = await _request_broker(session, user_id, market, settings)
    request = OrderRequest(sym.code, side_, qty_, type_, price_, coid)
    try:
        ack = await broker.place_order(request)
    except PaperOrderRejected as exc:
        log.info("paper order refused for user %s: %s", user_id, exc)
        raise _refusal(exc) from exc
    except UnknownSymbol as exc:
        raise ValidationFailed.single("symbol", "unknown_symbol", query=symbol) from exc
    changes.notify()  # the runner's paper broker picks up the new open order
    return ack


async def cancel_order(
    session: AsyncSession,
    user_id: int,
    market: MarketData,
    order_id: str | int,
    ip: str = "",
    settings: Settings | None = None,
) -> PaperOrder:
    """Cancel one of the user's open orders. Another user's order id is NotFound (audited)."""
    broker = await _request_broker(session, user_id, market, settings)
    ack = OrderAck(str(order_id).strip(), PAPER_BRANCH, utcnow())
    try:
        await broker.cancel_order(ack)
    except PaperOrderRejected as exc:
        if exc.code == "order_not_found":
            await audit.denied(user_id, "paper_order", str(order_id), ip)
            raise NotFound() from exc
        raise _refusal(exc) from exc
    changes.notify()
    cancelled = await broker.store.get_order(ack.order_id)
    assert cancelled is not None
    return cancelled


async def list_orders(
    session: AsyncSession, user_id: int, *, open_only: bool = False, limit: int = 200
) -> list[PaperOrder]:
    """The user's orders, newest first."""
    account = await get_account(session, user_id)
    stmt = select(PaperOrderRow).where(PaperOrderRow.account_id == account.id)
    if open_only:
        stmt = stmt.where(col(PaperOrderRow.state).in_(_OPEN_STATES))
    stmt = stmt.order_by(col(PaperOrderRow.id).desc()).limit(limit)
    return [_to_order(r) for r in (await session.exec(stmt)).all()]


async def list_fills(session: AsyncSession, user_id: int, *, limit: int = 200) -> list[PaperFill]:
    """The user's fills, newest first, with fees, tax and (sells) realized P&L."""
    account = await get_account(session, user_id)
    stmt = (
        select(PaperFillRow)
        .where(PaperFillRow.account_id == account.id)
        .order_by(col(PaperFillRow.id).desc())
        .limit(limit)
    )
    return [_to_fill(r) for r in (await session.exec(stmt)).all()]


@dataclass(frozen=True, slots=True)
class PaperSummary:
    """The account page's numbers.

    ``balance.cash`` is the deposit (open buys' reservations included) and
    ``orderable_cash`` what a new buy may spend. ``unrealized_pnl`` is
    ``balance.pnl`` (holdings at current prices minus book cost, fees excluded);
    ``realized_pnl`` sums the sells' recorded P&L; ``total_pnl`` is the account's
    whole change since its start or last reset, fees and tax included.
    """

    balance: Balance
    orderable_cash: int
    initial_cash: int
    realized_pnl: int
    commission_paid: int
    tax_paid: int

    @property
    def unrealized_pnl(self) -> int:
        return self.balance.pnl

    @property
    def total_pnl(self) -> int:
        return self.balance.total - self.initial_cash


async def account_summary(
    session: AsyncSession, user_id: int, market: MarketData, settings: Settings | None = None
) -> PaperSummary:
    """Balance valued at ``market``'s current prices, plus realized P&L and fees to date."""
    broker = await _request_broker(session, user_id, market, settings)
    balance = await broker.balance()
    account = await get_account(session, user_id, settings)
    totals = (
        await session.exec(
            select(
                func.coalesce(func.sum(PaperFillRow.realized_pnl), 0),
                func.coalesce(func.sum(PaperFillRow.commission), 0),
                func.coalesce(func.sum(PaperFillRow.tax), 0),
            ).where(PaperFillRow.account_id == account.id)
        )
    ).one()
    return PaperSummary(
        balance=balance,
        orderable_cash=broker.ledger.available_cash,
        initial_cash=account.initial_cash,
        realized_pnl=int(totals[0]),
        commission_paid=int(totals[1]),
        tax_paid=int(totals[2]),
    )


async def reset_account(
    session: AsyncSession, user_id: int, settings: Settings | None = None
) -> PaperAccount:
    """Start over: delete orders, fills and positions; cash back to ``PAPER_INITIAL_CASH``.

    The revision moves on, so a broker elsewhere that still holds the old state
    cannot place against it, and its fills of deleted orders are refused.
    """
    account = await get_account(session, user_id, settings)
    cash = (settings or get_settings()).paper_initial_cash
    for table in (PaperFillRow, PaperOrderRow, PaperPosition):
        await session.exec(delete(table).where(col(table.account_id) == account.id))
    await session.exec(
        update(PaperAccount)
        .where(col(PaperAccount.id) == account.id)
        .values(
            cash=cash,
            initial_cash=cash,
            revision=col(PaperAccount.revision) + 1,
            reset_at=datetime.now(UTC),
        )
    )
    await session.commit()
    changes.notify()
    log.info("paper account %s reset to %d won", account.id, cash)
    return await get_account(session, user_id, settings)
