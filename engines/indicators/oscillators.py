"""Oscillators: RSI, MACD and the stochastic oscillator.

Values follow ``ta`` 0.11 (the acceptance test compares against it); where that
differs from the textbook, the class docstring says how.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.indicators.base import (
    Indicator,
    RollingExtreme,
    RollingSum,
    check_window,
)
from engines.indicators.moving import EMA


@dataclass(frozen=True, slots=True)
class MACDValue:
    macd: float
    """Fast EMA minus slow EMA."""
    signal: float
    """EMA of the MACD line."""
    histogram: float
    """``macd - signal``."""


@dataclass(frozen=True, slots=True)
class StochValue:
    k: float
    """%K: where the close sits in the ``window``-bar high-low range, 0..100."""
    d: float
    """%D: the ``smooth``-bar simple average of %K."""


class RSI(Indicator[float]):
    """Relative strength index with Wilder's smoothing (alpha = 1 / window).

    ``ta`` differs from Wilder's original in its start, and this follows ``ta``:

    * the first bar counts as a change of 0 (pandas' ``diff`` is NaN there and ``ta``
      maps it to 0), so the averages are seeded with 0 at bar 1 and smoothed
      exponentially from there; Wilder seeds them with the plain mean of the first
      ``window`` changes (bars 2..window+1);
    * hence the first value comes at bar ``window`` (Wilder: ``window + 1``);
    * when the average loss is 0 the RSI is 100, even if the average gain is 0 too
      (a flat series); the textbook leaves that case undefined.

    The seed's weight decays as (1 - 1/window)^n: after ~10 windows both agree closely.
    """

    __slots__ = ("_alpha", "_count", "_down", "_prev", "_up", "window")
    name = "rsi"
    inputs = ("close",)
    param_names = ("window",)

    def __init__(self, window: int = 14) -> None:
        self.window = check_window("window", window)
        self.warmup = self.window
        self.value = None
        self._alpha = 1.0 / self.window
        self._prev: float | None = None
        self._up = 0.0
        self._down = 0.0
        self._count = 0

    def update(self, close: float) -> float | None:
        prev = self._prev
        self._prev = close
        if prev is not None:
            change = close - prev
            gain = change if change > 0 else 0.0
            loss = -change if change < 0 else 0.0
            a = self._alpha
            self._up = (1.0 - a) * self._up + a * gain
            self._down = (1.0 - a) * self._down + a * loss
        self._count += 1
        if self._count >= self.window:
            down = self._down
            self.value = 100.0 if down == 0 else 100.0 - 100.0 / (1.0 + self._up / down)
        return self.value

    def peek(self, close: float) -> float | None:
        """``update(close)`` without committing it: one smoothing step, O(1)."""
        if self._count + 1 < self.window:
            return self.value
        prev = self._prev
        up, down = self._up, self._down
        if prev is not None:
            change = close - prev
            gain = change if change > 0 else 0.0
            loss = -change if change < 0 else 0.0
            a = self._alpha
            up = (1.0 - a) * up + a * gain
            down = (1.0 - a) * down + a * loss
        return 100.0 if down == 0 else 100.0 - 100.0 / (1.0 + up / down)


class MACD(Indicator[MACDValue]):
    """MACD line (EMA fast - EMA slow), its signal line, and the histogram.

    Both EMAs are ``ta``'s (seeded with the first close, see ``engines.indicators
    .moving``). The signal EMA is seeded with the first MACD value, which exists at
    bar ``slow``; so all three outputs exist from bar ``slow + signal - 1``, and the
    indicator reports ``None`` until then rather than a partial value.
    """

    __slots__ = ("_fast", "_signal", "_slow", "fast", "signal", "slow")
    name = "macd"
    inputs = ("close",)
    param_names = ("fast", "slow", "signal")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.fast = check_window("fast", fast)
        self.slow = check_window("slow", slow)
        self.signal = check_window("signal", signal)
        if self.fast >= self.slow:
            raise ValueError(f"fast must be < slow, got fast={fast} slow={slow}")
        self.warmup = self.slow + self.signal - 1
        self.value = None
        self._fast = EMA(self.fast)
        self._slow = EMA(self.slow)
        self._signal = EMA(self.signal)

    def update(self, close: float) -> MACDValue | None:
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        if fast is None or slow is None:
            return None
        line = fast - slow
        signal = self._signal.update(line)
        if signal is not None:
            self.value = MACDValue(line, signal, line - signal)
        return self.value

    def peek(self, close: float) -> MACDValue | None:
        """``update(close)`` without committing it: the three EMAs peeked, O(1)."""
        fast = self._fast.peek(close)
        slow = self._slow.peek(close)
        if fast is None or slow is None:
            return None
        line = fast - slow
        signal = self._signal.peek(line)
        if signal is not None:
            return MACDValue(line, signal, line - signal)
        return self.value


class Stochastic(Indicator[StochValue]):
    """Stochastic oscillator: %K = 100 * (close - lowest low) / (highest high - lowest
    low) over ``window`` bars, %D = ``smooth``-bar SMA of %K (``ta``'s "fast"
    stochastic: %K itself is not smoothed).

    Reports ``None`` until %D exists, at bar ``window + smooth - 1``. One difference
    from ``ta``: when the range is 0 (every high and low equal), ``ta`` divides by zero
    and yields NaN, which then poisons %D for ``smooth`` bars; here %K is 50 (the close
    sits in the middle of an empty range), so a rule never sees NaN.
    """

    __slots__ = ("_count", "_d", "_high", "_low", "smooth", "window")
    name = "stoch"
    inputs = ("high", "low", "close")
    param_names = ("window", "smooth")

    def __init__(self, window: int = 14, smooth: int = 3) -> None:
        self.window = check_window("window", window)
        self.smooth = check_window("smooth", smooth)
        self.warmup = self.window + self.smooth - 1
        self.value = None
        self._high = RollingExtreme(self.window, highest=True)
        self._low = RollingExtreme(self.window, highest=False)
        self._d = RollingSum(self.smooth)
        self._count = 0

    def update(self, high: float, low: float, close: float) -> StochValue | None:
        top = self._high.push(high)
        bottom = self._low.push(low)
        self._count += 1
        if self._count < self.window:
            return None
        span = top - bottom
        k = 100.0 * (close - bottom) / span if span else 50.0
        d = self._d
        d.push(k)
        if d.full:
            self.value = StochValue(k, d.total / self.smooth)
        return self.value

    def peek(self, high: float, low: float, close: float) -> StochValue | None:
        """``update(high, low, close)`` without committing it: amortized O(1) (see
        ``RollingExtreme.peek`` and ``RollingSum.peek``)."""
        top = self._high.peek(high)
        bottom = self._low.peek(low)
        if self._count + 1 < self.window:
            return None
        span = top - bottom
        k = 100.0 * (close - bottom) / span if span else 50.0
        d = self._d
        if d.full_after_push():
            return StochValue(k, d.peek(k) / self.smooth)
        return self.value
