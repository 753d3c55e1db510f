"""Alert rules: create, list, delete. Input is validated whole before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.common import utcnow
from app.models.market import Symbol
from app.models.rules import RULE_ACTIVE, RULE_DELETED, AlertRule
from app.services import audit, changes, symbols
from app.services.errors import NotFound, ValidationFailed
from engines.rules.spec import PriceOp, PriceRuleSpec, RuleSpecError, parse_level

MAX_ACTIVE_RULES = 200
MAX_NAME = 100
REPEATS = ("once", "rearm")


@dataclass(frozen=True, slots=True)
class RuleRow:
    id: int
    code: str
    name_ko: str
    name_en: str
    rule_name: str
    kind: str
    spec: dict[str, Any]
    op: str
    level: int
    repeat: str
    status: str
    fire_count: int
    last_fired_at: datetime | None


async def create_price_rule(
    session: AsyncSession,
    user_id: int,
    *,
    symbol_query: str,
    op: str,
    level: str | int,
    repeat: str = "once",
    name: str = "",
) -> AlertRule:
    """Validate every field first, report all problems at once, then write one row."""
    errors: dict[str, tuple[str, dict[str, object]]] = {}
    sym: Symbol | None = None
    try:
        sym = await symbols.resolve(session, symbol_query)
    except ValidationFailed as exc:
        errors.update(exc.field_errors)
    if op not in {o.value for o in PriceOp}:
        errors["op"] = ("bad_op", {})
    level_value: int | None = None
    if isinstance(level, str) and not level.strip():
        errors["level"] = ("level_required", {})
    else:
        try:
            level_value = parse_level(level)
        except RuleSpecError as exc:
            errors["level"] = (exc.code, {})
    if repeat not in REPEATS:
        errors["repeat"] = ("bad_repeat", {})
    name = (name or "").strip()
    if len(name) > MAX_NAME:
        errors["name"] = ("name_too_long", {})
    if errors:
        raise ValidationFailed(errors)
    active = (
        await session.exec(
            select(func.count())
            .select_from(AlertRule)
            .where(AlertRule.user_id == user_id, AlertRule.status == RULE_ACTIVE)
        )
    ).one()
    if active >= MAX_ACTIVE_RULES:
        raise ValidationFailed.single("symbol", "too_many_rules", limit=MAX_ACTIVE_RULES)
    assert sym is not None and level_value is not None
    spec = PriceRuleSpec(op=PriceOp(op), level=level_value, repeat=repeat)
    rule = AlertRule(
        user_id=user_id,
        symbol=sym.code,
        name=name,
        spec=spec.model_dump(mode="json"),
        status=RULE_ACTIVE,
    )
    session.add(rule)
    await session.commit()
    await session.refresh(rule)
    changes.notify()
    return rule


async def list_rows(session: AsyncSession, user_id: int) -> list[RuleRow]:
    stmt = (
        select(AlertRule, Symbol)
        .join(Symbol, col(Symbol.code) == col(AlertRule.symbol))
        .where(AlertRule.user_id == user_id, AlertRule.status != RULE_DELETED)
        .order_by(col(AlertRule.id).desc())
    )
    out: list[RuleRow] = []
    for rule, sym in (await session.exec(stmt)).all():
        kind = rule.spec.get("kind", "price")
        price = PriceRuleSpec.model_validate(rule.spec) if kind == "price" else None
        out.append(
            RuleRow(
                id=rule.id or 0,
                code=sym.code,
                name_ko=sym.name_ko,
                name_en=sym.name_en,
                rule_name=rule.name,
                kind=kind,
                spec=rule.spec,
                op=price.op.value if price else "",
                level=price.level if price else 0,
                repeat=price.repeat if price else "",
                status=rule.status,
                fire_count=rule.fire_count,
                last_fired_at=rule.last_fired_at,
            )
        )
    return out


async def delete_rule(session: AsyncSession, user_id: int, rule_id: int, ip: str = "") -> None:
    """Soft delete: history keeps pointing at the rule, and the runner sees the change."""
    rule = await session.get(AlertRule, rule_id)
    if rule is None or rule.user_id != user_id or rule.status == RULE_DELETED:
        await audit.denied(user_id, "alert_rule", rule_id, ip)
        raise NotFound()
    rule.status = RULE_DELETED
    rule.updated_at = utcnow()
    session.add(rule)
    await session.commit()
    changes.notify()
