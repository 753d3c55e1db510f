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

import math
from collections import deque
from typing import ClassVar, Generic, TypeVar

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

    def __repr__(self) -> str:
        return f"<{self.key} value={self.value!r}>"


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
        buf = self.buf
        self._until_exact = self.window
        self.exact_resums += 1
        shift = math.fsum(buf) / len(buf)
        self.shift = shift
        self.s1 = math.fsum(v - shift for v in buf)
        self.s2 = math.fsum((v - shift) * (v - shift) for v in buf)

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
