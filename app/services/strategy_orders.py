"""Strategy signals to broker orders: one signal places at most one order, ever.

The promise must hold across retries, crashes and restarts, and KIS takes no
client order id, so it is kept here, in three steps around one unique column:

1. **Claim.** The client order id is a hash of (attachment, signal key). In one
   transaction the attachment's gates (enabled, kill switch, live confirmation)
   and limits (orders today, order value, position) are checked and the
   ``strategy_orders`` row is inserted: ``pending``, or ``rejected`` with the
   reason when a gate or limit says no (stored, so a refusal is visible). The id
   is unique, so a second claim of the same signal fails on insert and returns the
   first row: nothing is placed twice.
2. **Send.** The row becomes ``sent`` *before* the broker is called and ``acked``
   (with the broker's order number) after. A broker refusal is ``rejected``; a
   failure that leaves the outcome open (a timeout) is ``unknown``.
3. **Reconcile.** After a crash a row can be ``pending`` (never sent), ``sent``
   (maybe at the broker) or ``unknown``. :meth:`OrderExecutor.reconcile` runs
   before the attachment trades again: it looks each one up at the broker (paper:
   by client order id; KIS: today's orders matched by symbol, side, quantity,
   price and time, skipping orders already linked to another row). Found: linked
   and ``acked``. Not found: placed now, once (or refused as ``stale`` if the
   signal is too old to act on). If the broker cannot be reached the rows stay as
   they are and the attachment stays ``reconciling``, which the gates refuse.

Every claim, refusal, send, ack, link and cancel is written to the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import db
from app.config import Settings, get_settings
from app.models.audit import OUTCOME_FAILED, OUTCOME_OK
from app.models.common import utcnow
from app.models.strategies import (
    MODE_ALERT,
    MODE_LIVE,
    MODE_PAPER,
    ORDER_ACKED,
    ORDER_PENDING,
    ORDER_REJECTED,
    ORDER_SENT,
    ORDER_UNKNOWN,
    STATE_RECONCILING,
    STATE_RUNNING,
    UNRESOLVED_ORDER_STATES,
    StrategyAttachment,
    StrategyOrder,
)
from app.services import audit
from app.services.errors import NotFound

# The venues moved to order_venues; the public ones stay importable from here (__all__).
from app.services.order_venues import (
    _OPEN,
    AccountSnapshot,
    KisVenue,
    LookupOpener,
    PaperVenue,
    Venue,
    VenueOpener,
    lookup_opener,
    venue_opener,
)
from app.vault_keys import VaultError
from brokers.base import (
    Balance,
    BrokerError,
    MarketData,
    OrderAck,
    OrderRejected,
    OrderRequest,
    OrderSide,
    OrderType,
)
from brokers.paper.broker import kst_day_bounds
from engines.costs import CostModel
from engines.market import KST, Direction, round_to_tick
from engines.strategies.base import Action, OrderKind, Signal
from engines.strategies.sizing import shares_for

__all__ = [
    "AccountSnapshot",
    "KisVenue",
    "OrderExecutor",
    "PaperVenue",
    "Venue",
    "cancel_open_orders",
    "client_order_id",
    "lookup_opener",
    "refusal",
    "venue_opener",
]

log = logging.getLogger(__name__)

TARGET = "strategy_order"


def client_order_id(attachment_id: int, signal_key: str) -> str:
    """24 characters of ``[A-Z2-7]``: stable for the same (attachment, signal), safe anywhere.

    A hash rather than the key itself: signal keys hold timestamps and ``|``, are
    longer than brokers accept, and would say more than an order id should.
    """
    digest = hashlib.sha256(f"{attachment_id}|{signal_key}".encode()).digest()
    return "TW" + base64.b32encode(digest).decode("ascii")[:22]


def refusal(att: StrategyAttachment) -> str | None:
    """Why this attachment may not place an order now, or None.

    Read from the row at the moment of the order, whatever the desk believed when
    it loaded the attachment: live trading needs every one of confirmation,
    account and limits, even if ``mode`` says live.
    """
    if not att.enabled:
        return "disabled"
    if att.killed_at is not None:
        return "killed"
    if att.mode == MODE_LIVE:
        if att.live_confirmed_at is None:
            return "live_not_confirmed"
        if att.broker_account_id is None:
            return "live_no_account"
        if None in (att.max_order_value, att.max_position_qty, att.max_orders_per_day):
            return "live_no_limits"
    elif att.mode != MODE_PAPER:
        return "alert_mode" if att.mode == MODE_ALERT else "bad_mode"
    if att.state == STATE_RECONCILING:
        return "reconciling"
    return None


def cost_model(settings: Settings) -> CostModel:
    """The fees sizing assumes: the paper account's, which mirror a KRX retail account."""
    return CostModel(
        commission_rate=settings.paper_commission_rate,
        sell_tax_rate=settings.paper_sell_tax_rate,
        slippage_ticks=settings.paper_slippage_ticks,
    )


