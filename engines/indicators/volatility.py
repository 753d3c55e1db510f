"""Volatility: Bollinger bands and the average true range."""

from __future__ import annotations

from dataclasses import dataclass

from engines.indicators.base import Indicator, RollingMoments, check_positive, check_window


@dataclass(frozen=True, slots=True)
class BollingerValue:
    mid: float
    """SMA of the last ``window`` closes."""
    upper: float
    """``mid + num_std * std``."""
    lower: float
    """``mid - num_std * std``."""


class Bollinger(Indicator[BollingerValue]):
    """Bollinger bands around the ``window``-bar SMA.

    The standard deviation is the *population* one (ddof=0), as in ``ta`` and in
    Bollinger's own definition; pandas' ``rolling().std()`` default (ddof=1, sample)
    would give bands wider by sqrt(window / (window - 1)). The running sums are of
    deviations from a shift re-centred every ``window`` bars (``RollingMoments``), so
    a small spread on a high price does not cancel away.
    """

    __slots__ = ("_moments", "num_std", "window")
    name = "bollinger"
    inputs = ("close",)
    param_names = ("window", "num_std")

    def __init__(self, window: int = 20, num_std: float = 2.0) -> None:
        self.window = check_window("window", window)
        self.num_std = check_positive("num_std", num_std)
        self.warmup = self.window
        self.value = None
        self._moments = RollingMoments(self.window)

    def update(self, close: float) -> BollingerValue | None:
        m = self._moments
        m.push(close)
        if m.full:
            mid, std = m.mean_std()
            width = self.num_std * std
            self.value = BollingerValue(mid, mid + width, mid - width)
        return self.value

    def peek(self, close: float) -> BollingerValue | None:
        """``update(close)`` without committing it (see ``RollingMoments.peek_mean_std``:
        O(1) except where ``update`` itself would re-sum exactly)."""
        m = self._moments
        if len(m.buf) + 1 < self.window:
            return self.value
        mid, std = m.peek_mean_std(close)
        width = self.num_std * std
        return BollingerValue(mid, mid + width, mid - width)


class ATR(Indicator[float]):
    """Average true range with Wilder's smoothing: ``atr = (atr * (n - 1) + tr) / n``.

    Follows ``ta``'s ``AverageTrueRange``: the first bar's true range is its
    ``high - low`` (there is no previous close), and the first ATR, at bar ``window``,
    is the plain mean of the first ``window`` true ranges. Wilder's original skips the
    first bar and starts at bar ``window + 1``. ``ta`` reports 0 before warm-up; this
    reports ``None``.
    """

    __slots__ = ("_atr", "_count", "_prev_close", "window")
    name = "atr"
    inputs = ("high", "low", "close")
    param_names = ("window",)

    def __init__(self, window: int = 14) -> None:
        self.window = check_window("window", window)
        self.warmup = self.window
        self.value = None
        self._prev_close: float | None = None
        self._atr = 0.0
        self._count = 0

    def update(self, high: float, low: float, close: float) -> float | None:
        prev = self._prev_close
        self._prev_close = close
        tr = high - low
        if prev is not None:
            tr = max(tr, abs(high - prev), abs(low - prev))
        n = self.window
        self._count += 1
        if self._count < n:
            self._atr += tr  # the sum of the first true ranges, until warm-up
        elif self._count == n:
            self._atr = (self._atr + tr) / n
            self.value = self._atr
        else:
            self._atr = (self._atr * (n - 1) + tr) / n
            self.value = self._atr
        return self.value

    def peek(self, high: float, low: float, close: float) -> float | None:
        """``update(high, low, close)`` without committing it: one step, O(1)."""
        prev = self._prev_close
        tr = high - low
        if prev is not None:
            tr = max(tr, abs(high - prev), abs(low - prev))
        n = self.window
        count = self._count + 1
        if count < n:
            return self.value
        if count == n:
            return (self._atr + tr) / n
        return (self._atr * (n - 1) + tr) / n
