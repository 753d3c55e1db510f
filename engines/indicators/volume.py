"""Volume indicators: session-anchored VWAP and on-balance volume."""

from __future__ import annotations

from collections.abc import Hashable
from enum import Enum

from engines.indicators.base import Indicator


class _NoSession(Enum):
    """Sentinel type for "no session yet". An enum member, not a bare ``object()``,
    because ``copy.deepcopy`` (the generic ``peek``) returns enum members themselves
    but makes a *new* ``object()``, and a sentinel should keep its identity."""

    TOKEN = 0


_NO_SESSION = _NoSession.TOKEN


class VWAP(Indicator[float]):
    """Volume-weighted average of the typical price ``(high + low + close) / 3`` since
    the start of the session.

    Engines cannot read a clock, so the caller names the session: ``update`` takes a
    ``session`` key (any hashable, typically the KST trading date of the candle), and
    the sums restart whenever the key differs from the previous bar's.

    ``ta``'s ``VolumeWeightedAveragePrice`` is a *rolling* VWAP over a fixed number of
    bars instead; at the k-th bar of a session the two coincide for a rolling window
    of k, which is how the tests compare them. The value is ``None`` (not ready) until
    the session has traded some volume: a VWAP of nothing is undefined. Sessions are
    bounded (a KRX day is 390 one-minute bars), so the plain running sums do not
    drift meaningfully.
    """

    __slots__ = ("_pv", "_session", "_volume")
    name = "vwap"
    inputs = ("high", "low", "close", "volume", "session")

    def __init__(self) -> None:
        self.warmup = 1
        self.value = None
        self._session: Hashable = _NO_SESSION
        self._pv = 0.0
        self._volume = 0.0

    def update(
        self, high: float, low: float, close: float, volume: float, session: Hashable
    ) -> float | None:
        if volume < 0:
            raise ValueError(f"volume must be >= 0, got {volume}")
        if session != self._session:
            self._session = session
            self._pv = 0.0
            self._volume = 0.0
            self.value = None
        self._pv += (high + low + close) / 3.0 * volume
        self._volume += volume
        if self._volume > 0:
            self.value = self._pv / self._volume
        return self.value

    def peek(
        self, high: float, low: float, close: float, volume: float, session: Hashable
    ) -> float | None:
        """``update(...)`` without committing it: O(1). Rejects a negative volume too."""
        if volume < 0:
            raise ValueError(f"volume must be >= 0, got {volume}")
        if session != self._session:
            pv, total, value = 0.0, 0.0, None
        else:
            pv, total, value = self._pv, self._volume, self.value
        pv += (high + low + close) / 3.0 * volume
        total += volume
        return pv / total if total > 0 else value


class OBV(Indicator[float]):
    """On-balance volume: a running total that adds the bar's volume when the close
    rose and subtracts it when the close fell.

    Follows ``ta``: a bar whose close is *unchanged* adds its volume (the textbook adds
    nothing), and so does the very first bar (there is nothing to compare it to). Only
    changes of OBV carry meaning, so the constant offset does not matter to rules.
    """

    __slots__ = ("_prev",)
    name = "obv"
    inputs = ("close", "volume")

    def __init__(self) -> None:
        self.warmup = 1
        self.value = None
        self._prev: float | None = None

    def update(self, close: float, volume: float) -> float | None:
        total = 0.0 if self.value is None else self.value
        prev = self._prev
        self._prev = close
        self.value = total - volume if prev is not None and close < prev else total + volume
        return self.value

    def peek(self, close: float, volume: float) -> float | None:
        """``update(close, volume)`` without committing it: O(1)."""
        total = 0.0 if self.value is None else self.value
        prev = self._prev
        return total - volume if prev is not None and close < prev else total + volume
