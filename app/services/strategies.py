"""Strategy use cases: configs, attaching them to symbols, modes, limits, live, kill switch.

Every function takes the acting user's id and works on that user's rows only;
another user's config or attachment is :class:`NotFound` and the attempt is
audited, so ids do not reveal what exists. Input comes from forms and the API,
so numbers may be strings ("1,000,000"); every refusal is a
:class:`ValidationFailed` whose codes map to ``error.<code>`` in
``app/i18n/*.strategy_exec.json`` (params errors: ``error.strategy_<code>`` from the
registry, in ``*.strategies.json``). A refused change writes nothing.

Live trading is reached only through :func:`go_live`: a typed confirmation phrase,
one of the user's own broker accounts, and all three limits. Anything that changes
what a live strategy would do (its params, its timeframe, a revive after the kill
switch, leaving live mode) takes the confirmation away again. The runner re-checks
all of it on every order, so these rules hold even against a hand-edited row.

Edits bump ``updated_at`` and notify the runner, which reloads what changed.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings
from app.i18n import LANGUAGES, translate
from app.models.audit import OUTCOME_FAILED
from app.models.common import utcnow
from app.models.market import Symbol
from app.models.strategies import (
    MODE_ALERT,
    MODE_LIVE,
    MODE_PAPER,
    STATE_RECONCILING,
    STATE_RUNNING,
    UNRESOLVED_ORDER_STATES,
    StrategyAttachment,
    StrategyConfig,
    StrategyOrder,
)
from app.services import audit, changes, credentials, symbols
from app.services.errors import NotFound, ValidationFailed
from app.services.strategy_orders import cancel_open_orders, lookup_opener
from engines.market import Timeframe
from engines.strategies import registry

__all__ = [
    "LIMIT_FIELDS",
    "AttachmentView",
    "ConfigView",
    "StrategyOrderView",
    "attach",
    "check_params",
    "create_config",
    "delete_config",
    "detach",
    "get_attachment",
    "get_config",
    "go_live",
    "kill",
    "kill_all",
    "list_configs",
    "list_orders",
    "live_phrases",
    "revive",
    "set_limits",
    "set_mode",
    "update_config",
]

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


async def _owned_config(
    session: AsyncSession, user_id: int, config_id: object, ip: str = ""
) -> StrategyConfig:
    pk = _pk(config_id)
    row = None if pk is None else await session.get(StrategyConfig, pk)
    if row is None or row.user_id != user_id:
        await audit.denied(user_id, CONFIG_TARGET, config_id, ip)
        raise NotFound()
    return row


async def _owned_attachment(
    session: AsyncSession, user_id: int, attachment_id: object, ip: str = ""
) -> StrategyAttachment:
    pk = _pk(attachment_id)
    row = None if pk is None else await session.get(StrategyAttachment, pk)
    if row is None or row.user_id != user_id:
        await audit.denied(user_id, ATTACHMENT_TARGET, attachment_id, ip)
        raise NotFound()
    return row


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


def _limit(raw: object, field: str, errors: FieldErrors) -> int | None:
    """A positive whole number within its cap, or None for "no limit" (empty input)."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        errors[field] = ("strategy_limit_not_number", {})
        return None
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip().replace(",", "")
        if not text:
            return None
        if not _NUMBER.fullmatch(text):
            errors[field] = ("strategy_limit_not_number", {})
            return None
        value = int(text)
    if value <= 0:
        errors[field] = ("strategy_limit_not_positive", {})
        return None
    if value > LIMIT_CAPS[field]:
        errors[field] = ("strategy_limit_too_large", {"limit": LIMIT_CAPS[field]})
        return None
    return value


