"""Strategy configs: their views, ownership checks, validation and CRUD.

Split from :mod:`app.services.strategies` (which re-exports the public names, and is
what callers import) so that configs and the attachment/live/kill-switch use cases in
:mod:`app.services.strategy_attachments` can each be read on their own. The views,
ownership checks and audit helpers live here because both halves need them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models.audit import OUTCOME_OK
from app.models.common import utcnow
from app.models.market import Symbol
from app.models.strategies import (
    MODE_LIVE,
    UNRESOLVED_ORDER_STATES,
    StrategyAttachment,
    StrategyConfig,
    StrategyOrder,
)
from app.services import audit, changes, symbols
from app.services.errors import NotFound, ValidationFailed
from engines.market import Timeframe
from engines.strategies import registry

log = logging.getLogger(__name__)

CONFIG_TARGET = "strategy_config"
ATTACHMENT_TARGET = "strategy_attachment"
MAX_LABEL = 60
MAX_CONFIGS = 50
MAX_ATTACHMENTS = 200
LIMIT_FIELDS = ("max_order_value", "max_position_qty", "max_orders_per_day")
LIMIT_CAPS = {
    "max_order_value": 10_000_000_000,  # 100억 won: beyond any retail order
    "max_position_qty": 1_000_000_000,
    "max_orders_per_day": 1_000,
}
TIMEFRAMES = tuple(tf.value for tf in Timeframe)
_NUMBER = re.compile(r"[+-]?\d+")

FieldErrors = dict[str, tuple[str, dict[str, object]]]
OwnedRow = TypeVar("OwnedRow", StrategyConfig, StrategyAttachment)


# ---- views ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttachmentView:
    id: int
    config_id: int
    symbol: str
    name_ko: str
    name_en: str
    mode: str
    enabled: bool
    state: str
    last_error: str
    broker_account_id: int | None
    live_confirmed_at: datetime | None
    max_order_value: int | None
    max_position_qty: int | None
    max_orders_per_day: int | None
    killed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def killed(self) -> bool:
        return self.killed_at is not None

    @property
    def live_confirmed(self) -> bool:
        return self.live_confirmed_at is not None

    @property
    def needs_confirmation(self) -> bool:
        """Live mode without a (current) confirmation: it places nothing until confirmed."""
        return self.mode == MODE_LIVE and self.live_confirmed_at is None


@dataclass(frozen=True, slots=True)
class ConfigView:
    id: int
    label: str
    strategy: str
    params: dict[str, object]
    timeframe: str
    attachments: list[AttachmentView]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StrategyOrderView:
    id: int
    attachment_id: int | None
    client_order_id: str
    symbol: str
    side: str
    qty: int
    order_type: str
    price: int
    ref_price: int
    mode: str
    state: str
    broker_order_id: str | None
    reason: str
    error: str
    created_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None


def _attachment_view(att: StrategyAttachment, sym: Symbol | None) -> AttachmentView:
    return AttachmentView(
        id=att.id or 0,
        config_id=att.config_id,
        symbol=att.symbol,
        name_ko=sym.name_ko if sym else att.symbol,
        name_en=sym.name_en if sym else att.symbol,
        mode=att.mode,
        enabled=att.enabled,
        state=att.state,
        last_error=att.last_error,
        broker_account_id=att.broker_account_id,
        live_confirmed_at=att.live_confirmed_at,
        max_order_value=att.max_order_value,
        max_position_qty=att.max_position_qty,
        max_orders_per_day=att.max_orders_per_day,
        killed_at=att.killed_at,
        created_at=att.created_at,
        updated_at=att.updated_at,
    )


def _order_view(row: StrategyOrder) -> StrategyOrderView:
    return StrategyOrderView(
        id=row.id or 0,
        attachment_id=row.attachment_id,
        client_order_id=row.client_order_id,
        symbol=row.symbol,
        side=row.side,
        qty=row.qty,
        order_type=row.order_type,
        price=row.price,
        ref_price=row.ref_price,
        mode=row.mode,
        state=row.state,
        broker_order_id=row.broker_order_id,
        reason=row.reason,
        error=row.error,
        created_at=row.created_at,
        sent_at=row.sent_at,
        acked_at=row.acked_at,
    )


async def _config_view(session: AsyncSession, config: StrategyConfig) -> ConfigView:
    atts = (
        await session.exec(
            select(StrategyAttachment)
            .where(StrategyAttachment.config_id == config.id)
            .order_by(col(StrategyAttachment.id))
        )
    ).all()
    names = await symbols.get_many(session, [a.symbol for a in atts])
    return ConfigView(
        id=config.id or 0,
        label=config.label,
        strategy=config.strategy,
        params=json.loads(config.params),
        timeframe=config.timeframe,
        attachments=[_attachment_view(a, names.get(a.symbol)) for a in atts],
        created_at=config.created_at,
        updated_at=config.updated_at,
    )


# ---- ownership ------------------------------------------------------------------------


async def _owned(
    session: AsyncSession,
    model: type[OwnedRow],
    target: str,
    user_id: int,
    row_id: object,
    ip: str,
) -> OwnedRow:
    """The caller's row, or NotFound after auditing the attempt.

    Another user's id and an id that does not exist answer the same, so ids reveal
    nothing; the audit row is what tells an operator someone tried.
    """
    pk = _pk(row_id)
    row = None if pk is None else await session.get(model, pk)
    if row is None or row.user_id != user_id:
        await audit.denied(user_id, target, row_id, ip)
        raise NotFound()
    return row


async def _owned_config(
    session: AsyncSession, user_id: int, config_id: object, ip: str = ""
) -> StrategyConfig:
    return await _owned(session, StrategyConfig, CONFIG_TARGET, user_id, config_id, ip)


async def _owned_attachment(
    session: AsyncSession, user_id: int, attachment_id: object, ip: str = ""
) -> StrategyAttachment:
    return await _owned(session, StrategyAttachment, ATTACHMENT_TARGET, user_id, attachment_id, ip)


async def _audit_config(
    action: str, user_id: int, config_id: int | None, ip: str, detail: dict[str, object]
) -> None:
    await audit.record(
        action,
        actor_id=user_id,
        target_type=CONFIG_TARGET,
        target_id=config_id,
        ip=ip,
        detail=detail,
    )


async def _audit_attachment(
    action: str,
    user_id: int,
    att: StrategyAttachment,
    ip: str,
    detail: dict[str, object],
    *,
    outcome: str = OUTCOME_OK,
) -> None:
    await audit.record(
        action,
        actor_id=user_id,
        target_type=ATTACHMENT_TARGET,
        target_id=att.id,
        ip=ip,
        detail=detail,
        outcome=outcome,
    )


async def _save_attachment(
    session: AsyncSession,
    att: StrategyAttachment,
    *,
    action: str,
    user_id: int,
    ip: str,
    detail: dict[str, object],
    now: datetime | None = None,
) -> None:
    """Commit an edited attachment, audit it and wake the runner, in that order.

    The audit row describes what is committed, and the runner reloads whatever has a
    newer ``updated_at`` than it saw, so the bump must land with the edit.
    """
    att.updated_at = now or utcnow()
    session.add(att)
    await session.commit()
    await _audit_attachment(action, user_id, att, ip, detail)
    changes.notify()


async def _view(session: AsyncSession, att: StrategyAttachment) -> AttachmentView:
    return _attachment_view(att, await session.get(Symbol, att.symbol))


def _pk(value: object) -> int | None:
    """Ids arrive as ints or as strings from forms and URLs; anything else names nothing."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() and len(text) < 10 else None


