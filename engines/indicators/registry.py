"""Indicators by name: the vocabulary that declarative rule specs use.

A rule names an indicator and its parameters as JSON data
(``{"name": "rsi", "params": {"window": 14}}``); ``make_indicator`` turns that into an
instance, with a clear ``ValueError`` for anything a user could get wrong. The names in
``INDICATOR_NAMES`` are stored in the database inside rule specs, so they are stable:
add names, never rename or remove one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from engines.indicators.base import Indicator
from engines.indicators.extremes import High52W, Highest, Low52W, Lowest
from engines.indicators.moving import EMA, SMA, WMA, VolumeSMA
from engines.indicators.oscillators import MACD, RSI, Stochastic
from engines.indicators.pivots import PivotHigh, PivotLow
from engines.indicators.volatility import ATR, Bollinger
from engines.indicators.volume import OBV, VWAP

_CLASSES: tuple[type[Indicator[Any]], ...] = (
    SMA,
    EMA,
    WMA,
    RSI,
    MACD,
    Bollinger,
    ATR,
    Stochastic,
    VWAP,
    OBV,
    Highest,
    Lowest,
    High52W,
    Low52W,
    VolumeSMA,
    PivotHigh,
    PivotLow,
)

REGISTRY: dict[str, type[Indicator[Any]]] = {cls.name: cls for cls in _CLASSES}

INDICATOR_NAMES: tuple[str, ...] = tuple(REGISTRY)
"""Every registered name, in a fixed order."""


def _signature(cls: type[Indicator[Any]]) -> tuple[frozenset[str], frozenset[str]]:
    """(all parameter names, required ones) of ``cls.__init__``."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    names = frozenset(p.name for p in params)
    required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)
    return names, required


_SIGNATURES = {name: _signature(cls) for name, cls in REGISTRY.items()}


def make_indicator(name: str, params: Mapping[str, object] | None = None) -> Indicator[Any]:
    """A fresh indicator ``name`` with ``params``; ``ValueError`` on an unknown name, an
    unknown or missing parameter, or a bad value (the message names the culprit)."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown indicator {name!r}; known: {', '.join(INDICATOR_NAMES)}")
    given = dict(params or {})
    allowed, required = _SIGNATURES[name]
    unknown = sorted(set(given) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"{name}: unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}")
    missing = sorted(required - set(given))
    if missing:
        raise ValueError(f"{name}: missing parameter(s) {', '.join(missing)}")
    return cls(**given)


def indicator_key(name: str, params: Mapping[str, object] | None = None) -> str:
    """The sharing key of ``make_indicator(name, params)``, defaults filled in, so
    ``{"window": 14}`` and ``{}`` give the same key for ``rsi``."""
    return make_indicator(name, params).key