def _normalise_phrase(text: str) -> str:
    """Case, width and spacing do not matter; the words do."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return " ".join(folded.split())


def live_phrases() -> dict[str, str]:
    """The phrase a user types to go live, per language (either is accepted)."""
    return {lang: translate("strategy.live.confirm_phrase", lang) for lang in LANGUAGES}


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
    await audit.record(
        audit.STRATEGY_CONFIG_SAVED,
        actor_id=user_id,
        target_type=CONFIG_TARGET,
        target_id=row.id,
        ip=ip,
        detail={"strategy": strategy, "created": True},
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
    await audit.record(
        audit.STRATEGY_CONFIG_SAVED,
        actor_id=user_id,
        target_type=CONFIG_TARGET,
        target_id=config.id,
        ip=ip,
        detail={"strategy": config.strategy, "live_unconfirmed": unconfirmed},
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
    await audit.record(
        audit.STRATEGY_CONFIG_DELETED,
        actor_id=user_id,
        target_type=CONFIG_TARGET,
        target_id=config.id,
        ip=ip,
        detail={"strategy": config.strategy, "attachments": ids},
    )
    changes.notify()


# ---- attachments ----------------------------------------------------------------------


def _mode(mode: object) -> str:
    text = str(mode or "").strip().lower()
    if text == MODE_LIVE:
        raise ValidationFailed.single("mode", "strategy_live_needs_confirmation")
    if text not in (MODE_ALERT, MODE_PAPER):
        raise ValidationFailed.single("mode", "strategy_bad_mode")
    return text


async def get_attachment(
    session: AsyncSession, user_id: int, attachment_id: int | str, ip: str = ""
) -> AttachmentView:
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    return _attachment_view(att, await session.get(Symbol, att.symbol))


async def attach(
    session: AsyncSession,
    user_id: int,
    config_id: int | str,
    *,
    symbol: str,
    mode: str = MODE_ALERT,
    ip: str = "",
) -> AttachmentView:
    """Run the config on ``symbol`` in alert or paper mode (live: :func:`go_live`)."""
    config = await _owned_config(session, user_id, config_id, ip)
    mode = _mode(mode)
    sym = await symbols.resolve(session, symbol)
    exists = (
        await session.exec(
            select(StrategyAttachment.id).where(
                StrategyAttachment.config_id == config.id, StrategyAttachment.symbol == sym.code
            )
        )
    ).first()
    if exists is not None:
        raise ValidationFailed.single("symbol", "strategy_already_attached", symbol=sym.code)
    count = (
        await session.exec(
            select(func.count())
            .select_from(StrategyAttachment)
            .where(StrategyAttachment.user_id == user_id)
        )
    ).one()
    if count >= MAX_ATTACHMENTS:
        raise ValidationFailed.single(
            "symbol", "strategy_too_many_attachments", limit=MAX_ATTACHMENTS
        )
    assert config.id is not None
    att = StrategyAttachment(user_id=user_id, config_id=config.id, symbol=sym.code, mode=mode)
    session.add(att)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise ValidationFailed.single(
            "symbol", "strategy_already_attached", symbol=sym.code
        ) from None
    await session.refresh(att)
    await audit.record(
        audit.STRATEGY_ATTACHED,
        actor_id=user_id,
        target_type=ATTACHMENT_TARGET,
        target_id=att.id,
        ip=ip,
        detail={"config_id": config.id, "symbol": sym.code, "mode": mode},
    )
    changes.notify()
    return _attachment_view(att, sym)


async def detach(
    session: AsyncSession, user_id: int, attachment_id: int | str, ip: str = ""
) -> None:
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    assert att.id is not None
    if await _unresolved(session, [att.id]):
        raise ValidationFailed.single("attachment", "strategy_orders_unresolved")
    await session.delete(att)
    await session.commit()
    await audit.record(
        audit.STRATEGY_DETACHED,
        actor_id=user_id,
        target_type=ATTACHMENT_TARGET,
        target_id=att.id,
        ip=ip,
        detail={"config_id": att.config_id, "symbol": att.symbol, "mode": att.mode},
    )
    changes.notify()


def _drop_live(att: StrategyAttachment) -> None:
    att.live_confirmed_at = None
    att.live_confirmed_by_session = None


async def set_mode(
    session: AsyncSession, user_id: int, attachment_id: int | str, mode: str, ip: str = ""
) -> AttachmentView:
    """Alert or paper. Live is refused here (``strategy_live_needs_confirmation``)."""
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    new = _mode(mode)
    old = att.mode
    if new != old and await _unresolved(session, [att.id or 0]):
        # Reconciliation needs the account those orders went to: not while it changes.
        raise ValidationFailed.single("mode", "strategy_orders_unresolved")
    if new != old:
        att.mode = new
        if old == MODE_LIVE:
            _drop_live(att)
        if new == MODE_PAPER:
            att.state = STATE_RECONCILING  # checked against the account before trading
        att.updated_at = utcnow()
        session.add(att)
        await session.commit()
        await audit.record(
            audit.STRATEGY_MODE_CHANGED,
            actor_id=user_id,
            target_type=ATTACHMENT_TARGET,
            target_id=att.id,
            ip=ip,
            detail={"from": old, "to": new},
        )
        changes.notify()
    return _attachment_view(att, await session.get(Symbol, att.symbol))


async def set_limits(
    session: AsyncSession,
    user_id: int,
    attachment_id: int | str,
    *,
    max_order_value: int | str | None,
    max_position_qty: int | str | None,
    max_orders_per_day: int | str | None,
    ip: str = "",
) -> AttachmentView:
    """Positive whole numbers (``""``/None: no limit). A live attachment needs all three."""
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    errors: FieldErrors = {}
    values = {
        "max_order_value": _limit(max_order_value, "max_order_value", errors),
        "max_position_qty": _limit(max_position_qty, "max_position_qty", errors),
        "max_orders_per_day": _limit(max_orders_per_day, "max_orders_per_day", errors),
    }
    if att.mode == MODE_LIVE:
        for field, value in values.items():
            if value is None and field not in errors:
                errors[field] = ("strategy_limit_required_live", {})
    if errors:
        raise ValidationFailed(errors)
    before = {f: getattr(att, f) for f in LIMIT_FIELDS}
    for field, value in values.items():
        setattr(att, field, value)
    att.updated_at = utcnow()
    session.add(att)
    await session.commit()
    await audit.record(
        audit.STRATEGY_LIMITS_CHANGED,
        actor_id=user_id,
        target_type=ATTACHMENT_TARGET,
        target_id=att.id,
        ip=ip,
        detail={"before": before, "after": values},
    )
    changes.notify()
    return _attachment_view(att, await session.get(Symbol, att.symbol))


async def go_live(
    session: AsyncSession,
    user_id: int,
    attachment_id: int | str,
    *,
    broker_account_id: int | str,
    confirmation: str,
    session_id: str = "",
    ip: str = "",
) -> AttachmentView:
    """Trade the user's broker account. Needs the typed phrase (Korean or English), one
    of the user's own accounts, all three limits and no kill switch; else nothing changes.

    ``session_id`` (the sign-in session's id, not its token) is stored with the
    confirmation, so the audit trail says which browser confirmed.
    """
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    errors: FieldErrors = {}
    typed = _normalise_phrase(confirmation)
    if typed not in {_normalise_phrase(p) for p in live_phrases().values()}:
        errors["confirmation"] = ("strategy_live_phrase", {})
    account_pk = _pk(broker_account_id)
    if account_pk is None:
        errors["broker_account_id"] = ("strategy_live_account", {})
    else:
        try:
            await credentials.owned_account(session, user_id, account_pk, ip)
        except NotFound:
            errors["broker_account_id"] = ("strategy_live_account", {})
    for field in LIMIT_FIELDS:
        if getattr(att, field) is None:
            errors[field] = ("strategy_limit_required_live", {})
    if att.killed_at is not None:
        errors["attachment"] = ("strategy_killed", {})
    elif await _unresolved(session, [att.id or 0]):
        errors["attachment"] = ("strategy_orders_unresolved", {})
    if errors:
        await audit.record(
            audit.STRATEGY_LIVE_REFUSED,
            actor_id=user_id,
            target_type=ATTACHMENT_TARGET,
            target_id=att.id,
            outcome=OUTCOME_FAILED,
            ip=ip,
            detail={"fields": sorted(errors)},
        )
        raise ValidationFailed(errors)
    now = utcnow()
    att.mode = MODE_LIVE
    att.broker_account_id = account_pk
    att.live_confirmed_at = now
    att.live_confirmed_by_session = str(session_id)[:64] or None
    att.state = STATE_RECONCILING  # reconciled with the broker before the first order
    att.position_qty = att.position_at = None  # a new account: a new baseline
    att.last_error = ""
    att.updated_at = now
    session.add(att)
    await session.commit()
    await audit.record(
        audit.STRATEGY_LIVE_CONFIRMED,
        actor_id=user_id,
        target_type=ATTACHMENT_TARGET,
        target_id=att.id,
        ip=ip,
        detail={
            "broker_account_id": account_pk,
            "session": att.live_confirmed_by_session,
            "limits": {f: getattr(att, f) for f in LIMIT_FIELDS},
        },
    )
    changes.notify()
    return _attachment_view(att, await session.get(Symbol, att.symbol))


async def _kill_one(
    session: AsyncSession,
    att: StrategyAttachment,
    user_id: int,
    ip: str,
    settings: Settings | None,
) -> bool:
    if att.killed_at is not None:
        return False
    att.killed_at = utcnow()
    att.updated_at = att.killed_at
    session.add(att)
    await session.commit()
    cancelled, failed = await cancel_open_orders(att, lookup_opener(settings))
    await audit.record(
        audit.STRATEGY_KILLED,
        actor_id=user_id,
        target_type=ATTACHMENT_TARGET,
        target_id=att.id,
        ip=ip,
        detail={"mode": att.mode, "cancelled": cancelled, "cancel_failed": failed},
    )
    return True


async def kill(
    session: AsyncSession,
    user_id: int,
    attachment_id: int | str,
    *,
    ip: str = "",
    settings: Settings | None = None,
) -> AttachmentView:
    """The kill switch: no order from now on, and open orders are cancelled (best effort).

    The switch is committed before anything else, so a broker that cannot be
    reached delays only the cancels, never the stop. Killing twice is harmless.
    """
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    if await _kill_one(session, att, user_id, ip, settings):
        changes.notify()
    return _attachment_view(att, await session.get(Symbol, att.symbol))


async def kill_all(
    session: AsyncSession, user_id: int, *, ip: str = "", settings: Settings | None = None
) -> int:
    """Every one of the user's attachments; returns how many were not killed already."""
    atts = (
        await session.exec(
            select(StrategyAttachment).where(
                StrategyAttachment.user_id == user_id, col(StrategyAttachment.killed_at).is_(None)
            )
        )
    ).all()
    killed = 0
    for att in atts:
        killed += await _kill_one(session, att, user_id, ip, settings)
    if killed:
        changes.notify()
    return killed


async def revive(
    session: AsyncSession, user_id: int, attachment_id: int | str, ip: str = ""
) -> AttachmentView:
    """Lift the kill switch. A live attachment needs confirming again before it trades."""
    att = await _owned_attachment(session, user_id, attachment_id, ip)
    if att.killed_at is not None:
        att.killed_at = None
        if att.mode == MODE_LIVE:
            _drop_live(att)
        if att.mode in (MODE_PAPER, MODE_LIVE):
            att.state = STATE_RECONCILING
        else:
            att.state = STATE_RUNNING
        att.updated_at = utcnow()
        session.add(att)
        await session.commit()
        await audit.record(
            audit.STRATEGY_REVIVED,
            actor_id=user_id,
            target_type=ATTACHMENT_TARGET,
            target_id=att.id,
            ip=ip,
            detail={"mode": att.mode},
        )
        changes.notify()
    return _attachment_view(att, await session.get(Symbol, att.symbol))


async def list_orders(
    session: AsyncSession,
    user_id: int,
    *,
    attachment_id: int | str | None = None,
    limit: int = 200,
    ip: str = "",
) -> list[StrategyOrderView]:
    """The user's strategy orders, newest first; refusals included (they say why)."""
    stmt = select(StrategyOrder).where(StrategyOrder.user_id == user_id)
    if attachment_id is not None:
        att = await _owned_attachment(session, user_id, attachment_id, ip)
        stmt = stmt.where(StrategyOrder.attachment_id == att.id)
    stmt = stmt.order_by(col(StrategyOrder.id).desc()).limit(max(1, min(limit, 1000)))
    # The runner updates these rows from its own sessions: always read them afresh.
    stmt = stmt.execution_options(populate_existing=True)
    return [_order_view(r) for r in (await session.exec(stmt)).all()]