# ---- validation -----------------------------------------------------------------------


def check_params(strategy: str, raw: Mapping[str, object]) -> FieldErrors:
    """Field errors of ``raw`` as params of ``strategy``; ``{}`` when valid. Pure.

    For live validation as the user types; saving validates again. Codes are
    ``strategy_<registry code>`` so that ``error.<code>`` is the message key.
    """
    if not isinstance(raw, Mapping):
        return {"params": ("strategy_params_not_object", {})}
    try:
        registry.validate_params(strategy, dict(raw))
    except registry.UnknownStrategy:
        return {"strategy": ("strategy_unknown", {"name": str(strategy)[:64]})}
    except registry.ParamsInvalid as exc:
        # Field "" is input that was no mapping at all: shown beside the params.
        return {
            field or "params": (f"strategy_{code}", dict(params))
            for field, (code, params) in exc.errors.items()
        }
    return {}


def _params_json(strategy: str, raw: Mapping[str, object], errors: FieldErrors) -> str:
    found = check_params(strategy, raw)
    if found:
        errors.update(found)
        return ""
    model = registry.validate_params(strategy, dict(raw))
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)


def _label(label: object, errors: FieldErrors) -> str:
    text = str(label or "").strip()
    if not text:
        errors["label"] = ("strategy_label_required", {})
    elif len(text) > MAX_LABEL:
        errors["label"] = ("strategy_label_too_long", {"limit": MAX_LABEL})
    return text


