"""The paper account's ledger: cash, holdings, reservations, fees and tax. Pure, no I/O.

Everything here is arithmetic on whole won, so the same numbers come out in a
unit test, in the running paper broker and after a restart from the database.
:class:`~brokers.paper.broker.PaperBroker` owns the I/O (market data, the store,
the clock) and asks this module what an order costs, whether it may be placed and
what a fill does to the account.

Conventions, chosen to match what a Korean HTS shows for a cash account:

* **Commission** is ``floor(value × commission_rate)`` on buys and on sells.
  Korean brokers truncate fees to the won (원 미만 절사), so a 43.2 won fee is 43.
* **Transaction tax** (증권거래세) is ``floor(value × sell_tax_rate)``, sells only.
* Rates are applied as exact decimals (the rate as written): in binary floating
  point ``700_000 × 0.00015`` is ``104.999…`` and would truncate to 104, not 105.
  :func:`commission` and :func:`sell_tax` come from :mod:`engines.costs`, which the
  backtester uses too, so paper trading and backtests share one fee arithmetic.
* **Average price** (평균매입단가) is the cost-weighted average of buy prices
  *excluding* fees. A holding keeps its book ``cost`` as an integer (Σ qty × price
  of its buys), and ``avg_price = cost / qty``.
* A sell takes the sold shares' share of the book cost, ``cost × k / qty``
  rounded half up to the won; the remainder stays with the shares kept, so
  selling the rest of a position releases exactly the rest of its cost.
* **Realized P&L** of a sell = proceeds − commission − tax − cost basis. The buy
  commission is not in the basis (it is not in the average price either).
* Cash settles at once (no T+2): a sell's proceeds can buy at the next trade.
* **Reservations**: an open buy holds ``qty × price + commission`` of cash, at its
  limit price or, for a market buy, at the day's upper price limit (the highest
  price it can fill at, which is what KRX brokers reserve for 시장가 orders). An
  open sell holds its shares. So two open orders can never spend the same won or
  sell the same share, and a fill can never overdraw the account.

Invariant, checked by a property test: ``cash + Σ cost + buy commissions −
realized P&L`` always equals the starting cash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from brokers.base import (
    Fill,
    OrderRejected,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
)
from engines.costs import commission, sell_tax
from engines.costs import floor_rate as _floor_rate  # noqa: F401  (the old private name)
from engines.market import is_on_tick, step_ticks, tick_size

__all__ = [
    "FeeSchedule",
    "Holding",
    "Ledger",
    "PaperFill",
    "PaperOrder",
    "PaperOrderRejected",
    "Settlement",
    "commission",
    "limit_fill_price",
    "market_fill_price",
    "sell_tax",
    "validate_order",
]


class PaperOrderRejected(OrderRejected):
    """An order the paper account refuses, with a machine-readable reason.

    ``code`` (e.g. ``"insufficient_cash"``) and ``params`` let the service show a
    translated message (``error.paper_<code>``); the exception text is an English
    sentence for logs and for strategies that only read ``str(exc)``.
    """

    def __init__(self, code: str, message: str, **params: object) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Costs of trading on the paper account (``PAPER_*`` settings)."""

    commission_rate: float = 0.00015
    sell_tax_rate: float = 0.002
    slippage_ticks: int = 0

    def __post_init__(self) -> None:
        if self.commission_rate < 0 or self.sell_tax_rate < 0:
            raise ValueError("fee rates must be >= 0")
        if self.slippage_ticks < 0:
            raise ValueError("slippage_ticks must be >= 0")


def market_fill_price(
    side: OrderSide, trade_price: int, slippage_ticks: int, lower: int, upper: int
) -> int:
    """Price of a market order filled against a trade at ``trade_price``.

    Slippage moves the price ``slippage_ticks`` ticks against the trader (a buy
    pays more, a sell receives less), re-reading the tick size at band edges, and
    the result is clamped to the day's limits: nothing trades beyond them.
    """
    steps = slippage_ticks if side is OrderSide.BUY else -slippage_ticks
    return min(max(step_ticks(trade_price, steps), lower), upper)


def limit_fill_price(side: OrderSide, limit: int, trade_price: int, resting: bool) -> int | None:
    """Price a limit order fills at against a trade, or ``None`` if the trade does not reach it.

    A buy is reached by a trade at or below its limit, a sell by one at or above.
    A touch counts as a fill (optimistic: no queue position is modelled).

    * An order that is marketable on the first trade after it was placed
      (``resting`` False) takes that trade's price, which is at least as good as
      its limit: a buy limit of 75,000 entered while the stock trades at 70,000
      pays 70,000, as it would on the exchange.
    * An order that has rested in the book (a trade went by without reaching it)
      fills at its own limit price, even if the price then jumps through it: on
      the exchange the resting order is hit at its price before any trade beyond.
    """
    reached = trade_price <= limit if side is OrderSide.BUY else trade_price >= limit
    if not reached:
        return None
    return limit if resting else trade_price


