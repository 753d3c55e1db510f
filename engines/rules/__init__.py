"""Declarative alert rules (``spec``) and the indexed rule book that evaluates them (``book``)."""

from engines.rules.book import Action, Fired, RuleBook
from engines.rules.spec import (
    LEVEL_MAX,
    LEVEL_NOT_INTEGER,
    LEVEL_NOT_NUMBER,
    LEVEL_NOT_POSITIVE,
    LEVEL_TOO_LARGE,
    PriceOp,
    PriceRuleSpec,
    RuleSpecError,
    parse_level,
    rearm_band_won,
)

__all__ = [
    "LEVEL_MAX",
    "LEVEL_NOT_INTEGER",
    "LEVEL_NOT_NUMBER",
    "LEVEL_NOT_POSITIVE",
    "LEVEL_TOO_LARGE",
    "Action",
    "Fired",
    "PriceOp",
    "PriceRuleSpec",
    "RuleBook",
    "RuleSpecError",
    "parse_level",
    "rearm_band_won",
]
