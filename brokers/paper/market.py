"""A simulated KRX market: the paper broker's market data.

It lets the whole platform run, be demoed and be tested with no broker
account: real codes and names, prices on the KRX tick grid, ±30% daily limits,
and (optionally) real KRX session hours.

The core is :meth:`SimulatedMarket.step`, which is synchronous and reads no
clock: given an instant, it returns that instant's trades. Tests and replays
drive it directly, without sleeping, and get the same trades for the same seed.
:meth:`SimulatedMarket.ticks` is only a thin async loop around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from brokers.base import Quote, SymbolInfo, UnknownSymbol
from brokers.paper.calendar import is_krx_open, load_calendar
from brokers.paper.symbols import SYMBOLS, PaperSymbol
from engines.market import Tick, price_limits, step_ticks

__all__ = ["KST", "TRADE_PROBABILITY", "SimulatedMarket"]

log = logging.getLogger(__name__)

KST = ZoneInfo("Asia/Seoul")
"""KRX session dates are Seoul calendar dates; a UTC date would roll over at 09:00 KST."""

TRADE_PROBABILITY = 0.8
"""Chance that a subscribed symbol prints a trade in one step.

Below 1 so that streams look irregular, as real ones do; high enough that a
watched price visibly moves every second or two.
"""

_MOVE_SIZES = (1, 2, 3)
_MOVE_WEIGHTS = (6, 3, 1)
# Strength of the pull back towards the reference price: the chance of an
# up-move is 0.5 - _REVERSION * ln(price / ref), about 43% when 10% above it.
# That keeps a run of any length within a few percent of the reference (a
# plausible daily range), yet mild enough that the chart still wanders.
_REVERSION = 0.75
_P_UP_BOUNDS = (0.15, 0.85)
# Typical trade value in won. Volume per print scales inversely with price, so
# a 500-won stock trades thousands of shares per print and a 1,000,000-won stock
# a handful, as on the real exchange.
_TYPICAL_TRADE_WON = 5_000_000


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _SymbolState:
    """One symbol's price process and its current trading day."""

    sym: PaperSymbol
    rng: random.Random
    price: int
    prev_close: int
    lower: int
    upper: int
    open: int | None = None  # None until the day's first trade
    high: int = 0
    low: int = 0
    volume: int = 0
    last_trade: datetime | None = None

    def new_day(self) -> None:
        """Yesterday's last price becomes the reference for today's limits and change %."""
        self.prev_close = self.price
        self.lower, self.upper = price_limits(self.prev_close)
        self.open = None
        self.high = self.low = self.volume = 0
        self.last_trade = None


