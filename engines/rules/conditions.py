"""Condition alert rules as data: operands, TradingView's operators, triggers and templates.

A *price* rule (``spec.PriceRuleSpec``) is a bare threshold, indexed for O(log n)
ticks. Everything else a trader asks for ("RSI(14) < 30 on the daily", "MA20 crosses
MA60", "volume 3x its 20-bar average", "breaks the last pivot high") is a
``ConditionRuleSpec``: one to five conditions joined by AND or OR, plus how often it
may fire. It is stored as JSON in ``alert_rules.spec``; this module owns what a valid
one is, so the form, the API and the evaluator agree.

Every validation failure carries a stable code (pydantic error ``type``) because the
app translates errors by code. The codes are listed in ``ERROR_CODES``.

Semantics (the evaluator implements them; ``tests/unit/test_condition_semantics.py``
holds the table):

* ``crossing_up``: TradingView's ``ta.crossover``: on the previous evaluation
  ``left <= right``, and now ``left > right``. ``crossing_down`` mirrors it;
  ``crossing`` is either. ``greater``/``less`` are strict states.
* Channels are closed intervals: *inside* is ``lower <= v <= upper``, *outside* is
  the rest; *entering*/*exiting* are the edges between the two.
* *Moving up by X within N bars*: the value now minus its lowest value at the last N
  bar closes is at least X (or X% of that low). *Down* mirrors it with the highest.
"""

from __future__ import annotations

import math
import re
import string
from datetime import datetime, time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engines.indicators.registry import INDICATOR_NAMES, make_indicator
from engines.market import Timeframe
from engines.rules.spec import RuleSpecError, parse_level

MAX_CONDITIONS = 5
MAX_BARS = 500
"""Longest look-back of a *move* condition: two years of daily bars."""
MAX_DAYS = 1_000
"""Longest *new N-day high/low* window: about four years of trading days."""
MAX_PCT = 30.0
"""KRX's daily price limit: a change or gap beyond +-30% can never happen."""
MAX_FACTOR = 100.0
MAX_COOLDOWN_MINUTES = 7 * 24 * 60
MAX_TEMPLATE = 500
HYSTERESIS_MAX = 20.0

OUTPUTS: dict[str, tuple[str, ...]] = {
    "macd": ("macd", "signal", "histogram"),
    "bollinger": ("upper", "mid", "lower"),
    "stoch": ("k", "d"),
}
"""Indicators whose value has several lines: an operand must name one."""

PLACEHOLDERS = ("symbol", "name", "price", "change", "rule", "time", "values")
"""Template fields; ``v1``, ``v2``... name the indicator operands' values in order."""

ERROR_CODES = (
    "unknown_indicator",
    "indicator_param",
    "indicator_output",
    "timeframe_unsupported",
    "operands_both_constant",
    "channel_bounds_inverted",
    "value_not_finite",
    "amount_not_positive",
    "pct_out_of_range",
    "bars_out_of_range",
    "factor_out_of_range",
    "window_out_of_range",
    "days_out_of_range",
    "cooldown_required",
    "cooldown_out_of_range",
    "expiry_naive",
    "quiet_hours_empty",
    "template_too_long",
    "template_malformed",
    "template_unknown_placeholder",
    "conditions_count",
    "hysteresis_out_of_range",
)


