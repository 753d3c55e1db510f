"""Parameter pieces shared by the built-in strategies.

Several built-ins take the same knobs (a fast/slow average pair, a trade fraction) and
enforce the same cross-field rules. Defining them once keeps their bounds, error codes
and messages identical across strategies, which the registry's error mapping and the
parameter forms rely on (a ``fast_not_shorter`` error must look the same whichever
strategy raised it).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from engines.strategies.base import StrategyParams


def fraction_field() -> Any:
    """The share of the account a BUY commits; a fresh ``Field`` per class that uses it."""
    return Field(1.0, gt=0.0, le=1.0, json_schema_extra={"step": 0.05})


def check_fast_shorter(slow: int, info: ValidationInfo) -> int:
    """Reject a fast window that is not shorter than the slow one.

    Meant to be attached to ``slow``, declared after ``fast``: a field validator sees
    only the fields before it, and attaching the error to a field lets the form show it
    there.
    """
    fast = info.data.get("fast")
    if fast is not None and fast >= slow:
        raise PydanticCustomError(
            "fast_not_shorter",
            "the fast average ({fast}) must be shorter than the slow one ({slow})",
            {"fast": fast, "slow": slow},
        )
    return slow


def check_lower_below(lower_field: str, upper: int, info: ValidationInfo) -> int:
    """Reject a buy level (``lower_field``) that is not below the sell level ``upper``."""
    lower = info.data.get(lower_field)
    if lower is not None and lower >= upper:
        raise PydanticCustomError(
            "lower_not_below_upper",
            "the buy level ({lower}) must be below the sell level ({upper})",
            {"lower": lower, "upper": upper},
        )
    return upper


class MovingAveragePairParams(StrategyParams):
    """``kind``/``fast``/``slow`` for strategies built on two moving averages.

    Subclasses append their own fields after these, so the declared order (and the
    form built from it) stays kind, fast, slow, then the rest.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    kind: Literal["sma", "ema"] = "sma"
    fast: int = Field(20, ge=5, le=100, json_schema_extra={"step": 5})
    slow: int = Field(60, ge=10, le=300, json_schema_extra={"step": 10})

    _fast_shorter = field_validator("slow")(check_fast_shorter)
