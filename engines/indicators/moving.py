"""Moving averages: SMA, EMA, WMA, and the volume moving average.

Where ``ta`` (0.11) and the textbook differ, these follow ``ta``, because the
acceptance test compares against it and because users cross-check with tools built on
the same pandas formulas:

* ``EMA`` is pandas' ``ewm(span=window, adjust=False)``: alpha = 2 / (window + 1),
  seeded with the *first close* (the textbook seeds with the SMA of the first
  ``window`` closes). Like ``ta`` it reports nothing before ``window`` bars. The seed's
  weight decays as (1 - alpha)^n, so both conventions agree after a few windows.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import chain, islice

from engines.indicators.base import Indicator, RollingSum, check_window


class SMA(Indicator[float]):
    """Simple moving average of the last ``window`` closes (``ta``: ``SMAIndicator``)."""

    __slots__ = ("_sum", "window")
    name = "sma"
    inputs = ("close",)
    param_names = ("window",)

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)
        self.warmup = self.window
        self.value = None
        self._sum = RollingSum(self.window)

    def update(self, close: float) -> float | None:
        # ``RollingSum.push`` inlined, same operations in the same order (so results are
        # bit-identical): this is the innermost line of every MA-cross backtest.
        s = self._sum
        buf = s.buf
        window = self.window
        if len(buf) == window:
            s.total += close - buf[0]
        else:
            s.total += close
        buf.append(close)
        s._until_exact -= 1
        if not s._until_exact:
            s._until_exact = window
            s.total = math.fsum(buf)
        if len(buf) == window:
            self.value = s.total / window
        return self.value

    def peek(self, close: float) -> float | None:
        """``update(close)`` without committing it: O(1) (see ``RollingSum.peek``)."""
        s = self._sum
        if s.full_after_push():
            return s.peek(close) / self.window
        return self.value


class VolumeSMA(SMA):
    """Moving average of volume over ``window`` bars (e.g. "volume above 2x its 20-bar
    average"). Same arithmetic as ``SMA``, fed with the bar's volume."""

    __slots__ = ()
    name = "volume_sma"
    inputs = ("volume",)

    def update(self, volume: float) -> float | None:  # type: ignore[override]
        return super().update(volume)

    def peek(self, volume: float) -> float | None:  # type: ignore[override]
        return super().peek(volume)


class EMA(Indicator[float]):
    """Exponential moving average, ``ta``'s ``EMAIndicator`` (see the module docstring
    for the seed). The recursion is contractive, so it does not drift."""

    __slots__ = ("_alpha", "_count", "_ema", "window")
    name = "ema"
    inputs = ("close",)
    param_names = ("window",)

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)
        self.warmup = self.window
        self.value = None
        self._alpha = 2.0 / (self.window + 1)
        self._ema = 0.0
        self._count = 0

    def update(self, close: float) -> float | None:
        if self._count:
            a = self._alpha
            self._ema = (1.0 - a) * self._ema + a * close
        else:
            self._ema = close
        self._count += 1
        if self._count >= self.window:
            self.value = self._ema
        return self.value

    def peek(self, close: float) -> float | None:
        """``update(close)`` without committing it: the same recursion, one step, O(1)."""
        if self._count:
            a = self._alpha
            ema = (1.0 - a) * self._ema + a * close
        else:
            ema = close
        if self._count + 1 >= self.window:
            return ema
        return self.value


class WMA(Indicator[float]):
    """Linearly weighted moving average: weights 1..window, newest heaviest.

    O(1) per bar with two running sums: ``num`` = sum of ``i * x_i`` and ``total`` =
    sum of ``x_i``. Sliding by one bar lowers every weight by one, so
    ``num' = num - total + window * new`` (``total`` taken before the slide). Both sums
    are recomputed exactly (``math.fsum``) every ``window`` bars against drift.
    """

    __slots__ = ("_buf", "_num", "_total", "_until_exact", "window")
    name = "wma"
    inputs = ("close",)
    param_names = ("window",)

    def __init__(self, window: int) -> None:
        self.window = check_window("window", window)
        self.warmup = self.window
        self.value = None
        self._buf: deque[float] = deque(maxlen=self.window)
        self._num = 0.0
        self._total = 0.0
        self._until_exact = self.window

    def update(self, close: float) -> float | None:
        buf = self._buf
        n = self.window
        if len(buf) == n:
            self._num += n * close - self._total
            self._total += close - buf[0]
        else:
            self._num += (len(buf) + 1) * close
            self._total += close
        buf.append(close)
        self._until_exact -= 1
        if not self._until_exact:
            self._until_exact = n
            self._num = math.fsum(i * x for i, x in enumerate(buf, 1))
            self._total = math.fsum(buf)
        if len(buf) == n:
            self.value = self._num * 2.0 / (n * (n + 1))
        return self.value

    def peek(self, close: float) -> float | None:
        """``update(close)`` without committing it: the same sums, one step.

        O(1), except on the bar whose close re-sums exactly (one in ``window``), where
        the exact sums are taken over the would-be window, as ``update`` would.
        """
        buf = self._buf
        n = self.window
        full = len(buf) == n
        if not full and len(buf) + 1 < n:
            return self.value
        if self._until_exact == 1:
            after = chain(islice(buf, 1 if full else 0, None), (close,))
            num = math.fsum(i * x for i, x in enumerate(after, 1))
        elif full:
            num = self._num + (n * close - self._total)
        else:
            num = self._num + (len(buf) + 1) * close
        return num * 2.0 / (n * (n + 1))
