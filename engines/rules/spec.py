"""Declarative price alert rules, validated once and stored as JSON.

Users never upload code: a rule is data. This module owns what a valid price rule
is, so that the form layer, the API and the rule book all agree. Validation
failures carry a stable *code* (``RuleSpecError.code``, or the pydantic error
``type``) because the app translates errors by code, not by English message.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from engines.market import tick_size

LEVEL_MAX = 100_000_000
"""Exclusive upper bound of a level in won: no KRX stock trades anywhere near it."""

BAND_PCT_MAX = 20.0
"""Largest re-arm band in percent: wider than that and a rule would hardly ever re-arm."""

LEVEL_NOT_NUMBER = "level_not_number"
LEVEL_NOT_INTEGER = "level_not_integer"
LEVEL_NOT_POSITIVE = "level_not_positive"
LEVEL_TOO_LARGE = "level_too_large"

# Plain digits, or digits grouped by thousands commas ("70,000"), optionally signed,
# optionally with a decimal fraction (rejected later unless it is all zeros).
# ASCII only: int() would otherwise accept other scripts' digits and "7_0000".
_LEVEL_RE = re.compile(r"([+-]?)([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.([0-9]+))?")


class RuleSpecError(ValueError):
    """A rule input the user must fix. ``code`` is stable; ``message`` is short English."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PriceOp(StrEnum):
    """How a price relates to the level. Korean UI: ``above`` 이상, ``below`` 이하."""

    ABOVE = "above"
    """Condition: price >= level."""
    BELOW = "below"
    """Condition: price <= level."""
    CROSS_UP = "cross_up"
    """Event: price moves from < level to >= level."""
    CROSS_DOWN = "cross_down"
    """Event: price moves from > level to <= level."""
    CROSS = "cross"
    """Event: either crossing."""


def _check_range(value: int) -> int:
    if value <= 0:
        raise RuleSpecError(LEVEL_NOT_POSITIVE, "level must be greater than 0")
    if value >= LEVEL_MAX:
        raise RuleSpecError(LEVEL_TOO_LARGE, f"level must be less than {LEVEL_MAX:,}")
    return value


def parse_level(raw: str | int | float) -> int:
    """Turn what a user typed (or a JSON value) into a level in whole won.

    Accepts ints, integral floats (``70000.0``), and strings of digits with optional
    thousands commas (``"70,000"``), because that is how people type prices.
    Rejects booleans (``True`` is an ``int`` in Python, never a price), scientific
    notation (``"7e4"``: not how a price is written, and usually a paste accident),
    fractions, and anything outside 0 < level < 100,000,000.

    Raises ``RuleSpecError`` whose ``code`` is one of ``level_not_number``,
    ``level_not_integer``, ``level_not_positive``, ``level_too_large``.
    """
    value: Any = raw
    if isinstance(value, bool):
        raise RuleSpecError(LEVEL_NOT_NUMBER, "level must be a number, not true/false")
    if isinstance(value, int):
        return _check_range(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RuleSpecError(LEVEL_NOT_NUMBER, "level must be a finite number")
        if not value.is_integer():
            raise RuleSpecError(LEVEL_NOT_INTEGER, "level must be a whole number of won")
        return _check_range(int(value))
    if not isinstance(value, str):
        raise RuleSpecError(LEVEL_NOT_NUMBER, "level must be a number")
    match = _LEVEL_RE.fullmatch(value.strip())
    if match is None:
        raise RuleSpecError(LEVEL_NOT_NUMBER, "level must be a number such as 70000 or 70,000")
    sign, whole, fraction = match.groups()
    if fraction is not None and fraction.strip("0"):
        raise RuleSpecError(LEVEL_NOT_INTEGER, "level must be a whole number of won")
    digits = whole.replace(",", "").lstrip("0") or "0"
    if digits == "0":
        raise RuleSpecError(LEVEL_NOT_POSITIVE, "level must be greater than 0")
    if sign == "-":
        raise RuleSpecError(LEVEL_NOT_POSITIVE, "level must be greater than 0")
    # Decide "too large" on the digit count before int(): a pasted 5,000-digit
    # string would otherwise hit Python's int-parsing limit with a ValueError.
    if len(digits) > len(str(LEVEL_MAX)):
        raise RuleSpecError(LEVEL_TOO_LARGE, f"level must be less than {LEVEL_MAX:,}")
    return _check_range(int(digits))


def rearm_band_won(level: int, band_pct: float) -> int:
    """Hysteresis band in won: at least one tick at the level, else ceil(level * pct%).

    The percentage goes through ``Fraction(repr(pct))`` so that 0.1% of 70,000 is
    exactly 70, not ``ceil(70.00000000000001) == 71``.
    """
    exact = Fraction(level) * Fraction(repr(band_pct)) / 100
    return max(tick_size(level), math.ceil(exact))


class PriceRuleSpec(BaseModel):
    """A price threshold alert, as stored (JSON) and as the rule book indexes it.

    ``repeat="once"`` fires one time and is then finished (TradingView's "Only
    once"). ``repeat="rearm"`` fires again only after the price has retreated by the
    hysteresis band, so a price jittering around the level does not spam the user.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["price"] = "price"
    op: PriceOp
    level: int
    repeat: Literal["once", "rearm"] = "once"
    rearm_band_pct: float = Field(default=0.5, gt=0, le=BAND_PCT_MAX, allow_inf_nan=False)

    @field_validator("level", mode="before")
    @classmethod
    def _validate_level(cls, value: Any) -> int:
        """Reuse ``parse_level`` so the form and the model can never disagree."""
        try:
            return parse_level(value)
        except RuleSpecError as exc:
            raise PydanticCustomError(exc.code, exc.message) from None

    @field_validator("rearm_band_pct", mode="before")
    @classmethod
    def _reject_bool_pct(cls, value: Any) -> Any:
        """pydantic's lax float accepts ``True`` as 1.0; a band is never a boolean."""
        if isinstance(value, bool):
            raise PydanticCustomError("band_not_number", "rearm band must be a number")
        return value

    def rearm_band(self) -> int:
        """The re-arm band of this rule in won (see ``rearm_band_won``)."""
        return rearm_band_won(self.level, self.rearm_band_pct)