def _err(code: str, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(code, message, ctx or None)


def _timeframe(value: Any) -> Timeframe:
    """A timeframe our candle aggregator builds from the broker's trades, or an error."""
    try:
        return Timeframe(value)
    except ValueError:
        supported = ", ".join(tf.value for tf in Timeframe)
        raise _err(
            "timeframe_unsupported",
            "timeframe {value} is not supported; use one of {supported}",
            value=str(value),
            supported=supported,
        ) from None


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _err("value_not_finite", "value must be a number")
    try:
        number = float(str(value).replace(",", "")) if isinstance(value, str) else float(value)
    except ValueError:
        raise _err("value_not_finite", "value must be a number") from None
    if not math.isfinite(number):
        raise _err("value_not_finite", "value must be a finite number")
    return number


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- operands ---------------------------------------------------------------


class PriceOperand(_Model):
    """The last trade price (at a bar close: that bar's close)."""

    kind: Literal["price"] = "price"


class ConstOperand(_Model):
    """A fixed number, e.g. 30 for an RSI threshold or 70,000 for a price."""

    kind: Literal["value"] = "value"
    value: float

    @field_validator("value", mode="before")
    @classmethod
    def _check(cls, value: Any) -> float:
        return _finite(value)


class IndicatorOperand(_Model):
    """An indicator with parameters on a timeframe (``None``: the rule's timeframe).

    ``output`` picks a line of a multi-line indicator (MACD's signal, Bollinger's
    upper band); single-line indicators take none.
    """

    kind: Literal["indicator"] = "indicator"
    name: str
    params: dict[str, int | float] = Field(default_factory=dict)
    timeframe: Timeframe | None = None
    output: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> str:
        if not isinstance(value, str) or value not in INDICATOR_NAMES:
            raise _err(
                "unknown_indicator",
                "unknown indicator {name}; known: {known}",
                name=str(value),
                known=", ".join(INDICATOR_NAMES),
            )
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _reject_bools(cls, value: Any) -> Any:
        """pydantic would coerce ``true`` to 1; a period is never a boolean."""
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, bool):
                    raise _err(
                        "indicator_param",
                        "{param} must be a number",
                        param=str(key),
                        detail="boolean",
                    )
        return value

    @field_validator("timeframe", mode="before")
    @classmethod
    def _check_tf(cls, value: Any) -> Timeframe | None:
        return None if value is None else _timeframe(value)

    @model_validator(mode="after")
    def _check_params(self) -> IndicatorOperand:
        try:
            make_indicator(self.name, self.params)
        except ValueError as exc:
            raise _err(
                "indicator_param", "{detail}", param=_param_in(str(exc)), detail=str(exc)
            ) from None
        outputs = OUTPUTS.get(self.name)
        if outputs is None and self.output is not None:
            raise _err(
                "indicator_output",
                "{name} has a single value; remove output {output}",
                name=self.name,
                output=self.output,
            )
        if outputs is not None and self.output not in outputs:
            raise _err(
                "indicator_output",
                "{name} needs output one of {outputs}",
                name=self.name,
                outputs=", ".join(outputs),
            )
        return self

    @property
    def key(self) -> str:
        """The indicator's sharing key (defaults filled in), without timeframe/output."""
        return make_indicator(self.name, self.params).key

    @property
    def label(self) -> str:
        args = ",".join(str(v) for v in make_indicator(self.name, self.params).params.values())
        name = self.name.upper() + (f"({args})" if args else "")
        return f"{name}.{self.output}" if self.output else name


def _param_in(message: str) -> str:
    """The parameter an indicator's ``ValueError`` names (its first word), for the form."""
    head = message.split(":", 1)[-1].strip().split(" ", 1)[0]
    return head.strip("'\",") or "params"


Operand = Annotated[PriceOperand | ConstOperand | IndicatorOperand, Field(discriminator="kind")]


# ---- conditions -------------------------------------------------------------


class CompareOp(StrEnum):
    CROSSING = "crossing"
    CROSSING_UP = "crossing_up"
    CROSSING_DOWN = "crossing_down"
    GREATER = "greater"
    LESS = "less"


class ChannelOp(StrEnum):
    ENTERING = "entering"
    EXITING = "exiting"
    INSIDE = "inside"
    OUTSIDE = "outside"


Direction = Literal["up", "down"]


class CompareCondition(_Model):
    """``left <op> right``: price crossing 70,000; MA20 crossing up MA60; RSI < 30."""

    type: Literal["compare"] = "compare"
    left: Operand
    op: CompareOp
    right: Operand

    @model_validator(mode="after")
    def _not_both_constant(self) -> CompareCondition:
        if isinstance(self.left, ConstOperand) and isinstance(self.right, ConstOperand):
            raise _err("operands_both_constant", "compare something that moves with a value")
        return self


class ChannelCondition(_Model):
    """``value`` against the channel ``[lower, upper]`` (bands may be indicators)."""

    type: Literal["channel"] = "channel"
    value: Operand = Field(default_factory=PriceOperand)
    op: ChannelOp
    lower: Operand
    upper: Operand

    @model_validator(mode="after")
    def _bounds(self) -> ChannelCondition:
        lo, hi = self.lower, self.upper
        if isinstance(lo, ConstOperand) and isinstance(hi, ConstOperand) and lo.value >= hi.value:
            raise _err(
                "channel_bounds_inverted",
                "the lower bound {lower} must be below the upper bound {upper}",
                lower=lo.value,
                upper=hi.value,
            )
        return self