def _timeframe(value: object, errors: FieldErrors) -> str:
    text = str(value or "").strip()
    if text not in TIMEFRAMES:
        errors["timeframe"] = ("strategy_bad_timeframe", {"choices": ", ".join(TIMEFRAMES)})
    return text


async def _label_taken(
    session: AsyncSession, user_id: int, label: str, except_id: int | None = None
) -> bool:
    stmt = select(StrategyConfig.id).where(
        StrategyConfig.user_id == user_id, StrategyConfig.label == label
    )
    if except_id is not None:
        stmt = stmt.where(StrategyConfig.id != except_id)
    return (await session.exec(stmt)).first() is not None


# ---- configs --------------------------------------------------------------------------


async def list_configs(session: AsyncSession, user_id: int) -> list[ConfigView]:
    configs = (
        await session.exec(
            select(StrategyConfig)
            .where(StrategyConfig.user_id == user_id)
            .order_by(col(StrategyConfig.id))
        )
    ).all()
    if not configs:
        return []
    atts = (
        await session.exec(
            select(StrategyAttachment)
            .where(StrategyAttachment.user_id == user_id)
            .order_by(col(StrategyAttachment.id))
        )
    ).all()
    names = await symbols.get_many(session, [a.symbol for a in atts])
    by_config: dict[int, list[AttachmentView]] = {}
    for att in atts:
        by_config.setdefault(att.config_id, []).append(_attachment_view(att, names.get(att.symbol)))
    return [
        ConfigView(
            id=c.id or 0,
            label=c.label,
            strategy=c.strategy,
            params=json.loads(c.params),
            timeframe=c.timeframe,
            attachments=by_config.get(c.id or 0, []),
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
        for c in configs
    ]


async def get_config(
    session: AsyncSession, user_id: int, config_id: int | str, ip: str = ""
) -> ConfigView:
    return await _config_view(session, await _owned_config(session, user_id, config_id, ip))


async def create_config(
    session: AsyncSession,
    user_id: int,
    *,
    label: str,
    strategy: str,
    params: Mapping[str, object],
    timeframe: str,
    ip: str = "",
) -> ConfigView:
    errors: FieldErrors = {}
    label = _label(label, errors)
    timeframe = _timeframe(timeframe, errors)
    params_json = _params_json(str(strategy or ""), params, errors)
    if "label" not in errors and await _label_taken(session, user_id, label):
        errors["label"] = ("strategy_label_taken", {"label": label})
    if errors:
        raise ValidationFailed(errors)
    count = (
        await session.exec(
            select(func.count())
            .select_from(StrategyConfig)
            .where(StrategyConfig.user_id == user_id)
        )
    ).one()
    if count >= MAX_CONFIGS:
        raise ValidationFailed.single("label", "strategy_too_many_configs", limit=MAX_CONFIGS)
    row = StrategyConfig(
        user_id=user_id, label=label, strategy=strategy, params=params_json, timeframe=timeframe
    )
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:  # the same label saved by a concurrent request
        await session.rollback()
        raise ValidationFailed.single("label", "strategy_label_taken", label=label) from None
    await session.refresh(row)
    await _audit_config(
        audit.STRATEGY_CONFIG_SAVED, user_id, row.id, ip, {"strategy": strategy, "created": True}
    )
    return await _config_view(session, row)


async def update_config(
    session: AsyncSession,
    user_id: int,
    config_id: int | str,
    *,
    label: str,
    params: Mapping[str, object],
    timeframe: str,
    ip: str = "",
) -> ConfigView:
    """Change label, params and timeframe (the strategy itself is fixed: make a new config).

    Live attachments of a config whose params or timeframe change lose their
    confirmation: the user confirmed a strategy that no longer exists.
    """
    config = await _owned_config(session, user_id, config_id, ip)
    errors: FieldErrors = {}
    label = _label(label, errors)
    timeframe = _timeframe(timeframe, errors)
    params_json = _params_json(config.strategy, params, errors)
    if "label" not in errors and await _label_taken(session, user_id, label, config.id):
        errors["label"] = ("strategy_label_taken", {"label": label})
    if errors:
        raise ValidationFailed(errors)
    behaviour_changed = params_json != config.params or timeframe != config.timeframe
    now = utcnow()
    config.label, config.params, config.timeframe, config.updated_at = (
        label,
        params_json,
        timeframe,
        now,
    )
    session.add(config)
    unconfirmed: list[int] = []
    atts = (
        await session.exec(
            select(StrategyAttachment).where(StrategyAttachment.config_id == config.id)
        )
    ).all()
    for att in atts:
        att.updated_at = now  # the runner rebuilds the strategy with the new params
        if behaviour_changed and att.live_confirmed_at is not None:
            att.live_confirmed_at = None
            att.live_confirmed_by_session = None
            unconfirmed.append(att.id or 0)
        session.add(att)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ValidationFailed.single("label", "strategy_label_taken", label=label) from None
    await _audit_config(
        audit.STRATEGY_CONFIG_SAVED,
        user_id,
        config.id,
        ip,
        {"strategy": config.strategy, "live_unconfirmed": unconfirmed},
    )
    changes.notify()
    return await _config_view(session, config)


async def _unresolved(session: AsyncSession, attachment_ids: list[int]) -> int:
    if not attachment_ids:
        return 0
    return (
        await session.exec(
            select(func.count())
            .select_from(StrategyOrder)
            .where(
                col(StrategyOrder.attachment_id).in_(attachment_ids),
                col(StrategyOrder.state).in_(UNRESOLVED_ORDER_STATES),
            )
        )
    ).one()


async def delete_config(
    session: AsyncSession, user_id: int, config_id: int | str, ip: str = ""
) -> None:
    """Its attachments and models go with it; its orders stay (history), unlinked.

    Refused while an order of it is unresolved: the runner must first find out
    whether that order reached the broker, and it needs the attachment for that.
    """
    config = await _owned_config(session, user_id, config_id, ip)
    ids = list(
        (
            await session.exec(
                select(StrategyAttachment.id).where(StrategyAttachment.config_id == config.id)
            )
        ).all()
    )
    if await _unresolved(session, [i for i in ids if i is not None]):
        raise ValidationFailed.single("config", "strategy_orders_unresolved")
    await session.delete(config)
    await session.commit()
    await _audit_config(
        audit.STRATEGY_CONFIG_DELETED,
        user_id,
        config.id,
        ip,
        {"strategy": config.strategy, "attachments": ids},
    )
    changes.notify()
