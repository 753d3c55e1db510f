"""Operands as people type them: ``price``, ``70,000``, ``RSI(14)``, ``MA(20)@1d``.

The rule builder takes an operand as one short text rather than four dropdowns,
because that is how traders write conditions ("MA20 crosses MA60", "RSI(14) < 30").
``parse_operand`` turns it into the operand JSON of ``conditions.py`` and
``format_operand`` turns it back, so editing a stored rule shows what was typed.

Grammar (case-insensitive, spaces ignored)::

    operand  := "price" | number | name [ "(" args ")" ] [ "." output ] [ "@" timeframe ]
    args     := arg { "," arg }      arg := number | param "=" number

Positional arguments fill the indicator's parameters in order (``MACD(12,26,9)``).
Errors are ``RuleSpecError`` with a stable code the app translates.
"""

from __future__ import annotations

import re
from typing import Any

from engines.indicators.registry import INDICATOR_NAMES, REGISTRY, make_indicator
from engines.market import Timeframe
from engines.rules.conditions import OUTPUTS
from engines.rules.spec import RuleSpecError

MAX_EXPR = 60

ALIASES = {
    "ma": "sma",
    "bb": "bollinger",
    "bbands": "bollinger",
    "stochastic": "stoch",
    "vol_ma": "volume_sma",
    "vma": "volume_sma",
    "high52": "high_52w",
    "low52": "low_52w",
}
OUTPUT_ALIASES = {"hist": "histogram", "middle": "mid", "basis": "mid", "line": "macd"}
PRICE_WORDS = {"price", "close", "현재가", "가격"}

_EXPR = re.compile(
    r"(?P<name>[a-z_][a-z0-9_]*)"
    r"(?:\((?P<args>[^()]*)\))?"
    r"(?:\.(?P<output>[a-z_]+))?"
    r"(?:@(?P<tf>[0-9a-z]+))?"
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?")


def _number(text: str) -> float | int:
    if not _NUMBER.fullmatch(text):
        raise ValueError(text)
    plain = text.replace(",", "")
    return float(plain) if "." in plain else int(plain)


def parse_operand(text: str) -> dict[str, Any]:
    """The operand JSON for ``text``, or ``RuleSpecError`` (``expr_empty``,
    ``expr_too_long``, ``expr_malformed``, ``unknown_indicator``, ``indicator_param``,
    ``indicator_output``, ``timeframe_unsupported``)."""
    raw = (text or "").strip()
    if not raw:
        raise RuleSpecError("expr_empty", "enter price, a number or an indicator such as RSI(14)")
    if len(raw) > MAX_EXPR:
        raise RuleSpecError("expr_too_long", f"at most {MAX_EXPR} characters")
    compact = re.sub(r"\s+", "", raw).lower()
    if compact in PRICE_WORDS:
        return {"kind": "price"}
    try:
        return {"kind": "value", "value": float(_number(compact))}
    except ValueError:
        pass
    match = _EXPR.fullmatch(compact)
    if match is None:
        raise RuleSpecError(
            "expr_malformed", f"cannot read {raw!r}; write e.g. RSI(14) or MA(20)@1d"
        )
    name = ALIASES.get(match["name"], match["name"])
    cls = REGISTRY.get(name)
    if cls is None:
        raise RuleSpecError(
            "unknown_indicator",
            f"unknown indicator {match['name']}; known: {', '.join(INDICATOR_NAMES)}",
        )
    params = _params(cls.param_names, match["args"], name)
    output = match["output"]
    if output is not None:
        output = OUTPUT_ALIASES.get(output, output)
    outputs = OUTPUTS.get(name)
    if outputs is not None and output is None:
        output = outputs[0]
    if output is not None and (outputs is None or output not in outputs):
        choices = ", ".join(outputs) if outputs else "none"
        raise RuleSpecError("indicator_output", f"{name} has no line {output}; lines: {choices}")
    tf = match["tf"]
    if tf is not None:
        tf = {"d": "1d", "w": "1w", "day": "1d", "week": "1w", "1h": "60m", "h": "60m"}.get(tf, tf)
        if tf not in {t.value for t in Timeframe}:
            supported = ", ".join(t.value for t in Timeframe)
            raise RuleSpecError(
                "timeframe_unsupported", f"timeframe {tf} is not supported; use {supported}"
            )
    return {"kind": "indicator", "name": name, "params": params, "timeframe": tf, "output": output}


def _params(names: tuple[str, ...], args: str | None, indicator: str) -> dict[str, int | float]:
    params: dict[str, int | float] = {}
    if not args:
        return params
    for position, part in enumerate(args.split(",")):
        key, _, value = part.rpartition("=")
        if not key:
            if position >= len(names):
                raise RuleSpecError(
                    "indicator_param", f"{indicator} takes at most {len(names)} numbers"
                )
            key = names[position]
        if key not in names:
            raise RuleSpecError("indicator_param", f"{indicator} has no parameter {key}")
        try:
            params[key] = _number(value)
        except ValueError:
            raise RuleSpecError(
                "indicator_param", f"{key} must be a number, got {value!r}"
            ) from None
    try:
        make_indicator(indicator, params)
    except ValueError as exc:
        raise RuleSpecError("indicator_param", str(exc)) from None
    return params


def format_operand(operand: dict[str, Any]) -> str:
    """The text ``parse_operand`` reads back into ``operand``."""
    kind = operand.get("kind")
    if kind == "price":
        return "price"
    if kind == "value":
        value = float(operand["value"])
        return f"{int(value):,}" if value.is_integer() else f"{value:g}"
    params = operand.get("params") or {}
    text = operand["name"].upper()
    if params:
        names = REGISTRY[operand["name"]].param_names
        ordered = [n for n in names if n in params]
        positional = ordered == list(names[: len(ordered)])
        parts = [_num(params[n]) if positional else f"{n}={_num(params[n])}" for n in ordered]
        text += "(" + ",".join(parts) + ")"
    if operand.get("output"):
        text += f".{operand['output']}"
    if operand.get("timeframe"):
        text += f"@{operand['timeframe']}"
    return text


def _num(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
