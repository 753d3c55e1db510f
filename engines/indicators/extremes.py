"""Rolling highest high and lowest low over N bars, and their 52-week variants.

These read the bar's *high* (``Highest``) and *low* (``Lowest``), like a Donchian
channel (``ta``: ``DonchianChannel`` bands): a 52-week high is the highest price
traded, not the highest close.
"""

from __future__ import annotations

from engines.indicators.base import Indicator, RollingExtreme, check_window

BARS_PER_WEEK = 5
"""Trading days in a KRX week. The 52-week window counts *bars*, not calendar days:
52 * 5 = 260 daily bars. KRX holidays (about 12 weekdays a year) make that slightly
more than one calendar year; the engines cannot read a holiday calendar, and counting
bars keeps the window the same in live trading and in backtests."""


class Highest(Indicator[float]):
    """Highest high of the last ``window`` bars (amortized O(1): monotonic deque)."""

    __slots__ = ("_max", "window")
    name = "highest"
    inputs = ("high",)
    param_names = ("window",)

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)
        self.warmup = self.window
        self.value = None
        self._max = RollingExtreme(self.window, highest=True)

    def update(self, high: float) -> float | None:
        top = self._max.push(high)
        if self._max.full:
            self.value = top
        return self.value

    def peek(self, high: float) -> float | None:
        """``update(high)`` without committing it: O(1) (``RollingExtreme.peek``)."""
        if self._max.full_after_push():
            return self._max.peek(high)
        return self.value


class Lowest(Indicator[float]):
    """Lowest low of the last ``window`` bars (amortized O(1): monotonic deque)."""

    __slots__ = ("_min", "window")
    name = "lowest"
    inputs = ("low",)
    param_names = ("window",)

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)
        self.warmup = self.window
        self.value = None
        self._min = RollingExtreme(self.window, highest=False)

    def update(self, low: float) -> float | None:
        bottom = self._min.push(low)
        if self._min.full:
            self.value = bottom
        return self.value

    def peek(self, low: float) -> float | None:
        """``update(low)`` without committing it: O(1) (``RollingExtreme.peek``)."""
        if self._min.full_after_push():
            return self._min.peek(low)
        return self.value


class High52W(Highest):
    """Highest high of the last ``weeks * 5`` daily bars (260 by default). Feed it
    *daily* candles; see ``BARS_PER_WEEK`` for why it counts bars."""

    __slots__ = ("weeks",)
    name = "high_52w"
    param_names = ("weeks",)

    def __init__(self, weeks: int = 52) -> None:
        self.weeks = check_window("weeks", weeks)
        super().__init__(check_window("weeks * 5", self.weeks * BARS_PER_WEEK))


class Low52W(Lowest):
    """Lowest low of the last ``weeks * 5`` daily bars (260 by default). Feed it
    *daily* candles; see ``BARS_PER_WEEK`` for why it counts bars."""

    __slots__ = ("weeks",)
    name = "low_52w"
    param_names = ("weeks",)

    def __init__(self, weeks: int = 52) -> None:
        self.weeks = check_window("weeks", weeks)
        super().__init__(check_window("weeks * 5", self.weeks * BARS_PER_WEEK))