def validate_order(
    side: OrderSide, order_type: OrderType, qty: int, price: int, lower: int, upper: int
) -> None:
    """Checks that need only the order and the day's limits. Raises :class:`PaperOrderRejected`.

    ``qty`` must be a positive ``int`` (``bool`` is refused too, it is an ``int``
    by accident). A limit price must be on the KRX tick grid of its band and
    within ``[lower, upper]``; a market order's price is ignored.
    """
    if isinstance(qty, bool) or not isinstance(qty, int):
        raise PaperOrderRejected("qty_not_integer", f"quantity must be a whole number, got {qty!r}")
    if qty <= 0:
        raise PaperOrderRejected(
            "qty_not_positive", f"quantity must be positive, got {qty}", qty=qty
        )
    if order_type is OrderType.MARKET:
        return
    if isinstance(price, bool) or not isinstance(price, int):
        raise PaperOrderRejected("price_not_integer", f"price must be whole won, got {price!r}")
    if price <= 0:
        raise PaperOrderRejected(
            "price_not_positive", f"limit price must be positive, got {price}", price=price
        )
    if not is_on_tick(price):
        size = tick_size(price)
        below = price - price % size
        raise PaperOrderRejected(
            "price_off_tick",
            f"limit price {price:,} is not on the KRX tick grid (tick {size:,} won): "
            f"use {below:,} or {below + size:,}",
            price=price,
            tick=size,
            below=below,
            above=below + size,
        )
    if not lower <= price <= upper:
        raise PaperOrderRejected(
            "price_beyond_limits",
            f"limit price {price:,} is outside today's price limits {lower:,} - {upper:,}",
            price=price,
            lower=lower,
            upper=upper,
        )


@dataclass(slots=True)
class Holding:
    """Shares of one symbol: ``cost`` is the book cost excluding fees (see module doc)."""

    qty: int
    cost: int

    @property
    def avg_price(self) -> float:
        return self.cost / self.qty if self.qty else 0.0


@dataclass(slots=True)
class PaperOrder:
    """An order as the paper account keeps it, open or finished.

    ``reserved_cash`` is what an open buy holds back (0 for sells and for
    finished orders). ``resting`` becomes True once a trade of the symbol went by
    without reaching a limit order; it decides the fill price (see
    :func:`limit_fill_price`) and is persisted so a restart keeps it.
    """

    order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    qty: int
    price: int
    created_at: datetime
    client_order_id: str = ""
    reserved_cash: int = 0
    state: OrderState = OrderState.OPEN
    resting: bool = False
    filled_qty: int = 0
    avg_fill_price: float = 0.0
    reason: str = ""

    @property
    def is_open(self) -> bool:
        return self.state in (OrderState.OPEN, OrderState.PARTIAL)

    def status(self) -> OrderStatus:
        return OrderStatus(
            order_id=self.order_id,
            symbol=self.symbol,
            side=self.side,
            order_type=self.order_type,
            qty=self.qty,
            price=self.price,
            filled_qty=self.filled_qty,
            avg_fill_price=self.avg_fill_price,
            state=self.state,
            reason=self.reason,
        )


@dataclass(frozen=True, slots=True)
class PaperFill:
    """One execution on the paper account. ``realized_pnl`` is ``None`` on buys."""

    order_id: str
    symbol: str
    side: OrderSide
    qty: int
    price: int
    ts: datetime
    commission: int
    tax: int
    realized_pnl: int | None = None

    @property
    def value(self) -> int:
        return self.qty * self.price

    def to_fill(self) -> Fill:
        return Fill(
            order_id=self.order_id,
            symbol=self.symbol,
            side=self.side,
            qty=self.qty,
            price=self.price,
            ts=self.ts,
            fee=self.commission,
            tax=self.tax,
        )


@dataclass(frozen=True, slots=True)
class Settlement:
    """What one fill does to the account, as deltas, so a store can apply it atomically.

    ``holding_after`` is the symbol's holding after the fill (``None`` when it was
    sold out). Deltas rather than new totals let a store write ``cash = cash +
    delta``, which stays right even if another process changed cash meanwhile.
    """

    fill: PaperFill
    cash_delta: int
    qty_delta: int
    cost_delta: int
    holding_after: Holding | None


