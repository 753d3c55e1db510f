"""Condition rules: create, edit, enable/disable, duplicate, and preview on stored history.

Every function takes the signed-in user's id and checks that the rule is theirs; a
rule of someone else's is reported as not found (and audited as a denied access), so
its existence does not leak. Input is validated whole before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.common import utcnow
from app.models.market import Symbol
from app.models.rules import RULE_ACTIVE, RULE_DELETED, RULE_DISABLED, AlertRule
from app.models.users import User
from app.services import audit, candles, changes, symbols
from app.services.errors import NotFound, ValidationFailed
from app.services.rule_form import FieldErrors, build_spec, spec_to_form
from engines.market import Candle
from engines.rules.conditions import ConditionRuleSpec
from engines.rules.evaluator import ConditionFired
from engines.rules.preview import preview_firings

MAX_ACTIVE_RULES = 200
MAX_NAME = 100
PREVIEW_BARS = 300


@dataclass(frozen=True, slots=True)
class RuleDraft:
    """A validated form: what would be saved."""

    symbol: Symbol
    name: str
    spec: ConditionRuleSpec


@dataclass(frozen=True, slots=True)
class Preview:
    candles: list[Candle]
    firings: list[ConditionFired]


async def validate(
    session: AsyncSession, user: User, form: dict[str, str], now: datetime | None = None
) -> RuleDraft:
    """The draft for ``form``, or ``ValidationFailed`` naming every bad input at once."""
    errors: FieldErrors = {}
    sym: Symbol | None = None
    try:
        sym = await symbols.resolve(session, form.get("symbol", ""))
    except ValidationFailed as exc:
        errors.update(exc.field_errors)
    name = (form.get("name") or "").strip()
    if len(name) > MAX_NAME:
        errors["name"] = ("name_too_long", {})
    spec: ConditionRuleSpec | None = None
    try:
        spec = build_spec(form, tz_name=user.timezone, now=now or utcnow())
    except ValidationFailed as exc:
        errors.update(exc.field_errors)
    if errors:
        raise ValidationFailed(errors)
    assert sym is not None and spec is not None
    return RuleDraft(symbol=sym, name=name, spec=spec)


async def _owned(session: AsyncSession, user_id: int, rule_id: int, ip: str) -> AlertRule:
    rule = await session.get(AlertRule, rule_id)
    if rule is None or rule.user_id != user_id or rule.status == RULE_DELETED:
        await audit.denied(user_id, "alert_rule", rule_id, ip)
        raise NotFound()
    return rule


async def _check_quota(session: AsyncSession, user_id: int) -> None:
    active = (
        await session.exec(
            select(func.count())
            .select_from(AlertRule)
            .where(AlertRule.user_id == user_id, AlertRule.status == RULE_ACTIVE)
        )
    ).one()
    if active >= MAX_ACTIVE_RULES:
        raise ValidationFailed.single("symbol", "too_many_rules", limit=MAX_ACTIVE_RULES)


async def create(
    session: AsyncSession, user: User, form: dict[str, str], now: datetime | None = None
) -> AlertRule:
    assert user.id is not None
    draft = await validate(session, user, form, now)
    await _check_quota(session, user.id)
    rule = AlertRule(
        user_id=user.id,
        symbol=draft.symbol.code,
        name=draft.name,
        spec=draft.spec.model_dump(mode="json"),
        status=RULE_ACTIVE,
    )
    session.add(rule)
    await session.commit()
    await session.refresh(rule)
    changes.notify()
    return rule


async def update(
    session: AsyncSession,
    user: User,
    rule_id: int,
    form: dict[str, str],
    ip: str = "",
    now: datetime | None = None,
) -> AlertRule:
    """Replace a rule's symbol, name and spec. Its fire count restarts, because the
    edited rule is a new question and its past firings answered the old one."""
    assert user.id is not None
    rule = await _owned(session, user.id, rule_id, ip)
    draft = await validate(session, user, form, now)
    rule.symbol = draft.symbol.code
    rule.name = draft.name
    rule.spec = draft.spec.model_dump(mode="json")
    rule.fire_count = 0
    rule.last_fired_at = None
    rule.armed = rule.armed_at = None
    if rule.status != RULE_DISABLED:
        rule.status = RULE_ACTIVE
    rule.updated_at = utcnow()
    session.add(rule)
    await session.commit()
    changes.notify()
    return rule


async def set_enabled(
    session: AsyncSession, user_id: int, rule_id: int, enabled: bool, ip: str = ""
) -> AlertRule:
    rule = await _owned(session, user_id, rule_id, ip)
    target = RULE_ACTIVE if enabled else RULE_DISABLED
    if rule.status == target:
        return rule
    if enabled:
        await _check_quota(session, user_id)
    rule.status = target
    rule.updated_at = utcnow()
    session.add(rule)
    await session.commit()
    changes.notify()
    return rule


async def duplicate(session: AsyncSession, user_id: int, rule_id: int, ip: str = "") -> AlertRule:
    """A fresh, active copy that has never fired."""
    rule = await _owned(session, user_id, rule_id, ip)
    await _check_quota(session, user_id)
    copy = AlertRule(
        user_id=user_id,
        symbol=rule.symbol,
        name=rule.name,
        spec=dict(rule.spec),
        status=RULE_ACTIVE,
    )
    session.add(copy)
    await session.commit()
    await session.refresh(copy)
    changes.notify()
    return copy


async def edit_form(
    session: AsyncSession, user: User, rule_id: int, ip: str = ""
) -> dict[str, str]:
    """The builder form of a stored condition rule."""
    assert user.id is not None
    rule = await _owned(session, user.id, rule_id, ip)
    if rule.spec.get("kind") != "condition":
        raise NotFound()
    spec = ConditionRuleSpec.model_validate(rule.spec)
    form = spec_to_form(spec, user.timezone)
    form["symbol"] = rule.symbol
    form["name"] = rule.name
    return form


async def preview(
    session: AsyncSession, user: User, form: dict[str, str], now: datetime | None = None
) -> Preview:
    """Where the drafted rule would have fired over the stored candles of its timeframe."""
    draft = await validate(session, user, form, now)
    history = await candles.recent(session, draft.symbol.code, draft.spec.timeframe, PREVIEW_BARS)
    firings = preview_firings(draft.spec, draft.symbol.code, history)
    return Preview(candles=history, firings=firings)
