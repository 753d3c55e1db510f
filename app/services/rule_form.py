"""The rule builder's flat form <-> a validated ``ConditionRuleSpec``.

The page keeps every input as a string under a flat key (``timeframe``,
``c0.type``, ``c0.left``, ``c1.pct``...), so live validation, saving and editing all
go through one translation. Every problem is reported against the input it came from,
as an i18n code with parameters; nothing is saved unless the whole form is valid.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from app.models.alerts import CHANNEL_EMAIL, CHANNEL_IN_APP
from app.services.errors import ValidationFailed
from engines.rules.conditions import MAX_CONDITIONS, ConditionRuleSpec
from engines.rules.expr import format_operand, parse_operand
from engines.rules.spec import RuleSpecError

FieldErrors = dict[str, tuple[str, dict[str, object]]]

CONDITION_TYPES = (
    "compare",
    "channel",
    "move",
    "change",
    "breakout",
    "volume_spike",
    "new_extreme",
    "gap",
)
OPERAND_FIELDS = ("left", "right", "value", "lower", "upper")
FLOAT_FIELDS = ("amount", "pct", "factor")
INT_FIELDS = ("bars", "window", "days", "pivot_left", "pivot_right")
CHOICE_FIELDS = ("op", "direction", "unit", "side")
FIELDS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "compare": ("left", "op", "right"),
    "channel": ("value", "op", "lower", "upper"),
    "move": ("value", "direction", "amount", "unit", "bars"),
    "change": ("direction", "pct"),
    "breakout": ("side", "level", "pivot_left", "pivot_right"),
    "volume_spike": ("factor", "window"),
    "new_extreme": ("side", "days"),
    "gap": ("direction", "pct"),
}
DEFAULTS: dict[str, str] = {
    "left": "price",
    "op": "crossing",
    "right": "",
    "value": "price",
    "lower": "",
    "upper": "",
    "direction": "up",
    "amount": "",
    "unit": "pct",
    "bars": "5",
    "pct": "",
    "side": "resistance",
    "level": "",
    "pivot_left": "5",
    "pivot_right": "5",
    "factor": "3",
    "window": "20",
    "days": "20",
}
_HHMM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_INT = re.compile(r"[+-]?[0-9]{1,7}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?")


def condition_count(form: dict[str, str]) -> int:
    return sum(1 for i in range(MAX_CONDITIONS) if form.get(f"c{i}.type"))


def _condition(form: dict[str, str], i: int, errors: FieldErrors) -> dict[str, Any]:
    prefix = f"c{i}."
    kind = form.get(prefix + "type", "")
    if kind not in CONDITION_TYPES:
        errors[prefix + "type"] = ("bad_choice", {})
        return {}
    out: dict[str, Any] = {"type": kind}
    for name in FIELDS_BY_TYPE[kind]:
        raw = (form.get(prefix + name) or "").strip()
        key = prefix + name
        if name in OPERAND_FIELDS:
            try:
                out[name] = parse_operand(raw)
            except RuleSpecError as exc:
                errors[key] = (exc.code, {"detail": exc.message})
        elif name in FLOAT_FIELDS:
            if not _FLOAT.fullmatch(raw):
                errors[key] = ("number_required", {})
            else:
                out[name] = float(raw.replace(",", ""))
        elif name in INT_FIELDS:
            if not _INT.fullmatch(raw):
                errors[key] = ("whole_number_required", {})
            else:
                out[name] = int(raw)
        elif name == "level":
            out[name] = raw or None
        else:
            out[name] = raw
    return out


def _local_time(raw: str, key: str, errors: FieldErrors) -> time | None:
    match = _HHMM.fullmatch(raw.strip())
    if match is None:
        errors[key] = ("time_required", {})
        return None
    return time(int(match[1]), int(match[2]))


def _expiry(raw: str, tz: ZoneInfo, now: datetime, errors: FieldErrors) -> datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        local = datetime.fromisoformat(raw)
    except ValueError:
        errors["expires_at"] = ("datetime_required", {})
        return None
    value = local.replace(tzinfo=tz) if local.utcoffset() is None else local
    if value <= now:
        errors["expires_at"] = ("expiry_past", {})
        return None
    return value.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "Asia/Seoul")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Seoul")


def _field_of(loc: tuple[Any, ...], code: str) -> str:
    """The form input a pydantic error location points at."""
    if loc and loc[0] == "conditions" and len(loc) >= 2 and isinstance(loc[1], int):
        base = f"c{loc[1]}"
        if len(loc) >= 4 and isinstance(loc[3], str):
            return f"{base}.{loc[3]}"
        return {
            "channel_bounds_inverted": f"{base}.lower",
            "operands_both_constant": f"{base}.right",
            "pct_out_of_range": f"{base}.amount",
        }.get(code, f"{base}.type")
    if loc and loc[0] == "quiet_hours":
        return "quiet_start"
    if loc:
        return str(loc[0])
    if code.startswith("cooldown"):
        return "cooldown_minutes"
    if code.startswith("template"):
        return "template"
    return "form"


def _ctx(error: dict[str, Any]) -> dict[str, object]:
    ctx = dict(error.get("ctx") or {})
    return {k: v if isinstance(v, int | float | str) else str(v) for k, v in ctx.items()}


def build_spec(form: dict[str, str], *, tz_name: str, now: datetime) -> ConditionRuleSpec:
    """The spec for ``form``, or ``ValidationFailed`` naming every bad input."""
    errors: FieldErrors = {}
    count = condition_count(form)
    if count == 0:
        raise ValidationFailed.single("c0.type", "conditions_count", max=MAX_CONDITIONS)
    conditions = [_condition(form, i, errors) for i in range(count)]
    body: dict[str, Any] = {
        "timeframe": form.get("timeframe", "1d"),
        "logic": form.get("logic", "and"),
        "conditions": conditions,
        "frequency": form.get("frequency", "once_per_bar"),
        "template": form.get("template", ""),
        "channels": [CHANNEL_IN_APP]
        + ([CHANNEL_EMAIL] if form.get("channel_email") in {"on", "true", "1"} else []),
    }
    if body["frequency"] == "cooldown":
        raw = (form.get("cooldown_minutes") or "").strip()
        if not _INT.fullmatch(raw):
            errors["cooldown_minutes"] = ("whole_number_required", {})
        else:
            body["cooldown_minutes"] = int(raw)
    hysteresis = (form.get("hysteresis_pct") or "").strip()
    if hysteresis:
        if not _FLOAT.fullmatch(hysteresis):
            errors["hysteresis_pct"] = ("number_required", {})
        else:
            body["hysteresis_pct"] = float(hysteresis)
    tz = _zone(tz_name)
    body["expires_at"] = _expiry(form.get("expires_at", ""), tz, now, errors)
    quiet_start, quiet_end = (
        (form.get("quiet_start") or "").strip(),
        (form.get("quiet_end") or "").strip(),
    )
    if quiet_start or quiet_end:
        start = _local_time(quiet_start, "quiet_start", errors)
        end = _local_time(quiet_end, "quiet_end", errors)
        if start is not None and end is not None:
            body["quiet_hours"] = {
                "start": start,
                "end": end,
                "action": form.get("quiet_action") or "defer",
            }
    if any(not c for c in conditions) or errors:
        # Still validate the rest so the user sees every problem at once.
        try:
            ConditionRuleSpec.model_validate(
                {**body, "conditions": [c for c in conditions if c] or [{}]}
            )
        except ValidationError as exc:
            _collect(exc, errors, skip_conditions=True)
        raise ValidationFailed(errors)
    try:
        return ConditionRuleSpec.model_validate(body)
    except ValidationError as exc:
        _collect(exc, errors)
        raise ValidationFailed(errors) from None


def _collect(exc: ValidationError, errors: FieldErrors, skip_conditions: bool = False) -> None:
    for error in exc.errors():
        loc = tuple(error["loc"])
        if skip_conditions and loc and loc[0] == "conditions":
            continue
        code = error["type"]
        if code in {"literal_error", "enum", "union_tag_invalid"}:
            code = "bad_choice"
        field = _field_of(loc, code)
        errors.setdefault(field, (code, _ctx(error)))


def spec_to_form(spec: ConditionRuleSpec, tz_name: str) -> dict[str, str]:
    """The form that ``build_spec`` turns back into ``spec``: for edit and duplicate."""
    form: dict[str, str] = {
        "timeframe": spec.timeframe.value,
        "logic": spec.logic,
        "frequency": spec.frequency.value,
        "cooldown_minutes": str(spec.cooldown_minutes or ""),
        "hysteresis_pct": f"{spec.hysteresis_pct:g}",
        "template": spec.template,
        "channel_email": "on" if CHANNEL_EMAIL in spec.channels else "",
        "expires_at": "",
        "quiet_start": "",
        "quiet_end": "",
        "quiet_action": "defer",
    }
    if spec.expires_at is not None:
        local = spec.expires_at.astimezone(_zone(tz_name))
        form["expires_at"] = local.strftime("%Y-%m-%dT%H:%M")
    if spec.quiet_hours is not None:
        form["quiet_start"] = spec.quiet_hours.start.strftime("%H:%M")
        form["quiet_end"] = spec.quiet_hours.end.strftime("%H:%M")
        form["quiet_action"] = spec.quiet_hours.action
    for i, cond in enumerate(spec.conditions):
        data = cond.model_dump(mode="json")
        form[f"c{i}.type"] = data["type"]
        for name in FIELDS_BY_TYPE[data["type"]]:
            value = data.get(name)
            if name in OPERAND_FIELDS:
                form[f"c{i}.{name}"] = format_operand(value)
            elif value is None:
                form[f"c{i}.{name}"] = ""
            elif isinstance(value, float):
                form[f"c{i}.{name}"] = f"{value:g}"
            else:
                form[f"c{i}.{name}"] = str(value)
    return form


_TYPE_DEFAULTS: dict[str, dict[str, str]] = {
    "channel": {"op": "entering"},
    "new_extreme": {"side": "high"},
}


def blank_condition(i: int, kind: str = "compare") -> dict[str, str]:
    """Inputs of a new condition row of ``kind``, prefilled with sensible defaults."""
    defaults = {**DEFAULTS, **_TYPE_DEFAULTS.get(kind, {})}
    out = {f"c{i}.type": kind}
    for name in FIELDS_BY_TYPE[kind]:
        out[f"c{i}.{name}"] = defaults.get(name, "")
    return out