# ---- the executor ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Order:
    side: OrderSide
    order_type: OrderType
    price: int  # limit price, 0 for market
    ref_price: int


def _order_terms(signal: Signal, ref_price: float) -> _Order:
    side = OrderSide.BUY if signal.action is Action.BUY else OrderSide.SELL
    ref = max(int(round(ref_price)), 1)
    if signal.order_kind is OrderKind.LIMIT and signal.limit_price is not None:
        # Onto the tick grid on the trader's side: a buy never pays above its limit.
        if side is OrderSide.BUY:
            price = round_to_tick(max(int(math.floor(signal.limit_price)), 1), Direction.DOWN)
        else:
            price = round_to_tick(max(int(math.ceil(signal.limit_price)), 1), Direction.UP)
        return _Order(side, OrderType.LIMIT, price, ref)
    return _Order(side, OrderType.MARKET, 0, ref)


async def _by_coid(session: AsyncSession, coid: str) -> StrategyOrder | None:
    return (
        await session.exec(select(StrategyOrder).where(StrategyOrder.client_order_id == coid))
    ).first()


async def _locked(session: AsyncSession, attachment_id: int) -> StrategyAttachment | None:
    """The attachment row, locked on PostgreSQL so a kill or a second claim waits for us."""
    stmt = select(StrategyAttachment).where(StrategyAttachment.id == attachment_id)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return (await session.exec(stmt.execution_options(populate_existing=True))).first()


async def _orders_today(session: AsyncSession, attachment_id: int, now: datetime) -> int:
    since, until = kst_day_bounds(now.astimezone(KST).date())
    return (
        await session.exec(
            select(func.count())
            .select_from(StrategyOrder)
            .where(
                StrategyOrder.attachment_id == attachment_id,
                StrategyOrder.state != ORDER_REJECTED,
                col(StrategyOrder.created_at) >= since,
                col(StrategyOrder.created_at) < until,
            )
        )
    ).one()


def _audit_detail(row: StrategyOrder, **extra: object) -> dict[str, object]:
    return {
        "attachment_id": row.attachment_id,
        "client_order_id": row.client_order_id,
        "symbol": row.symbol,
        "side": row.side,
        "qty": row.qty,
        "order_type": row.order_type,
        "price": row.price,
        "mode": row.mode,
        **extra,
    }


async def _audit_order(
    action: str, row: StrategyOrder, *, outcome: str = OUTCOME_OK, **extra: object
) -> None:
    """One audit row per step of an order, all with the same order fields in ``detail``."""
    await audit.record(
        action,
        actor_id=row.user_id,
        target_type=TARGET,
        target_id=row.id,
        outcome=outcome,
        detail=_audit_detail(row, **extra),
    )


async def _audit_cancel(row: StrategyOrder, exc: BrokerError | None = None) -> None:
    """A cancel taken back (``exc`` None) or refused by the broker.

    Shared by the executor (an order killed on its way) and the kill switch, so both
    leave the same trail.
    """
    if exc is None:
        await _audit_order(audit.STRATEGY_ORDER_CANCELLED, row, broker_order_id=row.broker_order_id)
        return
    log.warning("cancel of strategy order %s failed: %s", row.id, exc)
    await _audit_order(
        audit.STRATEGY_ORDER_CANCELLED, row, outcome=OUTCOME_FAILED, error=str(exc)[:200]
    )


