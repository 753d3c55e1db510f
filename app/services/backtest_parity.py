"""The parity report: a backtest of one attachment set beside what it really did.

Split from :mod:`app.services.backtests` (which re-exports :func:`parity_compare` and
:class:`ActualOrder`, and queues and finishes the parity runs). Here is the part that
knows nothing about runs: reading the attachment's actual orders with their fill
prices, and matching them to the backtest's fills by signal key, which names the
symbol, the bar and the action, so both sides talk about the same bar.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.paper import PaperFillRow
from app.models.strategies import StrategyOrder
from engines.market import Candle

log = logging.getLogger(__name__)


def _key_time(key: str) -> datetime | None:
    """The bar start in a signal key ``symbol|timeframe|start|n|action``."""
    parts = key.split("|")
    if len(parts) < 5:
        return None
    try:
        return datetime.fromisoformat(parts[2])
    except ValueError:
        return None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class ActualOrder:
    """What the attachment really did for one signal."""

    signal_key: str
    side: str
    qty: int
    price: float | None  # the fill's average price; the limit price if no fill is known
    state: str
    reason: str


def _backtest_fills(
    output: Mapping[str, Any], candles: Sequence[Candle]
) -> dict[str, tuple[float | None, int | None]]:
    """Signal key -> (fill price, qty) in the backtest.

    The engine fills a signal at the next bar; the trade list says at what price
    and size. A signal with no trade (a sell while flat, the last bar) gets the
    next bar's open as the price it would have filled at, and no quantity.
    """
    next_bar: dict[datetime, Candle] = {}
    for prev, nxt in zip(candles, candles[1:], strict=False):
        next_bar[prev.start] = nxt
    entries: dict[tuple[str, datetime], tuple[float, int]] = {}
    exits: dict[tuple[str, datetime], tuple[float, int]] = {}
    for t in output.get("trades") or []:
        et, xt = _parse_time(t.get("entry_time")), _parse_time(t.get("exit_time"))
        if et is not None and t.get("entry_price") is not None:
            entries[(t["symbol"], et)] = (float(t["entry_price"]), int(t.get("qty") or 0))
        if xt is not None and t.get("exit_price") is not None:
            exits[(t["symbol"], xt)] = (float(t["exit_price"]), int(t.get("qty") or 0))
    out: dict[str, tuple[float | None, int | None]] = {}
    for s in output.get("signals") or []:
        bar = _key_time(s["key"])
        nxt = next_bar.get(bar) if bar is not None else None
        if nxt is None:
            out[s["key"]] = (None, None)
            continue
        book = entries if s["action"] == "buy" else exits
        found = book.get((s["symbol"], nxt.start)) or book.get((s["symbol"], bar))
        out[s["key"]] = found if found else (float(nxt.open), None)
    return out


def _round_trip_return(fills: Sequence[tuple[str, int, float, float]]) -> float | None:
    """Return on the money put in, over closed round trips: sum of P&L / sum of buy value.

    ``fills``: (side, qty, price, fees) in time order, one symbol. A sell closes
    shares bought before it at their average price; shares still held at the end
    are left out on both sides, so an open position neither helps nor hurts.
    """
    held = 0
    cost = 0.0
    pnl = 0.0
    invested = 0.0
    for side, qty, price, fees in fills:
        if qty <= 0:
            continue
        if side == "buy":
            held += qty
            cost += qty * price + fees
        elif held > 0:
            sold = min(qty, held)
            avg = cost / held
            pnl += sold * price - fees - sold * avg
            invested += sold * avg
            cost -= sold * avg
            held -= sold
    return pnl / invested if invested else None


def parity_compare(
    output: Mapping[str, Any],
    candles: Sequence[Candle],
    actual: Sequence[ActualOrder],
    window_start: datetime,
) -> dict[str, Any]:
    """The parity table and its summary: pure, so it is tested on constructed cases.

    A row per signal key seen on either side from ``window_start`` on:
    ``matched`` (both, filled), ``refused`` (the desk refused or the broker
    rejected it: limits, kill switch, cash), ``missed`` (the backtest traded, the
    attachment placed nothing) or ``extra`` (an order the backtest would not have
    placed). Slippage is signed so that positive always costs the trader: paid
    more on a buy, received less on a sell.
    """
    bt = _backtest_fills(output, candles)
    sig_action = {s["key"]: s["action"] for s in output.get("signals") or []}
    real = {o.signal_key: o for o in actual}
    keys = [k for k in dict.fromkeys([*sig_action, *real]) if sig_action.get(k, "") != "alert"]

    def in_window(key: str) -> bool:
        t = _key_time(key)
        return t is None or t >= window_start

    rows: list[dict[str, Any]] = []
    slips: list[float] = []
    for key in sorted(
        (k for k in keys if in_window(k)), key=lambda k: (_key_time(k) or window_start, k)
    ):
        order = real.get(key)
        action = sig_action.get(key) or (order.side if order else "")
        bt_price, bt_qty = bt.get(key, (None, None))
        row: dict[str, Any] = {
            "key": key,
            "time": (_key_time(key) or window_start).isoformat(),
            "symbol": key.split("|", 1)[0],
            "action": action,
            "bt_price": bt_price,
            "bt_qty": bt_qty,
            "actual_price": order.price if order else None,
            "actual_qty": order.qty if order else None,
            "actual_state": order.state if order else "",
            "reason": order.reason if order else "",
            "slip_won": None,
            "slip_pct": None,
        }
        if key not in sig_action:
            row["status"] = "extra"
        elif order is None:
            row["status"] = "missed"
        elif order.state in ("rejected", "refused") or order.price is None:
            row["status"] = "refused" if order.state in ("rejected", "refused") else "unfilled"
        else:
            row["status"] = "matched"
            if bt_price:
                sign = 1 if action == "buy" else -1
                won = sign * (order.price - bt_price)
                row["slip_won"] = round(won, 2)
                row["slip_pct"] = round(won / bt_price * 100, 4)
                slips.append(row["slip_pct"])
        rows.append(row)

    def fills_of(side_price_qty: Iterable[tuple[str, int | None, float | None]]) -> float | None:
        fills = [(s, int(q), float(p), 0.0) for s, q, p in side_price_qty if q and p]
        return _round_trip_return(fills)

    bt_trades = [
        t
        for t in output.get("trades") or []
        if (et := _parse_time(t.get("entry_time"))) is not None and et >= window_start
    ]
    bt_invested = sum(
        float(t["entry_price"]) * int(t["qty"]) for t in bt_trades if t.get("exit_time")
    )
    bt_pnl = sum(float(t.get("pnl") or 0.0) for t in bt_trades if t.get("exit_time"))
    counts = {
        s: sum(1 for r in rows if r["status"] == s)
        for s in ("matched", "missed", "extra", "refused", "unfilled")
    }
    return {
        "rows": rows,
        "summary": {
            **counts,
            "backtest_signals": sum(1 for r in rows if r["status"] != "extra"),
            "actual_orders": sum(1 for r in rows if r["actual_state"]),
            "backtest_return": (bt_pnl / bt_invested) if bt_invested else None,
            "actual_return": fills_of(
                (r["action"], r["actual_qty"], r["actual_price"])
                for r in rows
                if r["status"] in ("matched", "extra")
            ),
            "avg_slip_pct": (sum(slips) / len(slips)) if slips else None,
            "window_start": window_start.isoformat(),
        },
    }


async def _actual_orders(
    session: AsyncSession, user_id: int, attachment_id: int
) -> list[ActualOrder]:
    """The attachment's orders (refusals included) with their fill prices: paper fills
    are looked up by the paper order id the desk recorded; without a known fill (live)
    the limit price stands in, and a market order without one has no price."""
    stmt = select(StrategyOrder).where(
        StrategyOrder.user_id == user_id, StrategyOrder.attachment_id == attachment_id
    )
    orders = (await session.exec(stmt)).all()
    paper_ids = [
        int(o.broker_order_id)
        for o in orders
        if o.mode == "paper" and str(o.broker_order_id or "").isdigit()
    ]
    fills: dict[int, tuple[int, float]] = {}
    if paper_ids:
        found = await session.exec(
            select(PaperFillRow).where(col(PaperFillRow.order_id).in_(paper_ids))
        )
        for f in found.all():
            qty, value = fills.get(f.order_id, (0, 0.0))
            fills[f.order_id] = (qty + f.qty, value + f.qty * f.price)
    out: list[ActualOrder] = []
    for o in orders:
        price: float | None = float(o.price) if o.price else None
        qty = int(o.qty)
        ref = str(o.broker_order_id or "")
        if o.mode == "paper" and ref.isdigit() and int(ref) in fills:
            filled, value = fills[int(ref)]
            price, qty = value / filled, filled
        out.append(ActualOrder(o.signal_key, o.side, qty, price, o.state, o.reason or o.error))
    return out
