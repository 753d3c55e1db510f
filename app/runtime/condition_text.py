"""Condition rules in words, and their alert text, in the reader's language.

The summary ("RSI(14) < 30 · Daily") is what the rule list, the history and a
template-less alert show. A user's own template is filled with the firing's values
here, when the alert is recorded, so every channel carries the same rendered text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.i18n import translate
from engines.rules.conditions import ConditionRuleSpec
from engines.rules.expr import format_operand


def number(value: float) -> str:
    """Prices and big values with thousands separators; small ones (RSI) with 2 decimals."""
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return f"{value:,.2f}"


def _operand(operand: dict[str, Any], lang: str) -> str:
    if operand.get("kind") == "price":
        return translate("cond.price", lang)
    return format_operand(operand)


def describe_condition(cond: dict[str, Any], lang: str) -> str:
    kind = cond["type"]
    if kind == "compare":
        return translate(
            f"cond.compare.{cond['op']}",
            lang,
            left=_operand(cond["left"], lang),
            right=_operand(cond["right"], lang),
        )
    if kind == "channel":
        return translate(
            f"cond.channel.{cond['op']}",
            lang,
            value=_operand(cond["value"], lang),
            lower=_operand(cond["lower"], lang),
            upper=_operand(cond["upper"], lang),
        )
    if kind == "move":
        return translate(
            f"cond.move.{cond['direction']}.{cond['unit']}",
            lang,
            value=_operand(cond["value"], lang),
            amount=number(cond["amount"]),
            bars=cond["bars"],
        )
    if kind in {"change", "gap"}:
        return translate(f"cond.{kind}.{cond['direction']}", lang, pct=number(cond["pct"]))
    if kind == "breakout":
        if cond.get("level") is None:
            return translate(
                f"cond.breakout.{cond['side']}_auto",
                lang,
                left=cond["pivot_left"],
                right=cond["pivot_right"],
            )
        return translate(f"cond.breakout.{cond['side']}", lang, level=f"{cond['level']:,}")
    if kind == "volume_spike":
        return translate(
            "cond.volume_spike", lang, factor=number(cond["factor"]), window=cond["window"]
        )
    if kind == "new_extreme":
        return translate(f"cond.new_extreme.{cond['side']}", lang, days=cond["days"])
    raise ValueError(f"unknown condition type {kind!r}")


def describe(spec: dict[str, Any] | ConditionRuleSpec, lang: str) -> str:
    """One line: the conditions joined by and/or, then the timeframe."""
    data = spec.model_dump(mode="json") if isinstance(spec, ConditionRuleSpec) else spec
    joiner = translate(f"cond.{data.get('logic', 'and')}", lang)
    conditions = joiner.join(describe_condition(c, lang) for c in data["conditions"])
    timeframe = translate(f"tf.{data.get('timeframe', '1d')}", lang)
    return translate("cond.summary", lang, conditions=conditions, timeframe=timeframe)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Seoul")


def render_text(
    *,
    template: str,
    lang: str,
    tz_name: str,
    symbol: str,
    name: str,
    rule_name: str,
    summary: str,
    price: int,
    change_pct: float | None,
    values: dict[str, float],
    fired_at: datetime,
) -> str:
    """The alert's text: the user's template filled in, or the default sentence."""
    change = f"{change_pct:+.2f}%" if change_pct is not None else "—"
    listed = ", ".join(f"{label}={number(v)}" for label, v in values.items())
    fields: dict[str, str] = {
        "symbol": symbol,
        "name": name,
        "price": f"{price:,}",
        "change": change,
        "rule": rule_name or summary,
        "time": fired_at.astimezone(_zone(tz_name)).strftime("%H:%M"),
        "values": listed,
    }
    for i, value in enumerate(values.values(), start=1):
        fields[f"v{i}"] = number(value)
    if template:
        try:
            return template.format_map(_Missing(fields))
        except (ValueError, IndexError):
            pass  # validated on save; a stored template that no longer parses falls back
    default = translate(
        "cond.alert_default",
        lang,
        name=name,
        symbol=symbol,
        price=fields["price"],
        change=change,
        summary=summary,
    )
    return f"{default} [{listed}]" if listed else default


class _Missing(dict):
    """``{v3}`` for an operand that had no value at firing renders as a dash."""

    def __missing__(self, key: str) -> str:
        return "—"
