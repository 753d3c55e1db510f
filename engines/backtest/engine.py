"""The event-driven backtester: the live Strategy classes, bar by bar, on stored candles.

Each symbol gets its own strategy instance behind a :class:`StrategyHost`, exactly as
the paper desk and the live executor run it; all symbols share one cash account.
Bars of all symbols are merged in time order (ties in the order of ``data``). Per
bar of a symbol:

1. orders pending from that symbol's previous bar fill: a market order at this
   bar's open (moved by the cost model's slippage), a limit order at its limit if
   the bar's range reaches it, or at the open if the bar gaps through it; a limit
   not reached within ``limit_valid_bars`` is cancelled;
2. the strategy sees the closed bar (``StrategyHost.on_candle``) and may signal;
3. its buy and sell signals wait for the symbol's next bar. A signal on the last bar
   never fills. Alerts are recorded only.

Equity is marked at every close. Long only, like a KRX retail cash account: a sell
reduces or closes a long position, a sell while flat does nothing. Sizing is
:func:`engines.strategies.sizing.shares_for` (what the executors use) or, for the
parity check, backtesting.py's own (``sizing="fraction_of_available"``).

Warm-up: buy and sell signals a strategy emits before its warm-up is over (the
host's ``warmup`` bars; the last warm-up bar may signal, as a cross needs the bar
before) are dropped, as the live desk drops them, so no trade opens during warm-up.
The metrics and the curves start at the last warm-up bar, whose equity is the
starting cash.

Speed: the per-bar path is the host call plus two truth tests. Equity is not summed
per bar: cash and positions change only at fills, which are logged, and the curve
is rebuilt from the log and the closes with numpy after the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import chain

import numpy as np

from engines.backtest.data import checked_with_times, periods_per_year
from engines.backtest.metrics import compute_metrics
from engines.backtest.results import BacktestCancelled, BacktestConfig, BacktestResult, Trade
from engines.market import Candle, Direction, round_to_tick
from engines.strategies.base import Action, OrderKind, Signal, Strategy, StrategyHost
from engines.strategies.sizing import shares_for, shares_like_backtesting_py

__all__ = ["run_backtest"]

CHUNK = 4096
"""Most bars between two progress reports / cancellation checks."""


def _chunk(n: int) -> int:
    """Bars per chunk for a run of ``n`` bars: at least 50 reports, so a page's progress
    bar moves in steps of 2% or less, and at most ``CHUNK`` bars between checks."""
    return max(1, min(CHUNK, n // 50))


class _Lot:
    """Shares bought by one fill, not yet sold (FIFO), with their share of the commission."""

    __slots__ = ("entry_bar", "entry_time", "fee", "price", "qty")

    def __init__(self, entry_bar: int, entry_time: datetime, price: float, qty: int, fee: float):
        self.entry_bar = entry_bar
        self.entry_time = entry_time
        self.price = price
        self.qty = qty
        self.fee = fee


class _Order:
    __slots__ = ("buy", "expires", "limit", "signal")

    def __init__(self, signal: Signal, buy: bool, limit: float | None, expires: int) -> None:
        self.signal = signal
        self.buy = buy
        self.limit = limit
        self.expires = expires


class _Book:
    """One symbol: its candles, its strategy host, its position and its fill log."""

    __slots__ = (
        "candles",
        "cost",
        "ctx",
        "fill_bars",
        "fill_qty",
        "host",
        "int_prices",
        "lots",
        "on_candle",
        "pending",
        "qty",
        "symbol",
        "times",
        "ts_index",
        "warmup",
    )

    def __init__(
        self, symbol: str, candles: list[Candle], times: list[datetime], host: StrategyHost
    ) -> None:
        self.symbol = symbol
        self.candles = candles
        self.times = times
        self.host = host
        self.ctx = host.ctx
        self.on_candle = host.on_candle
        self.warmup = host.warmup
        self.int_prices = isinstance(candles[0].open, int)
        self.pending: list[_Order] = []
        self.qty = 0
        self.cost: float = 0
        self.lots: deque[_Lot] = deque()
        self.fill_bars: list[int] = []  # global bar index of each fill
        self.fill_qty: list[int] = []  # position after it
        self.ts_index: list[int] | None = None  # own bar -> global bar (None: identical)

    @property
    def avg_price(self) -> float:
        return self.cost / self.qty if self.qty else 0.0


class _Account:
    """The shared cash account as a strategy sees it (``engines.strategies.base.Account``)."""

    __slots__ = ("_books", "_held", "cash")

    def __init__(self, cash: float) -> None:
        self.cash = cash
        self._books: dict[str, _Book] = {}
        self._held: dict[str, _Book] = {}

    def position(self, symbol: str) -> tuple[int, float]:
        book = self._books.get(symbol)
        if book is None or not book.qty:
            return (0, 0.0)
        return (book.qty, book.avg_price)

    @property
    def equity(self) -> float:
        """Cash plus every holding at its last close (before the bar being filled)."""
        total = self.cash
        for book in self._held.values():
            total += book.qty * book.ctx.candle.close
        return total


class _Simulation:
    def __init__(
        self,
        factory: Callable[[], Strategy],
        series: dict[str, tuple[list[Candle], list[datetime]]],
        config: BacktestConfig,
    ) -> None:
        self.config = config
        self.costs = config.costs
        self.slippage = bool(config.costs.slippage_ticks or config.costs.slippage_pct)
        self.bt_sizing = config.sizing == "fraction_of_available"
        self.limit_valid = config.limit_valid_bars
        self.account = _Account(config.cash)
        self.books: list[_Book] = []
        for symbol, (candles, times) in series.items():
            strategy = factory()
            if not isinstance(strategy, Strategy):
                raise TypeError(
                    f"the strategy factory returned {type(strategy).__name__}, not a Strategy"
                )
            book = _Book(symbol, candles, times, StrategyHost(strategy, symbol, self.account))
            if config.costs.slippage_ticks and not book.int_prices:
                raise ValueError(
                    f"{symbol}: slippage_ticks needs whole-won (int) prices; "
                    "use slippage_pct for fractional prices"
                )
            self.books.append(book)
            self.account._books[symbol] = book
        self.signals: list[Signal] = []
        self.cash_bars: list[int] = []
        self.cash_after: list[float] = []
        self.closed: list[Trade] = []
        self.skipped = 0
        self.discarded = 0

    # ---- the loops ----------------------------------------------------------------

    def run_single(
        self,
        progress: Callable[[int, int], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """One symbol: its bars are the global bars, no merging."""
        book = self.books[0]
        candles = book.candles
        n = len(candles)
        on_candle = book.on_candle
        pending = book.pending
        fill = self._fill
        accept = self._accept
        step = _chunk(n)
        for lo in range(0, n, step):
            if should_stop is not None and should_stop():
                raise BacktestCancelled
            for i, c in enumerate(candles[lo : lo + step], lo):
                if pending:
                    fill(book, c, i, i)
                sigs = on_candle(c)
                if sigs:
                    accept(book, sigs, i)
            if progress is not None:
                progress(min(lo + step, n), n)

    def run_merged(
        self,
        progress: Callable[[int, int], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> list[datetime]:
        """Several symbols (or one, in tests): bars merged in time order. Returns the calendar."""
        times, candles, owners, bars, slots = _merge(self.books)
        n = len(candles)
        fill = self._fill
        accept = self._accept
        step = _chunk(n)
        for lo in range(0, n, step):
            if should_stop is not None and should_stop():
                raise BacktestCancelled
            hi = lo + step
            chunk = zip(candles[lo:hi], owners[lo:hi], bars[lo:hi], slots[lo:hi], strict=True)
            for c, book, i, g in chunk:
                if book.pending:
                    fill(book, c, i, g)
                sigs = book.on_candle(c)
                if sigs:
                    accept(book, sigs, i)
            if progress is not None:
                progress(min(lo + step, n), n)
        return times

    # ---- signals and fills --------------------------------------------------------

    def _accept(self, book: _Book, sigs: list[Signal], i: int) -> None:
        self.signals.extend(sigs)
        for sig in sigs:
            action = sig.action
            if action is Action.ALERT:
                continue
            if i < book.warmup - 1:
                self.discarded += 1
                continue
            buy = action is Action.BUY
            limit = None
            if sig.order_kind is OrderKind.LIMIT:
                limit = sig.limit_price
                if book.int_prices:
                    limit = _snap_limit(limit, buy)  # type: ignore[arg-type]
            book.pending.append(_Order(sig, buy, limit, i + self.limit_valid))

    def _fill(self, book: _Book, c: Candle, i: int, g: int) -> None:
        pending = book.pending
        orders = list(pending)
        pending.clear()
        for order in orders:
            limit = order.limit
            if limit is None:
                price = c.open
                if self.slippage:
                    price = self.costs.market_price(price, order.buy)
            elif order.buy:
                price = c.open if c.open <= limit else (limit if c.low <= limit else None)
            else:
                price = c.open if c.open >= limit else (limit if c.high >= limit else None)
            if price is None:
                if i < order.expires:
                    pending.append(order)
                else:
                    self.skipped += 1
                continue
            if order.buy:
                self._buy(book, order.signal, price, c, i, g)
            else:
                self._sell(book, order.signal, price, c, i, g)

    def _buy(self, book: _Book, sig: Signal, price: float, c: Candle, i: int, g: int) -> None:
        account = self.account
        costs = self.costs
        if self.bt_sizing:
            qty = shares_like_backtesting_py(
                sig, price, available=max(account.cash, 0), position=book.qty, costs=costs
            )
        else:
            qty = shares_for(
                sig,
                price,
                cash=account.cash,
                equity=account.equity,
                position=book.qty,
                costs=costs,
            )
        if qty <= 0:
            self.skipped += 1
            return
        value = qty * price
        fee = costs.commission(value)
        account.cash -= value + fee
        book.qty += qty
        book.cost += value
        book.lots.append(_Lot(i, c.start, price, qty, fee))
        account._held[book.symbol] = book
        self._log(book, g)

    def _sell(self, book: _Book, sig: Signal, price: float, c: Candle, i: int, g: int) -> None:
        held = book.qty
        costs = self.costs
        if self.bt_sizing:
            qty = shares_like_backtesting_py(
                sig, price, available=self.account.cash, position=held, costs=costs
            )
        else:
            qty = shares_for(
                sig, price, cash=self.account.cash, equity=0.0, position=held, costs=costs
            )
        if qty <= 0:
            return  # flat: a sell does nothing
        value = qty * price
        fee = costs.commission(value)
        tax = costs.sell_tax(value)
        self.account.cash += value - fee - tax
        # Book cost on the average-cost basis, as the paper account keeps it.
        if qty == held:
            book.cost = 0
        elif isinstance(book.cost, int):
            book.cost -= (2 * book.cost * qty + held) // (2 * held)
        else:
            book.cost -= book.cost * qty / held
        book.qty = held - qty
        if not book.qty:
            del self.account._held[book.symbol]
        self._close_lots(book, qty, price, fee + tax, c, i)
        self._log(book, g)

    def _close_lots(
        self, book: _Book, qty: int, price: float, exit_costs: float, c: Candle, i: int
    ) -> None:
        """Turn the sold shares into trades, first in first out, sharing the costs by qty."""
        lots = book.lots
        left = qty
        while left:
            lot = lots[0]
            take = lot.qty if lot.qty <= left else left
            if take == lot.qty:
                entry_fee = lot.fee
                lots.popleft()
            else:
                entry_fee = lot.fee * take / lot.qty
                lot.fee -= entry_fee
                lot.qty -= take
            exit_fee = exit_costs if take == qty else exit_costs * take / qty
            fees = entry_fee + exit_fee
            pnl = take * (price - lot.price) - fees
            self.closed.append(
                Trade(
                    symbol=book.symbol,
                    entry_bar=lot.entry_bar,
                    exit_bar=i,
                    entry_time=lot.entry_time,
                    exit_time=c.start,
                    entry_price=lot.price,
                    exit_price=price,
                    qty=take,
                    pnl=pnl,
                    return_pct=pnl / (take * lot.price),
                    fees=fees,
                    bars_held=i - lot.entry_bar,
                )
            )
            left -= take

    def _log(self, book: _Book, g: int) -> None:
        self.cash_bars.append(g)
        self.cash_after.append(self.account.cash)
        book.fill_bars.append(g)
        book.fill_qty.append(book.qty)

    # ---- results ------------------------------------------------------------------

    def result(self, times: list[datetime], ppy: float) -> BacktestResult:
        n_times = len(times)
        cash0 = self.config.cash
        equity = _steps(n_times, self.cash_bars, self.cash_after, cash0)
        held_any = np.zeros(n_times, dtype=bool)
        warmup = 0
        base = n_times - 1
        bench: list[float] = []
        open_trades: list[Trade] = []
        final = self.account.cash
        for book in self.books:
            candles = book.candles
            n = len(candles)
            ts = book.ts_index
            warmup = max(warmup, book.warmup)
            own_base = max(book.warmup - 1, 0)
            if own_base < n:
                g_base = ts[own_base] if ts is not None else own_base
                base = min(base, g_base)
                bench.append(candles[-1].close / candles[own_base].close - 1.0)
            final += book.qty * candles[-1].close
            if not book.fill_bars:
                continue
            qty = _steps(n_times, book.fill_bars, book.fill_qty, 0)
            closes = np.fromiter((c.close for c in candles), dtype=float, count=n)
            if ts is not None:
                aligned = np.full(n_times, np.nan)
                aligned[np.asarray(ts)] = closes
                closes = _ffill(aligned)
            equity += qty * closes
            held_any |= qty > 0
            open_trades.extend(_open_trades(book))
        for t in self.closed:
            if t.entry_bar < self._warmup_of(t.symbol):
                raise RuntimeError(f"internal error: a trade of {t.symbol} opened during warm-up")
        curve = equity[base:]
        periods = len(curve) - 1
        exposure = float(held_any[base + 1 :].mean()) if periods > 0 else None
        metrics = compute_metrics(
            curve,
            [t.return_pct for t in self.closed],
            [t.pnl for t in self.closed],
            periods_per_year=ppy,
            exposure=exposure,
            benchmark_return=sum(bench) / len(bench) if bench else None,
            open_trades=len(open_trades),
        )
        return BacktestResult(
            metrics=metrics,
            trades=self.closed + open_trades,
            times=times[base:],
            equity=curve,
            signals=self.signals,
            warmup_bars=warmup,
            final_equity=final,
            skipped_orders=self.skipped,
            discarded_signals=self.discarded,
        )

    def _warmup_of(self, symbol: str) -> int:
        return self.account._books[symbol].warmup


def _merge(
    books: list[_Book],
) -> tuple[list[datetime], list[Candle], list[_Book], list[int], list[int]]:
    """Every bar of every book in (time, book order): the calendar, then per bar in that
    order its candle, book, own bar index and calendar slot. Sets each ``ts_index``.

    Sorted with numpy on float POSIX timestamps: hashing or comparing 10^5 tz-aware
    datetimes in Python costs more than the simulation. A float holds such a time to
    well under a microsecond, so distinct bar times stay distinct.
    """
    lengths = [len(book.times) for book in books]
    stamps = np.concatenate(
        [
            np.fromiter(map(datetime.timestamp, book.times), float, n)
            for book, n in zip(books, lengths, strict=True)
        ]
    )
    owner = np.repeat(np.arange(len(books)), lengths)
    own_bar = np.concatenate([np.arange(n) for n in lengths])
    order = np.lexsort((owner, stamps))  # by time, then book
    ordered = stamps[order]
    new_time = np.empty(len(order), dtype=bool)
    new_time[0] = True
    new_time[1:] = ordered[1:] != ordered[:-1]
    slot = np.cumsum(new_time) - 1
    all_times = list(chain.from_iterable(book.times for book in books))
    times = [all_times[j] for j in order[new_time].tolist()]
    slot_of = np.empty(len(order), dtype=np.int64)
    slot_of[order] = slot
    offset = 0
    for book, n in zip(books, lengths, strict=True):
        book.ts_index = slot_of[offset : offset + n].tolist()
        offset += n
    everything = list(chain.from_iterable(book.candles for book in books))
    seq = order.tolist()
    return (
        times,
        [everything[j] for j in seq],
        [books[k] for k in owner[order].tolist()],
        own_bar[order].tolist(),
        slot.tolist(),
    )


def _open_trades(book: _Book) -> list[Trade]:
    """The lots still held at the end, marked at the last close."""
    last = len(book.candles) - 1
    close = book.candles[-1].close
    return [
        Trade(
            symbol=book.symbol,
            entry_bar=lot.entry_bar,
            exit_bar=None,
            entry_time=lot.entry_time,
            exit_time=None,
            entry_price=lot.price,
            exit_price=None,
            qty=lot.qty,
            pnl=lot.qty * (close - lot.price) - lot.fee,
            return_pct=(lot.qty * (close - lot.price) - lot.fee) / (lot.qty * lot.price),
            fees=lot.fee,
            bars_held=last - lot.entry_bar,
        )
        for lot in book.lots
    ]


def _steps(n: int, at: list[int], values: list[float], initial: float) -> np.ndarray:
    """A step function over ``n`` bars: ``initial``, then ``values[k]`` from bar ``at[k]``.

    Several changes on one bar: the last wins (it is the state after that bar's fills).
    """
    if not at:
        return np.full(n, float(initial))
    where = np.searchsorted(np.asarray(at), np.arange(n), side="right")
    levels = np.empty(len(values) + 1, dtype=float)
    levels[0] = initial
    levels[1:] = values
    return levels[where]


def _ffill(values: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN value forward; leading NaNs become 0 (nothing held then)."""
    idx = np.where(np.isnan(values), 0, np.arange(len(values)))
    np.maximum.accumulate(idx, out=idx)
    out = values[idx]
    return np.nan_to_num(out, nan=0.0)


def _snap_limit(limit: float, buy: bool) -> int:
    """A limit price onto the KRX tick grid, never to the trader's advantage."""
    if buy:
        whole = int(limit // 1)
        return round_to_tick(max(whole, 1), Direction.DOWN)
    whole = -int(-limit // 1)
    return round_to_tick(max(whole, 1), Direction.UP)


def run_backtest(
    strategy: Callable[[], Strategy],
    data: Mapping[str, Sequence[Candle]],
    config: BacktestConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BacktestResult:
    """Run ``strategy`` (a zero-argument factory, one instance per symbol) over ``data``.

    ``progress(done_bars, total_bars)`` is called at least 50 times (every 2%);
    ``should_stop()`` is asked as often and, when it returns True, the run raises
    :class:`BacktestCancelled`. A strategy's exceptions propagate unchanged
    (``LookAheadError`` included): a backtest that swallowed them would report
    results of a strategy that does not work.
    """
    config = config or BacktestConfig()
    series = checked_with_times(data)
    sim = _Simulation(strategy, series, config)
    first = sim.books[0]
    ppy = config.periods_per_year or periods_per_year(first.candles[0].timeframe)
    if len(sim.books) == 1:
        sim.run_single(progress, should_stop)
        times = first.times
    else:
        times = sim.run_merged(progress, should_stop)
    return sim.result(times, ppy)
