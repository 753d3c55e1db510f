"""The ML strategy's feature vector and labels, computed bar by bar.

One streaming builder serves both the live strategy and offline use
(:func:`build_features`), so a model trained on history sees exactly the numbers it
will be asked about live. Every feature at bar ``t`` is computed from bars up to
``t`` only (streaming indicators cannot do otherwise); the tests check that the row
for bar ``t`` is the same whether or not later bars exist.

Features are scale-free (returns, ratios, 0..1 oscillators), so one model shape fits
a 2,000-won stock and a 700,000-won one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from engines.indicators import Indicator, make_indicator
from engines.market import Candle

RETURN_LAGS: tuple[int, ...] = (1, 2, 5, 10, 20)

FEATURE_NAMES: tuple[str, ...] = (
    *(f"ret_{lag}" for lag in RETURN_LAGS),
    "rsi_14",
    "macd_hist",
    "bb_pctb",
    "bb_width",
    "vol_ratio",
    "atr_pct",
)
"""Column order of every feature row. Stored with each trained model: a model is only
installed where its feature names match these."""


class FeatureBuilder:
    """Turns closed candles into feature rows, O(1) per bar.

    ``update`` returns ``None`` until every feature exists (the MACD's warm-up, 34
    bars, is the longest), then a tuple ordered like :data:`FEATURE_NAMES`.
    """

    __slots__ = ("_atr", "_bands", "_closes", "_macd", "_rsi", "_vol")

    def __init__(self) -> None:
        self._closes: deque[float] = deque(maxlen=max(RETURN_LAGS) + 1)
        self._rsi: Indicator[Any] = make_indicator("rsi", {"window": 14})
        self._macd: Indicator[Any] = make_indicator("macd", {"fast": 12, "slow": 26, "signal": 9})
        self._bands: Indicator[Any] = make_indicator("bollinger", {"window": 20, "num_std": 2.0})
        self._vol: Indicator[Any] = make_indicator("volume_sma", {"window": 20})
        self._atr: Indicator[Any] = make_indicator("atr", {"window": 14})

    @property
    def warmup(self) -> int:
        """Bars fed before the first row (the first row comes with bar ``warmup``)."""
        return max(
            max(RETURN_LAGS) + 1,
            self._rsi.warmup,
            self._macd.warmup,
            self._bands.warmup,
            self._vol.warmup,
            self._atr.warmup,
        )

    def update(self, candle: Candle) -> tuple[float, ...] | None:
        close = float(candle.close)
        self._closes.append(close)
        rsi = self._rsi.update(close)
        macd = self._macd.update(close)
        bands = self._bands.update(close)
        vol_avg = self._vol.update(candle.volume)
        atr = self._atr.update(candle.high, candle.low, close)
        closes = self._closes
        if (
            len(closes) < closes.maxlen  # type: ignore[operator]
            or rsi is None
            or macd is None
            or bands is None
            or vol_avg is None
            or atr is None
        ):
            return None
        returns = [close / closes[-1 - lag] - 1.0 for lag in RETURN_LAGS]
        width = bands.upper - bands.lower
        pctb = (close - bands.lower) / width if width > 0 else 0.5
        return (
            *returns,
            rsi / 100.0,
            macd.histogram / close,
            pctb,
            width / bands.mid if bands.mid else 0.0,
            candle.volume / vol_avg if vol_avg > 0 else 1.0,
            atr / close,
        )


def build_features(candles: Iterable[Candle]) -> list[tuple[float, ...] | None]:
    """The feature row of every candle (``None`` during warm-up), as the strategy sees it."""
    builder = FeatureBuilder()
    return [builder.update(c) for c in candles]


def forward_labels(closes: Sequence[float], horizon: int) -> list[int | None]:
    """1 where the close ``horizon`` bars later is higher, else 0; ``None`` for the last
    ``horizon`` bars, whose outcome is not known yet.

    The label of bar ``i`` becomes known at bar ``i + horizon``: a training set built
    at bar ``t`` may hold bar ``i`` only if ``i + horizon <= t``.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    n = len(closes)
    return [
        (1 if closes[i + horizon] > closes[i] else 0) if i + horizon < n else None for i in range(n)
    ]
