"""The indicator base class, parameter checks, and the O(1) window helpers they share.

Every indicator is fed one bar at a time by the runner (live), the paper market and
the backtester alike, so an update must cost the same on bar 10 and on bar 100,000:
state is a handful of running numbers plus, at most, a buffer bounded by the window.

Running sums drift: ``total += new - old`` rounds on every step, and on a long series
whose magnitude falls (a downtrend from 1,000,000 to 300) the error left behind by the
large values is never cancelled. ``RollingSum`` and ``RollingMoments`` therefore
re-add their window exactly (``math.fsum``) once every ``window`` pushes. That costs
one extra addition per push on average (amortized O(1)) and bounds the error to the
rounding of at most ``window`` steps since the last exact sum, which keeps results
within 1e-9 (relative) of ``ta`` on any series length.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Iterator
from itertools import chain, islice
from typing import Any, ClassVar, Generic, TypeVar

T = TypeVar("T")

MAX_WINDOW = 10_000
"""Largest window any indicator accepts. Rule specs come from users; 10,000 bars is
about 40 years of daily candles or 5 weeks of 1-minute candles, far beyond any use."""


def check_window(param: str, value: object, minimum: int = 1) -> int:
    """``value`` as a window length, or a ``ValueError`` naming ``param``.

    Booleans are rejected although ``True`` is an ``int``: a JSON ``true`` is never a
    period. Floats are rejected even when integral, so a typo like ``14.5`` is not
    silently truncated and ``14.0`` does not produce a second, differently keyed twin.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{param} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{param} must be an int >= {minimum}, got {value}")
    if value > MAX_WINDOW:
        raise ValueError(f"{param} must be at most {MAX_WINDOW}, got {value}")
    return value


