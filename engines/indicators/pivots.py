"""Pivot highs and lows: the level of the last confirmed swing high (low).

A pivot high with ``left``/``right`` bars is a bar whose high dominates the ``left``
bars before it and the ``right`` bars after it. It can only be known ``right`` bars
later, so the indicator reports it then (at the close of bar ``c + right`` for a pivot
at bar ``c``), never earlier: there is no look-ahead, and a backtest sees exactly what
a live runner would have seen. The value is the level of the most recent confirmed
pivot and stays there until the next one is confirmed; ``None`` before the first.

Tie rule (TradingView's ``ta.pivothigh`` / ``ta.pivotlow``, which rule specs are
meant to match): ties are treated *asymmetrically*. For a pivot high at bar ``c``::

    high[c] >= high[j]  for the left bars  j = c-left .. c-1   (an equal bar is fine)
    high[c] >  high[j]  for the right bars j = c+1 .. c+right  (an equal bar is not)

and mirrored for a pivot low (``<=`` on the left, ``<`` on the right). So on a plateau
of equal highs the *last* bar of the plateau is the pivot (each earlier one has an
equal bar on its right), a double top at exactly the same price moves the pivot to
the second top, and a perfectly flat series has no pivot. TradingView's reference
text only says "higher than the bars on both sides"; the asymmetric ties are what its
output shows on series built to test them. Like TradingView, a candidate needs all
``left`` bars before it: nothing is confirmed before bar ``left + right + 1``.

Cost: amortized O(1) per bar. Two monotonic deques (``RollingExtreme``) hold the
extreme of the ``right`` bars after the candidate and of the ``left`` bars before it;
a delay line of ``right + 1`` bars feeds the candidate into the left window when it
ages out. State is bounded by ``left + right + 1`` values.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from engines.indicators.base import Indicator, RollingExtreme, check_window


class _Pivot(Indicator[float]):
    """Shared machinery of ``PivotHigh`` / ``PivotLow``; ``_sign`` is +1 for highs,
    -1 for lows (comparisons are made on ``sign * value``: negation is exact)."""

    __slots__ = ("_after", "_before", "_left_ext", "_line", "_sign", "left", "right")
    param_names = ("left", "right")
    _highs: ClassVar[bool]  # True: pivot highs of the highs; False: pivot lows

    def __init__(self, left: int = 5, right: int = 5) -> None:
        self.left = check_window("left", left)
        self.right = check_window("right", right)
        # The earliest bar at which a pivot can be confirmed. Unlike the other
        # indicators the value may stay None longer (a monotonic series has no pivot),
        # so here ``warmup`` is a lower bound on when the value exists.
        self.warmup = self.left + self.right + 1
        self.value = None
        self._sign = 1.0 if self._highs else -1.0
        # The last right + 1 bars: _line[0] is the candidate once the line is full.
        self._line: deque[float] = deque(maxlen=self.right + 1)
        # Extreme of the left bars before the candidate, fed from the line's far end,
        # and of the right bars after it (the latest bars).
        self._before = RollingExtreme(self.left, highest=self._highs)
        self._after = RollingExtreme(self.right, highest=self._highs)
        # The last result of _before.push (meaningful once _before is full).
        self._left_ext = 0.0

    def _is_pivot(self, candidate: float, before: float, after: float) -> bool:
        """The tie rule of the module docstring, for highs and (mirrored) lows."""
        s = self._sign
        c = s * candidate
        return c >= s * before and c > s * after

    def _step(self, x: float) -> float | None:
        """Shared ``update``: push ``x``, confirm the candidate ``right`` bars back."""
        line = self._line
        if len(line) == line.maxlen:
            # The candidate of the previous bar becomes a "before" bar of the next one.
            self._left_ext = self._before.push(line[0])
        line.append(x)
        after = self._after.push(x)
        if self._before.full and self._is_pivot(line[0], self._left_ext, after):
            self.value = line[0]
        return self.value

    def _peek(self, x: float) -> float | None:
        """``_step(x)`` without committing it: O(1) (``RollingExtreme.peek``)."""
        line = self._line
        if len(line) < self.right + 1:  # no candidate with a full left window yet
            return self.value
        before = self._before
        if not before.full_after_push():
            return self.value
        left_ext = before.peek(line[0])
        candidate = line[1]  # right >= 1, so the full line holds at least two bars
        if self._is_pivot(candidate, left_ext, self._after.peek(x)):
            return candidate
        return self.value


class PivotHigh(_Pivot):
    """Level of the last confirmed pivot high of the bars' highs (TradingView's
    ``ta.pivothigh(high, left, right)``, held until the next one); see the module
    docstring for the tie rule and confirmation delay."""

    __slots__ = ()
    name = "pivot_high"
    inputs = ("high",)
    _highs = True

    def update(self, high: float) -> float | None:
        return self._step(high)

    def peek(self, high: float) -> float | None:
        return self._peek(high)


class PivotLow(_Pivot):
    """Level of the last confirmed pivot low of the bars' lows (TradingView's
    ``ta.pivotlow(low, left, right)``, held until the next one); see the module
    docstring for the tie rule and confirmation delay."""

    __slots__ = ()
    name = "pivot_low"
    inputs = ("low",)
    _highs = False

    def update(self, low: float) -> float | None:
        return self._step(low)

    def peek(self, low: float) -> float | None:
        return self._peek(low)
