"""What a backtest is asked to do and what it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from engines.backtest.metrics import Metrics, drawdown
from engines.costs import CostModel
from engines.strategies.base import Signal

__all__ = ["SIZING_MODES", "BacktestCancelled", "BacktestConfig", "BacktestResult", "Trade"]

SIZING_MODES = ("signal", "fraction_of_available")
"""``signal``: :func:`engines.strategies.sizing.shares_for`, what the paper and live
executors use. ``fraction_of_available``: backtesting.py's sizing of ``buy()``
(:func:`~engines.strategies.sizing.shares_like_backtesting_py`), for the parity check."""


class BacktestCancelled(Exception):
    """``should_stop`` returned True: the run was abandoned and has no result."""


@dataclass(frozen=True)
class BacktestConfig:
    """How to simulate: starting cash, costs, sizing and order lifetime.

    ``limit_valid_bars``: a limit order not reached within that many bars after its
    signal is cancelled (1: a day order on daily bars, as KRX orders are).
    ``periods_per_year`` overrides the annualisation derived from the timeframe.
    """

    cash: float = 10_000_000
    costs: CostModel = field(default_factory=CostModel)
    sizing: str = "signal"
    limit_valid_bars: int = 1
    periods_per_year: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.cash, bool) or not isinstance(self.cash, int | float):
            raise ValueError(f"cash must be a number, got {self.cash!r}")
        if not math.isfinite(self.cash) or self.cash <= 0:
            raise ValueError(f"cash must be positive, got {self.cash!r}")
        if not isinstance(self.costs, CostModel):
            raise ValueError("costs must be a CostModel")
        if self.sizing not in SIZING_MODES:
            raise ValueError(
                f"sizing must be one of {', '.join(SIZING_MODES)}, got {self.sizing!r}"
            )
        if isinstance(self.limit_valid_bars, bool) or not isinstance(self.limit_valid_bars, int):
            raise ValueError(f"limit_valid_bars must be an int, got {self.limit_valid_bars!r}")
        if self.limit_valid_bars < 1:
            raise ValueError(f"limit_valid_bars must be >= 1, got {self.limit_valid_bars}")
        ppy = self.periods_per_year
        if ppy is not None and (not math.isfinite(ppy) or ppy <= 0):
            raise ValueError(f"periods_per_year must be positive, got {ppy!r}")


@dataclass(slots=True)
class Trade:
    """One round trip of one lot, or the part of a lot a sell closed (FIFO).

    Bars are indices into the symbol's own series. ``fees`` are the commission and
    tax attributable to the shares of this trade (entry and exit); ``pnl`` is net of
    them and ``return_pct`` is ``pnl / (qty × entry_price)``, a fraction (0.05 is
    +5%). A trade still open at the end has no exit; its ``pnl`` is marked at the
    last close, net of the entry commission only.
    """

    symbol: str
    entry_bar: int
    exit_bar: int | None
    entry_time: datetime
    exit_time: datetime | None
    entry_price: float
    exit_price: float | None
    qty: int
    pnl: float
    return_pct: float
    fees: float
    bars_held: int

    @property
    def is_open(self) -> bool:
        return self.exit_bar is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "entry_bar": self.entry_bar,
            "exit_bar": self.exit_bar,
            "entry_time": self.entry_time.isoformat(),
            "exit_time": self.exit_time.isoformat() if self.exit_time else None,
            "entry_price": _num(self.entry_price),
            "exit_price": _num(self.exit_price),
            "qty": self.qty,
            "pnl": _num(self.pnl),
            "return_pct": _num(self.return_pct),
            "fees": _num(self.fees),
            "bars_held": self.bars_held,
        }


def _num(value: float | None) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return value if math.isfinite(value) else None


class BacktestResult:
    """Metrics, trades, curves and signals of one run.

    The equity and drawdown curves cover the bars the metrics cover: from the last
    warm-up bar (the starting capital) to the end. They are built on first access,
    so an optimiser that reads only the metrics does not pay for them.
    """

    __slots__ = (
        "_curve",
        "_dd",
        "_equity",
        "_times",
        "discarded_signals",
        "final_equity",
        "metrics",
        "signals",
        "skipped_orders",
        "trades",
        "warmup_bars",
    )

    def __init__(
        self,
        *,
        metrics: Metrics,
        trades: list[Trade],
        times: list[datetime],
        equity: np.ndarray,
        signals: list[Signal],
        warmup_bars: int,
        final_equity: float,
        skipped_orders: int = 0,
        discarded_signals: int = 0,
    ) -> None:
        self.metrics = metrics
        self.trades = trades
        self._times = times
        self._equity = equity
        self.signals = signals
        self.warmup_bars = warmup_bars
        self.final_equity = final_equity
        self.skipped_orders = skipped_orders
        """Orders that sized to 0 shares (no cash, nothing to sell) or whose limit was
        never reached."""
        self.discarded_signals = discarded_signals
        """Buy/sell signals emitted during warm-up, dropped as the live desk drops them."""
        self._curve: list[tuple[datetime, float]] | None = None
        self._dd: list[tuple[datetime, float]] | None = None

    @property
    def equity_curve(self) -> list[tuple[datetime, float]]:
        if self._curve is None:
            self._curve = list(zip(self._times, self._equity.tolist(), strict=True))
        return self._curve

    @property
    def drawdown_curve(self) -> list[tuple[datetime, float]]:
        if self._dd is None:
            self._dd = list(zip(self._times, drawdown(self._equity).tolist(), strict=True))
        return self._dd

    @property
    def equity_values(self) -> np.ndarray:
        """The equity curve's values alone (a copy)."""
        return self._equity.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: datetimes as ISO strings, no NaN or infinity."""
        return {
            "metrics": self.metrics.to_dict(),
            "final_equity": _num(self.final_equity),
            "warmup_bars": self.warmup_bars,
            "skipped_orders": self.skipped_orders,
            "discarded_signals": self.discarded_signals,
            "trades": [t.to_dict() for t in self.trades],
            "equity_curve": [[t.isoformat(), _num(v)] for t, v in self.equity_curve],
            "drawdown_curve": [[t.isoformat(), _num(v)] for t, v in self.drawdown_curve],
            "signals": [_signal_dict(s) for s in self.signals],
        }


def _signal_dict(sig: Signal) -> dict[str, Any]:
    return {
        "action": str(sig.action),
        "symbol": sig.symbol,
        "qty": sig.qty,
        "fraction": sig.fraction,
        "order_kind": str(sig.order_kind),
        "limit_price": sig.limit_price,
        "reason": sig.reason,
        "reason_params": {k: _json_scalar(v) for k, v in sig.reason_params},
        "key": sig.key,
    }


def _json_scalar(value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)