@dataclass(slots=True)
class Ledger:
    """Cash, holdings and open orders of one paper account, with the order checks.

    Reserved cash and shares are kept as running sums, so checking an order and
    applying a fill cost O(1), not O(open orders).
    """

    cash: int
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    holdings: dict[str, Holding] = field(default_factory=dict)
    reserved_cash: int = 0
    reserved_qty: dict[str, int] = field(default_factory=dict)
    commission_paid: int = 0
    tax_paid: int = 0
    realized_pnl: int = 0

    @classmethod
    def restore(
        cls,
        cash: int,
        holdings: dict[str, Holding],
        open_orders: Iterable[PaperOrder],
        fees: FeeSchedule,
    ) -> Ledger:
        """Rebuild from persisted state: reservations are re-derived from the open orders."""
        ledger = cls(cash=cash, fees=fees, holdings={s: replace(h) for s, h in holdings.items()})
        for order in open_orders:
            ledger.hold(order)
        return ledger

    # ---- queries ----------------------------------------------------------------

    @property
    def available_cash(self) -> int:
        """Cash not held back by open buys: what a new buy may spend (주문가능금액)."""
        return self.cash - self.reserved_cash

    def available_qty(self, symbol: str) -> int:
        """Shares of ``symbol`` not already promised to open sells (매도가능수량)."""
        held = self.holdings.get(symbol)
        return (held.qty if held else 0) - self.reserved_qty.get(symbol, 0)

    def reservation(
        self, side: OrderSide, order_type: OrderType, qty: int, price: int, upper: int
    ) -> int:
        """Cash an order must hold while open: ``qty × price + commission`` for buys, 0 for sells.

        A market buy is reserved at ``upper`` (the day's upper limit): its fill
        price is clamped to that limit, so the reservation always covers the fill.
        """
        if side is OrderSide.SELL:
            return 0
        at = upper if order_type is OrderType.MARKET else price
        value = qty * at
        return value + commission(value, self.fees.commission_rate)

    # ---- orders -----------------------------------------------------------------

    def check(self, side: OrderSide, symbol: str, qty: int, reserve: int) -> None:
        """Refuse an order the account cannot cover. Raises :class:`PaperOrderRejected`."""
        if side is OrderSide.BUY:
            if reserve > self.available_cash:
                raise PaperOrderRejected(
                    "insufficient_cash",
                    f"not enough cash: the order needs {reserve:,} won including commission, "
                    f"{self.available_cash:,} won is available",
                    need=reserve,
                    available=self.available_cash,
                )
            return
        available = self.available_qty(symbol)
        if qty > available:
            held = self.holdings.get(symbol)
            raise PaperOrderRejected(
                "insufficient_shares",
                f"not enough shares of {symbol}: selling {qty:,}, {available:,} available "
                f"({held.qty if held else 0:,} held, the rest in open sell orders)",
                qty=qty,
                available=available,
                held=held.qty if held else 0,
            )

    def hold(self, order: PaperOrder) -> None:
        """Reserve cash (buy) or shares (sell) for an open order."""
        if order.side is OrderSide.BUY:
            self.reserved_cash += order.reserved_cash
        else:
            self.reserved_qty[order.symbol] = self.reserved_qty.get(order.symbol, 0) + order.qty

    def release(self, order: PaperOrder) -> None:
        """Give back what :meth:`hold` reserved (on fill or cancel)."""
        if order.side is OrderSide.BUY:
            self.reserved_cash -= order.reserved_cash
        else:
            left = self.reserved_qty.get(order.symbol, 0) - order.qty
            if left > 0:
                self.reserved_qty[order.symbol] = left
            else:
                self.reserved_qty.pop(order.symbol, None)

    # ---- fills ------------------------------------------------------------------

    def settle(self, order: PaperOrder, price: int, ts: datetime) -> Settlement:
        """Compute (do not apply) the whole-quantity fill of ``order`` at ``price``."""
        value = order.qty * price
        fee = commission(value, self.fees.commission_rate)
        held = self.holdings.get(order.symbol)
        if order.side is OrderSide.BUY:
            after = Holding(
                (held.qty if held else 0) + order.qty, (held.cost if held else 0) + value
            )
            fill = PaperFill(order.order_id, order.symbol, order.side, order.qty, price, ts, fee, 0)
            return Settlement(fill, -(value + fee), order.qty, value, after)
        if held is None or held.qty < order.qty:
            raise PaperOrderRejected(
                "insufficient_shares",
                f"cannot sell {order.qty:,} {order.symbol}: {held.qty if held else 0:,} held",
                qty=order.qty,
                available=held.qty if held else 0,
                held=held.qty if held else 0,
            )
        tax = sell_tax(value, self.fees.sell_tax_rate)
        # cost × k / qty, rounded half up, in integers.
        basis = (2 * held.cost * order.qty + held.qty) // (2 * held.qty)
        remaining = held.qty - order.qty
        after = Holding(remaining, held.cost - basis) if remaining else None
        realized = value - fee - tax - basis
        fill = PaperFill(
            order.order_id, order.symbol, order.side, order.qty, price, ts, fee, tax, realized
        )
        return Settlement(fill, value - fee - tax, -order.qty, -basis, after)

    def apply(self, order: PaperOrder, settlement: Settlement) -> None:
        """Book a settlement computed by :meth:`settle` and finish the order."""
        self.release(order)
        fill = settlement.fill
        self.cash += settlement.cash_delta
        if settlement.holding_after is None:
            self.holdings.pop(fill.symbol, None)
        else:
            self.holdings[fill.symbol] = settlement.holding_after
        self.commission_paid += fill.commission
        self.tax_paid += fill.tax
        if fill.realized_pnl is not None:
            self.realized_pnl += fill.realized_pnl
        order.state = OrderState.FILLED
        order.filled_qty = fill.qty
        order.avg_fill_price = float(fill.price)
        order.reserved_cash = 0