class MoveCondition(_Model):
    """The value moved up (down) by ``amount`` won/points or % within ``bars`` bars."""

    type: Literal["move"] = "move"
    value: Operand = Field(default_factory=PriceOperand)
    direction: Direction
    amount: float
    unit: Literal["value", "pct"] = "pct"
    bars: int

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> float:
        number = _finite(value)
        if number <= 0:
            raise _err("amount_not_positive", "the amount must be greater than 0")
        return number

    @field_validator("bars", mode="before")
    @classmethod
    def _bars(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BARS:
            raise _err(
                "bars_out_of_range", "bars must be a whole number from 1 to {max}", max=MAX_BARS
            )
        return value

    @model_validator(mode="after")
    def _pct_down(self) -> MoveCondition:
        if self.unit == "pct" and self.amount > 100:
            raise _err("pct_out_of_range", "a move of more than 100% is not possible", max=100)
        return self


def _pct(value: Any) -> float:
    number = _finite(value)
    if not 0 < number <= MAX_PCT:
        raise _err("pct_out_of_range", "percent must be above 0 and at most {max}", max=MAX_PCT)
    return number


class ChangeCondition(_Model):
    """Price is up (down) by at least ``pct`` % from the previous close."""

    type: Literal["change"] = "change"
    direction: Direction
    pct: float

    @field_validator("pct", mode="before")
    @classmethod
    def _check_pct(cls, value: Any) -> float:
        return _pct(value)


class BreakoutCondition(_Model):
    """Price breaks resistance (crosses up) or support (crosses down).

    The level is the user's, or, when ``level`` is ``None``, the last confirmed
    pivot high (resistance) / pivot low (support) on ``timeframe``.
    """

    type: Literal["breakout"] = "breakout"
    side: Literal["resistance", "support"]
    level: int | None = None
    pivot_left: int = 5
    pivot_right: int = 5

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            return parse_level(value)
        except RuleSpecError as exc:
            raise _err(exc.code, exc.message) from None

    @field_validator("pivot_left", "pivot_right", mode="before")
    @classmethod
    def _pivot(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 50:
            raise _err("window_out_of_range", "pivot bars must be from 1 to {max}", max=50)
        return value


class VolumeSpikeCondition(_Model):
    """This bar's volume is at least ``factor`` x the average of the previous ``window`` bars."""

    type: Literal["volume_spike"] = "volume_spike"
    factor: float
    window: int = 20

    @field_validator("factor", mode="before")
    @classmethod
    def _factor(cls, value: Any) -> float:
        number = _finite(value)
        if not 1 < number <= MAX_FACTOR:
            raise _err(
                "factor_out_of_range", "factor must be above 1 and at most {max}", max=MAX_FACTOR
            )
        return number

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BARS:
            raise _err("window_out_of_range", "window must be from 1 to {max}", max=MAX_BARS)
        return value


class ExtremeCondition(_Model):
    """Price above the highest high (below the lowest low) of the previous ``days`` days."""

    type: Literal["new_extreme"] = "new_extreme"
    side: Literal["high", "low"]
    days: int = 20

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
            raise _err("days_out_of_range", "days must be from 1 to {max}", max=MAX_DAYS)
        return value


class GapCondition(_Model):
    """Today's open is at least ``pct`` % above (below) the previous close."""

    type: Literal["gap"] = "gap"
    direction: Direction
    pct: float

    @field_validator("pct", mode="before")
    @classmethod
    def _check_pct(cls, value: Any) -> float:
        return _pct(value)


Condition = Annotated[
    CompareCondition
    | ChannelCondition
    | MoveCondition
    | ChangeCondition
    | BreakoutCondition
    | VolumeSpikeCondition
    | ExtremeCondition
    | GapCondition,
    Field(discriminator="type"),
]


# ---- trigger ----------------------------------------------------------------


class Frequency(StrEnum):
    ONCE = "once"
    """Fire one time, then the rule is finished."""
    ONCE_PER_BAR = "once_per_bar"
    """Evaluate on every tick; fire at most once per bar of the rule's timeframe."""
    ONCE_PER_BAR_CLOSE = "once_per_bar_close"
    """Evaluate only when a bar of the rule's timeframe closes."""
    COOLDOWN = "cooldown"
    """Evaluate on every tick; fire at most once per ``cooldown_minutes``."""


class QuietHours(_Model):
    """A daily window, in the user's time zone, in which deliveries are held back.

    ``start > end`` wraps midnight (22:00-07:00). ``action`` says what happens to an
    alert raised inside: ``defer`` delivers it when the window ends, ``drop`` keeps it
    in the history only.
    """

    start: time
    end: time
    action: Literal["defer", "drop"] = "defer"

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise _err("quiet_hours_empty", "quiet hours must start and end at different times")
        return self


def template_fields(template: str) -> list[str]:
    """The placeholder names in ``template``; ``ValueError`` if its braces are malformed."""
    names: list[str] = []
    for _literal, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if spec or conversion or not field.isidentifier():
            raise ValueError(field)
        names.append(field)
    return names


class ConditionRuleSpec(_Model):
    """One to five conditions joined by ``logic``, with a trigger policy and a template.

    ``hysteresis_pct`` (0 turns it off): after a firing the rule is *disarmed* until
    the conditions are false by that margin (each threshold moved ``hysteresis_pct`` %
    in the conditions' favour), so a value oscillating around a level fires once.
    """

    kind: Literal["condition"] = "condition"
    timeframe: Timeframe = Timeframe.D1
    logic: Literal["and", "or"] = "and"
    conditions: list[Condition]
    frequency: Frequency = Frequency.ONCE_PER_BAR
    cooldown_minutes: int | None = None
    expires_at: datetime | None = None
    quiet_hours: QuietHours | None = None
    hysteresis_pct: float = 0.5
    template: str = ""
    channels: list[str] = Field(default_factory=lambda: ["in_app"])

    @field_validator("timeframe", mode="before")
    @classmethod
    def _tf(cls, value: Any) -> Timeframe:
        return _timeframe(value)

    @field_validator("conditions", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_CONDITIONS:
            raise _err("conditions_count", "use 1 to {max} conditions", max=MAX_CONDITIONS)
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        """Channel names are the app's; the engine only keeps them tidy (order, no twins)."""
        seen: list[str] = []
        for name in value:
            if not re.fullmatch(r"[a-z_]{1,16}", name) or len(seen) >= 8:
                raise _err("bad_choice", "unknown channel {name}", name=name)
            if name not in seen:
                seen.append(name)
        return seen

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise _err("expiry_naive", "the expiry needs a time zone")
        return value

    @field_validator("hysteresis_pct", mode="before")
    @classmethod
    def _hyst(cls, value: Any) -> float:
        number = _finite(value)
        if not 0 <= number <= HYSTERESIS_MAX:
            raise _err(
                "hysteresis_out_of_range", "hysteresis must be 0 to {max}%", max=HYSTERESIS_MAX
            )
        return number

    @model_validator(mode="after")
    def _trigger(self) -> ConditionRuleSpec:
        if self.frequency is Frequency.COOLDOWN:
            if self.cooldown_minutes is None:
                raise _err("cooldown_required", "give the cooldown in minutes")
            if not 1 <= self.cooldown_minutes <= MAX_COOLDOWN_MINUTES:
                raise _err(
                    "cooldown_out_of_range",
                    "cooldown must be 1 to {max} minutes",
                    max=MAX_COOLDOWN_MINUTES,
                )
        if len(self.template) > MAX_TEMPLATE:
            raise _err("template_too_long", "at most {max} characters", max=MAX_TEMPLATE)
        try:
            fields = template_fields(self.template)
        except ValueError:
            raise _err("template_malformed", "braces must enclose a placeholder name") from None
        known = set(PLACEHOLDERS) | {f"v{i}" for i in range(1, len(self.operand_labels()) + 1)}
        for name in fields:
            if name not in known:
                raise _err(
                    "template_unknown_placeholder",
                    "unknown placeholder {{{name}}}",
                    name=name,
                )
        return self

    def operands(self) -> list[IndicatorOperand]:
        """The indicator operands in order, each once: ``v1``, ``v2``... in templates."""
        out: list[IndicatorOperand] = []
        for cond in self.conditions:
            for attr in ("left", "right", "value", "lower", "upper"):
                operand = getattr(cond, attr, None)
                if isinstance(operand, IndicatorOperand) and operand not in out:
                    out.append(operand)
        return out

    def operand_labels(self) -> list[str]:
        return [op.label for op in self.operands()]

    def operand_timeframe(self, operand: IndicatorOperand) -> Timeframe:
        return operand.timeframe or self.timeframe