def check_positive(param: str, value: object) -> float:
    """``value`` as a finite float > 0 (ints accepted, booleans not), or a ``ValueError``.

    Returned as ``float`` so that ``2`` and ``2.0`` give the same indicator key.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{param} must be a number > 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{param} must be a finite number > 0, got {value!r}")
    return number


class Indicator(Generic[T]):
    """A streaming indicator.

    Subclasses define ``update(...)``, whose positional arguments are named by
    ``inputs`` (``("close",)``, ``("high", "low", "close")`` ...) so that a caller
    holding a candle can feed any indicator uniformly. ``update`` returns the current
    value, ``None`` while warming up (and the same value is kept in ``value``).

    ``warmup`` is the number of bars after which the value exists: the first non-None
    result is the one returned by the ``warmup``-th update. ``key`` names the
    indicator and all its parameters (defaults included), so two rules asking for the
    same indicator on the same series can share one instance.

    Inputs must be finite numbers; updates do not check them (it would cost every bar
    of every indicator), the candle aggregator upstream does.

    ``peek(...)`` takes the same inputs as ``update`` and returns what ``update`` would
    return, without committing the bar: alert rules evaluated on every tick need the
    value "as if the still-forming bar closed now", and the bar may yet change. The
    default here updates a deep copy (O(state)); the indicators override it with an
    O(1) mirror of their ``update`` that reads the state and writes nothing.
    """

    __slots__ = ("value", "warmup")

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]
    param_names: ClassVar[tuple[str, ...]] = ()

    value: T | None
    warmup: int

    @property
    def ready(self) -> bool:
        """Whether warm-up is over, i.e. ``value`` is not ``None``."""
        return self.value is not None

    @property
    def params(self) -> dict[str, int | float]:
        """The parameters, defaults included, in declaration order."""
        return {p: getattr(self, p) for p in self.param_names}

    @property
    def key(self) -> str:
        """Stable identity, e.g. ``"macd(fast=12,slow=26,signal=9)"``."""
        args = ",".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({args})"

    def peek(self, *inputs: Any) -> T | None:
        """What ``update(*inputs)`` would return, leaving this indicator unchanged.

        The generic way: update a deep copy. ``copy.deepcopy`` copies ``__slots__``
        objects correctly (Python 3.11's ``object.__getstate__`` returns the slot
        values), including the nested helpers (``RollingSum``...) and their deques, so
        the copy shares no mutable state with ``self``. It costs O(window) per call;
        subclasses override it with O(1) arithmetic that must agree exactly, and the
        tests compare every override against this path.
        """
        clone: Any = copy.deepcopy(self)
        result: T | None = clone.update(*inputs)
        return result

    def __repr__(self) -> str:
        return f"<{self.key} value={self.value!r}>"


def _after_push(buf: deque[float], window: int, x: float) -> Callable[[], Iterator[float]]:
    """A factory of iterators over ``buf`` as it would be after pushing ``x`` (the
    oldest value evicted if ``buf`` holds ``window`` values), without copying it."""
    start = 1 if len(buf) == window else 0
    return lambda: chain(islice(buf, start, None), (x,))


_TIGHT = 2.0**-20
"""``RollingMoments`` re-sums when variance < mean offset² * this (see there)."""


class RollingSum:
    """Sum of the last ``window`` values, re-added exactly every ``window`` pushes."""

    __slots__ = ("buf", "total", "window", "_until_exact")

    def __init__(self, window: int) -> None:
        self.window = window
        self.buf: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self._until_exact = window

    @property
    def full(self) -> bool:
        return len(self.buf) == self.window

    def full_after_push(self) -> bool:
        """Whether the window will be full once one more value is pushed."""
        return len(self.buf) + 1 >= self.window

    def push(self, x: float) -> None:
        buf = self.buf
        if len(buf) == self.window:
            self.total += x - buf[0]
        else:
            self.total += x
        buf.append(x)
        self._until_exact -= 1
        if not self._until_exact:
            self._until_exact = self.window
            self.total = math.fsum(buf)

    def peek(self, x: float) -> float:
        """``total`` as it would be after ``push(x)``, changing nothing.

        Same operations in the same order as ``push``, so the result is identical. On
        the push that re-adds the window exactly, the exact sum is taken over the
        would-be window (``fsum`` is correctly rounded, so the order does not matter):
        O(window) on one bar in ``window``, like ``push`` itself.
        """
        buf = self.buf
        if self._until_exact == 1:
            return math.fsum(_after_push(buf, self.window, x)())
        if len(buf) == self.window:
            return self.total + (x - buf[0])
        return self.total + x


class RollingMoments:
    """Mean and population variance of the last ``window`` values.

    The textbook one-pass form ``E[x²] - E[x]²`` cancels catastrophically when the
    spread is small against the level (a 70,000-won stock moving by 50 won). So the
    sums are kept of ``x - shift``, with ``shift`` reset to the window mean at every
    exact re-sum (every ``window`` pushes): the deviations stay near the spread's size.

    That alone fails when the window turns tight far from ``shift``: a stock locked
    limit-up after a 30% run has a window of equal prices whose true deviation is 0,
    while ``s2/n - m1²`` keeps a rounding residue of ``m1²`` and the square root
    magnifies it (sqrt(1e-7) = 3e-4 won). So ``mean_std`` also re-sums whenever the
    variance falls below ``m1² * 2**-20`` (the mean has moved a thousand standard
    deviations from ``shift``). That re-centres ``shift`` on the tight window, after
    which the condition cannot hold again until the mean moves another thousand
    standard deviations of the *new* window, which takes a new level shift: on price
    series it fires about once per regime change (a halt, a limit lock), so the cost
    stays amortized O(1). ``exact_resums`` counts both kinds, for the tests.
    """

    __slots__ = ("buf", "exact_resums", "s1", "s2", "shift", "window", "_until_exact")

    def __init__(self, window: int) -> None:
        self.window = window
        self.buf: deque[float] = deque(maxlen=window)
        self.shift = 0.0
        self.s1 = 0.0
        self.s2 = 0.0
        self._until_exact = window
        self.exact_resums = 0

    @property
    def full(self) -> bool:
        return len(self.buf) == self.window

    def push(self, x: float) -> None:
        buf = self.buf
        if not buf:
            self.shift = x
        d = x - self.shift
        if len(buf) == self.window:
            o = buf[0] - self.shift
            self.s1 += d - o
            self.s2 += d * d - o * o
        else:
            self.s1 += d
            self.s2 += d * d
        buf.append(x)
        self._until_exact -= 1
        if not self._until_exact:
            self._resum()

    def _resum(self) -> None:
        """Re-centre ``shift`` on the window mean and re-add both sums exactly."""
        self._until_exact = self.window
        self.exact_resums += 1
        buf = self.buf
        self.shift, self.s1, self.s2 = _exact_sums(lambda: iter(buf), len(buf))

    def mean_std(self) -> tuple[float, float]:
        """Mean and population (ddof=0) standard deviation of the values held."""
        n = len(self.buf)
        m1 = self.s1 / n
        var = self.s2 / n - m1 * m1
        if var < m1 * m1 * _TIGHT:
            self._resum()
            m1 = self.s1 / n
            var = self.s2 / n - m1 * m1
        return self.shift + m1, math.sqrt(var) if var > 0 else 0.0

    def peek_mean_std(self, x: float) -> tuple[float, float]:
        """What ``push(x)`` then ``mean_std()`` would return, changing nothing.

        Mirrors both step by step, including the periodic and the tight-window
        re-sums (done over the would-be window, without copying it), so the result is
        identical. O(1) except on the bars where ``push`` itself would re-sum.
        """
        buf = self.buf
        shift = self.shift if buf else x
        d = x - shift
        if len(buf) == self.window:
            o = buf[0] - shift
            s1 = self.s1 + (d - o)
            s2 = self.s2 + (d * d - o * o)
            n = self.window
        else:
            s1 = self.s1 + d
            s2 = self.s2 + d * d
            n = len(buf) + 1
        values = _after_push(buf, self.window, x)
        if self._until_exact == 1:
            shift, s1, s2 = _exact_sums(values, n)
        m1 = s1 / n
        var = s2 / n - m1 * m1
        if var < m1 * m1 * _TIGHT:
            shift, s1, s2 = _exact_sums(values, n)
            m1 = s1 / n
            var = s2 / n - m1 * m1
        return shift + m1, math.sqrt(var) if var > 0 else 0.0


def _exact_sums(values: Callable[[], Iterator[float]], n: int) -> tuple[float, float, float]:
    """(shift, s1, s2) re-added exactly over ``n`` values, ``shift`` their mean.

    ``values`` makes a fresh iterator per pass (three passes), so callers can hand a
    live buffer or a would-be window without materializing it. ``fsum`` is correctly
    rounded, hence independent of the order of the values.
    """
    shift = math.fsum(values()) / n
    s1 = math.fsum(v - shift for v in values())
    s2 = math.fsum((v - shift) * (v - shift) for v in values())
    return shift, s1, s2


class RollingExtreme:
    """Maximum (or minimum) of the last ``window`` values: a monotonic deque.

    The deque holds ``(index, value)`` pairs with strictly decreasing values; a push
    pops every value it dominates, so each value is pushed and popped at most once
    (amortized O(1)), and the front, evicted once it leaves the window, is the
    extreme. The minimum is the negated maximum of negated values (negation is exact).
    """

    __slots__ = ("_count", "_q", "_sign", "window")

    def __init__(self, window: int, *, highest: bool) -> None:
        self.window = window
        self._sign = 1.0 if highest else -1.0
        self._q: deque[tuple[int, float]] = deque()
        self._count = 0

    @property
    def full(self) -> bool:
        return self._count >= self.window

    def push(self, x: float) -> float:
        """Add ``x``; return the extreme of the last ``window`` values (so far)."""
        v = self._sign * x
        q = self._q
        while q and q[-1][1] <= v:
            q.pop()
        i = self._count
        q.append((i, v))
        if q[0][0] <= i - self.window:
            q.popleft()
        self._count = i + 1
        return self._sign * q[0][1]

    def full_after_push(self) -> bool:
        """Whether the window will be full once one more value is pushed."""
        return self._count + 1 >= self.window

    def peek(self, x: float) -> float:
        """What ``push(x)`` would return, changing nothing. O(1).

        ``push`` pops from the back every value ``<= v`` and then evicts at most one
        expired front entry (indices advance by one per push). So, with the deque
        strictly decreasing from the front:

        * ``v >= front``: everything is popped, the result is ``v``;
        * otherwise the front survives the pops; if it is not expired it is the
          result, and if it is, the new front is the second entry when that survives
          the pops (``> v``), else ``v`` itself.

        The same comparisons as ``push`` decide, so even ``-0.0`` against ``0.0``
        comes out the same.
        """
        v = self._sign * x
        q = self._q
        if not q or q[0][1] <= v:
            return self._sign * v
        if q[0][0] > self._count - self.window:
            return self._sign * q[0][1]
        if len(q) > 1 and q[1][1] > v:
            return self._sign * q[1][1]
        return self._sign * v