class OrderExecutor:
    """Claims, sends and reconciles strategy orders. One instance per process is enough.

    A lock per attachment serialises its orders in this process (the count of
    today's orders and the position must not be read by two claims at once); the
    unique client order id protects against every other process.
    """

    def __init__(
        self,
        market: MarketData,
        settings: Settings | None = None,
        *,
        open_venue: VenueOpener | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.costs = cost_model(self.settings)
        self._open_venue = open_venue or venue_opener(market, self.settings)
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, attachment_id: int) -> asyncio.Lock:
        return self._locks.setdefault(attachment_id, asyncio.Lock())

    async def _venue(self, att: StrategyAttachment) -> Venue:
        async with db.session() as s:
            return await self._open_venue(s, att)

    async def balance(self, attachment_id: int) -> Balance | None:
        """The attachment's account as its broker reports it (None: not a trading mode)."""
        async with db.session() as s:
            att = await s.get(StrategyAttachment, attachment_id)
        if att is None or att.mode not in (MODE_PAPER, MODE_LIVE):
            return None
        venue = await self._venue(att)
        try:
            return await venue.balance()
        finally:
            await venue.close()

    # ---- 1. claim -------------------------------------------------------------------

    async def execute(
        self,
        attachment_id: int,
        signal: Signal,
        ref_price: float,
        *,
        now: datetime | None = None,
    ) -> StrategyOrder | None:
        """Turn a BUY or SELL signal into at most one order; returns its row.

        The same signal again (a retry, a replay after a restart) returns the row of
        the first time and places nothing. None if the attachment no longer exists.
        """
        if signal.action not in (Action.BUY, Action.SELL):
            raise ValueError(f"only buy and sell signals place orders, got {signal.action}")
        if not signal.key:
            raise ValueError("a signal without a key cannot be placed exactly once")
        coid = client_order_id(attachment_id, signal.key)
        async with self._lock(attachment_id):
            async with db.session() as s:
                existing = await _by_coid(s, coid)
                att = await s.get(StrategyAttachment, attachment_id)
            if existing is not None:
                log.info("signal %s of attachment %s already handled", signal.key, attachment_id)
                return existing
            if att is None:
                return None
            reason = refusal(att)
            error = ""
            venue: Venue | None = None
            snapshot: AccountSnapshot | None = None
            if reason is None:
                try:
                    venue = await self._venue(att)
                    snapshot = await venue.snapshot(att.symbol)
                except (BrokerError, NotFound, VaultError, ValueError) as exc:
                    reason = (
                        "live_no_account" if isinstance(exc, NotFound) else "broker_unavailable"
                    )
                    error = f"{type(exc).__name__}: {exc}"[:500]
            try:
                row = await self._claim(
                    attachment_id, signal, coid, ref_price, snapshot, reason, error, now
                )
                if row is None or row.state != ORDER_PENDING or venue is None:
                    return row
                return await self._send(row, venue, from_states=(ORDER_PENDING,))
            finally:
                if venue is not None:
                    await venue.close()

    async def _claim(
        self,
        attachment_id: int,
        signal: Signal,
        coid: str,
        ref_price: float,
        snapshot: AccountSnapshot | None,
        reason: str | None,
        error: str,
        now: datetime | None,
    ) -> StrategyOrder | None:
        now = now or utcnow()
        terms = _order_terms(signal, ref_price)
        detail: dict[str, object] = {}
        async with db.session() as s:
            att = await _locked(s, attachment_id)
            if att is None:
                return None
            reason = reason or refusal(att)  # the kill switch as it is now, not at the gate
            qty = 0
            if reason is None:
                assert snapshot is not None
                at = terms.price or terms.ref_price
                if terms.side is OrderSide.BUY and terms.order_type is OrderType.MARKET:
                    at = max(at, snapshot.upper_limit)  # what the broker will reserve
                qty = shares_for(
                    signal,
                    at,
                    cash=snapshot.cash,
                    equity=snapshot.equity,
                    position=snapshot.held,
                    costs=self.costs,
                )
                if qty <= 0:
                    reason = "nothing_to_sell" if terms.side is OrderSide.SELL else "no_cash"
            if reason is None:
                reason, detail = await self._limits(s, att, terms, qty, snapshot, now)
            row = StrategyOrder(
                user_id=att.user_id,
                attachment_id=attachment_id,
                client_order_id=coid,
                signal_key=signal.key[:200],
                symbol=att.symbol,
                side=terms.side.value,
                qty=max(qty, 0),
                order_type=terms.order_type.value,
                price=terms.price,
                ref_price=terms.ref_price,
                mode=att.mode,
                state=ORDER_REJECTED if reason else ORDER_PENDING,
                reason=reason or "",
                error=error,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            try:
                await s.commit()
            except IntegrityError:
                await s.rollback()
                return await _by_coid(s, coid)  # claimed by another process meanwhile
            await s.refresh(row)
        if reason:
            log.info("strategy order refused (%s): attachment %s", reason, attachment_id)
            await _audit_order(
                audit.STRATEGY_ORDER_REFUSED, row, reason=reason, **detail, outcome=OUTCOME_FAILED
            )
        return row

    async def _limits(
        self,
        s: AsyncSession,
        att: StrategyAttachment,
        terms: _Order,
        qty: int,
        snapshot: AccountSnapshot | None,
        now: datetime,
    ) -> tuple[str | None, dict[str, object]]:
        assert att.id is not None and snapshot is not None
        if att.max_orders_per_day is not None:
            today = await _orders_today(s, att.id, now)
            if today >= att.max_orders_per_day:
                return "max_orders_per_day", {"limit": att.max_orders_per_day, "today": today}
        value = qty * (terms.price or terms.ref_price)
        if att.max_order_value is not None and value > att.max_order_value:
            return "max_order_value", {"limit": att.max_order_value, "value": value}
        if att.max_position_qty is not None and terms.side is OrderSide.BUY:
            after = snapshot.held + snapshot.pending_buy + qty
            if after > att.max_position_qty:
                return "max_position", {"limit": att.max_position_qty, "after": after}
        return None, {}

    # ---- 2. send --------------------------------------------------------------------

    async def _mark_sent(
        self, row: StrategyOrder, from_states: tuple[str, ...]
    ) -> StrategyOrder | None:
        """``sent`` before the call; None if the kill switch won or the row moved on."""
        now = utcnow()
        async with db.session() as s:
            att = await _locked(s, row.attachment_id or 0)
            why = "detached" if att is None else refusal(att)
            if why is not None and why != "reconciling":  # reconciliation itself sends
                await s.exec(
                    update(StrategyOrder)
                    .where(
                        col(StrategyOrder.id) == row.id,
                        col(StrategyOrder.state).in_(from_states),
                    )
                    .values(state=ORDER_REJECTED, reason=why, updated_at=now)
                )
                await s.commit()
                log.info("strategy order %s not sent: %s", row.id, why)
                return None
            moved = await s.exec(
                update(StrategyOrder)
                .where(col(StrategyOrder.id) == row.id, col(StrategyOrder.state).in_(from_states))
                .values(state=ORDER_SENT, sent_at=now, updated_at=now)
            )
            await s.commit()
            if moved.rowcount != 1:
                return None
        row.state, row.sent_at = ORDER_SENT, now
        return row

    async def _send(
        self, row: StrategyOrder, venue: Venue, *, from_states: tuple[str, ...]
    ) -> StrategyOrder:
        sent = await self._mark_sent(row, from_states)
        if sent is None:
            return await self._reload(row)
        await _audit_order(audit.STRATEGY_ORDER_SENT, row, venue=venue.kind)
        request = OrderRequest(
            symbol=row.symbol,
            side=OrderSide(row.side),
            qty=row.qty,
            order_type=OrderType(row.order_type),
            price=row.price,
            client_order_id=row.client_order_id,
        )
        try:
            ack = await venue.place(request)
        except OrderRejected as exc:
            return await self._finish(row, ORDER_REJECTED, reason="broker_rejected", error=str(exc))
        except Exception as exc:  # a timeout, a dropped line: the outcome is open
            log.warning("strategy order %s: outcome unknown (%r)", row.id, exc)
            return await self._finish(row, ORDER_UNKNOWN, error=f"{type(exc).__name__}: {exc}")
        return await self._link(row, ack, audit.STRATEGY_ORDER_ACKED, venue)

    async def _finish(
        self, row: StrategyOrder, state: str, *, reason: str = "", error: str = ""
    ) -> StrategyOrder:
        now = utcnow()
        async with db.session() as s:
            await s.exec(
                update(StrategyOrder)
                .where(col(StrategyOrder.id) == row.id)
                .values(state=state, reason=reason, error=error[:500], updated_at=now)
            )
            if state == ORDER_UNKNOWN and row.attachment_id is not None:
                # Not another order until reconciliation has found out what happened.
                await s.exec(
                    update(StrategyAttachment)
                    .where(col(StrategyAttachment.id) == row.attachment_id)
                    .values(state=STATE_RECONCILING, last_error=error[:500])
                )
            await s.commit()
        action = (
            audit.STRATEGY_ORDER_REJECTED
            if state == ORDER_REJECTED
            else audit.STRATEGY_ORDER_UNKNOWN
        )
        await _audit_order(action, row, reason=reason, error=error[:200], outcome=OUTCOME_FAILED)
        return await self._reload(row)

    async def _link(
        self, row: StrategyOrder, ack: OrderAck, action: str, venue: Venue
    ) -> StrategyOrder:
        now = utcnow()
        async with db.session() as s:
            await s.exec(
                update(StrategyOrder)
                .where(col(StrategyOrder.id) == row.id)
                .values(
                    state=ORDER_ACKED,
                    broker_order_id=ack.order_id,
                    broker_branch=ack.branch,
                    acked_at=now,
                    reason="",
                    error="",
                    updated_at=now,
                )
            )
            await s.commit()
            att = await s.get(StrategyAttachment, row.attachment_id or 0)
        await _audit_order(action, row, broker_order_id=ack.order_id)
        linked = await self._reload(row)
        if att is not None and att.killed_at is not None:
            # Killed while the order was on its way: take it back.
            await self._cancel_one(linked, venue)
        return linked

    async def _reload(self, row: StrategyOrder) -> StrategyOrder:
        async with db.session() as s:
            fresh = await s.get(StrategyOrder, row.id)
        assert fresh is not None
        return fresh

    async def _cancel_one(self, row: StrategyOrder, venue: Venue) -> bool:
        try:
            cancelled = await venue.cancel(row)
        except BrokerError as exc:
            await _audit_cancel(row, exc)
            return False
        if cancelled:
            await _audit_cancel(row)
        return cancelled

    # ---- 3. reconcile ---------------------------------------------------------------

    async def reconcile(self, attachment_id: int, *, now: datetime | None = None) -> bool:
        """Resolve every unresolved order of the attachment with its broker, then check
        the position. True when the attachment may trade again; False while the broker
        cannot be reached (the attachment then stays ``reconciling``)."""
        async with self._lock(attachment_id):
            async with db.session() as s:
                att = await s.get(StrategyAttachment, attachment_id)
                if att is None:
                    return False
                rows = (
                    await s.exec(
                        select(StrategyOrder)
                        .where(
                            StrategyOrder.attachment_id == attachment_id,
                            col(StrategyOrder.state).in_(UNRESOLVED_ORDER_STATES),
                        )
                        .order_by(col(StrategyOrder.id))
                    )
                ).all()
            if att.mode not in (MODE_PAPER, MODE_LIVE):
                await self._set_state(attachment_id, STATE_RUNNING, "")
                return True
            try:
                venue = await self._venue(att)
            except (BrokerError, NotFound, VaultError) as exc:
                await self._set_state(attachment_id, STATE_RECONCILING, f"reconcile: {exc}")
                return False
            try:
                taken = await self._taken(att)
                for row in rows:
                    await self._resolve(row, venue, taken, now or utcnow())
                await self._check_position(att, venue, now or utcnow())
            except BrokerError as exc:
                log.warning("reconciling attachment %s: broker unreachable (%s)", att.id, exc)
                await self._set_state(attachment_id, STATE_RECONCILING, f"reconcile: {exc}")
                return False
            finally:
                await venue.close()
            await self._set_state(attachment_id, STATE_RUNNING, None)
            return True

    async def _taken(self, att: StrategyAttachment) -> set[str]:
        """Broker order ids already linked to a row on the same account: not candidates."""
        stmt = (
            select(StrategyOrder.broker_order_id)
            .join(
                StrategyAttachment, col(StrategyAttachment.id) == col(StrategyOrder.attachment_id)
            )
            .where(col(StrategyOrder.broker_order_id).is_not(None))
        )
        if att.mode == MODE_LIVE:
            stmt = stmt.where(StrategyAttachment.broker_account_id == att.broker_account_id)
        else:
            stmt = stmt.where(
                StrategyAttachment.user_id == att.user_id, StrategyOrder.mode == MODE_PAPER
            )
        async with db.session() as s:
            return {oid for oid in (await s.exec(stmt)).all() if oid}

    async def _resolve(
        self, row: StrategyOrder, venue: Venue, taken: set[str], now: datetime
    ) -> None:
        # A pending row was never handed over (``sent`` is committed before the call),
        # so only sent and unknown rows are looked for: a search could otherwise
        # mistake an identical order the user placed by hand for ours.
        found = None if row.state == ORDER_PENDING else await venue.find(row, taken)
        if found is not None:
            taken.add(found.order_id)
            log.info("strategy order %s found at the broker as %s", row.id, found.order_id)
            await self._link(row, found, audit.STRATEGY_ORDER_LINKED, venue)
            return
        age = (now - row.created_at).total_seconds()
        if age > self.settings.strategy_order_max_age_seconds:
            await self._finish(
                row, ORDER_REJECTED, reason="stale", error=f"not placed after {age:.0f}s"
            )
            return
        log.info("strategy order %s never reached the broker; placing it now", row.id)
        placed = await self._send(row, venue, from_states=UNRESOLVED_ORDER_STATES)
        if placed.broker_order_id:
            taken.add(placed.broker_order_id)
        if placed.state == ORDER_UNKNOWN:
            raise BrokerError(f"order {row.id} is still unresolved")

    async def _check_position(self, att: StrategyAttachment, venue: Venue, now: datetime) -> None:
        """Compare the broker's position with the last one seen plus our fills since.

        A difference is recorded (a note on the attachment and an audit entry), not
        traded on: the broker's figure becomes the new baseline, and sizing always
        reads the broker anyway, so nothing trades on a position it believes wrongly.
        """
        snapshot = await venue.snapshot(att.symbol)
        actual = snapshot.held
        note = ""
        async with db.session() as s:
            fresh = await s.get(StrategyAttachment, att.id)
            if fresh is None:
                return
            if fresh.position_qty is not None and fresh.position_at is not None:
                since = (
                    await s.exec(
                        select(StrategyOrder).where(
                            StrategyOrder.attachment_id == att.id,
                            StrategyOrder.state == ORDER_ACKED,
                            col(StrategyOrder.acked_at) >= fresh.position_at,
                        )
                    )
                ).all()
                moved = 0
                for row in since:
                    status = await venue.status(row)
                    if status is not None:
                        filled = status.filled_qty
                        moved += filled if row.side == OrderSide.BUY.value else -filled
                expected = fresh.position_qty + moved
                if expected != actual:
                    note = f"position_mismatch: expected {expected}, broker {actual}"
            await s.exec(
                update(StrategyAttachment)
                .where(col(StrategyAttachment.id) == att.id)
                .values(
                    position_qty=actual,
                    position_at=now,
                    **({"last_error": note} if note else {}),
                )
            )
            await s.commit()
        if note:
            log.warning("attachment %s: %s", att.id, note)
            await audit.record(
                audit.STRATEGY_POSITION_MISMATCH,
                actor_id=att.user_id,
                target_type="strategy_attachment",
                target_id=att.id,
                outcome=OUTCOME_FAILED,
                detail={"symbol": att.symbol, "expected": expected, "actual": actual},
            )

    async def _set_state(self, attachment_id: int, state: str, error: str | None) -> None:
        """Runner-owned columns only: ``updated_at`` is left alone (it means "user edit")."""
        values: dict[str, object] = {"state": state}
        if error is not None:
            values["last_error"] = error[:500]
        async with db.session() as s:
            await s.exec(
                update(StrategyAttachment)
                .where(col(StrategyAttachment.id) == attachment_id)
                .values(**values)
            )
            await s.commit()


async def cancel_open_orders(
    attachment: StrategyAttachment, open_lookup: LookupOpener
) -> tuple[int, int]:
    """Best effort: cancel the attachment's acked orders still open at the broker.

    Returns (cancelled, failed). For the kill switch, so it never raises: a broker
    that cannot be reached is logged and audited, and the kill itself stands.
    """
    async with db.session() as s:
        rows = (
            await s.exec(
                select(StrategyOrder).where(
                    StrategyOrder.attachment_id == attachment.id,
                    StrategyOrder.state == ORDER_ACKED,
                    col(StrategyOrder.broker_order_id).is_not(None),
                )
            )
        ).all()
    if not rows:
        return 0, 0
    try:
        async with db.session() as s:
            venue = await open_lookup(s, attachment)
    except (BrokerError, NotFound, VaultError) as exc:
        log.warning("kill of attachment %s: no broker to cancel at (%s)", attachment.id, exc)
        return 0, len(rows)
    done = failed = 0
    try:
        for row in rows:
            try:
                status = await venue.status(row)
                if status is None or status.state not in _OPEN:
                    continue
                if await venue.cancel(row):
                    done += 1
                    await _audit_cancel(row)
            except BrokerError as exc:
                failed += 1
                await _audit_cancel(row, exc)
    finally:
        await venue.close()
    return done, failed