class SimulatedMarket:
    """The paper broker's :class:`~brokers.base.MarketData`.

    Prices follow a random walk in whole ticks (1 to 3 ticks per trade, never
    zero, so a watched price visibly changes), pulled mildly back towards each
    symbol's reference price and clamped to the day's price limits. Each symbol
    has its own ``random.Random`` seeded from ``(seed, code)``, so a symbol's
    sequence does not depend on which other symbols happen to be subscribed:
    adding a symbol to a watchlist does not change the prices of the others.
    Symbols only trade while subscribed.
    """

    name = "paper"

    def __init__(
        self,
        *,
        seed: int = 7,
        always_open: bool = True,
        tick_interval: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        symbols: Sequence[PaperSymbol] = SYMBOLS,
    ) -> None:
        """Build the market; nothing trades until symbols are subscribed.

        ``always_open`` trades around the clock (demos, development); ``False``
        follows the real XKRX calendar. ``tick_interval`` is the pause in
        seconds between steps of :meth:`ticks`. ``clock`` returns the current
        tz-aware time; inject one to run the stream on simulated time.
        """
        if tick_interval < 0:
            raise ValueError(f"tick_interval must be >= 0, got {tick_interval}")
        self._seed = seed
        self._always_open = always_open
        self._tick_interval = tick_interval
        self._clock = clock or _utc_now
        self._symbols: tuple[PaperSymbol, ...] = tuple(symbols)
        self._states: dict[str, _SymbolState] = {}
        for sym in self._symbols:
            if sym.code in self._states:
                raise ValueError(f"duplicate symbol code {sym.code}")
            lower, upper = price_limits(sym.ref_price)
            self._states[sym.code] = _SymbolState(
                sym=sym,
                rng=random.Random(f"{seed}:{sym.code}"),
                price=sym.ref_price,
                prev_close=sym.ref_price,
                lower=lower,
                upper=upper,
            )
        # Stepped in code order: a set's iteration order varies between runs.
        self._subscribed: tuple[str, ...] = ()
        self._day: date | None = None
        self._last_step: datetime | None = None
        self._closed = asyncio.Event()

    # ---- synchronous core ------------------------------------------------

    @property
    def subscribed(self) -> frozenset[str]:
        """Codes currently streamed."""
        return frozenset(self._subscribed)

    def step(self, now: datetime) -> list[Tick]:
        """Advance the market to ``now`` and return the trades printed at that instant.

        At most one trade per subscribed symbol. A new Seoul date starts a new
        trading day for every symbol, whether or not the session is open, so a
        quote taken before the open already shows yesterday's close as
        ``prev_close``. With ``always_open=False`` nothing trades outside the
        XKRX session.
        """
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware, got {now!r}")
        now = now.astimezone(UTC)
        day = now.astimezone(KST).date()
        if self._day is None:
            self._day = day
        elif day > self._day:
            log.info("paper market: new trading day %s", day.isoformat())
            self._day = day
            for state in self._states.values():
                state.new_day()
        self._last_step = now
        if not self._always_open and not is_krx_open(now):
            return []
        ticks: list[Tick] = []
        for code in self._subscribed:
            tick = self._trade(self._states[code], now)
            if tick is not None:
                ticks.append(tick)
        return ticks

    def _trade(self, state: _SymbolState, now: datetime) -> Tick | None:
        rng = state.rng
        if rng.random() >= TRADE_PROBABILITY:
            return None
        price = state.price
        p_up = 0.5 - _REVERSION * math.log(price / state.sym.ref_price)
        p_up = min(max(p_up, _P_UP_BOUNDS[0]), _P_UP_BOUNDS[1])
        direction = 1 if rng.random() < p_up else -1
        size = rng.choices(_MOVE_SIZES, _MOVE_WEIGHTS)[0]
        new = self._clamp(state, step_ticks(price, direction * size))
        if new == price:
            # Pinned at a limit: bounce off it rather than print an unchanged price.
            # (Only a day whose lower and upper limits coincide stays put.)
            new = self._clamp(state, step_ticks(price, -direction * size))
        base = max(1, _TYPICAL_TRADE_WON // new)
        volume = max(1, round(base * rng.lognormvariate(0.0, 1.0)))

        state.price = new
        if state.open is None:
            state.open = state.high = state.low = new
        else:
            state.high = max(state.high, new)
            state.low = min(state.low, new)
        state.volume += volume
        state.last_trade = now
        return Tick(symbol=state.sym.code, price=new, volume=volume, ts=now)

    @staticmethod
    def _clamp(state: _SymbolState, price: int) -> int:
        return min(max(price, state.lower), state.upper)

    def _state(self, symbol: str) -> _SymbolState:
        state = self._states.get(symbol)
        if state is None:
            raise UnknownSymbol(symbol)
        return state

    def _codes(self, symbols: Iterable[str]) -> set[str]:
        """Validate all codes before changing anything, so a bad code changes nothing."""
        if isinstance(symbols, str):
            raise TypeError("pass an iterable of codes, not a single string")
        codes = set(symbols)
        for code in sorted(codes):
            self._state(code)
        return codes

    # ---- MarketData -------------------------------------------------------

    async def list_symbols(self) -> list[SymbolInfo]:
        return [sym.info for sym in self._symbols]

    async def quote(self, symbol: str) -> Quote:
        """The day's OHLCV as of the last :meth:`step`.

        A symbol that has not traded yet today quotes at ``prev_close``, with
        open/high/low equal to it and zero volume. ``ts`` is the last trade's
        time, else the last step's, else the clock's.
        """
        state = self._state(symbol)
        traded = state.open is not None
        ts = state.last_trade or self._last_step or self._clock()
        return Quote(
            symbol=symbol,
            price=state.price,
            prev_close=state.prev_close,
            open=state.open if state.open is not None else state.prev_close,
            high=state.high if traded else state.prev_close,
            low=state.low if traded else state.prev_close,
            volume=state.volume,
            ts=ts,
        )

    async def subscribe(self, symbols: Iterable[str]) -> None:
        codes = self._codes(symbols)
        self._subscribed = tuple(sorted(set(self._subscribed) | codes))
        log.debug("paper market: subscribed %s (%d total)", sorted(codes), len(self._subscribed))

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        codes = self._codes(symbols)
        self._subscribed = tuple(c for c in self._subscribed if c not in codes)
        log.debug("paper market: unsubscribed %s (%d left)", sorted(codes), len(self._subscribed))

    async def ticks(self) -> AsyncIterator[Tick]:
        """Step on the injected clock every ``tick_interval`` seconds and yield the trades.

        Meant for a single consumer (the market hub): every running iterator
        advances the same market. Ends promptly when :meth:`close` is called,
        even in the middle of a pause.
        """
        if not self._always_open:
            # Build the calendar off the event loop; it takes seconds.
            await asyncio.to_thread(load_calendar)
        while not self._closed.is_set():
            for tick in self.step(self._clock()):
                if self._closed.is_set():
                    return
                yield tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self._tick_interval)

    async def close(self) -> None:
        """End the tick stream and drop all subscriptions. Quotes stay readable."""
        self._closed.set()
        self._subscribed = ()
        log.info("paper market closed")
