"""Strategies: the API (``base``), the built-ins, the ML strategy and the registry."""

from engines.strategies.base import (
    Account,
    Action,
    Context,
    LookAheadError,
    OrderKind,
    ParamRange,
    Signal,
    Strategy,
    StrategyHost,
    StrategyParams,
)

__all__ = [
    "Account",
    "Action",
    "Context",
    "LookAheadError",
    "OrderKind",
    "ParamRange",
    "Signal",
    "Strategy",
    "StrategyHost",
    "StrategyParams",
]
