"""The strategy API: one piece of code run by the backtester, the paper desk and live trading.

Users complain most about backtests that live trading does not reproduce. The cure
is structural: a strategy never sees *where* it runs. It gets closed candles (and,
if it wants, ticks) through :class:`StrategyHost`, reads the past through a
:class:`Context` that cannot reach the future, and answers with :class:`Signal`
values. Turning signals into fills (the backtester) or into orders (the paper desk,
the live executor) happens outside, with one cost model and one sizing function
(:mod:`engines.strategies.sizing`), so the three differ only where the market does.

Parameters are a pydantic model per strategy (:class:`StrategyParams`): validated
when a user saves them, with ``ge``/``le`` bounds that double as the optimiser's
search space (:meth:`StrategyParams.space`).

Nothing here reads a clock, a file or the network.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from engines.indicators import Indicator, make_indicator
from engines.market import Candle, Tick

__all__ = [
    "Account",
    "Action",
    "Context",
    "IndicatorHandle",
    "LookAheadError",
    "OrderKind",
    "ParamRange",
    "Series",
    "Signal",
    "Strategy",
    "StrategyHost",
    "StrategyParams",
]

DEFAULT_HISTORY = 500
"""Closed bars a context keeps unless the strategy asks for more (``history_size``)."""


class LookAheadError(LookupError):
    """A strategy asked for a bar that has not closed yet.

    Raised, never swallowed: a backtest that silently read tomorrow's close would
    report returns no one can trade, which is worse than a crash.
    """


class Action(StrEnum):
    ALERT = "alert"
    BUY = "buy"
    SELL = "sell"


class OrderKind(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


@dataclass(frozen=True, slots=True)
class Signal:
    """What a strategy wants done about the bar (or tick) it just saw.

    Size: ``qty`` shares when given (> 0); otherwise ``fraction`` of equity for a
    buy and of the held position for a sell (``1.0`` sells everything). The
    executor clips a size to what cash, position and the user's limits allow.

    ``key`` identifies the signal across retries and restarts (symbol, bar and
    ordinal); the host fills it in. The app derives the client order id from it,
    so one signal places at most one order. ``reason`` is an i18n key with
    ``reason_params``, so the alert text is translated per recipient.
    """

    action: Action
    symbol: str = ""
    qty: int = 0
    fraction: float = 1.0
    order_kind: OrderKind = OrderKind.MARKET
    limit_price: float | None = None
    reason: str = ""
    reason_params: tuple[tuple[str, Any], ...] = ()
    key: str = ""

    def __post_init__(self) -> None:
        if self.qty < 0:
            raise ValueError(f"signal qty must be >= 0, got {self.qty}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"signal fraction must be in (0, 1], got {self.fraction}")
        if self.order_kind is OrderKind.LIMIT and (
            self.limit_price is None or self.limit_price <= 0
        ):
            raise ValueError("a limit signal needs a positive limit_price")


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model.

    Extra keys are refused (a typo must not silently fall back to a default) and
    the model is frozen (a running strategy's params never change under it).
    Numeric fields should carry ``ge``/``le``: they are both the validation the
    user sees and the optimiser's range. ``json_schema_extra={"step": x}`` sets
    the grid step (default 1 for ints, a tenth of the range for floats).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def space(cls) -> list[ParamRange]:
        """Every optimisable numeric field with its bounds, in declaration order."""
        ranges: list[ParamRange] = []
        for name, field in cls.model_fields.items():
            kind = field.annotation
            if kind not in (int, float):
                continue
            low = high = None
            for meta in field.metadata:
                low = getattr(meta, "ge", low)
                high = getattr(meta, "le", high)
            if low is None or high is None:
                continue
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            step = extra.get("step")
            if step is None:
                step = 1 if kind is int else (float(high) - float(low)) / 10
            ranges.append(ParamRange(name, "int" if kind is int else "float", low, high, step))
        return ranges


@dataclass(frozen=True, slots=True)
class ParamRange:
    name: str
    kind: str  # "int" | "float"
    low: float
    high: float
    step: float

    def grid(self) -> list[float]:
        """Values from ``low`` by ``step``, never past ``high``."""
        values: list[float] = []
        # Floor, with a little slack for float steps like 0.07: a step that does not
        # divide the range must stop at or below ``high``, never step past it.
        n = int((self.high - self.low) / self.step + 1e-9) if self.step else 0
        for i in range(n + 1):
            v = self.low + i * self.step
            values.append(int(round(v)) if self.kind == "int" else round(v, 10))
        return values


class Account(Protocol):
    """What a strategy may know about money: supplied by the backtester or the executor."""

    def position(self, symbol: str) -> tuple[int, float]:
        """``(shares held, average price)`` of ``symbol``; ``(0, 0.0)`` when flat."""
        ...

    @property
    def cash(self) -> float: ...

    @property
    def equity(self) -> float: ...


class _Flat:
    """The account of a strategy that only alerts: no cash, no positions."""

    cash = 0.0
    equity = 0.0

    def position(self, symbol: str) -> tuple[int, float]:
        return (0, 0.0)


class Series:
    """A read-only view of one field of the closed bars, indexed like backtesting.py.

    ``s[-1]`` is the bar just closed, ``s[-2]`` the one before. A non-negative
    index is an absolute bar number (``ctx.bar_index`` of the bar just closed);
    asking for a larger one, or slicing past the end, raises
    :class:`LookAheadError`. Bars older than the kept history raise ``IndexError``.
    """

    __slots__ = ("_bars", "_field", "_ctx")

    def __init__(self, ctx: Context, bars: deque[Candle], field: str) -> None:
        self._ctx = ctx
        self._bars = bars
        self._field = field

    def __len__(self) -> int:
        return len(self._bars)

    def _offset(self, index: int) -> int:
        """``index`` as a position in the kept bars."""
        if index < 0:
            if -index > len(self._bars):
                raise IndexError(f"{self._field}[{index}]: only {len(self._bars)} bars kept")
            return len(self._bars) + index
        current = self._ctx.bar_index
        if index > current:
            raise LookAheadError(
                f"{self._field}[{index}] is bar {index}, but bar {current} is the last "
                "that has closed: a strategy cannot read the future"
            )
        first = current - len(self._bars) + 1
        if index < first:
            raise IndexError(f"{self._field}[{index}]: bars before {first} are no longer kept")
        return index - first

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            if index.step not in (None, 1):
                raise ValueError("series slices take no step")
            start, stop = index.start, index.stop
            if stop is not None and stop >= 0 and stop > self._ctx.bar_index + 1:
                raise LookAheadError(
                    f"{self._field}[{start}:{stop}] reaches past bar {self._ctx.bar_index}, "
                    "the last that has closed"
                )
            lo = 0 if start is None else self._offset(start)
            hi = (
                len(self._bars)
                if stop is None
                else (self._offset(stop - 1) + 1 if stop > 0 or stop < 0 else 0)
            )
            field = self._field
            return [getattr(self._bars[i], field) for i in range(lo, hi)]
        return getattr(self._bars[self._offset(index)], self._field)

    def __iter__(self) -> Iterator[Any]:
        field = self._field
        return (getattr(c, field) for c in self._bars)

    def ago(self, n: int) -> Any:
        """The value ``n`` bars before the one just closed (``ago(0)`` is the current)."""
        if n < 0:
            raise LookAheadError(f"{self._field}.ago({n}) is in the future")
        return self[-1 - n]


class IndicatorHandle:
    """A streaming indicator the host updates on every closed bar, before the strategy runs.

    ``value`` is after the bar just closed, ``prev`` after the one before (both
    ``None`` while warming up), so a cross is ``prev`` on one side and ``value``
    on the other, without keeping a series.
    """

    __slots__ = ("indicator", "inputs", "prev", "value")

    def __init__(self, indicator: Indicator[Any]) -> None:
        self.indicator = indicator
        self.inputs = indicator.inputs
        self.value: Any = None
        self.prev: Any = None

    @property
    def ready(self) -> bool:
        return self.value is not None and self.prev is not None


class Context:
    """Everything a strategy may read: the closed past, its indicators, its position.

    Slotted, so a strategy cannot stash state on it by accident (``ctx.x = ...``
    raises); strategies keep their own state on ``self``.
    """

    __slots__ = (
        "_account",
        "_bars",
        "_handles",
        "bar_index",
        "close",
        "high",
        "low",
        "open",
        "symbol",
        "volume",
    )

    def __init__(self, symbol: str, account: Account, history: int) -> None:
        self.symbol = symbol
        self._account = account
        self._bars: deque[Candle] = deque(maxlen=history)
        self._handles: dict[str, IndicatorHandle] = {}
        self.bar_index = -1
        self.open = Series(self, self._bars, "open")
        self.high = Series(self, self._bars, "high")
        self.low = Series(self, self._bars, "low")
        self.close = Series(self, self._bars, "close")
        self.volume = Series(self, self._bars, "volume")

    # ---- bars -------------------------------------------------------------------

    @property
    def candle(self) -> Candle:
        """The bar just closed."""
        if not self._bars:
            raise LookAheadError("no bar has closed yet")
        return self._bars[-1]

    def bar(self, ago: int = 0) -> Candle:
        """The closed bar ``ago`` bars back (0 is the one just closed)."""
        if ago < 0:
            raise LookAheadError(f"bar({ago}) has not closed: no reading the future")
        if ago >= len(self._bars):
            raise IndexError(f"bar({ago}): only {len(self._bars)} bars kept")
        return self._bars[-1 - ago]

    @property
    def bars(self) -> Sequence[Candle]:
        """The kept closed bars, oldest first (a copy: the host's buffer stays intact)."""
        return tuple(self._bars)

    # ---- indicators -------------------------------------------------------------

    def indicator(self, name: str, **params: Any) -> IndicatorHandle:
        """A shared handle on ``name(params)``: asking twice gives the same instance.

        Register indicators in :meth:`Strategy.setup`; one first asked for later
        starts warming up from that bar.
        """
        ind = make_indicator(name, params)
        handle = self._handles.get(ind.key)
        if handle is None:
            handle = self._handles[ind.key] = IndicatorHandle(ind)
        return handle

    # ---- money ------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Shares of this context's symbol held now (0 when flat)."""
        return self._account.position(self.symbol)[0]

    @property
    def avg_price(self) -> float:
        return self._account.position(self.symbol)[1]

    @property
    def cash(self) -> float:
        return self._account.cash

    @property
    def equity(self) -> float:
        return self._account.equity

    # ---- signals ----------------------------------------------------------------

    def buy(self, **kwargs: Any) -> Signal:
        return Signal(Action.BUY, self.symbol, **kwargs)

    def sell(self, **kwargs: Any) -> Signal:
        return Signal(Action.SELL, self.symbol, **kwargs)

    def alert(self, reason: str, **params: Any) -> Signal:
        return Signal(Action.ALERT, self.symbol, reason=reason, reason_params=tuple(params.items()))


SignalsOut = Signal | Sequence[Signal] | None


class Strategy:
    """Base of every strategy. Subclasses set ``name``, ``Params`` and override hooks.

    ``name`` is stored with users' strategy configs: add names, never rename one.
    ``title_key`` and ``description_key`` are i18n keys for the catalogue.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    title_key: ClassVar[str] = ""
    description_key: ClassVar[str] = ""
    history_size: ClassVar[int] = DEFAULT_HISTORY
    extra_warmup: ClassVar[int] = 0
    """Bars beyond the indicators' own warm-up before signals mean anything."""

    def __init__(self, params: StrategyParams | dict[str, Any] | None = None) -> None:
        if isinstance(params, StrategyParams):
            if not isinstance(params, self.Params):
                raise TypeError(f"{self.name} takes {self.Params.__name__}")
            self.params = params
        else:
            self.params = self.Params.model_validate(params or {})

    def setup(self, ctx: Context) -> None:
        """Register indicators (``ctx.indicator(...)``) and initialise state."""

    def on_candle(self, ctx: Context, candle: Candle) -> SignalsOut:
        """Called once per closed bar, after indicators have seen it."""
        return None

    def on_tick(self, ctx: Context, tick: Tick) -> SignalsOut:
        """Called per trade in live and paper mode; the candle backtester does not call it."""
        return None


class StrategyHost:
    """Runs one strategy on one symbol: feeds indicators, calls hooks, keys signals.

    The backtester, the paper desk and the live executor all drive strategies
    through this class, which is what makes their signals identical bar for bar.
    """

    __slots__ = ("_handles", "_tick_at", "_tick_seq", "ctx", "strategy", "symbol", "warmup")

    def __init__(self, strategy: Strategy, symbol: str, account: Account | None = None) -> None:
        self.strategy = strategy
        self.symbol = symbol
        self.ctx = Context(symbol, account or _Flat(), max(strategy.history_size, 2))
        strategy.setup(self.ctx)
        self._handles = list(self.ctx._handles.values())
        inds = [h.indicator.warmup for h in self._handles]
        # +1: a cross needs the value of the bar before too.
        self.warmup = (max(inds) + 1 if inds else 0) + strategy.extra_warmup
        self._tick_at: object = None
        self._tick_seq = 0

    def on_candle(self, candle: Candle) -> list[Signal]:
        ctx = self.ctx
        ctx._bars.append(candle)
        ctx.bar_index += 1
        if len(self._handles) != len(ctx._handles):  # registered after setup
            self._handles = list(ctx._handles.values())
        for h in self._handles:
            h.prev = h.value
            ind = h.indicator
            if h.inputs == ("close",):
                h.value = ind.update(candle.close)
            else:
                h.value = ind.update(*[getattr(candle, f) for f in h.inputs])
        out = self.strategy.on_candle(ctx, candle)
        if out is None:
            return []
        return self._keyed(out, f"{candle.timeframe}|{candle.start.isoformat()}")

    def on_tick(self, tick: Tick) -> list[Signal]:
        out = self.strategy.on_tick(self.ctx, tick)
        if out is None:
            return []
        # The key must come out the same when the same tick is replayed after a restart
        # (it becomes the client order id), so it counts only ticks sharing one
        # timestamp, never a process-lifetime counter.
        if tick.ts == self._tick_at:
            self._tick_seq += 1
        else:
            self._tick_at, self._tick_seq = tick.ts, 0
        return self._keyed(out, f"tick|{tick.ts.isoformat()}|{self._tick_seq}")

    def _keyed(self, out: Signal | Sequence[Signal], stamp: str) -> list[Signal]:
        signals = [out] if isinstance(out, Signal) else list(out)
        keyed: list[Signal] = []
        for n, sig in enumerate(signals):
            if not isinstance(sig, Signal):
                raise TypeError(f"{self.strategy.name} returned {type(sig).__name__}, not Signal")
            if sig.symbol and sig.symbol != self.symbol:
                raise ValueError(f"{self.strategy.name} signalled {sig.symbol} on {self.symbol}")
            key = f"{self.symbol}|{stamp}|{n}|{sig.action}"
            keyed.append(_keyed_signal(sig, self.symbol, key))
        return keyed


def _keyed_signal(sig: Signal, symbol: str, key: str) -> Signal:
    """``replace(sig, symbol=..., key=...)`` spelled out: it runs on every signal of every
    backtest, and the positional constructor is measurably cheaper than ``replace``."""
    return Signal(
        sig.action,
        symbol,
        sig.qty,
        sig.fraction,
        sig.order_kind,
        sig.limit_price,
        sig.reason,
        sig.reason_params,
        key,
    )
